/**
 * Deltas — the unit of replication — and their binary codec, which storage snapshots and the sync protocol share.
 *
 * Wire format, version 1 (all integers are unsigned LEB128 varints unless marked u8; strings are a varint byte
 * length followed by WTF-8, so any JavaScript string round-trips exactly):
 *
 *   delta   := u8 version=1
 *              uint nPeers    nPeers × string          peer table: every peer id in the delta, once
 *              uint baseWall                           smallest wall time in the delta
 *              uint nNames    nNames × string          field-name table
 *              vv from        vv to                    version vectors: uint n, n × ts
 *              uint nColl     nColl × collection
 *   collection := string name   uint nRecords   nRecords × record
 *   record  := uint shared  string suffix              id = first `shared` chars of the previous id + suffix
 *              u8 flags                                bit 0: has a floor; bit 1: the floor is a delete
 *              [ts floor]
 *              uint nFields  nFields × (uint nameIndex, value, ts)
 *   ts      := uint (wall − baseWall)   uint (counter × nPeers + peerIndex)
 *   value   := u8 tag + payload, see value.ts (tag 10 = the field was removed)
 *
 * A full snapshot is the delta against an empty version vector. Decoding checks every count against the bytes that
 * remain and every index against its table, so malformed input fails fast with {@link DecodeError}, never hangs.
 */
import { Reader, Writer } from './bytes.js'
import { DecodeError, InvalidArgumentError } from './errors.js'
import { type Timestamp, MAX_COUNTER, MAX_WALL, invalidPeerReason } from './timestamp.js'
import { type Value, readValue, writeValue } from './value.js'
import type { VersionVector } from './version-vector.js'

/** Version byte of the delta format. */
export const DELTA_FORMAT_VERSION = 1
/** Most distinct peers one delta may name (keeps `counter × nPeers + index` a safe integer). */
export const MAX_DELTA_PEERS = 2 ** 21

/** One field write inside a {@link RecordDelta}; `value: undefined` removes the field. */
export interface FieldDelta {
  readonly name: string
  readonly value: Value | undefined
  readonly ts: Timestamp
}

/** What changed in one record: an optional floor (a replacement or a delete) and field writes. */
export interface RecordDelta {
  readonly collection: string
  readonly id: string
  /** Registers older than `floor` are erased (and those equal to it too when `deleted`). */
  readonly floor?: Timestamp
  /** True when the floor is a delete (the record is hidden until a later write). */
  readonly deleted?: boolean
  readonly fields: readonly FieldDelta[]
}

/**
 * A set of changes, idempotent to apply. `to` is the sender's version vector; a receiver whose vector covered `from`
 * for an origin may raise its entry for that origin to `to`'s (it then holds everything the sender held of it).
 */
export interface Delta {
  readonly from: ReadonlyMap<string, Timestamp>
  readonly to: ReadonlyMap<string, Timestamp>
  readonly records: readonly RecordDelta[]
}

/** Identifies a record. */
export interface RecordRef {
  readonly collection: string
  readonly id: string
}

/** Reused across calls for small deltas (encoding never re-enters itself); `finish()` hands out an exact-size copy. */
let scratch = new Writer(4096)

/**
 * The low-level writer of the format above, for encoders that do not hold a {@link Delta} (the record store writes
 * its state straight from its registers). Call order: the constructor (header: the peer and name tables in index
 * order, both vectors), then per collection {@link collection}, per record {@link record}, per field {@link field};
 * then {@link finish}. Every timestamp's peer must be in `peers` and every wall ≥ `baseWall`.
 */
export class DeltaWriter {
  private readonly w: Writer
  private readonly nPeers: number
  private prev = ''

  constructor(
    private readonly peers: ReadonlyMap<string, number>,
    private readonly baseWall: number,
    private readonly names: ReadonlyMap<string, number>,
    from: ReadonlyMap<string, Timestamp>,
    to: ReadonlyMap<string, Timestamp>,
    sizeHint = 0,
  ) {
    if (peers.size > MAX_DELTA_PEERS) throw new InvalidArgumentError(`a delta may name at most ${MAX_DELTA_PEERS} peers`)
    this.nPeers = peers.size
    const w = (this.w = sizeHint > 1 << 16 ? new Writer(sizeHint) : scratch)
    w.pos = 0
    w.u8(DELTA_FORMAT_VERSION)
    w.uint(peers.size)
    for (const p of peers.keys()) w.string(p)
    w.uint(baseWall)
    w.uint(names.size)
    for (const n of names.keys()) w.string(n)
    this.vv(from)
    this.vv(to)
  }

  private vv(vv: ReadonlyMap<string, Timestamp>): void {
    this.w.uint(vv.size)
    for (const ts of vv.values()) this.ts(ts.wall, ts.counter, ts.peer)
  }

