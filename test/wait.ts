/** Waiting in tests: one polling `until` and one `sleep` for every suite (and the benchmarks that borrow them). */

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `cond` every 5 ms until it holds; throws after `ms` naming `what` (a function: the state it describes then). */
export async function until(cond: () => boolean, ms = 5000, what: string | (() => string) = 'condition'): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}`)
    await sleep(5)
  }
}
