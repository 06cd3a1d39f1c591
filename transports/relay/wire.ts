/**
 * The relay wire format, and its codec: the one implementation of it, used by the relay client (./transport.ts) and
 * the relay server (src/server/relay.ts). This comment is the specification. Binary WebSocket messages on a syncmesh
 * server are this protocol; text messages on the same server are y-webrtc signaling (src/server/signaling.ts).
 *
 * ## Versions
 *
 * The first byte of every message is its protocol version: 1 or 2 ({@link RELAY_MIN_PROTOCOL_VERSION} ..
 * {@link RELAY_PROTOCOL_VERSION}). Version 2 is every op below; version 1 is the same without the store ops (PUT,
 * FETCH, COMPACT and their answers) and without the token field of JOIN. A server speaks both: it answers each
 * connection in the version of its first message, and never sends a version-1 connection a version-2 op. A client
 * sends version 2; when a server closes with 1008 "unsupported relay protocol version 2" before WELCOME, the client
 * joins that server with version-1 messages from then on, without store and token.
 *
 * ## Layout
 *
 * Every integer is big-endian.
 *
 * ```
 * message = version:u8 op{1..1024}        one or more ops; an op never straddles two messages
 * str     = len:u8 (1..255) utf8[len]     well-formed UTF-8, never empty (topics, peer ids)
 * text    = len:u8 (0..255) utf8[len]     may be empty (error messages)
 * bytes   = len:u32 raw[len]              opaque payload (a transport frame, a stored blob)
 * token   = len:u16 (0..4096) raw[len]    v2 only; empty when the client has none
 * u64     = hi:u32 lo:u32                 at most 2^53 − 1
 *
 * client → server                             server → client
 * 0x01 JOIN      topic:str peer:str           0x81 WELCOME  maxMessageBytes:u32 opsPerSecond:u32 opsBurst:u32
 *                [v2: token]                                bytesPerSecond:u32 bytesBurst:u32 maxOps:u16
 * 0x02 LEAVE                                  0x82 PEERS    count:u16 peer:str{count}
 * 0x03 SEND      to:str payload:bytes         0x83 UP       peer:str
 * 0x04 BROADCAST payload:bytes                0x84 DOWN     peer:str
 * 0x05 PING      nonce:u32                    0x85 FROM     from:str payload:bytes
 *                                             0x86 PONG     nonce:u32
 *                                             0x87 ERROR    code:u16 message:text
 * v2 store ops:
 * 0x06 PUT       id:u32 blob:bytes            0x88 STORE     storeId:str head:u64 bytes:u64
 * 0x07 FETCH     id:u32 after:u64             0x89 STORED    id:u32 seq:u64 bytes:u64
 * 0x08 COMPACT   id:u32 upto:u64 part:u16     0x8A BLOB      id:u32 seq:u64 blob:bytes
 *                count:u16 blob:bytes         0x8B FETCHED   id:u32 upto:u64 more:u8 bytes:u64
 *                                             0x8C COMPACTED id:u32 applied:u8 bytes:u64
 * ```
 *
 * ## Flow
 *
 * - A connection is in at most one room at a time. `JOIN(topic, peer[, token])` enters room `topic` (opaque to the
 *   server) as `peer`. On success the server answers `WELCOME(limits)`, then — on a v2 connection to a server that
 *   keeps a store — `STORE(storeId, head, bytes)` (the store's id, the room's newest sequence number and stored
 *   bytes), then zero or more `PEERS` ops listing the peers already there (their union is the list), and sends
 *   `UP(peer)` to each of them. When the peer id is already taken in that room, or the room is full, the server
 *   answers `ERROR` (1 = PEER_ID_IN_USE, 2 = ROOM_FULL), the connection stays open and not joined, and the client
 *   may retry later. A server with an access check answers a refused JOIN with `ERROR(3 = ACCESS_DENIED)` and closes
 *   the connection (1008).
 * - `SEND(to, payload)` is delivered as `FROM(sender, payload)` to `to` when it is in the same room; otherwise it is
 *   silently dropped. `BROADCAST(payload)` is delivered as `FROM` to every other peer of the room. Never to the sender.
 * - `LEAVE` (or closing the socket) removes the peer: every remaining peer gets `DOWN(peer)`.
 * - Ordering: ops from one message are handled in order, and everything the server sends one connection keeps the
 *   order it was produced in. A client never receives `FROM(p)` before `UP(p)`/`PEERS` listed p, nor after `DOWN(p)`.
 * - Delivery is best-effort: the server drops `FROM` ops to a receiver whose outgoing buffer is full, and
 *   disconnects a receiver whose buffer stays full (a slow consumer; the client reconnects and resyncs).
 * - `PING(nonce)` is answered by `PONG(nonce)`; clients without WebSocket-level pings (browsers) use it to detect a
 *   dead server. The server pings every connection at WebSocket level and drops those silent for two intervals.
 *
 * ## Store (v2, only inside a room, only on a server started with a store; the room is the joined topic)
 *
 * - The server keeps, per room, an append-only sequence of opaque blobs numbered 1, 2, 3… (`seq`); it never reads
 *   them. A blob starts with 0xB0 (plain) or 0xB1 (sealed with the room key); anything else is a malformed upload.
 * - `PUT(id, blob)` appends a blob; `STORED(id, seq, bytes)` answers it **once the blob is durable** (LevelDB: an
 *   fsynced write; Redis: the server's reply). That is an *acknowledged upload*: it survives a crash of the server
 *   process. PUTs of one connection are stored and answered in order.
 * - `FETCH(id, after)` streams the blobs with `seq > after`, oldest first, as `BLOB(id, seq, blob)` ops, then
 *   `FETCHED(id, upto, more, bytes)`: everything up to `upto` was sent; with `more = 1` the client asks again from
 *   `upto` (one answer holds about `maxMessageBytes` of blobs). A client keeps `upto` as its cursor for this store.
 * - `COMPACT(id, upto, part, count, blob)` — parts 0..count−1 sent in order — replaces every blob with `seq ≤ upto`
 *   by the `count` blobs, which take sequence number `upto` (a member's snapshot of everything up to there).
 *   `COMPACTED(id, applied, bytes)` answers once durable; `applied = 0` when a compaction up to `upto` or later was
 *   already done (nothing changed). A client whose cursor is ≥ `upto` never receives the snapshot again.
 * - Refusals close the connection after `ERROR`: 4 = STORE_FULL (the store's total limit), 5 = QUOTA_EXCEEDED (the
 *   room's limit; a compaction that shrinks the room is always allowed), 6 = MALFORMED_UPLOAD, 7 = STORE_FAILED (the
 *   server's store failed; retry later). A store op on a server without a store, or outside a room, is a protocol
 *   violation (1008).
 *
 * ## Limits
 *
 * Hard limits; `WELCOME` tells the client the values in force, so a well-behaved client paces itself within them.
 * - A client message is at most `maxMessageBytes` (else the server closes with 1009) and at most 1024 ops
 *   ({@link RELAY_MAX_OPS}); a topic or peer id at most 255 UTF-8 bytes, a token at most 4096 bytes.
 * - Per connection, two token buckets: ops (`opsPerSecond`, capacity `opsBurst`; a text message counts as one op)
 *   and bytes (`bytesPerSecond`, capacity `bytesBurst`). Exceeding either closes the connection with 1008.
 * - A message the server cannot decode — unknown version byte, unknown op, truncated field, empty or invalid UTF-8
 *   string, trailing bytes, zero ops, SEND/BROADCAST/store ops outside a room, JOIN inside one — closes that
 *   connection with 1008. It never affects other connections. Server → client messages may exceed `maxMessageBytes`
 *   by the length of one peer id (a FROM op carries the sender's id where SEND carried the receiver's), and a BLOB
 *   holds one whole stored blob.
 * - A client that cannot decode a server message closes the connection and reconnects (with backoff).
 * - The decoders are total: they return the ops or throw {@link RelayProtocolError}, with work and allocation bounded
 *   by the message length and the op limit.
 */