  /** Writes a timestamp. */
  ts(wall: number, counter: number, peer: string): void {
    this.w.uint(wall - this.baseWall)
    this.w.uint(counter * this.nPeers + this.peers.get(peer)!)
  }

  /** Starts the list of collections (`n` of them). */
  collections(n: number): void {
    this.w.uint(n)
  }

  /** Starts a collection of `n` records. */
  collection(name: string, n: number): void {
    this.w.string(name)
    this.w.uint(n)
    this.prev = ''
  }

  /** Starts a record: its id, its floor (`floorPeer` undefined: none) and the number of fields that follow. */
  record(id: string, floorWall: number, floorCounter: number, floorPeer: string | undefined, deleted: boolean, nFields: number): void {
    const w = this.w
    const shared = sharedPrefix(this.prev, id)
    w.uint(shared)
    w.string(shared === 0 ? id : id.slice(shared))
    this.prev = id
    if (floorPeer === undefined) w.u8(0)
    else {
      w.u8(deleted ? 3 : 1)
      this.ts(floorWall, floorCounter, floorPeer)
    }
    w.uint(nFields)
  }

  /** Writes one field of the current record (`value` undefined: the field was removed). */
  field(name: string, value: Value | undefined, wall: number, counter: number, peer: string): void {
    this.w.uint(this.names.get(name)!)
    writeValue(this.w, value)
    this.ts(wall, counter, peer)
  }

  /** The encoded bytes. */
  finish(): Uint8Array {
    const out = this.w.finish()
    if (this.w === scratch && out.length > 1 << 16) scratch = new Writer(4096) // keep the buffer for small live deltas, not for snapshots
    return out
  }
}

/** Encodes a delta (or a full snapshot) in the format above. */
export function encodeDelta(delta: Delta): Uint8Array {
  const peers = new Map<string, number>()
  const names = new Map<string, number>()
  let baseWall = MAX_WALL
  const seeTs = (ts: Timestamp): void => {
    if (!peers.has(ts.peer)) peers.set(ts.peer, peers.size)
    if (ts.wall < baseWall) baseWall = ts.wall
  }
  const byCollection = new Map<string, RecordDelta[]>()
  for (const ts of delta.from.values()) seeTs(ts)
  for (const ts of delta.to.values()) seeTs(ts)
  for (const rd of delta.records) {
    let list = byCollection.get(rd.collection)
    if (!list) byCollection.set(rd.collection, (list = []))
    list.push(rd)
    if (rd.floor) seeTs(rd.floor)
    for (const f of rd.fields) {
      seeTs(f.ts)
      if (!names.has(f.name)) names.set(f.name, names.size)
    }
  }
  if (peers.size === 0) baseWall = 0
  const w = new DeltaWriter(peers, baseWall, names, delta.from, delta.to)
  w.collections(byCollection.size)
  for (const [collection, list] of byCollection) {
    w.collection(collection, list.length)
    for (const rd of list) {
      const floor = rd.floor
      w.record(rd.id, floor?.wall ?? 0, floor?.counter ?? 0, floor?.peer, rd.deleted === true, rd.fields.length)
      for (const f of rd.fields) w.field(f.name, f.value, f.ts.wall, f.ts.counter, f.ts.peer)
    }
  }
  return w.finish()
}

function sharedPrefix(a: string, b: string): number {
  const n = Math.min(a.length, b.length, 255)
  let i = 0
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++
  // Never split a surrogate pair: the suffix must stay a faithful slice.
  if (i > 0 && i < b.length && isHigh(b.charCodeAt(i - 1))) i--
  return i
}

function isHigh(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff
}

/** Readers of a codec's timestamps (see {@link readStampTable}). */
export interface StampReaders {
  readonly readTs: () => Timestamp
  readonly readVV: () => VersionVector
  /** The table's base wall time. */
  readonly baseWall: number
  /** Reads the `counter × n + peerIndex` half of a timestamp whose wall time the caller decoded itself. */
  readonly readStamp: (wall: number) => Timestamp
}

/** Reads a peer table (`uint n, n × string peer`): valid, distinct peer ids; errors name `what`. */
function readPeerTable(r: Reader, what: string): string[] {
  const nPeers = r.count(2, MAX_DELTA_PEERS)
  const peers: string[] = []
  const seen = new Set<string>()
  for (let i = 0; i < nPeers; i++) {
    const p = r.string()
    const bad = invalidPeerReason(p)
    if (bad) throw new DecodeError(`${what} peer table: ${bad}`)
    if (seen.has(p)) throw new DecodeError(`${what} peer table: duplicate peer ${JSON.stringify(p)}`)
    seen.add(p)
    peers.push(p)
  }
  return peers
}

