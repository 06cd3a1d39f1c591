/**
 * Room discovery on a libp2p node ({@link Discovery}): identify results that list our protocol are probed, and
 * over gossipsub (when the node has a pubsub service) each member subscribes to the room's topic, publishes its
 * multiaddrs there now and then (sealed with the room key in an encrypted room), and dials the members it learns
 * about, the smaller PeerId of a pair first. A connected peer subscribing to the topic is dialed at once.
 */
import type { IdentifyResult, Libp2p, PeerId as Libp2pPeerId } from '@libp2p/interface'
import type { Message as PubsubMessage, SubscriptionChangeData } from '@libp2p/gossipsub'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { AuthError, toError } from '../errors.js'
import type { RoomContext } from '../types.js'
import type { Dialer } from './dialer.js'
import type { TransportState } from './state.js'
import type { Libp2pErrorContext } from './types.js'
import { Libp2pProtocolError, decodeAnnounce, encodeAnnounce } from './wire.js'

/** How long the larger PeerId of a pair that learnt of each other waits for the smaller one to dial. */
const DIAL_YIELD_MS = 1_500

/** The pubsub surface we use (gossipsub). */
interface PubSubLike {
  subscribe(topic: string): void
  unsubscribe(topic: string): void
  publish(topic: string, data: Uint8Array): Promise<unknown>
  getSubscribers(topic: string): Libp2pPeerId[]
  addEventListener(type: string, fn: (evt: CustomEvent) => void): void
  removeEventListener(type: string, fn: (evt: CustomEvent) => void): void
}

function isPubSub(x: unknown): x is PubSubLike {
  const p = x as Partial<PubSubLike> | undefined
  return typeof p?.subscribe === 'function' && typeof p.publish === 'function' && typeof p.addEventListener === 'function'
}

/** What discovery needs of its transport. */
export interface DiscoveryHost extends TransportState {
  /** The room's topic (gossipsub and HELLO). */
  readonly topic: string
  /** Encrypted rooms: announcements are sealed with the room key (AAD "syncmesh/announce/v1" 0x00 topic). */
  readonly room: RoomContext | undefined
  readonly dialer: Dialer
  protocolError(err: Error, context: Libp2pErrorContext): void
  /** Periodic upkeep, run with each announcement: forget silent members, prune the overlay. */
  upkeep(): void
}

/** Options of {@link Discovery}. */
export interface DiscoveryInit {
  /** Name of the gossipsub service; false: none. */
  readonly pubsub: string | false
  readonly protocol: string
  readonly announceIntervalMs: number
}

/** The discovery side of one transport, from `listen` at start to `stop`. */
export class Discovery {
  private pubsub: PubSubLike | undefined
  private readonly cleanups: (() => void)[] = []
  private announceSoonTimer: ReturnType<typeof setTimeout> | undefined
  private lastAnnounce = 0

  constructor(
    private readonly host: DiscoveryHost,
    private readonly init: DiscoveryInit,
  ) {}

  /** Libp2p PeerIds of the topic's subscribers known to the node. */
  subscribers(): Set<string> {
    return new Set((this.pubsub?.getSubscribers(this.host.topic) ?? []).map((p) => p.toString()))
  }

  /** Removes our listeners and leaves the topic (the timers are the transport's, cleared by it). */
  stop(): void {
    this.announceSoonTimer = undefined
    for (const c of this.cleanups.splice(0)) c()
    this.pubsub = undefined
  }

