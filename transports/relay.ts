/**
 * `syncmesh/transports/relay` — the relay fallback: a {@link Transport} that reaches the other peers of a room through a
 * relay server (`npx syncmesh serve`, or `startServer` from `syncmesh/server`) over one WebSocket, for when direct
 * connections are impossible. The server forwards opaque frames; it never learns the room name (the replica hands
 * transports a hash of it) and cannot read anything the sync layer encrypts.
 *
 * ```ts
 * import { relayTransport } from 'syncmesh/transports/relay'
 * const replica = await createReplica({ room: 'todos', transports: [relayTransport({ url: 'ws://127.0.0.1:4444' })] })
 * ```
 *
 * This module is also the specification and the codec of the relay wire protocol, shared by the client below and
 * the server. Text WebSocket messages on the same server are the y-webrtc signaling protocol (see `src/server`);
 * binary messages are this protocol.
 *
 * ## Relay protocol, version 2
 *
 * Version 2 adds store-and-forward (`PUT`/`FETCH`/`COMPACT` and their answers) and an access token in `JOIN`.
 * A server speaks both versions: it answers each connection in the version of its first message, and a version-1
 * connection is never sent a version-2 op (version-1 JOIN has no token field; the store ops do not exist in it).
 * A client meeting a version-1-only server (it closes with 1008 "unsupported relay protocol version 2" before
 * WELCOME) joins it with version-1 messages from then on, without store and token.
 *
 * Wire shape (every integer big-endian):
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
 * Flow
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
 * Store (v2, only inside a room, only on a server started with a store; the room is the joined topic)
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
 * Limits (hard; `WELCOME` tells the client the values in force, so a well-behaved client paces itself within them)
 * - A client message is at most `maxMessageBytes` (else the server closes with 1009) and at most 1024 ops.
 * - Per connection, two token buckets: ops (`opsPerSecond`, capacity `opsBurst`; a text message counts as one op)
 *   and bytes (`bytesPerSecond`, capacity `bytesBurst`). Exceeding either closes the connection with 1008.
 * - A message the server cannot decode — unknown version byte, unknown op, truncated field, empty or invalid UTF-8
 *   string, trailing bytes, zero ops, SEND/BROADCAST/store ops outside a room, JOIN inside one — closes that
 *   connection with 1008. It never affects other connections. Server → client messages may exceed `maxMessageBytes`
 *   by the length of one peer id (a FROM op carries the sender's id where SEND carried the receiver's), and a BLOB
 *   holds one whole stored blob.
 * - A client that cannot decode a server message closes the connection and reconnects (with backoff).
 */
import { AccessDeniedError, FrameTooLargeError, PeerIdInUseError, StoreRefusedError, TransportArgumentError, TransportError, TransportStateError } from './errors.js'
import { TransportListeners } from './listeners.js'
import type { FrameListener, PeerId, PeerListener, RoomContext, RoomStoreInfo, RoomStoreLink, RoomStorePage, Transport } from './types.js'

export { AccessDeniedError, FrameTooLargeError, PeerIdInUseError, StoreRefusedError, TransportArgumentError, TransportError, TransportStateError } from './errors.js'

// =====================================================================================================================
// Protocol: constants, types, codec

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

// =====================================================================================================================
// The transport

/** The subset of the WHATWG `WebSocket` the transport uses (browsers' native one and `ws` both fit). */
export interface WebSocketLike {
  binaryType: string
  readonly readyState: number
  readonly bufferedAmount: number
  send(data: Uint8Array): void
  close(code?: number, reason?: string): void
  // Handlers are only ever assigned by the transport, so `never` lets every implementation's own event types fit.
  onopen: ((event: never) => void) | null
  onmessage: ((event: never) => void) | null
  onclose: ((event: never) => void) | null
  onerror: ((event: never) => void) | null
}

/** A `WebSocket` constructor: `globalThis.WebSocket` in browsers, `WebSocket` from `ws` in Node. */
export type WebSocketConstructorLike = new (url: string) => WebSocketLike

