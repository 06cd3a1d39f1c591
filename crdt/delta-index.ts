/**
 * The record store's index by origin and timestamp (see {@link DeltaIndex}), which finds the records a version vector
 * lacks without looking at the others, and lists an origin's writes in timestamp order for a sync answer cut in parts.
 */
import { grown, type Table } from './record-table.js'
import type { Timestamp } from './timestamp.js'

/** An origin's log and the first position in it a request lacks (see {@link DeltaIndex.ranges}). */
export interface OriginRange {
  readonly origin: string
  readonly log: OriginLog
  readonly start: number
}

/** One origin's writes in a {@link DeltaIndex}: parallel arrays, in timestamp order while `sorted`. */
export class OriginLog {
  walls = new Float64Array(16)
  counters = new Uint32Array(16)
  /** The record: its table's number in the index, and its row. */
  tables = new Uint32Array(16)
  rows = new Uint32Array(16)
  n = 0
  sorted = true
  maxWall = -1
  maxCounter = 0

  /** Orders the items by timestamp (needed only when a request falls inside the range of an unsorted log). */
  sort(): void {
    const n = this.n
    const { walls, counters, tables, rows } = this
    const perm = new Uint32Array(n)
    for (let i = 0; i < n; i++) perm[i] = i
    perm.sort((a, b) => walls[a]! - walls[b]! || counters[a]! - counters[b]!)
    const w = new Float64Array(walls.length)
    const c = new Uint32Array(counters.length)
    const t = new Uint32Array(tables.length)
    const r = new Uint32Array(rows.length)
    for (let i = 0; i < n; i++) {
      const j = perm[i]!
      w[i] = walls[j]!
      c[i] = counters[j]!
      t[i] = tables[j]!
      r[i] = rows[j]!
    }
    this.walls = w
    this.counters = c
    this.tables = t
    this.rows = r
    this.sorted = true
  }

  /** The first position holding a write newer than `(wall, counter)` (the log must be sorted). */
  after(wall: number, counter: number): number {
    let lo = 0
    let hi = this.n
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const w = this.walls[mid]!
      if (w < wall || (w === wall && this.counters[mid]! <= counter)) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  /** Doubles the arrays. */
  grow(): void {
    const size = this.walls.length * 2
    this.walls = grown(this.walls, size)
    this.counters = grown(this.counters, size)
    this.tables = grown(this.tables, size)
    this.rows = grown(this.rows, size)
  }
}

/**
 * The store's index by origin and timestamp: for each origin, every (timestamp, record) it wrote that the store
 * took, so that the records a version vector lacks are found without looking at the others. Items are appended as
 * writes land (a local writer's are already in order; merged ones may not be, and the log is sorted when a request
 * first needs it); an item whose register has since been overwritten or dropped stays behind, harmlessly — lookups
 * yield a superset that {@link RecordStore.changesSince} filters exactly — until the log has grown to twice its size
 * at the last build, or a table renumbered its rows, when the index is dropped and rebuilt from the records on next use.
 */
export class DeltaIndex {
  private readonly logs = new Map<string, OriginLog>()
  private readonly tableIds = new Map<Table, number>()
  /** The tables items point into, with their generation when first seen. */
  readonly tables: Table[] = []
  private readonly generations: number[] = []
  private items = 0
  private limit = Infinity

  /** Marks the end of a build: the index is rebuilt once stale items have doubled it. */
  built(): void {
    this.limit = 2 * this.items + 4096
  }

  /** Records that `origin` wrote the record in `row` of `table` at `(wall, counter)`. */
  add(origin: string, wall: number, counter: number, table: Table, row: number): void {
    let log = this.logs.get(origin)
    if (!log) this.logs.set(origin, (log = new OriginLog()))
    let ti = this.tableIds.get(table)
    if (ti === undefined) {
      ti = this.tables.length
      this.tableIds.set(table, ti)
      this.tables.push(table)
      this.generations.push(table.generation)
    }
    const n = log.n
    if (n > 0) {
      const w = log.walls[n - 1]!
      const c = log.counters[n - 1]!
      if (w === wall && c === counter && log.rows[n - 1] === row && log.tables[n - 1] === ti) return // a put's fields share its time
      if (wall < w || (wall === w && counter < c)) log.sorted = false
    }
    if (n === log.walls.length) log.grow()
    log.walls[n] = wall
    log.counters[n] = counter
    log.tables[n] = ti
    log.rows[n] = row
    log.n = n + 1
    if (wall > log.maxWall || (wall === log.maxWall && counter > log.maxCounter)) {
      log.maxWall = wall
      log.maxCounter = counter
    }
    this.items++
  }

  /** True once the log has grown enough that a rebuild would halve it, or a table's rows were renumbered. */
  get stale(): boolean {
    if (this.items > this.limit) return true
    for (let i = 0; i < this.tables.length; i++) if (this.tables[i]!.generation !== this.generations[i]) return true
    return false
  }

  /**
   * Per origin with writes `vv` does not cover: its log (sorted) and the position of its first such write, in the
   * order the origins were first seen.
   */
  ranges(vv: ReadonlyMap<string, Timestamp>): OriginRange[] {
    const out: OriginRange[] = []
    for (const [origin, log] of this.logs) {
      const seen = vv.get(origin)
      let start = 0
      if (seen !== undefined) {
        if (log.maxWall < seen.wall || (log.maxWall === seen.wall && log.maxCounter <= seen.counter)) continue
        if (!log.sorted) log.sort() // once: writes appended after it in order keep it sorted
        start = log.after(seen.wall, seen.counter)
      } else if (!log.sorted) log.sort()
      out.push({ origin, log, start })
    }
    return out
  }

  /**
   * `[table, row, table, row, …]` (table: an index into {@link tables}) of every record holding a write that `vv`
   * does not cover (duplicates possible), or undefined when there are more than `max` items to look at.
   */
  candidates(vv: ReadonlyMap<string, Timestamp>, max: number): number[] | undefined {
    const ranges = this.ranges(vv)
    let count = 0
    for (const { log, start } of ranges) if ((count += log.n - start) > max) return undefined
    const out: number[] = []
    for (const { log, start } of ranges) for (let i = start; i < log.n; i++) out.push(log.tables[i]!, log.rows[i]!)
    return out
  }

}

