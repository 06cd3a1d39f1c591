/**
 * Seeded, replayable property runs.
 *
 * Every property goes through {@link assertProperty} (or {@link propTest}, which wraps it in a vitest `it`):
 * - the seed is explicit: `SEED` from the environment, else a fresh random seed (printed only when the run fails);
 * - the run count is the property's default unless `NUM_RUNS` overrides it (a few inherently expensive properties
 *   cap it with `maxRuns`);
 * - `PROP_PATH` replays one counterexample through fast-check's `path` option (use it together with `SEED`);
 * - on failure a `Replay: SEED=… PROP_PATH="…" npx vitest run <file> -t "<test>"` line is printed and prepended to
 *   the thrown error, whose message also carries fast-check's own report (seed, path, counterexample, error).
 */
import path from 'node:path'
import fc from 'fast-check'
import { expect, it } from 'vitest'
import { envInt, envValue } from '../src/testkit/property.js'

/** A fresh 32-bit seed (fast-check seeds are 32-bit integers). */
function freshSeed(): number {
  return (Math.random() * 2 ** 32) | 0
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** The shell command that replays a failed run of the current test. */
function replayLine(seed: number, failPath: string | undefined): string {
  const state = expect.getState()
  const file = state.testPath ? path.relative(process.cwd(), state.testPath) : '<test file>'
  // vitest's -t matches a regular expression against the test's names joined by spaces.
  const name = (state.currentTestName ?? '').split(' > ').join(' ')
  const pathPart = failPath ? ` PROP_PATH="${failPath}"` : ''
  return `Replay: SEED=${seed}${pathPart} npx vitest run ${file} -t "${escapeRegExp(name).replace(/"/g, '\\"')}"`
}

/** Options of {@link assertProperty}. */
export interface RunOptions {
  /** Default number of runs (the `NUM_RUNS` environment variable overrides it). */
  numRuns: number
  /** Upper bound on the runs, even under `NUM_RUNS` (for properties whose every run is expensive). */
  maxRuns?: number
}

/** The number of runs a property will actually use. */
export function effectiveRuns(options: RunOptions): number {
  return Math.min(envInt('NUM_RUNS') ?? options.numRuns, options.maxRuns ?? Infinity)
}

/** fast-check parameters for a seeded, replayable run (see the module comment); the reporter throws the replay line. */
function runParameters<Ts>(options: RunOptions): fc.Parameters<Ts> {
  const seed = envInt('SEED') ?? freshSeed()
  const replayPath = envValue('PROP_PATH')
  return {
    seed,
    numRuns: effectiveRuns(options),
    ...(replayPath !== undefined ? { path: replayPath } : {}),
    reporter(details) {
      if (!details.failed) return
      const line = replayLine(seed, details.counterexamplePath ?? undefined)
      const report = fc.defaultReportMessage(details) ?? 'property failed'
      console.error(line)
      throw new Error(`${line}\n${report}`, { cause: details.errorInstance })
    },
  }
}

/**
 * Runs `property` with fast-check's `assert`, seeded and replayable (see the module comment). Throws an error whose
 * message starts with the replay command and continues with fast-check's report.
 */
export function assertProperty<Ts>(property: fc.IProperty<Ts>, options: RunOptions): void {
  fc.assert(property, runParameters(options))
}

/** {@link assertProperty} for an asynchronous property (`fc.asyncProperty`). */
export async function assertAsyncProperty<Ts>(property: fc.IAsyncProperty<Ts>, options: RunOptions): Promise<void> {
  await fc.assert(property, runParameters(options))
}

/** A vitest test running one property (see {@link assertProperty}); `runs` is a default count or full options. */
export function propTest<Ts>(name: string, runs: number | RunOptions, makeProperty: () => fc.IProperty<Ts>, timeoutMs?: number): void {
  const options = typeof runs === 'number' ? { numRuns: runs } : runs
  it(
    name,
    async () => {
      // Properties run synchronously for seconds; let the worker's event loop breathe first (vitest's RPC).
      await new Promise<void>((resolve) => setImmediate(resolve))
      assertProperty(makeProperty(), options)
    },
    timeoutMs,
  )
}

/** A vitest test running one asynchronous property (see {@link assertAsyncProperty}). */
export function asyncPropTest<Ts>(name: string, runs: number | RunOptions, makeProperty: () => fc.IAsyncProperty<Ts>, timeoutMs?: number): void {
  const options = typeof runs === 'number' ? { numRuns: runs } : runs
  it(name, () => assertAsyncProperty(makeProperty(), options), timeoutMs)
}

/** Throws (with `message`) unless `cond` holds; a tiny assertion that keeps hot property bodies cheap. */
export function check(cond: boolean, message: () => string): asserts cond {
  if (!cond) throw new Error(message())
}
