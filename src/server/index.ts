/**
 * `syncmesh/server` — one process that is both a y-webrtc-compatible signaling server and the syncmesh relay
 * (`npx syncmesh serve`). One HTTP server, one port:
 *
 * - `GET /health` → `200 {"ok":true,"clients":n,"topics":n,"uptimeMs":n}` (`topics` counts signaling topics and relay
 *   rooms). Every other path upgrades to a WebSocket (`/` is what y-webrtc clients use); plain HTTP elsewhere is 404.
 * - **Text** WebSocket messages speak the y-webrtc signaling protocol, so `WebrtcProvider({ signaling: [url] })`
 *   works against this server unchanged:
 *   ```
 *   {"type":"subscribe","topics":["t",...]}    add this connection to each topic (non-string entries are skipped)
 *   {"type":"unsubscribe","topics":["t",...]}  remove it
 *   {"type":"publish","topic":"t",...}         re-sent verbatim, plus "clients": <subscriber count>, to EVERY
 *                                              subscriber of t — the sender included when it is subscribed (the
 *                                              text is forwarded as received with `,"clients":n` spliced in before
 *                                              its closing brace: never re-serialised, encoded once for all)
 *   {"type":"ping"}                            answered {"type":"pong"}
 *   ```
 *   Valid JSON without a known `type` is ignored (as y-webrtc does). Invalid JSON, `topics` that is not an array, a
 *   topic longer than `maxTopicLength` or more than `maxTopicsPerConnection` topics close the connection with 1008.
 * - **Binary** WebSocket messages speak the relay protocol specified (and encoded/decoded) in
 *   `transports/relay/wire.ts` (versions 1 and 2): JOIN/LEAVE/SEND/BROADCAST/PING from clients; WELCOME/PEERS/UP/DOWN/
 *   FROM/PONG/ERROR back; with a `store`, PUT/FETCH/COMPACT answered by STORE/STORED/BLOB/FETCHED/COMPACTED
 *   (store-and-forward: the server keeps per room the opaque blobs members upload, see ./store.ts). `authenticate` /
 *   `tokens` gate every JOIN; `redis` shares rooms with other server processes (see ./cluster.ts).
 *   Topics are opaque: syncmesh replicas hash (app, room) before a transport sees it, so room names never reach the
 *   server. y-webrtc signaling topics *are* room names, so the log shows topics only as a short hash of the topic.
 *
 * Hardening (each applies per connection and never affects other connections):
 * - a message longer than `maxMessageBytes` closes the connection with 1009 (enforced while reading, by `ws`);
 * - malformed input (see above and the relay spec) closes it with 1008; an exception while handling a message is
 *   caught, logged and closes only that connection (1011) — the process never crashes on input;
 * - two token buckets: ops (`ratePerSecond`, burst `rateBurst`; a text message counts as one op, a relay message as
 *   its number of ops) and bytes (`bytesPerSecond`, burst `bytesBurst`); exceeding either closes with 1008. Relay
 *   clients learn the limits from WELCOME and pace themselves, so only misbehaving clients hit them;
 * - every `pingIntervalMs` the server pings each connection at WebSocket level; a connection from which nothing (no
 *   message, no pong) arrived for more than two intervals is terminated;
 * - frames and signaling messages to a receiver whose send buffer exceeds `maxBufferedBytes` are dropped (best-effort
 *   delivery; relay membership events are never dropped). A receiver whose buffer stays above that for
 *   `slowConsumerMs`, or grows past twice it, is a slow consumer: its socket is destroyed at once (a close frame would
 *   wait behind the bytes it does not read, so the client sees 1006), logged and counted with
 *   {@link ServerCloseCode.SLOW_CONSUMER}. So one connection never holds more than about 2 × `maxBufferedBytes`;
 * - at most `maxConnections` connections (further upgrades get 503) and `maxPeersPerRoom` peers per relay room.
 *
 * Close codes the server sends are listed in {@link ServerCloseCode}.
 *
 * Logging: one line per connection event — open, subscribe, join / join refused, violation, slow consumer, timeout,
 * error, close —
 * each `<ISO time> conn=<n> <event> ...`, with remote address and topic hashes; never topics or peer ids.
 *
 * ```ts
 * import { startServer } from 'syncmesh/server'
 * const server = await startServer({ port: 0 })   // host defaults to 127.0.0.1
 * console.log(server.url)                          // ws://127.0.0.1:<port>
 * await server.close()
 * ```
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type RawData, type WebSocket } from 'ws'
import {
  RELAY_MAX_OPS,
  RELAY_PROTOCOL_VERSION,
  type RelayClientOp,
  RelayErrorCode,
  type RelayLimits,
  decodeClientMessage,
  encodeRelayMessage,
  encodeServerOp,
  relayMessageVersion,
} from '../../transports/relay/wire.js'
import { SEAL_OVERHEAD } from '../crypto.js'
import { BLOB_PLAIN, BLOB_SEALED } from '../sync/store-sync.js'
import { type Cluster, startCluster } from './cluster.js'
import { type BlobStore, type StoreLimits, StoreLimitError, openBlobStore } from './store.js'

export { type BlobStore, type BlobPage, type StoreLimits, StoreLimitError, memoryBlobStore, levelBlobStore, redisBlobStore, openBlobStore } from './store.js'

/** What {@link ServerInit.authenticate} is asked about: one JOIN. */
export interface JoinRequest {
  /** The token the client sent (empty when it sent none), as bytes and as UTF-8 text. */
  readonly token: Uint8Array
  readonly tokenText: string
  /** The room topic (syncmesh replicas send a hash of app and room: compare with `roomTopic(app, room)`). */
  readonly topic: string
  /** The peer id the client joins as. */
  readonly peer: string
  /** The client's address and port. */
  readonly remote: string
}

