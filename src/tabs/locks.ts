/**
 * The exclusive locks replicas on one shared store coordinate with ({@link Locks}): Web Locks in browsers (shared
 * by every tab and worker of an origin), and locks local to this JavaScript realm where there are none (Node: every
 * replica of one process). A lock is held until released or until its holder goes away — a tab that is closed or
 * crashes releases its Web Locks at once.
 */
import type { Lease, Locks } from '../storage/types.js'

/** The Web Locks API as far as syncmesh uses it (`navigator.locks`). */
interface WebLockManager {
  request(name: string, options: { ifAvailable?: boolean; signal?: AbortSignal }, callback: (lock: unknown) => Promise<void> | void): Promise<unknown>
}

/** `navigator.locks`, when this environment has Web Locks. */
export function webLockManager(): WebLockManager | undefined {
  const nav = (globalThis as { navigator?: { locks?: WebLockManager } }).navigator
  return typeof nav?.locks?.request === 'function' ? nav.locks : undefined
}

/** {@link Locks} on Web Locks. */
export function webLocks(manager: WebLockManager): Locks {
  const take = (name: string, options: { ifAvailable?: boolean; signal?: AbortSignal }): Promise<Lease | undefined> =>
    new Promise<Lease | undefined>((resolve, reject) => {
      manager
        .request(name, options, (lock) => {
          if (!lock) return resolve(undefined)
          return new Promise<void>((release) => resolve(onceLease(release)))
        })
        .catch(reject)
    })
  return {
    tryAcquire: (name) => take(name, { ifAvailable: true }),
    acquire: async (name, signal) => (await take(name, signal ? { signal } : {}))!,
  }
}

/** Locks shared by every caller in this JavaScript realm (one Node process, one page). */
export class LocalLocks implements Locks {
  private readonly held = new Map<string, (() => void)[]>()

  /** {@inheritDoc Locks.tryAcquire} */
  async tryAcquire(name: string): Promise<Lease | undefined> {
    if (this.held.has(name)) return undefined
    this.held.set(name, [])
    return onceLease(() => this.release(name))
  }

  /** {@inheritDoc Locks.acquire} */
  acquire(name: string, signal?: AbortSignal): Promise<Lease> {
    return new Promise<Lease>((resolve, reject) => {
      if (signal?.aborted) return reject(abortError())
      const queue = this.held.get(name)
      if (!queue) {
        this.held.set(name, [])
        return resolve(onceLease(() => this.release(name)))
      }
      const grant = (): void => {
        signal?.removeEventListener('abort', abort)
        resolve(onceLease(() => this.release(name)))
      }
      const abort = (): void => {
        const i = queue.indexOf(grant)
        if (i >= 0) queue.splice(i, 1)
        reject(abortError())
      }
      signal?.addEventListener('abort', abort, { once: true })
      queue.push(grant)
    })
  }

  private release(name: string): void {
    const queue = this.held.get(name)
    const next = queue?.shift()
    if (next) next()
    else this.held.delete(name)
  }
}

/** The locks of this realm when there are no Web Locks: one set, so every replica of the process sees the same. */
export const realmLocks = new LocalLocks()

function onceLease(release: () => void): Lease {
  let done = false
  return {
    release() {
      if (done) return
      done = true
      release()
    },
  }
}

/** The rejection of a lock request whose AbortSignal fired (what Web Locks reject with). */
export function abortError(): Error {
  return new DOMException('the lock request was aborted', 'AbortError')
}
