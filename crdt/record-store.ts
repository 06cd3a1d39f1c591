import { Writer } from './bytes.js'
import { type Delta, DeltaWriter, type FieldDelta, type RecordDelta, type RecordRef, type RecordScratch, readDelta } from './delta.js'
import { InvalidArgumentError, InvalidValueError } from './errors.js'
import { murmur3x128 } from './hash.js'
import { LWWMap } from './lww-map.js'
import { MAX_WALL, type Timestamp, compareTimestamps, invalidTimestampReason } from './timestamp.js'
import { type Value, normalizeValue, valuesEqual, writeValue } from './value.js'
import { type VersionVector, advance, claimsFor, isNewer } from './version-vector.js'

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
}

/**
 * One record: an LWW map of fields plus a floor — the latest replacement (`put`) or delete of the whole record. The
 * floor is kept as three plain fields rather than a timestamp object (a million records, a million objects fewer).
 */
class RecordEntry extends LWWMap<Value> {
  declare trim: () => void
  /**
   * The floor's wall, split in two small integers (`fwHigh × 2^24 + fwLow`): a wall above 2^31 in a field would be
   * a boxed number, one more heap object per record.
   */
  private fwHigh = 0
  private fwLow = 0
  /** The floor's counter; with the wall, meaningful only when {@link fp} is set. */
  fc = 0
  /** The floor's peer, or undefined when the record has no floor. */
  fp: string | undefined = undefined
  deleted = false

  /** The floor's wall. */
  get fw(): number {
    return this.fwHigh * WALL_SPLIT + this.fwLow
  }

  set fw(wall: number) {
    // `| 0` keeps both small integers (walls are < 2^48), so they stay unboxed.
    this.fwHigh = (wall / WALL_SPLIT) | 0
    this.fwLow = wall % WALL_SPLIT | 0
  }

  /** The floor as a timestamp (undefined: none). */
  get floor(): Timestamp | undefined {
    return this.fp === undefined ? undefined : { wall: this.fw, counter: this.fc, peer: this.fp }
  }

  /** Visible when the latest floor is a replacement, or any field survives a delete. */
  visible(): boolean {
    if (this.fp !== undefined && !this.deleted) return true
    const cells = this.cells
    for (let i = 1; i < cells.length; i += 3) if (cells[i] !== undefined) return true
    return false
  }

  /** Orders `(wall, counter, peer)` against the floor (which must exist). */
  private vsFloor(wall: number, counter: number, peer: string): number {
    const fw = this.fw
    return wall !== fw ? wall - fw : counter !== this.fc ? counter - this.fc : peer === this.fp ? 0 : peer < this.fp! ? -1 : 1
  }

  /** Raises the floor (a delete wins an exact tie with a replacement); returns true when visible fields were erased. */
  raiseFloor(ts: Timestamp, deleted: boolean): boolean {
    return this.raiseFloorRaw(ts.wall, ts.counter, ts.peer, deleted)
  }

  /** {@link raiseFloor} with the timestamp's parts passed apart. */
  raiseFloorRaw(wall: number, counter: number, peer: string, deleted: boolean): boolean {
    if (this.fp !== undefined) {
      const c = this.vsFloor(wall, counter, peer)
      if (c < 0 || (c === 0 && (this.deleted || !deleted))) return false
    }
    this.fw = wall
    this.fc = counter
    this.fp = peer
    this.deleted = deleted
    return this.dropBelowRaw(wall, counter, peer, deleted)
  }

  /** True when the floor is exactly `(wall, counter, peer)`. */
  floorIs(wall: number, counter: number, peer: string): boolean {
    return this.fp === peer && this.fw === wall && this.fc === counter
  }

  /** True when the entry holds nothing at all (no floor, no register). */
  isEmpty(): boolean {
    return this.fp === undefined && this.registerCount === 0
  }

  /** Writes a field unless the floor has already erased writes that old; returns whether it won. */
  writeField(name: string, value: Value | undefined, ts: Timestamp): boolean {
    return this.writeFieldRaw(name, value, ts.wall, ts.counter, ts.peer)
  }

  /** {@link writeField} with the timestamp's parts passed apart. */
  writeFieldRaw(name: string, value: Value | undefined, wall: number, counter: number, peer: string): boolean {
    if (this.fp !== undefined) {
      const c = this.vsFloor(wall, counter, peer)
      if (c < 0 || (c === 0 && this.deleted)) return false
    }
    return this.writeRaw(name, value, wall, counter, peer)
  }