/** Options of {@link startServer}. */
export interface ServerInit {
  /**
   * Interface to bind. Anything but loopback exposes the server to the network.
   * @default '127.0.0.1'
   */
  host?: string
  /**
   * TCP port; 0 picks a free one (read it back from {@link SyncmeshServer.port}).
   * @default 4444
   */
  port?: number
  /**
   * Largest WebSocket message accepted, text or binary; larger ones close the connection with 1009. The default fits
   * a 64 KiB relay frame with its framing.
   * @default 131072
   */
  maxMessageBytes?: number
  /**
   * Sustained ops per second per connection (a text message is one op; a relay message counts its ops).
   * @default 1000
   */
  ratePerSecond?: number
  /**
   * Ops a connection may send in a burst above the sustained rate.
   * @default 2 × ratePerSecond
   */
  rateBurst?: number
  /**
   * Sustained bytes per second per connection.
   * @default 4 MiB
   */
  bytesPerSecond?: number
  /**
   * Bytes a connection may send in a burst (never less than 2 × maxMessageBytes).
   * @default bytesPerSecond
   */
  bytesBurst?: number
  /**
   * Interval of WebSocket-level pings; a connection silent for more than two intervals is dropped.
   * @default 30000
   */
  pingIntervalMs?: number
  /**
   * Most simultaneous WebSocket connections.
   * @default 10000
   */
  maxConnections?: number
  /**
   * Most signaling topics one connection may subscribe to.
   * @default 256
   */
  maxTopicsPerConnection?: number
  /**
   * Longest signaling topic, in UTF-16 code units.
   * @default 1024
   */
  maxTopicLength?: number
  /**
   * Most peers in one relay room; further JOINs get ERROR(ROOM_FULL).
   * @default 1000
   */
  maxPeersPerRoom?: number
  /**
   * A receiver whose WebSocket send buffer holds more than this many bytes gets no more frames until it drains.
   * @default 8 MiB
   */
  maxBufferedBytes?: number
  /**
   * A receiver whose send buffer stays above `maxBufferedBytes` this long (or exceeds twice it) is disconnected as a
   * slow consumer ({@link ServerCloseCode.SLOW_CONSUMER}).
   * @default 10000
   */
  slowConsumerMs?: number
  /**
   * Receives one line per connection event; `false` silences the server.
   * @default writes to stderr
   */
  log?: ((line: string) => void) | false
  /**
   * Store-and-forward: keep, per room, the blobs members upload and serve them to members that join later. A
   * LevelDB directory, a `redis://` URL (shareable by several server processes), or a {@link BlobStore}. A store
   * given by path or URL is opened by the server and closed by `close()`; a BlobStore object is the caller's.
   * @default none (the server keeps nothing)
   */
  store?: string | BlobStore
  /**
   * Most bytes of blobs one room may hold; an upload beyond closes that connection with ERROR(QUOTA_EXCEEDED).
   * @default 67108864 (64 MiB)
   */
  maxRoomBytes?: number
  /**
   * Most bytes of blobs the whole store may hold; an upload beyond closes that connection with ERROR(STORE_FULL).
   * @default Number.MAX_SAFE_INTEGER
   */
  maxStoreBytes?: number
  /**
   * Access check of every relay JOIN: resolve true to admit. A refused (or throwing) check answers ERROR(ACCESS_DENIED)
   * and closes the connection. Signaling (text) messages are not checked: an encrypted room seals them.
   * @default admit everyone (or, with `tokens`, holders of one of them)
   */
  authenticate?: (request: JoinRequest) => boolean | Promise<boolean>
  /**
   * Shared access tokens (`--token`): a JOIN must carry one of them. Combined with `authenticate`, both must pass.
   * @default none
   */
  tokens?: readonly string[]
  /**
   * Scale-out: share relay rooms with every other server started with the same Redis URL (pub/sub; see
   * src/server/cluster.ts), so peers of one room may connect to different processes. Clients list several servers
   * in `relayTransport({ url: [...] })` and fail over.
   * @default none (rooms are local to this process)
   */
  redis?: string
  /**
   * With `redis`: how long a server process may go without renewing its liveness key before the others report its
   * peers down (a process killed without a word is noticed within about this plus one second).
   * @default 3000
   */
  clusterNodeTtlMs?: number
}

/** Counters of a running server. */
export interface ServerStats {
  /** Open WebSocket connections. */
  readonly clients: number
  /** Signaling topics with at least one subscriber. */
  readonly signalingTopics: number
  /** Relay rooms with at least one peer. */
  readonly relayRooms: number
  /** Connections accepted since start. */
  readonly connections: number
  /** Connections closed by the server for malformed input, oversized messages or rate limits. */
  readonly violations: number
  /** Connections dropped for silence. */
  readonly timeouts: number
  /** Relay frames forwarded (one per receiver). */
  readonly forwarded: number
  /** Relay frames and signaling messages dropped because a receiver's buffer was full. */
  readonly droppedSlow: number
  /** Connections dropped as slow consumers (send buffer over `maxBufferedBytes` for `slowConsumerMs`). */
  readonly slowConsumers: number
  /** Uploads acknowledged (stored durably). */
  readonly stored: number
  /** Blobs served to fetching members. */
  readonly served: number
  /** Compactions applied. */
  readonly compactions: number
  /** JOINs refused by the access check. */
  readonly denied: number
}

/** WebSocket close codes of the server: each names why it closed a connection (logged as `close code=<n>`). */
export const ServerCloseCode = {
  /** The server is shutting down; reconnect later. */
  GOING_AWAY: 1001,
  /** A text message that is not valid UTF-8. */
  INVALID_UTF8: 1007,
  /** Malformed input, a relay protocol violation, too many or too long topics, or a rate limit exceeded. */
  POLICY_VIOLATION: 1008,
  /** A message longer than `maxMessageBytes` (also refused from the frame header alone). */
  MESSAGE_TOO_BIG: 1009,
  /** Handling the message failed inside the server; only this connection is closed. */
  INTERNAL_ERROR: 1011,
  /**
   * Slow consumer: the send buffer stayed above `maxBufferedBytes` for `slowConsumerMs`. The socket is destroyed
   * without a close frame (it would queue behind unread bytes), so the client sees 1006; the code is in the log.
   */
  SLOW_CONSUMER: 4001,
} as const

/** A running server. */
export interface SyncmeshServer {
  /** `ws://host:port` — give it to `relayTransport({ url })` and to y-webrtc's `signaling` option. */
  readonly url: string
  readonly host: string
  readonly port: number
  /** A snapshot of the counters. */
  stats(): ServerStats
  /** Closes every connection (1001 going away), stops listening; resolves when done. Idempotent. */
  close(): Promise<void>
}

interface Bucket {
  tokens: number
  last: number
}

interface RelayMembership {
  readonly topic: string
  readonly peer: string
  readonly members: Map<string, Conn>
}

