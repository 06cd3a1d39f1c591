import type { RegisterState } from './lww-register.js'
import type { Timestamp } from './timestamp.js'
import { type Value, compareValues, defineField, valuesEqual } from './value.js'

/** Plain-data form of an {@link LWWMap}: every register, removed ones included (value undefined). */
export interface MapState<V> {
  readonly entries: ReadonlyArray<readonly [key: string, register: RegisterState<V>]>
}

/** Above this many keys a map keeps a key → slot index instead of scanning. */
const INDEX_THRESHOLD = 12

/**
 * A map of last-writer-wins registers: each key resolves independently to its latest write; a delete is a write of
 * "removed" (a tombstone register) and obeys the same rule, so concurrent edits of different keys all survive.
 *
 * Memory layout: registers live in two flat arrays — `[key, value, peer]` triples and unboxed `[wall, counter]`
 * pairs — rather than one object per register; this keeps a record of five fields in a few hundred bytes.
 */
export class LWWMap<V = unknown> {
  /** `[key, value | undefined, peer]` per register. */
  protected cells: unknown[] = []
  /** `[wall, counter]` per register (a packed double array). */
  protected clock: number[] = []
  private index: Map<string, number> | undefined

  /** Writes `value` at `ts`; returns true when the write won. */
  set(key: string, value: V, ts: Timestamp): boolean {
    return this.write(key, value, ts)
  }

  /** Removes `key` with a tombstone written at `ts`; returns true when the removal won. */
  delete(key: string, ts: Timestamp): boolean {
    return this.write(key, undefined, ts)
  }

  /** The visible value of `key` (undefined when absent or removed). */
  get(key: string): V | undefined {
    const s = this.slot(key)
    return s < 0 ? undefined : (this.cells[3 * s + 1] as V | undefined)
  }

  /** True when `key` has a visible value. */
  has(key: string): boolean {
    return this.get(key) !== undefined
  }

  /** Keys with a visible value, in first-write order. */
  keys(): string[] {
    const out: string[] = []
    const cells = this.cells
    for (let i = 0; i < cells.length; i += 3) if (cells[i + 1] !== undefined) out.push(cells[i] as string)
    return out
  }

  /** The visible entries as a plain object. */
  toObject(): Record<string, V> {
    const out: Record<string, V> = {}
    const cells = this.cells
    for (let i = 0; i < cells.length; i += 3) {
      if (cells[i + 1] !== undefined) defineField(out, cells[i] as string, cells[i + 1])
    }
    return out
  }

  /** The timestamp of `key`'s winning write (removals included); undefined when never written. */
  timestampOf(key: string): Timestamp | undefined {
    const s = this.slot(key)
    return s < 0 ? undefined : this.stampAt(s)
  }

  /** Merges another map (or its state); returns the keys whose visible value changed. */
  merge(other: LWWMap<V> | MapState<V>): string[] {
    const changed: string[] = []
    const entries = other instanceof LWWMap ? other.state().entries : other.entries
    for (const [key, reg] of entries) {
      if (reg.timestamp === undefined) continue
      const before = this.get(key)
      if (this.write(key, reg.value, reg.timestamp) && !valuesEqual(before as Value, reg.value as Value)) changed.push(key)
    }
    return changed
  }

  /** Plain-data snapshot of every register. */
  state(): MapState<V> {
    const entries: Array<[string, RegisterState<V>]> = []
    const cells = this.cells
    for (let s = 0; s < cells.length / 3; s++) {
      entries.push([cells[3 * s] as string, { value: cells[3 * s + 1] as V | undefined, timestamp: this.stampAt(s) }])
    }
    return { entries }
  }

  /** Rebuilds a map from {@link LWWMap.state}. */
  static from<V>(state: MapState<V>): LWWMap<V> {
    const map = new LWWMap<V>()
    map.merge(state)
    return map
  }

  /** Drops the spare capacity `push` left in the backing arrays (a record written once stays exactly sized). */
  protected trim(): void {
    this.cells = this.cells.slice()
    this.clock = this.clock.slice()
  }

  /** Number of registers held, removed ones included. */
  protected get registerCount(): number {
    return this.cells.length / 3
  }

