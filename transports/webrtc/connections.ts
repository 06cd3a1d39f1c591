/**
 * The peer connections of a WebRTC transport ({@link PeerConnections}), from offer to close: one
 * `RTCPeerConnection` per peer with one pre-negotiated data channel, offers and answers (glare settled by peer id),
 * trickle ICE (candidates that arrive early are kept), connect timeouts, and `peer:up` / `peer:down`.
 */
import { TransportStateError } from '../errors.js'
import type { PeerId } from '../types.js'
import { type Backpressure, type Channel, FrameQueue } from './frames.js'
import type { Membership } from './membership.js'
import { BoundedSet, type Signal, randomToken } from './messages.js'
import type { DataChannelLike, IceCandidateInit, PeerConnectionCtor, PeerConnectionLike } from './runtime.js'
import type { IceServer } from './types.js'
import { compareIds } from '../overlay.js'

const MAX_PENDING_CANDIDATES = 32
const MAX_EARLY_TOKENS = 64
const MAX_SEEN_TOKENS = 1024

/** One connection attempt, then connection, with one peer. */
export interface Conn extends Channel {
  readonly peer: PeerId
  readonly token: string
  readonly initiator: boolean
  readonly pc: PeerConnectionLike
  readonly dc: DataChannelLike
  /** The remote incarnation this connection belongs to, once known. */
  remoteSession: string | undefined
  open: boolean
  closed: boolean
  remoteDescriptionSet: boolean
  readonly pendingCandidates: IceCandidateInit[]
  timer: ReturnType<typeof setTimeout> | undefined
}

/** What the connections need of their transport. */
export interface ConnectionsHost {
  readonly Pc: PeerConnectionCtor | undefined
  readonly iceServers: IceServer[]
  readonly maxPeers: number
  readonly maxBuffered: number
  readonly connectTimeoutMs: number
  readonly self: PeerId | undefined
  /** Whether the transport is started. */
  readonly started: boolean
  readonly membership: Membership
  readonly frames: Backpressure
  sendSignal(to: PeerId, token: string, signal: Signal): void
  scheduleMaintain(): void
  /** The peers the overlay wants now. */
  wanted(now: number): Set<PeerId>
  emitPeer(event: 'peer:up' | 'peer:down', peer: PeerId): void
  onMessage(conn: Conn, data: unknown): void
}

/** The connections of one transport, by peer id. */
export class PeerConnections {
  private readonly conns = new Map<PeerId, Conn>()
  /** `from \0 token` of every offer handled (duplicates arrive when several signaling servers relay the same one). */
  private readonly seenOffers = new BoundedSet(MAX_SEEN_TOKENS)
  /** Candidates that arrived before their offer (possible with several signaling servers). */
  private readonly earlyCandidates = new Map<string, { at: number; candidates: IceCandidateInit[] }>()

  constructor(private readonly host: ConnectionsHost) {}

  get(peer: PeerId): Conn | undefined {
    return this.conns.get(peer)
  }

  has(peer: PeerId): boolean {
    return this.conns.has(peer)
  }

  get size(): number {
    return this.conns.size
  }

  all(): Conn[] {
    return [...this.conns.values()]
  }

  /** Whether the peer's data channel is open. */
  isOpen(peer: PeerId): boolean {
    return this.conns.get(peer)?.open === true
  }

  /** Forgets candidates that waited longer than `maxAgeMs` for their offer. */
  expireEarly(now: number, maxAgeMs: number): void {
    for (const [key, early] of this.earlyCandidates) if (now - early.at > maxAgeMs) this.earlyCandidates.delete(key)
  }

  /** Closes every connection and forgets every attempt (at stop). */
  closeAll(): void {
    for (const conn of [...this.conns.values()]) this.teardown(conn)
    this.conns.clear()
    this.earlyCandidates.clear()
    this.seenOffers.clear()
  }

