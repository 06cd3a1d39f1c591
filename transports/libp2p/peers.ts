/**
 * The peers of a libp2p transport that are up, and the session carrying each ({@link PeerSessions}): HELLO checks,
 * `peer:up` / `peer:down`, duplicate streams settled the same way on both ends (the loser's queued frames move to
 * the winner, the peer never flaps), frames parked while a stream is replaced, and the redial of a lost peer.
 */
import type { Connection, PeerId as Libp2pPeerId, Stream } from '@libp2p/interface'
import { PeerIdInUseError } from '../errors.js'
import type { PeerId } from '../types.js'
import type { Dialer } from './dialer.js'
import { MIN_MESSAGE_HINT, Session, type SessionEvents, type SessionLimits } from './session.js'
import type { TransportState } from './state.js'
import type { Libp2pErrorContext, Libp2pPeerConnection } from './types.js'
import { type Hello, Libp2pProtocolError, QueueFullError, encodeFrame, encodeHello } from './wire.js'

/** Counters of a transport since its creation (see `Libp2pTransportStats`). */
export interface Counters {
  sessions: number
  limitedSessions: number
  framesSent: number
  framesReceived: number
  bytesSent: number
  bytesReceived: number
  framesDropped: number
  protocolErrors: number
}

/** What the peer table needs of its transport. */
export interface PeersHost extends TransportState {
  readonly topic: string
  readonly selfPeer: PeerId
  readonly maxFrameSize: number
  readonly maxQueuedBytes: number
  readonly handshakeTimeoutMs: number
  readonly redialMs: number
  readonly dialer: Dialer
  emitPeer(event: 'peer:up' | 'peer:down', peer: PeerId): void
  emitFrame(peer: PeerId, frame: Uint8Array): void
  report(error: Error, context: Libp2pErrorContext): void
  protocolError(err: Error, context: Libp2pErrorContext): void
}

/** A peer that is up. Its session may be briefly missing while a duplicate stream takes over. */
interface PeerLink {
  readonly peer: PeerId
  remote: string
  remotePeer: Libp2pPeerId
  session: Session | undefined
  /** Whether the last session ran over a limited (relayed) connection: those end on purpose and are redialed at once. */
  relayed: boolean
  /** Frames sent while no session carries the peer (bounded by maxQueuedBytes). */
  pending: Uint8Array[]
  pendingBytes: number
  limbo: ReturnType<typeof setTimeout> | undefined
}

/** The peers that are up (by replica peer id) and the sessions with remote nodes. */
export class PeerSessions {
  /** Peers that are up (by replica peer id) and the session carrying each. */
  private readonly links = new Map<PeerId, PeerLink>()
  /** Every session not yet ended (handshaking, active, retired). */
  private readonly sessions = new Set<Session>()

  constructor(
    private readonly host: PeersHost,
    readonly counters: Counters,
  ) {
    this.sessionLimits.maxQueuedBytes = host.maxQueuedBytes
    this.sessionLimits.handshakeTimeoutMs = host.handshakeTimeoutMs
  }

  /** Number of peers up. */
  get size(): number {
    return this.links.size
  }

  /** Queues a frame for a peer; unknown peers are ignored. */
  send(peer: PeerId, frame: Uint8Array): void {
    const link = this.links.get(peer)
    if (link === undefined) return
    this.push(link, frame)
  }

  /** Queues a frame for every peer up. */
  broadcast(frame: Uint8Array): void {
    for (const link of this.links.values()) this.push(link, frame)
  }

  /** The connection carrying a peer's session, if the peer is up. */
  connection(peer: PeerId): Libp2pPeerConnection | undefined {
    const s = this.links.get(peer)?.session
    if (!s) return undefined
    return { remotePeer: s.remote, remoteAddr: s.connection.remoteAddr.toString(), limited: s.limited }
  }

  /** See `Libp2pTransport.maxMessageSize`. */
  maxMessageSize(peer: PeerId): number | undefined {
    const link = this.links.get(peer)
    if (!link) return undefined
    if (link.session) return link.session.messageHint()
    return link.relayed ? MIN_MESSAGE_HINT : undefined
  }

  /**
   * With more than `maxPeers` peers up, closes the sessions with members outside the overlay: gracefully (what was
   * sent arrives), and with `closeConnections` (the node is ours) the connection too when nothing else of ours uses
   * it. The other side does not redial a member its own overlay does not want; views that disagree for a while only
   * keep an extra session.
   */
  prune(maxPeers: number, closeConnections: boolean): void {
    const { membership, dialer, timers } = this.host
    if (!this.host.isLive() || this.links.size <= maxPeers || membership.size <= maxPeers) return
    let excess = this.links.size - maxPeers
    for (const link of [...this.links.values()]) {
      if (excess <= 0) break
      if (membership.wants(link.remote)) continue
      excess--
      const s = link.session
      const remote = link.remotePeer
      for (const x of this.sessions) if (x.remote === link.remote) x.retire()
      if (closeConnections && s && !dialer.isBootstrap(link.remote)) {
        const conn = s.connection
        timers.after(2_000, () => {
          if (!this.host.isLive() || this.hasSessionWith(remote.toString())) return
          conn.close().catch(() => undefined)
        })
      }
    }
  }