import { TransportError } from '../errors.js'

const EMPTY = new Uint8Array(0)

/** The version byte this build sends (servers also accept and answer version 1). */
export const RELAY_PROTOCOL_VERSION = 2
/** The oldest version byte a server of this build still speaks. */
export const RELAY_MIN_PROTOCOL_VERSION = 1
/** Longest access token in a JOIN, in bytes. */
export const RELAY_MAX_TOKEN_BYTES = 4096
/** Most ops in one message. */
export const RELAY_MAX_OPS = 1024
/** Longest topic or peer id, in UTF-8 bytes. */
export const RELAY_MAX_ID_BYTES = 255

/** Op codes of the relay protocol. */
export const RelayOp = {
  JOIN: 0x01,
  LEAVE: 0x02,
  SEND: 0x03,
  BROADCAST: 0x04,
  PING: 0x05,
  PUT: 0x06,
  FETCH: 0x07,
  COMPACT: 0x08,
  WELCOME: 0x81,
  PEERS: 0x82,
  UP: 0x83,
  DOWN: 0x84,
  FROM: 0x85,
  PONG: 0x86,
  ERROR: 0x87,
  STORE: 0x88,
  STORED: 0x89,
  BLOB: 0x8a,
  FETCHED: 0x8b,
  COMPACTED: 0x8c,
} as const