/** Options of {@link relayTransport}. */
export interface RelayTransportInit {
  /**
   * The relay server, e.g. `ws://127.0.0.1:4444` (`wss://` in production), or several servers that share rooms
   * (`syncmesh serve --redis`): the transport uses one at a time and, whenever a connection is lost or cannot be
   * made, tries the next one.
   */
  url: string | readonly string[]
  /**
   * Use the server's store (`syncmesh serve --store`): the replica uploads its writes to it and, when it joins,
   * fetches what was stored while it was away. Without a store on the server this does nothing.
   * @default false
   */
  store?: boolean
  /**
   * Access token sent with every JOIN (a server started with `authenticate` or `--token` checks it); a function is
   * called before each connection attempt, so it can return a fresh one.
   * @default none
   */
  token?: string | Uint8Array | (() => string | Uint8Array | Promise<string | Uint8Array>)
  /**
   * The WebSocket implementation.
   * @default `globalThis.WebSocket`, else the `ws` package (Node 20 has no global WebSocket)
   */
  WebSocket?: WebSocketConstructorLike
  /**
   * Largest frame `send` accepts; must fit the server's `maxMessageBytes` (frame + 262 bytes of framing).
   * @default 65536
   */
  maxFrameSize?: number
  /**
   * First reconnect delay; each failed attempt doubles it up to `maxReconnectDelayMs`. Each delay is jittered
   * uniformly over [d/2, d] so that clients of a restarted server do not reconnect in lockstep.
   * @default 250
   */
  minReconnectDelayMs?: number
  /**
   * Cap of the reconnect delay.
   * @default 5000
   */
  maxReconnectDelayMs?: number
  /**
   * Bytes of frames waiting to be written (pacing within the server's rate limits, socket backpressure); frames
   * beyond are dropped (counted in `stats().dropped`) — delivery is best-effort and the sync layer repairs loss.
   * @default 8 MiB
   */
  maxQueuedBytes?: number
  /**
   * After this long without hearing from the server the transport sends a PING; after twice this long it considers
   * the connection dead and reconnects.
   * @default 15000
   */
  keepAliveMs?: number
  /**
   * How long a connection attempt (WebSocket open + JOIN accepted) may take before it is abandoned and retried.
   * @default 10000
   */
  connectTimeoutMs?: number
  /**
   * Receives non-fatal problems: connection failures, refused joins, undecodable server messages, errors thrown by
   * listeners. Without it, listener errors are rethrown asynchronously and the rest is ignored.
   */
  onError?: (error: Error) => void
  /**
   * Source of randomness for the reconnect jitter (tests inject one).
   * @default Math.random
   */
  random?: () => number
}

/** Counters of a relay transport. */
export interface RelayTransportStats {
  /** Frames accepted by `send` (one per call) and `broadcast` (one per call). */
  readonly sentFrames: number
  /** Frames delivered to `frame` listeners. */
  readonly receivedFrames: number
  /** Frames dropped locally: queue full, disconnected before they could be written, or too large for the server. */
  readonly dropped: number
  /** WebSocket messages written. */
  readonly messagesOut: number
  /** Completed joins (the first one and every rejoin after a reconnect). */
  readonly joins: number
  /** Connection attempts made. */
  readonly connectAttempts: number
}

/** A {@link Transport} through a relay server; `broadcast` is always present. */
export interface RelayTransport extends Transport {
  broadcast(frame: Uint8Array): void
  /** The server's store, with `store: true` (see {@link RoomStoreLink}). */
  readonly store: RoomStoreLink | undefined
  /** The server URL in use (or next to be tried). */
  readonly url: string
  /** Whether the transport is joined to its room on the server right now. */
  readonly connected: boolean
  /** A snapshot of the counters. */
  stats(): RelayTransportStats
}

/** Default {@link RelayTransportInit.maxFrameSize}: 64 KiB. */
export const DEFAULT_RELAY_MAX_FRAME_SIZE = 64 * 1024

/** Creates a relay transport for one replica. */
export function relayTransport(init: RelayTransportInit): RelayTransport {
  return new RelayTransportImpl(init)
}

const OPEN = 1
/** Above this many bytes buffered in the socket, the transport stops writing and waits. */
const SOCKET_HIGH_WATER = 1 << 20
/** Fraction of the server's announced rates and bursts the client allows itself (clock and delivery jitter). */
const PACING_MARGIN = 0.8

let wsFallback: Promise<WebSocketConstructorLike> | undefined

async function resolveWebSocket(given: WebSocketConstructorLike | undefined): Promise<WebSocketConstructorLike> {
  if (given !== undefined) return given
  const native = (globalThis as { WebSocket?: WebSocketConstructorLike }).WebSocket
  if (typeof native === 'function') return native
  // A computed specifier keeps browser bundlers from trying to bundle `ws`; Node resolves it normally.
  const wsModule = 'ws'
  wsFallback ??= (import(/* @vite-ignore */ wsModule) as Promise<{ WebSocket?: unknown; default?: unknown }>).then(
    (m) => (m.WebSocket ?? m.default) as WebSocketConstructorLike,
    (error: unknown) => {
      wsFallback = undefined
      throw new TransportStateError('no global WebSocket and the `ws` package is not installed: pass `WebSocket` to relayTransport()', { cause: error })
    },
  )
  return wsFallback
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback
  if (!Number.isSafeInteger(v) || v < 1) throw new TransportArgumentError(`${name} must be a positive integer, got ${String(v)}`)
  return v
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}

