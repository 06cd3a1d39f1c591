/**
 * Deltas — the unit of replication — and their binary codec, which storage snapshots and the sync protocol share.
 *
 * Wire format, version 2 (all integers are unsigned LEB128 varints unless marked u8; strings are a varint byte
 * length followed by WTF-8, so any JavaScript string round-trips exactly):
 *
 *   delta   := u8 version=2
 *              uint nPeers    nPeers × string          peer table: every peer id in the delta, once
 *              uint baseWall                           smallest wall time in the delta
 *              uint M                                  counter radix: > the counter of every record stamp; 0: none
 *              uint nNames    nNames × string          field-name table
 *              vv from        vv to                    version vectors: uint n, n × vts
 *              uint nColl     nColl × collection
 *   collection := string name   uint nRecords   nRecords × record
 *   record  := uint shared  string suffix              id = first `shared` chars of the previous id + suffix
 *              u8 flags                                bit 0: has a floor; bit 1: the floor is a delete
 *              [ts floor]
 *              uint nFields  nFields × (uint nameIndex, value, ts)
 *   ts      := M > 0: uint (((wall − baseWall) × M + counter) × nPeers + peerIndex)
 *              M = 0: vts
 *   vts     := uint (wall − baseWall)   uint (counter × nPeers + peerIndex)
 *   value   := u8 tag + payload, see value.ts (tag 10 = the field was removed)
 *
 * A record's timestamps (floors and fields, most of a delta's bytes after the values) are one varint, in mixed radix:
 * two varints waste the high bits of each (a 9-bit wall offset and a 10-bit counter take 2 + 2 bytes, the 19 bits
 * together 3). The encoder sets M to the largest counter of a record stamp plus one — or to 0, writing every stamp as
 * two varints, when the largest stamp would pass 2^53 − 1 (walls far apart with large counters, or many peers), or
 * when most counters are much smaller than M, so that two varints are shorter (a burst of writes in one millisecond
 * among writes spread over days: a radix of 2 000 costs every stamp 11 bits where a counter of 0 takes one byte).
 * Vector stamps (`vts`, a few per delta) are always two varints. A decoder takes the one varint apart exactly (x mod
 * nPeers, then mod M; a counter is < M by construction) and checks the wall (≤ MAX_WALL) and M (≤ MAX_COUNTER + 1).
 *
 * Version 1 is version 2 without M: every timestamp is a `vts`. Decoders read both (snapshots stored and peers on
 * builds before version 2 hold version 1); encoders write version 2.
 *
 * A full snapshot is the delta against an empty version vector. Decoding checks every count against the bytes that
 * remain and every index against its table, so malformed input fails fast with {@link DecodeError}, never hangs.
 */
import { Reader, Writer, decodeString, decodeStringAt, holdShape } from './bytes.js'
import { DecodeError, InvalidArgumentError } from './errors.js'
import { type Timestamp, MAX_COUNTER, MAX_WALL, invalidPeerReason } from './timestamp.js'
import { type Value, copyCanonicalValue, readValue, writeValue } from './value.js'
import type { VersionVector } from './version-vector.js'

/** Version byte of the delta format encoders write (decoders also read version 1). */
export const DELTA_FORMAT_VERSION = 2
/** Most distinct peers one delta may name (keeps `counter × nPeers + index` a safe integer). */
export const MAX_DELTA_PEERS = 2 ** 21

/**
 * The largest wall and counter among the record stamps (floors and fields) a delta being encoded will write — or
 * upper bounds of them; `maxCounter` −1 when it writes none. Vector stamps need not be included. `counterBits`, when
 * given, counts those stamps by the bit length of their counter (see {@link noteCounter}).
 */
export interface StampRange {
  readonly maxWall: number
  readonly maxCounter: number
  readonly counterBits?: ArrayLike<number>
}

/** Bit lengths 0 (a counter of 0) to 32 (MAX_COUNTER): the size of a {@link StampRange}'s `counterBits`. */
export const COUNTER_BIT_LENGTHS = 33

/** Counts `counter` in `counterBits` (see {@link StampRange}). */
export function noteCounter(counterBits: Float64Array, counter: number): void {
  counterBits[32 - Math.clz32(counter)]!++
}

/** A {@link StampRange} gathered stamp by stamp, as an encoder finds the record stamps it will write. */
export class StampStats implements StampRange {
  maxWall = 0
  maxCounter = -1
  readonly counterBits = new Float64Array(COUNTER_BIT_LENGTHS)

