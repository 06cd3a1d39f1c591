/**
 * The text delta: what TEXT messages (src/sync/protocol.ts) and the storage log carry for collaborative text fields.
 * Pure bytes: the Yjs update inside is opaque here, so this module never loads yjs.
 *
 * Format, version 1 (integers are unsigned LEB128 varints unless marked u8; strings as in crdt/delta.ts, WTF-8):
 *
 *   textDelta := u8 version=1
 *                uint session  uint index  uint count     one part of `count` (count = 1: whole, session 0)
 *                uint nPeers   nPeers × string            peer table
 *                uint baseWall                            smallest wall time in the delta
 *                vv from   vv to                          text version vectors: uint n, n × ts
 *                uint nDocs    nDocs × doc
 *   doc       := string collection  string id  string field
 *                uint nClients  nClients × runs             Yjs struct runs and their stamps, per Yjs client
 *   runs      := uint client  uint nRuns  nRuns × (int gap, uint len ≥ 1, int wallDelta, uint counter × nPeers + peerIndex)
 *                                                         the run's clock is the previous run's end + gap (the first
 *                                                         run's: gap), its wall the previous run's wall + wallDelta
 *                                                         (the first run's: baseWall + wallDelta); ints are zig-zag
 *                uint nDels  nDels × ts                   newest deleting transaction per origin (one per origin)
 *                bytes update                             a Yjs update (format v1) holding those runs' structs
 *   ts        := uint (wall − baseWall)  uint (counter × nPeers + peerIndex)
 *
 * Every count is checked against the bytes that remain and every index against its table, so malformed input fails
 * fast with {@link DecodeError}. `from`/`to` of the parts of one session are equal; a receiver raises its text vector
 * by them only once every part of the session has been applied (see the protocol spec).
 */
import { Reader, Writer } from '../../crdt/bytes.js'
import { DecodeError } from '../../crdt/errors.js'
import { readStampTable } from '../../crdt/delta.js'
import { type Timestamp, MAX_WALL, compareTimestamps } from '../../crdt/timestamp.js'

/** Version byte of the text delta format. */
export const TEXT_FORMAT_VERSION = 1
/** Largest Yjs client id (Yjs draws them as unsigned 32-bit integers). */
export const MAX_CLIENT = 2 ** 32 - 1

/** A run of one Yjs client's structs, `[clock, clock + len)`, written by one transaction stamped `ts`. */
export interface TextRun {
  readonly client: number
  readonly clock: number
  readonly len: number
  readonly ts: Timestamp
}

/** The part of one text field a delta carries. */
export interface TextDocDelta {
  readonly collection: string
  readonly id: string
  readonly field: string
  readonly runs: readonly TextRun[]
  /** Per origin, its newest transaction that deleted something in this field. */
  readonly dels: readonly Timestamp[]
  /** A Yjs update (v1) holding the runs' structs and a delete set. */
  readonly update: Uint8Array
}

/** A text delta, or one part of a multi-part session. */
export interface TextDelta {
  readonly session: number
  readonly index: number
  readonly count: number
  readonly from: ReadonlyMap<string, Timestamp>
  readonly to: ReadonlyMap<string, Timestamp>
  readonly docs: readonly TextDocDelta[]
}

