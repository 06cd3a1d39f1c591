/**
 * The libp2p transport itself ({@link Libp2pTransportImpl}): options, `start` / `stop` (with a node of its own or
 * attached to the user's), the `Transport` surface, events and error reporting. The work is done by its parts:
 * the node's protocol handler (hub.ts), the peers and their sessions (peers.ts, session.ts), dialing (dialer.ts),
 * discovery (discovery.ts) and the bounded overlay (membership.ts).
 */
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { FrameTooLargeError, TransportArgumentError, TransportStateError, toError } from '../errors.js'
import { TransportListeners } from '../listeners.js'
import { positiveInt } from '../options.js'
import type { FrameListener, PeerId, PeerListener, RoomContext } from '../types.js'
import { Dialer, type DialerHost } from './dialer.js'
import { Discovery, type DiscoveryHost } from './discovery.js'
import { type Hub, type HubRoom, hubFor } from './hub.js'
import { Membership } from './membership.js'
import { createNode, installPromiseWithResolvers } from './node.js'
import { type Counters, PeerSessions, type PeersHost } from './peers.js'
import type { Session, SessionEvents } from './session.js'
import { Timers } from './timers.js'
import {
  DEFAULT_LISTEN,
  DEFAULT_MAX_FRAME_SIZE,
  type Libp2pErrorContext,
  type Libp2pPeerConnection,
  type Libp2pTransport,
  type Libp2pTransportInit,
  type Libp2pTransportStats,
} from './types.js'
import { type Hello, SYNC_PROTOCOL, roomTopicOf } from './wire.js'

function parseAddrs(name: string, list: readonly string[] | undefined): Multiaddr[] {
  if (list === undefined) return []
  if (!Array.isArray(list)) throw new TransportArgumentError(`${name} must be an array of multiaddr strings`)
  return list.map((s) => {
    try {
      return multiaddr(s)
    } catch (err) {
      throw new TransportArgumentError(`${name}: invalid multiaddr ${JSON.stringify(s)} (${toError(err).message})`)
    }
  })
}

/**
 * The transport {@link libp2pTransport} returns. Its parts reach the state they share through the host interfaces
 * it implements (`DialerHost`, `DiscoveryHost`, `PeersHost`, `HubRoom`); none of that is public API.
 */
export class Libp2pTransportImpl implements Libp2pTransport, DialerHost, DiscoveryHost, PeersHost, HubRoom {
  readonly maxFrameSize: number
  readonly maxQueuedBytes: number
  readonly handshakeTimeoutMs: number
  readonly redialMs: number
  private readonly protocol: string
  private readonly announceIntervalMs: number
  private readonly maxPeers: number
  private readonly bootstrapAddrs: Multiaddr[]
  private readonly relayAddrs: Multiaddr[]
  private readonly listenAddrs: Multiaddr[]

  private state: 'idle' | 'starting' | 'started' | 'stopping' | 'stopped' = 'idle'
  private stopping: Promise<void> | undefined
  generation = 0
  current: Libp2p | undefined
  private ownNode = false
  private hub: Hub | undefined
  topic = ''
  selfPeer: PeerId = ''
  selfNode = ''
  /** The room this transport was started in (its cipher seals gossipsub announcements). */
  room: RoomContext | undefined

  readonly timers = new Timers()
  readonly membership: Membership
  readonly dialer: Dialer
  private readonly discovery: Discovery
  private readonly peers: PeerSessions
  private pruneTimer: ReturnType<typeof setTimeout> | undefined
  private readonly listeners = new TransportListeners()
  private readonly counters: Counters = { sessions: 0, limitedSessions: 0, framesSent: 0, framesReceived: 0, bytesSent: 0, bytesReceived: 0, framesDropped: 0, protocolErrors: 0 }