/** Codes of the non-fatal `ERROR` op (fatal problems close the WebSocket with 1008 / 1009 instead). */
export const RelayErrorCode = {
  PEER_ID_IN_USE: 1,
  ROOM_FULL: 2,
  /** The server's access check refused the JOIN; the connection is closed. */
  ACCESS_DENIED: 3,
  /** The store is at its total limit; the connection is closed. */
  STORE_FULL: 4,
  /** The room is at its stored-bytes limit; the connection is closed. */
  QUOTA_EXCEEDED: 5,
  /** An upload that is not a blob (or a COMPACT out of order); the connection is closed. */
  MALFORMED_UPLOAD: 6,
  /** The server's store failed; the connection is closed (retry later). */
  STORE_FAILED: 7,
} as const

/** The limits a server announces in `WELCOME`. */
export interface RelayLimits {
  readonly maxMessageBytes: number
  readonly opsPerSecond: number
  readonly opsBurst: number
  readonly bytesPerSecond: number
  readonly bytesBurst: number
  readonly maxOps: number
}

/** An op a client sends. */
export type RelayClientOp =
  | { readonly op: 'join'; readonly topic: string; readonly peer: string; readonly token?: Uint8Array }
  | { readonly op: 'leave' }
  | { readonly op: 'send'; readonly to: string; readonly payload: Uint8Array }
  | { readonly op: 'broadcast'; readonly payload: Uint8Array }
  | { readonly op: 'ping'; readonly nonce: number }
  | { readonly op: 'put'; readonly id: number; readonly blob: Uint8Array }
  | { readonly op: 'fetch'; readonly id: number; readonly after: number }
  | { readonly op: 'compact'; readonly id: number; readonly upto: number; readonly part: number; readonly count: number; readonly blob: Uint8Array }

/** An op a server sends. */
export type RelayServerOp =
  | { readonly op: 'welcome'; readonly limits: RelayLimits }
  | { readonly op: 'peers'; readonly peers: readonly string[] }
  | { readonly op: 'up'; readonly peer: string }
  | { readonly op: 'down'; readonly peer: string }
  | { readonly op: 'from'; readonly from: string; readonly payload: Uint8Array }
  | { readonly op: 'pong'; readonly nonce: number }
  | { readonly op: 'error'; readonly code: number; readonly message: string }
  | { readonly op: 'store'; readonly storeId: string; readonly head: number; readonly bytes: number }
  | { readonly op: 'stored'; readonly id: number; readonly seq: number; readonly bytes: number }
  | { readonly op: 'blob'; readonly id: number; readonly seq: number; readonly blob: Uint8Array }
  | { readonly op: 'fetched'; readonly id: number; readonly upto: number; readonly more: boolean; readonly bytes: number }
  | { readonly op: 'compacted'; readonly id: number; readonly applied: boolean; readonly bytes: number }

/** Bytes that are not a valid relay message (or an argument that cannot be encoded as one). */
export class RelayProtocolError extends TransportError {
  override readonly code: string = 'RELAY_PROTOCOL'
}

const utf8Encoder = new TextEncoder()
/** In a `u` regex a surrogate pair is one code point, so this matches only lone surrogates. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u
const utf8Decoder = new TextDecoder('utf-8', { fatal: true })

/**
 * UTF-8 bytes of a topic or peer id, checked: non-empty, at most 255 bytes, and exactly representable (a string with
 * lone surrogates would be mangled by UTF-8 encoding, and the server would then know the peer under another id).
 */
