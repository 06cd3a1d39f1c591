import type { Storage, StorageOp } from './types.js'
import { compareKeys } from './types.js'
import { StorageClosedError } from '../errors.js'

/** In-memory {@link Storage}: the default when no storage is given; nothing survives the process. */
export class MemoryStorage implements Storage {
  private readonly entries = new Map<string, { key: string[]; data: Uint8Array }>()
  private closed = false

  /** {@inheritDoc Storage.load} */
  async load(key: string[]): Promise<Uint8Array | undefined> {
    this.check()
    return this.entries.get(JSON.stringify(key))?.data.slice()
  }

  /** {@inheritDoc Storage.save} */
  async save(key: string[], data: Uint8Array): Promise<void> {
    this.check()
    this.entries.set(JSON.stringify(key), { key: [...key], data: data.slice() })
  }

  /** {@inheritDoc Storage.remove} */
  async remove(key: string[]): Promise<void> {
    this.check()
    this.entries.delete(JSON.stringify(key))
  }

  /** {@inheritDoc Storage.batch} */
  async batch(ops: readonly StorageOp[]): Promise<void> {
    this.check()
    for (const op of ops) {
      if (op.type === 'put') this.entries.set(JSON.stringify(op.key), { key: [...op.key], data: op.data.slice() })
      else this.entries.delete(JSON.stringify(op.key))
    }
  }

  /** {@inheritDoc Storage.loadRange} */
  async loadRange(prefix: string[]): Promise<{ key: string[]; data: Uint8Array }[]> {
    this.check()
    const out: { key: string[]; data: Uint8Array }[] = []
    for (const e of this.entries.values()) {
      if (prefix.every((p, i) => e.key[i] === p)) out.push({ key: [...e.key], data: e.data.slice() })
    }
    return out.sort((a, b) => compareKeys(a.key, b.key))
  }

  /** {@inheritDoc Storage.close} */
  async close(): Promise<void> {
    this.closed = true
  }

  /** Total bytes held (for tests and benchmarks). */
  get byteSize(): number {
    let n = 0
    for (const e of this.entries.values()) n += e.data.length
    return n
  }

  private check(): void {
    if (this.closed) throw new StorageClosedError('storage is closed')
  }
}