interface Conn {
  readonly id: number
  readonly ws: WebSocket
  /** The TCP socket under `ws`, corked while a burst of output to it is produced (see `corkUntilTick`). */
  readonly socket: Duplex
  readonly remote: string
  readonly openedAt: number
  lastSeen: number
  readonly ops: Bucket
  readonly bytes: Bucket
  readonly topics: Set<string>
  relay: RelayMembership | undefined
  /** No more input is processed (violation, timeout, server closing). */
  closed: boolean
  /** Removed from every topic and room. */
  detached: boolean
  msgsIn: number
  bytesIn: number
  closeReason: string | undefined
  /** The close code the server sent, when it closed the connection. */
  closeCode: number | undefined
  /** Since when the send buffer has been above maxBufferedBytes (undefined while below). */
  slowSince: number | undefined
  /** The relay protocol version of the connection's first binary message (what it is answered in). */
  version: number
  /** Messages that arrived while a JOIN's access check ran; handled once it is decided. */
  held: { buf: Buffer; isBinary: boolean }[] | undefined
  /** A COMPACT being assembled. */
  compacting: { id: number; upto: number; count: number; blobs: Uint8Array[]; bytes: number } | undefined
}

/** Close codes `ws` sends for its own errors (the rest are framing errors: 1002). */
const WS_ERROR_CLOSE_CODES: Record<string, number> = {
  WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: ServerCloseCode.MESSAGE_TOO_BIG,
  WS_ERR_INVALID_UTF8: ServerCloseCode.INVALID_UTF8,
}

/** Output of handling one message: per receiver, the ops to send, in order. */
type Outbox = Map<Conn, { bytes: Uint8Array; droppable: boolean }[]>

function positive(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new RangeError(`${name} must be a positive number, got ${String(v)}`)
  return v
}

function positiveInt(name: string, value: number | undefined, fallback: number, max = 0xffffffff): number {
  const v = positive(name, value, fallback)
  if (!Number.isSafeInteger(v) || v > max) throw new RangeError(`${name} must be an integer in 1..${max}, got ${v}`)
  return v
}

/** Short, non-reversible label of a topic for the log. */
function topicLabel(topic: string): string {
  return `#${createHash('sha256').update(topic, 'utf8').digest('hex').slice(0, 12)}`
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (Array.isArray(data)) return Buffer.concat(data)
  return Buffer.from(data)
}

function take(bucket: Bucket, rate: number, burst: number, n: number, now: number): boolean {
  bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.last) * rate) / 1000)
  bucket.last = now
  if (bucket.tokens < n) return false
  bucket.tokens -= n
  return true
}

const PONG = Buffer.from('{"type":"pong"}')