  /** Notes a record stamp. */
  note(wall: number, counter: number): void {
    if (wall > this.maxWall) this.maxWall = wall
    if (counter > this.maxCounter) this.maxCounter = counter
    noteCounter(this.counterBits, counter)
  }

  /** Forgets every stamp noted. */
  reset(): void {
    this.maxWall = 0
    this.maxCounter = -1
    this.counterBits.fill(0)
  }
}

/**
 * The counter radix M of a delta (see the format above): the largest counter plus one, or 0 (two varints per stamp)
 * when there is no record stamp, when the largest one-varint stamp `(maxWall − baseWall + 1) × M × nPeers − 1` would
 * pass 2^53 − 1, or when `counterBits` says two varints are shorter.
 */
export function counterRadix(baseWall: number, stamps: StampRange, nPeers: number): number {
  if (stamps.maxCounter < 0 || nPeers === 0) return 0
  const m = stamps.maxCounter + 1
  // Each product is exact while below 2^53, and at least 2^53 (rounding is monotone) once the exact one is.
  const span = (stamps.maxWall - baseWall + 1) * m
  if (!(span < 2 ** 53 && span * nPeers < 2 ** 53)) return 0
  const bits = stamps.counterBits
  if (bits === undefined) return m
  // A wall offset's varint wastes as many high bits on average in either form, so one varint is shorter when the
  // counters' own varints (`counter × nPeers + peer`) take more bits on average than log2(M × nPeers).
  const peerBits = Math.log2(nPeers)
  let n = 0
  let twoVarintBits = 0
  for (let b = 0; b < bits.length; b++) {
    const k = bits[b]!
    n += k
    twoVarintBits += k * 7 * Math.max(1, Math.ceil((b + peerBits) / 7))
  }
  return twoVarintBits >= n * Math.log2(m * nPeers) ? m : 0
}

/**
 * A record stamp as format 2's one varint with radix `m` > 0 (see the format above). Throws InvalidArgumentError (a bug
 * in the encoder's bounds, never input) rather than write a stamp that does not round-trip.
 */
export function oneVarintStamp(offset: number, counter: number, peerIndex: number, m: number, nPeers: number): number {
  const x = (offset * m + counter) * nPeers + peerIndex
  if (counter >= m || !(x <= Number.MAX_SAFE_INTEGER) || offset < 0) {
    throw new InvalidArgumentError(`timestamp (offset ${offset}, counter ${counter}) outside the delta's stamp range (radix ${m})`)
  }
  return x
}

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
 * then {@link finish}. Every timestamp's peer must be in `peers` and every wall ≥ `baseWall`; every record stamp
 * (floor or field) within `stamps`, which sets the counter {@link radix} (see {@link counterRadix}).
 */
export class DeltaWriter {
  private readonly w: Writer
  private readonly nPeers: number
  /** The counter radix M (0: record stamps are two varints, as vector stamps). */
  readonly radix: number
  private prev = ''
  /**
   * The previous id as bytes `prevBuf[prevStart, prevEnd)` when it was written by {@link recordIdAt} and is ASCII
   * (then {@link prev} is stale).
   */
  private prevBuf: Uint8Array | undefined = undefined
  private prevStart = 0
  private prevEnd = 0

  constructor(
    private readonly peers: ReadonlyMap<string, number>,
    private readonly baseWall: number,
    private readonly names: ReadonlyMap<string, number>,
    from: ReadonlyMap<string, Timestamp>,
    to: ReadonlyMap<string, Timestamp>,
    stamps: StampRange,
    sizeHint = 0,
  ) {
    if (peers.size > MAX_DELTA_PEERS) throw new InvalidArgumentError(`a delta may name at most ${MAX_DELTA_PEERS} peers`)
    this.nPeers = peers.size
    this.radix = counterRadix(baseWall, stamps, peers.size)
    const w = (this.w = sizeHint > 1 << 16 ? new Writer(sizeHint) : scratch)
    w.pos = 0
    w.u8(DELTA_FORMAT_VERSION)
    w.uint(peers.size)
    for (const p of peers.keys()) w.string(p)
    w.uint(baseWall)
    w.uint(this.radix)
    w.uint(names.size)
    for (const n of names.keys()) w.string(n)
    this.vv(from)
    this.vv(to)
  }