/** Encodes a text delta in the format above. */
export function encodeTextDelta(d: TextDelta): Uint8Array {
  const peers = new Map<string, number>()
  let baseWall = MAX_WALL
  let size = 64
  const see = (ts: Timestamp): void => {
    if (!peers.has(ts.peer)) peers.set(ts.peer, peers.size)
    if (ts.wall < baseWall) baseWall = ts.wall
  }
  for (const ts of d.from.values()) see(ts)
  for (const ts of d.to.values()) see(ts)
  for (const doc of d.docs) {
    for (const r of doc.runs) see(r.ts)
    for (const ts of doc.dels) see(ts)
    size += doc.update.length + 24 * doc.runs.length + 12 * doc.dels.length + 3 * (doc.collection.length + doc.id.length + doc.field.length) + 16
  }
  if (peers.size === 0) baseWall = 0
  const n = peers.size
  const w = new Writer(size)
  const ts = (t: Timestamp): void => {
    w.uint(t.wall - baseWall)
    w.uint(t.counter * n + peers.get(t.peer)!)
  }
  const vv = (v: ReadonlyMap<string, Timestamp>): void => {
    w.uint(v.size)
    for (const t of v.values()) ts(t)
  }
  w.u8(TEXT_FORMAT_VERSION)
  w.uint(d.session)
  w.uint(d.index)
  w.uint(d.count)
  w.uint(n)
  for (const p of peers.keys()) w.string(p)
  w.uint(baseWall)
  vv(d.from)
  vv(d.to)
  w.uint(d.docs.length)
  for (const doc of d.docs) {
    w.string(doc.collection)
    w.string(doc.id)
    w.string(doc.field)
    const byClient = new Map<number, TextRun[]>()
    for (const r of doc.runs) {
      let list = byClient.get(r.client)
      if (!list) byClient.set(r.client, (list = []))
      list.push(r)
    }
    w.uint(byClient.size)
    for (const [client, list] of byClient) {
      w.uint(client)
      w.uint(list.length)
      let end = 0
      let wall = baseWall
      for (const r of list) {
        w.int(r.clock - end)
        w.uint(r.len)
        w.int(r.ts.wall - wall)
        w.uint(r.ts.counter * n + peers.get(r.ts.peer)!)
        end = r.clock + r.len
        wall = r.ts.wall
      }
    }
    w.uint(doc.dels.length)
    for (const t of doc.dels) ts(t)
    w.bytes(doc.update)
  }
  return w.finish()
}

/** Decodes {@link encodeTextDelta}'s bytes; throws {@link DecodeError} on any malformed, truncated or trailing input. */
export function decodeTextDelta(bytes: Uint8Array): TextDelta {
  const r = new Reader(bytes)
  const version = r.u8()
  if (version !== TEXT_FORMAT_VERSION) throw new DecodeError(`unsupported text delta format version ${version} (this build reads ${TEXT_FORMAT_VERSION})`)
  const session = r.uint()
  const index = r.uint()
  const count = r.uint()
  if (count < 1 || index >= count || (count === 1 && session !== 0)) throw new DecodeError(`bad text delta part ${index} of ${count} (session ${session})`)
  const { readTs: ts, readVV: vv, baseWall, readStamp: stampAt } = readStampTable(r, 'text delta')
  const from = vv()
  const to = vv()
  const nDocs = r.count(7)
  const docs: TextDocDelta[] = []
  for (let i = 0; i < nDocs; i++) {
    const collection = r.string()
    const id = r.string()
    const field = r.string()
    if (collection.length === 0 || id.length === 0) throw new DecodeError('text delta names an empty collection or record id')
    const nClients = r.count(2)
    const runs: TextRun[] = []
    for (let c = 0; c < nClients; c++) {
      const client = r.uint()
      if (client > MAX_CLIENT) throw new DecodeError(`bad text run client ${client} at byte ${r.pos}`)
      const nRuns = r.count(4)
      let end = 0
      let wall = baseWall
      for (let k = 0; k < nRuns; k++) {
        const clock = end + r.int()
        const len = r.uint()
        wall += r.int()
        if (clock < 0 || len < 1 || !Number.isSafeInteger(clock + len)) throw new DecodeError(`bad text run (clock ${clock}, length ${len}) at byte ${r.pos}`)
        runs.push({ client, clock, len, ts: stampAt(wall) })
        end = clock + len
      }
    }
    const nDels = r.count(2)
    const dels: Timestamp[] = []
    const origins = new Set<string>()
    for (let k = 0; k < nDels; k++) {
      const t = ts()
      if (origins.has(t.peer)) throw new DecodeError(`text deletions name ${JSON.stringify(t.peer)} twice`)
      origins.add(t.peer)
      dels.push(t)
    }
    docs.push({ collection, id, field, runs, dels, update: r.bytes() })
  }
  if (!r.done) throw new DecodeError(`${r.remaining} trailing bytes after the text delta`)
  return { session, index, count, from, to, docs }
}

/** The newest timestamp a text delta carries (the receiver's clock must accept it before anything is applied). */
export function newestTextTimestamp(d: TextDelta): Timestamp | undefined {
  let max: Timestamp | undefined
  const see = (t: Timestamp): void => {
    if (!max || compareTimestamps(t, max) > 0) max = t
  }
  for (const doc of d.docs) {
    for (const r of doc.runs) see(r.ts)
    for (const t of doc.dels) see(t)
  }
  for (const t of d.to.values()) see(t)
  return max
}
