import { Reader, Writer, holdShape, putUint } from './bytes.js'
import { type Delta, DeltaWriter, type FieldDelta, type RecordDelta, type RecordRef, readDelta } from './delta.js'
import { DecodeError, InvalidArgumentError, InvalidValueError } from './errors.js'
import { DeltaIndex } from './delta-index.js'
import { covered, encodeParts } from './delta-parts.js'
import { murmur3x128 } from './hash.js'
import { MAX_VARINT, NEEDS_MERGE, Outgoing, Regs, Table, WIRE_EMPTY, WIRE_FLOOR, WIRE_TOMBSTONE, WIRE_VISIBLE, WireTables, blockToWire, collectOutgoing, hashBytes, scanBlock, putWireStamp, wireToBlock, wireToRegs } from './record-table.js'
import { type Timestamp, compareTimestamps, invalidTimestampReason } from './timestamp.js'
import { ABSENT_TAG, type Value, compareValueBytes, defineField, normalizeValue, readValue, valueEnd, writeValue } from './value.js'
import { type VersionVector, advance, claimsFor, covers, isNewer } from './version-vector.js'

/** Options of a {@link RecordStore}. */
export interface RecordStoreInit {
  /**
   * From how many records on {@link RecordStore.changesSince} finds changes through its index by origin and
   * timestamp instead of scanning every record (below, a scan costs a few ms, and the index's upkeep on every write
   * is not worth it). 0 indexes from the first record.
   * @default 16384
   */
  readonly indexFromRecords?: number
}

/** A visible record: its fields plus its `id`. */
export type StoredRecord = { readonly id: string } & { readonly [field: string]: Value }

/** Reported while applying a delta when two different values met on one field: the winner and the loser. */
export interface Overwrite extends RecordRef {
  readonly field: string
  readonly winner: { readonly value: Value | undefined; readonly timestamp: Timestamp }
  readonly loser: { readonly value: Value | undefined; readonly timestamp: Timestamp }
  /** True when the incoming write lost to the value already held. */
  readonly incomingLost: boolean
}

/** What {@link RecordStore.collect} dropped. */
export interface CollectResult {
  /** Delete floors and field removals dropped. */
  readonly tombstones: number
  /** Records dropped whole (they held nothing else). */
  readonly records: number
}

/** A record whose visible content changed. */
export interface RecordChange extends RecordRef {
  /** Whether the record was visible before the change (with `has()` now: added, updated or deleted). */
  readonly existed: boolean
}

/** The result of {@link RecordStore.apply}. */
export interface ApplyResult {
  /** Records whose visible content changed (appeared, changed or disappeared). */
  readonly changed: RecordChange[]
  /** True when the delta raised the store's version vector. */
  readonly advanced: boolean
  /** Records whose floor the delta raised (visible or not): what depends on floors (text) must follow them. */
  readonly floors: RecordRef[]
  /** True when the delta changed any record's registers (visible or not), listed in `changed` or not. */
  readonly wrote: boolean
}


/**
 * What a merge reports back to {@link RecordStore.apply} and {@link RecordStore.applyEncoded}. Its fields always hold
 * the same kinds of values (the lists are there even when not wanted), so the merge code compiled for one apply
 * stays valid for the next.
 */
class ApplyContext {
  /** Set by a merge that changed a record's registers. */
  wrote = false
  readonly changed: RecordChange[] = objectList()
  readonly floors: RecordRef[] = objectList()
  constructor(
    /** Whether `changed` and `floors` are wanted. */
    readonly report: boolean,
    readonly onOverwrite: ((o: Overwrite) => void) | undefined,
  ) {}
}

const NOTHING = { collection: '', id: '', existed: false }

// Held for ApplyContext's hidden class (see holdShape): a merge's context would hold its lists and its listener.
holdShape(new ApplyContext(false, undefined))

/**
 * An empty array already of the kind that holds objects: a fresh `[]` holds small integers until its first push,
 * and merge code compiled for one kind is thrown away when it meets the other.
 */
function objectList<T>(): T[] {
  const list = [NOTHING] as unknown as T[]
  list.pop()
  return list
}

/** The values of local writes, encoded before they are merged (writes never re-enter the store). */
const localValues = new Writer(256)

/** What {@link RecordStore.encodeChangesSince} sends, gathered before it is written (encodes never re-enter). */
let outgoing = new Outgoing()

/** Gathers in `out` what goes out of the rows `found` lists (`[table, row, …]`), or of every row when undefined. */
function collectRows(tables: readonly Table[], found: readonly number[] | undefined, seen: Float64Array, t: WireTables, out: Outgoing): void {
  if (found) {
    for (let i = 0; i < found.length; i += 2) {
      const table = tables[found[i]!]!
      const row = found[i + 1]!
      collectOutgoing(table.buf, table.offset(row), seen, t, out, found[i]!, row)
    }
    return
  }
  for (let ti = 0; ti < tables.length; ti++) collectTable(tables[ti]!, ti, seen, t, out)
}

/**
 * {@link collectRows} of every row of one table. (A loop of its own: the outer loop's code, compiled while this one
 * first ran, would otherwise be thrown away where the first table ends.)
 */
function collectTable(table: Table, ti: number, seen: Float64Array, t: WireTables, out: Outgoing): void {
  const buf = table.buf
  for (let row = 0; row < table.rowLimit; row++) if (table.has(row)) collectOutgoing(buf, table.offset(row), seen, t, out, ti, row)
}

/** Gathers in `out` what goes out of the records `ids` of one table (in that order, each once; {@link collectRows}). */
function gatherWritten(table: Table, ti: number, ids: readonly string[], seen: Float64Array, t: WireTables, out: Outgoing): void {
  for (let i = 0; i < ids.length; i++) {
    const row = table.find(ids[i]!)
    if (row < 0 || table.marked(row)) continue
    const n = out.n
    collectOutgoing(table.buf, table.offset(row), seen, t, out, ti, row)
    if (out.n > n) table.mark(row)
  }
}

/** Writes the records gathered in `out` (after the header `w` wrote), grouped by collection in order of first appearance. */
function writeOutgoing(w: DeltaWriter, out: Outgoing, tables: readonly Table[], t: WireTables): void {
  const order = groupByTable(out)
  let groups = 0
  for (let i = 0; i < order.length; i++) if (i === 0 || out.tables[order[i]!] !== out.tables[order[i - 1]!]) groups++
  w.collections(groups)
  const { peerAt, nameAt } = t
  for (let i = 0; i < order.length; i++) {
    const r = order[i]!
    const table = tables[out.tables[r]!]!
    if (i === 0 || out.tables[r] !== out.tables[order[i - 1]!]) {
      let n = 1
      while (i + n < order.length && out.tables[order[i + n]!] === out.tables[r]) n++
      w.collection(table.name, n)
    }
    const row = out.rows[r]!
    const ww = w.recordIdAt(table.idArena, table.idStart(row), table.idStop(row))
    // The rest straight into the buffer, room made once per record.
    const first = out.firsts[r]!
    const end = first + out.counts[r]!
    let room = 1 + 3 * MAX_VARINT
    for (let k = first; k < end; k++) room += 3 * MAX_VARINT + out.ve[k]! - out.vs[k]!
    ww.ensure(room)
    const buf = ww.buffer
    const wc = stampScratch
    let o = ww.pos
    const fp = out.floorPeers[r]!
    if (fp < 0) buf[o++] = 0
    else {
      buf[o++] = out.deleted[r] ? 3 : 1
      wc[0] = out.floorWalls[r]!
      wc[1] = out.floorCounters[r]!
      o = putWireStamp(buf, o, wc, peerAt[fp]!, w)
    }
    o = putUint(buf, o, end - first)
    const src = table.buf
    for (let k = first; k < end; k++) {
      o = putUint(buf, o, nameAt[out.names[k]!]!)
      const ve = out.ve[k]!
      for (let i = out.vs[k]!; i < ve; i++) buf[o++] = src[i]!
      wc[0] = out.walls[k]!
      wc[1] = out.counters[k]!
      o = putWireStamp(buf, o, wc, peerAt[out.peers[k]!]!, w)
    }
    ww.pos = o
  }
}

/** Lets go of {@link outgoing}'s arrays after a large encode (the next one starts small again). */
function shrinkOutgoing(): void {
  if (outgoing.tables.length > 1 << 16 || outgoing.names.length > 1 << 18) outgoing = new Outgoing()
}

/** A stamp {@link writeOutgoing} writes (wall, counter: typed, as doubles passed to a call are boxed). */
const stampScratch = new Float64Array(2)