  /** Starts listening on a node for members of the room: identify results, and gossipsub when the node has it. */
  listen(node: Libp2p, gen: number): void {
    const onIdentify = (evt: CustomEvent<IdentifyResult>): void => {
      if (gen !== this.host.generation) return
      const { peerId, protocols } = evt.detail
      if (protocols.includes(this.init.protocol) && !this.host.dialer.nonMembers.has(peerId.toString())) void this.host.dialer.probe(peerId)
    }
    node.addEventListener('peer:identify', onIdentify)
    this.cleanups.push(() => node.removeEventListener('peer:identify', onIdentify))

    const name = this.init.pubsub
    const ps = name === false ? undefined : (node.services as Record<string, unknown>)[name]
    if (!isPubSub(ps)) return
    this.pubsub = ps
    const onSubscription = (evt: CustomEvent): void => {
      if (gen !== this.host.generation) return
      const { peerId, subscriptions } = evt.detail as SubscriptionChangeData
      if (!subscriptions.some((s) => s.topic === this.host.topic && s.subscribe)) return
      this.host.dialer.nonMembers.delete(peerId.toString())
      this.host.membership.heardOf(peerId.toString())
      void this.host.dialer.probe(peerId)
      this.announceSoon() // a new topic peer: whoever is new learns about us through it
    }
    const onMessage = (evt: CustomEvent, opened?: Uint8Array): void => {
      if (gen !== this.host.generation) return
      const msg = evt.detail as PubsubMessage
      if (msg.topic !== this.host.topic) return
      if (msg.type !== 'signed') return
      const remote = msg.from.toString()
      if (remote === this.host.selfNode) return
      if (this.host.room?.cipher && opened === undefined) {
        void this.openAnnouncement(this.host.room, msg.data).then((plain) => plain && gen === this.host.generation && onMessage(evt, plain))
        return
      }
      let addrs: Multiaddr[]
      try {
        addrs = decodeAnnounce(opened ?? msg.data).map((b) => multiaddr(b))
      } catch (err) {
        this.host.protocolError(err instanceof Libp2pProtocolError ? err : new Libp2pProtocolError(`malformed announcement: ${toError(err).message}`), { remote })
        return
      }
      const isNew = !this.host.membership.has(remote)
      this.host.membership.heardOf(remote)
      if (this.host.hasSessionWith(remote)) return
      this.host.dialer.nonMembers.delete(remote)
      // A member new to us may not know us either: announce soon (not on every announcement, or in a large room each
      // one would set off everyone else's).
      if (isNew) this.announceSoon()
      if (!this.host.membership.wants(remote)) return // outside our overlay: remember it, do not dial it
      const dial = (): void => {
        if (gen !== this.host.generation || this.host.hasSessionWith(remote) || this.host.dialer.dialing.has(remote)) return
        void node.peerStore
          .merge(msg.from, { multiaddrs: addrs })
          .catch(() => undefined)
          .then(() => this.host.dialer.probe(msg.from))
      }
      // Both ends usually learn of each other at once: the smaller PeerId dials, the other waits a moment first, so a
      // pair opens one connection rather than two (each costs a noise handshake).
      if (this.host.selfNode < remote) dial()
      else this.host.timers.after(DIAL_YIELD_MS, dial)
    }
    ps.addEventListener('subscription-change', onSubscription)
    ps.addEventListener('message', onMessage)
    ps.subscribe(this.host.topic)
    this.cleanups.push(() => {
      ps.removeEventListener('subscription-change', onSubscription)
      ps.removeEventListener('message', onMessage)
      try {
        ps.unsubscribe(this.host.topic)
      } catch {
        // the node may be stopping
      }
    })
    this.host.timers.every(this.init.announceIntervalMs, () => {
      this.announce()
      this.host.upkeep()
    })
    this.announce()
  }

  private announce(): void {
    const node = this.host.current
    const ps = this.pubsub
    if (!node || !ps || !this.host.isLive()) return
    this.lastAnnounce = Date.now()
    const addrs = node.getMultiaddrs().map((m) => m.bytes)
    const cipher = this.host.room?.cipher
    const data = cipher ? cipher.seal(encodeAnnounce(addrs), this.announceAad()) : Promise.resolve(encodeAnnounce(addrs))
    data.then((d) => ps.publish(this.host.topic, d)).catch(() => undefined) // no topic peers yet, or stopping: fine
  }

  private announceAad(): Uint8Array {
    return new TextEncoder().encode(`syncmesh/announce/v1\u0000${this.host.topic}`)
  }

  /** Opens a sealed announcement; undefined (after reporting an AuthError) when it does not open. */
  private async openAnnouncement(room: RoomContext, data: Uint8Array): Promise<Uint8Array | undefined> {
    try {
      return await room.cipher!.open(data, this.announceAad())
    } catch (cause) {
      try {
        room.onError?.(new AuthError('a room announcement does not open with the room key (a node with another secret, or none)', 'discovery', { cause }))
      } catch {
        // the sink failed: the announcement is ignored all the same
      }
      return undefined
    }
  }

  /** Announces within ~100 ms, at most once a second. */
  announceSoon(): void {
    if (this.announceSoonTimer !== undefined) return
    const wait = Math.max(100, this.lastAnnounce + 1000 - Date.now())
    this.announceSoonTimer = this.host.timers.after(wait, () => {
      this.announceSoonTimer = undefined
      this.announce()
    })
  }
}
