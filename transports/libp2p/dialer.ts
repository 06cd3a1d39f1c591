/**
 * Finding and dialing room members ({@link Dialer}): bootstrap addresses dialed at start and redialed with backoff
 * whenever no session with them is up, lost members redialed, connected nodes that speak the protocol (or subscribe
 * to the room's topic) probed. Failures are quiet: a node that does not answer, or does not speak the protocol in
 * this room, is just not (yet) a member.
 */
import type { Connection, PeerId as Libp2pPeerId, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { TransportStateError } from '../errors.js'
import type { Session } from './session.js'
import type { TransportState } from './state.js'

const MAX_REDIAL_MS = 30_000

interface BootstrapEntry {
  readonly addr: Multiaddr
  /** The node's PeerId, from the address's `/p2p/` part, then from the connection. */
  peer: string | undefined
  peerId: Libp2pPeerId | undefined
  nextAt: number
  delay: number
  busy: boolean
}

/** What the dialer needs of its transport. */
export interface DialerHost extends TransportState {
  /** Number of peers up. */
  readonly peerCount: number
  /** Starts our side of a session on a stream we opened (HELLO goes out at once). */
  openOutbound(stream: Stream, connection: Connection): Session
}

/** Options of a {@link Dialer}. */
export interface DialerInit {
  readonly protocol: string
  readonly dialTimeoutMs: number
  /** First redial delay; doubles up to 30 s. */
  readonly redialMs: number
}

/** The dialing side of one transport: who is being dialed, who refused, when to try again. */
export class Dialer {
  /** Remote nodes being dialed. */
  readonly dialing = new Set<string>()
  /** Remote nodes that refused our room (or do not speak the protocol), until they show interest in the room. */
  readonly nonMembers = new Set<string>()
  /** Redial state of remote nodes we had a session with. */
  private readonly redial = new Map<string, { delay: number; timer: ReturnType<typeof setTimeout> | undefined; peer: Libp2pPeerId }>()
  private bootstrap: BootstrapEntry[] = []

  constructor(
    private readonly host: DialerHost,
    private readonly init: DialerInit,
  ) {}

  /** Dials the bootstrap addresses now and keeps them up (checked every 250 ms at most) while the transport runs. */
  start(addrs: readonly Multiaddr[]): void {
    const { redialMs } = this.init
    this.bootstrap = addrs.map((addr) => ({ addr, peer: addr.getComponents().findLast((c) => c.name === 'p2p')?.value, peerId: undefined, nextAt: 0, delay: redialMs, busy: false }))
    this.host.timers.every(Math.min(250, redialMs), () => this.maintainBootstrap())
    this.maintainBootstrap()
  }

  /** Whether a node is one of the bootstrap peers. */
  isBootstrap(remote: string): boolean {
    return this.bootstrap.some((b) => b.peer === remote)
  }

  /** At stop: no more redials or bootstrap upkeep. */
  stopRedials(): void {
    this.redial.clear()
    this.bootstrap = []
  }

  /** At stop, once the sessions are closed: forgets who was dialed and who refused. */
  clear(): void {
    this.dialing.clear()
    this.nonMembers.clear()
  }

  /** Opens a session with a node (dialing it if needed). Failures are quiet: the node is just not (yet) a member. */
  async probe(target: Libp2pPeerId | Multiaddr, bootstrap?: BootstrapEntry): Promise<void> {
    const node = this.host.current
    if (!node || !this.host.isLive()) return
    const known = 'toMultihash' in target ? target.toString() : bootstrap?.peer
    if (known !== undefined && (known === this.host.selfNode || this.dialing.has(known) || this.host.hasSessionWith(known))) return
    if (bootstrap === undefined && known !== undefined && !this.host.membership.wants(known)) return // outside our overlay
    const gen = this.host.generation
    if (known !== undefined) this.dialing.add(known)
    try {
      const connection = await node.dial(target, { signal: AbortSignal.timeout(this.init.dialTimeoutMs) })
      const remote = connection.remotePeer.toString()
      if (bootstrap) {
        bootstrap.peer = remote
        bootstrap.peerId = connection.remotePeer
      }
      if (gen !== this.host.generation || remote === this.host.selfNode) return
      if (known === undefined && (this.dialing.has(remote) || this.host.hasSessionWith(remote))) return
      if (this.host.hasSessionWith(remote) || (this.nonMembers.has(remote) && bootstrap !== undefined)) return
      this.dialing.add(remote)
      let stream: Stream
      try {
        stream = await connection.newStream(this.init.protocol, { runOnLimitedConnection: true, signal: AbortSignal.timeout(this.init.dialTimeoutMs) })
      } catch {
        this.nonMembers.add(remote) // does not speak the protocol (or refused it): not a member
        return
      } finally {
        if (known === undefined) this.dialing.delete(remote)
      }
      if (gen !== this.host.generation) {
        stream.abort(new TransportStateError('syncmesh transport stopped'))
        return
      }
      const s = this.host.openOutbound(stream, connection)
      stream.addEventListener('close', () => {
        // Refused during the handshake (the remote serves another room): remember, do not retry blindly.
        if (s.hello === undefined && gen === this.host.generation) this.nonMembers.add(remote)
      })
    } catch {
      // unreachable for now; bootstrap entries, redials and announcements try again later
    } finally {
      if (known !== undefined) this.dialing.delete(known)
    }
  }

  /** At start: connected nodes that speak our protocol or subscribe to our topic. */
  async probeConnected(gen: number, subscribers: ReadonlySet<string>): Promise<void> {
    const node = this.host.current
    if (!node) return
    const seen = new Set<string>()
    for (const conn of node.getConnections()) {
      const id = conn.remotePeer.toString()
      if (seen.has(id)) continue
      seen.add(id)
      let speaks = subscribers.has(id)
      if (!speaks) {
        try {
          speaks = (await node.peerStore.get(conn.remotePeer)).protocols.includes(this.init.protocol)
        } catch {
          speaks = false
        }
      }
      if (gen !== this.host.generation) return
      if (speaks) void this.probe(conn.remotePeer)
    }
  }

  private maintainBootstrap(): void {
    const now = Date.now()
    for (const b of this.bootstrap) {
      if (b.busy || now < b.nextAt) continue
      if (b.peer !== undefined && this.host.hasSessionWith(b.peer)) continue
      // A bootstrap member outside our overlay is only needed while we have no session at all.
      if (b.peer !== undefined && this.host.peerCount > 0 && this.host.membership.has(b.peer) && !this.host.membership.wants(b.peer)) continue
      // A rendezvous peer outside the room: keep the connection (gossipsub rides it), do not re-probe.
      if (b.peerId !== undefined && this.nonMembers.has(b.peer!) && (this.host.current?.getConnections(b.peerId).length ?? 0) > 0) continue
      b.busy = true
      b.nextAt = now + b.delay
      b.delay = Math.min(b.delay * 2, MAX_REDIAL_MS)
      void this.probe(b.addr, b).finally(() => {
        b.busy = false
        if (b.peer !== undefined && this.host.hasSessionWith(b.peer)) b.delay = this.init.redialMs
      })
    }
  }

  scheduleRedial(peer: Libp2pPeerId, firstDelay = this.init.redialMs): void {
    const remote = peer.toString()
    let r = this.redial.get(remote)
    if (!r) this.redial.set(remote, (r = { delay: firstDelay, timer: undefined, peer }))
    if (r.timer !== undefined) return
    const state = r
    state.timer = this.host.timers.after(state.delay, () => {
      state.timer = undefined
      state.delay = Math.min(state.delay * 2, MAX_REDIAL_MS)
      if (this.host.hasSessionWith(remote) || this.nonMembers.has(remote)) return
      void this.probe(state.peer).then(() => {
        if (!this.host.hasSessionWith(remote) && state.delay < MAX_REDIAL_MS) this.scheduleRedial(state.peer)
      })
    })
  }

  resetRedial(remote: string): void {
    const r = this.redial.get(remote)
    if (!r) return
    if (r.timer !== undefined) this.host.timers.clear(r.timer)
    this.redial.delete(remote)
    for (const b of this.bootstrap) if (b.peer === remote) b.delay = this.init.redialMs
  }
}