  /** Closes every session (gracefully within `ms`) and forgets every peer. */
  async closeAll(ms: number): Promise<void> {
    await Promise.allSettled([...this.sessions].map((s) => s.shutdown(ms)))
    this.sessions.clear()
    this.links.clear()
  }

  /** Wraps a stream in a session of this transport (the hub also uses it for inbound streams before the room is known). */
  createSession(stream: Stream, connection: Connection, opener: string, events?: SessionEvents): Session {
    return new Session(stream, connection, opener, events ?? this.sessionEvents, this.sessionLimits)
  }

  /** Starts our side of a session on a stream we opened: HELLO goes out at once. */
  openOutbound(stream: Stream, connection: Connection): Session {
    const s = this.createSession(stream, connection, this.host.selfNode)
    this.sessions.add(s)
    s.enqueue(this.hello())
    s.flushNow()
    return s
  }

  private readonly sessionLimits: SessionLimits = {
    maxQueuedBytes: 0, // set in the constructor
    handshakeTimeoutMs: 0,
    onDrop: (sess, first) => {
      this.counters.framesDropped++
      if (first) {
        const err = new QueueFullError(`outbound queue to ${sess.peer ?? sess.remote} is full (${this.host.maxQueuedBytes} bytes): dropping frames`)
        this.host.report(err, { peer: sess.peer, remote: sess.remote })
      }
    },
    onSent: (n, bytes) => {
      this.counters.framesSent += n
      this.counters.bytesSent += bytes
    },
    onReceived: (bytes) => {
      this.counters.bytesReceived += bytes
    },
  }

  /** An inbound stream said HELLO for our room. */
  adoptInbound(s: Session, hello: Hello): void {
    if (!this.host.isLive()) {
      s.fail(new Libp2pProtocolError('transport stopping'), true)
      return
    }
    s.events = this.sessionEvents
    s.limits = this.sessionLimits
    this.sessions.add(s)
    if (!this.acceptHello(s, hello)) return
    s.enqueue(this.hello())
    this.establish(s)
  }

  private readonly sessionEvents: SessionEvents = {
    hello: (s, hello) => {
      // Outbound sessions only: inbound HELLOs go through the hub.
      if (!this.acceptHello(s, hello)) return
      this.establish(s)
    },
    frame: (s, frame) => {
      const peer = s.peer
      if (peer === undefined || !this.host.isLive()) return
      if (this.links.get(peer)?.remote !== s.remote) return
      this.counters.framesReceived++
      this.host.emitFrame(peer, frame)
    },
    end: (s) => this.sessionEnded(s),
    error: (s, err) => this.host.protocolError(err, { peer: s.peer, remote: s.remote }),
  }

  private acceptHello(s: Session, hello: Hello): boolean {
    if (hello.topic !== this.host.topic) {
      s.fail(new Libp2pProtocolError('HELLO for another room'))
      return false
    }
    if (hello.maxFrameSize !== this.host.maxFrameSize) {
      s.fail(new Libp2pProtocolError(`peer uses maxFrameSize ${hello.maxFrameSize}, this transport ${this.host.maxFrameSize}; both ends must agree`))
      return false
    }
    if (hello.peerId === this.host.selfPeer || s.remote === this.host.selfNode) {
      s.fail(new PeerIdInUseError(`a peer in this room uses our own peer id ${JSON.stringify(this.host.selfPeer)}`))
      return false
    }
    return true
  }