/**
 * The records of `out` in write order: grouped by table in order of first appearance, in their order within a group
 * (already so when the records came from a scan, table by table).
 */
function groupByTable(out: Outgoing): Int32Array {
  const n = out.n
  const order = new Int32Array(n)
  let contiguous = true
  const done = new Set<number>()
  for (let i = 1; i < n && contiguous; i++) {
    if (out.tables[i] === out.tables[i - 1]) continue
    if (done.has(out.tables[i]!)) contiguous = false
    done.add(out.tables[i - 1]!)
  }
  if (contiguous) {
    for (let i = 0; i < n; i++) order[i] = i
    return order
  }
  const groups = new Map<number, number[]>()
  for (let i = 0; i < n; i++) {
    let g = groups.get(out.tables[i]!)
    if (!g) groups.set(out.tables[i]!, (g = []))
    g.push(i)
  }
  let k = 0
  for (const g of groups.values()) for (const i of g) order[k++] = i
  return order
}

/** Writes a received record's block straight into its table's arena (Table.openArena). */
const arena = new Writer(0)

/** The values of a delta record {@link RecordStore.applyEncoded} merges (each merge copies them before the next). */
const incoming = new Writer(1024)

/**
 * Collections of records, each record an LWW map of fields with whole-record replace and delete:
 * - `put` at T replaces the record: every field written before T is erased, the given fields are written at T;
 * - `update` at T writes only the given fields (`undefined` removes one);
 * - `delete` at D erases every field written at or before D; a later write makes the record visible again with only
 *   the fields written after D.
 * All three resolve by timestamp, identically on every replica, whatever order writes arrive in.
 *
 * Records are kept as blocks of bytes, one {@link Table} per collection (see record-table.ts for the layout).
 */
export class RecordStore {
  private readonly tables = new Map<string, Table>()
  /** Every peer id a register or floor names, by index (the blocks hold indexes; the table only grows). */
  private readonly peers = new Interner()
  private readonly peerIds = this.peers.strings
  private readonly peerIndex = this.peers.index
  /** Every field name, by index (likewise). */
  private readonly names = new Interner()
  private readonly nameIds = this.names.strings
  /** Scratch: the record being merged, the incoming writes, and a record's state before a merge. */
  private readonly cur = new Regs()
  private readonly inc = new Regs()
  private readonly before = new Regs()
  private reader = new Reader(new Uint8Array(0))
  private readonly indexed: number[] = []
  private readonly vv: VersionVector = new Map()
  /**
   * Per origin, ranges `(from, to]` of its writes that a delta brought but the vector could not count yet, because
   * the delta arrived ahead of an earlier one (the vector lacked writes up to `from`). Once the vector reaches `from`,
   * it advances to `to` at once, so deltas reordered on the way still count as received when the gap closes.
   */
  private readonly ahead = new Map<string, { from: Timestamp; to: Timestamp }[]>()
  /**
   * With {@link vv}, bounds every floor and register held: per origin, the newest write a delta brought that the
   * vector did not cover once the delta was merged (it arrived ahead of an earlier one, or with no claim). A peer whose
   * vector covers both lacks nothing (see {@link encodeChangesSince}). `beyondUnknown`: no bound is known (after a
   * {@link rebase}, or a delta that failed half-way).
   */
  private readonly beyond: VersionVector = new Map()
  private beyondUnknown = false
  /** Covers every tombstone this store has collected (see {@link RecordStore.collect}). */
  private readonly frontierVv: VersionVector = new Map()
  /** The newest tombstone this store has collected. */
  private collectedNewest: Timestamp | undefined = undefined
  /**
   * Where each origin's writes are, by timestamp (see {@link DeltaIndex}): built by the first incremental
   * {@link changesSince}, kept up to date by every write after that, dropped by {@link collect} and {@link rebase}
   * (and rebuilt when next needed).
   */
  private index: DeltaIndex | undefined = undefined
  private readonly indexFrom: number

  constructor(init: RecordStoreInit = {}) {
    this.indexFrom = init.indexFromRecords ?? INDEX_MIN_RECORDS
  }

  /** Replaces a record with `fields` (an `id` key, if present, must equal `id`; `undefined` fields are skipped). */
  put(collection: string, id: string, fields: object, ts: Timestamp): void {
    checkTimestamp(ts)
    const n = normalizeFields(collection, id, fields, false) // first: a bad value writes nothing
    const peer = this.peer(ts.peer)
    const inc = this.localWrite(n, ts, peer)
    inc.floorPeer = peer
    inc.floorWall = ts.wall
    inc.floorCounter = ts.counter
    this.mergeLocal(collection, id, inc)
    this.indexWrite(ts, collection, id)
    this.advanceTo(ts)
  }

  /** Sets the given fields of a record (creating it if needed); a field set to `undefined` is removed. */
  update(collection: string, id: string, patch: object, ts: Timestamp): void {
    checkTimestamp(ts)
    const n = normalizeFields(collection, id, patch, true)
    this.mergeLocal(collection, id, this.localWrite(n, ts, this.peer(ts.peer)))
    this.indexWrite(ts, collection, id)
    this.advanceTo(ts)
  }

  /** Deletes a record at `ts`: fields written at or before `ts` are erased, later ones survive. */
  delete(collection: string, id: string, ts: Timestamp): void {
    checkTimestamp(ts)
    checkRef(collection, id)
    const inc = this.inc
    inc.clear()
    inc.floorPeer = this.peer(ts.peer)
    inc.floorWall = ts.wall
    inc.floorCounter = ts.counter
    inc.deleted = true
    this.mergeLocal(collection, id, inc)
    this.indexWrite(ts, collection, id)
    this.advanceTo(ts)
  }

  /** The visible record, or undefined. A fresh object each call; nested values are frozen. */
  get(collection: string, id: string): StoredRecord | undefined {
    const t = this.tables.get(collection)
    const row = t ? t.find(id) : -1
    return row >= 0 && t!.visible(row) ? this.materialize(t!, row, id) : undefined
  }

  /** The record's floor: its latest replacement (`deleted: false`) or delete, if any. */
  floorOf(collection: string, id: string): { readonly ts: Timestamp; readonly deleted: boolean } | undefined {
    const t = this.tables.get(collection)
    const row = t ? t.find(id) : -1
    if (row < 0) return undefined
    const cur = this.cur
    t!.read(row, cur)
    cur.release()
    return cur.floorPeer < 0 ? undefined : { ts: { wall: cur.floorWall, counter: cur.floorCounter, peer: this.peerIds[cur.floorPeer]! }, deleted: cur.deleted }
  }

  /** True when the record is visible. */
  has(collection: string, id: string): boolean {
    const t = this.tables.get(collection)
    const row = t ? t.find(id) : -1
    return row >= 0 && t!.visible(row)
  }

  /** Ids of the visible records of a collection. */
  ids(collection: string): string[] {
    const out: string[] = []
    const t = this.tables.get(collection)
    if (t) for (let row = 0; row < t.rowLimit; row++) if (t.visible(row)) out.push(t.id(row))
    return out
  }

  /** The visible records of a collection. */
  all(collection: string): StoredRecord[] {
    const out: StoredRecord[] = []
    const t = this.tables.get(collection)
    if (t) for (let row = 0; row < t.rowLimit; row++) if (t.visible(row)) out.push(this.materialize(t, row, t.id(row)))
    return out
  }

  /** Records held, visible or deleted, in every collection. */
  get size(): number {
    let n = 0
    for (const t of this.tables.values()) n += t.size
    return n
  }

  /** Names of the collections that hold any record (visible or deleted). */
  collections(): string[] {
    return [...this.tables.keys()]
  }

  /** How many records of a collection are visible, and how many are deleted but still kept (as a floor). */
  count(collection: string): { visible: number; deleted: number } {
    let visible = 0
    const t = this.tables.get(collection)
    if (!t) return { visible: 0, deleted: 0 }
    for (let row = 0; row < t.rowLimit; row++) if (t.visible(row)) visible++
    return { visible, deleted: t.size - visible }
  }

  /** A copy of the version vector: per origin peer, the newest write held. */
  versionVector(): VersionVector {
    return new Map(this.vv)
  }

  /** {@link versionVector} without a copy, for readers that keep no reference (the sync engine, per message). */
  versionVectorView(): ReadonlyMap<string, Timestamp> {
    return this.vv
  }

