import { Writer } from './bytes.js'
import { type Delta, type FieldDelta, type RecordDelta, type RecordRef, decodeDelta, encodeDelta } from './delta.js'
import { InvalidValueError } from './errors.js'
import { murmur3x128 } from './hash.js'
import { LWWMap } from './lww-map.js'
import { type Timestamp, compareTimestamps, invalidTimestampReason } from './timestamp.js'
import { type Value, normalizeValue, valuesEqual, writeValue } from './value.js'
import { type VersionVector, advance, applyClaims, claimsFor, isNewer } from './version-vector.js'

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

/** One record: an LWW map of fields plus a floor — the latest replacement (`put`) or delete of the whole record. */
class RecordEntry extends LWWMap<Value> {
  declare trim: () => void
  floor: Timestamp | undefined = undefined
  deleted = false

  /** Visible when the latest floor is a replacement, or any field survives a delete. */
  visible(): boolean {
    if (this.floor !== undefined && !this.deleted) return true
    const cells = this.cells
    for (let i = 1; i < cells.length; i += 3) if (cells[i] !== undefined) return true
    return false
  }

  /** Raises the floor (a delete wins an exact tie with a replacement); returns true when visible fields were erased. */
  raiseFloor(ts: Timestamp, deleted: boolean): boolean {
    if (this.floor !== undefined) {
      const c = compareTimestamps(ts, this.floor)
      if (c < 0 || (c === 0 && (this.deleted || !deleted))) return false
    }
    this.floor = ts
    this.deleted = deleted
    return this.dropBelow(ts, deleted)
  }

  /** True when the entry holds nothing at all (no floor, no register). */
  isEmpty(): boolean {
    return this.floor === undefined && this.registerCount === 0
  }