/**
 * Reads a peer table and base wall (`uint n, n × string peer, uint baseWall`, with `between` read in between them,
 * e.g. a field-name table) and returns readers of timestamps relative to them (`uint wall − baseWall, uint counter ×
 * n + peerIndex`) and of version vectors (`uint k, k × ts`). Used by the text delta codec ({@link readDelta} reads
 * the same table inline, without an object per timestamp); errors name `what`.
 */
export function readStampTable(r: Reader, what: string, between?: () => void): StampReaders {
  const peers = readPeerTable(r, what)
  const baseWall = r.uint()
  if (baseWall > MAX_WALL) throw new DecodeError(`${what} base wall ${baseWall} out of range`)
  between?.()
  const readTs = (): Timestamp => readStamp(baseWall + r.uint())
  const readStamp = (wall: number): Timestamp => {
    if (wall > MAX_WALL || wall < 0) throw new DecodeError(`timestamp wall ${wall} out of range at byte ${r.pos}`)
    const x = r.uint()
    const peer = peers[x % peers.length]
    const counter = Math.floor(x / peers.length)
    if (peer === undefined || counter > MAX_COUNTER) throw new DecodeError(`malformed timestamp at byte ${r.pos}`)
    return { wall, counter, peer }
  }
  const readVV = (): VersionVector => {
    const n = r.count(2, peers.length)
    const vv: VersionVector = new Map()
    for (let i = 0; i < n; i++) {
      const ts = readTs()
      if (vv.has(ts.peer)) throw new DecodeError(`version vector names ${JSON.stringify(ts.peer)} twice`)
      vv.set(ts.peer, ts)
    }
    return vv
  }
  return { readTs, readVV, baseWall, readStamp }
}

/**
 * One record as {@link readDelta} hands it over. The arrays are reused from record to record: read them during the
 * call only. Field `k` is `names[k]`, `values[k]` (undefined: removed) at `(walls[k], counters[k], peers[k])`.
 */
export interface RecordScratch {
  collection: string
  id: string
  /** The floor's peer, or undefined when the record has no floor. */
  floorPeer: string | undefined
  floorWall: number
  floorCounter: number
  deleted: boolean
  n: number
  readonly names: string[]
  readonly values: (Value | undefined)[]
  readonly walls: number[]
  readonly counters: number[]
  readonly peers: string[]
}

/**
 * Reads {@link encodeDelta}'s bytes record by record, without building a {@link Delta}: `onHeader` hears the vectors
 * first, `onRecord` each record (see {@link RecordScratch}); returns the vectors. Throws {@link DecodeError} on any
 * malformed, truncated or trailing input — possibly after some records were handed over.
 */
export function readDelta(
  bytes: Uint8Array,
  onRecord: (rec: RecordScratch) => void,
): { from: VersionVector; to: VersionVector } {
  const r = new Reader(bytes)
  const version = r.u8()
  if (version !== DELTA_FORMAT_VERSION) {
    throw new DecodeError(`unsupported delta format version ${version} (this build reads ${DELTA_FORMAT_VERSION})`)
  }
  const peers = readPeerTable(r, 'delta')
  const baseWall = r.uint()
  if (baseWall > MAX_WALL) throw new DecodeError(`delta base wall ${baseWall} out of range`)
  const nNames = r.count(1)
  const names: string[] = []
  for (let i = 0; i < nNames; i++) {
    const n = r.string()
    if (n === 'id') throw new DecodeError('delta field-name table names the reserved field "id"')
    names.push(n)
  }
  // A timestamp is read into these three, so that records decode without an object per register.
  let tsWall = 0
  let tsCounter = 0
  let tsPeer = ''
  const readTs = (): void => {
    const wall = baseWall + r.uint()
    if (wall > MAX_WALL) throw new DecodeError(`timestamp wall ${wall} out of range at byte ${r.pos}`)
    const x = r.uint()
    const peer = peers[x % peers.length]
    const counter = Math.floor(x / peers.length)
    if (peer === undefined || counter > MAX_COUNTER) throw new DecodeError(`malformed timestamp at byte ${r.pos}`)
    tsWall = wall
    tsCounter = counter
    tsPeer = peer
  }
  const readVV = (): VersionVector => {
    const n = r.count(2, peers.length)
    const vv: VersionVector = new Map()
    for (let i = 0; i < n; i++) {
      readTs()
      if (vv.has(tsPeer)) throw new DecodeError(`version vector names ${JSON.stringify(tsPeer)} twice`)
      vv.set(tsPeer, { wall: tsWall, counter: tsCounter, peer: tsPeer })
    }
    return vv
  }
  const from = readVV()
  const to = readVV()
  const rec: RecordScratch = {
    collection: '',
    id: '',
    floorPeer: undefined,
    floorWall: 0,
    floorCounter: 0,
    deleted: false,
    n: 0,
    names: [],
    values: [],
    walls: [],
    counters: [],
    peers: [],
  }
  const nColl = r.count(2)
  for (let c = 0; c < nColl; c++) {
    const collection = r.string()
    if (collection.length === 0) throw new DecodeError('delta names an empty collection')
    rec.collection = collection
    const nRecords = r.count(3)
    let prev = ''
    for (let i = 0; i < nRecords; i++) {
      const shared = r.uint()
      if (shared > prev.length) throw new DecodeError(`record id prefix ${shared} longer than the previous id at byte ${r.pos}`)
      const id = shared === 0 ? r.string() : prev.slice(0, shared) + r.string()
      if (id.length === 0) throw new DecodeError('delta names a record with an empty id')
      prev = id
      rec.id = id
      const flags = r.u8()
      if (flags > 3 || flags === 2) throw new DecodeError(`bad record flags ${flags} at byte ${r.pos - 1}`)
      if (flags & 1) {
        readTs()
        rec.floorPeer = tsPeer
        rec.floorWall = tsWall
        rec.floorCounter = tsCounter
      } else rec.floorPeer = undefined
      rec.deleted = flags === 3
      const nFields = r.count(3)
      rec.n = nFields
      for (let k = 0; k < nFields; k++) {
        const name = names[r.uint()]
        if (name === undefined) throw new DecodeError(`field-name index out of range at byte ${r.pos}`)
        rec.names[k] = name
        rec.values[k] = readValue(r)
        readTs()
        rec.walls[k] = tsWall
        rec.counters[k] = tsCounter
        rec.peers[k] = tsPeer
      }
      onRecord(rec)
    }
    // Drop references to the last record's values so the scratch arrays keep nothing alive.
    rec.values.length = 0
  }
  if (!r.done) throw new DecodeError(`${r.remaining} trailing bytes after the delta`)
  return { from, to }
}

