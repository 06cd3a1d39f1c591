/**
 * A sync answer cut in parts, written straight from the record blocks: what a store holds that a version vector
 * lacks, as a series of {@link encodeDelta}-format deltas of at most a given size each. No delta object and no value
 * is made on the way (values are copied as the canonical bytes they are kept in), so a new replica's first sync of a
 * million records costs about one pass over the blocks.
 *
 * Each part is safe to apply on its own, in any order, and claims only what it carries. The writes go out origin by
 * origin in timestamp order (the store's {@link DeltaIndex}); a part claims, for each origin it carries, the range
 * `(from, to]` from the previous part's claim up to its own last write of that origin (up to the store's newest of it
 * with the origin's last write). A record goes out with every write of the origin being sent that the receiver lacks,
 * in the part of that origin's first such write: it is in that origin's chain of claims, so a lost part stops the
 * chain there. Two writes with the same timestamp always travel in one part (a claim up to a timestamp covers both).
 */
import { DeltaWriter, StampStats } from './delta.js'
import type { DeltaIndex, OriginRange } from './delta-index.js'
import { Regs, type Table, blockToWire, grown } from './record-table.js'
import type { Timestamp } from './timestamp.js'
import type { VersionVector } from './version-vector.js'

/** What {@link encodeParts} reads of a store. */
export interface PartsSource {
  /** The store's peer and field-name tables (blocks name them by index). */
  readonly peerIds: readonly string[]
  readonly peerIndex: ReadonlyMap<string, number>
  readonly nameIds: readonly string[]
  /** Its index by origin and timestamp, up to date. */
  readonly index: DeltaIndex
}

/** What one answer is for. */
export interface PartsRequest {
  /** The receiver's vector; `seen` is the same by peer index: `[wall, counter]` pairs, wall −1 for none. */
  readonly vv: ReadonlyMap<string, Timestamp>
  readonly seen: ArrayLike<number>
  /** The claims of the whole answer (see claimsFor), made only when no write is held back. */
  readonly from: ReadonlyMap<string, Timestamp>
  readonly to: ReadonlyMap<string, Timestamp>
  /** Own writes newer than this are not sent (not durable yet). */
  readonly ceiling: Timestamp | undefined
}

/** A part larger than this share of the limit (by the estimate) is closed before the next record. */
const FILL = 0.85

/**
 * The changes `req` asks for, as deltas of at most `maxBytes` each — except a part whose records all go with writes
 * of one timestamp, which cannot be cut (the caller refuses one that is too large). No part when there is nothing to
 * send or claim. Also returns what the whole answer claims: nothing when an own write newer than the ceiling is held
 * back (it may have superseded writes of any origin, which must then not count as received).
 */
export function encodeParts(src: PartsSource, req: PartsRequest, maxBytes: number): { parts: Uint8Array[]; to: ReadonlyMap<string, Timestamp> } {
  const encoder = new PartsEncoder(src, req, maxBytes)
  return { parts: encoder.run(), to: encoder.to }
}

/** The items of the part being filled: one per index entry (a write of an origin at a time, in a record). */
class Items {
  n = 0
  range = new Int32Array(256)
  walls = new Float64Array(256)
  counters = new Uint32Array(256)
  tables = new Uint32Array(256)
  rows = new Uint32Array(256)
  /** 1 when the item sends its record's writes (the first of its origin's items in that record). */
  emit = new Uint8Array(256)
  /** 1 when an emitting item sends every register of its record (its block is then copied as it is). */
  whole = new Uint8Array(256)
  /** Estimated bytes of the emitting items. */
  bytes = 0
  emitting = 0

  push(range: number, wall: number, counter: number, table: number, row: number, emit: boolean, whole: boolean): void {
    if (this.n === this.walls.length) {
      const size = this.n * 2
      this.range = grown(this.range, size)
      this.walls = grown(this.walls, size)
      this.counters = grown(this.counters, size)
      this.tables = grown(this.tables, size)
      this.rows = grown(this.rows, size)
      this.emit = grown(this.emit, size)
      this.whole = grown(this.whole, size)
    }
    const i = this.n++
    this.range[i] = range
    this.walls[i] = wall
    this.counters[i] = counter
    this.tables[i] = table
    this.rows[i] = row
    this.emit[i] = emit ? 1 : 0
    this.whole[i] = whole ? 1 : 0
    if (emit) this.emitting++
  }

  clear(): void {
    this.n = 0
    this.bytes = 0
    this.emitting = 0
  }
}