  /**
   * The changes a replica with version vector `vv` lacks: every register and floor newer than `vv`'s entry for its
   * origin, with the vectors that let the receiver count them as received.
   *
   * With `ceiling`, writes of `ceiling.peer` newer than it are held back (a replica does not hand out its own writes
   * before they are durable; a ceiling with wall −1 holds back all of them). When anything was held back, the delta
   * carries its data but claims nothing (empty `from`/`to`): a held-back write may have superseded — overwritten, or
   * erased by a delete — writes of any origin that are then no longer in memory, and if the held-back write is lost
   * in a crash those must come back, so the receiver has to ask again rather than count them as received.
   */
  changesSince(vv: ReadonlyMap<string, Timestamp>, ceiling?: Timestamp): Delta {
    const records: RecordDelta[] = []
    let held = 0
    const heldBack = (wall: number, counter: number, peer: string): boolean =>
      ceiling !== undefined && peer === ceiling.peer && (wall > ceiling.wall || (wall === ceiling.wall && counter > ceiling.counter))
    const cur = this.cur
    const seen = this.seenBy(vv)
    this.forEachCandidate(vv, (collection, t, row) => {
      t.read(row, cur)
      const fields: FieldDelta[] = []
      for (let k = 0; k < cur.n; k++) {
        const w = cur.walls[k]!
        const c = cur.counters[k]!
        if (covered(seen, cur.peers[k]!, w, c)) continue
        const peer = this.peerIds[cur.peers[k]!]!
        if (heldBack(w, c, peer)) {
          held++
          continue
        }
        fields.push({ name: this.nameIds[cur.names[k]!]!, value: this.value(cur, k), ts: { wall: w, counter: c, peer } })
      }
      let floor: Timestamp | undefined
      if (cur.floorPeer >= 0 && !covered(seen, cur.floorPeer, cur.floorWall, cur.floorCounter)) {
        const peer = this.peerIds[cur.floorPeer]!
        if (heldBack(cur.floorWall, cur.floorCounter, peer)) held++
        else floor = { wall: cur.floorWall, counter: cur.floorCounter, peer }
      }
      if (floor === undefined && fields.length === 0) return
      const id = t.id(row)
      records.push(floor ? { collection, id, floor, deleted: cur.deleted, fields } : { collection, id, fields })
    })
    cur.release()
    if (held > 0) return { from: new Map(), to: new Map(), records }
    return { ...this.claims(vv, ceiling), records }
  }

  /**
   * {@link changesSince}`(vv, ceiling)` as encoded deltas of at most `maxBytes` each, written straight from the blocks
   * origin by origin in timestamp order; every part is safe to apply alone and claims only what it carries (see
   * delta-parts.ts). Returns the parts and the vector the whole answer claims (empty, like every part's, while an own
   * write newer than `ceiling` is held). A part over `maxBytes` holds a single record's writes of one timestamp.
   */
  encodeChangesSinceParts(vv: ReadonlyMap<string, Timestamp>, ceiling: Timestamp | undefined, maxBytes: number): { parts: Uint8Array[]; to: ReadonlyMap<string, Timestamp> } {
    let index = this.index
    if (index === undefined || index.stale) {
      index = this.buildIndex()
      // Kept (and from now on kept up to date by every write) once the store is large enough to want it.
      let total = 0
      for (const t of this.tables.values()) total += t.size
      if (this.index !== undefined || total >= this.indexFrom) this.index = index
    }
    const { from, to } = this.claims(vv, ceiling)
    return encodeParts({ peerIds: this.peerIds, peerIndex: this.peerIndex, nameIds: this.nameIds, index }, { vv, seen: this.seenBy(vv), from, to, ceiling }, maxBytes)
  }

  /**
   * The vectors of a delta against `vv` from which nothing was held back: only the origins the receiver can advance
   * on travel, so a steady-state delta stays a few bytes. The ceiling's origin is claimed no further than the ceiling
   * even when nothing was held back (its newer writes were all superseded): after a crash that origin's clock
   * restarts from the ceiling, and must not reissue a claimed time.
   */
  private claims(vv: ReadonlyMap<string, Timestamp>, ceiling: Timestamp | undefined): { from: VersionVector; to: VersionVector } {
    return claimsFor(this.vv, vv, ceiling)
  }

  /** `vv` by peer index: `[wall, counter]` pairs, wall −1 for a peer `vv` does not name. */
  private seenBy(vv: ReadonlyMap<string, Timestamp>): Float64Array {
    // Typed: a plain array that may hold undefined would box every wall read from it.
    const seen = new Float64Array(2 * this.peerIds.length).fill(-1)
    for (const ts of vv.values()) {
      const p = this.peerIndex.get(ts.peer)
      if (p === undefined) continue
      seen[2 * p] = ts.wall
      seen[2 * p + 1] = ts.counter
    }
    return seen
  }

  /**
   * Calls `fn` with every record that may hold a floor or register `vv` does not cover (its id is `t.id(row)`) — a
   * superset, each record once: through the index when the changes are few (cost proportional to them), else by scanning every record.
   */
  private forEachCandidate(vv: ReadonlyMap<string, Timestamp>, fn: (collection: string, t: Table, row: number) => void): void {
    const found = this.indexCandidates(vv)
    if (found) {
      const tables = this.index!.tables
      for (let i = 0; i < found.length; i += 2) fn(tables[found[i]!]!.name, tables[found[i]!]!, found[i + 1]!)
      return
    }
    for (const [collection, t] of this.tables) for (let row = 0; row < t.rowLimit; row++) if (t.has(row)) fn(collection, t, row)
  }

  /**
   * The records that may hold a floor or register `vv` does not cover, found through the index when the changes are
   * few: `[table, row, …]` (table: an index into the index's `tables`), each record once; undefined when every record
   * has to be scanned instead.
   */
  private indexCandidates(vv: ReadonlyMap<string, Timestamp>): number[] | undefined {
    if (vv.size === 0) return undefined
    let total = 0
    for (const t of this.tables.values()) total += t.size
    // A small store is scanned (a few ms at most): the index would cost its upkeep on every write for little gain.
    if (total < this.indexFrom && this.index === undefined) return undefined
    if (this.index === undefined || this.index.stale) this.index = this.buildIndex()
    // Past an eighth of the records, a scan in storage order is as cheap and encodes better (shared id prefixes).
    const found = this.index.candidates(vv, Math.max(64, total >> 3))
    if (!found) return undefined
    const seen = new Set<number>()
    const tables = this.index.tables
    let out = 0
    for (let i = 0; i < found.length; i += 2) {
      const row = found[i + 1]!
      const key = found[i]! * 2 ** 32 + row
      if (!tables[found[i]!]!.has(row) || seen.has(key)) continue
      seen.add(key)
      found[out++] = found[i]!
      found[out++] = row
    }
    found.length = out
    return found
  }

  /** An index of every floor and register held. */
  private buildIndex(): DeltaIndex {
    const index = new DeltaIndex()
    const cur = this.cur
    const peers = this.peerIds
    for (const t of this.tables.values()) {
      for (let row = 0; row < t.rowLimit; row++) {
        if (!t.has(row)) continue
        t.read(row, cur)
        if (cur.floorPeer >= 0) index.add(peers[cur.floorPeer]!, cur.floorWall, cur.floorCounter, t, row)
        for (let k = 0; k < cur.n; k++) index.add(peers[cur.peers[k]!]!, cur.walls[k]!, cur.counters[k]!, t, row)
      }
    }
    cur.release()
    index.built()
    return index
  }

  /**
   * A live delta: the writes of `origin` newer than `since`, looked for only in `refs` — which must include every
   * record `origin` wrote after `since` (a replica passes the records it wrote since its last flush). It claims
   * `origin` alone, from `since` to the newest write held, so a receiver counts it as received only when it already
   * holds everything of `origin` up to `since`.
   */
  changesOf(origin: string, since: Timestamp | undefined, refs: Iterable<RecordRef>): Delta {
    const records: RecordDelta[] = []
    const p = this.peerIndex.get(origin)
    const cur = this.cur
    const done = new Set<string>()
    const newer = (w: number, c: number): boolean => since === undefined || w > since.wall || (w === since.wall && c > since.counter)
    for (const { collection, id } of p === undefined ? [] : refs) {
      const t = this.tables.get(collection)
      const row = t ? t.find(id) : -1
      const key = `${collection.length}:${collection}${id}`
      if (row < 0 || done.has(key)) continue
      done.add(key)
      t!.read(row, cur)
      const fields: FieldDelta[] = []
      for (let k = 0; k < cur.n; k++) {
        if (cur.peers[k] !== p || !newer(cur.walls[k]!, cur.counters[k]!)) continue
        fields.push({ name: this.nameIds[cur.names[k]!]!, value: this.value(cur, k), ts: { wall: cur.walls[k]!, counter: cur.counters[k]!, peer: origin } })
      }
      const floor = cur.floorPeer === p && newer(cur.floorWall, cur.floorCounter) ? { wall: cur.floorWall, counter: cur.floorCounter, peer: origin } : undefined
      if (floor === undefined && fields.length === 0) continue
      records.push(floor ? { collection, id, floor, deleted: cur.deleted, fields } : { collection, id, fields })
    }
    cur.release()
    const newest = this.vv.get(origin)
    const to: VersionVector = newest && (!since || compareTimestamps(newest, since) > 0) ? new Map([[origin, newest]]) : new Map()
    const from: VersionVector = since && to.size > 0 ? new Map([[origin, since]]) : new Map()
    return { from, to, records }
  }