  /** Writes a version vector; its stamps are two varints (`vts`). */
  private vv(vv: ReadonlyMap<string, Timestamp>): void {
    const w = this.w
    w.uint(vv.size)
    for (const ts of vv.values()) {
      w.uint(ts.wall - this.baseWall)
      w.uint(ts.counter * this.nPeers + this.peers.get(ts.peer)!)
    }
  }

  /** Writes a record timestamp (a floor or a field's). */
  ts(wall: number, counter: number, peer: string): void {
    this.tsAt(wall, counter, this.peers.get(peer)!)
  }

  /** {@link ts} with the peer given as its index in the peer table. */
  tsAt(wall: number, counter: number, peerIndex: number): void {
    const m = this.radix
    if (m > 0) this.w.uint(oneVarintStamp(wall - this.baseWall, counter, peerIndex, m, this.nPeers))
    else {
      this.w.uint(wall - this.baseWall)
      this.w.uint(counter * this.nPeers + peerIndex)
    }
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
    this.prevBuf = undefined
  }

  /** Starts a record: its id, its floor (`floorPeer` undefined: none) and the number of fields that follow. */
  record(id: string, floorWall: number, floorCounter: number, floorPeer: string | undefined, deleted: boolean, nFields: number): void {
    this.recordAt(id, floorWall, floorCounter, floorPeer === undefined ? -1 : this.peers.get(floorPeer)!, deleted, nFields)
  }

  /** {@link record} with the floor's peer as its index in the peer table (−1: no floor). */
  recordAt(id: string, floorWall: number, floorCounter: number, floorPeerIndex: number, deleted: boolean, nFields: number): void {
    const w = this.recordId(id)
    if (floorPeerIndex < 0) w.u8(0)
    else {
      w.u8(deleted ? 3 : 1)
      this.tsAt(floorWall, floorCounter, floorPeerIndex)
    }
    w.uint(nFields)
  }

  /**
   * Starts a record with its id alone, for an encoder that writes the rest (flags, floor, fields: see the format
   * above, with timestamps relative to {@link baseWall}, {@link radix} and {@link peerCount}, or written by
   * {@link tsAt}) itself; returns the writer to use.
   */
  recordId(id: string): Writer {
    const w = this.w
    const prev = this.prevBuf === undefined ? this.prev : decodeStringAt(this.prevBuf, this.prevStart, this.prevEnd)
    const shared = sharedPrefix(prev, id)
    w.uint(shared)
    w.string(shared === 0 ? id : id.slice(shared))
    this.prev = id
    this.prevBuf = undefined
    return w
  }

  /**
   * {@link recordId} with the id as its WTF-8 bytes (read them only until the next call). ASCII ids, the usual kind,
   * are written without making a string.
   */
  recordIdBytes(id: Uint8Array): Writer {
    return this.recordIdAt(id, 0, id.length)
  }

  /** {@link recordIdBytes} of the bytes `buf[start, end)`, without a view of them. */
  recordIdAt(buf: Uint8Array, start: number, end: number): Writer {
    let ascii = true
    for (let i = start; i < end && ascii; i++) ascii = buf[i]! < 0x80
    const prev = this.prevBuf
    // An ASCII id after another (or first in its collection): characters are bytes, no string is made.
    const first = prev === undefined && this.prev === ''
    if (!ascii || (prev === undefined && !first)) {
      this.recordId(decodeStringAt(buf, start, end))
      if (ascii) this.setPrev(buf, start, end)
      return this.w
    }
    let shared = 0
    if (prev !== undefined) {
      const ps = this.prevStart
      const n = Math.min(this.prevEnd - ps, end - start, 255)
      while (shared < n && prev[ps + shared] === buf[start + shared]) shared++
    }
    const w = this.w
    w.uint(shared)
    w.uint(end - start - shared)
    w.copy(buf, start + shared, end)
    this.setPrev(buf, start, end)
    return w
  }

  private setPrev(buf: Uint8Array, start: number, end: number): void {
    this.prevBuf = buf
    this.prevStart = start
    this.prevEnd = end
  }

  /** The base wall timestamps are written relative to. */
  get wallBase(): number {
    return this.baseWall
  }

  /** The number of peers in the peer table. */
  get peerCount(): number {
    return this.nPeers
  }