class PartsEncoder {
  private readonly parts: Uint8Array[] = []
  private readonly cur = new Regs()
  private readonly items = new Items()
  private readonly ranges: OriginRange[]
  /** Per range: its origin's store peer index; the claim the next part starts from; whether its last item is taken. */
  private readonly peerOf: number[]
  private readonly carry: (Timestamp | undefined)[]
  private readonly done: boolean[]
  /** Per table (by index number), the range + 1 that last sent each row (a row is sent once per origin). */
  private readonly marks: (Int32Array | undefined)[] = []
  private readonly budget: number
  /** Claims of origins with nothing to send (all superseded): they ride in the first part. */
  private pendingClaims: string[]
  /** Store name index → part name index (−1: not in the part), and the names in part order. */
  private readonly nameAt: Int32Array
  private readonly partNames: number[] = []
  private readonly partPeers: number[] = []
  private partMinWall = Infinity
  /** The largest wall and counter of the part's record stamps (a StampRange; counter −1: none yet). */
  private readonly partStamps = new StampStats()
  /** Whether the last {@link select} took every register of the record. */
  private selectedAll = false

  /** What the answer claims (empty when a write is held back). */
  readonly from: ReadonlyMap<string, Timestamp>
  readonly to: ReadonlyMap<string, Timestamp>

  constructor(
    private readonly src: PartsSource,
    private readonly req: PartsRequest,
    private readonly maxBytes: number,
  ) {
    this.ranges = src.index.ranges(req.vv)
    const held = this.holdsBack()
    this.from = held ? new Map() : req.from
    this.to = held ? new Map() : req.to
    this.peerOf = this.ranges.map((r) => src.peerIndex.get(r.origin) ?? -1)
    this.carry = this.ranges.map((r) => this.from.get(r.origin))
    this.done = this.ranges.map(() => false)
    const inRanges = new Set(this.ranges.map((r) => r.origin))
    this.pendingClaims = [...this.to.keys()].filter((o) => !inRanges.has(o))
    this.budget = Math.floor(maxBytes * FILL)
    this.nameAt = new Int32Array(src.nameIds.length).fill(-1)
  }

  /** True when the ceiling's origin holds a write newer than the ceiling that the receiver lacks. */
  private holdsBack(): boolean {
    const c = this.req.ceiling
    const range = c && this.ranges.find((r) => r.origin === c.peer)
    const p = c && this.src.peerIndex.get(c.peer)
    if (!range || p === undefined) return false
    const { log } = range
    const cur = this.cur
    for (let i = Math.max(range.start, log.after(c.wall, c.counter)); i < log.n; i++) {
      const t = this.src.index.tables[log.tables[i]!]!
      const row = log.rows[i]!
      if (!t.has(row)) continue
      t.read(row, cur)
      const pending = (wall: number, counter: number): boolean => (wall > c.wall || (wall === c.wall && counter > c.counter)) && !covered(this.req.seen, p, wall, counter)
      let found = cur.floorPeer === p && pending(cur.floorWall, cur.floorCounter)
      for (let k = 0; k < cur.n && !found; k++) found = cur.peers[k] === p && pending(cur.walls[k]!, cur.counters[k]!)
      if (found) return true
    }
    return false
  }

  run(): Uint8Array[] {
    const { ranges, items, cur } = this
    const tables = this.src.index.tables
    const ceiling = this.req.ceiling
    for (let ri = 0; ri < ranges.length; ri++) {
      const { origin, log, start } = ranges[ri]!
      const p = this.peerOf[ri]!
      const own = ceiling !== undefined && ceiling.peer === origin
      // Rows this origin's records were sent in: a set for a few writes, a mark per row for many.
      const few = log.n - start < 4096
      const sent = new Set<number>()
      for (let i = start; i < log.n; i++) {
        const wall = log.walls[i]!
        const counter = log.counters[i]!
        // Not durable yet: never sent (and the answer claims nothing, see RecordStore.encodeChangesSinceParts).
        if (own && (wall > ceiling.wall || (wall === ceiling.wall && counter > ceiling.counter))) continue
        const ti = log.tables[i]!
        const row = log.rows[i]!
        const t = tables[ti]!
        let bytes = 0
        let whole = false
        if (t.has(row) && p >= 0) {
          let first: boolean
          if (few) {
            const key = ti * 2 ** 32 + row
            first = !sent.has(key)
            sent.add(key)
          } else {
            const marks = this.marksOf(ti, t)
            first = marks[row] !== ri + 1
            marks[row] = ri + 1
          }
          if (first) {
            t.read(row, cur)
            bytes = this.select(p, t.idBytes(row).length, false)
            whole = this.selectedAll
          }
        }
        // Close the part before a record that would overflow it, but never between two writes of one timestamp.
        const n = items.n
        if (bytes > 0 && items.emitting > 0 && items.bytes + bytes > this.budget && (items.range[n - 1] !== ri || items.walls[n - 1] !== wall || items.counters[n - 1] !== counter)) {
          this.flush()
          t.read(row, cur)
        }
        if (bytes > 0) this.select(p, 0, true)
        items.push(ri, wall, counter, ti, row, bytes > 0, whole && bytes > 0)
        items.bytes += bytes
      }
      this.done[ri] = true
    }
    this.flush()
    this.cur.release()
    return this.parts
  }