/** Decodes {@link encodeDelta}'s bytes; throws {@link DecodeError} on any malformed, truncated or trailing input. */
export function decodeDelta(bytes: Uint8Array): Delta {
  const records: RecordDelta[] = []
  const { from, to } = readDelta(bytes, (rec) => {
    const fields: FieldDelta[] = new Array(rec.n)
    for (let k = 0; k < rec.n; k++) {
      fields[k] = { name: rec.names[k]!, value: rec.values[k], ts: { wall: rec.walls[k]!, counter: rec.counters[k]!, peer: rec.peers[k]! } }
    }
    const { collection, id } = rec
    records.push(
      rec.floorPeer !== undefined
        ? { collection, id, floor: { wall: rec.floorWall, counter: rec.floorCounter, peer: rec.floorPeer }, deleted: rec.deleted, fields }
        : { collection, id, fields },
    )
  })
  return { from, to, records }
}

/** Encodes a version vector on its own (a sync request): uint n, n × (string peer, uint wall, uint counter). */
export function encodeVersionVector(vv: ReadonlyMap<string, Timestamp>): Uint8Array {
  const w = new Writer(16 + vv.size * 24)
  writeVersionVector(w, vv)
  return w.finish()
}

/** Writes a version vector into a larger message. */
export function writeVersionVector(w: Writer, vv: ReadonlyMap<string, Timestamp>): void {
  w.uint(vv.size)
  for (const ts of vv.values()) {
    w.string(ts.peer)
    w.uint(ts.wall)
    w.uint(ts.counter)
  }
}

/** Reads a version vector written by {@link writeVersionVector}. */
export function readVersionVector(r: Reader): VersionVector {
  const n = r.count(4, MAX_DELTA_PEERS)
  const vv: VersionVector = new Map()
  for (let i = 0; i < n; i++) {
    const peer = r.string()
    const bad = invalidPeerReason(peer)
    if (bad) throw new DecodeError(`version vector: ${bad}`)
    const wall = r.uint()
    const counter = r.uint()
    if (wall > MAX_WALL || counter > MAX_COUNTER) throw new DecodeError(`version vector entry out of range at byte ${r.pos}`)
    if (vv.has(peer)) throw new DecodeError(`version vector names ${JSON.stringify(peer)} twice`)
    vv.set(peer, { wall, counter, peer })
  }
  return vv
}

/** Decodes {@link encodeVersionVector}'s bytes; throws {@link DecodeError} on malformed or trailing input. */
export function decodeVersionVector(bytes: Uint8Array): VersionVector {
  const r = new Reader(bytes)
  const vv = readVersionVector(r)
  if (!r.done) throw new DecodeError(`${r.remaining} trailing bytes after the version vector`)
  return vv
}