  /**
   * `encodeDelta(changesOf(origin, since, refs))`, byte for byte, written straight from the blocks: no delta object,
   * no value decoded (values are copied as the canonical bytes they are kept in). The records are given as the ids
   * `written` in each collection (an id may repeat: each record goes out once), the refs in that order. What a
   * replica's commit sends and logs for every flush of local writes, so its cost is the bytes of the records written.
   */
  encodeChangesOf(origin: string, since: Timestamp | undefined, written: ReadonlyMap<string, readonly string[]>): Uint8Array {
    const p = this.peerIndex.get(origin)
    const newest = this.vv.get(origin)
    const to: VersionVector = newest && (!since || compareTimestamps(newest, since) > 0) ? new Map([[origin, newest]]) : new Map()
    const from: VersionVector = since && to.size > 0 ? new Map([[origin, since]]) : new Map()
    const t = new WireTables(this.peerIds.length, this.nameIds.length)
    for (const ts of to.values()) t.see(p!, ts.wall)
    for (const ts of from.values()) t.see(p!, ts.wall)
    // What goes out is gathered as encodeChangesSince gathers it, with every peer but `origin` seen in full: one read
    // of each record's block. A record listed twice goes out once: the rows gathered are marked until the end.
    const seen = new Float64Array(2 * this.peerIds.length).fill(Infinity)
    if (p !== undefined) {
      seen[2 * p] = since === undefined ? -1 : since.wall
      seen[2 * p + 1] = since === undefined ? -1 : since.counter
    }
    const out = outgoing
    out.clear()
    const tables: Table[] = []
    try {
      for (const [collection, ids] of p === undefined ? [] : written) {
        const table = this.tables.get(collection)
        if (!table) continue
        tables.push(table)
        gatherWritten(table, tables.length - 1, ids, seen, t, out)
      }
      const peers = new Map<string, number>(t.peers.map((q, i) => [this.peerIds[q]!, i]))
      const names = new Map<string, number>(t.names.map((n, i) => [this.nameIds[n]!, i]))
      const w = new DeltaWriter(peers, peers.size === 0 ? 0 : t.minWall, names, from, to, t, out.valueBytes + 16 * out.m + 16 * out.n + 64)
      writeOutgoing(w, out, tables, t)
      return w.finish()
    } finally {
      for (let i = 0; i < out.n; i++) tables[out.tables[i]!]!.unmark(out.rows[i]!)
      shrinkOutgoing()
    }
  }

  /**
   * Merges a delta; idempotent, commutative and associative with every other delta. `onOverwrite` hears of every
   * field where two different values met (the replica turns these into conflict events).
   */
  apply(delta: Delta, onOverwrite?: (o: Overwrite) => void): ApplyResult {
    const ctx = new ApplyContext(true, onOverwrite)
    const inc = this.inc
    const w = localValues
    // Bounds first (a bound noted before the vector moves is only looser).
    const newest: VersionVector = new Map()
    for (const rd of delta.records) {
      if (rd.floor) advance(newest, rd.floor)
      for (const f of rd.fields) advance(newest, f.ts)
    }
    for (const ts of newest.values()) if (isNewer(this.vv, ts)) advance(this.beyond, ts)
    for (const rd of delta.records) {
      const floor = rd.floor
      const fields = rd.fields
      w.pos = 0
      for (const f of fields) writeValue(w, f.value)
      inc.clear()
      if (floor) {
        inc.floorPeer = this.peer(floor.peer)
        inc.floorWall = floor.wall
        inc.floorCounter = floor.counter
        inc.deleted = rd.deleted === true
      }
      // Values are written first, then sliced: the writer's buffer may move while it grows.
      const buf = w.view()
      let pos = 0
      for (let k = 0; k < fields.length; k++) {
        const f = fields[k]!
        const end = valueEnd(buf, pos)
        inc.set(k, this.name(f.name), f.ts.wall, f.ts.counter, this.peer(f.ts.peer), buf, pos, end)
        pos = end
      }
      inc.n = fields.length
      this.merge(rd.collection, rd.id, inc, ctx)
    }
    inc.release()
    return { changed: ctx.changed, advanced: this.advanceOver(delta.from, delta.to), floors: ctx.floors, wrote: ctx.wrote }
  }

  /**
   * {@link apply} straight from {@link encodeDelta}'s bytes, with no delta object in between. Throws `DecodeError` on
   * malformed input; records read before the error may then have been merged (harmless: merges are idempotent), but
   * the vector does not advance. Without `changes`, the result's `changed` and `floors` stay empty (a cold load, or a
   * replica nobody listens to, needs no list: `wrote` still says whether the delta changed anything).
   */
  applyEncoded(bytes: Uint8Array, onOverwrite?: (o: Overwrite) => void, changes = true): ApplyResult {
    const ctx = new ApplyContext(changes, onOverwrite)
    let peerMap: number[] = []
    let nameMap: number[] = []
    let baseWall = 0
    let radix = 0
    const inc = this.inc
    const cmpPeers = (a: number, b: number): number => (a === b ? 0 : this.peerIds[a]! < this.peerIds[b]! ? -1 : 1)
    const sizes = new Map<Table, number>()
    for (const t of this.tables.values()) sizes.set(t, t.capacity)
    // Merges want the record's id as a string only to report it (or to add a record the store does not hold).
    const reports = changes || onOverwrite !== undefined
    let merged = false
    let read: ReturnType<typeof readDelta>
    try {
      read = readDelta(
        bytes,
        // Never called: claim takes every record.
        () => undefined,
        {
          raw: true,
          onTables: (peers, names, base, m) => {
            peerMap = peers.map((p) => this.peer(p))
            nameMap = names.map((n) => this.name(n))
            baseWall = base
            radix = m
          },
          // A load into an empty collection (a snapshot, a full sync) sizes its table once, from the record count and
          // the bytes left (a block is about its record's bytes in the delta).
          onCollection: (collection, nRecords, r) => {
            const t = this.tables.get(collection)
            if (nRecords >= 1024 && (t === undefined || t.size === 0)) this.table(collection).expect(nRecords, r.remaining + 8 * nRecords)
          },
          // Each record is read straight from the delta's bytes: into its block, when the store does not hold it and
          // merging it into nothing is copying it (no index to update, no tombstone collected that could make it
          // stale); else into the incoming registers, merged into the row found here.
          claim: (collection, id, r) => {
            const t = this.table(collection)
            const h = hashBytes(id.bytes, 0, id.len)
            const held = t.findBytes(id.bytes, 0, id.len, h)
            if (held < 0 && this.index === undefined && this.collectedNewest === undefined) {
              const start = r.pos
              t.openArena(arena)
              let got = NEEDS_MERGE
              try {
                got = wireToBlock(r, arena, baseWall, radix, peerMap.length, peerMap, nameMap, cmpPeers)
              } finally {
                const keep = got !== NEEDS_MERGE && (got & WIRE_EMPTY) === 0
                t.closeArena(arena, keep ? t.addBytes(id.bytes, 0, id.len, h) : -1, (got & WIRE_VISIBLE) !== 0)
              }
              if (got !== NEEDS_MERGE) {
                if (got & WIRE_EMPTY) return true
                if (got & WIRE_TOMBSTONE) t.tombstones = true
                merged = true
                ctx.wrote = true
                if (changes && got & WIRE_VISIBLE) ctx.changed.push({ collection, id: id.string, existed: false })
                if (changes && got & WIRE_FLOOR) ctx.floors.push({ collection, id: id.string })
                return true
              }
              r.pos = start
            }
            wireToRegs(r, inc, incoming, baseWall, radix, peerMap.length, peerMap, nameMap)
            merged = true
            this.merge(collection, held < 0 || reports ? id.string : '', inc, ctx, t, held)
            return true
          },
        },
      )
    } catch (e) {
      // What was merged before the error is bounded by nothing known.
      if (merged) this.beyondUnknown = true
      throw e
    } finally {
      inc.release()
    }
    const { from, to, newest } = read
    // A bulk load grows arenas by doubling: give back what it did not use.
    for (const t of this.tables.values()) if (t.capacity > 2 * (sizes.get(t) ?? 0) + (1 << 20)) t.trim()
    const advanced = this.advanceOver(from, to)
    for (let i = 0; i < peerMap.length; i++) {
      const wall = newest[2 * i]!
      if (wall < 0) continue
      const ts = { wall, counter: newest[2 * i + 1]!, peer: this.peerIds[peerMap[i]!]! }
      if (isNewer(this.vv, ts)) advance(this.beyond, ts)
    }
    return { changed: ctx.changed, advanced, floors: ctx.floors, wrote: ctx.wrote }
  }