  /** Writes one field of the current record (`value` undefined: the field was removed). */
  field(name: string, value: Value | undefined, wall: number, counter: number, peer: string): void {
    this.w.uint(this.names.get(name)!)
    writeValue(this.w, value)
    this.ts(wall, counter, peer)
  }

  /** {@link field} with name and peer as table indexes and the value as its canonical bytes `src[start, end)`. */
  fieldAt(nameIndex: number, src: Uint8Array, start: number, end: number, wall: number, counter: number, peerIndex: number): void {
    const w = this.w
    w.uint(nameIndex)
    w.copy(src, start, end)
    this.tsAt(wall, counter, peerIndex)
  }

  /** The encoded bytes. */
  finish(): Uint8Array {
    const out = this.w.finish()
    if (this.w === scratch && out.length > 1 << 16) scratch = new Writer(4096) // keep the buffer for small live deltas, not for snapshots
    if (this.w === scratch) {
      this.prevBuf = undefined // a table's id arena
      holdShape(this)
    }
    return out
  }
}

/** Encodes a delta (or a full snapshot) in the format above. */
export function encodeDelta(delta: Delta): Uint8Array {
  const peers = new Map<string, number>()
  const names = new Map<string, number>()
  let baseWall = MAX_WALL
  const stamps = new StampStats()
  const seeTs = (ts: Timestamp): void => {
    if (!peers.has(ts.peer)) peers.set(ts.peer, peers.size)
    if (ts.wall < baseWall) baseWall = ts.wall
  }
  const seeRecordTs = (ts: Timestamp): void => {
    seeTs(ts)
    stamps.note(ts.wall, ts.counter)
  }
  const byCollection = new Map<string, RecordDelta[]>()
  for (const ts of delta.from.values()) seeTs(ts)
  for (const ts of delta.to.values()) seeTs(ts)
  for (const rd of delta.records) {
    let list = byCollection.get(rd.collection)
    if (!list) byCollection.set(rd.collection, (list = []))
    list.push(rd)
    if (rd.floor) seeRecordTs(rd.floor)
    for (const f of rd.fields) {
      seeRecordTs(f.ts)
      if (!names.has(f.name)) names.set(f.name, names.size)
    }
  }
  if (peers.size === 0) baseWall = 0
  const w = new DeltaWriter(peers, baseWall, names, delta.from, delta.to, stamps)
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
  return stampReaders(r, peers, baseWall)
}