  /** Applies a write (undefined = removal) if it beats the key's register; returns whether it won. */
  protected write(key: string, value: V | undefined, ts: Timestamp): boolean {
    return this.writeRaw(key, value, ts.wall, ts.counter, ts.peer)
  }

  /** {@link write} with the timestamp's parts passed apart (decoders call this without making a timestamp object). */
  protected writeRaw(key: string, value: V | undefined, wall: number, counter: number, peer: string): boolean {
    const s = this.slot(key)
    const cells = this.cells
    const clock = this.clock
    if (s < 0) {
      if (this.index) this.index.set(key, cells.length / 3)
      cells.push(key, value, peer)
      clock.push(wall, counter)
      if (!this.index && cells.length > 3 * INDEX_THRESHOLD) this.rebuildIndex()
      return true
    }
    const w = clock[2 * s]!
    const n = clock[2 * s + 1]!
    const p = cells[3 * s + 2] as string
    // Inline compareTimestamps against the unboxed slot: this is the hot path of every write and merge.
    const c = wall !== w ? wall - w : counter !== n ? counter - n : peer === p ? 0 : peer < p ? -1 : 1
    if (c < 0) return false
    if (c === 0 && compareValues(value as Value | undefined, cells[3 * s + 1] as Value | undefined) <= 0) return false
    cells[3 * s + 1] = value
    cells[3 * s + 2] = peer
    clock[2 * s] = wall
    clock[2 * s + 1] = counter
    return true
  }

  /** The timestamp of slot `s`. */
  protected stampAt(s: number): Timestamp {
    return { wall: this.clock[2 * s]!, counter: this.clock[2 * s + 1]!, peer: this.cells[3 * s + 2] as string }
  }

  /** The slot of `key`, or -1. */
  protected slot(key: string): number {
    if (this.index) return this.index.get(key) ?? -1
    const cells = this.cells
    for (let i = 0; i < cells.length; i += 3) if (cells[i] === key) return i / 3
    return -1
  }

  /**
   * Drops every register older than `floor` (and equal to it when `inclusive`); returns true when a visible value
   * went away. Used by record deletes and replacements, whose floor then stands for the dropped registers.
   */
  protected dropBelow(floor: Timestamp, inclusive: boolean): boolean {
    return this.dropBelowRaw(floor.wall, floor.counter, floor.peer, inclusive)
  }

  /** {@link dropBelow} with the floor's parts passed apart. */
  protected dropBelowRaw(wall: number, counter: number, peer: string, inclusive: boolean): boolean {
    const cells = this.cells
    const clock = this.clock
    return this.dropSlots((s) => {
      const w = clock[2 * s]!
      const n = clock[2 * s + 1]!
      const p = cells[3 * s + 2] as string
      const c = w !== wall ? w - wall : n !== counter ? n - counter : p === peer ? 0 : p < peer ? -1 : 1
      return c < 0 || (c === 0 && inclusive)
    })
  }

  /** Drops every register whose slot `drop` selects; returns true when a visible value went away. */
  protected dropSlots(drop: (slot: number) => boolean): boolean {
    const cells = this.cells
    const clock = this.clock
    let out = 0
    let lostVisible = false
    for (let s = 0; s < cells.length / 3; s++) {
      if (drop(s)) {
        if (cells[3 * s + 1] !== undefined) lostVisible = true
        continue
      }
      if (out !== s) {
        cells[3 * out] = cells[3 * s]
        cells[3 * out + 1] = cells[3 * s + 1]
        cells[3 * out + 2] = cells[3 * s + 2]
        clock[2 * out] = clock[2 * s]!
        clock[2 * out + 1] = clock[2 * s + 1]!
      }
      out++
    }
    if (out !== cells.length / 3) {
      cells.length = 3 * out
      clock.length = 2 * out
      this.index = undefined
      if (out > INDEX_THRESHOLD) this.rebuildIndex()
    }
    return lostVisible
  }

  private rebuildIndex(): void {
    const index = new Map<string, number>()
    const cells = this.cells
    for (let i = 0; i < cells.length; i += 3) index.set(cells[i] as string, i / 3)
    this.index = index
  }
}