  /** Number of registers (removed fields included). */
  get size(): number {
    return this.registerCount
  }

  /** The field name of a slot. */
  nameAt(s: number): string {
    return this.cells[3 * s] as string
  }

  /** The peer of a slot's timestamp. */
  peerAt(s: number): string {
    return this.cells[3 * s + 2] as string
  }

  /** The wall time of a slot's timestamp. */
  wallAt(s: number): number {
    return this.clock[2 * s]!
  }

  /** The counter of a slot's timestamp. */
  counterAt(s: number): number {
    return this.clock[2 * s + 1]!
  }

  /** The record as users see it. */
  materialize(id: string): StoredRecord {
    const out = this.toObject() as Record<string, Value>
    out.id = id
    return out as StoredRecord
  }

  /**
   * Appends the registers `vv` does not cover, and `ceiling` does not hold back, to `fields`; returns how many it
   * held back.
   */
  collect(vv: ReadonlyMap<string, Timestamp>, ceiling: Timestamp | undefined, fields: FieldDelta[]): number {
    let held = 0
    const cells = this.cells
    const clock = this.clock
    for (let s = 0; s < cells.length / 3; s++) {
      const peer = cells[3 * s + 2] as string
      const w = clock[2 * s]!
      const c = clock[2 * s + 1]!
      const seen = vv.get(peer)
      if (seen !== undefined && (w < seen.wall || (w === seen.wall && c <= seen.counter))) continue
      if (ceiling !== undefined && peer === ceiling.peer && (w > ceiling.wall || (w === ceiling.wall && c > ceiling.counter))) {
        held++
        continue
      }
      fields.push({ name: cells[3 * s] as string, value: cells[3 * s + 1] as Value | undefined, ts: this.stampAt(s) })
    }
    return held
  }

  /**
   * Drops what `drop` selects among the registers and the floor (`undefined` stands for the floor); returns how many
   * it dropped. Visible fields may go (rebase); callers that must keep them select only tombstones.
   */
  dropWhere(drop: (ts: Timestamp, value: Value | undefined, floor: boolean) => boolean): number {
    let n = 0
    const floor = this.floor
    if (floor !== undefined && drop(floor, undefined, true)) {
      this.fp = undefined
      this.deleted = false
      n++
    }
    const before = this.registerCount
    this.dropSlots((s) => drop(this.stampAt(s), this.cells[3 * s + 1] as Value | undefined, false))
    return n + before - this.registerCount
  }

  /** Calls `fn` with the timestamp of the floor and of every register. */
  forEachStamp(fn: (ts: Timestamp) => void): void {
    const floor = this.floor
    if (floor !== undefined) fn(floor)
    for (let s = 0; s < this.registerCount; s++) fn(this.stampAt(s))
  }

  /** The slot of a field, or -1. */
  slotOf(name: string): number {
    return this.slot(name)
  }

  /** The value held in a slot. */
  valueAt(s: number): Value | undefined {
    return this.cells[3 * s + 1] as Value | undefined
  }

  /** The timestamp of a slot. */
  stampOf(s: number): Timestamp {
    return this.stampAt(s)
  }

}

/**
 * Collections of records, each record an LWW map of fields with whole-record replace and delete:
 * - `put` at T replaces the record: every field written before T is erased, the given fields are written at T;
 * - `update` at T writes only the given fields (`undefined` removes one);
 * - `delete` at D erases every field written at or before D; a later write makes the record visible again with only
 *   the fields written after D.
 * All three resolve by timestamp, identically on every replica, whatever order writes arrive in.
 */