  /** HELLOs exchanged: make the session the peer's active one, or keep the current one (duplicate dials). */
  private establish(s: Session): void {
    s.open(this.host.maxFrameSize)
    s.flushNow()
    this.host.dialer.nonMembers.delete(s.remote)
    this.host.membership.heardOf(s.remote)
    this.host.dialer.resetRedial(s.remote)
    this.counters.sessions++
    if (s.limited) this.counters.limitedSessions++
    const peer = s.peer!
    const link = this.links.get(peer)
    if (link === undefined) {
      this.links.set(peer, { peer, remote: s.remote, remotePeer: s.connection.remotePeer, session: s, relayed: s.limited, pending: [], pendingBytes: 0, limbo: undefined })
      this.host.emitPeer('peer:up', peer)
      return
    }
    if (link.remote !== s.remote) {
      // The same replica id from another node: a restarted replica with a new libp2p key (or a misconfigured twin).
      // The newer session wins, announced as down + up so the engine re-syncs with it from scratch.
      const old = link.session
      link.remote = s.remote
      link.remotePeer = s.connection.remotePeer
      this.handOver(link, s, [])
      old?.retire()
      this.host.emitPeer('peer:down', peer)
      this.host.emitPeer('peer:up', peer)
      return
    }
    const cur = link.session
    if (cur === undefined) {
      this.handOver(link, s, []) // the stream we lost is replaced: the peer never went down
    } else if (this.prefer(s, cur)) {
      this.handOver(link, s, cur.takeQueue())
      cur.retire()
    } else {
      s.retire()
    }
  }

  /** Makes `s` carry the peer, with the frames waiting for it. */
  private handOver(link: PeerLink, s: Session, queued: Uint8Array[]): void {
    link.session = s
    link.relayed = s.limited
    if (link.limbo !== undefined) this.host.timers.clear(link.limbo)
    link.limbo = undefined
    for (const f of queued) s.enqueue(f)
    for (const f of link.pending.splice(0)) s.enqueue(f)
    link.pendingBytes = 0
  }

  /**
   * Which of two sessions with the same node to keep, decided the same way on both ends: an unlimited connection
   * beats a limited (relayed) one; then the stream opened by the smaller libp2p PeerId; then the newer stream.
   */
  private prefer(a: Session, b: Session): boolean {
    if (a.limited !== b.limited) return !a.limited
    const opener = this.host.selfNode < a.remote ? this.host.selfNode : a.remote
    const ap = a.opener === opener
    const bp = b.opener === opener
    if (ap !== bp) return ap
    return true
  }

  private sessionEnded(s: Session): void {
    this.sessions.delete(s)
    if (!this.host.isLive()) return
    // Peers waiting for a stream of this node that was still in its handshake: it may have been this one.
    for (const link of this.links.values()) if (link.session === undefined && link.remote === s.remote) this.awaitReplacement(link)
    const peer = s.peer
    const link = peer === undefined ? undefined : this.links.get(peer)
    if (link === undefined || link.session !== s) return
    const unsent = s.takeQueue()
    const next = [...this.sessions].find((x) => x.remote === s.remote && x.peer === peer && x.state === 'open' && !x.retired)
    if (next) {
      this.handOver(link, next, unsent)
      return
    }
    link.session = undefined
    for (const f of unsent) this.park(link, f)
    this.awaitReplacement(link)
  }

  /**
   * A peer lost its stream: if another stream with the same node is still in its handshake (both ends dialed, and
   * the other end closed the loser before our HELLO arrived), wait for it; otherwise the peer is down.
   */
  private awaitReplacement(link: PeerLink): void {
    const waiting = [...this.sessions].some((x) => x.remote === link.remote && x.state === 'handshake')
    if (waiting) {
      link.limbo ??= this.host.timers.after(this.host.handshakeTimeoutMs, () => {
        link.limbo = undefined
        if (link.session === undefined) this.peerDown(link)
      })
      return
    }
    this.peerDown(link)
  }

  private peerDown(link: PeerLink): void {
    if (link.limbo !== undefined) this.host.timers.clear(link.limbo)
    link.limbo = undefined
    if (this.links.get(link.peer) !== link) return
    this.links.delete(link.peer)
    this.host.emitPeer('peer:down', link.peer)
    this.host.dialer.scheduleRedial(link.remotePeer, link.relayed ? Math.min(100, this.host.redialMs) : this.host.redialMs)
  }

  /** Keeps a frame for a peer whose stream is being replaced. */
  private park(link: PeerLink, encoded: Uint8Array): boolean {
    if (link.pendingBytes + encoded.byteLength > this.host.maxQueuedBytes) {
      this.counters.framesDropped++
      return false
    }
    link.pending.push(encoded)
    link.pendingBytes += encoded.byteLength
    return true
  }

  private push(link: PeerLink, frame: Uint8Array): void {
    const encoded = encodeFrame(frame)
    if (link.session) link.session.enqueue(encoded)
    else this.park(link, encoded)
  }

  /** Whether a live session (handshaking or open, not retired) with that node exists. */
  hasSessionWith(remote: string): boolean {
    for (const s of this.sessions) if (s.remote === remote && !s.retired && s.state !== 'ended') return true
    return false
  }

  private hello(): Uint8Array {
    return encodeFrame(encodeHello({ topic: this.host.topic, peerId: this.host.selfPeer, maxFrameSize: this.host.maxFrameSize }))
  }
}