function formatUrl(scheme: string, host: string, port: number): string {
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`
}

/** Starts the signaling + relay server; resolves once it listens. */
export async function startServer(init: ServerInit = {}): Promise<SyncmeshServer> {
  const host = init.host ?? '127.0.0.1'
  if (typeof host !== 'string' || host === '') throw new RangeError('host must be a non-empty string')
  const port = init.port ?? 4444
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`port must be an integer in 0..65535, got ${String(port)}`)
  const maxMessageBytes = positiveInt('maxMessageBytes', init.maxMessageBytes, 128 * 1024)
  if (maxMessageBytes < 1024) throw new RangeError('maxMessageBytes must be at least 1024')
  const rate = positiveInt('ratePerSecond', init.ratePerSecond, 1000)
  const rateBurst = positiveInt('rateBurst', init.rateBurst, 2 * rate)
  const bytesRate = positiveInt('bytesPerSecond', init.bytesPerSecond, 4 << 20)
  const bytesBurst = Math.max(positiveInt('bytesBurst', init.bytesBurst, bytesRate), 2 * maxMessageBytes)
  const pingIntervalMs = positive('pingIntervalMs', init.pingIntervalMs, 30_000)
  const maxConnections = positiveInt('maxConnections', init.maxConnections, 10_000)
  const maxTopicsPerConnection = positiveInt('maxTopicsPerConnection', init.maxTopicsPerConnection, 256)
  const maxTopicLength = positiveInt('maxTopicLength', init.maxTopicLength, 1024)
  const maxPeersPerRoom = positiveInt('maxPeersPerRoom', init.maxPeersPerRoom, 1000)
  const maxBufferedBytes = positiveInt('maxBufferedBytes', init.maxBufferedBytes, 8 << 20)
  const slowConsumerMs = positive('slowConsumerMs', init.slowConsumerMs, 10_000)
  const sink = init.log === undefined ? (line: string) => process.stderr.write(`${line}\n`) : init.log
  const storeLimits: StoreLimits = {
    maxRoomBytes: positiveInt('maxRoomBytes', init.maxRoomBytes, 64 << 20, Number.MAX_SAFE_INTEGER),
    maxStoreBytes: positiveInt('maxStoreBytes', init.maxStoreBytes, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
  }
  const tokens = (init.tokens ?? []).map((t) => Buffer.from(t, 'utf8'))
  if (tokens.some((t) => t.byteLength === 0)) throw new RangeError('tokens must be non-empty strings')
  const authenticate = init.authenticate
  const checksAccess = authenticate !== undefined || tokens.length > 0
  const ownsStore = typeof init.store === 'string'
  const store: BlobStore | undefined = typeof init.store === 'string' ? await openBlobStore(init.store) : init.store
  /** Per relay room with local members: its members on other server processes (peer → node). */
  const remotes = new Map<string, Map<string, string>>()
  const cluster: Cluster | undefined =
    init.redis === undefined
      ? undefined
      : await startCluster(
          { url: init.redis, nodeTtlMs: init.clusterNodeTtlMs },
          {
            up: (topic, peer, node) => remoteUp(topic, peer, node),
            down: (topic, peer, node) => remoteDown(topic, peer, node),
            frame: (topic, from, to, payload) => remoteFrame(topic, from, to, payload),
            error: (message) => log(`cluster error ${message}`),
          },
        )
  const log = (line: string): void => {
    if (sink === false) return
    try {
      sink(`${new Date().toISOString()} ${line}`)
    } catch {
      // A failing log sink must not take the server down.
    }
  }
  const limits: RelayLimits = {
    maxMessageBytes,
    opsPerSecond: rate,
    opsBurst: rateBurst,
    bytesPerSecond: bytesRate,
    bytesBurst,
    maxOps: RELAY_MAX_OPS,
  }
  const welcome = encodeServerOp({ op: 'welcome', limits })

  const startedAt = Date.now()
  const conns = new Set<Conn>()
  const topics = new Map<string, Set<Conn>>()
  const rooms = new Map<string, Map<string, Conn>>()
  const corked = new Set<Conn>()
  let nextId = 1
  let closing: Promise<void> | undefined
  const counters = { connections: 0, violations: 0, timeouts: 0, forwarded: 0, droppedSlow: 0, slowConsumers: 0, stored: 0, served: 0, compactions: 0, denied: 0 }

  // -- HTTP ---------------------------------------------------------------------------------------------------------

  const http = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]
    if (path === '/health' && (req.method === 'GET' || req.method === 'HEAD')) {
      const body = JSON.stringify({ ok: closing === undefined, clients: conns.size, topics: topics.size + rooms.size, uptimeMs: Date.now() - startedAt })
      res.writeHead(closing === undefined ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      res.end(req.method === 'HEAD' ? undefined : body)
      return
    }
    const text = path === '/' ? 'syncmesh signaling + relay server: connect with a WebSocket; GET /health for status\n' : 'not found\n'
    res.writeHead(path === '/' ? 200 : 404, { 'content-type': 'text/plain; charset=utf-8' })
    res.end(text)
  })
  http.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n')
    else socket.destroy()
  })

  const wss = new WebSocketServer({ noServer: true, maxPayload: maxMessageBytes, perMessageDeflate: false, clientTracking: false })
  wss.on('error', (err) => log(`server error ${err.message}`))

  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy())
    const refuse = (status: string): void => {
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
    }
    const path = (req.url ?? '/').split('?')[0]
    if (path === '/health') return refuse('400 Bad Request')
    if (closing !== undefined) return refuse('503 Service Unavailable')
    if (conns.size >= maxConnections) {
      log(`refused upgrade from ${req.socket.remoteAddress ?? '?'}: ${maxConnections} connections already open`)
      return refuse('503 Service Unavailable')
    }
    try {
      wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, req))
    } catch (err) {
      log(`upgrade failed: ${(err as Error).message}`)
      socket.destroy()
    }
  })

  // -- connections --------------------------------------------------------------------------------------------------

  function onConnection(ws: WebSocket, req: IncomingMessage): void {
    const now = Date.now()
    const c: Conn = {
      id: nextId++,
      ws,
      socket: req.socket,
      remote: `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`,
      openedAt: now,
      lastSeen: now,
      ops: { tokens: rateBurst, last: now },
      bytes: { tokens: bytesBurst, last: now },
      topics: new Set(),
      relay: undefined,
      closed: false,
      detached: false,
      msgsIn: 0,
      bytesIn: 0,
      closeReason: undefined,
      closeCode: undefined,
      slowSince: undefined,
      version: 0,
      held: undefined,
      compacting: undefined,
    }
    conns.add(c)
    counters.connections++
    log(`conn=${c.id} open from=${c.remote}`)
    ws.on('message', (data: RawData, isBinary: boolean) => {
      try {
        onMessage(c, data, isBinary)
      } catch (err) {
        // A bug of ours must cost at most this one connection, never the process.
        log(`conn=${c.id} internal error ${(err as Error)?.stack?.split('\n', 2).join(' ') ?? String(err)}`)
        drop(c, ServerCloseCode.INTERNAL_ERROR, 'internal error')
      }
    })
    ws.on('pong', () => (c.lastSeen = Date.now()))
    ws.on('ping', () => (c.lastSeen = Date.now()))
    ws.on('error', (err: Error & { code?: string }) => {
      // ws has already sent the close frame (1009 too big, 1007 invalid UTF-8, 1002 bad framing) and drops the socket.
      const code = typeof err.code === 'string' && err.code.startsWith('WS_ERR_') ? (WS_ERROR_CLOSE_CODES[err.code] ?? 1002) : undefined
      if (code !== undefined && !c.closed) {
        counters.violations++
        c.closeCode = code
        c.closeReason = err.message
        log(`conn=${c.id} violation code=${code} ${err.message}`)
      } else {
        c.closeReason ??= err.code ?? 'error'
        log(`conn=${c.id} error ${err.code ?? ''} ${err.message}`.replace(/\s+/g, ' '))
      }
      c.closed = true
      detach(c)
    })
    ws.on('close', (code: number, reason: Buffer) => {
      c.closed = true
      detach(c)
      conns.delete(c)
      const why = reason.length > 0 ? ` reason=${JSON.stringify(reason.toString('utf8').slice(0, 80))}` : ''
      const secs = ((Date.now() - c.openedAt) / 1000).toFixed(1)
      const by = ` by=${c.closeReason === undefined ? 'client' : 'server'}`
      log(`conn=${c.id} close code=${c.closeCode ?? code}${why}${by} msgs=${c.msgsIn} bytes=${c.bytesIn} duration=${secs}s`)
    })
  }

  /** Closes a connection on our side (violation, timeout, shutdown); detaches it at once so peers see DOWN now. */
  function drop(c: Conn, code: number, reason: string): void {
    if (c.closed && c.detached && c.closeReason !== undefined) return
    c.closed = true
    c.closeReason ??= reason
    c.closeCode ??= code
    detach(c)
    try {
      c.ws.close(code, reason.slice(0, 120))
    } catch {
      c.ws.terminate()
    }
    // A peer that ignores the closing handshake is cut off.
    const t = setTimeout(() => c.ws.terminate(), 1000)
    t.unref()
  }

  function violation(c: Conn, code: number, reason: string): void {
    if (c.closed) return
    counters.violations++
    log(`conn=${c.id} violation code=${code} ${reason}`)
    drop(c, code, reason)
  }

  /** Removes a connection from every topic and room (idempotent); relay peers get DOWN. */
  function detach(c: Conn): void {
    if (c.detached) return
    c.detached = true
    for (const t of c.topics) {
      const subs = topics.get(t)
      if (subs === undefined) continue
      subs.delete(c)
      if (subs.size === 0) topics.delete(t)
    }
    c.topics.clear()
    const out: Outbox = new Map()
    leaveRoom(c, out)
    flush(out)
  }

  function onMessage(c: Conn, data: RawData, isBinary: boolean): void {
    if (c.closed) return
    const now = Date.now()
    c.lastSeen = now
    const buf = toBuffer(data)
    c.msgsIn++
    c.bytesIn += buf.byteLength
    if (!take(c.bytes, bytesRate, bytesBurst, buf.byteLength, now)) return violation(c, ServerCloseCode.POLICY_VIOLATION, 'byte rate limit exceeded')
    if (c.held !== undefined) {
      // A JOIN's access check is running: what follows it waits, in order.
      if (c.held.length >= 64) return violation(c, ServerCloseCode.POLICY_VIOLATION, 'too many messages during the access check')
      c.held.push({ buf, isBinary })
      return
    }
    handle(c, buf, isBinary, now)
  }

  function handle(c: Conn, buf: Buffer, isBinary: boolean, now: number): void {
    if (isBinary) onRelayMessage(c, buf, now)
    else onSignalingMessage(c, buf, now)
  }

  // -- signaling (y-webrtc protocol) --------------------------------------------------------------------------------

  function onSignalingMessage(c: Conn, buf: Buffer, now: number): void {
    if (!take(c.ops, rate, rateBurst, 1, now)) return violation(c, ServerCloseCode.POLICY_VIOLATION, 'rate limit exceeded')
    const text = buf.toString('utf8')
    let message: unknown
    try {
      message = JSON.parse(text)
    } catch {
      return violation(c, ServerCloseCode.POLICY_VIOLATION, 'malformed signaling message (not JSON)')
    }
    if (message === null || typeof message !== 'object' || Array.isArray(message)) return // ignored, as y-webrtc does
    const m = message as Record<string, unknown>
    switch (m['type']) {
      case 'subscribe': {
        const list = topicList(c, m['topics'])
        if (list === undefined) return
        const added: string[] = []
        for (const t of list) {
          if (c.topics.has(t)) continue
          if (c.topics.size >= maxTopicsPerConnection) return violation(c, ServerCloseCode.POLICY_VIOLATION, `more than ${maxTopicsPerConnection} topics`)
          c.topics.add(t)
          let subs = topics.get(t)
          if (subs === undefined) topics.set(t, (subs = new Set()))
          subs.add(c)
          added.push(t)
        }
        if (added.length > 0) {
          const shown = added.slice(0, 4).map(topicLabel).join(',')
          log(`conn=${c.id} subscribe topics=${shown}${added.length > 4 ? `,+${added.length - 4}` : ''}`)
        }
        return
      }
      case 'unsubscribe': {
        const list = topicList(c, m['topics'])
        if (list === undefined) return
        for (const t of list) {
          if (!c.topics.delete(t)) continue
          const subs = topics.get(t)
          subs?.delete(c)
          if (subs?.size === 0) topics.delete(t)
        }
        return
      }
      case 'publish': {
        const t = m['topic']
        if (typeof t !== 'string' || t === '') return
        const subs = topics.get(t)
        if (subs === undefined) return
        // Spliced rather than re-serialised: JSON.stringify recurses, and a deeply nested publish that JSON.parse
        // accepted would overflow its stack. A "clients" the sender put in is overridden (a JSON reader keeps the
        // last of duplicate keys). Encoded once, the same bytes go to every subscriber.
        const out = Buffer.from(`${text.slice(0, text.lastIndexOf('}'))},"clients":${subs.size}}`, 'utf8')
        for (const s of subs) sendText(s, out)
        return
      }
      case 'ping':
        sendText(c, PONG)
        return
      default:
        return // unknown types are ignored, as y-webrtc does
    }
  }

  /** The string topics of a subscribe/unsubscribe, or undefined after a violation (or when absent). */
  function topicList(c: Conn, value: unknown): string[] | undefined {
    if (value === undefined || value === null) return []
    if (!Array.isArray(value)) {
      violation(c, ServerCloseCode.POLICY_VIOLATION, 'malformed signaling message (topics is not an array)')
      return undefined
    }
    const out: string[] = []
    for (const t of value) {
      if (typeof t !== 'string') continue // skipped, as y-webrtc does
      if (t.length > maxTopicLength) {
        violation(c, ServerCloseCode.POLICY_VIOLATION, `topic longer than ${maxTopicLength}`)
        return undefined
      }
      out.push(t)
    }
    return out
  }

  function sendText(to: Conn, text: Buffer): void {
    if (to.closed || to.ws.readyState !== 1) return
    if (congested(to, Date.now())) {
      counters.droppedSlow++
      return
    }
    try {
      corkUntilTick(to)
      to.ws.send(text, { binary: false })
    } catch {
      drop(to, ServerCloseCode.INTERNAL_ERROR, 'send failed')
    }
  }

  /**
   * Corks `to`'s socket until the current task ends: everything sent to it while handling one inbound chunk (which
   * may hold thousands of small messages, each fanned out to every subscriber) leaves in one write instead of one
   * system call per message — the cost that dominated a publish burst.
   */
  function corkUntilTick(to: Conn): void {
    if (corked.has(to)) return
    corked.add(to)
    to.socket.cork()
    if (corked.size === 1) process.nextTick(uncorkAll)
  }

  function uncorkAll(): void {
    for (const c of corked) c.socket.uncork()
    corked.clear()
  }

  /**
   * Whether `to`'s send buffer is over maxBufferedBytes (so droppable output to it is dropped). A receiver over it for
   * slowConsumerMs, or over twice it, is cut off as a slow consumer (and so counts as congested too).
   */
  function congested(to: Conn, now: number): boolean {
    const buffered = to.ws.bufferedAmount
    if (buffered <= maxBufferedBytes) {
      to.slowSince = undefined
      return false
    }
    to.slowSince ??= now
    if (now - to.slowSince >= slowConsumerMs || buffered > 2 * maxBufferedBytes) cutSlowConsumer(to, buffered, now - to.slowSince)
    return true
  }

  /** Destroys a slow consumer's socket now: a close frame would queue behind the bytes it does not read. */
  function cutSlowConsumer(c: Conn, buffered: number, forMs: number): void {
    if (c.closed) return
    counters.slowConsumers++
    log(`conn=${c.id} slow consumer buffered=${buffered} over=${maxBufferedBytes} for=${forMs}ms`)
    c.closed = true
    c.closeReason = 'slow consumer'
    c.closeCode = ServerCloseCode.SLOW_CONSUMER
    detach(c)
    c.ws.terminate()
  }

  // -- relay --------------------------------------------------------------------------------------------------------

  function onRelayMessage(c: Conn, buf: Buffer, now: number): void {
    let ops
    try {
      ops = decodeClientMessage(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength))
    } catch (err) {
      return violation(c, ServerCloseCode.POLICY_VIOLATION, `malformed relay message: ${(err as Error).message}`)
    }
    if (c.version === 0) c.version = relayMessageVersion(buf)
    if (!take(c.ops, rate, rateBurst, ops.length, now)) return violation(c, ServerCloseCode.POLICY_VIOLATION, 'rate limit exceeded')
    handleOps(c, ops, 0)
  }

  /** Handles `ops` from index `start` on (a JOIN with an access check suspends the rest until it is decided). */
  function handleOps(c: Conn, ops: readonly RelayClientOp[], start: number): void {
    const out: Outbox = new Map()
    let problem: string | undefined
    for (let i = start; i < ops.length && problem === undefined; i++) {
      const op = ops[i]!
      switch (op.op) {
        case 'join': {
          if (c.relay !== undefined) {
            problem = 'JOIN while in a room'
            break
          }
          if (checksAccess || cluster !== undefined) {
            flush(out)
            beginJoin(c, op, ops, i + 1)
            return
          }
          join(c, op, out, undefined)
          break
        }
        case 'leave':
          leaveRoom(c, out)
          break
        case 'send': {
          const r = c.relay
          if (r === undefined) {
            problem = 'SEND outside a room'
            break
          }
          const to = r.members.get(op.to)
          if (to === undefined) {
            if (cluster !== undefined && remotes.get(r.topic)?.has(op.to)) cluster.send(r.topic, r.peer, op.to, op.payload)
            break
          }
          if (to === c) break
          push(out, to, encodeServerOp({ op: 'from', from: r.peer, payload: op.payload }), true)
          break
        }
        case 'broadcast': {
          const r = c.relay
          if (r === undefined) {
            problem = 'BROADCAST outside a room'
            break
          }
          if (cluster !== undefined && (remotes.get(r.topic)?.size ?? 0) > 0) cluster.broadcast(r.topic, r.peer, op.payload)
          if (r.members.size < 2) break
          const frame = encodeServerOp({ op: 'from', from: r.peer, payload: op.payload })
          for (const m of r.members.values()) if (m !== c) push(out, m, frame, true)
          break
        }
        case 'ping':
          push(out, c, encodeServerOp({ op: 'pong', nonce: op.nonce }))
          break
        case 'put':
        case 'fetch':
        case 'compact':
          problem = storeOp(c, op)
          break
      }
    }
    // What was produced before a violation goes out first, so no FROM(c) can follow the DOWN(c) the violation causes.
    flush(out)
    if (problem !== undefined) violation(c, ServerCloseCode.POLICY_VIOLATION, `relay protocol violation: ${problem}`)
  }

  /** Enters a room; `remote`: its members on other server processes, from the cluster claim. */
  function join(c: Conn, op: Extract<RelayClientOp, { op: 'join' }>, out: Outbox, remote: Map<string, string> | undefined): void {
    let members = rooms.get(op.topic)
    if (members?.has(op.peer)) {
      push(out, c, encodeServerOp({ op: 'error', code: RelayErrorCode.PEER_ID_IN_USE, message: 'peer id in use in this room' }))
      log(`conn=${c.id} join refused room=${topicLabel(op.topic)}: peer id in use`)
      return
    }
    if (members !== undefined && members.size + (remotes.get(op.topic)?.size ?? 0) >= maxPeersPerRoom) {
      if (cluster !== undefined && remote !== undefined) cluster.leave(op.topic, op.peer, false)
      push(out, c, encodeServerOp({ op: 'error', code: RelayErrorCode.ROOM_FULL, message: 'room full' }))
      log(`conn=${c.id} join refused room=${topicLabel(op.topic)}: room full`)
      return
    }
    if (members === undefined) rooms.set(op.topic, (members = new Map()))
    let others = remotes.get(op.topic)
    others?.delete(op.peer) // a peer back from a dead server: it is ours now (its old entry must not DOWN it later)
    if (remote !== undefined && remote.size > 0) {
      if (others === undefined) remotes.set(op.topic, (others = new Map()))
      for (const [p, n] of remote) if (!members.has(p) && p !== op.peer) others.set(p, n)
    }
    push(out, c, welcome)
    const present = [...members.keys(), ...(others?.keys() ?? [])]
    for (let i = 0; i < present.length; i += 256) push(out, c, encodeServerOp({ op: 'peers', peers: present.slice(i, i + 256) }))
    const up = encodeServerOp({ op: 'up', peer: op.peer })
    for (const m of members.values()) push(out, m, up)
    members.set(op.peer, c)
    const membership = (c.relay = { topic: op.topic, peer: op.peer, members })
    cluster?.announce(op.topic, op.peer)
    log(`conn=${c.id} join room=${topicLabel(op.topic)} peers=${members.size}${others ? `+${others.size}` : ''}`)
    if (store !== undefined && c.version >= 2) {
      store.info(op.topic).then(
        (info) => c.relay === membership && reply(c, { op: 'store', storeId: store.id, head: info.head, bytes: info.bytes }),
        (err: unknown) => storeFailure(c, err),
      )
    }
  }

  /**
   * A JOIN that needs asynchronous work — the access check, the peer id's claim across the cluster — while the
   * connection's other messages wait.
   */
  function beginJoin(c: Conn, op: Extract<RelayClientOp, { op: 'join' }>, ops: readonly RelayClientOp[], next: number): void {
    c.held = []
    const token = Buffer.from(op.token ?? new Uint8Array(0))
    const request: JoinRequest = { token, tokenText: token.toString('utf8'), topic: op.topic, peer: op.peer, remote: c.remote }
    const tokenOk = tokens.length === 0 || tokens.some((t) => t.byteLength === token.byteLength && timingSafeEqual(t, token))
    Promise.resolve()
      .then(() => tokenOk && (authenticate === undefined || authenticate(request)))
      .catch((err: unknown) => {
        log(`conn=${c.id} authenticate threw: ${(err as Error)?.message ?? String(err)}`)
        return false
      })
      .then(async (admitted) => {
        if (c.closed) return
        if (admitted !== true) {
          counters.denied++
          log(`conn=${c.id} join denied room=${topicLabel(op.topic)}`)
          reply(c, { op: 'error', code: RelayErrorCode.ACCESS_DENIED, message: 'access denied' })
          drop(c, ServerCloseCode.POLICY_VIOLATION, 'access denied')
          return
        }
        let remote: Map<string, string> | undefined
        if (cluster !== undefined && !rooms.get(op.topic)?.has(op.peer)) {
          remote = await cluster.join(op.topic, op.peer)
          if (remote === undefined) {
            if (!rooms.has(op.topic)) cluster.leave(op.topic, op.peer, true) // unsubscribes (its DOWN is ignored: not ours)
            log(`conn=${c.id} join refused room=${topicLabel(op.topic)}: peer id in use on another server`)
            reply(c, { op: 'error', code: RelayErrorCode.PEER_ID_IN_USE, message: 'peer id in use in this room' })
          } else if (c.closed) {
            cluster.leave(op.topic, op.peer, !rooms.has(op.topic))
            return
          }
        }
        const held = c.held ?? []
        c.held = undefined
        const out: Outbox = new Map()
        if (cluster === undefined || remote !== undefined || rooms.get(op.topic)?.has(op.peer)) join(c, op, out, remote)
        flush(out)
        handleOps(c, ops, next)
        while (held.length > 0 && !c.closed) {
          const m = held.shift()!
          const again = c.held as { buf: Buffer; isBinary: boolean }[] | undefined
          if (again !== undefined) again.push(m) // another JOIN is being checked: keep the order
          else handle(c, m.buf, m.isBinary, Date.now())
        }
      })
      .catch((err: unknown) => {
        log(`conn=${c.id} internal error ${(err as Error)?.message ?? String(err)}`)
        drop(c, ServerCloseCode.INTERNAL_ERROR, 'internal error')
      })
  }

  // -- store --------------------------------------------------------------------------------------------------------

  /** Starts a store op; returns a protocol problem (the caller closes the connection), or undefined. */
  function storeOp(c: Conn, op: Extract<RelayClientOp, { op: 'put' | 'fetch' | 'compact' }>): string | undefined {
    const r = c.relay
    if (store === undefined) return `${op.op.toUpperCase()} on a server without a store`
    if (r === undefined) return `${op.op.toUpperCase()} outside a room`
    const topic = r.topic
    if (op.op === 'fetch') {
      store.range(topic, op.after, maxMessageBytes - 64).then((page) => {
        const out: Outbox = new Map()
        for (const b of page.blobs) push(out, c, encodeServerOp({ op: 'blob', id: op.id, seq: b.seq, blob: b.blob }))
        push(out, c, encodeServerOp({ op: 'fetched', id: op.id, upto: page.upto, more: page.more, bytes: page.bytes }))
        counters.served += page.blobs.length
        flush(out)
      }, (err: unknown) => storeFailure(c, err))
      return undefined
    }
    const bad = blobProblem(op.blob)
    if (bad !== undefined) {
      refuse(c, RelayErrorCode.MALFORMED_UPLOAD, bad)
      return undefined
    }
    if (op.op === 'put') {
      store.put(topic, op.blob, storeLimits).then(({ seq, bytes }) => {
        counters.stored++
        reply(c, { op: 'stored', id: op.id, seq, bytes })
      }, (err: unknown) => storeFailure(c, err))
      return undefined
    }
    let job = c.compacting
    if (op.part === 0) {
      if (job !== undefined) return refuse(c, RelayErrorCode.MALFORMED_UPLOAD, 'COMPACT part 0 while another compaction is incomplete')
      job = c.compacting = { id: op.id, upto: op.upto, count: op.count, blobs: [], bytes: 0 }
    } else if (job === undefined || job.id !== op.id || job.upto !== op.upto || job.count !== op.count || job.blobs.length !== op.part) {
      return refuse(c, RelayErrorCode.MALFORMED_UPLOAD, 'COMPACT parts out of order')
    }
    job.blobs.push(op.blob)
    job.bytes += op.blob.byteLength
    if (job.bytes > storeLimits.maxRoomBytes) return refuse(c, RelayErrorCode.QUOTA_EXCEEDED, 'compaction larger than the room limit')
    if (job.blobs.length < job.count) return undefined
    c.compacting = undefined
    const { id, upto, blobs } = job
    store.compact(topic, upto, blobs, storeLimits).then((res) => {
      if (res.applied) counters.compactions++
      log(`conn=${c.id} compact room=${topicLabel(topic)} upto=${upto} parts=${blobs.length} applied=${res.applied} bytes=${res.bytes}`)
      reply(c, { op: 'compacted', id, applied: res.applied, bytes: res.bytes })
    }, (err: unknown) => storeFailure(c, err))
    return undefined
  }

  /** Why a blob cannot be stored (see the Store section of the relay spec), or undefined. */
  function blobProblem(blob: Uint8Array): string | undefined {
    if (blob.byteLength < 2) return 'a blob needs at least 2 bytes'
    if (blob[0] !== BLOB_PLAIN && blob[0] !== BLOB_SEALED) return `not a blob (first byte 0x${blob[0]!.toString(16)})`
    if (blob[0] === BLOB_SEALED && blob.byteLength < 1 + SEAL_OVERHEAD + 4) return 'a sealed blob too short to hold anything'
    return undefined
  }

  function storeFailure(c: Conn, err: unknown): void {
    if (err instanceof StoreLimitError) {
      refuse(c, RelayErrorCode[err.code], err.message)
      return
    }
    log(`conn=${c.id} store error ${(err as Error)?.message ?? String(err)}`)
    refuse(c, RelayErrorCode.STORE_FAILED, 'the store failed')
  }

  /** Sends ERROR(code) and closes only this connection. */
  function refuse(c: Conn, code: number, message: string): undefined {
    if (c.closed) return undefined
    log(`conn=${c.id} store refused code=${code} ${message}`)
    reply(c, { op: 'error', code, message })
    drop(c, ServerCloseCode.POLICY_VIOLATION, message)
    return undefined
  }

  /** Sends one op to one connection now. */
  function reply(c: Conn, op: Parameters<typeof encodeServerOp>[0]): void {
    const out: Outbox = new Map()
    push(out, c, encodeServerOp(op))
    flush(out)
  }

  function leaveRoom(c: Conn, out: Outbox): void {
    const r = c.relay
    if (r === undefined) return
    c.relay = undefined
    if (r.members.get(r.peer) !== c) return
    r.members.delete(r.peer)
    cluster?.leave(r.topic, r.peer, r.members.size === 0)
    if (r.members.size === 0) {
      if (rooms.get(r.topic) === r.members) rooms.delete(r.topic)
      remotes.delete(r.topic)
      return
    }
    const down = encodeServerOp({ op: 'down', peer: r.peer })
    for (const m of r.members.values()) push(out, m, down)
  }

  function push(out: Outbox, to: Conn, bytes: Uint8Array, droppable = false): void {
    let list = out.get(to)
    if (list === undefined) out.set(to, (list = []))
    list.push({ bytes, droppable })
  }

  /** Sends each receiver its ops, packed into as few messages as maxMessageBytes / RELAY_MAX_OPS allow. */
  function flush(out: Outbox): void {
    for (const [to, items] of out) {
      if (to.closed || to.ws.readyState !== 1) continue
      const slow = congested(to, Date.now())
      if (to.closed) continue
      let batch: Uint8Array[] = []
      let size = 1
      const emit = (): void => {
        if (batch.length === 0) return
        try {
          corkUntilTick(to)
          to.ws.send(encodeRelayMessage(batch, to.version || RELAY_PROTOCOL_VERSION))
        } catch {
          drop(to, ServerCloseCode.INTERNAL_ERROR, 'send failed')
        }
        batch = []
        size = 1
      }
      for (const item of items) {
        if (item.droppable) {
          if (slow) {
            counters.droppedSlow++
            continue
          }
          counters.forwarded++
        }
        if (batch.length > 0 && (size + item.bytes.byteLength > maxMessageBytes || batch.length >= RELAY_MAX_OPS)) emit()
        batch.push(item.bytes)
        size += item.bytes.byteLength
      }
      emit()
    }
  }

  // -- cluster (scale-out over Redis) -------------------------------------------------------------------------------

  function remoteUp(topic: string, peer: string, node: string): void {
    const members = rooms.get(topic)
    if (members === undefined || members.has(peer)) return
    let others = remotes.get(topic)
    if (others === undefined) remotes.set(topic, (others = new Map()))
    const known = others.has(peer)
    others.set(peer, node)
    if (known) return
    const out: Outbox = new Map()
    const up = encodeServerOp({ op: 'up', peer })
    for (const m of members.values()) push(out, m, up)
    flush(out)
  }

  function remoteDown(topic: string, peer: string, node: string): void {
    const others = remotes.get(topic)
    if (others?.get(peer) !== node) return
    others.delete(peer)
    const members = rooms.get(topic)
    if (members === undefined || members.has(peer)) return
    const out: Outbox = new Map()
    const down = encodeServerOp({ op: 'down', peer })
    for (const m of members.values()) push(out, m, down)
    flush(out)
  }

  function remoteFrame(topic: string, from: string, to: string | undefined, payload: Uint8Array): void {
    const members = rooms.get(topic)
    if (members === undefined || !remotes.get(topic)?.has(from)) return // never a FROM before its sender's UP
    const out: Outbox = new Map()
    const frame = encodeServerOp({ op: 'from', from, payload })
    if (to !== undefined) {
      const m = members.get(to)
      if (m !== undefined) push(out, m, frame, true)
    } else {
      for (const m of members.values()) push(out, m, frame, true)
    }
    flush(out)
  }

  /** Peers of server processes that died without a word (their liveness key expired) are reported down. */
  const reaper =
    cluster &&
    setInterval(() => {
      const nodes = new Set<string>()
      for (const others of remotes.values()) for (const n of others.values()) nodes.add(n)
      if (nodes.size === 0) return
      cluster.dead(nodes).then((dead) => {
        for (const [topic, others] of remotes) {
          for (const [peer, node] of others) {
            if (!dead.has(node)) continue
            log(`cluster node ${node} is gone: its peer leaves room=${topicLabel(topic)}`)
            remoteDown(topic, peer, node)
            cluster.forget(topic, peer, node)
          }
        }
      }, (err: unknown) => log(`cluster error ${(err as Error)?.message}`))
    }, 1000)
  if (reaper) reaper.unref()

  // -- liveness -----------------------------------------------------------------------------------------------------

  const sweep = setInterval(() => {
    const now = Date.now()
    for (const c of conns) {
      if (c.closed) continue
      if (congested(c, now) && c.closed) continue
      const silent = now - c.lastSeen
      if (silent > 2 * pingIntervalMs) {
        counters.timeouts++
        log(`conn=${c.id} timeout silent=${silent}ms`)
        c.closed = true
        c.closeReason = 'timeout'
        detach(c)
        c.ws.terminate()
        continue
      }
      try {
        c.ws.ping()
      } catch {
        // The close event follows.
      }
    }
  }, pingIntervalMs)
  sweep.unref()

  // -- listen -------------------------------------------------------------------------------------------------------

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      clearInterval(sweep)
      reject(err)
    }
    http.once('error', onError)
    http.listen(port, host, () => {
      http.off('error', onError)
      resolve()
    })
  })
  http.on('error', (err) => log(`server error ${err.message}`))
  const address = http.address() as AddressInfo
  const boundPort = address.port
  const url = formatUrl('ws', host, boundPort)
  log(`listening on ${url}`)

  return {
    url,
    host,
    port: boundPort,
    stats: () => ({
      clients: conns.size,
      signalingTopics: topics.size,
      relayRooms: rooms.size,
      ...counters,
    }),
    close(): Promise<void> {
      closing ??= (async () => {
        clearInterval(sweep)
        const open = [...conns]
        for (const c of open) {
          c.closed = true
          c.closeReason ??= 'shutdown'
          c.closeCode ??= ServerCloseCode.GOING_AWAY
          detach(c)
        }
        for (const c of open) {
          try {
            c.ws.close(ServerCloseCode.GOING_AWAY, 'server shutting down')
          } catch {
            c.ws.terminate()
          }
        }
        const closed = new Promise<void>((resolve) => http.close(() => resolve()))
        http.closeIdleConnections()
        // Give clients a moment for the closing handshake, then cut whatever is left.
        const deadline = Date.now() + 1000
        while (conns.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
        for (const c of conns) c.ws.terminate()
        http.closeAllConnections()
        await closed
        wss.close()
        if (reaper) clearInterval(reaper)
        await cluster?.close().catch((err: unknown) => log(`cluster close failed: ${(err as Error)?.message}`))
        if (ownsStore) await store?.close().catch((err: unknown) => log(`store close failed: ${(err as Error)?.message}`))
        log('closed')
      })()
      return closing
    },
  }
}