export function relayIdBytes(id: string, what = 'id'): Uint8Array {
  if (typeof id !== 'string' || id.length === 0) throw new RelayProtocolError(`${what} must be a non-empty string`)
  if (LONE_SURROGATE.test(id)) throw new RelayProtocolError(`${what} must be well-formed Unicode (no lone surrogates)`)
  const bytes = utf8Encoder.encode(id)
  if (bytes.byteLength > RELAY_MAX_ID_BYTES) {
    throw new RelayProtocolError(`${what} is ${bytes.byteLength} UTF-8 bytes, the relay allows at most ${RELAY_MAX_ID_BYTES}`)
  }
  return bytes
}

/** Length of an op that carries `idBytes` bytes of id and a payload: op + id (len + bytes) + payload (len + bytes). */
function opLength(idBytes: number, payload: number): number {
  return 1 + (idBytes > 0 ? 1 + idBytes : 0) + 4 + payload
}

/** Largest payload a SEND op can carry inside a message of `maxMessageBytes` (with the longest possible peer id). */
export function relayMaxPayload(maxMessageBytes: number): number {
  return maxMessageBytes - 1 - opLength(RELAY_MAX_ID_BYTES, 0)
}

class Writer {
  readonly bytes: Uint8Array
  private readonly view: DataView
  private pos = 0
  constructor(length: number) {
    this.bytes = new Uint8Array(length)
    this.view = new DataView(this.bytes.buffer)
  }
  u8(v: number): this {
    this.view.setUint8(this.pos, v)
    this.pos += 1
    return this
  }
  u16(v: number): this {
    this.view.setUint16(this.pos, v)
    this.pos += 2
    return this
  }
  u32(v: number): this {
    this.view.setUint32(this.pos, v >>> 0)
    this.pos += 4
    return this
  }
  u64(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RelayProtocolError(`a u64 field must be a safe non-negative integer, got ${v}`)
    return this.u32(Math.floor(v / 2 ** 32)).u32(v % 2 ** 32)
  }
  /** A length-prefixed (u16) token. */
  token(b: Uint8Array): this {
    this.u16(b.byteLength)
    this.bytes.set(b, this.pos)
    this.pos += b.byteLength
    return this
  }
  /** A length-prefixed (u8) string given as bytes. */
  str(b: Uint8Array): this {
    this.u8(b.byteLength)
    this.bytes.set(b, this.pos)
    this.pos += b.byteLength
    return this
  }
  /** A length-prefixed (u32) payload (copied). */
  payload(b: Uint8Array): this {
    this.u32(b.byteLength)
    this.bytes.set(b, this.pos)
    this.pos += b.byteLength
    return this
  }
}

function idOp(code: number, id: string, what: string): Uint8Array {
  const b = relayIdBytes(id, what)
  return new Writer(2 + b.byteLength).u8(code).str(b).bytes
}

function u32Field(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RelayProtocolError(`${what} must be a u32, got ${v}`)
  return v
}

/** Encodes one client op (without the version byte; see {@link encodeRelayMessage}). Copies the payload. */
export function encodeClientOp(op: RelayClientOp): Uint8Array {
  switch (op.op) {
    case 'join': {
      // Version 2 (what this build sends): the token field is always there, empty when there is none.
      const t = relayIdBytes(op.topic, 'topic')
      const p = relayIdBytes(op.peer, 'peer id')
      const token = op.token ?? EMPTY
      if (token.byteLength > RELAY_MAX_TOKEN_BYTES) throw new RelayProtocolError(`a token is at most ${RELAY_MAX_TOKEN_BYTES} bytes`)
      return new Writer(5 + t.byteLength + p.byteLength + token.byteLength).u8(RelayOp.JOIN).str(t).str(p).token(token).bytes
    }
    case 'leave':
      return Uint8Array.of(RelayOp.LEAVE)
    case 'send': {
      const to = relayIdBytes(op.to, 'peer id')
      return new Writer(opLength(to.byteLength, op.payload.byteLength)).u8(RelayOp.SEND).str(to).payload(op.payload).bytes
    }
    case 'broadcast':
      return new Writer(opLength(0, op.payload.byteLength)).u8(RelayOp.BROADCAST).payload(op.payload).bytes
    case 'ping':
      return new Writer(5).u8(RelayOp.PING).u32(u32Field(op.nonce, 'nonce')).bytes
    case 'put':
      return new Writer(9 + op.blob.byteLength).u8(RelayOp.PUT).u32(u32Field(op.id, 'id')).payload(op.blob).bytes
    case 'fetch':
      return new Writer(13).u8(RelayOp.FETCH).u32(u32Field(op.id, 'id')).u64(op.after).bytes
    case 'compact': {
      if (!(op.count >= 1 && op.count <= 0xffff && op.part >= 0 && op.part < op.count)) throw new RelayProtocolError('COMPACT needs 0 ≤ part < count ≤ 65535')
      const w = new Writer(21 + op.blob.byteLength).u8(RelayOp.COMPACT).u32(u32Field(op.id, 'id')).u64(op.upto)
      return w.u16(op.part).u16(op.count).payload(op.blob).bytes
    }
  }
}