function unref(timer: ReturnType<typeof setTimeout>): void {
  ;(timer as { unref?: () => void }).unref?.()
}

/** Token bucket mirroring one of the server's, at {@link PACING_MARGIN} of its rate and capacity. */
class Pacer {
  private tokens: number
  private last: number
  constructor(
    private readonly rate: number,
    readonly capacity: number,
    spent: number,
  ) {
    this.last = Date.now()
    this.tokens = Math.max(0, capacity - spent)
  }
  available(): number {
    const now = Date.now()
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) * this.rate) / 1000)
    this.last = now
    return this.tokens
  }
  take(n: number): void {
    this.tokens -= n
  }
  /** Milliseconds until `n` tokens are available. */
  waitFor(n: number): number {
    const missing = n - this.available()
    return missing <= 0 ? 0 : Math.ceil((missing * 1000) / this.rate)
  }
}

/** A store request waiting for its answer. */
interface StoreRequest {
  readonly resolve: (value: never) => void
  readonly reject: (error: Error) => void
  /** FETCH: the blobs received so far. */
  readonly blobs?: { seq: number; blob: Uint8Array }[]
}

class RelayTransportImpl implements RelayTransport {
  readonly maxFrameSize: number
  readonly store: RoomStoreLink | undefined
  private readonly urls: readonly string[]
  private urlIndex = 0
  private readonly token: RelayTransportInit['token']
  private readonly minDelay: number
  private readonly maxDelay: number
  private readonly maxQueuedBytes: number
  private readonly keepAliveMs: number
  private readonly connectTimeoutMs: number
  private readonly onError: ((error: Error) => void) | undefined
  private readonly random: () => number
  private readonly givenWebSocket: WebSocketConstructorLike | undefined

  private state: 'idle' | 'started' | 'stopped' = 'idle'
  private ctx: RoomContext | undefined
  /** Incremented on every start, stop and socket change: callbacks of older generations are ignored. */
  private gen = 0
  private ws: WebSocketLike | undefined
  private Ctor: WebSocketConstructorLike | undefined
  private joined = false
  private joinedAt = 0
  private readonly peers = new Set<PeerId>()
  private attempt = 0
  private lastReceived = 0
  private nonce = 0
  private starting: { resolve: () => void } | undefined
  private stopping: Promise<void> | undefined
  /** Counts stop() calls: a start() that was still getting ready when stop() ran gives up. */
  private stops = 0

  private queue: Uint8Array[] = []
  private queueHead = 0
  private queuedBytes = 0
  private flushTimer: ReturnType<typeof setTimeout> | undefined
  private flushQueued = false
  private limits: RelayLimits | undefined
  private opsPacer: Pacer | undefined
  private bytesPacer: Pacer | undefined
  private maxOpsPerMessage = 1

  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  private connectTimer: ReturnType<typeof setTimeout> | undefined
  private keepAliveTimer: ReturnType<typeof setInterval> | undefined

  private readonly listeners = new TransportListeners()
  private storeInfo: RoomStoreInfo | undefined
  private readonly storeReady = new Set<(info: RoomStoreInfo) => void>()
  private readonly requests = new Map<number, StoreRequest>()
  private nextRequest = 1
  /** Servers that refused a version-2 message: they get version-1 JOINs (no store, no token). */
  private readonly v1Servers = new Set<string>()
  /** The version byte of this connection's messages. */
  private wireVersion = RELAY_PROTOCOL_VERSION
  /** Why the server is about to close the connection (a refused upload), for the requests it fails. */
  private refusal: Error | undefined

  private counters = { sentFrames: 0, receivedFrames: 0, dropped: 0, messagesOut: 0, joins: 0, connectAttempts: 0 }

