/**
 * The WebRTC transport itself ({@link WebRTCTransportImpl}): options, `start` / `stop`, the `Transport` surface and
 * `status()`, the room's signaling (announce, leave, signals; sealed with the room key in an encrypted room) and the
 * upkeep of the bounded overlay. Its parts: connections.ts (peer connection lifecycle), frames.ts (frame queue and
 * backpressure), membership.ts (members and overlay view), signaling.ts (the signaling server client),
 * messages.ts (signaling payloads), runtime.ts (the WebRTC and WebSocket implementations).
 */
import { FrameTooLargeError, TransportArgumentError, TransportStateError, toError } from '../errors.js'
import { TransportListeners } from '../listeners.js'
import { positiveInt } from '../options.js'
import { compareIds } from '../overlay.js'
import type { FrameListener, PeerId, PeerListener, RoomContext } from '../types.js'
import { type Conn, type ConnectionsHost, PeerConnections } from './connections.js'
import { Backpressure, frameOf } from './frames.js'
import { Membership } from './membership.js'
import { MAX_ID_CHARS, SealedSignals, type Signal, isId, parseIncoming, randomToken } from './messages.js'
import { type PeerConnectionCtor, defaultRtc, defaultWebSocket } from './runtime.js'
import { type BackoffInit, SignalingClient, type WebSocketConstructor } from './signaling.js'
import { type IceServer, WEBRTC_MAX_FRAME_SIZE, type WebRTCStatus, type WebRTCTransport, type WebRTCTransportInit } from './types.js'

const TICK_MS = 250

/**
 * The transport {@link webrtcTransport} returns. Its parts reach what they share through the host interface it
 * implements (`ConnectionsHost`); none of that is public API.
 */
export class WebRTCTransportImpl implements WebRTCTransport, ConnectionsHost {
  readonly maxFrameSize: number
  private readonly urls: readonly string[]
  readonly iceServers: IceServer[]
  readonly maxPeers: number
  readonly connectTimeoutMs: number
  readonly maxBuffered: number
  private readonly backoff: Required<BackoffInit>
  private readonly announceIntervalMs: number
  private readonly pingIntervalMs: number
  private readonly maxSignalChars: number
  private readonly politeDelayMs: number

  private state: 'idle' | 'starting' | 'started' | 'stopped' = 'idle'
  /** Incremented by every start and stop: async work of an older generation stands down. */
  private generation = 0
  private room = ''
  self: PeerId | undefined
  private session = ''
  Pc: PeerConnectionCtor | undefined
  private signaling: SignalingClient[] = []
  private tickTimer: ReturnType<typeof setInterval> | undefined
  private lastAnnounce = 0
  private maintainQueued = false
  /** Ends start()'s wait for a first signaling connection (called by stop()). */
  private releaseStart: (() => void) | undefined
  private readonly listeners = new TransportListeners()
  readonly frames: Backpressure
  readonly membership: Membership
  private readonly conns: PeerConnections
  /** Signaling payloads sealed with the room key (encrypted rooms only). */
  private readonly sealed = new SealedSignals()
  /** The room key (encrypted rooms only) and where to report payloads that do not open. */
  private onError: ((error: Error, peer?: PeerId) => void) | undefined