/** Encodes one server op (without the version byte; see {@link encodeRelayMessage}). Copies the payload. */
export function encodeServerOp(op: RelayServerOp): Uint8Array {
  switch (op.op) {
    case 'welcome': {
      const l = op.limits
      const w = new Writer(1 + 5 * 4 + 2).u8(RelayOp.WELCOME)
      w.u32(u32Field(l.maxMessageBytes, 'maxMessageBytes')).u32(u32Field(l.opsPerSecond, 'opsPerSecond'))
      w.u32(u32Field(l.opsBurst, 'opsBurst')).u32(u32Field(l.bytesPerSecond, 'bytesPerSecond'))
      w.u32(u32Field(l.bytesBurst, 'bytesBurst'))
      if (!Number.isInteger(l.maxOps) || l.maxOps < 1 || l.maxOps > 0xffff) throw new RelayProtocolError('maxOps must be in 1..65535')
      return w.u16(l.maxOps).bytes
    }
    case 'peers': {
      if (op.peers.length > 0xffff) throw new RelayProtocolError('at most 65535 peers per PEERS op')
      const ids = op.peers.map((p) => relayIdBytes(p, 'peer id'))
      const w = new Writer(3 + ids.reduce((n, b) => n + 1 + b.byteLength, 0)).u8(RelayOp.PEERS).u16(ids.length)
      for (const b of ids) w.str(b)
      return w.bytes
    }
    case 'up':
      return idOp(RelayOp.UP, op.peer, 'peer id')
    case 'down':
      return idOp(RelayOp.DOWN, op.peer, 'peer id')
    case 'from': {
      const from = relayIdBytes(op.from, 'peer id')
      return new Writer(opLength(from.byteLength, op.payload.byteLength)).u8(RelayOp.FROM).str(from).payload(op.payload).bytes
    }
    case 'pong':
      return new Writer(5).u8(RelayOp.PONG).u32(u32Field(op.nonce, 'nonce')).bytes
    case 'error': {
      if (!Number.isInteger(op.code) || op.code < 0 || op.code > 0xffff) throw new RelayProtocolError('error code must be a u16')
      let text = utf8Encoder.encode(op.message)
      if (text.byteLength > 255) text = utf8Encoder.encode(op.message.slice(0, 60))
      return new Writer(4 + text.byteLength).u8(RelayOp.ERROR).u16(op.code).str(text).bytes
    }
    case 'store': {
      const id = relayIdBytes(op.storeId, 'store id')
      return new Writer(18 + id.byteLength).u8(RelayOp.STORE).str(id).u64(op.head).u64(op.bytes).bytes
    }
    case 'stored':
      return new Writer(21).u8(RelayOp.STORED).u32(u32Field(op.id, 'id')).u64(op.seq).u64(op.bytes).bytes
    case 'blob':
      return new Writer(17 + op.blob.byteLength).u8(RelayOp.BLOB).u32(u32Field(op.id, 'id')).u64(op.seq).payload(op.blob).bytes
    case 'fetched':
      return new Writer(22).u8(RelayOp.FETCHED).u32(u32Field(op.id, 'id')).u64(op.upto).u8(op.more ? 1 : 0).u64(op.bytes).bytes
    case 'compacted':
      return new Writer(14).u8(RelayOp.COMPACTED).u32(u32Field(op.id, 'id')).u8(op.applied ? 1 : 0).u64(op.bytes).bytes
  }
}