  constructor(init: RelayTransportInit) {
    if (init === null || typeof init !== 'object') throw new TransportArgumentError('relayTransport() needs options')
    const urls = typeof init.url === 'string' ? [init.url] : Array.isArray(init.url) ? [...(init.url as string[])] : []
    if (urls.length === 0 || urls.some((u) => typeof u !== 'string' || !/^wss?:\/\//i.test(u))) {
      throw new TransportArgumentError(`url must be a ws:// or wss:// URL or a non-empty list of them, got ${String(init.url)}`)
    }
    this.urls = urls
    if (init.token !== undefined && typeof init.token !== 'string' && typeof init.token !== 'function' && !(init.token instanceof Uint8Array)) {
      throw new TransportArgumentError('token must be a string, bytes or a function')
    }
    this.token = init.token
    this.store = init.store === true ? this.storeLink() : undefined
    this.maxFrameSize = positiveInt('maxFrameSize', init.maxFrameSize, DEFAULT_RELAY_MAX_FRAME_SIZE)
    this.minDelay = positiveInt('minReconnectDelayMs', init.minReconnectDelayMs, 250)
    this.maxDelay = Math.max(this.minDelay, positiveInt('maxReconnectDelayMs', init.maxReconnectDelayMs, 5000))
    this.maxQueuedBytes = positiveInt('maxQueuedBytes', init.maxQueuedBytes, 8 << 20)
    this.keepAliveMs = positiveInt('keepAliveMs', init.keepAliveMs, 15_000)
    this.connectTimeoutMs = positiveInt('connectTimeoutMs', init.connectTimeoutMs, 10_000)
    if (init.WebSocket !== undefined && typeof init.WebSocket !== 'function') {
      throw new TransportArgumentError('WebSocket must be a constructor')
    }
    this.givenWebSocket = init.WebSocket
    this.onError = init.onError
    this.random = init.random ?? Math.random
  }

  get connected(): boolean {
    return this.state === 'started' && this.joined
  }

  get url(): string {
    return this.urls[this.urlIndex]!
  }

  stats(): RelayTransportStats {
    return { ...this.counters }
  }

  // -- store ----------------------------------------------------------------------------------------------------------

  private storeLink(): RoomStoreLink {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this
    return {
      get info() {
        return self.joined ? self.storeInfo : undefined
      },
      get maxBlobBytes() {
        // A COMPACT op around the blob, inside one message of the server's (or the default) size.
        return Math.min(self.maxFrameSize, (self.limits?.maxMessageBytes ?? 128 * 1024) - 32)
      },
      onReady(fn) {
        self.storeReady.add(fn)
        return () => self.storeReady.delete(fn)
      },
      put: (blob) => this.request<{ seq: number; bytes: number }>((id) => ({ op: 'put', id, blob })),
      fetch: (after) => this.request<RoomStorePage>((id) => ({ op: 'fetch', id, after }), true),
      async compact(upto, blobs) {
        if (blobs.length === 0 || blobs.length > 0xffff) throw new TransportArgumentError('compact() takes 1..65535 blobs')
        const ids: number[] = []
        const answer = self.request<{ applied: boolean; bytes: number }>((id) => {
          ids.push(id)
          return { op: 'compact', id, upto, part: 0, count: blobs.length, blob: blobs[0]! }
        })
        const id = ids[0]!
        for (let part = 1; part < blobs.length; part++) {
          if (!self.requests.has(id)) break
          self.enqueue(encodeClientOp({ op: 'compact', id, upto, part, count: blobs.length, blob: blobs[part]! }))
        }
        return answer
      },
    }
  }

  /** Sends one store request; resolves with its answer, rejects when the connection is lost first. */
  private request<T>(op: (id: number) => RelayClientOp, collect = false): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.state !== 'started' || !this.joined || this.storeInfo === undefined) {
        reject(new TransportStateError(`relay ${this.url}: not joined to a server with a store`))
        return
      }
      const id = this.nextRequest
      this.nextRequest = (this.nextRequest % 0xffffffff) + 1
      const encoded = encodeClientOp(op(id))
      this.requests.set(id, { resolve: resolve as (v: never) => void, reject, blobs: collect ? [] : undefined })
      if (!this.enqueue(encoded)) {
        this.requests.delete(id)
        reject(new TransportError(`relay ${this.url}: send queue full`))
      }
    })
  }

  /** Rejects every store request still waiting (the connection is gone, or the server refused an upload). */
  private failRequests(error: Error): void {
    const waiting = [...this.requests.values()]
    this.requests.clear()
    for (const r of waiting) r.reject(error)
  }

  /** Applies a store answer (STORE, STORED, BLOB, FETCHED, COMPACTED); returns a problem description, if any. */
  private applyStoreOp(op: Extract<RelayServerOp, { op: 'store' | 'stored' | 'blob' | 'fetched' | 'compacted' }>): string | undefined {
    if (!this.joined) return `${op.op.toUpperCase()} before WELCOME`
    if (op.op === 'store') {
      const info = { storeId: op.storeId, head: op.head, bytes: op.bytes }
      this.storeInfo = info
      for (const fn of [...this.storeReady]) {
        try {
          fn(info)
        } catch (error) {
          this.listenerError(error)
        }
      }
      return undefined
    }
    const r = this.requests.get(op.id)
    if (r === undefined) return undefined // answered after we gave up on it
    if (op.op === 'blob') {
      if (r.blobs === undefined) return 'BLOB for a request that is not a FETCH'
      r.blobs.push({ seq: op.seq, blob: op.blob.slice() })
      return undefined
    }
    this.requests.delete(op.id)
    if (op.op === 'stored') r.resolve({ seq: op.seq, bytes: op.bytes } as never)
    else if (op.op === 'fetched') r.resolve({ blobs: r.blobs ?? [], upto: op.upto, more: op.more, bytes: op.bytes } as never)
    else r.resolve({ applied: op.applied, bytes: op.bytes } as never)
    return undefined
  }

  // -- lifecycle ------------------------------------------------------------------------------------------------------

  /**
   * Connects and joins the room. Resolves once joined — or once the first attempt has failed (server unreachable,
   * join refused): a local-first replica must start offline, and the transport keeps retrying in the background.
   */
  async start(room: RoomContext): Promise<void> {
    if (this.state === 'started') throw new TransportStateError('relay transport already started; stop() it first')
    if (room === null || typeof room !== 'object') throw new TransportArgumentError('start() needs a RoomContext')
    try {
      relayIdBytes(room.room, 'room')
      relayIdBytes(room.peerId, 'peerId')
    } catch (error) {
      throw new TransportArgumentError((error as Error).message)
    }
    const stops = this.stops
    const Ctor = await resolveWebSocket(this.givenWebSocket)
    if (this.stopping) await this.stopping
    if (stops !== this.stops) return // stop() was called while we were getting ready: stay stopped
    // Another start() may have won the race while we awaited.
    if ((this.state as RelayTransportImpl['state']) === 'started') throw new TransportStateError('relay transport already started; stop() it first')
    this.state = 'started'
    this.Ctor = Ctor
    this.stopping = undefined
    this.ctx = { room: room.room, peerId: room.peerId }
    this.gen++
    this.attempt = 0
    const started = new Promise<void>((resolve) => (this.starting = { resolve }))
    this.keepAliveTimer = setInterval(() => this.keepAlive(), Math.max(50, Math.floor(this.keepAliveMs / 2)))
    unref(this.keepAliveTimer)
    this.connect()
    return started
  }

  stop(): Promise<void> {
    this.stops++
    if (this.state !== 'started') return this.stopping ?? Promise.resolve()
    this.state = 'stopped'
    this.gen++
    this.settleStart()
    clearTimeout(this.reconnectTimer)
    clearTimeout(this.connectTimer)
    clearTimeout(this.flushTimer)
    clearInterval(this.keepAliveTimer)
    this.reconnectTimer = this.connectTimer = this.flushTimer = this.keepAliveTimer = undefined
    this.flushQueued = false
    this.clearQueue(false)
    this.peers.clear() // the stopped side hears nothing more, not even peer:down
    this.joined = false
    this.storeInfo = undefined
    this.failRequests(new TransportStateError('relay transport stopped'))
    const ws = this.ws
    this.ws = undefined
    this.stopping = ws === undefined ? Promise.resolve() : closeSocket(ws, 1000, 'stop')
    return this.stopping
  }

  // -- sending --------------------------------------------------------------------------------------------------------

  send(peer: PeerId, frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkSize(frame)
    if (!this.joined || !this.peers.has(peer)) return
    this.counters.sentFrames++
    this.enqueue(encodeClientOp({ op: 'send', to: peer, payload: frame }))
  }

  broadcast(frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkSize(frame)
    if (!this.joined || this.peers.size === 0) return
    this.counters.sentFrames++
    this.enqueue(encodeClientOp({ op: 'broadcast', payload: frame }))
  }

  private checkSize(frame: Uint8Array): void {
    if (!(frame instanceof Uint8Array)) throw new TransportArgumentError('frame must be a Uint8Array')
    if (frame.byteLength > this.maxFrameSize) throw new FrameTooLargeError(frame.byteLength, this.maxFrameSize)
  }

  private enqueue(op: Uint8Array): boolean {
    if (this.queuedBytes + op.byteLength > this.maxQueuedBytes) {
      this.counters.dropped++
      return false
    }
    this.queue.push(op)
    this.queuedBytes += op.byteLength
    this.scheduleFlush(0)
    return true
  }

  private clearQueue(countDropped: boolean): void {
    if (countDropped) this.counters.dropped += this.queue.length - this.queueHead
    this.queue = []
    this.queueHead = 0
    this.queuedBytes = 0
  }

  /** Coalesces every send of the current task into as few messages as the limits allow. */
  private scheduleFlush(delayMs: number): void {
    if (delayMs <= 0) {
      if (this.flushQueued || this.flushTimer !== undefined) return
      this.flushQueued = true
      queueMicrotask(() => {
        this.flushQueued = false
        this.flush()
      })
    } else if (this.flushTimer === undefined) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined
        this.flush()
      }, delayMs)
    }
  }

  private flush(): void {
    const ws = this.ws
    const limits = this.limits
    const opsPacer = this.opsPacer
    const bytesPacer = this.bytesPacer
    if (this.state !== 'started' || !this.joined || !ws || !limits || !opsPacer || !bytesPacer || ws.readyState !== OPEN) return
    while (this.queueHead < this.queue.length) {
      if (ws.bufferedAmount > SOCKET_HIGH_WATER) {
        this.compactQueue()
        return this.scheduleFlush(10)
      }
      const ops = Math.floor(opsPacer.available())
      const budget = Math.min(limits.maxMessageBytes, Math.floor(bytesPacer.available()))
      const parts: Uint8Array[] = []
      let size = 1
      while (this.queueHead < this.queue.length && parts.length < Math.min(ops, this.maxOpsPerMessage)) {
        const op = this.queue[this.queueHead]!
        if (1 + op.byteLength > limits.maxMessageBytes) {
          // Larger than the server accepts at all (maxFrameSize set above what this server allows): drop it.
          this.queue[this.queueHead++] = EMPTY
          this.queuedBytes -= op.byteLength
          this.counters.dropped++
          this.report(new FrameTooLargeError(op.byteLength, limits.maxMessageBytes - 1))
          continue
        }
        if (size + op.byteLength > budget) break
        parts.push(op)
        this.queue[this.queueHead++] = EMPTY
        this.queuedBytes -= op.byteLength
        size += op.byteLength
      }
      if (parts.length === 0) {
        if (this.queueHead >= this.queue.length) break
        const next = this.queue[this.queueHead]!
        this.compactQueue()
        return this.scheduleFlush(Math.max(1, opsPacer.waitFor(1), bytesPacer.waitFor(1 + next.byteLength)))
      }
      opsPacer.take(parts.length)
      bytesPacer.take(size)
      try {
        ws.send(encodeRelayMessage(parts, this.wireVersion))
        this.counters.messagesOut++
      } catch (error) {
        this.counters.dropped += parts.length
        this.report(asError(error))
        return
      }
    }
    this.queue = []
    this.queueHead = 0
    this.queuedBytes = 0
  }

  /** Drops the consumed prefix of the queue once it dominates (amortised O(1) per op). */
  private compactQueue(): void {
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead)
      this.queueHead = 0
    }
  }

  // -- connection -----------------------------------------------------------------------------------------------------

  private connect(): void {
    const Ctor = this.Ctor
    if (this.state !== 'started' || Ctor === undefined) return
    const gen = ++this.gen
    this.counters.connectAttempts++
    let ws: WebSocketLike
    try {
      ws = new Ctor(this.url)
      ws.binaryType = 'arraybuffer'
    } catch (error) {
      this.report(asError(error))
      this.connectionLost()
      return
    }
    this.ws = ws
    this.joined = false
    this.lastReceived = Date.now()
    clearTimeout(this.connectTimer)
    this.connectTimer = setTimeout(() => {
      if (gen === this.gen && !this.joined) {
        this.report(new TransportError(`relay ${this.url}: no join within ${this.connectTimeoutMs} ms`))
        this.abandon(4000, 'connect timeout')
      }
    }, this.connectTimeoutMs)
    ws.onopen = () => {
      if (gen !== this.gen) return
      const { room, peerId } = this.ctx!
      void this.tokenBytes().then(
        (token) => {
          if (gen !== this.gen) return
          const join = encodeClientOp({ op: 'join', topic: room, peer: peerId, token })
          // A server that speaks only version 1 gets a v1 JOIN (the v2 one minus its empty token field): relay only.
          const v1 = this.v1Servers.has(this.url) && token.byteLength === 0
          this.wireVersion = v1 ? 1 : RELAY_PROTOCOL_VERSION
          ws.send(v1 ? encodeRelayMessage([join.subarray(0, join.byteLength - 2)], 1) : encodeRelayMessage([join]))
          this.counters.messagesOut++
        },
        (error: unknown) => this.report(asError(error)),
      )
    }
    ws.onmessage = (event: { data: unknown }) => {
      if (gen !== this.gen) return
      this.receive(event.data, gen)
    }
    ws.onerror = () => {
      // A 'close' event follows; the error event carries nothing useful in browsers.
    }
    ws.onclose = (event: { code?: number; reason?: string }) => {
      if (gen !== this.gen) return
      if (!this.joined) this.report(new TransportError(`relay ${this.url}: connection closed before joining (code ${event.code ?? '?'}${event.reason ? `, ${event.reason}` : ''})`))
      if (!this.joined && event.code === 1008 && /unsupported relay protocol version 2/.test(event.reason ?? '')) this.v1Servers.add(this.url)
      this.ws = undefined
      this.connectionLost()
    }
  }

  /** The access token for the next JOIN (empty without one). */
  private async tokenBytes(): Promise<Uint8Array> {
    const t = typeof this.token === 'function' ? await this.token() : this.token
    if (t === undefined) return EMPTY
    return typeof t === 'string' ? utf8Encoder.encode(t) : t
  }

  /** Closes the current socket on our side and proceeds as if it had closed. */
  private abandon(code: number, reason: string): void {
    const ws = this.ws
    this.ws = undefined
    if (ws) void closeSocket(ws, code, reason)
    this.connectionLost()
  }

  /** The socket is gone: peers are unreachable until we rejoin; retry with jittered exponential backoff. */
  private connectionLost(): void {
    if (this.state !== 'started') return
    const gen = ++this.gen
    const wasJoined = this.joined
    const stable = wasJoined && Date.now() - this.joinedAt >= 2000
    this.joined = false
    this.storeInfo = undefined
    this.failRequests(this.refusal ?? new TransportError(`relay ${this.url}: connection lost`))
    this.refusal = undefined
    // Several servers: try the next one (the one we lost may be down).
    this.urlIndex = (this.urlIndex + 1) % this.urls.length
    clearTimeout(this.connectTimer)
    clearTimeout(this.flushTimer)
    this.connectTimer = this.flushTimer = undefined
    this.clearQueue(true)
    this.settleStart()
    const gone = [...this.peers]
    this.peers.clear()
    for (const p of gone) {
      if (gen !== this.gen || this.state !== 'started') return
      this.emitPeer('peer:down', p)
    }
    if (gen !== this.gen || this.state !== 'started') return
    if (stable) this.attempt = 0
    const base = Math.min(this.maxDelay, this.minDelay * 2 ** Math.min(this.attempt, 30))
    const delay = Math.round(base / 2 + (this.random() * base) / 2)
    this.attempt++
    clearTimeout(this.reconnectTimer)
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined
      if (gen === this.gen) this.connect()
    }, delay)
  }

  private settleStart(): void {
    const s = this.starting
    this.starting = undefined
    s?.resolve()
  }

  private keepAlive(): void {
    if (this.state !== 'started' || !this.ws || !this.joined) return
    const idle = Date.now() - this.lastReceived
    if (idle > 2 * this.keepAliveMs) {
      this.report(new TransportError(`relay ${this.url}: server silent for ${idle} ms, reconnecting`))
      this.abandon(4000, 'server silent')
    } else if (idle >= this.keepAliveMs) {
      this.nonce = (this.nonce + 1) >>> 0
      this.enqueue(encodeClientOp({ op: 'ping', nonce: this.nonce }))
    }
  }

  // -- receiving ------------------------------------------------------------------------------------------------------

  private receive(data: unknown, gen: number): void {
    this.lastReceived = Date.now()
    let bytes: Uint8Array
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data)
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    else return this.protocolFailure(new RelayProtocolError('the relay sent a text message'))
    let ops: RelayServerOp[]
    try {
      ops = decodeServerMessage(bytes)
    } catch (error) {
      return this.protocolFailure(asError(error))
    }
    for (const op of ops) {
      if (gen !== this.gen || this.state !== 'started') return
      const problem = this.apply(op)
      if (problem !== undefined) return this.protocolFailure(new RelayProtocolError(problem))
    }
  }

  private protocolFailure(error: Error): void {
    this.report(error)
    this.abandon(4002, 'protocol error')
  }

  /** Applies one server op; returns a description of the problem when the op is not acceptable now. */
  private apply(op: RelayServerOp): string | undefined {
    const self = this.ctx!.peerId
    switch (op.op) {
      case 'welcome': {
        if (this.joined) return 'WELCOME while already joined'
        const l = op.limits
        if (l.maxMessageBytes < 64 || l.opsPerSecond < 1 || l.opsBurst < 1 || l.bytesPerSecond < 1 || l.bytesBurst < 64 || l.maxOps < 1) {
          return `unusable limits in WELCOME: ${JSON.stringify(l)}`
        }
        this.joined = true
        this.joinedAt = Date.now()
        this.limits = l
        const opsCap = Math.max(1, Math.floor(l.opsBurst * PACING_MARGIN))
        this.opsPacer = new Pacer(l.opsPerSecond * PACING_MARGIN, opsCap, 1)
        this.bytesPacer = new Pacer(l.bytesPerSecond * PACING_MARGIN, Math.max(l.bytesBurst * PACING_MARGIN, Math.min(l.bytesBurst, l.maxMessageBytes)), 64)
        this.maxOpsPerMessage = Math.max(1, Math.min(l.maxOps, opsCap))
        this.counters.joins++
        clearTimeout(this.connectTimer)
        this.connectTimer = undefined
        this.settleStart()
        return undefined
      }
      case 'peers':
        if (!this.joined) return 'PEERS before WELCOME'
        for (const p of op.peers) {
          if (this.state !== 'started' || !this.joined) return undefined
          if (p !== self && !this.peers.has(p)) {
            this.peers.add(p)
            this.emitPeer('peer:up', p)
          }
        }
        return undefined
      case 'up':
        if (!this.joined) return 'UP before WELCOME'
        if (op.peer !== self && !this.peers.has(op.peer)) {
          this.peers.add(op.peer)
          this.emitPeer('peer:up', op.peer)
        }
        return undefined
      case 'down':
        if (!this.joined) return 'DOWN before WELCOME'
        if (this.peers.delete(op.peer)) this.emitPeer('peer:down', op.peer)
        return undefined
      case 'from':
        if (!this.joined) return 'FROM before WELCOME'
        if (this.peers.has(op.from)) {
          this.counters.receivedFrames++
          this.emitFrame(op.from, op.payload.slice())
        }
        return undefined
      case 'pong':
        return undefined
      case 'error': {
        const error = this.errorFor(op.code, op.message)
        if (error instanceof StoreRefusedError) this.refusal = error
        // A refused JOIN has no request to fail: tell the replica too (its 'error' event, in an encrypted room).
        if (error instanceof AccessDeniedError) this.ctx?.onError?.(error)
        this.report(error)
        this.abandon(1000, 'refused')
        return undefined
      }
      case 'store':
      case 'stored':
      case 'blob':
      case 'fetched':
      case 'compacted':
        return this.applyStoreOp(op)
    }
  }

  /** The typed error for an ERROR op. */
  private errorFor(code: number, message: string): Error {
    const why = message || `error ${code}`
    switch (code) {
      case RelayErrorCode.PEER_ID_IN_USE:
        return new PeerIdInUseError(`relay ${this.url}: peer id ${JSON.stringify(this.ctx!.peerId)} is already in this room; retrying`)
      case RelayErrorCode.ACCESS_DENIED:
        return new AccessDeniedError(`relay ${this.url} refused access to the room: ${why}`)
      case RelayErrorCode.STORE_FULL:
        return new StoreRefusedError(`relay ${this.url}: the store is full: ${why}`, 'STORE_FULL')
      case RelayErrorCode.QUOTA_EXCEEDED:
        return new StoreRefusedError(`relay ${this.url}: the room is over its storage quota: ${why}`, 'QUOTA_EXCEEDED')
      case RelayErrorCode.MALFORMED_UPLOAD:
        return new StoreRefusedError(`relay ${this.url} refused a malformed upload: ${why}`, 'MALFORMED_UPLOAD')
      case RelayErrorCode.STORE_FAILED:
        return new StoreRefusedError(`relay ${this.url}: its store failed: ${why}`, 'STORE_FAILED')
      default:
        return new TransportError(`relay ${this.url} refused: ${why}; retrying`)
    }
  }

  // -- events ---------------------------------------------------------------------------------------------------------

  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  on(event: 'frame', fn: FrameListener): () => void
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    return this.listeners.on(event, fn)
  }

  private emitPeer(kind: 'peer:up' | 'peer:down', peer: PeerId): void {
    const gen = this.gen
    this.listeners.emitPeer(kind, peer, (error) => this.listenerError(error), () => gen === this.gen && this.state === 'started')
  }

  private emitFrame(from: PeerId, frame: Uint8Array): void {
    const gen = this.gen
    this.listeners.emitFrame(from, frame, (error) => this.listenerError(error), () => gen === this.gen && this.state === 'started')
  }

  private listenerError(error: unknown): void {
    if (this.onError) return this.report(asError(error))
    setTimeout(() => {
      throw error
    }, 0)
  }

  private report(error: Error): void {
    try {
      this.onError?.(error)
    } catch {
      // An error handler that throws must not break the transport.
    }
  }
}

const EMPTY = new Uint8Array(0)

/** Closes a socket and resolves once it is closed (or after a second, whichever comes first). */
function closeSocket(ws: WebSocketLike, code: number, reason: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1000)
    unref(timer)
    ws.onopen = null
    ws.onmessage = null
    ws.onerror = () => {}
    ws.onclose = () => {
      clearTimeout(timer)
      resolve()
    }
    try {
      if (ws.readyState >= 2) {
        clearTimeout(timer)
        resolve()
        return
      }
      ws.close(code, reason)
    } catch {
      clearTimeout(timer)
      resolve()
    }
  })
}
