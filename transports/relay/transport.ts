/**
 * The relay transport: one WebSocket to a relay server, joined to one room. It connects and joins, reconnects with
 * jittered exponential backoff (trying the next server of a list), keeps the connection alive with PINGs, applies
 * what the server sends (membership, frames, refusals) and reports peers up and down. Sending is ./send-queue.ts,
 * the store requests ./store.ts, the codec ./wire.ts.
 */
import { AccessDeniedError, FrameTooLargeError, PeerIdInUseError, StoreRefusedError, TransportArgumentError, TransportError, TransportStateError, toError } from '../errors.js'
import { TransportListeners } from '../listeners.js'
import type { FrameListener, PeerId, PeerListener, RoomContext, RoomStoreLink } from '../types.js'
import { SendQueue } from './send-queue.js'
import { closeSocket, resolveWebSocket, unref } from './socket.js'
import { RelayStoreClient } from './store.js'
import {
  DEFAULT_RELAY_MAX_FRAME_SIZE,
  type RelayTransport,
  type RelayTransportInit,
  type RelayTransportStats,
  type WebSocketConstructorLike,
  type WebSocketLike,
} from './types.js'
import { RELAY_PROTOCOL_VERSION, RelayErrorCode, RelayProtocolError, type RelayServerOp, decodeServerMessage, encodeClientOp, encodeRelayMessage, relayIdBytes } from './wire.js'

const EMPTY = new Uint8Array(0)
const utf8Encoder = new TextEncoder()

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback
  if (!Number.isSafeInteger(v) || v < 1) throw new TransportArgumentError(`${name} must be a positive integer, got ${String(v)}`)
  return v
}

/** The {@link RelayTransport} behind `relayTransport()`. */
export class RelayTransportImpl implements RelayTransport {
  readonly maxFrameSize: number
  readonly store: RoomStoreLink | undefined
  private readonly urls: readonly string[]
  private urlIndex = 0
  private readonly token: RelayTransportInit['token']
  private readonly minDelay: number
  private readonly maxDelay: number
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

  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  private connectTimer: ReturnType<typeof setTimeout> | undefined
  private keepAliveTimer: ReturnType<typeof setInterval> | undefined

  private readonly listeners = new TransportListeners()
  /** Servers that refused a version-2 message: they get version-1 JOINs (no store, no token). */
  private readonly v1Servers = new Set<string>()
  /** The version byte of this connection's messages. */
  private wireVersion = RELAY_PROTOCOL_VERSION

  private counters = { sentFrames: 0, receivedFrames: 0, dropped: 0, messagesOut: 0, joins: 0, connectAttempts: 0 }
  private readonly outbox: SendQueue
  private readonly storeClient: RelayStoreClient

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
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this
    this.storeClient = new RelayStoreClient({
      get url() {
        return self.url
      },
      get maxFrameSize() {
        return self.maxFrameSize
      },
      get connected() {
        return self.connected
      },
      maxMessageBytes: () => this.outbox.limits?.maxMessageBytes,
      enqueue: (op) => this.outbox.enqueue(op),
      listenerError: (error) => this.listenerError(error),
    })
    this.store = init.store === true ? this.storeClient.link() : undefined
    this.maxFrameSize = positiveInt('maxFrameSize', init.maxFrameSize, DEFAULT_RELAY_MAX_FRAME_SIZE)
    this.minDelay = positiveInt('minReconnectDelayMs', init.minReconnectDelayMs, 250)
    this.maxDelay = Math.max(this.minDelay, positiveInt('maxReconnectDelayMs', init.maxReconnectDelayMs, 5000))
    this.outbox = new SendQueue(positiveInt('maxQueuedBytes', init.maxQueuedBytes, 8 << 20), {
      socket: () => (this.state === 'started' && this.joined ? this.ws : undefined),
      wireVersion: () => this.wireVersion,
      counters: this.counters,
      report: (error) => this.report(error),
    })
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
    clearInterval(this.keepAliveTimer)
    this.reconnectTimer = this.connectTimer = this.keepAliveTimer = undefined
    this.outbox.clear('stopped')
    this.peers.clear() // the stopped side hears nothing more, not even peer:down
    this.joined = false
    this.storeClient.stopped(new TransportStateError('relay transport stopped'))
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
    this.outbox.enqueue(encodeClientOp({ op: 'send', to: peer, payload: frame }))
  }

  broadcast(frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkSize(frame)
    if (!this.joined || this.peers.size === 0) return
    this.counters.sentFrames++
    this.outbox.enqueue(encodeClientOp({ op: 'broadcast', payload: frame }))
  }

  private checkSize(frame: Uint8Array): void {
    if (!(frame instanceof Uint8Array)) throw new TransportArgumentError('frame must be a Uint8Array')
    if (frame.byteLength > this.maxFrameSize) throw new FrameTooLargeError(frame.byteLength, this.maxFrameSize)
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
      this.report(toError(error))
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
        (error: unknown) => this.report(toError(error)),
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
    this.storeClient.connectionLost(new TransportError(`relay ${this.url}: connection lost`))
    // Several servers: try the next one (the one we lost may be down).
    this.urlIndex = (this.urlIndex + 1) % this.urls.length
    clearTimeout(this.connectTimer)
    this.connectTimer = undefined
    this.outbox.clear('lost')
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
      this.outbox.enqueue(encodeClientOp({ op: 'ping', nonce: this.nonce }))
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
      return this.protocolFailure(toError(error))
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
        this.outbox.welcome(l)
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
        if (error instanceof StoreRefusedError) this.storeClient.refused(error)
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
        return this.storeClient.apply(op)
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
    if (this.onError) return this.report(toError(error))
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