  /**
   * Merges `inc` (a floor and field writes; values as canonical bytes) into a record (in `row` of `t` when given:
   * the caller found it already). With `ctx` (a delta being applied) it also filters writes a collected tombstone may have erased, keeps the index up to date, and reports
   * changes, raised floors and overwrites.
   */
  private merge(collection: string, id: string, inc: Regs, ctx: ApplyContext | undefined, t?: Table, hintRow = -1): void {
    let row = hintRow
    if (t === undefined) {
      t = this.table(collection)
      row = t.find(id)
    }
    const cur = this.cur
    if (row < 0) cur.clear()
    else t.read(row, cur)
    const wasVisible = row >= 0 && t.visible(row)
    const index = ctx ? this.index : undefined
    const peers = this.peerIds
    let dirty = false
    let touched = false
    let reports: Overwrite[] | undefined
    /** `(peer, wall, counter)` of the writes the index must hear of, once the record has its row. */
    const indexed = this.indexed
    if (indexed.length > 0) indexed.length = 0
    // A replacement or delete can erase a field that the same delta writes back unchanged: on that (rare) path the
    // record's visible fields are compared as a whole instead of inferred from the register writes.
    // A floor or register we hold nothing for, covered by our vector and no newer than a tombstone we collected, is
    // held or superseded here, perhaps by that tombstone (see collect()): it must not come back as if new.
    const fp = inc.floorPeer
    const floor = fp >= 0 && (ctx === undefined || cur.floorPeer >= 0 || !this.stale(inc.floorWall, inc.floorCounter, peers[fp]!))
    let before: Regs | undefined
    if (floor && wasVisible && ctx?.report) t.read(row, (before = this.before))
    if (floor) {
      const c = cur.floorPeer < 0 ? 1 : this.cmp(inc.floorWall, inc.floorCounter, fp, cur.floorWall, cur.floorCounter, cur.floorPeer)
      if (c > 0 || (c === 0 && !cur.deleted && inc.deleted)) {
        cur.floorPeer = fp
        cur.floorWall = inc.floorWall
        cur.floorCounter = inc.floorCounter
        cur.deleted = inc.deleted
        dirty = true
        if (this.dropBelow(cur, inc.deleted)) touched = true
        if (ctx?.report) ctx.floors.push({ collection, id })
      }
      if (index && cur.floorPeer === fp && cur.floorWall === inc.floorWall && cur.floorCounter === inc.floorCounter) {
        indexed.push(fp, inc.floorWall, inc.floorCounter)
      }
    }
    const big = cur.n + inc.n > 32 ? new Map<number, number>() : undefined
    if (big) for (let k = 0; k < cur.n; k++) big.set(cur.names[k]!, k)
    for (let j = 0; j < inc.n; j++) {
      const name = inc.names[j]!
      const wall = inc.walls[j]!
      const counter = inc.counters[j]!
      const peer = inc.peers[j]!
      const src = inc.srcs[j]!
      const vs = inc.vs[j]!
      const ve = inc.ve[j]!
      const slot = big ? (big.get(name) ?? -1) : cur.slot(name)
      if (slot < 0 && ctx && this.stale(wall, counter, peers[peer]!)) continue
      const differs = slot >= 0 && compareValueBytes(src, vs, ve, cur.srcs[slot]!, cur.vs[slot]!, cur.ve[slot]!) !== 0
      // Not below (or, for a delete, at) the floor: the floor has erased writes that old.
      let won = cur.floorPeer < 0
      if (!won) {
        const c = this.cmp(wall, counter, peer, cur.floorWall, cur.floorCounter, cur.floorPeer)
        won = c > 0 || (c === 0 && !cur.deleted)
      }
      if (won && slot >= 0) {
        const c = this.cmp(wall, counter, peer, cur.walls[slot]!, cur.counters[slot]!, cur.peers[slot]!)
        won = c > 0 || (c === 0 && compareValueBytes(src, vs, ve, cur.srcs[slot]!, cur.vs[slot]!, cur.ve[slot]!) > 0)
      }
      if (differs && ctx?.onOverwrite) {
        const held = { value: this.value(cur, slot), timestamp: { wall: cur.walls[slot]!, counter: cur.counters[slot]!, peer: peers[cur.peers[slot]!]! } }
        const incoming = { value: this.valueOf(src, vs), timestamp: { wall, counter, peer: peers[peer]! } }
        ;(reports ??= []).push(
          won
            ? { collection, id, field: this.nameIds[name]!, winner: incoming, loser: held, incomingLost: false }
            : { collection, id, field: this.nameIds[name]!, winner: held, loser: incoming, incomingLost: true },
        )
      }
      if (won) {
        dirty = true
        const k = slot >= 0 ? slot : cur.n++
        cur.set(k, name, wall, counter, peer, src, vs, ve)
        if (slot < 0) big?.set(name, k)
        if (index) indexed.push(peer, wall, counter)
      }
      if (slot < 0) {
        if (won && src[vs] !== ABSENT_TAG) touched = true
      } else if (differs && won) touched = true
    }
    const visibleNow = cur.visible()
    if (before && visibleNow && touched) touched = !sameVisible(before, cur)
    if (ctx?.report && (touched || wasVisible !== visibleNow)) ctx.changed.push({ collection, id, existed: wasVisible })
    if (cur.floorPeer < 0 && cur.n === 0) {
      if (row >= 0) {
        t.remove(row)
        t.tidy()
      }
    } else if (dirty || row < 0) {
      if (ctx) ctx.wrote = true
      if (row < 0) row = t.add(id)
      t.write(row, cur)
    }
    if (index && row >= 0 && t.has(row)) for (let i = 0; i < indexed.length; i += 3) index.add(peers[indexed[i]!]!, indexed[i + 1]!, indexed[i + 2]!, t, row)
    cur.release()
    before?.release()
    if (reports) for (const o of reports) ctx!.onOverwrite!(o)
  }

  /**
   * Merges a local write (one stamp, each field once). A record the store does not hold takes it as it is: merging
   * into nothing is copying (as applyEncoded's claim does for a remote record), so a new record skips the merge.
   */
  private mergeLocal(collection: string, id: string, inc: Regs): void {
    const t = this.table(collection)
    const row = t.find(id)
    if (row >= 0) this.merge(collection, id, inc, undefined, t, row)
    else if (inc.floorPeer >= 0 || inc.n > 0) t.write(t.add(id), inc)
  }

  /** The table of a collection (made when new). */
  private table(collection: string): Table {
    let t = this.tables.get(collection)
    if (!t) this.tables.set(collection, (t = new Table(collection)))
    return t
  }

  /** Tells the index (if built) that `ts` wrote the record. */
  private indexWrite(ts: Timestamp, collection: string, id: string): void {
    if (!this.index) return
    const t = this.tables.get(collection)
    const row = t ? t.find(id) : -1
    if (row >= 0) this.index.add(ts.peer, ts.wall, ts.counter, t!, row)
  }

  /** Orders two timestamps given by peer index, as {@link compareTimestamps} does. */
  private cmp(w1: number, c1: number, p1: number, w2: number, c2: number, p2: number): number {
    return w1 !== w2 ? w1 - w2 : c1 !== c2 ? c1 - c2 : p1 === p2 ? 0 : this.peerIds[p1]! < this.peerIds[p2]! ? -1 : 1
  }

