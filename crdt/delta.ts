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
import { DecodeError } from './errors.js'
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
  if (peers.size > MAX_DELTA_PEERS) throw new RangeError(`a delta may name at most ${MAX_DELTA_PEERS} peers`)
  if (peers.size === 0) baseWall = 0
  const nPeers = peers.size
  const w = scratch
  w.pos = 0
  const writeTs = (ts: Timestamp): void => {
    w.uint(ts.wall - baseWall)
    w.uint(ts.counter * nPeers + peers.get(ts.peer)!)
  }
  const writeVV = (vv: ReadonlyMap<string, Timestamp>): void => {
    w.uint(vv.size)
    for (const ts of vv.values()) writeTs(ts)
  }
  w.u8(DELTA_FORMAT_VERSION)
  w.uint(nPeers)
  for (const p of peers.keys()) w.string(p)
  w.uint(baseWall)
  w.uint(names.size)
  for (const n of names.keys()) w.string(n)
  writeVV(delta.from)
  writeVV(delta.to)
  w.uint(byCollection.size)
  for (const [collection, list] of byCollection) {
    w.string(collection)
    w.uint(list.length)
    let prev = ''
    for (const rd of list) {
      const shared = sharedPrefix(prev, rd.id)
      w.uint(shared)
      w.string(rd.id.slice(shared))
      prev = rd.id
      w.u8(rd.floor ? (rd.deleted ? 3 : 1) : 0)
      if (rd.floor) writeTs(rd.floor)
      w.uint(rd.fields.length)
      for (const f of rd.fields) {
        w.uint(names.get(f.name)!)
        writeValue(w, f.value)
        writeTs(f.ts)
      }
    }
  }
  const out = w.finish()
  if (out.length > 1 << 16) scratch = new Writer(4096) // keep the buffer for small live deltas, not for snapshots
  return out
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

/**
 * Reads a peer table and base wall (`uint n, n × string peer, uint baseWall`, with `between` read in between them,
 * e.g. a field-name table) and returns readers of timestamps relative to them (`uint wall − baseWall, uint counter ×
 * n + peerIndex`) and of version vectors (`uint k, k × ts`). Shared by the delta codec and the text delta codec;
 * errors name `what`.
 */
export function readStampTable(r: Reader, what: string, between?: () => void): StampReaders {
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
  const baseWall = r.uint()
  if (baseWall > MAX_WALL) throw new DecodeError(`${what} base wall ${baseWall} out of range`)
  between?.()
  const readTs = (): Timestamp => readStamp(baseWall + r.uint())
  const readStamp = (wall: number): Timestamp => {
    if (wall > MAX_WALL || wall < 0) throw new DecodeError(`timestamp wall ${wall} out of range at byte ${r.pos}`)
    const x = r.uint()
    const peer = peers[x % nPeers]
    const counter = Math.floor(x / nPeers)
    if (peer === undefined || counter > MAX_COUNTER) throw new DecodeError(`malformed timestamp at byte ${r.pos}`)
    return { wall, counter, peer }
  }
  const readVV = (): VersionVector => {
    const n = r.count(2, nPeers)
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

/** Decodes {@link encodeDelta}'s bytes; throws {@link DecodeError} on any malformed, truncated or trailing input. */
export function decodeDelta(bytes: Uint8Array): Delta {
  const r = new Reader(bytes)
  const version = r.u8()
  if (version !== DELTA_FORMAT_VERSION) {
    throw new DecodeError(`unsupported delta format version ${version} (this build reads ${DELTA_FORMAT_VERSION})`)
  }
  const names: string[] = []
  const { readTs, readVV } = readStampTable(r, 'delta', () => {
    const nNames = r.count(1)
    for (let i = 0; i < nNames; i++) {
      const n = r.string()
      if (n === 'id') throw new DecodeError('delta field-name table names the reserved field "id"')
      names.push(n)
    }
  })
  const from = readVV()
  const to = readVV()
  const records: RecordDelta[] = []
  const nColl = r.count(2)
  for (let c = 0; c < nColl; c++) {
    const collection = r.string()
    if (collection.length === 0) throw new DecodeError('delta names an empty collection')
    const nRecords = r.count(3)
    let prev = ''
    for (let i = 0; i < nRecords; i++) {
      const shared = r.uint()
      if (shared > prev.length) throw new DecodeError(`record id prefix ${shared} longer than the previous id at byte ${r.pos}`)
      const id = prev.slice(0, shared) + r.string()
      if (id.length === 0) throw new DecodeError('delta names a record with an empty id')
      prev = id
      const flags = r.u8()
      if (flags > 3 || flags === 2) throw new DecodeError(`bad record flags ${flags} at byte ${r.pos - 1}`)
      const floor = flags & 1 ? readTs() : undefined
      const nFields = r.count(3)
      const fields: FieldDelta[] = new Array(nFields)
      for (let k = 0; k < nFields; k++) {
        const name = names[r.uint()]
        if (name === undefined) throw new DecodeError(`field-name index out of range at byte ${r.pos}`)
        const value = readValue(r)
        fields[k] = { name, value, ts: readTs() }
      }
      records.push(floor ? { collection, id, floor, deleted: flags === 3, fields } : { collection, id, fields })
    }
  }
  if (!r.done) throw new DecodeError(`${r.remaining} trailing bytes after the delta`)
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

