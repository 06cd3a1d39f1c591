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
 * Format 2, on the wire only (never stored): the same delta written against the tables of a *base*, an earlier
 * delta the receiver has told the sender it holds (protocol.ts, TEXT_ACK_TO), so a keystroke does not spell out its
 * writer's id, its wall time and its field's names again:
 *
 *   textDelta := u8 version=2  u32 base                  the base's fingerprint (protocol.ts textFingerprint), big-endian
 *                u8 flags                                bit 0: a part (session, index, count follow; else a whole
 *                                                        delta, session 0); bit 1: `from` is left out, it is the
 *                                                        base's `to`; bit 2: `to` is left out, it is per origin the
 *                                                        newest stamp of the delta's runs and deletions; others 0
 *                [uint session  uint index  uint count]
 *                uint nAdded  nAdded × string            peers appended to the base's peer table
 *                int (baseWall − the base's baseWall)
 *                [vv from]  [vv to]  uint nDocs  nDocs × doc  as in format 1, except:
 *   doc       := uint ref (ref > 0: the base's document ref − 1; 0: string collection  string id  string field, appended)
 *                ... runs as in format 1, each `uint client` replaced by a ref to the client table the same way
 *
 * The tables a delta leaves: format 1, its peers in first-use order (from, to, then per document its runs and
 * deletions, as decoded), its documents in order, its Yjs clients in first-use order, its baseWall and its `to`;
 * format 2, the base's with the appended entries, and its own baseWall and `to`. Each table of a format-2 delta holds at most
 * {@link MAX_TEXT_TABLE} entries (more is malformed; a sender writes format 1 instead). A receiver that no longer
 * holds the base cannot read the delta, and says so with a TEXT_REQUEST (it is not malformed).
 *
 * Every count is checked against the bytes that remain and every index against its table, so malformed input fails
 * fast with {@link DecodeError}. `from`/`to` of the parts of one session are equal; a receiver raises its text vector
 * by them only once every part of the session has been applied (see the protocol spec).
 */
import { Reader, Writer } from '../../crdt/bytes.js'
import { DecodeError } from '../../crdt/errors.js'
import { readStampTable, stampReaders } from '../../crdt/delta.js'
import { type Timestamp, MAX_WALL, compareTimestamps, invalidPeerReason } from '../../crdt/timestamp.js'

/** Version byte of the text delta format. */
export const TEXT_FORMAT_VERSION = 1
/** Version byte of a text delta written against a base the receiver holds (format 2, on the wire only). */
export const TEXT_FORMAT_ON_BASE = 2
/** Most entries of each table a format-2 delta may build (peers, documents, clients). */
export const MAX_TEXT_TABLE = 64
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

/** The names of a text field. */
export interface TextDocName {
  readonly collection: string
  readonly id: string
  readonly field: string
}

/**
 * What a text delta leaves for a later format-2 delta to name by index: its peer table, its documents and Yjs
 * clients (in the order the format defines), and its base wall time.
 */
export interface TextTables {
  readonly peers: readonly string[]
  readonly docs: readonly TextDocName[]
  readonly clients: readonly number[]
  readonly baseWall: number
  /** The delta's `to` vector. */
  readonly to: ReadonlyMap<string, Timestamp>
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

/** Encodes a text delta in the format above (version 1, self-contained). */
export function encodeTextDelta(d: TextDelta): Uint8Array {
  const peers = new Map<string, number>()
  for (const t of stamps(d)) if (!peers.has(t.peer)) peers.set(t.peer, peers.size)
  const w = new Writer(sizeHint(d))
  w.u8(TEXT_FORMAT_VERSION)
  w.uint(d.session)
  w.uint(d.index)
  w.uint(d.count)
  w.uint(peers.size)
  for (const p of peers.keys()) w.string(p)
  const baseWall = peers.size === 0 ? 0 : minWall(d)
  w.uint(baseWall)
  writeBody(w, d, peers, baseWall, false, false, (doc) => {
    w.string(doc.collection)
    w.string(doc.id)
    w.string(doc.field)
  }, (client) => w.uint(client))
  return w.finish()
}

/**
 * Encodes a text delta against the tables of a base delta that the receiver holds (format 2, see above); undefined
 * when the tables it would make outgrow {@link MAX_TEXT_TABLE} (send it in format 1 then).
 */
export function encodeTextDeltaOn(d: TextDelta, baseFingerprint: number, base: TextTables): { bytes: Uint8Array; tables: TextTables } | undefined {
  if (d.count > 1 && d.session === 0) return undefined // format 2 tells a whole delta by session 0
  const peers = new Map<string, number>(base.peers.map((p, i) => [p, i]))
  const added: string[] = []
  for (const t of stamps(d)) {
    if (peers.has(t.peer)) continue
    peers.set(t.peer, peers.size)
    added.push(t.peer)
  }
  if (peers.size > MAX_TEXT_TABLE) return undefined
  const docIndex = new Map<string, number>()
  base.docs.forEach((doc, i) => docIndex.set(docKey(doc), i))
  const docs = [...base.docs]
  const clients = [...base.clients]
  const clientIndex = new Map<number, number>(clients.map((c, i) => [c, i]))
  const w = new Writer(sizeHint(d) + 8)
  const omitFrom = sameVector(d.from, base.to)
  const omitTo = sameVector(d.to, newestPerOrigin(d.docs))
  w.u8(TEXT_FORMAT_ON_BASE)
  for (const shift of [24, 16, 8, 0]) w.u8((baseFingerprint >>> shift) & 0xff)
  w.u8((d.count === 1 ? 0 : 1) | (omitFrom ? 2 : 0) | (omitTo ? 4 : 0))
  if (d.count !== 1) {
    w.uint(d.session)
    w.uint(d.index)
    w.uint(d.count)
  }
  w.uint(added.length)
  for (const p of added) w.string(p)
  const baseWall = peers.size === 0 ? 0 : minWall(d)
  w.int(baseWall - base.baseWall)
  writeBody(w, d, peers, baseWall, omitFrom, omitTo, (doc) => {
    const known = docIndex.get(docKey(doc))
    if (known !== undefined) return w.uint(known + 1)
    w.uint(0)
    w.string(doc.collection)
    w.string(doc.id)
    w.string(doc.field)
    const name = { collection: doc.collection, id: doc.id, field: doc.field }
    docIndex.set(docKey(name), docs.length)
    docs.push(name)
  }, (client) => {
    const known = clientIndex.get(client)
    if (known !== undefined) return w.uint(known + 1)
    w.uint(0)
    w.uint(client)
    clientIndex.set(client, clients.length)
    clients.push(client)
  })
  if (docs.length > MAX_TEXT_TABLE || clients.length > MAX_TEXT_TABLE) return undefined
  const same = added.length === 0 && docs.length === base.docs.length && clients.length === base.clients.length
  const tables: TextTables = same ? { ...base, baseWall, to: d.to } : { peers: [...peers.keys()], docs, clients, baseWall, to: d.to }
  return { bytes: w.finish(), tables }
}

/** The timestamps of a delta in the order its peer table lists their peers. */
function* stamps(d: TextDelta): Iterable<Timestamp> {
  yield* d.from.values()
  yield* d.to.values()
  for (const doc of d.docs) {
    yield* doc.runs.map((r) => r.ts)
    yield* doc.dels
  }
}

function minWall(d: TextDelta): number {
  let baseWall = MAX_WALL
  for (const t of stamps(d)) if (t.wall < baseWall) baseWall = t.wall
  return baseWall
}

function sizeHint(d: TextDelta): number {
  let size = 64
  for (const doc of d.docs) size += doc.update.length + 24 * doc.runs.length + 12 * doc.dels.length + 3 * (doc.collection.length + doc.id.length + doc.field.length) + 16
  return size
}

function docKey(doc: TextDocName): string {
  return `${doc.collection.length}:${doc.collection}${doc.id.length}:${doc.id}${doc.field}`
}

/** Writes `vv from  vv to  uint nDocs  nDocs × doc` (the part both formats share), naming docs and clients as told. */
function writeBody(
  w: Writer,
  d: TextDelta,
  peers: ReadonlyMap<string, number>,
  baseWall: number,
  omitFrom: boolean,
  omitTo: boolean,
  writeDoc: (doc: TextDocDelta) => void,
  writeClient: (client: number) => void,
): void {
  const n = peers.size
  const ts = (t: Timestamp): void => {
    w.uint(t.wall - baseWall)
    w.uint(t.counter * n + peers.get(t.peer)!)
  }
  const vv = (v: ReadonlyMap<string, Timestamp>): void => {
    w.uint(v.size)
    for (const t of v.values()) ts(t)
  }
  if (!omitFrom) vv(d.from)
  if (!omitTo) vv(d.to)
  w.uint(d.docs.length)
  for (const doc of d.docs) {
    writeDoc(doc)
    const byClient = new Map<number, TextRun[]>()
    for (const r of doc.runs) {
      let list = byClient.get(r.client)
      if (!list) byClient.set(r.client, (list = []))
      list.push(r)
    }
    w.uint(byClient.size)
    for (const [client, list] of byClient) {
      writeClient(client)
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
}

/** Decodes {@link encodeTextDelta}'s bytes; throws {@link DecodeError} on any malformed, truncated or trailing input. */
export function decodeTextDelta(bytes: Uint8Array): TextDelta {
  const r = new Reader(bytes)
  const version = r.u8()
  if (version !== TEXT_FORMAT_VERSION) throw new DecodeError(`unsupported text delta format version ${version} (this build reads ${TEXT_FORMAT_VERSION} here)`)
  const session = r.uint()
  const index = r.uint()
  const count = r.uint()
  checkPart(session, index, count)
  const { readTs, readVV, baseWall, readStamp } = readStampTable(r, 'text delta')
  const body = readBody(r, readTs, readVV, baseWall, readStamp, undefined, false, () => ({ collection: r.string(), id: r.string(), field: r.string() }), () => r.uint())
  return { session, index, count, ...body }
}

/**
 * Decodes a text delta of either format with the tables it leaves for later ones; a format-2 delta whose base
 * `base(fingerprint)` does not know gives undefined (nothing malformed: the receiver no longer holds that base).
 * Throws {@link DecodeError} on malformed input.
 */
export function decodeTextDeltaOn(bytes: Uint8Array, base: (fingerprint: number) => TextTables | undefined): { delta: TextDelta; tables: TextTables } | undefined {
  if (bytes[0] !== TEXT_FORMAT_ON_BASE) {
    const delta = decodeTextDelta(bytes)
    return { delta, tables: tablesOf(delta) }
  }
  const r = new Reader(bytes)
  r.pos = 1
  const fingerprint = ((r.u8() << 24) | (r.u8() << 16) | (r.u8() << 8) | r.u8()) >>> 0
  const flags = r.u8()
  if (flags > 7) throw new DecodeError(`bad text delta flags ${flags}`)
  const session = flags & 1 ? r.uint() : 0
  const index = flags & 1 ? r.uint() : 0
  const count = flags & 1 ? r.uint() : 1
  checkPart(session, index, count)
  const nAdded = r.count(2, MAX_TEXT_TABLE)
  const added: string[] = []
  for (let i = 0; i < nAdded; i++) {
    const p = r.string()
    const bad = invalidPeerReason(p)
    if (bad) throw new DecodeError(`text delta peer table: ${bad}`)
    added.push(p)
  }
  const wallShift = r.int()
  const tables = base(fingerprint)
  if (!tables) return undefined
  const peers = [...tables.peers, ...added]
  if (peers.length > MAX_TEXT_TABLE || new Set(peers).size !== peers.length) throw new DecodeError('text delta peer table: too long, or a peer named twice')
  const baseWall = tables.baseWall + wallShift
  if (baseWall < 0 || baseWall > MAX_WALL) throw new DecodeError(`text delta base wall ${baseWall} out of range`)
  const { readTs, readVV, readStamp } = stampReaders(r, peers, baseWall)
  const docs = [...tables.docs]
  const clients = [...tables.clients]
  const ref = <T>(list: T[], what: string, fresh: () => T): T => {
    const i = r.uint()
    if (i === 0) {
      if (list.length >= MAX_TEXT_TABLE) throw new DecodeError(`text delta ${what} table: more than ${MAX_TEXT_TABLE}`)
      const v = fresh()
      list.push(v)
      return v
    }
    const v = list[i - 1]
    if (v === undefined) throw new DecodeError(`text delta names ${what} ${i - 1} of ${list.length} at byte ${r.pos}`)
    return v
  }
  const body = readBody(r, readTs, readVV, baseWall, readStamp, flags & 2 ? new Map(tables.to) : undefined, (flags & 4) !== 0, () => ref(docs, 'document', () => ({ collection: r.string(), id: r.string(), field: r.string() })), () => ref(clients, 'client', () => r.uint()))
  const same = added.length === 0 && docs.length === tables.docs.length && clients.length === tables.clients.length
  return { delta: { session, index, count, ...body }, tables: same ? { ...tables, baseWall, to: body.to } : { peers, docs, clients, baseWall, to: body.to } }
}

function checkPart(session: number, index: number, count: number): void {
  if (count < 1 || index >= count || (count === 1 && session !== 0)) throw new DecodeError(`bad text delta part ${index} of ${count} (session ${session})`)
}

/** Reads what {@link writeBody} wrote. */
function readBody(
  r: Reader,
  ts: () => Timestamp,
  vv: () => Map<string, Timestamp>,
  baseWall: number,
  stampAt: (wall: number) => Timestamp,
  givenFrom: Map<string, Timestamp> | undefined,
  deriveTo: boolean,
  readDoc: () => TextDocName,
  readClient: () => number,
): Pick<TextDelta, 'from' | 'to' | 'docs'> {
  const from = givenFrom ?? vv()
  const readTo = deriveTo ? undefined : vv()
  const nDocs = r.count(7)
  const docs: TextDocDelta[] = []
  for (let i = 0; i < nDocs; i++) {
    const { collection, id, field } = readDoc()
    if (collection.length === 0 || id.length === 0) throw new DecodeError('text delta names an empty collection or record id')
    const nClients = r.count(2)
    const runs: TextRun[] = []
    for (let c = 0; c < nClients; c++) {
      const client = readClient()
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
  return { from, to: readTo ?? newestPerOrigin(docs), docs }
}

/**
 * The tables a format-1 delta leaves for later ones: its peers in first-use order ({@link stamps}), its documents
 * and Yjs clients in order, and its base wall time.
 */
export function tablesOf(d: TextDelta): TextTables {
  const peers: string[] = []
  const seen = new Set<string>()
  for (const t of stamps(d)) {
    if (seen.has(t.peer)) continue
    seen.add(t.peer)
    peers.push(t.peer)
  }
  const clients: number[] = []
  const known = new Set<number>()
  for (const doc of d.docs) {
    for (const r of doc.runs) {
      if (known.has(r.client)) continue
      known.add(r.client)
      clients.push(r.client)
    }
  }
  return { peers, docs: d.docs.map((doc) => ({ collection: doc.collection, id: doc.id, field: doc.field })), clients, baseWall: peers.length === 0 ? 0 : minWall(d), to: d.to }
}

/** Per origin, the newest stamp of the runs and deletions of `docs` (in first-use order). */
function newestPerOrigin(docs: readonly TextDocDelta[]): Map<string, Timestamp> {
  const out = new Map<string, Timestamp>()
  const see = (t: Timestamp): void => {
    const known = out.get(t.peer)
    if (!known || compareTimestamps(t, known) > 0) out.set(t.peer, t)
  }
  for (const doc of docs) {
    for (const r of doc.runs) see(r.ts)
    for (const t of doc.dels) see(t)
  }
  return out
}

function sameVector(a: ReadonlyMap<string, Timestamp>, b: ReadonlyMap<string, Timestamp>): boolean {
  if (a.size !== b.size) return false
  for (const [origin, t] of a) {
    const u = b.get(origin)
    if (!u || compareTimestamps(t, u) !== 0) return false
  }
  return true
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