  /** Drops the fields below the record's floor (and at it, for a delete); returns true when a visible one went. */
  private dropBelow(r: Regs, inclusive: boolean): boolean {
    let out = 0
    let lost = false
    for (let k = 0; k < r.n; k++) {
      const c = this.cmp(r.walls[k]!, r.counters[k]!, r.peers[k]!, r.floorWall, r.floorCounter, r.floorPeer)
      if (c < 0 || (c === 0 && inclusive)) {
        if (r.present(k)) lost = true
        continue
      }
      if (out !== k) r.move(k, out)
      out++
    }
    r.n = out
    return lost
  }

  /** Regs for a local write: the first `n` entries of {@link fieldScratch} (normalizeFields), every field at `ts` of `peer` (its index). */
  private localWrite(n: number, ts: Timestamp, peer: number): Regs {
    const clean = fieldScratch
    const inc = this.inc
    inc.clear()
    const w = localValues
    w.pos = 0
    // Each value's end is noted as it is written (the registers take them below, once the buffer no longer moves).
    const ends = inc.ve
    for (let i = 1, k = 0; i < n; i += 2, k++) {
      writeValue(w, clean[i] as Value | undefined)
      ends[k] = w.pos
    }
    const buf = w.buffer // no view: the registers hold offsets, and nothing is written to `w` until the merge is done
    // Stored straight into the register arrays (Regs.set's work): a wall passed to a call as an argument is boxed.
    const { names, walls, counters, peers, srcs, vs } = inc
    const wall = ts.wall
    const counter = ts.counter
    let pos = 0
    for (let i = 0, k = 0; i < n; i += 2, k++) {
      names[k] = this.name(clean[i] as string)
      walls[k] = wall
      counters[k] = counter
      peers[k] = peer
      srcs[k] = buf
      vs[k] = pos
      pos = ends[k]!
      clean[i + 1] = undefined // keeps no reference to the caller's values
    }
    inc.n = n / 2
    if (inc.n > inc.filled) inc.filled = inc.n
    return inc
  }

  /** The index of a peer id (added when new). */
  private peer(id: string): number {
    return this.peers.of(id)
  }

  /** The index of a field name (added when new). */
  private name(name: string): number {
    return this.names.of(name)
  }

  /** Field `k`'s value, decoded (undefined: removed). */
  private value(r: Regs, k: number): Value | undefined {
    return this.valueOf(r.srcs[k]!, r.vs[k]!)
  }

  /** Decodes the canonical value at `src[pos]`. */
  private valueOf(src: Uint8Array, pos: number): Value | undefined {
    if (this.reader.buf !== src) this.reader = new Reader(src)
    this.reader.pos = pos
    return readValue(this.reader)
  }

  /** The record as users see it. */
  private materialize(t: Table, row: number, id: string): StoredRecord {
    const cur = this.cur
    t.read(row, cur)
    const out: Record<string, Value> = {}
    for (let k = 0; k < cur.n; k++) if (cur.present(k)) defineField(out, this.nameIds[cur.names[k]!]!, this.value(cur, k))
    out.id = id
    cur.release()
    return out as StoredRecord
  }

  /** Advances the vector over a delta's claims (see {@link Delta}); returns whether it moved. */
  private advanceOver(deltaFrom: ReadonlyMap<string, Timestamp>, deltaTo: ReadonlyMap<string, Timestamp>): boolean {
    let advanced = false
    for (const [peer, to] of deltaTo) {
      const from = deltaFrom.get(peer)
      const held = this.vv.get(peer)
      if (from !== undefined && (held === undefined || compareTimestamps(held, from) < 0)) {
        this.keepAhead(peer, from, to)
        continue
      }
      if (this.advanceTo(to)) advanced = true
    }
    return advanced
  }

  /** Raises the vector's entry for `ts.peer` to `ts`, then over every range held ahead that now joins it. */
  private advanceTo(ts: Timestamp): boolean {
    if (!advance(this.vv, ts)) return false
    const ranges = this.ahead.get(ts.peer)
    if (!ranges) return true
    for (let joined = true; joined; ) {
      joined = false
      const held = this.vv.get(ts.peer)!
      for (let i = ranges.length - 1; i >= 0; i--) {
        const r = ranges[i]!
        if (compareTimestamps(r.from, held) > 0) continue
        ranges.splice(i, 1)
        if (advance(this.vv, r.to)) joined = true
      }
    }
    if (ranges.length === 0) this.ahead.delete(ts.peer)
    return true
  }

  /** Remembers a range `(from, to]` of `peer`'s writes held ahead of the vector (at most {@link MAX_AHEAD} per origin). */
  private keepAhead(peer: string, from: Timestamp, to: Timestamp): void {
    if (compareTimestamps(to, from) <= 0) return
    let ranges = this.ahead.get(peer)
    if (!ranges) this.ahead.set(peer, (ranges = []))
    // Dropping a range only costs a later re-send (anti-entropy), never correctness.
    if (ranges.length >= MAX_AHEAD) ranges.shift()
    ranges.push({ from, to })
  }

  /**
   * Drops, in every record, the floor and the fields `drop` selects (it sees each timestamp by its parts, and whether
   * it is a delete floor or a removed field; `begin` sees each record first, whole); removes records left empty, and
   * collections left empty. With `tombstonesOnly` (`drop` drops nothing else), passes by the tables that hold no
   * tombstone. Returns how many floors and fields it dropped, and how many records it removed.
   */
  private dropEverywhere(
    drop: (r: Regs, wall: number, counter: number, peer: string, tombstone: boolean) => boolean,
    begin?: (r: Regs) => void,
    tombstonesOnly = false,
  ): { dropped: number; removed: number } {
    const cur = this.cur
    const peers = this.peerIds
    let dropped = 0
    let removed = 0
    for (const [collection, t] of this.tables) {
      if (tombstonesOnly && !t.tombstones) continue
      let tombstones = false
      for (let row = 0; row < t.rowLimit; row++) {
        if (!t.has(row)) continue
        t.read(row, cur)
        begin?.(cur)
        let out = 0
        let changed = false
        if (cur.floorPeer >= 0 && drop(cur, cur.floorWall, cur.floorCounter, peers[cur.floorPeer]!, cur.deleted)) {
          cur.floorPeer = -1
          cur.deleted = false
          changed = true
          dropped++
        }
        for (let k = 0; k < cur.n; k++) {
          if (drop(cur, cur.walls[k]!, cur.counters[k]!, peers[cur.peers[k]!]!, !cur.present(k))) {
            dropped++
            changed = true
            continue
          }
          if (out !== k) cur.move(k, out)
          out++
        }
        cur.n = out
        if (cur.floorPeer < 0 && out === 0) {
          t.remove(row)
          removed++
          continue
        }
        if (changed) t.write(row, cur)
        if (!tombstones) tombstones = cur.tombstone()
      }
      t.tombstones = tombstones
      t.tidy()
      if (t.size === 0) this.tables.delete(collection)
    }
    cur.release()
    return { dropped, removed }
  }

  /**
   * Tombstone garbage collection: drops every delete floor and every field removal whose timestamp `stable` covers,
   * and every record left holding nothing. `stable` must be causally stable: every replica that may still send us
   * writes holds everything it covers, and our own vector covers each of their vectors (see the sync engine). Writes
   * older than a dropped tombstone that arrive later (duplicates, frames in flight) stay out: {@link apply} ignores a
   * register or floor it holds nothing for when our vector already covers it. Visible state does not change.
   */
  collect(stable: ReadonlyMap<string, Timestamp>): CollectResult {
    // Only the tables holding tombstones are read, and the index stays unless records changed: a store with nothing
    // to collect pays nothing (the sync engine collects after every anti-entropy round).
    const { dropped, removed } = this.dropEverywhere(
      (_, wall, counter, peer, tombstone) => {
        if (!tombstone || newerRaw(stable, wall, counter, peer) || newerRaw(this.vv, wall, counter, peer)) return false
        this.noteCollected({ wall, counter, peer })
        return true
      },
      undefined,
      true,
    )
    if (dropped > 0 || removed > 0) this.index = undefined
    // The frontier covers what was collected; it moves only when something was.
    if (dropped > 0) for (const ts of stable.values()) if (!isNewer(this.vv, ts)) advance(this.frontierVv, ts)
    return { tombstones: dropped, records: removed }
  }

  /**
   * Whether a write we hold nothing for is one a collected tombstone may have erased: our vector covers it (so we held
   * or superseded it) and it is no newer than the newest tombstone collected. Never true before a collection, so
   * stores that never collect merge exactly as before (duplicate writer ids included).
   */
  private stale(wall: number, counter: number, peer: string): boolean {
    const newest = this.collectedNewest
    if (newest === undefined) return false
    const c = wall !== newest.wall ? wall - newest.wall : counter !== newest.counter ? counter - newest.counter : peer === newest.peer ? 0 : peer < newest.peer ? -1 : 1
    return c <= 0 && !newerRaw(this.vv, wall, counter, peer)
  }

