/** The options of `startServer` ({@link ServerInit}), and their validation into the values the server runs with. */
import { InvalidArgumentError } from '../../crdt/errors.js'
import type { BlobStore, StoreLimits } from './store.js'

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

/** {@link ServerInit}, checked, with every default filled in. */
export interface ServerOptions {
  readonly host: string
  readonly port: number
  readonly maxMessageBytes: number
  /** Ops per second and ops burst of each connection. */
  readonly rate: number
  readonly rateBurst: number
  /** Bytes per second and bytes burst of each connection. */
  readonly bytesRate: number
  readonly bytesBurst: number
  readonly pingIntervalMs: number
  readonly maxConnections: number
  readonly maxTopicsPerConnection: number
  readonly maxTopicLength: number
  readonly maxPeersPerRoom: number
  readonly maxBufferedBytes: number
  readonly slowConsumerMs: number
  readonly storeLimits: StoreLimits
  /** The shared access tokens, as UTF-8 bytes. */
  readonly tokens: readonly Buffer[]
  readonly authenticate: ServerInit['authenticate']
}

function positive(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new InvalidArgumentError(`${name} must be a positive number, got ${String(v)}`)
  return v
}

function positiveInt(name: string, value: number | undefined, fallback: number, max = 0xffffffff): number {
  const v = positive(name, value, fallback)
  if (!Number.isSafeInteger(v) || v > max) throw new InvalidArgumentError(`${name} must be an integer in 1..${max}, got ${v}`)
  return v
}

/** Checks the options and fills in the defaults; throws before the server opens anything. */
export function resolveServerOptions(init: ServerInit): ServerOptions {
  const host = init.host ?? '127.0.0.1'
  if (typeof host !== 'string' || host === '') throw new InvalidArgumentError('host must be a non-empty string')
  const port = init.port ?? 4444
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`port must be an integer in 0..65535, got ${String(port)}`)
  const maxMessageBytes = positiveInt('maxMessageBytes', init.maxMessageBytes, 128 * 1024)
  if (maxMessageBytes < 1024) throw new InvalidArgumentError('maxMessageBytes must be at least 1024')
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
  const storeLimits: StoreLimits = {
    maxRoomBytes: positiveInt('maxRoomBytes', init.maxRoomBytes, 64 << 20, Number.MAX_SAFE_INTEGER),
    maxStoreBytes: positiveInt('maxStoreBytes', init.maxStoreBytes, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
  }
  const tokens = (init.tokens ?? []).map((t) => Buffer.from(t, 'utf8'))
  if (tokens.some((t) => t.byteLength === 0)) throw new InvalidArgumentError('tokens must be non-empty strings')
  return {
    host,
    port,
    maxMessageBytes,
    rate,
    rateBurst,
    bytesRate,
    bytesBurst,
    pingIntervalMs,
    maxConnections,
    maxTopicsPerConnection,
    maxTopicLength,
    maxPeersPerRoom,
    maxBufferedBytes,
    slowConsumerMs,
    storeLimits,
    tokens,
    authenticate: init.authenticate,
  }
}