/** Concatenates encoded ops into one message behind the version byte (a server answers v1 clients with 1). */
export function encodeRelayMessage(ops: readonly Uint8Array[], version = RELAY_PROTOCOL_VERSION): Uint8Array {
  let n = 1
  for (const op of ops) n += op.byteLength
  const out = new Uint8Array(n)
  out[0] = version
  let pos = 1
  for (const op of ops) {
    out.set(op, pos)
    pos += op.byteLength
  }
  return out
}

/** A bounds-checked cursor; every read past the end throws {@link RelayProtocolError}. */
class Reader {
  private readonly view: DataView
  pos = 0
  constructor(private readonly b: Uint8Array) {
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength)
  }
  get done(): boolean {
    return this.pos >= this.b.byteLength
  }
  private need(n: number, what: string): void {
    if (this.pos + n > this.b.byteLength) throw new RelayProtocolError(`truncated ${what} at byte ${this.pos}`)
  }
  u8(what: string): number {
    this.need(1, what)
    return this.view.getUint8(this.pos++)
  }
  u16(what: string): number {
    this.need(2, what)
    const v = this.view.getUint16(this.pos)
    this.pos += 2
    return v
  }
  u32(what: string): number {
    this.need(4, what)
    const v = this.view.getUint32(this.pos)
    this.pos += 4
    return v
  }
  u64(what: string): number {
    const hi = this.u32(what)
    const lo = this.u32(what)
    const v = hi * 2 ** 32 + lo
    if (!Number.isSafeInteger(v)) throw new RelayProtocolError(`${what} exceeds 2^53 − 1`)
    return v
  }
  token(what: string): Uint8Array {
    const len = this.u16(what)
    if (len > RELAY_MAX_TOKEN_BYTES) throw new RelayProtocolError(`${what} longer than ${RELAY_MAX_TOKEN_BYTES} bytes`)
    this.need(len, what)
    const out = this.b.subarray(this.pos, this.pos + len)
    this.pos += len
    return out
  }
  str(what: string, allowEmpty = false): string {
    const len = this.u8(what)
    if (len === 0 && !allowEmpty) throw new RelayProtocolError(`empty ${what} at byte ${this.pos - 1}`)
    this.need(len, what)
    const slice = this.b.subarray(this.pos, this.pos + len)
    this.pos += len
    try {
      return utf8Decoder.decode(slice)
    } catch {
      throw new RelayProtocolError(`${what} is not valid UTF-8`)
    }
  }
  /** A u32-length payload, as a view into the message (no copy). */
  payload(what: string): Uint8Array {
    const len = this.u32(what)
    this.need(len, what)
    const out = this.b.subarray(this.pos, this.pos + len)
    this.pos += len
    return out
  }
}

function decodeOps<T>(message: Uint8Array, maxOps: number, readOp: (r: Reader, code: number, version: number) => T): T[] {
  if (!(message instanceof Uint8Array)) throw new RelayProtocolError('a relay message must be bytes')
  if (message.byteLength === 0) throw new RelayProtocolError('empty message')
  const version = message[0]!
  if (version < RELAY_MIN_PROTOCOL_VERSION || version > RELAY_PROTOCOL_VERSION) {
    throw new RelayProtocolError(`unsupported relay protocol version ${version} (this build speaks ${RELAY_MIN_PROTOCOL_VERSION}..${RELAY_PROTOCOL_VERSION})`)
  }
  const r = new Reader(message)
  r.pos = 1
  const ops: T[] = []
  while (!r.done) {
    if (ops.length >= maxOps) throw new RelayProtocolError(`more than ${maxOps} ops in one message`)
    ops.push(readOp(r, r.u8('op code'), version))
  }
  if (ops.length === 0) throw new RelayProtocolError('a message needs at least one op')
  return ops
}

/** The version byte of a relay message (0 when empty); the server answers a connection in its first message's. */
export function relayMessageVersion(message: Uint8Array): number {
  return message.byteLength > 0 ? message[0]! : 0
}

/**
 * Decodes a client → server message. Total: returns the ops or throws {@link RelayProtocolError}; payloads are views
 * into `message`. Work and allocation are bounded by the message length and `maxOps`.
 */
