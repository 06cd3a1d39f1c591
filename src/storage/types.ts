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
}

/** One write of a {@link Storage.batch}. */
export type StorageOp = { readonly type: 'put'; readonly key: string[]; readonly data: Uint8Array } | { readonly type: 'del'; readonly key: string[] }

/** Element-wise string comparison of keys: the order `loadRange` returns. */
export function compareKeys(a: readonly string[], b: readonly string[]): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1
  return a.length - b.length
}
