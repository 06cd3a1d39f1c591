/**
 * The one interface every storage adapter implements: a sorted key-value store of byte strings. A resolved
 * `save`/`remove` means the change is durable (it survives a crash of the process). Calls take effect in the
 * order they are made, even when not awaited, and every method copies the bytes and keys it is given at once.
 */
export interface Storage {
  /** Reads one value, or undefined when absent. */
  load(key: string[]): Promise<Uint8Array | undefined>
  /** Writes one value durably (atomically: after a crash it is either the old or the new value). */
  save(key: string[], data: Uint8Array): Promise<void>
  /** Deletes one value durably; absent keys are fine. */
  remove(key: string[]): Promise<void>
  /** Every entry whose key starts with `prefix`, in key order (element-wise string comparison). */
  loadRange(prefix: string[]): Promise<{ key: string[]; data: Uint8Array }[]>
  /**
   * Applies several writes atomically and durably: after a crash, all of them or none. Optional; persistence uses
   * it (when present) so that compaction is one write instead of one per removed entry.
   */
  batch?(ops: readonly StorageOp[]): Promise<void>
  /** Releases the store; later calls reject with StorageClosedError. */
  close?(): Promise<void>
  /**
   * Present when several replicas may open the same underlying store at once (tabs of one origin on one IndexedDB
   * database, processes on one Redis namespace). Replicas on a shared store each write under a slot of their own and
   * elect one of them to reach the network (see "Tabs and shared storage" in the README). Absent: the store has one
   * user at a time (LevelDB locks its directory; a MemoryStorage object belongs to one replica).
   */
  readonly sharing?: StorageSharing
}

/** How replicas that share one underlying store find and coordinate with each other. */
export interface StorageSharing {
  /** Names the underlying store: the same for every Storage object opened on it, different for every other store. */
  readonly key: string
  /**
   * Exclusive locks that every replica able to open the store shares.
   * @default Web Locks (`navigator.locks`) where there are any, else locks shared by this JavaScript realm only
   */
  readonly locks?: Locks
  /**
   * Opens a channel named `name` that reaches every other replica able to open the store (not this one).
   * @default `new BroadcastChannel(name)`
   */
  readonly channel?: (name: string) => SharedChannel
}

/** Exclusive named locks (the shape of Web Locks that syncmesh needs). */
export interface Locks {
  /** Takes the lock when it is free; resolves undefined at once when it is held. */
  tryAcquire(name: string): Promise<Lease | undefined>
  /** Waits for the lock; rejects with an `AbortError` DOMException when `signal` aborts first. */
  acquire(name: string, signal?: AbortSignal): Promise<Lease>
}

/** A held lock. */
export interface Lease {
  /** Releases the lock (idempotent). */
  release(): void
  /** Settles if the lock is lost without `release()` (an expired lease); never, for Web Locks. */
  readonly lost?: Promise<void>
}

/** A message channel to the other openers of a shared store (the part of `BroadcastChannel` syncmesh uses). */
export interface SharedChannel {
  /** Sends a structured-cloneable message to every other end of the channel. */
  postMessage(message: unknown): void
  /** Called with each message from another end. */
  onmessage: ((event: { readonly data: unknown }) => void) | null
  /** Closes this end. */
  close(): void
}

/** One write of a {@link Storage.batch}. */
export type StorageOp = { readonly type: 'put'; readonly key: string[]; readonly data: Uint8Array } | { readonly type: 'del'; readonly key: string[] }

/** Element-wise string comparison of keys: the order `loadRange` returns. */
export function compareKeys(a: readonly string[], b: readonly string[]): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1
  return a.length - b.length
}