export function decodeClientMessage(message: Uint8Array, maxOps = RELAY_MAX_OPS): RelayClientOp[] {
  return decodeOps<RelayClientOp>(message, maxOps, (r, code, version) => {
    if (version < 2 && code >= RelayOp.PUT && code <= RelayOp.COMPACT) throw new RelayProtocolError(`op 0x0${code.toString(16)} needs relay protocol version 2`)
    switch (code) {
      case RelayOp.JOIN:
        return version < 2 ? { op: 'join', topic: r.str('topic'), peer: r.str('peer id') } : { op: 'join', topic: r.str('topic'), peer: r.str('peer id'), token: r.token('token') }
      case RelayOp.LEAVE:
        return { op: 'leave' }
      case RelayOp.SEND:
        return { op: 'send', to: r.str('peer id'), payload: r.payload('payload') }
      case RelayOp.BROADCAST:
        return { op: 'broadcast', payload: r.payload('payload') }
      case RelayOp.PING:
        return { op: 'ping', nonce: r.u32('nonce') }
      case RelayOp.PUT:
        return { op: 'put', id: r.u32('id'), blob: r.payload('blob') }
      case RelayOp.FETCH:
        return { op: 'fetch', id: r.u32('id'), after: r.u64('after') }
      case RelayOp.COMPACT: {
        const id = r.u32('id')
        const upto = r.u64('upto')
        const part = r.u16('part')
        const count = r.u16('count')
        if (count === 0 || part >= count) throw new RelayProtocolError(`COMPACT part ${part} of ${count}`)
        return { op: 'compact', id, upto, part, count, blob: r.payload('blob') }
      }
      default:
        throw new RelayProtocolError(`unknown client op 0x${code.toString(16).padStart(2, '0')} at byte ${r.pos - 1}`)
    }
  })
}

/** Decodes a server → client message. Total: returns the ops or throws {@link RelayProtocolError}. */
export function decodeServerMessage(message: Uint8Array, maxOps = Number.MAX_SAFE_INTEGER): RelayServerOp[] {
  return decodeOps<RelayServerOp>(message, maxOps, (r, code) => {
    switch (code) {
      case RelayOp.WELCOME: {
        const limits: RelayLimits = {
          maxMessageBytes: r.u32('maxMessageBytes'),
          opsPerSecond: r.u32('opsPerSecond'),
          opsBurst: r.u32('opsBurst'),
          bytesPerSecond: r.u32('bytesPerSecond'),
          bytesBurst: r.u32('bytesBurst'),
          maxOps: r.u16('maxOps'),
        }
        return { op: 'welcome', limits }
      }
      case RelayOp.PEERS: {
        const count = r.u16('peer count')
        const peers: string[] = []
        for (let i = 0; i < count; i++) peers.push(r.str('peer id'))
        return { op: 'peers', peers }
      }
      case RelayOp.UP:
        return { op: 'up', peer: r.str('peer id') }
      case RelayOp.DOWN:
        return { op: 'down', peer: r.str('peer id') }
      case RelayOp.FROM:
        return { op: 'from', from: r.str('peer id'), payload: r.payload('payload') }
      case RelayOp.PONG:
        return { op: 'pong', nonce: r.u32('nonce') }
      case RelayOp.ERROR:
        return { op: 'error', code: r.u16('error code'), message: r.str('error message', true) }
      case RelayOp.STORE:
        return { op: 'store', storeId: r.str('store id'), head: r.u64('head'), bytes: r.u64('bytes') }
      case RelayOp.STORED:
        return { op: 'stored', id: r.u32('id'), seq: r.u64('seq'), bytes: r.u64('bytes') }
      case RelayOp.BLOB:
        return { op: 'blob', id: r.u32('id'), seq: r.u64('seq'), blob: r.payload('blob') }
      case RelayOp.FETCHED:
        return { op: 'fetched', id: r.u32('id'), upto: r.u64('upto'), more: r.u8('more') !== 0, bytes: r.u64('bytes') }
      case RelayOp.COMPACTED:
        return { op: 'compacted', id: r.u32('id'), applied: r.u8('applied') !== 0, bytes: r.u64('bytes') }
      default:
        throw new RelayProtocolError(`unknown server op 0x${code.toString(16).padStart(2, '0')} at byte ${r.pos - 1}`)
    }
  })
}