  /** The marks of table `ti` (see {@link marks}), as long as its rows. */
  private marksOf(ti: number, t: Table): Int32Array {
    let m = this.marks[ti]
    if (m === undefined || m.length < t.rowLimit) m = this.marks[ti] = m === undefined ? new Int32Array(t.rowLimit) : grown(m, t.rowLimit)
    return m
  }

  /**
   * With `cur` holding a record: the estimated bytes of its writes of peer `p` the receiver lacks (0: none), noting
   * their names and walls in the part's tables when `note`, and in {@link selectedAll} whether that is all of them.
   */
  private select(p: number, idBytes: number, note: boolean): number {
    const { cur, req } = this
    const seen = req.seen
    let bytes = 0
    let all = true
    if (cur.floorPeer === p && !covered(seen, p, cur.floorWall, cur.floorCounter) && !this.held(p, cur.floorWall, cur.floorCounter)) {
      bytes += 12
      if (note) this.noteStamp(p, cur.floorWall, cur.floorCounter)
    } else if (cur.floorPeer >= 0) all = false
    for (let k = 0; k < cur.n; k++) {
      if (cur.peers[k] !== p || covered(seen, p, cur.walls[k]!, cur.counters[k]!) || this.held(p, cur.walls[k]!, cur.counters[k]!)) {
        all = false
        continue
      }
      bytes += cur.ve[k]! - cur.vs[k]! + 12
      if (note) {
        this.noteStamp(p, cur.walls[k]!, cur.counters[k]!)
        const name = cur.names[k]!
        if (this.nameAt[name] === -1) this.nameAt[name] = this.partNames.push(name) - 1
      }
    }
    this.selectedAll = all
    return bytes === 0 ? 0 : bytes + idBytes + 8
  }

  /** True for an own write newer than the ceiling. */
  private held(p: number, wall: number, counter: number): boolean {
    const c = this.req.ceiling
    return c !== undefined && this.src.peerIds[p] === c.peer && (wall > c.wall || (wall === c.wall && counter > c.counter))
  }

  private noteStamp(p: number, wall: number, counter: number): void {
    if (!this.partPeers.includes(p)) this.partPeers.push(p)
    if (wall < this.partMinWall) this.partMinWall = wall
    this.partStamps.note(wall, counter)
  }

  /** Writes the items gathered as one part (or more, when the estimate fell short), then starts a new part. */
  private flush(): void {
    const items = this.items
    if (items.n > 0 || this.pendingClaims.length > 0) this.write(0, items.n)
    items.clear()
    for (const name of this.partNames) this.nameAt[name] = -1
    this.partNames.length = 0
    this.partPeers.length = 0
    this.partMinWall = Infinity
    this.partStamps.reset()
  }

  /** Writes items `[lo, hi)` as a part; halves them (never between two writes of one timestamp) if it comes out too large. */
  private write(lo: number, hi: number): void {
    const carried = this.carry.slice()
    const pending = this.pendingClaims
    const bytes = this.encode(lo, hi)
    if (bytes.length <= this.maxBytes) {
      this.parts.push(bytes)
      return
    }
    const cut = this.cutPoint(lo, hi)
    if (cut === undefined) {
      this.parts.push(bytes) // one record's writes of one timestamp: the caller refuses it
      return
    }
    this.carry.splice(0, this.carry.length, ...carried)
    this.pendingClaims = pending
    this.write(lo, cut)
    this.write(cut, hi)
  }

  /** An item index in `(lo, hi)` near the middle of the emitting items, not between two writes of one timestamp. */
  private cutPoint(lo: number, hi: number): number | undefined {
    const { items } = this
    const same = (i: number): boolean => items.range[i - 1] === items.range[i] && items.walls[i - 1] === items.walls[i] && items.counters[i - 1] === items.counters[i]
    const mid = (lo + hi) >> 1
    for (let d = 0; d < hi - lo; d++) {
      for (const i of [mid + d, mid - d]) if (i > lo && i < hi && !same(i)) return i
    }
    return undefined
  }