/** Readers of timestamps and version vectors relative to a peer table and base wall already known (see {@link readStampTable}). */
export function stampReaders(r: Reader, peers: readonly string[], baseWall: number): StampReaders {
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
 * A record id as a delta spells it — the first `shared` characters of the previous id, then a suffix — kept as its
 * WTF-8 bytes `bytes[0, len)`; the string is made only when asked for. ASCII ids (characters are bytes) are read
 * without making any string.
 */
export class RecordId {
  bytes = new Uint8Array(64)
  len = 0
  /** Length in UTF-16 code units. */
  private chars = 0
  private str: string | undefined = ''
  private static readonly scratch = new Writer(64)

  constructor() {
    holdShape(this)
  }

  /** Forgets the previous id (a new collection starts). */
  reset(): void {
    this.len = 0
    this.chars = 0
    this.str = ''
  }

  /** Reads the next id (`uint shared, string suffix`); throws DecodeError when malformed or empty. */
  read(r: Reader): void {
    const shared = r.uint()
    if (shared > this.chars) throw new DecodeError(`record id prefix ${shared} longer than the previous id at byte ${r.pos}`)
    const n = r.uint()
    if (n > r.remaining) throw new DecodeError(`length ${n} exceeds the remaining ${r.remaining} bytes`)
    const buf = r.buf
    const from = r.pos
    let ascii = this.chars === this.len
    for (let i = from; i < from + n && ascii; i++) ascii = buf[i]! < 0x80
    if (ascii) {
      if (shared + n > this.bytes.length) {
        const bytes = new Uint8Array(Math.max(2 * this.bytes.length, shared + n))
        bytes.set(this.bytes.subarray(0, shared))
        this.bytes = bytes
      }
      const bytes = this.bytes
      for (let i = 0; i < n; i++) bytes[shared + i] = buf[from + i]!
      r.pos += n
      this.len = this.chars = shared + n
      this.str = undefined
    } else {
      const suffix = decodeString(r.raw(n))
      const id = shared === 0 ? suffix : this.string.slice(0, shared) + suffix
      const w = RecordId.scratch
      w.pos = 0
      w.string(id)
      let p = 0
      while (w.buffer[p++]! >= 0x80);
      if (w.pos - p > this.bytes.length) this.bytes = new Uint8Array(2 * (w.pos - p))
      this.bytes.set(w.buffer.subarray(p, w.pos))
      this.len = w.pos - p
      this.chars = id.length
      this.str = id
    }
    if (this.chars === 0) throw new DecodeError('delta names a record with an empty id')
  }

  /** The id. */
  get string(): string {
    return (this.str ??= decodeStringAt(this.bytes, 0, this.len))
  }
}

/** The timestamp {@link readWireStamp} read last: its peer is an index into the delta's peer table. */
export const wireStamp = { wall: -0, counter: -0, peer: 0 } // −0: doubles from the start (see record-table's doubles)

/**
 * Reads a timestamp into {@link wireStamp}: a record stamp with the delta's counter radix `radix` (see the format
 * above: one varint when it is > 0), a vector stamp (or any stamp of a version-1 delta) with `radix` 0; throws
 * DecodeError when it is out of range.
 */
export function readWireStamp(r: Reader, baseWall: number, nPeers: number, radix: number): void {
  let wall: number
  let counter: number
  let peer: number
  // Exact divisions (not Math.floor of a fraction), so code compiled for one-peer deltas stays valid for others; every
  // intermediate is an integer below 2^53.
  if (radix > 0) {
    const x = r.uint()
    peer = x % nPeers
    const y = (x - peer) / nPeers
    counter = y % radix
    wall = baseWall + (y - counter) / radix
  } else {
    wall = baseWall + r.uint()
    const x = r.uint()
    peer = x % nPeers
    counter = (x - peer) / nPeers
  }
  if (wall > MAX_WALL) throw new DecodeError(`timestamp wall ${wall} out of range at byte ${r.pos}`)
  if (!(peer >= 0) || counter > MAX_COUNTER) throw new DecodeError(`malformed timestamp at byte ${r.pos}`)
  wireStamp.wall = wall
  wireStamp.counter = counter
  wireStamp.peer = peer
  const max = stampMax
  if (max !== undefined) {
    const i = 2 * peer
    if (wall > max[i]! || (wall === max[i]! && counter > max[i + 1]!)) {
      max[i] = wall
      max[i + 1] = counter
    }
  }
}

/**
 * One record as {@link readDelta} hands it over. The arrays are reused from record to record: read them during the
 * call only. Field `k` is `names[k]`, `values[k]` (undefined: removed) at `(walls[k], counters[k], peers[k])`.
 * With `raw`, `values` stays empty: value `k` is instead the canonical bytes `vbuf[vs[k], ve[k])`.
 */
export interface RecordScratch {
  collection: string
  readonly id: string
  /** The floor's peer, or undefined when the record has no floor. */
  floorPeer: string | undefined
  /** The floor's peer as an index into the delta's peer table (−1: no floor). */
  floorPeerIndex: number
  floorWall: number
  floorCounter: number
  deleted: boolean
  n: number
  readonly names: string[]
  readonly values: (Value | undefined)[]
  readonly walls: number[]
  readonly counters: number[]
  readonly peers: string[]
  /** Field `k`'s name and peer as indexes into the delta's tables. */
  readonly nameIndexes: number[]
  readonly peerIndexes: number[]
  vbuf: Uint8Array
  readonly vs: number[]
  readonly ve: number[]
}

/** What {@link readDelta} may also do. */
export interface ReadDeltaOptions {
  /** Hand values over as canonical bytes (see {@link RecordScratch}) instead of decoded values. */
  readonly raw?: boolean
  /** Hears the delta's peer and field-name tables, its base wall and counter radix before the first record. */
  readonly onTables?: (peers: readonly string[], names: readonly string[], baseWall: number, radix: number) => void
  /**
   * Offered each record once its collection and id are read: returning true means it read the rest of the record
   * (flags, floor, fields) from `r` itself, with the same checks (see {@link readWireStamp}); false leaves `r` where
   * it was, and the record is read and handed to `onRecord` as usual.
   */
  readonly claim?: (collection: string, id: RecordId, r: Reader) => boolean
  /** Hears each collection's name and record count before its records (`r` is at the first of them). */
  readonly onCollection?: (collection: string, nRecords: number, r: Reader) => void
}

/**
 * The header of {@link encodeDelta}'s bytes: tables, base wall and vectors (checked). With `track`, `newest` is the
 * per-peer newest stamp of the delta (see {@link readDelta}), kept up to date from here on by {@link readWireStamp}.
 */
function readHeader(
  r: Reader,
  track: boolean,
): { peers: string[]; names: string[]; baseWall: number; radix: number; from: VersionVector; to: VersionVector; newest: Float64Array | undefined } {
  const version = r.u8()
  if (version !== DELTA_FORMAT_VERSION && version !== 1) {
    throw new DecodeError(`unsupported delta format version ${version} (this build reads 1 and ${DELTA_FORMAT_VERSION})`)
  }
  const peers = readPeerTable(r, 'delta')
  const newest = track ? new Float64Array(2 * peers.length).fill(-1) : undefined
  if (newest) stampMax = newest
  const baseWall = r.uint()
  if (baseWall > MAX_WALL) throw new DecodeError(`delta base wall ${baseWall} out of range`)
  // Version 1 has no radix: its record stamps are two varints, as radix 0 says.
  const radix = version === 1 ? 0 : r.uint()
  if (radix > MAX_COUNTER + 1) throw new DecodeError(`delta counter radix ${radix} out of range`)
  const nNames = r.count(1)
  const names: string[] = []
  for (let i = 0; i < nNames; i++) {
    const n = r.string()
    if (n === 'id') throw new DecodeError('delta field-name table names the reserved field "id"')
    names.push(n)
  }
  const nPeers = peers.length
  const ts = wireStamp
  const readVV = (): VersionVector => {
    const n = r.count(2, nPeers)
    const vv: VersionVector = new Map()
    for (let i = 0; i < n; i++) {
      readWireStamp(r, baseWall, nPeers, 0)
      const peer = peers[ts.peer]!
      if (vv.has(peer)) throw new DecodeError(`version vector names ${JSON.stringify(peer)} twice`)
      vv.set(peer, { wall: ts.wall, counter: ts.counter, peer })
    }
    return vv
  }
  const from = readVV()
  const to = readVV()
  return { peers, names, baseWall, radix, from, to, newest }
}

/**
 * Reads {@link encodeDelta}'s bytes record by record, without building a {@link Delta}: `onRecord` hears each record
 * (see {@link RecordScratch}); returns the vectors, and `newest`: per peer of the delta's peer table, the newest
 * timestamp the delta names (vectors included) as `[wall, counter]` (wall −1 for none). Throws {@link DecodeError} on
 * any malformed, truncated or trailing input — possibly after some records were handed over.
 */
export function readDelta(
  bytes: Uint8Array,
  onRecord: (rec: RecordScratch) => void,
  options: ReadDeltaOptions = {},
): { from: VersionVector; to: VersionVector; newest: Float64Array } {
  const outer = stampMax
  try {
    return readDeltaIn(bytes, onRecord, options)
  } finally {
    stampMax = outer // a delta read while this one was (from a callback) has its own
  }
}

/**
 * While a delta is read: per peer of its table, the newest `[wall, counter]` {@link readWireStamp} has read (every
 * timestamp of a delta goes through it, also those a `claim` reads).
 */
let stampMax: Float64Array | undefined

function readDeltaIn(
  bytes: Uint8Array,
  onRecord: (rec: RecordScratch) => void,
  options: ReadDeltaOptions,
): { from: VersionVector; to: VersionVector; newest: Float64Array } {
  const r = new Reader(bytes)
  const { peers, names, baseWall, radix, from, to, newest } = readHeader(r, true)
  const nPeers = peers.length
  const ts = wireStamp
  const readTs = (): void => readWireStamp(r, baseWall, nPeers, radix)
  options.onTables?.(peers, names, baseWall, radix)
  const raw = options.raw === true
  const vw = raw ? new Writer(256) : undefined
  const id = new RecordId()
  const rec: RecordScratch = {
    collection: '',
    get id(): string {
      return id.string
    },
    floorPeer: undefined,
    floorPeerIndex: -1,
    floorWall: 0,
    floorCounter: 0,
    deleted: false,
    n: 0,
    names: [],
    values: [],
    walls: [],
    counters: [],
    peers: [],
    nameIndexes: [],
    peerIndexes: [],
    vbuf: new Uint8Array(0),
    vs: [],
    ve: [],
  }
  const nColl = r.count(2)
  for (let c = 0; c < nColl; c++) {
    const collection = r.string()
    if (collection.length === 0) throw new DecodeError('delta names an empty collection')
    rec.collection = collection
    const nRecords = r.count(3)
    options.onCollection?.(collection, nRecords, r)
    id.reset()
    for (let i = 0; i < nRecords; i++) {
      id.read(r)
      if (options.claim?.(collection, id, r)) continue
      const flags = r.u8()
      if (flags > 3 || flags === 2) throw new DecodeError(`bad record flags ${flags} at byte ${r.pos - 1}`)
      if (flags & 1) {
        readTs()
        rec.floorPeer = peers[ts.peer]
        rec.floorPeerIndex = ts.peer
        rec.floorWall = ts.wall
        rec.floorCounter = ts.counter
      } else {
        rec.floorPeer = undefined
        rec.floorPeerIndex = -1
      }
      rec.deleted = flags === 3
      const nFields = r.count(3)
      rec.n = nFields
      if (vw) vw.pos = 0
      for (let k = 0; k < nFields; k++) {
        const ni = r.uint()
        const name = names[ni]
        if (name === undefined) throw new DecodeError(`field-name index out of range at byte ${r.pos}`)
        rec.names[k] = name
        rec.nameIndexes[k] = ni
        if (vw) {
          rec.vs[k] = vw.pos
          copyCanonicalValue(r, vw)
          rec.ve[k] = vw.pos
        } else rec.values[k] = readValue(r)
        readTs()
        rec.walls[k] = ts.wall
        rec.counters[k] = ts.counter
        rec.peers[k] = peers[ts.peer]!
        rec.peerIndexes[k] = ts.peer
      }
      // The writer's buffer itself (values lie in [0, pos)): a view per record would allocate.
      if (vw) rec.vbuf = vw.buffer
      onRecord(rec)
    }
    // Drop references to the last record's values so the scratch arrays keep nothing alive.
    rec.values.length = 0
  }
  if (!r.done) throw new DecodeError(`${r.remaining} trailing bytes after the delta`)
  return { from, to, newest: newest! }
}

/**
 * The newest timestamp {@link encodeDelta}'s bytes carry (a floor, a field write or a `to` entry), undefined for an
 * empty delta: what a receiver's clock must accept before it applies any of it. Reads (and so checks) the whole
 * delta; throws {@link DecodeError} on any malformed, truncated or trailing input.
 */
export function newestInDelta(bytes: Uint8Array): Timestamp | undefined {
  const r = new Reader(bytes)
  const { peers, names, baseWall, radix, to } = readHeader(r, false)
  const nPeers = peers.length
  const ts = wireStamp
  let wall = -1
  let counter = 0
  let peer = ''
  const see = (): void => {
    if (ts.wall > wall || (ts.wall === wall && (ts.counter > counter || (ts.counter === counter && peers[ts.peer]! > peer)))) {
      wall = ts.wall
      counter = ts.counter
      peer = peers[ts.peer]!
    }
  }
  // The record walk of readDelta, stepping over ids and values instead of handing records over.
  const id = new RecordId()
  const nColl = r.count(2)
  for (let c = 0; c < nColl; c++) {
    if (r.string().length === 0) throw new DecodeError('delta names an empty collection')
    const nRecords = r.count(3)
    id.reset()
    for (let i = 0; i < nRecords; i++) {
      id.read(r)
      const flags = r.u8()
      if (flags > 3 || flags === 2) throw new DecodeError(`bad record flags ${flags} at byte ${r.pos - 1}`)
      if (flags & 1) {
        readWireStamp(r, baseWall, nPeers, radix)
        see()
      }
      const nFields = r.count(3)
      for (let k = 0; k < nFields; k++) {
        if (r.uint() >= names.length) throw new DecodeError(`field-name index out of range at byte ${r.pos}`)
        copyCanonicalValue(r, undefined)
        readWireStamp(r, baseWall, nPeers, radix)
        see()
      }
    }
  }
  if (!r.done) throw new DecodeError(`${r.remaining} trailing bytes after the delta`)
  for (const e of to.values()) {
    ts.wall = e.wall
    ts.counter = e.counter
    ts.peer = peers.indexOf(e.peer)
    see()
  }
  return wall < 0 ? undefined : { wall, counter, peer }
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