  /** Records a collected tombstone's timestamp in the frontier; returns true. */
  private noteCollected(ts: Timestamp): boolean {
    if (this.collectedNewest === undefined || compareTimestamps(ts, this.collectedNewest) > 0) this.collectedNewest = ts
    return true
  }

  /**
   * What this store has collected: `vector` covers every tombstone it dropped, `newest` is the newest of them
   * (undefined when it never collected anything). A peer whose vector does not cover `vector` may hold writes those
   * tombstones erased, and must {@link rebase} before its writes are accepted.
   */
  gcFrontier(): { readonly vector: VersionVector; readonly newest: Timestamp | undefined } {
    return { vector: new Map(this.frontierVv), newest: this.collectedNewest }
  }

  /** {@link gcFrontier}'s vector without a copy (the sync engine reads it for every delta it sends or receives). */
  frontierView(): ReadonlyMap<string, Timestamp> {
    return this.frontierVv
  }

  /** Restores a frontier saved with the state (see {@link gcFrontier}); it only moves forward. */
  restoreFrontier(vector: ReadonlyMap<string, Timestamp>, newest: Timestamp | undefined): void {
    for (const ts of vector.values()) advance(this.frontierVv, ts)
    if (newest) this.noteCollected(newest)
  }

  /**
   * Rebases a store that missed tombstones a peer collected (its vector does not cover the peer's
   * {@link gcFrontier}): `theirs` is the peer's version vector, `newest` its newest collected tombstone. Keeps only
   * writes of origin `own`, and of those only the ones newer than `newest` or on a record of which it holds nothing
   * that `theirs` covers (a record the peer never knew, so no tombstone it collected can concern it). Drops every
   * other register and floor, the whole version vector and this store's own frontier, so that a sync from the peer
   * brings back everything that survived there (take the peer's frontier with {@link restoreFrontier}). Returns how
   * many registers and floors it dropped.
   */
  rebase(theirs: ReadonlyMap<string, Timestamp>, newest: Timestamp | undefined, own: string): number {
    this.index = undefined
    const peers = this.peerIds
    let shared = false
    const { dropped } = this.dropEverywhere(
      (_, wall, counter, peer) => peer !== own || (shared && newest !== undefined && compareParts(wall, counter, peer, newest) <= 0),
      (r) => {
        shared = r.floorPeer >= 0 && !newerRaw(theirs, r.floorWall, r.floorCounter, peers[r.floorPeer]!)
        for (let k = 0; k < r.n && !shared; k++) shared = !newerRaw(theirs, r.walls[k]!, r.counters[k]!, peers[r.peers[k]!]!)
      },
    )
    this.vv.clear()
    this.ahead.clear()
    // The own writes kept are no longer under the vector.
    this.beyond.clear()
    this.beyondUnknown = true
    // What this store collected described state it no longer holds: the caller takes the peer's frontier instead
    // (restoreFrontier). Keeping our own would ask every peer to cover tombstones of writes nobody may hold now.
    this.frontierVv.clear()
    this.collectedNewest = undefined
    return dropped
  }

  /** The whole state (every register, floor and the version vector) in the binary delta format. */
  encodeState(): Uint8Array {
    return this.encodeChangesSince(new Map())
  }

  /**
   * `encodeDelta(changesSince(vv))`, byte for byte, written straight from the blocks: no delta object, no value
   * decoded (values are copied as the canonical bytes they are kept in).
   */
  encodeChangesSince(vv: ReadonlyMap<string, Timestamp>): Uint8Array {
    if (vv.size === 0) return this.encodeAll()
    const { from, to } = this.claims(vv, undefined)
    // The vectors' peers first, as encodeDelta numbers them (an origin may have no register left: add it).
    for (const ts of to.values()) this.peer(ts.peer)
    for (const ts of from.values()) this.peer(ts.peer)
    const t = new WireTables(this.peerIds.length, this.nameIds.length)
    for (const ts of from.values()) t.see(this.peer(ts.peer), ts.wall)
    for (const ts of to.values()) t.see(this.peer(ts.peer), ts.wall)
    // Pass 1: one read of each candidate block gathers what goes out (records in the order changesSince lists them).
    const seen = this.seenBy(vv)
    const out = outgoing
    out.clear()
    // Nothing to look for when `vv` covers every write held (see beyond): then `to` is empty too.
    let tables: Table[] = []
    if (this.beyondUnknown || to.size > 0 || !covers(vv, this.beyond)) {
      const found = this.indexCandidates(vv)
      tables = found ? this.index!.tables : [...this.tables.values()]
      collectRows(tables, found, seen, t, out)
    }
    // Pass 2: the bytes, records grouped by collection in order of first appearance.
    const peers = new Map<string, number>(t.peers.map((p, i) => [this.peerIds[p]!, i]))
    const names = new Map<string, number>(t.names.map((n, i) => [this.nameIds[n]!, i]))
    const baseWall = peers.size === 0 ? 0 : t.minWall
    const w = new DeltaWriter(peers, baseWall, names, from, to, t, out.valueBytes + 16 * out.m + 16 * out.n + 64)
    writeOutgoing(w, out, tables, t)
    shrinkOutgoing()
    return w.finish()
  }

  /**
   * {@link encodeChangesSince} of an empty vector — the whole state — written block by block: a first pass numbers
   * the peers and names the blocks use, the second transcodes each block (values copied as they are).
   */
  private encodeAll(): Uint8Array {
    const { from, to } = this.claims(new Map(), undefined)
    // The vectors' peers first, as encodeDelta numbers them (an origin may have no register left: add it).
    for (const ts of to.values()) this.peer(ts.peer)
    const t = new WireTables(this.peerIds.length, this.nameIds.length)
    for (const ts of from.values()) t.see(this.peer(ts.peer), ts.wall)
    for (const ts of to.values()) t.see(this.peer(ts.peer), ts.wall)
    let bytes = 0
    for (const table of this.tables.values()) {
      const buf = table.buf
      for (let row = 0; row < table.rowLimit; row++) {
        if (!table.has(row)) continue
        scanBlock(buf, table.offset(row), t)
        bytes += table.length(row)
      }
    }
    const peers = new Map<string, number>(t.peers.map((p, i) => [this.peerIds[p]!, i]))
    const names = new Map<string, number>(t.names.map((n, i) => [this.nameIds[n]!, i]))
    const baseWall = peers.size === 0 ? 0 : t.minWall
    const w = new DeltaWriter(peers, baseWall, names, from, to, t, bytes + 64)
    let nonEmpty = 0
    for (const table of this.tables.values()) if (table.size > 0) nonEmpty++
    w.collections(nonEmpty)
    for (const [collection, table] of this.tables) {
      if (table.size === 0) continue
      w.collection(collection, table.size)
      const buf = table.buf
      for (let row = 0; row < table.rowLimit; row++) {
        if (table.has(row)) blockToWire(buf, table.offset(row), w.recordIdAt(table.idArena, table.idStart(row), table.idStop(row)), t, w)
      }
    }
    return w.finish()
  }

  /**
   * The whole state as it lies in memory, for this machine's own storage (never for the wire): the tables' rows and
   * block arenas as they are, with the peer and field-name numbering their blocks use, the version vector and the
   * bound on writes held beyond it. {@link RecordStore.decodeSnapshot} loads it by copying, where a delta is decoded
   * record by record. The layout is {@link SNAPSHOT_FORMAT}; a build with another block format refuses it.
   */
  encodeSnapshot(): Uint8Array {
    for (const ts of this.vv.values()) this.peer(ts.peer)
    for (const ts of this.beyond.values()) this.peer(ts.peer)
    let size = 64
    for (const [name, t] of this.tables) size += name.length * 3 + 16 + t.capacity + 13 * t.size
    for (const p of this.peerIds) size += p.length * 3 + 2
    for (const n of this.nameIds) size += n.length * 3 + 2
    const w = new Writer(size)
    w.u8(SNAPSHOT_FORMAT)
    w.raw(new Uint8Array(BYTE_ORDER.buffer))
    for (const list of [this.peerIds, this.nameIds]) {
      w.uint(list.length)
      for (const x of list) w.string(x)
    }
    for (const vv of [this.vv, this.beyond]) {
      w.uint(vv.size)
      for (const ts of vv.values()) {
        w.uint(this.peer(ts.peer))
        w.uint(ts.wall)
        w.uint(ts.counter)
      }
    }
    w.u8(this.beyondUnknown ? 1 : 0)
    w.uint(this.tables.size)
    for (const [name, t] of this.tables) {
      w.string(name)
      t.save(w)
    }
    return w.finish()
  }