export class RecordStore {
  private readonly data = new Map<string, Map<string, RecordEntry>>()
  private readonly vv: VersionVector = new Map()
  /**
   * Per origin, ranges `(from, to]` of its writes that a delta brought but the vector could not count yet, because
   * the delta arrived ahead of an earlier one (the vector lacked writes up to `from`). Once the vector reaches `from`,
   * it advances to `to` at once, so deltas reordered on the way still count as received when the gap closes.
   */
  private readonly ahead = new Map<string, { from: Timestamp; to: Timestamp }[]>()
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
    const clean = normalizeFields(collection, id, fields, false)
    const entry = this.entry(collection, id)
    entry.raiseFloor(ts, false)
    for (let i = 0; i < clean.length; i += 2) entry.writeField(clean[i] as string, clean[i + 1] as Value, ts)
    entry.trim()
    this.index?.add(ts.peer, ts.wall, ts.counter, collection, id)
    this.advanceTo(ts)
  }

  /** Sets the given fields of a record (creating it if needed); a field set to `undefined` is removed. */
  update(collection: string, id: string, patch: object, ts: Timestamp): void {
    checkTimestamp(ts)
    const clean = normalizeFields(collection, id, patch, true)
    const entry = this.entry(collection, id)
    for (let i = 0; i < clean.length; i += 2) entry.writeField(clean[i] as string, clean[i + 1] as Value | undefined, ts)
    this.index?.add(ts.peer, ts.wall, ts.counter, collection, id)
    this.advanceTo(ts)
  }

  /** Deletes a record at `ts`: fields written at or before `ts` are erased, later ones survive. */
  delete(collection: string, id: string, ts: Timestamp): void {
    checkTimestamp(ts)
    checkRef(collection, id)
    this.entry(collection, id).raiseFloor(ts, true)
    this.index?.add(ts.peer, ts.wall, ts.counter, collection, id)
    this.advanceTo(ts)
  }

  /** The visible record, or undefined. A fresh object each call; nested values are frozen. */
  get(collection: string, id: string): StoredRecord | undefined {
    const entry = this.data.get(collection)?.get(id)
    return entry?.visible() ? entry.materialize(id) : undefined
  }

  /** The record's floor: its latest replacement (`deleted: false`) or delete, if any. */
  floorOf(collection: string, id: string): { readonly ts: Timestamp; readonly deleted: boolean } | undefined {
    const entry = this.data.get(collection)?.get(id)
    const ts = entry?.floor
    return ts === undefined ? undefined : { ts, deleted: entry!.deleted }
  }

  /** True when the record is visible. */
  has(collection: string, id: string): boolean {
    return this.data.get(collection)?.get(id)?.visible() ?? false
  }

  /** Ids of the visible records of a collection. */
  ids(collection: string): string[] {
    const out: string[] = []
    for (const [id, entry] of this.data.get(collection) ?? []) if (entry.visible()) out.push(id)
    return out
  }

  /** The visible records of a collection. */
  all(collection: string): StoredRecord[] {
    const out: StoredRecord[] = []
    for (const [id, entry] of this.data.get(collection) ?? []) if (entry.visible()) out.push(entry.materialize(id))
    return out
  }

  /** Names of the collections that hold any record (visible or deleted). */
  collections(): string[] {
    return [...this.data.keys()]
  }

  /** How many records of a collection are visible, and how many are deleted but still kept (as a floor). */
  count(collection: string): { visible: number; deleted: number } {
    let visible = 0
    let deleted = 0
    for (const entry of this.data.get(collection)?.values() ?? []) entry.visible() ? visible++ : deleted++
    return { visible, deleted }
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
    const heldBack = (ts: Timestamp): boolean => ceiling !== undefined && ts.peer === ceiling.peer && compareTimestamps(ts, ceiling) > 0
    this.forEachCandidate(vv, (collection, id, entry) => {
      const fields: FieldDelta[] = []
      held += entry.collect(vv, ceiling, fields)
      let floor = entry.fp !== undefined && newerRaw(vv, entry.fw, entry.fc, entry.fp) ? entry.floor : undefined
      if (floor && heldBack(floor)) {
        held++
        floor = undefined
      }
      if (floor === undefined && fields.length === 0) return
      records.push(floor ? { collection, id, floor, deleted: entry.deleted, fields } : { collection, id, fields })
    })
    if (held > 0) return { from: new Map(), to: new Map(), records }
    return { ...this.claims(vv, ceiling), records }
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

  /**
   * Calls `fn` with every record that may hold a floor or register `vv` does not cover — a superset, each record
   * once: through the index when the changes are few (cost proportional to them), else by scanning every record.
   */
  private forEachCandidate(vv: ReadonlyMap<string, Timestamp>, fn: (collection: string, id: string, entry: RecordEntry) => void): void {
    let total = 0
    if (vv.size > 0) for (const recs of this.data.values()) total += recs.size
    // A small store is scanned (a few ms at most): the index would cost its upkeep on every write for little gain.
    if ((vv.size > 0 && total >= this.indexFrom) || (this.index !== undefined && vv.size > 0)) {
      if (this.index === undefined || this.index.stale) this.index = DeltaIndex.build(this.data)
      // Past an eighth of the records, a scan in storage order is as cheap and encodes better (shared id prefixes).
      const found = this.index.candidates(vv, Math.max(64, total >> 3))
      if (found) {
        const seen = new Set<RecordEntry>()
        for (let i = 0; i < found.length; i += 2) {
          const collection = found[i]!
          const id = found[i + 1]!
          const entry = this.data.get(collection)?.get(id)
          if (entry === undefined || seen.has(entry)) continue
          seen.add(entry)
          fn(collection, id, entry)
        }
        return
      }
    }
    for (const [collection, recs] of this.data) for (const [id, entry] of recs) fn(collection, id, entry)
  }

  /**
   * A live delta: the writes of `origin` newer than `since`, looked for only in `refs` — which must include every
   * record `origin` wrote after `since` (a replica passes the records it wrote since its last flush). It claims
   * `origin` alone, from `since` to the newest write held, so a receiver counts it as received only when it already
   * holds everything of `origin` up to `since`.
   */
  changesOf(origin: string, since: Timestamp | undefined, refs: Iterable<RecordRef>): Delta {
    const base: VersionVector = new Map()
    for (const [peer, ts] of this.vv) if (peer !== origin) base.set(peer, ts) // other origins: not this delta's business
    if (since) base.set(origin, since)
    const records: RecordDelta[] = []
    const seen = new Set<RecordEntry>()
    for (const { collection, id } of refs) {
      const entry = this.data.get(collection)?.get(id)
      if (!entry || seen.has(entry)) continue
      seen.add(entry)
      const fields: FieldDelta[] = []
      entry.collect(base, undefined, fields)
      const own = fields.filter((f) => f.ts.peer === origin)
      const floor = entry.floor !== undefined && entry.floor.peer === origin && isNewer(base, entry.floor) ? entry.floor : undefined
      if (floor === undefined && own.length === 0) continue
      records.push(floor ? { collection, id, floor, deleted: entry.deleted, fields: own } : { collection, id, fields: own })
    }
    const newest = this.vv.get(origin)
    const to: VersionVector = newest && (!since || compareTimestamps(newest, since) > 0) ? new Map([[origin, newest]]) : new Map()
    const from: VersionVector = since && to.size > 0 ? new Map([[origin, since]]) : new Map()
    return { from, to, records }
  }

  /**
   * Merges a delta; idempotent, commutative and associative with every other delta. `onOverwrite` hears of every
   * field where two different values met (the replica turns these into conflict events).
   */
  apply(delta: Delta, onOverwrite?: (o: Overwrite) => void): ApplyResult {
    const changed: RecordChange[] = []
    const floors: RecordRef[] = []
    const rec = newScratch()
    for (const rd of delta.records) {
      rec.collection = rd.collection
      rec.id = rd.id
      const floor = rd.floor
      rec.floorPeer = floor?.peer
      rec.floorWall = floor?.wall ?? 0
      rec.floorCounter = floor?.counter ?? 0
      rec.deleted = rd.deleted === true
      const fields = rd.fields
      rec.n = fields.length
      for (let k = 0; k < fields.length; k++) {
        const f = fields[k]!
        rec.names[k] = f.name
        rec.values[k] = f.value
        rec.walls[k] = f.ts.wall
        rec.counters[k] = f.ts.counter
        rec.peers[k] = f.ts.peer
      }
      this.applyRecord(rec, changed, floors, onOverwrite)
    }
    return { changed, advanced: this.advanceOver(delta.from, delta.to), floors }
  }

  /**
   * {@link apply} straight from {@link encodeDelta}'s bytes, with no delta object in between. Throws `DecodeError` on
   * malformed input; records read before the error may then have been merged (harmless: merges are idempotent), but
   * the vector does not advance. Without `changes`, the result's `changed` and `floors` stay empty (a cold load needs
   * no list).
   */
  applyEncoded(bytes: Uint8Array, onOverwrite?: (o: Overwrite) => void, changes = true): ApplyResult {
    const changed: RecordChange[] = []
    const floors: RecordRef[] = []
    const sink = changes ? changed : undefined
    const floorSink = changes ? floors : undefined
    const { from, to } = readDelta(bytes, (rec) => this.applyRecord(rec, sink, floorSink, onOverwrite))
    return { changed, advanced: this.advanceOver(from, to), floors }
  }

  /** Merges one record of a delta (see {@link apply}). */
  private applyRecord(
    rd: RecordScratch,
    changed: RecordChange[] | undefined,
    floors: RecordRef[] | undefined,
    onOverwrite: ((o: Overwrite) => void) | undefined,
  ): void {
    const { collection, id } = rd
    const entry = this.entry(collection, id)
    const fresh = entry.isEmpty()
    const wasVisible = entry.visible()
    const index = this.index
    // A replacement or delete can erase a field that the same delta writes back unchanged: on that (rare) path the
    // record's visible fields are compared as a whole instead of inferred from the register writes.
    // A floor or register we hold nothing for, covered by our vector and no newer than a tombstone we collected, is
    // held or superseded here, perhaps by that tombstone (see collect()): it must not come back as if new.
    const fp = rd.floorPeer
    const floor = fp !== undefined && (entry.fp !== undefined || !this.stale(rd.floorWall, rd.floorCounter, fp))
    const before = floor && wasVisible ? entry.toObject() : undefined
    let touched = false
    if (floor) {
      const oldFp = entry.fp
      const oldFw = entry.fw
      const oldFc = entry.fc
      const oldDeleted = entry.deleted
      touched = entry.raiseFloorRaw(rd.floorWall, rd.floorCounter, fp, rd.deleted)
      if (floors && (entry.fp !== oldFp || entry.fw !== oldFw || entry.fc !== oldFc || entry.deleted !== oldDeleted)) floors.push({ collection, id })
      if (index && entry.floorIs(rd.floorWall, rd.floorCounter, fp)) index.add(fp, rd.floorWall, rd.floorCounter, collection, id)
    }
    for (let k = 0; k < rd.n; k++) {
      const name = rd.names[k]!
      const value = rd.values[k]
      const wall = rd.walls[k]!
      const counter = rd.counters[k]!
      const peer = rd.peers[k]!
      const slot = entry.slotOf(name)
      if (slot < 0 && this.stale(wall, counter, peer)) continue
      const old = slot < 0 ? undefined : entry.valueAt(slot)
      const differs = slot >= 0 && !valuesEqual(old, value)
      const oldTs = differs && onOverwrite ? entry.stampOf(slot) : undefined
      const won = entry.writeFieldRaw(name, value, wall, counter, peer)
      if (won && index) index.add(peer, wall, counter, collection, id)
      if (slot < 0) {
        if (won && value !== undefined) touched = true
        continue
      }
      if (!differs) continue
      if (won) touched = true
      if (oldTs && onOverwrite) {
        const held = { value: old, timestamp: oldTs }
        const incoming = { value, timestamp: { wall, counter, peer } }
        onOverwrite(
          won
            ? { collection, id, field: name, winner: incoming, loser: held, incomingLost: false }
            : { collection, id, field: name, winner: held, loser: incoming, incomingLost: true },
        )
      }
    }
    const visibleNow = entry.visible()
    if (before && visibleNow && touched) touched = !sameFields(before, entry.toObject())
    if (changed && (touched || wasVisible !== visibleNow)) changed.push({ collection, id, existed: wasVisible })
    if (entry.isEmpty()) this.data.get(collection)?.delete(id)
    else if (fresh) entry.trim()
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
   * Tombstone garbage collection: drops every delete floor and every field removal whose timestamp `stable` covers,
   * and every record left holding nothing. `stable` must be causally stable: every replica that may still send us
   * writes holds everything it covers, and our own vector covers each of their vectors (see the sync engine). Writes
   * older than a dropped tombstone that arrive later (duplicates, frames in flight) stay out: {@link apply} ignores a
   * register or floor it holds nothing for when our vector already covers it. Visible state does not change.
   */
  collect(stable: ReadonlyMap<string, Timestamp>): CollectResult {
    let tombstones = 0
    let records = 0
    this.index = undefined
    const covered = (ts: Timestamp): boolean => !isNewer(stable, ts) && !isNewer(this.vv, ts)
    for (const [collection, recs] of this.data) {
      for (const [id, entry] of recs) {
        tombstones += entry.dropWhere((ts, value, floor) => (floor ? entry.deleted : value === undefined) && covered(ts) && this.noteCollected(ts))
        if (entry.isEmpty()) {
          recs.delete(id)
          records++
        }
      }
      if (recs.size === 0) this.data.delete(collection)
    }
    // The frontier covers what was collected; it moves only when something was.
    if (tombstones > 0) for (const ts of stable.values()) if (!isNewer(this.vv, ts)) advance(this.frontierVv, ts)
    return { tombstones, records }
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
    let dropped = 0
    this.index = undefined
    for (const [collection, recs] of this.data) {
      for (const [id, entry] of recs) {
        let shared = false
        entry.forEachStamp((ts) => {
          if (!isNewer(theirs, ts)) shared = true
        })
        dropped += entry.dropWhere((ts) => ts.peer !== own || (shared && newest !== undefined && compareTimestamps(ts, newest) <= 0))
        if (entry.isEmpty()) recs.delete(id)
      }
      if (recs.size === 0) this.data.delete(collection)
    }
    this.vv.clear()
    this.ahead.clear()
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
   * `encodeDelta(changesSince(vv))`, byte for byte, written straight from the registers: no delta object and no
   * object per register in between.
   */
  encodeChangesSince(vv: ReadonlyMap<string, Timestamp>): Uint8Array {
    const { from, to } = this.claims(vv, undefined)
    const peers = new Map<string, number>()
    const names = new Map<string, number>()
    let baseWall = MAX_WALL
    let lastPeer = ''
    const see = (wall: number, peer: string): void => {
      if (peer !== lastPeer) {
        if (!peers.has(peer)) peers.set(peer, peers.size)
        lastPeer = peer
      }
      if (wall < baseWall) baseWall = wall
    }
    for (const ts of from.values()) see(ts.wall, ts.peer)
    for (const ts of to.values()) see(ts.wall, ts.peer)
    // Pass 1: which records go out, grouped by collection in the order changesSince lists them; the tables.
    const all = vv.size === 0
    const groups = new Map<string, { ids: string[]; entries: RecordEntry[] }>()
    let group: { ids: string[]; entries: RecordEntry[] } | undefined
    let groupName: string | undefined
    let registers = 0
    this.forEachCandidate(vv, (collection, id, entry) => {
      let out = false
      if (entry.fp !== undefined && (all || newerRaw(vv, entry.fw, entry.fc, entry.fp))) {
        see(entry.fw, entry.fp)
        out = true
      }
      for (let s = 0, n = entry.size; s < n; s++) {
        const peer = entry.peerAt(s)
        const wall = entry.wallAt(s)
        if (!all && !newerRaw(vv, wall, entry.counterAt(s), peer)) continue
        see(wall, peer)
        const name = entry.nameAt(s)
        if (!names.has(name)) names.set(name, names.size)
        registers++
        out = true
      }
      if (!out) return
      if (collection !== groupName) {
        groupName = collection
        group = groups.get(collection)
        if (!group) groups.set(collection, (group = { ids: [], entries: [] }))
      }
      group!.ids.push(id)
      group!.entries.push(entry)
    })
    if (peers.size === 0) baseWall = 0
    // Pass 2: the bytes.
    const w = new DeltaWriter(peers, baseWall, names, from, to, registers * 12)
    w.collections(groups.size)
    for (const [collection, { ids, entries }] of groups) {
      w.collection(collection, ids.length)
      for (let i = 0; i < ids.length; i++) {
        const entry = entries[i]!
        const floor = entry.fp !== undefined && (all || newerRaw(vv, entry.fw, entry.fc, entry.fp))
        const n = entry.size
        let nFields = n
        if (!all) {
          nFields = 0
          for (let s = 0; s < n; s++) if (newerRaw(vv, entry.wallAt(s), entry.counterAt(s), entry.peerAt(s))) nFields++
        }
        w.record(ids[i]!, entry.fw, entry.fc, floor ? entry.fp : undefined, entry.deleted, nFields)
        for (let s = 0; s < n; s++) {
          const wall = entry.wallAt(s)
          const counter = entry.counterAt(s)
          const peer = entry.peerAt(s)
          if (all || newerRaw(vv, wall, counter, peer)) w.field(entry.nameAt(s), entry.valueAt(s), wall, counter, peer)
        }
      }
    }
    return w.finish()
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
    for (const [collection, recs] of this.data) {
      for (const [id, entry] of recs) {
        if (!entry.visible()) continue
        w.pos = 0
        w.string(collection)
        w.string(id)
        const obj = entry.toObject()
        for (const key of Object.keys(obj).sort()) {
          w.string(key)
          writeValue(w, obj[key])
        }
        const h = murmur3x128(w.view())
        for (let i = 0; i < 4; i++) lanes[i] = (lanes[i]! + h[i]!) >>> 0
      }
    }
    return lanes.map((x) => x.toString(16).padStart(8, '0')).join('')
  }

  private entry(collection: string, id: string): RecordEntry {
    let recs = this.data.get(collection)
    if (!recs) this.data.set(collection, (recs = new Map()))
    let entry = recs.get(id)
    if (!entry) recs.set(id, (entry = new RecordEntry()))
    return entry
  }
}

/** Fewest records for which {@link RecordStore.changesSince} builds its index (below, it scans). */
const INDEX_MIN_RECORDS = 16_384

/** See RecordEntry's floor wall. */
const WALL_SPLIT = 2 ** 24

/** Most ranges held ahead of the version vector per origin (see {@link RecordStore.apply}). */
const MAX_AHEAD = 32

/** {@link isNewer} with the timestamp's parts passed apart. */
function newerRaw(vv: ReadonlyMap<string, Timestamp>, wall: number, counter: number, peer: string): boolean {
  const seen = vv.get(peer)
  return seen === undefined || wall > seen.wall || (wall === seen.wall && (counter > seen.counter || (counter === seen.counter && peer > seen.peer)))
}

/** A record scratch for {@link RecordStore.apply} (one per call: an overwrite listener may apply again). */
function newScratch(): RecordScratch {
  return { collection: '', id: '', floorPeer: undefined, floorWall: 0, floorCounter: 0, deleted: false, n: 0, names: [], values: [], walls: [], counters: [], peers: [] }
}

/** One origin's writes in a {@link DeltaIndex}: parallel arrays, in timestamp order while `sorted`. */
class OriginLog {
  walls = new Float64Array(16)
  counters = new Uint32Array(16)
  /** Index of the record's collection in the index's table. */
  colls = new Uint32Array(16)
  ids: string[] = []
  n = 0
  sorted = true
  maxWall = -1
  maxCounter = 0

  /** Orders the items by timestamp (needed only when a request falls inside the range of an unsorted log). */
  sort(): void {
    const n = this.n
    const { walls, counters } = this
    const perm = new Uint32Array(n)
    for (let i = 0; i < n; i++) perm[i] = i
    perm.sort((a, b) => walls[a]! - walls[b]! || counters[a]! - counters[b]!)
    const w = new Float64Array(walls.length)
    const c = new Uint32Array(counters.length)
    const k = new Uint32Array(this.colls.length)
    const ids: string[] = new Array(n)
    for (let i = 0; i < n; i++) {
      const j = perm[i]!
      w[i] = walls[j]!
      c[i] = counters[j]!
      k[i] = this.colls[j]!
      ids[i] = this.ids[j]!
    }
    this.walls = w
    this.counters = c
    this.colls = k
    this.ids = ids
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
}

/**
 * The store's index by origin and timestamp: for each origin, every (timestamp, record) it wrote that the store
 * took, so that the records a version vector lacks are found without looking at the others. Items are appended as
 * writes land (a local writer's are already in order; merged ones may not be, and the log is sorted when a request
 * first needs it); an item whose register has since been overwritten or dropped stays behind, harmlessly — lookups
 * yield a superset that {@link RecordStore.changesSince} filters exactly — until the log has grown to twice its size
 * at the last build, when the index is dropped and rebuilt from the records on next use.
 */
class DeltaIndex {
  private readonly logs = new Map<string, OriginLog>()
  private readonly collIds = new Map<string, number>()
  private readonly collNames: string[] = []
  private items = 0
  private limit = Infinity

  /** An index of every floor and register held in `data`. */
  static build(data: ReadonlyMap<string, ReadonlyMap<string, RecordEntry>>): DeltaIndex {
    const index = new DeltaIndex()
    for (const [collection, recs] of data) {
      for (const [id, entry] of recs) {
        if (entry.fp !== undefined) index.add(entry.fp, entry.fw, entry.fc, collection, id)
        for (let s = 0, n = entry.size; s < n; s++) index.add(entry.peerAt(s), entry.wallAt(s), entry.counterAt(s), collection, id)
      }
    }
    index.limit = 2 * index.items + 4096
    return index
  }

  /** Records that `origin` wrote record `(collection, id)` at `(wall, counter)`. */
  add(origin: string, wall: number, counter: number, collection: string, id: string): void {
    let log = this.logs.get(origin)
    if (!log) this.logs.set(origin, (log = new OriginLog()))
    let ci = this.collIds.get(collection)
    if (ci === undefined) {
      ci = this.collNames.length
      this.collIds.set(collection, ci)
      this.collNames.push(collection)
    }
    const n = log.n
    if (n > 0) {
      const w = log.walls[n - 1]!
      const c = log.counters[n - 1]!
      if (w === wall && c === counter && log.ids[n - 1] === id && log.colls[n - 1] === ci) return // a put's fields share its time
      if (wall < w || (wall === w && counter < c)) log.sorted = false
    }
    if (n === log.walls.length) {
      const size = n * 2
      const walls = new Float64Array(size)
      walls.set(log.walls)
      log.walls = walls
      const counters = new Uint32Array(size)
      counters.set(log.counters)
      log.counters = counters
      const colls = new Uint32Array(size)
      colls.set(log.colls)
      log.colls = colls
    }
    log.walls[n] = wall
    log.counters[n] = counter
    log.colls[n] = ci
    log.ids[n] = id
    log.n = n + 1
    if (wall > log.maxWall || (wall === log.maxWall && counter > log.maxCounter)) {
      log.maxWall = wall
      log.maxCounter = counter
    }
    this.items++
  }

  /** True once the log has grown enough that a rebuild would halve it. */
  get stale(): boolean {
    return this.items > this.limit
  }

  /**
   * `[collection, id, collection, id, …]` of every record holding a write that `vv` does not cover (duplicates
   * possible), or undefined when there are more than `max` items to look at.
   */
  candidates(vv: ReadonlyMap<string, Timestamp>, max: number): string[] | undefined {
    const ranges: [OriginLog, number][] = []
    let count = 0
    for (const [origin, log] of this.logs) {
      const seen = vv.get(origin)
      let start = 0
      if (seen !== undefined) {
        if (log.maxWall < seen.wall || (log.maxWall === seen.wall && log.maxCounter <= seen.counter)) continue
        if (!log.sorted) log.sort() // once: writes appended after it in order keep it sorted
        start = log.after(seen.wall, seen.counter)
      }
      count += log.n - start
      if (count > max) return undefined
      ranges.push([log, start])
    }
    const out: string[] = []
    for (const [log, start] of ranges) for (let i = start; i < log.n; i++) out.push(this.collNames[log.colls[i]!]!, log.ids[i]!)
    return out
  }
}

/** True when two visible field sets are equal (same keys, same values by canonical bytes). */
function sameFields(a: Record<string, Value>, b: Record<string, Value>): boolean {
  const keys = Object.keys(a)
  if (keys.length !== Object.keys(b).length) return false
  return keys.every((k) => Object.prototype.hasOwnProperty.call(b, k) && valuesEqual(a[k], b[k]))
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

/** Reused by every write (writes never re-enter the store), so a one-field update allocates no array. */
const fieldScratch: unknown[] = []

/**
 * Validates and normalises a record's fields before anything is written (so a bad value writes nothing). Returns
 * `[name, value, name, value, …]`; with `removals`, `undefined` values are kept (they remove the field).
 */
function normalizeFields(collection: string, id: string, fields: object, removals: boolean): unknown[] {
  checkRef(collection, id)
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) {
    throw new InvalidValueError(`record ${JSON.stringify(id)}: fields must be a plain object`)
  }
  const out = fieldScratch
  out.length = 0
  for (const name of Object.keys(fields)) {
    const v = (fields as Record<string, unknown>)[name]
    if (name === 'id') {
      if (v !== id) throw new InvalidValueError(`record ${JSON.stringify(id)}: the id field cannot be changed`)
      continue
    }
    if (v === undefined) {
      if (removals) out.push(name, undefined)
      continue
    }
    out.push(name, normalizeValue(v, name))
  }
  return out
}