  constructor(private readonly init: WebRTCTransportInit) {
    if (init === null || typeof init !== 'object') throw new TransportArgumentError('webrtcTransport() needs an init object')
    const urls = init.signaling
    if (!Array.isArray(urls) || urls.length === 0) throw new TransportArgumentError('signaling must be a non-empty array of ws:// or wss:// URLs')
    for (const u of urls) {
      if (typeof u !== 'string' || !/^wss?:\/\/./i.test(u)) throw new TransportArgumentError(`not a ws:// or wss:// URL: ${JSON.stringify(u)}`)
    }
    this.urls = [...new Set(urls as string[])]
    this.iceServers = (init.iceServers ?? []).map((s) => ({ ...s }))
    this.maxPeers = positiveInt('maxPeers', init.maxPeers, 20, 2)
    this.connectTimeoutMs = positiveInt('connectTimeoutMs', init.connectTimeoutMs, 5000)
    this.maxFrameSize = positiveInt('maxFrameSize', init.maxFrameSize, WEBRTC_MAX_FRAME_SIZE)
    if (this.maxFrameSize > WEBRTC_MAX_FRAME_SIZE) throw new TransportArgumentError(`maxFrameSize must be at most ${WEBRTC_MAX_FRAME_SIZE}`)
    this.maxBuffered = positiveInt('maxBufferedBytes', init.maxBufferedBytes, 1024 * 1024)
    const maxQueued = positiveInt('maxQueuedBytes', init.maxQueuedBytes, 2 * 1024 * 1024, 0)
    this.backoff = {
      initialMs: positiveInt('reconnect.initialMs', init.reconnect?.initialMs, 500),
      maxMs: positiveInt('reconnect.maxMs', init.reconnect?.maxMs, 30_000),
    }
    if (this.backoff.maxMs < this.backoff.initialMs) throw new TransportArgumentError('reconnect.maxMs must be >= reconnect.initialMs')
    this.announceIntervalMs = positiveInt('announceIntervalMs', init.announceIntervalMs, 15_000)
    this.pingIntervalMs = positiveInt('pingIntervalMs', init.pingIntervalMs, 10_000)
    this.maxSignalChars = positiveInt('maxSignalBytes', init.maxSignalBytes, 65_536, 1024)
    if (init.rtc !== undefined && typeof init.rtc?.RTCPeerConnection !== 'function') {
      throw new TransportArgumentError('rtc must provide an RTCPeerConnection constructor')
    }
    if (init.WebSocket !== undefined && typeof init.WebSocket !== 'function') throw new TransportArgumentError('WebSocket must be a constructor')
    this.politeDelayMs = Math.min(1000, Math.floor(this.connectTimeoutMs / 2))
    this.frames = new Backpressure(this.maxBuffered, maxQueued)
    this.membership = new Membership(this.backoff)
    this.conns = new PeerConnections(this)
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Transport API

  get started(): boolean {
    return this.state === 'started'
  }

  async start(room: RoomContext): Promise<void> {
    if (this.state === 'started' || this.state === 'starting') {
      throw new TransportStateError(`transport already started as ${JSON.stringify(this.self)}; stop() it first`)
    }
    if (room === null || typeof room !== 'object') throw new TransportArgumentError('start() needs a RoomContext')
    if (typeof room.room !== 'string' || room.room === '') throw new TransportArgumentError('room must be a non-empty string')
    if (!isId(room.peerId)) throw new TransportArgumentError(`peerId must be a non-empty string of at most ${MAX_ID_CHARS} characters`)
    if (room.cipher !== undefined && (typeof room.cipher?.seal !== 'function' || typeof room.cipher.open !== 'function')) {
      throw new TransportArgumentError('cipher must have seal() and open()')
    }
    this.state = 'starting'
    const generation = ++this.generation
    let ws: { ctor: WebSocketConstructor; options?: object }
    try {
      const rtc = this.init.rtc ?? (await defaultRtc())
      this.Pc = rtc.RTCPeerConnection as unknown as PeerConnectionCtor
      ws = this.init.WebSocket ? { ctor: this.init.WebSocket } : await defaultWebSocket()
    } catch (error) {
      if (this.generation === generation) this.state = 'idle'
      throw error
    }
    if (this.generation !== generation) return // stopped while loading
    this.state = 'started'
    this.room = room.room
    this.self = room.peerId
    this.session = randomToken()
    this.sealed.use(room.cipher, room.room)
    this.onError = room.onError
    let ready!: () => void
    const opened = new Promise<void>((resolve) => (ready = resolve))
    this.signaling = this.urls.map(
      (url) =>
        new SignalingClient({
          url,
          topic: this.room,
          WebSocket: ws.ctor,
          socketOptions: ws.options,
          backoff: this.backoff,
          maxMessageChars: this.maxSignalChars,
          pingIntervalMs: this.pingIntervalMs,
          onOpen: () => {
            ready()
            this.announceOn(url)
          },
          onData: (data) => this.onSignalingData(data),
        }),
    )
    for (const s of this.signaling) s.start()
    this.tickTimer = setInterval(() => this.tick(), TICK_MS)
    // Ready once a signaling server is reachable; an unreachable one does not fail start (it keeps retrying).
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([
      opened,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.connectTimeoutMs)
        this.releaseStart = resolve
      }),
    ])
    clearTimeout(timer)
    this.releaseStart = undefined
  }

  async stop(): Promise<void> {
    if (this.state !== 'started' && this.state !== 'starting') return
    const wasStarted = this.state === 'started'
    this.state = 'stopped'
    this.generation++
    this.releaseStart?.()
    clearInterval(this.tickTimer)
    this.tickTimer = undefined
    const sockets = this.signaling
    this.signaling = []
    this.conns.closeAll()
    this.membership.clear()
    if (wasStarted) {
      const leave = { type: 'leave', from: this.self, session: this.session }
      if (!this.sealed.enabled) for (const s of sockets) s.publish(leave)
      // Sealing is asynchronous: the sockets stay open until the sealed leave is out (a new start() makes new ones).
      else await this.sealed.seal(leave).then((sealed) => sockets.forEach((s) => s.publish(sealed)), () => undefined)
    }
    for (const s of sockets) s.close()
  }

  send(peer: PeerId, frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkFrame(frame)
    const conn = this.conns.get(peer)
    if (conn?.open) this.frames.send(conn, frame)
  }

  broadcast(frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkFrame(frame)
    for (const conn of this.conns.all()) if (conn.open) this.frames.send(conn, frame)
  }

  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  on(event: 'frame', fn: FrameListener): () => void
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    return this.listeners.on(event, fn)
  }

  connectedPeers(): PeerId[] {
    return this.conns.all().filter((c) => c.open).map((c) => c.peer)
  }

  status(): WebRTCStatus {
    const wanted = this.state === 'started' ? this.wanted(Date.now()) : new Set<PeerId>()
    return {
      peerId: this.self,
      started: this.state === 'started',
      signaling: this.signaling.map((s) => ({ url: s.url, connected: s.connected, opens: s.opens })),
      peers: this.conns.all().map((c) => ({
        id: c.peer,
        state: c.open ? 'open' : 'connecting',
        initiator: c.initiator,
        bufferedAmount: c.closed ? 0 : c.dc.bufferedAmount,
        queuedBytes: c.queue.bytes,
        wanted: wanted.has(c.peer),
      })),
      members: this.membership.ids(),
      dropped: this.frames.dropped,
    }
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Signaling

  private announceOn(url: string): void {
    this.publish({ type: 'announce', from: this.self, session: this.session }, url)
  }

  private announce(): void {
    this.lastAnnounce = Date.now()
    this.publish({ type: 'announce', from: this.self, session: this.session })
  }

  /** Publishes on every signaling socket (or the one of `url`), sealed first in an encrypted room. */
  private publish(data: unknown, url?: string): void {
    const targets = (): SignalingClient[] => (url === undefined ? this.signaling : this.signaling.filter((s) => s.url === url))
    if (!this.sealed.enabled) {
      for (const s of targets()) s.publish(data)
      return
    }
    const gen = this.generation
    this.sealed.sealInOrder(
      data,
      (payload) => {
        if (gen === this.generation) for (const s of targets()) s.publish(payload)
      },
      (error: unknown) => {
        if (gen === this.generation) this.report(toError(error))
      },
    )
  }

  /** A signaling payload in an encrypted room: opened (in arrival order), then handled like a plain one. */
  private onSealedData(data: unknown): void {
    const gen = this.generation
    this.sealed.openInOrder(
      data,
      (message) => {
        if (gen !== this.generation || this.state !== 'started') return
        try {
          this.onPlainData(message)
        } catch (error) {
          setTimeout(() => {
            throw error // a bug of ours, surfaced as the plain path surfaces it
          }, 0)
        }
      },
      (error) => {
        if (gen === this.generation) this.report(error)
      },
    )
  }

  private report(error: Error): void {
    if (!this.onError) return // nobody to tell: the payload is ignored, as malformed ones are
    try {
      this.onError(error)
    } catch {
      // the sink failed: nothing sensible left to do
    }
  }

  sendSignal(to: PeerId, token: string, signal: Signal): void {
    this.publish({ type: 'signal', from: this.self, to, token, session: this.session, signal })
  }

  private onSignalingData(data: unknown): void {
    if (this.state !== 'started') return
    if (this.sealed.enabled) this.onSealedData(data)
    else this.onPlainData(data)
  }

  private onPlainData(data: unknown): void {
    const msg = parseIncoming(data)
    if (!msg || msg.from === this.self) return
    switch (msg.type) {
      case 'announce':
        return this.onAnnounce(msg.from, msg.session, msg.to)
      case 'leave':
        return this.onLeave(msg.from, msg.session)
      case 'signal':
        if (msg.to !== this.self) return
        return this.conns.onSignal(msg.from, msg.token, msg.session, msg.signal)
    }
  }

  private onAnnounce(from: PeerId, session: string, to: PeerId | undefined): void {
    const seen = this.membership.announced(from, session)
    if (seen === 'known' || seen === 'full') return
    if (seen === 'restarted') {
      // The peer restarted: a connection to its previous incarnation is dead weight.
      const conn = this.conns.get(from)
      if (conn && conn.remoteSession !== undefined && conn.remoteSession !== session) this.conns.teardown(conn)
    }
    // Tell a newcomer we exist (once per incarnation), so that it learns the whole room from one announce.
    if (to === undefined) this.publish({ type: 'announce', from: this.self, session: this.session, to: from })
    this.scheduleMaintain()
  }

  private onLeave(from: PeerId, session: string | undefined): void {
    if (!this.membership.left(from, session)) return // a stale leave of an older incarnation
    const conn = this.conns.get(from)
    if (conn && (session === undefined || conn.remoteSession === undefined || conn.remoteSession === session)) this.conns.teardown(conn)
    this.scheduleMaintain()
  }

  /** The peers the overlay wants, from the members not currently backing off. */
  wanted(now: number): Set<PeerId> {
    return this.membership.wanted(this.self!, now, this.maxPeers, (id) => this.conns.isOpen(id))
  }

  scheduleMaintain(): void {
    if (this.maintainQueued) return
    this.maintainQueued = true
    queueMicrotask(() => {
      this.maintainQueued = false
      this.maintain()
    })
  }

  /** Opens connections to wanted peers that lack one (making room when needed). */
  private maintain(): void {
    if (this.state !== 'started' || !this.signaling.some((s) => s.connected)) return
    const now = Date.now()
    const wanted = this.wanted(now)
    for (const peer of wanted) {
      if (this.conns.has(peer)) continue
      const m = this.membership.get(peer)
      if (!m || m.retryAt > now) continue
      // The smaller id is the usual offerer; the larger one waits a moment for its offer before trying itself.
      if (compareIds(this.self!, peer) > 0 && m.failures === 0 && now - m.knownSince < this.politeDelayMs) continue
      if (this.conns.size >= this.maxPeers && !this.conns.makeRoomFor(peer)) break
      void this.conns.offer(peer)
    }
  }

  private tick(): void {
    if (this.state !== 'started') return
    const now = Date.now()
    if (now - this.lastAnnounce >= this.announceIntervalMs) this.announce()
    this.membership.expire(now, 3 * this.announceIntervalMs, (id) => this.conns.isOpen(id), (id) => this.conns.has(id))
    this.conns.expireEarly(now, this.connectTimeoutMs)
    this.maintain()
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Frames


  private checkFrame(frame: Uint8Array): void {
    if (!(frame instanceof Uint8Array)) throw new TransportArgumentError('frame must be a Uint8Array')
    if (frame.byteLength > this.maxFrameSize) throw new FrameTooLargeError(frame.byteLength, this.maxFrameSize)
  }


  onMessage(conn: Conn, data: unknown): void {
    if (conn.closed || this.state !== 'started') return
    const frame = frameOf(data)
    if (frame === undefined) return // text or Blob: not ours
    this.listeners.emitFrame(conn.peer, frame, (error) => this.reportListenerError(error))
  }

  emitPeer(event: 'peer:up' | 'peer:down', peer: PeerId): void {
    this.listeners.emitPeer(event, peer, (error) => this.reportListenerError(error))
  }

  private reportListenerError(error: unknown): void {
    if (this.init.onListenerError) {
      try {
        this.init.onListenerError(error)
      } catch {
        // the error handler itself failed: nothing sensible left to do
      }
      return
    }
    setTimeout(() => {
      throw error
    }, 0)
  }
}