  /** Writes a field unless the floor has already erased writes that old; returns whether it won. */
  writeField(name: string, value: Value | undefined, ts: Timestamp): boolean {
    if (this.floor !== undefined) {
      const c = compareTimestamps(ts, this.floor)
      if (c < 0 || (c === 0 && this.deleted)) return false
    }
    return this.write(name, value, ts)
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

  /** Replaces a record with `fields` (an `id` key, if present, must equal `id`; `undefined` fields are skipped). */
  put(collection: string, id: string, fields: object, ts: Timestamp): void {
    checkTimestamp(ts)
    const clean = normalizeFields(collection, id, fields, false)
    const entry = this.entry(collection, id)
    entry.raiseFloor(ts, false)
    for (let i = 0; i < clean.length; i += 2) entry.writeField(clean[i] as string, clean[i + 1] as Value, ts)
    entry.trim()
    advance(this.vv, ts)
  }

  /** Sets the given fields of a record (creating it if needed); a field set to `undefined` is removed. */
  update(collection: string, id: string, patch: object, ts: Timestamp): void {
    checkTimestamp(ts)
    const clean = normalizeFields(collection, id, patch, true)
    const entry = this.entry(collection, id)
    for (let i = 0; i < clean.length; i += 2) entry.writeField(clean[i] as string, clean[i + 1] as Value | undefined, ts)
    advance(this.vv, ts)
  }

  /** Deletes a record at `ts`: fields written at or before `ts` are erased, later ones survive. */
  delete(collection: string, id: string, ts: Timestamp): void {
    checkTimestamp(ts)
    checkRef(collection, id)
    this.entry(collection, id).raiseFloor(ts, true)
    advance(this.vv, ts)
  }

  /** The visible record, or undefined. A fresh object each call; nested values are frozen. */
  get(collection: string, id: string): StoredRecord | undefined {
    const entry = this.data.get(collection)?.get(id)
    return entry?.visible() ? entry.materialize(id) : undefined
  }

  /** The record's floor: its latest replacement (`deleted: false`) or delete, if any. */
  floorOf(collection: string, id: string): { readonly ts: Timestamp; readonly deleted: boolean } | undefined {
    const entry = this.data.get(collection)?.get(id)
    return entry?.floor === undefined ? undefined : { ts: entry.floor, deleted: entry.deleted }
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
    for (const [collection, recs] of this.data) {
      for (const [id, entry] of recs) {
        const fields: FieldDelta[] = []
        held += entry.collect(vv, ceiling, fields)
        let floor = entry.floor !== undefined && isNewer(vv, entry.floor) ? entry.floor : undefined
        if (floor && heldBack(floor)) {
          held++
          floor = undefined
        }
        if (floor === undefined && fields.length === 0) continue
        records.push(floor ? { collection, id, floor, deleted: entry.deleted, fields } : { collection, id, fields })
      }
    }
    if (held > 0) return { from: new Map(), to: new Map(), records }
    // Only the origins the receiver can advance on travel, so a steady-state delta stays a few bytes.
    const { from, to } = claimsFor(this.vv, vv, ceiling)
    return { from, to, records }
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
    for (const rd of delta.records) {
      const { collection, id } = rd
      const entry = this.entry(collection, id)
      const fresh = entry.isEmpty()
      const wasVisible = entry.visible()
      // A replacement or delete can erase a field that the same delta writes back unchanged: on that (rare) path the
      // record's visible fields are compared as a whole instead of inferred from the register writes.
      const before = rd.floor !== undefined && wasVisible ? entry.toObject() : undefined
      const oldFloor = entry.floor
      const oldDeleted = entry.deleted
      let touched = rd.floor !== undefined && entry.raiseFloor(rd.floor, rd.deleted === true)
      if (entry.floor !== oldFloor || entry.deleted !== oldDeleted) floors.push({ collection, id })
      for (const f of rd.fields) {
        const slot = entry.slotOf(f.name)
        const old = slot < 0 ? undefined : entry.valueAt(slot)
        const differs = slot >= 0 && !valuesEqual(old, f.value)
        const oldTs = differs && onOverwrite ? entry.stampOf(slot) : undefined
        const won = entry.writeField(f.name, f.value, f.ts)
        if (slot < 0) {
          if (won && f.value !== undefined) touched = true
          continue
        }
        if (!differs) continue
        if (won) touched = true
        if (oldTs && onOverwrite) {
          const held = { value: old, timestamp: oldTs }
          const incoming = { value: f.value, timestamp: f.ts }
          onOverwrite(
            won
              ? { collection, id, field: f.name, winner: incoming, loser: held, incomingLost: false }
              : { collection, id, field: f.name, winner: held, loser: incoming, incomingLost: true },
          )
        }
      }
      const visibleNow = entry.visible()
      if (before && visibleNow && touched) touched = !sameFields(before, entry.toObject())
      if (touched || wasVisible !== visibleNow) changed.push({ collection, id, existed: wasVisible })
      if (entry.isEmpty()) this.data.get(collection)?.delete(id)
      else if (fresh) entry.trim()
    }
    return { changed, advanced: applyClaims(this.vv, delta.from, delta.to), floors }
  }

  /** The whole state (every register, floor and the version vector) in the binary delta format. */
  encodeState(): Uint8Array {
    return encodeDelta(this.changesSince(new Map()))
  }

  /** Rebuilds a store from {@link RecordStore.encodeState}'s bytes; throws `DecodeError` on malformed input. */
  static decodeState(bytes: Uint8Array): RecordStore {
    const store = new RecordStore()
    store.apply(decodeDelta(bytes))
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

/** True when two visible field sets are equal (same keys, same values by canonical bytes). */
function sameFields(a: Record<string, Value>, b: Record<string, Value>): boolean {
  const keys = Object.keys(a)
  if (keys.length !== Object.keys(b).length) return false
  return keys.every((k) => Object.prototype.hasOwnProperty.call(b, k) && valuesEqual(a[k], b[k]))
}

/** Refuses a timestamp the codec could not carry (so a store never holds state it cannot encode and reload). */
function checkTimestamp(ts: Timestamp): void {
  const reason = invalidTimestampReason(ts)
  if (reason) throw new TypeError(`invalid write timestamp: ${reason}`)
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