  constructor(private readonly init: Libp2pTransportInit) {
    if (init === null || typeof init !== 'object') throw new TransportArgumentError('libp2pTransport() takes an options object')
    this.maxFrameSize = positiveInt('maxFrameSize', init.maxFrameSize, DEFAULT_MAX_FRAME_SIZE, 8)
    if (this.maxFrameSize >= 2 ** 28) throw new TransportArgumentError('maxFrameSize must be below 2^28')
    this.maxQueuedBytes = positiveInt('maxQueuedBytes', init.maxQueuedBytes, 8 * 1024 * 1024)
    this.handshakeTimeoutMs = positiveInt('handshakeTimeoutMs', init.handshakeTimeoutMs, 5_000)
    const dialTimeoutMs = positiveInt('dialTimeoutMs', init.dialTimeoutMs, 10_000)
    this.announceIntervalMs = positiveInt('announceIntervalMs', init.announceIntervalMs, 10_000)
    this.redialMs = positiveInt('redialMs', init.redialMs, 1_000)
    if (init.maxPeers !== undefined && init.maxPeers !== Infinity) positiveInt('maxPeers', init.maxPeers, 20, 2)
    this.maxPeers = init.maxPeers ?? 20
    this.protocol = init.protocol ?? SYNC_PROTOCOL
    if (typeof this.protocol !== 'string' || !this.protocol.startsWith('/')) throw new TransportArgumentError('protocol must start with "/"')
    this.bootstrapAddrs = parseAddrs('bootstrap', init.bootstrap)
    this.relayAddrs = parseAddrs('relay', init.relay)
    this.listenAddrs = parseAddrs('listen', init.listen ?? DEFAULT_LISTEN)
    if (init.node !== undefined && (init.listen !== undefined || init.relay !== undefined || init.libp2p !== undefined)) {
      throw new TransportArgumentError('listen, relay and libp2p configure a node the transport creates; they cannot be used with node')
    }
    this.membership = new Membership(this.maxPeers, () => this.selfNode, () => this.schedulePrune())
    this.dialer = new Dialer(this, { protocol: this.protocol, dialTimeoutMs, redialMs: this.redialMs })
    this.discovery = new Discovery(this, { pubsub: init.pubsub ?? 'pubsub', protocol: this.protocol, announceIntervalMs: this.announceIntervalMs })
    this.peers = new PeerSessions(this, this.counters)
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Transport

  get node(): Libp2p | undefined {
    return this.isLive() ? this.current : undefined
  }

  get multiaddrs(): string[] {
    return this.node?.getMultiaddrs().map((m) => m.toString()) ?? []
  }

  async start(room: RoomContext): Promise<void> {
    if (this.stopping) await this.stopping
    if (this.state === 'starting' || this.state === 'started') {
      throw new TransportStateError(`transport already started as ${JSON.stringify(this.selfPeer)}; stop() it first`)
    }
    if (room === null || typeof room !== 'object') throw new TransportArgumentError('start() needs a RoomContext')
    if (typeof room.room !== 'string' || room.room === '') throw new TransportArgumentError('room must be a non-empty string')
    if (typeof room.peerId !== 'string' || room.peerId === '') throw new TransportArgumentError('peerId must be a non-empty string')
    if (new TextEncoder().encode(room.peerId).byteLength > 256) throw new TransportArgumentError('peerId must be at most 256 bytes')
    this.state = 'starting'
    const gen = ++this.generation
    this.selfPeer = room.peerId
    this.room = room
    try {
      this.topic = await roomTopicOf(room.room)
      if (this.init.node) {
        if (this.init.node.status !== 'started') throw new TransportStateError('the libp2p node given as `node` must be started first')
        installPromiseWithResolvers() // the user's node runs libp2p v3 too (Node 20 lacks Promise.withResolvers)
        this.current = this.init.node
        this.ownNode = false
      } else {
        this.current = await createNode(this.init, this.listenAddrs, this.relayAddrs, this.maxPeers)
        this.ownNode = true
      }
      const node = this.current
      this.selfNode = node.peerId.toString()
      if (gen !== this.generation) throw new TransportStateError('stopped while starting')
      this.hub = await hubFor(node, this.protocol)
      await this.hub.attach(this.topic, this)
      this.discovery.listen(node, gen)
      this.state = 'started'
    } catch (err) {
      await this.teardown()
      this.state = 'stopped'
      throw err
    }
    this.dialer.start(this.bootstrapAddrs)
    void this.dialer.probeConnected(gen, this.discovery.subscribers())
  }

  async stop(): Promise<void> {
    if (this.stopping) return this.stopping
    if (this.state !== 'started' && this.state !== 'starting') return
    this.stopping = (async () => {
      this.state = 'stopping'
      this.generation++
      await this.teardown()
      this.state = 'stopped'
    })()
    try {
      await this.stopping
    } finally {
      this.stopping = undefined
    }
  }

  send(peer: PeerId, frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkSize(frame)
    this.peers.send(peer, frame)
  }

  broadcast(frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkSize(frame)
    this.peers.broadcast(frame)
  }

  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  on(event: 'frame', fn: FrameListener): () => void
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    return this.listeners.on(event, fn)
  }