  /** True when `bytes` start as {@link RecordStore.encodeSnapshot}'s do (rather than as a delta). */
  static isSnapshot(bytes: Uint8Array): boolean {
    return bytes[0] === SNAPSHOT_FORMAT
  }

  /** Loads {@link RecordStore.encodeSnapshot}'s bytes into a new store; throws `DecodeError` on malformed input. */
  static decodeSnapshot(bytes: Uint8Array): RecordStore {
    const r = new Reader(bytes)
    if (r.u8() !== SNAPSHOT_FORMAT) throw new DecodeError(`not a record snapshot (format byte ${bytes[0]})`)
    const order = new Uint32Array(1)
    new Uint8Array(order.buffer).set(r.raw(4))
    if (order[0] !== BYTE_ORDER[0]) throw new DecodeError('the snapshot was written by a machine of the other byte order')
    const store = new RecordStore()
    for (const interner of [store.peers, store.names]) {
      const n = r.count(1)
      for (let i = 0; i < n; i++) {
        const x = r.string()
        if (interner.of(x) !== i) throw new DecodeError(`snapshot lists ${JSON.stringify(x)} twice`)
      }
    }
    for (const vv of [store.vv, store.beyond]) {
      const n = r.count(3)
      for (let i = 0; i < n; i++) {
        const peer = store.peerIds[r.uint()]
        const ts = { wall: r.uint(), counter: r.uint(), peer: peer ?? '' }
        const bad = peer === undefined ? 'peer index out of range' : invalidTimestampReason(ts)
        if (bad !== undefined || vv.has(ts.peer)) throw new DecodeError(`snapshot vector entry ${i}: ${bad ?? 'peer listed twice'}`)
        vv.set(ts.peer, ts)
      }
    }
    store.beyondUnknown = r.u8() !== 0
    const n = r.count(4)
    for (let i = 0; i < n; i++) {
      const name = r.string()
      if (store.tables.has(name)) throw new DecodeError(`snapshot lists collection ${JSON.stringify(name)} twice`)
      store.tables.set(name, Table.load(name, r, store.peerIds.length, store.nameIds.length))
    }
    if (!r.done) throw new DecodeError(`${r.remaining} bytes after the snapshot`)
    return store
  }

  /** Rebuilds a store from {@link RecordStore.encodeState}'s bytes; throws `DecodeError` on malformed input. */
  static decodeState(bytes: Uint8Array): RecordStore {
    const store = new RecordStore()
    store.applyEncoded(bytes, undefined, false)
    return store
  }

  /** A digest of the visible state: equal on two stores exactly when their visible records are equal. */
  digest(): string {
    const lanes = [0, 0, 0, 0]
    const w = new Writer(256)
    const cur = this.cur
    const order: number[] = []
    const names = this.nameIds
    for (const [collection, t] of this.tables) {
      for (let row = 0; row < t.rowLimit; row++) {
        if (!t.visible(row)) continue
        t.read(row, cur)
        w.pos = 0
        w.string(collection)
        w.bytes(t.idBytes(row))
        order.length = 0
        for (let k = 0; k < cur.n; k++) if (cur.present(k)) order.push(k)
        order.sort((a, b) => {
          const x = names[cur.names[a]!]!
          const y = names[cur.names[b]!]!
          return x < y ? -1 : x > y ? 1 : 0
        })
        for (const k of order) {
          w.string(names[cur.names[k]!]!)
          w.copy(cur.srcs[k]!, cur.vs[k]!, cur.ve[k]!)
        }
        const h = murmur3x128(w.view())
        for (let i = 0; i < 4; i++) lanes[i] = (lanes[i]! + h[i]!) >>> 0
      }
    }
    cur.release()
    return lanes.map((x) => x.toString(16).padStart(8, '0')).join('')
  }
}

/** Strings numbered in order of first use. */
class Interner {
  readonly strings: string[] = []
  readonly index = new Map<string, number>()

  /** The number of `s` (given one when new). */
  of(s: string): number {
    let n = this.index.get(s)
    if (n === undefined) {
      n = this.strings.push(s) - 1
      this.index.set(s, n)
    }
    return n
  }
}

/** Orders `(wall, counter, peer)` against a timestamp, as {@link compareTimestamps} does. */
function compareParts(wall: number, counter: number, peer: string, ts: Timestamp): number {
  return wall !== ts.wall ? wall - ts.wall : counter !== ts.counter ? counter - ts.counter : peer === ts.peer ? 0 : peer < ts.peer ? -1 : 1
}

/** True when two records' visible fields are equal (same names, same value bytes). */
function sameVisible(a: Regs, b: Regs): boolean {
  let n = 0
  for (let k = 0; k < a.n; k++) {
    if (!a.present(k)) continue
    n++
    const j = b.slot(a.names[k]!)
    if (j < 0 || !b.present(j) || compareValueBytes(a.srcs[k]!, a.vs[k]!, a.ve[k]!, b.srcs[j]!, b.vs[j]!, b.ve[j]!) !== 0) return false
  }
  for (let k = 0; k < b.n; k++) if (b.present(k)) n--
  return n === 0
}

/** Fewest records for which {@link RecordStore.changesSince} builds its index (below, it scans). */
const INDEX_MIN_RECORDS = 16_384

/**
 * First byte of {@link RecordStore.encodeSnapshot}'s bytes (a delta starts with its version, 1 or 2). It names the
 * block layout of record-table.ts as well: change either, change this.
 *
 *   snapshot := u8 format  u32 1 (in the writer's byte order)
 *               uint n, n × string peers    uint n, n × string field names     (the store's numbering)
 *               vector vv   vector beyond   u8 beyondUnknown                   vector := uint n, n × (uint peer, uint wall, uint counter)
 *               uint n, n × (string collection, table)                         table: Table.save
 */
export const SNAPSHOT_FORMAT = 0xb1
/** 1, written in the machine's byte order: the snapshot's arrays are read back only on a machine of the same one. */
const BYTE_ORDER = new Uint32Array([1])

/** Most ranges held ahead of the version vector per origin (see {@link RecordStore.apply}). */
const MAX_AHEAD = 32

/** {@link isNewer} with the timestamp's parts passed apart. */
function newerRaw(vv: ReadonlyMap<string, Timestamp>, wall: number, counter: number, peer: string): boolean {
  const seen = vv.get(peer)
  return seen === undefined || wall > seen.wall || (wall === seen.wall && (counter > seen.counter || (counter === seen.counter && peer > seen.peer)))
}

/** Refuses a timestamp the codec could not carry (so a store never holds state it cannot encode and reload). */
function checkTimestamp(ts: Timestamp): void {
  const reason = invalidTimestampReason(ts)
  if (reason) throw new InvalidArgumentError(`invalid write timestamp: ${reason}`)
}

function checkRef(collection: string, id: string): void {
  if (typeof collection !== 'string' || collection.length === 0) {
    throw new InvalidValueError('collection name must be a non-empty string')
  }
  if (typeof id !== 'string' || id.length === 0) throw new InvalidValueError('record id must be a non-empty string')
}

const hasOwn = Object.prototype.hasOwnProperty

/** Reused by every write (writes never re-enter the store), so a write allocates no array. */
const fieldScratch: unknown[] = []

/**
 * Validates and normalises a record's fields before anything is written (so a bad value writes nothing). Fills
 * {@link fieldScratch} with `[name, value, name, value, …]` and returns how many entries it filled (twice the
 * fields); with `removals`, `undefined` values are kept (they remove the field).
 */
function normalizeFields(collection: string, id: string, fields: object, removals: boolean): number {
  checkRef(collection, id)
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) {
    throw new InvalidValueError(`record ${JSON.stringify(id)}: fields must be a plain object`)
  }
  const out = fieldScratch
  let n = 0
  // The own enumerable keys in Object.keys order, with no array made per write.
  for (const name in fields) {
    if (!hasOwn.call(fields, name)) continue
    const v = (fields as Record<string, unknown>)[name]
    if (name === 'id') {
      if (v !== id) throw new InvalidValueError(`record ${JSON.stringify(id)}: the id field cannot be changed`)
      continue
    }
    if (v === undefined && !removals) continue
    out[n] = name
    out[n + 1] = v === undefined ? undefined : normalizeValue(v, name)
    n += 2
  }
  return n
}
