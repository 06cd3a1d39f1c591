/**
 * The timers of a started libp2p transport: none keeps the process alive (unref), and all are cleared at stop.
 */

/** Lets the process exit while `timer` is pending (Node); a no-op where timers have no `unref`. */
export function unref(timer: ReturnType<typeof setTimeout>): void {
  ;(timer as { unref?: () => void }).unref?.()
}

/** Timeouts and intervals owned by one transport, cleared together by {@link Timers.clearAll}. */
export class Timers {
  private readonly live = new Set<ReturnType<typeof setTimeout>>()

  /** Calls `fn` once after `ms`. */
  after(ms: number, fn: () => void): ReturnType<typeof setTimeout> {
    const t = setTimeout(() => {
      this.live.delete(t)
      fn()
    }, ms)
    unref(t)
    this.live.add(t)
    return t
  }

  /** Calls `fn` every `ms` until {@link Timers.clearAll}. */
  every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms)
    unref(t)
    this.live.add(t)
  }

  /** Cancels one timeout made by {@link Timers.after}. */
  clear(t: ReturnType<typeof setTimeout>): void {
    clearTimeout(t)
    this.live.delete(t)
  }

  /** Cancels every timeout and interval. */
  clearAll(): void {
    for (const t of this.live) clearTimeout(t)
    this.live.clear()
  }
}