  connection(peer: PeerId): Libp2pPeerConnection | undefined {
    return this.peers.connection(peer)
  }

  stats(): Libp2pTransportStats {
    return { ...this.counters }
  }

  maxMessageSize(peer: PeerId): number | undefined {
    return this.peers.maxMessageSize(peer)
  }

  members(): string[] {
    return this.membership.list()
  }

  // -------------------------------------------------------------------------------------------------------------------
  // What the parts share (host interfaces)

  isLive(): boolean {
    return this.state === 'started' || this.state === 'starting'
  }

  get peerCount(): number {
    return this.peers.size
  }

  hasSessionWith(remote: string): boolean {
    return this.peers.hasSessionWith(remote)
  }

  createSession(stream: Stream, connection: Connection, opener: string, events: SessionEvents): Session {
    return this.peers.createSession(stream, connection, opener, events)
  }

  openOutbound(stream: Stream, connection: Connection): Session {
    return this.peers.openOutbound(stream, connection)
  }

  adoptInbound(s: Session, hello: Hello): void {
    this.peers.adoptInbound(s, hello)
  }

  protocolError(err: Error, context: Libp2pErrorContext): void {
    this.counters.protocolErrors++
    this.report(err, context)
  }

  /** Forgets members not heard of for three announcement intervals (and with no session), then prunes. */
  upkeep(): void {
    this.membership.expire(Date.now() - 3 * this.announceIntervalMs, (remote) => this.hasSessionWith(remote))
    this.prune()
  }

  emitPeer(event: 'peer:up' | 'peer:down', peer: PeerId): void {
    if (!this.isLive()) return
    this.listeners.emitPeer(event, peer, (error) => this.listenerError(error, { event, peer }))
  }

  emitFrame(peer: PeerId, frame: Uint8Array): void {
    this.listeners.emitFrame(peer, frame, (error) => this.listenerError(error, { event: 'frame', peer }))
  }

  report(error: Error, context: Libp2pErrorContext): void {
    try {
      this.init.onError?.(error, context)
    } catch {
      // an error handler that throws must not break the transport
    }
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Internals

  private schedulePrune(): void {
    if (this.pruneTimer !== undefined) return
    this.pruneTimer = this.timers.after(Math.min(1000, this.announceIntervalMs), () => {
      this.pruneTimer = undefined
      this.prune()
    })
  }

  private prune(): void {
    this.peers.prune(this.maxPeers, this.ownNode)
  }

  private checkSize(frame: Uint8Array): void {
    if (!(frame instanceof Uint8Array)) throw new TransportArgumentError('frame must be a Uint8Array')
    if (frame.byteLength > this.maxFrameSize) throw new FrameTooLargeError(frame.byteLength, this.maxFrameSize)
  }

  private listenerError(error: unknown, context: Libp2pErrorContext): void {
    if (this.init.onError) this.report(toError(error), context)
    else
      setTimeout(() => {
        throw error
      }, 0)
  }

  private async teardown(): Promise<void> {
    this.timers.clearAll()
    this.pruneTimer = undefined
    this.membership.clear()
    this.dialer.stopRedials()
    this.discovery.stop()
    const hub = this.hub
    this.hub = undefined
    if (hub) await hub.detach(this.topic, this).catch(() => undefined)
    await this.peers.closeAll(1_000)
    this.dialer.clear()
    const node = this.current
    if (node && this.ownNode) {
      try {
        await node.stop()
      } catch {
        // already stopping
      }
    }
    this.current = undefined
  }
}