  /** Encodes items `[lo, hi)` with their claims, and advances {@link carry} past them. */
  private encode(lo: number, hi: number): Uint8Array {
    const { items, src, req, cur } = this
    const tables = src.index.tables
    // Claims: per origin in these items, from the last claim up to its last item here (its newest, if that is the
    // origin's last item overall).
    const from: VersionVector = new Map()
    const to: VersionVector = new Map()
    const claiming = this.to.size > 0
    if (claiming) {
      // Items of one origin are consecutive: claim at the last item of each run.
      for (let i = lo; i < hi; i++) {
        const ri = items.range[i]!
        const endOfRun = i === hi - 1 || items.range[i + 1] !== ri
        if (!endOfRun) continue
        const origin = this.ranges[ri]!.origin
        const newest = this.to.get(origin)
        if (newest === undefined) continue
        const c = this.carry[ri]
        if (c) from.set(origin, c)
        // Its newest when this is the origin's last item overall (past it, only superseded or unsent writes).
        const last = this.done[ri] && (i === items.n - 1 || items.range[i + 1] !== ri)
        const ts = last ? newest : { wall: items.walls[i]!, counter: items.counters[i]!, peer: origin }
        to.set(origin, ts)
        this.carry[ri] = ts
      }
      for (const origin of this.pendingClaims) {
        const f = this.from.get(origin)
        if (f) from.set(origin, f)
        to.set(origin, this.to.get(origin)!)
      }
    }
    this.pendingClaims = []
    // The tables: the gathered records' peers and names (a superset when these items are half of a part), and the
    // vectors' peers.
    const peers = new Map<string, number>()
    const peerAt = new Int32Array(src.peerIds.length).fill(-1)
    for (const p of this.partPeers) {
      peerAt[p] = peers.size
      peers.set(src.peerIds[p]!, peers.size)
    }
    let baseWall = this.partMinWall
    for (const vv of [from, to]) {
      for (const ts of vv.values()) {
        if (!peers.has(ts.peer)) peers.set(ts.peer, peers.size)
        if (ts.wall < baseWall) baseWall = ts.wall
      }
    }
    if (baseWall === Infinity) baseWall = 0
    const names = new Map<string, number>()
    for (const n of this.partNames) names.set(src.nameIds[n]!, names.size)
    // The records, grouped by collection in order of first appearance.
    const groups = new Map<number, number[]>()
    for (let i = lo; i < hi; i++) {
      if (items.emit[i] === 0) continue
      const ti = items.tables[i]!
      let g = groups.get(ti)
      if (!g) groups.set(ti, (g = []))
      g.push(i)
    }
    // The part's stamp range is that of every item gathered: a superset when these items are half of a part.
    const dw = new DeltaWriter(peers, baseWall, names, from, to, this.partStamps, items.bytes + 1024)
    dw.collections(groups.size)
    const seen = req.seen
    const wire = { peerAt, nameAt: this.nameAt }
    for (const [ti, list] of groups) {
      const t = tables[ti]!
      dw.collection(t.name, list.length)
      for (const i of list) {
        const p = this.peerOf[items.range[i]!]!
        const pi = peerAt[p]!
        const row = items.rows[i]!
        const w = dw.recordIdBytes(t.idBytes(row))
        if (items.whole[i] === 1) {
          blockToWire(t.buf, t.offset(row), w, wire, dw)
          continue
        }
        t.read(row, cur)
        const floor = cur.floorPeer === p && !covered(seen, p, cur.floorWall, cur.floorCounter) && !this.held(p, cur.floorWall, cur.floorCounter)
        if (floor) {
          w.u8(cur.deleted ? 3 : 1)
          dw.tsAt(cur.floorWall, cur.floorCounter, pi)
        } else w.u8(0)
        let n = 0
        for (let k = 0; k < cur.n; k++) if (this.sends(p, k)) n++
        w.uint(n)
        for (let k = 0; k < cur.n; k++) {
          if (this.sends(p, k)) dw.fieldAt(this.nameAt[cur.names[k]!]!, cur.srcs[k]!, cur.vs[k]!, cur.ve[k]!, cur.walls[k]!, cur.counters[k]!, pi)
        }
      }
    }
    return dw.finish()
  }

  /** True when field `k` of `cur` is a write of peer `p` the receiver lacks (and may have). */
  private sends(p: number, k: number): boolean {
    const cur = this.cur
    return cur.peers[k] === p && !covered(this.req.seen, p, cur.walls[k]!, cur.counters[k]!) && !this.held(p, cur.walls[k]!, cur.counters[k]!)
  }
}

/** True when `seen` covers the write `(wall, counter)` of the peer with index `p`. */
export function covered(seen: ArrayLike<number>, p: number, wall: number, counter: number): boolean {
  const w = seen[2 * p]
  return w !== undefined && w >= 0 && (wall < w || (wall === w && counter <= seen[2 * p + 1]!))
}