  /** A signal addressed to us: an offer answered (or refused), an answer or candidate applied, a reject or bye. */
  onSignal(from: PeerId, token: string, session: string | undefined, signal: Signal): void {
    this.host.membership.touch(from, session)
    const conn = this.conns.get(from)
    switch (signal.type) {
      case 'offer': {
        const key = `${from}\u0000${token}`
        if (this.seenOffers.has(key)) return
        this.seenOffers.add(key)
        if (conn) {
          if (conn.token === token) return
          if (conn.initiator && !conn.open && compareIds(this.host.self!, from) < 0) return // glare: our offer wins
          // Glare lost, or the peer started over (it offers only when it holds no connection to us): replace ours.
          this.teardown(conn)
        }
        if (this.conns.size >= this.host.maxPeers && !this.makeRoomFor(from)) {
          this.host.sendSignal(from, token, { type: 'reject' })
          return
        }
        void this.answer(from, token, session, signal.sdp)
        return
      }
      case 'answer': {
        if (!conn || conn.token !== token || !conn.initiator || conn.remoteDescriptionSet) return
        conn.remoteSession = session
        void this.acceptAnswer(conn, signal.sdp)
        return
      }
      case 'candidate': {
        if (conn && conn.token === token) {
          if (conn.remoteDescriptionSet) this.addCandidate(conn, signal.candidate)
          else if (conn.pendingCandidates.length < MAX_PENDING_CANDIDATES) conn.pendingCandidates.push(signal.candidate)
          return
        }
        const key = `${from}\u0000${token}`
        if (this.seenOffers.has(key)) return // for an offer we turned down
        let early = this.earlyCandidates.get(key)
        if (!early) {
          if (this.earlyCandidates.size >= MAX_EARLY_TOKENS) return
          this.earlyCandidates.set(key, (early = { at: Date.now(), candidates: [] }))
        }
        if (early.candidates.length < MAX_PENDING_CANDIDATES) early.candidates.push(signal.candidate)
        return
      }
      case 'reject':
      case 'bye': {
        if (!conn || conn.token !== token) return
        this.teardown(conn)
        this.host.membership.penalize(from)
        this.host.scheduleMaintain()
        return
      }
    }
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Connections

  private newConn(peer: PeerId, token: string, initiator: boolean, remoteSession: string | undefined): Conn {
    const pc = new this.host.Pc!({ iceServers: this.host.iceServers })
    let dc: DataChannelLike
    try {
      dc = pc.createDataChannel('syncmesh', { negotiated: true, id: 0, ordered: true })
      dc.binaryType = 'arraybuffer'
    } catch (error) {
      pc.close()
      throw error
    }
    const conn: Conn = {
      peer,
      token,
      initiator,
      pc,
      dc,
      remoteSession,
      open: false,
      closed: false,
      remoteDescriptionSet: false,
      pendingCandidates: [],
      timer: undefined,
      drainTimer: undefined,
      burst: 0,
      queue: new FrameQueue(),
    }
    this.conns.set(peer, conn)
    pc.onicecandidate = (ev) => {
      const c = ev.candidate
      if (conn.closed || !c || !c.candidate) return // null / empty: end of candidates
      this.host.sendSignal(peer, token, { type: 'candidate', candidate: { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null } })
    }
    const onState = (): void => this.onPcState(conn)
    pc.onconnectionstatechange = onState
    pc.oniceconnectionstatechange = onState
    dc.onopen = () => this.onOpen(conn)
    dc.onclose = () => this.onBroken(conn)
    dc.onerror = () => {} // 'close' follows
    dc.onmessage = (ev) => this.host.onMessage(conn, ev.data)
    try {
      dc.bufferedAmountLowThreshold = Math.floor(this.host.maxBuffered / 2)
    } catch {
      // not supported: the drain poll covers it
    }
    dc.onbufferedamountlow = () => this.host.frames.drain(conn)
    conn.timer = setTimeout(() => {
      if (!conn.open) this.onBroken(conn)
    }, this.host.connectTimeoutMs)
    return conn
  }

  /** Offers a connection to a peer. */
  async offer(peer: PeerId): Promise<void> {
    let conn: Conn
    try {
      conn = this.newConn(peer, randomToken(), true, undefined)
    } catch {
      this.host.membership.penalize(peer) // the WebRTC implementation refused to create a connection: try again later
      return
    }
    try {
      const offer = await conn.pc.createOffer()
      if (conn.closed) return
      await conn.pc.setLocalDescription(offer)
      if (conn.closed) return
      const sdp = conn.pc.localDescription?.sdp ?? offer.sdp
      if (!sdp) throw new TransportStateError('no local description')
      this.host.sendSignal(peer, conn.token, { type: 'offer', sdp })
    } catch {
      this.onBroken(conn)
    }
  }

  private async answer(peer: PeerId, token: string, session: string | undefined, sdp: string): Promise<void> {
    let conn: Conn
    try {
      conn = this.newConn(peer, token, false, session)
    } catch {
      this.host.sendSignal(peer, token, { type: 'reject' })
      return
    }
    const key = `${peer}\u0000${token}`
    const early = this.earlyCandidates.get(key)
    if (early) {
      this.earlyCandidates.delete(key)
      conn.pendingCandidates.push(...early.candidates)
    }
    try {
      await conn.pc.setRemoteDescription({ type: 'offer', sdp })
      if (conn.closed) return
      this.remoteDescriptionReady(conn)
      const answer = await conn.pc.createAnswer()
      if (conn.closed) return
      await conn.pc.setLocalDescription(answer)
      if (conn.closed) return
      const local = conn.pc.localDescription?.sdp ?? answer.sdp
      if (!local) throw new TransportStateError('no local description')
      this.host.sendSignal(peer, token, { type: 'answer', sdp: local })
    } catch {
      // A malformed offer, or a peer connection closed under us: nothing to keep, and nothing to retry soon.
      if (!conn.closed) {
        this.teardown(conn)
        this.host.membership.penalize(peer)
      }
    }
  }

  private async acceptAnswer(conn: Conn, sdp: string): Promise<void> {
    conn.remoteDescriptionSet = true // claim it: a duplicate answer must not be applied twice
    try {
      await conn.pc.setRemoteDescription({ type: 'answer', sdp })
      if (conn.closed) return
      this.remoteDescriptionReady(conn)
    } catch {
      this.onBroken(conn)
    }
  }

  private remoteDescriptionReady(conn: Conn): void {
    conn.remoteDescriptionSet = true
    for (const c of conn.pendingCandidates.splice(0)) this.addCandidate(conn, c)
  }

  private addCandidate(conn: Conn, candidate: IceCandidateInit): void {
    conn.pc.addIceCandidate(candidate).catch(() => {
      // A malformed or duplicate candidate: ICE goes on with the others.
    })
  }

  private onPcState(conn: Conn): void {
    if (conn.closed) return
    const state = conn.pc.connectionState ?? conn.pc.iceConnectionState
    if (state === 'failed' || state === 'closed') this.onBroken(conn)
    else if (state === 'disconnected' && conn.open) {
      // Often transient; give ICE a connect timeout's worth of time to recover.
      clearTimeout(conn.timer)
      conn.timer = setTimeout(() => {
        const s = conn.pc.connectionState ?? conn.pc.iceConnectionState
        if (s !== 'connected' && s !== 'completed') this.onBroken(conn)
      }, this.host.connectTimeoutMs)
    } else if (state === 'connected' && conn.open) clearTimeout(conn.timer)
  }

  private onOpen(conn: Conn): void {
    if (conn.closed || conn.open || !this.host.started) return
    conn.open = true
    clearTimeout(conn.timer)
    conn.timer = undefined
    this.host.membership.opened(conn.peer)
    this.host.emitPeer('peer:up', conn.peer)
    this.host.scheduleMaintain()
  }

  /** The connection failed, timed out or closed on the other side: drop it, retry later. */
  private onBroken(conn: Conn): void {
    if (conn.closed) return
    this.teardown(conn)
    this.host.membership.penalize(conn.peer)
    this.host.scheduleMaintain()
  }

  /** Closes a connection; reports `peer:down` when it was open and the transport still runs. */
  teardown(conn: Conn, bye = false): void {
    if (conn.closed) return
    conn.closed = true
    if (this.conns.get(conn.peer) === conn) this.conns.delete(conn.peer)
    clearTimeout(conn.timer)
    clearTimeout(conn.drainTimer)
    conn.queue.clear()
    const { pc, dc } = conn
    pc.onicecandidate = null
    pc.onconnectionstatechange = null
    pc.oniceconnectionstatechange = null
    dc.onopen = null
    dc.onclose = null
    dc.onmessage = null
    dc.onbufferedamountlow = null
    if (bye) this.host.sendSignal(conn.peer, conn.token, { type: 'bye' })
    try {
      dc.close()
    } catch {
      // already closed
    }
    try {
      pc.close()
    } catch {
      // already closed
    }
    if (conn.open && this.host.started) this.host.emitPeer('peer:down', conn.peer)
  }

  /** Frees a slot for a wanted peer by closing a connection the overlay does not want; false when there is none. */
  makeRoomFor(peer: PeerId): boolean {
    const wanted = this.host.wanted(Date.now())
    if (!wanted.has(peer)) return false
    let victim: Conn | undefined
    for (const c of this.conns.values()) {
      if (wanted.has(c.peer)) continue
      if (!victim || (victim.open && !c.open)) victim = c // prefer an attempt still pending
    }
    if (!victim) return false
    this.teardown(victim, true)
    return true
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Overlay maintenance
}
