/**
 * A {@link Transport} over js-libp2p (v3): replicas of a room meet on libp2p nodes and exchange frames over one
 * long-lived `/syncmesh/sync/1.0.0` stream per pair (wire format: libp2p-wire.ts).
 *
 * ```ts
 * // Own node: TCP + WebSockets, noise, yamux, identify, gossipsub room discovery (listens on loopback by default).
 * const t = libp2pTransport({ listen: ['/ip4/0.0.0.0/tcp/4001'], bootstrap: ['/ip4/10.0.0.2/tcp/4001/p2p/12D3Koo…'] })
 * // Or attach to a node you already run: our protocol handler is added at start and removed at stop, nothing else.
 * const t2 = libp2pTransport({ node: myLibp2p })
 * const replica = await createReplica({ room: 'todos', transports: [t] })
 * ```
 *
 * How peers find each other (any of these is enough):
 * - `bootstrap`: multiaddrs dialed at start and redialed (with backoff) whenever the connection or session drops.
 * - gossipsub (when the node has a `pubsub` service): every member subscribes to a topic derived from the room hash and
 *   publishes its multiaddrs there now and then (and when a new member shows up); members dial the members they learn
 *   about, so two peers that share one bootstrap peer end up directly connected. A connected peer subscribing to the
 *   topic is dialed at once.
 * - any connection whose identify lists our protocol is probed once; a peer that does not speak the protocol, or
 *   speaks it in another room, is simply not a member (its stream is refused and nothing else happens).
 *
 * Relays: `relay: ['/ip4/…/tcp/…/p2p/<relay>']` makes the node listen through those circuit-relay-v2 relays. Relayed
 * connections are *limited* (by default 2 min / 128 KiB per connection, both directions and all protocols counted):
 * our stream runs on them anyway (`runOnLimitedConnection`). A relay cuts a connection that reaches its limit and drops
 * whatever it had received but not yet forwarded, so the transport does not wait for that: once our stream has used
 * 75 % of the data limit (less 8 KiB for identify, gossipsub and pings), or 90 % of the time limit, it stops sending,
 * closes the stream and the connection gracefully (everything sent arrives), the session ends (`peer:down`), the
 * dialing side redials, and the sync engine resumes from version vectors on `peer:up`: each connection carries the
 * next stretch of the sync, never the beginning again. For that, each delta part must fit in what one connection
 * carries: `maxMessageSize(peer)` tells the engine a quarter of the session's share (~22 KiB for the default 128 KiB
 * limit) and the engine cuts what it sends that peer into independently applicable parts no larger (a 1 MB sync
 * crosses a 128 KiB relay in ~1.03× its bytes, test/transports/libp2p-serve.test.ts). A direct (unlimited) stream to
 * the same node always wins over a relayed one.
 *
 * Large rooms: each member keeps sessions with at most `maxPeers` (20) members, a ring lattice over the PeerIds it
 * has heard of (see {@link Libp2pTransportInit.maxPeers}); the engine's forwarding carries changes across it.
 *
 * Live changes ride the direct streams, not gossipsub: `send` is per peer and the engine's own forwarding already
 * gives multi-hop delivery; gossipsub would add per-message signing and verification, a mesh that forms only after
 * heartbeats, a message-id cache, and a second path whose ordering and backpressure we cannot see. Measured on
 * 127.0.0.1 (bench/libp2p.ts, 1 000 sequential 64-byte messages between two nodes): our stream
 * p50 ≈ 0.1 ms, gossipsub publish → message p50 ≈ 0.6–0.9 ms, with similar tails. gossipsub only carries discovery.
 *
 * Backpressure: frames are batched per peer in a microtask; when `stream.send()` returns false the transport waits
 * for drain, queueing at most `maxQueuedBytes` per peer; beyond that new frames are dropped (reported once per episode
 * as {@link QueueFullError}): dropping the newest keeps the oldest parts of a long sync, which is what lets version
 * vectors advance, and anti-entropy re-sends the rest.
 *
 * Duplicate streams (both ends dialed at once) are settled the same way on both ends: an unlimited connection beats a
 * limited one, then the stream opened by the smaller libp2p PeerId, then the newer stream; the loser is closed
 * gracefully after its queued frames move to the winner, and the peer never flaps down and up.
 *
 * Node 20: libp2p v3 needs `Promise.withResolvers`; importing this module installs a guarded polyfill
 * ({@link installPromiseWithResolvers}). When you create your own node, import this module first (or call it).
 */
import type { Connection, IdentifyResult, Libp2p, PeerId as Libp2pPeerId, Stream } from '@libp2p/interface'
import type { Message as PubsubMessage, SubscriptionChangeData } from '@libp2p/gossipsub'
import type { Libp2pOptions } from 'libp2p'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { AuthError, FrameTooLargeError, PeerIdInUseError, TransportArgumentError, TransportStateError } from './errors.js'
import {
  FrameDecoder,
  type Hello,
  Libp2pProtocolError,
  MAX_HELLO_BYTES,
  QueueFullError,
  decodeAnnounce,
  decodeHello,
  encodeAnnounce,
  encodeFrame,
  encodeHello,
  installPromiseWithResolvers,
} from './libp2p-wire.js'
import { TransportListeners } from './listeners.js'
import { overlayNeighbours } from './webrtc-overlay.js'
import type { FrameListener, PeerId, PeerListener, RoomContext, Transport } from './types.js'

export { FrameTooLargeError, PeerIdInUseError, TransportArgumentError, TransportError, TransportStateError } from './errors.js'
export { Libp2pProtocolError, QueueFullError, installPromiseWithResolvers } from './libp2p-wire.js'

installPromiseWithResolvers()

// ---------------------------------------------------------------------------------------------------------------------
// Public types

/** The stream protocol id. */
export const SYNC_PROTOCOL = '/syncmesh/sync/1.0.0'
/** Default {@link Libp2pTransportInit.maxFrameSize}: 64 KiB. */
export const DEFAULT_MAX_FRAME_SIZE = 64 * 1024
/** Default listen addresses of a node the transport creates: loopback only (pass your own to be reachable). */
export const DEFAULT_LISTEN: readonly string[] = ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0/ws']

/** Where a reported error came from. */
export interface Libp2pErrorContext {
  /** The replica peer id concerned, when known. */
  readonly peer?: PeerId
  /** The remote libp2p PeerId (string), when known. */
  readonly remote?: string
  /** Set when a listener of ours threw while handling this event. */
  readonly event?: 'peer:up' | 'peer:down' | 'frame'
}

/** Options of {@link libp2pTransport}. */
export interface Libp2pTransportInit {
  /**
   * A started libp2p node to attach to. The transport registers its protocol handler (and a gossipsub topic) at
   * `start()` and removes them at `stop()`; it never stops the node or touches its other protocols.
   * @default a node created at start() and stopped at stop()
   */
  node?: Libp2p
  /**
   * Listen addresses of the node the transport creates (ignored with `node`).
   * @default DEFAULT_LISTEN (TCP and WebSockets on 127.0.0.1, random ports)
   */
  listen?: readonly string[]
  /**
   * Multiaddrs dialed at start and redialed whenever no session with them is up (members or mere rendezvous peers).
   * Include `/p2p/<id>`; relayed addresses (`…/p2p-circuit/p2p/<id>`) work too.
   * @default []
   */
  bootstrap?: readonly string[]
  /**
   * circuit-relay-v2 relays (`/…/p2p/<relay id>`) the created node listens through, for nodes that cannot be dialed.
   * @default []
   */
  relay?: readonly string[]
  /** Extra options merged over the created node's defaults (e.g. `privateKey`, `connectionGater`); not with `node`. */
  libp2p?: Partial<Libp2pOptions<Record<string, unknown>>>
  /**
   * Name of the gossipsub service used for room discovery; `false` disables gossipsub discovery.
   * @default 'pubsub'
   */
  pubsub?: string | false
  /**
   * Interval of room announcements on gossipsub, in ms.
   * @default 10_000
   */
  announceIntervalMs?: number
  /**
   * First redial delay after a bootstrap peer or a lost member becomes unreachable; doubles up to 30 s.
   * @default 1_000
   */
  redialMs?: number
  /**
   * Stream protocol id.
   * @default SYNC_PROTOCOL
   */
  protocol?: string
  /**
   * Largest frame `send` accepts and the stream carries; both ends must agree (checked in the handshake).
   * @default 65536
   */
  maxFrameSize?: number
  /**
   * Most room members this transport keeps a session with. In a larger room each member keeps a bounded overlay
   * over the members it has heard of (a ring lattice over libp2p PeerIds, see webrtc-overlay.ts: connected, degree
   * ≤ maxPeers) and the sync engine's forwarding carries changes across it; sessions (and, on a node the transport
   * created, connections) with members outside the overlay are closed when there are more than `maxPeers`.
   * `Infinity` connects to every member it learns about (a full mesh).
   * @default 20
   */
  maxPeers?: number
  /**
   * Bytes queued per peer while the stream asks us to wait; further frames are dropped.
   * @default 8 MiB
   */
  maxQueuedBytes?: number
  /**
   * Time allowed for the HELLO exchange on a new stream, in ms.
   * @default 5_000
   */
  handshakeTimeoutMs?: number
  /**
   * Time allowed to dial a peer and open a stream, in ms.
   * @default 10_000
   */
  dialTimeoutMs?: number
  /**
   * Receives protocol errors (malformed input: the stream was reset), dropped frames and listener errors. Without it
   * protocol errors are ignored and listener errors are rethrown from a fresh macrotask.
   */
  onError?: (error: Error, context: Libp2pErrorContext) => void
}

/** Counters of a {@link Libp2pTransport} since its creation. */
export interface Libp2pTransportStats {
  /** Sessions (HELLO exchanged) opened so far, relayed ones included. */
  readonly sessions: number
  /** Of {@link Libp2pTransportStats.sessions}, those on limited (relayed) connections. */
  readonly limitedSessions: number
  /** Frames handed to streams (HELLOs included). */
  readonly framesSent: number
  /** Frames delivered to listeners. */
  readonly framesReceived: number
  /** Bytes written to / read from our streams (length prefixes and HELLOs included). */
  readonly bytesSent: number
  readonly bytesReceived: number
  /** Frames dropped because a peer's queue was full. */
  readonly framesDropped: number
  /** Streams reset because of malformed or oversized input. */
  readonly protocolErrors: number
}

/** What {@link Libp2pTransport.connection} reports about a peer's current session. */
export interface Libp2pPeerConnection {
  /** The remote libp2p PeerId. */
  readonly remotePeer: string
  readonly remoteAddr: string
  /** Whether the session runs over a limited (relayed) connection. */
  readonly limited: boolean
}

/** The transport {@link libp2pTransport} returns. */
export interface Libp2pTransport extends Transport {
  /** Sends one frame to every connected peer (a loop over the direct streams). */
  broadcast(frame: Uint8Array): void
  /** The libp2p node in use while started (the attached one, or the one created at start). */
  readonly node: Libp2p | undefined
  /** The node's addresses (with `/p2p/<id>`), e.g. for other peers' `bootstrap`; empty when stopped. */
  readonly multiaddrs: string[]
  /** The libp2p connection carrying a peer's session, if the peer is up. */
  connection(peer: PeerId): Libp2pPeerConnection | undefined
  /**
   * For a peer reached over a limited (relayed) connection: the largest sync message that fits comfortably in what
   * the connection may carry (a quarter of our share of its data limit); undefined for unlimited connections.
   */
  maxMessageSize(peer: PeerId): number | undefined
  /** Room members this transport has heard of (libp2p PeerIds), itself excluded; with `maxPeers`, the overlay's input. */
  members(): string[]
  stats(): Libp2pTransportStats
}

/** Creates a libp2p {@link Transport}; nothing happens on the network before `start()`. */
export function libp2pTransport(init: Libp2pTransportInit = {}): Libp2pTransport {
  installPromiseWithResolvers()
  return new Libp2pTransportImpl(init)
}

// ---------------------------------------------------------------------------------------------------------------------
// Internals

const MAX_REDIAL_MS = 30_000
/** How long the larger PeerId of a pair that learnt of each other waits for the smaller one to dial. */
const DIAL_YIELD_MS = 1_500
const BATCH_BYTES = 64 * 1024

function unref(timer: ReturnType<typeof setTimeout>): void {
  ;(timer as { unref?: () => void }).unref?.()
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}

function positiveInt(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value < min) throw new TransportArgumentError(`${name} must be an integer ≥ ${min}, got ${String(value)}`)
  return value
}

function parseAddrs(name: string, list: readonly string[] | undefined): Multiaddr[] {
  if (list === undefined) return []
  if (!Array.isArray(list)) throw new TransportArgumentError(`${name} must be an array of multiaddr strings`)
  return list.map((s) => {
    try {
      return multiaddr(s)
    } catch (err) {
      throw new TransportArgumentError(`${name}: invalid multiaddr ${JSON.stringify(s)} (${asError(err).message})`)
    }
  })
}

/** The topic peers of a room meet under, on gossipsub and in HELLO: a hash of the room string the replica passes. */
export async function roomTopicOf(room: string): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', new TextEncoder().encode(`syncmesh/libp2p/v1\u0000${room}`))
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('')
  return `/syncmesh/room/1/${hex}`
}

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

/** What a session reports to its owner (a transport, or the hub before the room is known). */
interface SessionEvents {
  hello(s: Session, hello: Hello): void
  frame(s: Session, frame: Uint8Array): void
  end(s: Session): void
  error(s: Session, err: Error): void
}

/** Options a session gets from its transport. */
interface SessionLimits {
  maxQueuedBytes: number
  handshakeTimeoutMs: number
  onDrop(s: Session, first: boolean): void
  onSent(frames: number, bytes: number): void
  onReceived(bytes: number): void
}

/**
 * Share of a limited (relayed) connection's data limit our stream may use before we close the connection on purpose
 * and let the dialer open a fresh one: the relay counts both directions and every protocol, and it drops whatever it
 * has received but not yet forwarded when it cuts, so we stop short of the limit instead of being cut mid-burst.
 */
const LIMITED_SHARE = 0.75
const LIMITED_OVERHEAD_BYTES = 8 * 1024
const LIMITED_MIN_BUDGET = 4 * 1024
/** Bytes always left unused of what the connection itself reports as remaining (the other end's bytes in flight). */
const LIMITED_MARGIN_BYTES = 4 * 1024
/** A sync message sent on a limited connection is at most this fraction of its budget: several fit in each one. */
const LIMITED_MESSAGE_PARTS = 4
/** Fraction of a limited connection's duration after which we renew it ourselves. */
const LIMITED_DURATION_SHARE = 0.9
/**
 * Longest we keep a connection whose limits include a duration. js-libp2p relays (circuit-relay-v2 4.x) send their
 * duration limit in milliseconds where clients read seconds, so the reported time is 1000× too long; the default
 * relay limit is 2 minutes.
 */
const LIMITED_MAX_AGE_MS = 110_000

/** One stream of our protocol with one remote node, from HELLO to close. */
class Session {
  state: 'handshake' | 'open' | 'ended' = 'handshake'
  hello: Hello | undefined
  /** Set once the stream is no longer the peer's active one: flush, close our side, keep reading until the end. */
  retired = false
  /** Set once a limited connection's budget is spent: nothing more is sent, the connection is being closed. */
  renewing = false
  events: SessionEvents
  readonly remote: string
  private readonly decoder = new FrameDecoder(MAX_HELLO_BYTES)
  private out: Uint8Array[] = []
  private outBytes = 0
  private flushQueued = false
  private draining = false
  private overflowing = false
  /** Bytes of our stream (both directions) a limited connection may still carry; undefined when unlimited. */
  private budget: number | undefined
  private used = 0
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    readonly stream: Stream,
    readonly connection: Connection,
    /** libp2p PeerId (string) of the side that opened the stream. */
    readonly opener: string,
    events: SessionEvents,
    /** Queue bound, timeouts and counters: those of the transport that owns the session. */
    public limits: SessionLimits,
  ) {
    this.events = events
    this.remote = connection.remotePeer.toString()
    this.timer = setTimeout(() => {
      if (this.state === 'handshake') this.fail(new Libp2pProtocolError(`no HELLO within ${limits.handshakeTimeoutMs} ms`))
    }, limits.handshakeTimeoutMs)
    unref(this.timer)
    stream.addEventListener('message', (evt) => {
      const data = evt.data
      this.receive(data instanceof Uint8Array ? data : data.subarray())
    })
    stream.addEventListener('close', () => this.end())
    stream.addEventListener('remoteCloseWrite', () => {
      // The remote is done with this stream: close ours too (flushing), and the session is over.
      this.closeWrite()
      this.end()
    })
    if (stream.status !== 'open') queueMicrotask(() => this.end())
  }

  get peer(): PeerId | undefined {
    return this.hello?.peerId
  }

  get limited(): boolean {
    return this.connection.limits != null
  }

  /** Largest sync message worth sending on this session (see {@link Libp2pTransport.maxMessageSize}). */
  messageHint(): number | undefined {
    if (this.budget === undefined) return undefined
    return Math.max(LIMITED_MIN_BUDGET / LIMITED_MESSAGE_PARTS, Math.floor(this.budget / LIMITED_MESSAGE_PARTS))
  }

  /** Switches to data frames after the HELLO exchange. */
  open(maxFrameSize: number): void {
    this.state = 'open'
    this.decoder.limit = maxFrameSize
    clearTimeout(this.timer)
    this.timer = undefined
    const limits = this.connection.limits
    if (limits?.bytes != null) {
      this.budget = Math.max(LIMITED_MIN_BUDGET, Math.floor(Number(limits.bytes) * LIMITED_SHARE) - LIMITED_OVERHEAD_BYTES)
    }
    if (limits?.seconds != null && limits.seconds > 0) {
      this.timer = setTimeout(() => this.renew(), Math.min(limits.seconds * 1000 * LIMITED_DURATION_SHARE, LIMITED_MAX_AGE_MS))
      unref(this.timer)
    }
  }

  /** Queues one encoded frame; false when it was dropped. */
  enqueue(encoded: Uint8Array): boolean {
    if (this.state === 'ended' || this.retired || this.renewing) return false
    if (this.outBytes + encoded.byteLength > this.limits.maxQueuedBytes && this.out.length > 0) {
      this.limits.onDrop(this, !this.overflowing)
      this.overflowing = true
      return false
    }
    this.out.push(encoded)
    this.outBytes += encoded.byteLength
    this.scheduleFlush()
    return true
  }

  /** Hands the queued frames over to another session (when this one loses a duplicate race or ends). */
  takeQueue(): Uint8Array[] {
    const q = this.out
    this.out = []
    this.outBytes = 0
    return q
  }

  retire(): void {
    if (this.retired || this.state === 'ended') return
    this.retired = true
    if (this.out.length === 0 && !this.draining) this.closeWrite()
  }

  fail(err: Error, quiet = false): void {
    if (this.state === 'ended') return
    if (!quiet) this.events.error(this, err)
    this.stream.abort(err)
    this.end()
  }

  /** Closes gracefully within `ms`, else resets. */
  async shutdown(ms: number): Promise<void> {
    if (this.state === 'ended' && this.stream.status !== 'open') return
    this.out = []
    this.outBytes = 0
    try {
      await this.stream.close({ signal: AbortSignal.timeout(ms) })
    } catch {
      this.stream.abort(new Error('syncmesh transport stopped'))
    }
    this.end()
  }

  end(): void {
    if (this.state === 'ended') return
    this.state = 'ended'
    clearTimeout(this.timer)
    this.events.end(this) // the owner may take the unsent frames over to another stream
    this.out = []
    this.outBytes = 0
  }

  /** Sends whatever is queued right away (used for HELLO, so it precedes anything else on the connection). */
  flushNow(): void {
    if (this.flushQueued) this.flush()
  }

  /**
   * The limited connection has carried its share (or lived most of its time): stop sending, close our stream and the
   * connection gracefully, so everything sent so far arrives, and a fresh connection gets a fresh allowance. What we
   * did not send is not lost for good: the sync engine resumes from version vectors on the next `peer:up`.
   */
  private renew(): void {
    if (this.renewing || this.state === 'ended') return
    this.renewing = true
    this.out = []
    this.outBytes = 0
    void (async () => {
      try {
        await this.stream.close({ signal: AbortSignal.timeout(5_000) })
      } catch {
        // closed or reset meanwhile
      }
      try {
        await this.connection.close({ signal: AbortSignal.timeout(5_000) })
      } catch (err) {
        this.connection.abort(asError(err))
      }
    })()
  }

  /** Bytes this session may still send: unlimited, or what is left of a limited connection's allowance. */
  private allowance(): number {
    if (this.budget === undefined) return Infinity
    const remaining = this.connection.limits?.bytes // a live count on js-libp2p relayed connections (all protocols)
    const live = remaining == null ? Infinity : Number(remaining) - LIMITED_MARGIN_BYTES
    return Math.min(this.budget - this.used, live)
  }

  private closeWrite(): void {
    if (this.stream.writeStatus !== 'writable') return
    this.stream.close().catch((err: unknown) => this.stream.abort(asError(err)))
  }

  private receive(bytes: Uint8Array): void {
    if (this.state === 'ended') return
    this.used += bytes.byteLength
    this.limits.onReceived(bytes.byteLength)
    try {
      this.decoder.push(bytes, (frame) => {
        if (this.state === 'ended') return false
        if (this.hello === undefined) {
          const hello = decodeHello(frame)
          this.hello = hello
          this.events.hello(this, hello)
        } else {
          this.events.frame(this, frame)
        }
        return (this.state as Session['state']) !== 'ended'
      })
    } catch (err) {
      this.fail(asError(err))
    }
  }

  private scheduleFlush(): void {
    if (this.flushQueued || this.draining) return
    this.flushQueued = true
    queueMicrotask(() => this.flush())
  }

  private flush(): void {
    this.flushQueued = false
    if (this.draining || this.state === 'ended' || this.renewing) return
    while (this.out.length > 0) {
      const left = this.allowance()
      if (this.out[0]!.byteLength > left) {
        this.renew() // the next frame does not fit in what this limited connection has left
        return
      }
      const room = Math.min(BATCH_BYTES, left)
      let n = 0
      let size = 0
      while (n < this.out.length && (n === 0 || size + this.out[n]!.byteLength <= room)) size += this.out[n++]!.byteLength
      let batch: Uint8Array
      if (n === 1) {
        batch = this.out[0]!
      } else {
        batch = new Uint8Array(size)
        let o = 0
        for (let k = 0; k < n; k++) {
          batch.set(this.out[k]!, o)
          o += this.out[k]!.byteLength
        }
      }
      this.out.splice(0, n)
      this.outBytes -= size
      this.used += size
      let more: boolean
      try {
        more = this.stream.send(batch)
      } catch (err) {
        this.fail(asError(err), true) // the stream closed under us: a normal end, not bad input
        return
      }
      this.limits.onSent(n, size)
      if (!more) {
        this.draining = true
        this.stream.onDrain().then(
          () => {
            this.draining = false
            this.flush()
          },
          () => this.end(),
        )
        return
      }
    }
    this.overflowing = false
    if (this.retired) this.closeWrite()
  }
}

/** One protocol handler per (node, protocol), shared by the transports of every room on that node. */
class Hub {
  readonly rooms = new Map<string, Libp2pTransportImpl>()
  private handled: Promise<void> | undefined

  constructor(
    readonly node: Libp2p,
    readonly protocol: string,
    private readonly forget: () => void,
  ) {}

  async attach(topic: string, t: Libp2pTransportImpl): Promise<void> {
    if (this.rooms.has(topic)) {
      throw new TransportStateError('another syncmesh transport already serves this room on this libp2p node')
    }
    this.rooms.set(topic, t)
    this.handled ??= this.node.handle(this.protocol, (stream, connection) => this.inbound(stream, connection), {
      runOnLimitedConnection: true,
      maxInboundStreams: 64,
      maxOutboundStreams: 64,
    })
    try {
      await this.handled
    } catch (err) {
      this.handled = undefined
      this.rooms.delete(topic)
      if (this.rooms.size === 0) this.forget()
      throw err
    }
  }

  async detach(topic: string, t: Libp2pTransportImpl): Promise<void> {
    if (this.rooms.get(topic) !== t) return
    this.rooms.delete(topic)
    if (this.rooms.size > 0) return
    this.forget()
    const handled = this.handled
    this.handled = undefined
    if (!handled) return
    const removing = (async () => {
      await handled.catch(() => undefined)
      if (this.node.status === 'started') await Promise.resolve(this.node.unhandle(this.protocol)).catch(() => undefined)
    })()
    // A hub created for this node meanwhile must not register before we unregister (it would lose its handler).
    unhandling.set(this.node, removing)
    await removing
    if (unhandling.get(this.node) === removing) unhandling.delete(this.node)
  }

  private inbound(stream: Stream, connection: Connection): void {
    const hub = this
    const pending: SessionEvents = {
      hello(s, hello) {
        const t = hub.rooms.get(hello.topic)
        if (!t) {
          // Speaks our protocol, but not in a room we serve: not a member. Quiet reset.
          s.fail(new Libp2pProtocolError('no such room here'), true)
          return
        }
        t.adoptInbound(s, hello)
      },
      frame() {},
      end() {},
      error(s, err) {
        // Before the room is known, errors go to every room's onError (there is usually one).
        for (const t of hub.rooms.values()) t.protocolError(err, { remote: s.remote })
      },
    }
    const any = this.rooms.values().next().value
    if (!any) {
      stream.abort(new Libp2pProtocolError('not serving any room'))
      return
    }
    any.createSession(stream, connection, connection.remotePeer.toString(), pending)
  }
}

const hubs = new WeakMap<Libp2p, Map<string, Hub>>()
/** Protocol handlers being removed, per node. */
const unhandling = new WeakMap<Libp2p, Promise<void>>()

async function hubFor(node: Libp2p, protocol: string): Promise<Hub> {
  await unhandling.get(node)
  let byProtocol = hubs.get(node)
  if (!byProtocol) hubs.set(node, (byProtocol = new Map()))
  let hub = byProtocol.get(protocol)
  if (!hub) {
    const map = byProtocol
    hub = new Hub(node, protocol, () => {
      map.delete(protocol)
      if (map.size === 0) hubs.delete(node)
    })
    byProtocol.set(protocol, hub)
  }
  return hub
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

interface BootstrapEntry {
  readonly addr: Multiaddr
  /** The node's PeerId, from the address's `/p2p/` part, then from the connection. */
  peer: string | undefined
  peerId: Libp2pPeerId | undefined
  nextAt: number
  delay: number
  busy: boolean
}

class Libp2pTransportImpl implements Libp2pTransport {
  readonly maxFrameSize: number
  private readonly protocol: string
  private readonly maxQueuedBytes: number
  private readonly handshakeTimeoutMs: number
  private readonly dialTimeoutMs: number
  private readonly announceIntervalMs: number
  private readonly redialMs: number
  private readonly maxPeers: number
  private readonly bootstrapAddrs: Multiaddr[]
  private readonly relayAddrs: Multiaddr[]
  private readonly listenAddrs: Multiaddr[]

  private state: 'idle' | 'starting' | 'started' | 'stopping' | 'stopped' = 'idle'
  private stopping: Promise<void> | undefined
  private generation = 0
  private current: Libp2p | undefined
  private ownNode = false
  private hub: Hub | undefined
  private topic = ''
  private selfPeer: PeerId = ''
  private selfNode = ''
  /** Encrypted rooms: gossipsub announcements are sealed with the room key (AAD "syncmesh/announce/v1" 0x00 topic). */
  private room: RoomContext | undefined
  private pubsub: PubSubLike | undefined

  /** Peers that are up (by replica peer id) and the session carrying each. */
  private readonly links = new Map<PeerId, PeerLink>()
  /** Every session not yet ended (handshaking, active, retired). */
  private readonly sessions = new Set<Session>()
  /** Remote nodes being dialed. */
  private readonly dialing = new Set<string>()
  /** Remote nodes that refused our room (or do not speak the protocol), until they show interest in the room. */
  private readonly nonMembers = new Set<string>()
  /** Redial state of remote nodes we had a session with. */
  private readonly redial = new Map<string, { delay: number; timer: ReturnType<typeof setTimeout> | undefined; peer: Libp2pPeerId }>()
  private bootstrap: BootstrapEntry[] = []
  private readonly cleanups: (() => void)[] = []
  private readonly timers = new Set<ReturnType<typeof setTimeout>>()
  private announceSoonTimer: ReturnType<typeof setTimeout> | undefined
  private lastAnnounce = 0
  /** Room members heard of (announcements, topic subscriptions, sessions): libp2p PeerId → when last heard of. */
  private readonly known = new Map<string, number>()
  /** The overlay's wanted members, recomputed when `known` changes; undefined when stale. */
  private wantedCache: Set<string> | undefined
  private pruneTimer: ReturnType<typeof setTimeout> | undefined

  private readonly listeners = new TransportListeners()

  private counters = { sessions: 0, limitedSessions: 0, framesSent: 0, framesReceived: 0, bytesSent: 0, bytesReceived: 0, framesDropped: 0, protocolErrors: 0 }

  constructor(private readonly init: Libp2pTransportInit) {
    if (init === null || typeof init !== 'object') throw new TransportArgumentError('libp2pTransport() takes an options object')
    this.maxFrameSize = positiveInt('maxFrameSize', init.maxFrameSize, DEFAULT_MAX_FRAME_SIZE, 8)
    if (this.maxFrameSize >= 2 ** 28) throw new TransportArgumentError('maxFrameSize must be below 2^28')
    this.maxQueuedBytes = positiveInt('maxQueuedBytes', init.maxQueuedBytes, 8 * 1024 * 1024)
    this.handshakeTimeoutMs = positiveInt('handshakeTimeoutMs', init.handshakeTimeoutMs, 5_000)
    this.dialTimeoutMs = positiveInt('dialTimeoutMs', init.dialTimeoutMs, 10_000)
    this.announceIntervalMs = positiveInt('announceIntervalMs', init.announceIntervalMs, 10_000)
    this.redialMs = positiveInt('redialMs', init.redialMs, 1_000)
    if (init.maxPeers !== undefined && init.maxPeers !== Infinity) positiveInt('maxPeers', init.maxPeers, 20, 2)
    this.maxPeers = init.maxPeers ?? 20
    this.sessionLimits.maxQueuedBytes = this.maxQueuedBytes
    this.sessionLimits.handshakeTimeoutMs = this.handshakeTimeoutMs
    this.protocol = init.protocol ?? SYNC_PROTOCOL
    if (typeof this.protocol !== 'string' || !this.protocol.startsWith('/')) throw new TransportArgumentError('protocol must start with "/"')
    this.bootstrapAddrs = parseAddrs('bootstrap', init.bootstrap)
    this.relayAddrs = parseAddrs('relay', init.relay)
    this.listenAddrs = parseAddrs('listen', init.listen ?? DEFAULT_LISTEN)
    if (init.node !== undefined && (init.listen !== undefined || init.relay !== undefined || init.libp2p !== undefined)) {
      throw new TransportArgumentError('listen, relay and libp2p configure a node the transport creates; they cannot be used with node')
    }
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Transport

  get node(): Libp2p | undefined {
    return this.state === 'started' || this.state === 'starting' ? this.current : undefined
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
      this.listen(node, gen)
      this.state = 'started'
    } catch (err) {
      await this.teardown()
      this.state = 'stopped'
      throw err
    }
    this.bootstrap = this.bootstrapAddrs.map((addr) => ({ addr, peer: addr.getComponents().findLast((c) => c.name === 'p2p')?.value, peerId: undefined, nextAt: 0, delay: this.redialMs, busy: false }))
    this.every(Math.min(250, this.redialMs), () => this.maintainBootstrap())
    this.maintainBootstrap()
    void this.probeConnected(gen)
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
    const link = this.links.get(peer)
    if (link === undefined) return
    this.push(link, frame)
  }

  broadcast(frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkSize(frame)
    for (const link of this.links.values()) this.push(link, frame)
  }

  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  on(event: 'frame', fn: FrameListener): () => void
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    return this.listeners.on(event, fn)
  }

  connection(peer: PeerId): Libp2pPeerConnection | undefined {
    const s = this.links.get(peer)?.session
    if (!s) return undefined
    return { remotePeer: s.remote, remoteAddr: s.connection.remoteAddr.toString(), limited: s.limited }
  }

  stats(): Libp2pTransportStats {
    return { ...this.counters }
  }

  maxMessageSize(peer: PeerId): number | undefined {
    const link = this.links.get(peer)
    if (!link) return undefined
    if (link.session) return link.session.messageHint()
    return link.relayed ? LIMITED_MIN_BUDGET / LIMITED_MESSAGE_PARTS : undefined
  }

  members(): string[] {
    return [...this.known.keys()]
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Bounded overlay

  /** Notes that a node is a room member. */
  private heardOf(remote: string): void {
    if (remote === this.selfNode) return
    if (!this.known.has(remote)) this.wantedCache = undefined
    this.known.set(remote, Date.now())
    if (this.known.size > this.maxPeers) this.schedulePrune()
  }

  /** Whether the overlay wants a session with this member (always, in a room of at most maxPeers + 1). */
  private wants(remote: string): boolean {
    if (this.known.size <= this.maxPeers) return true
    this.wantedCache ??= overlayNeighbours(this.selfNode, this.known.keys(), this.maxPeers)
    return this.wantedCache.has(remote)
  }

  /** Forgets members not heard of for three announcement intervals (and with no session). */
  private expireMembers(): void {
    const old = Date.now() - 3 * this.announceIntervalMs
    for (const [remote, at] of this.known) {
      if (at < old && !this.hasSessionWith(remote)) {
        this.known.delete(remote)
        this.wantedCache = undefined
      }
    }
  }

  private schedulePrune(): void {
    if (this.pruneTimer !== undefined) return
    this.pruneTimer = this.after(Math.min(1000, this.announceIntervalMs), () => {
      this.pruneTimer = undefined
      this.prune()
    })
  }

  /**
   * With more than maxPeers sessions, closes those with members outside the overlay: gracefully (what was sent
   * arrives), and the connection too when the node is ours and nothing else of ours uses it. The other side does not
   * redial a member its own overlay does not want; views that disagree for a while only keep an extra session.
   */
  private prune(): void {
    if (!this.isLive() || this.links.size <= this.maxPeers || this.known.size <= this.maxPeers) return
    let excess = this.links.size - this.maxPeers
    for (const link of [...this.links.values()]) {
      if (excess <= 0) break
      if (this.wants(link.remote)) continue
      excess--
      const s = link.session
      const remote = link.remotePeer
      for (const x of this.sessions) if (x.remote === link.remote) x.retire()
      if (this.ownNode && s && !this.bootstrap.some((b) => b.peer === link.remote)) {
        const conn = s.connection
        this.after(2_000, () => {
          if (!this.isLive() || this.hasSessionWith(remote.toString())) return
          conn.close().catch(() => undefined)
        })
      }
    }
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Sessions

  /** Wraps a stream in a session of this transport (the hub also uses it for inbound streams before the room is known). */
  createSession(stream: Stream, connection: Connection, opener: string, events?: SessionEvents): Session {
    return new Session(stream, connection, opener, events ?? this.sessionEvents, this.sessionLimits)
  }

  private readonly sessionLimits: SessionLimits = {
    maxQueuedBytes: 0, // set in the constructor
    handshakeTimeoutMs: 0,
    onDrop: (sess, first) => {
      this.counters.framesDropped++
      if (first) {
        const err = new QueueFullError(`outbound queue to ${sess.peer ?? sess.remote} is full (${this.maxQueuedBytes} bytes): dropping frames`)
        this.report(err, { peer: sess.peer, remote: sess.remote })
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
    if (!this.isLive()) {
      s.fail(new Libp2pProtocolError('transport stopping'), true)
      return
    }
    s.events = this.sessionEvents
    s.limits = this.sessionLimits
    this.sessions.add(s)
    if (!this.acceptHello(s, hello)) return
    s.enqueue(encodeFrame(encodeHello({ topic: this.topic, peerId: this.selfPeer, maxFrameSize: this.maxFrameSize })))
    this.establish(s)
  }

  protocolError(err: Error, context: Libp2pErrorContext): void {
    this.counters.protocolErrors++
    this.report(err, context)
  }

  private readonly sessionEvents: SessionEvents = {
    hello: (s, hello) => {
      // Outbound sessions only: inbound HELLOs go through the hub.
      if (!this.acceptHello(s, hello)) return
      this.establish(s)
    },
    frame: (s, frame) => {
      const peer = s.peer
      if (peer === undefined || !this.isLive()) return
      if (this.links.get(peer)?.remote !== s.remote) return
      this.counters.framesReceived++
      this.emitFrame(peer, frame)
    },
    end: (s) => this.sessionEnded(s),
    error: (s, err) => this.protocolError(err, { peer: s.peer, remote: s.remote }),
  }

  private acceptHello(s: Session, hello: Hello): boolean {
    if (hello.topic !== this.topic) {
      s.fail(new Libp2pProtocolError('HELLO for another room'))
      return false
    }
    if (hello.maxFrameSize !== this.maxFrameSize) {
      s.fail(new Libp2pProtocolError(`peer uses maxFrameSize ${hello.maxFrameSize}, this transport ${this.maxFrameSize}; both ends must agree`))
      return false
    }
    if (hello.peerId === this.selfPeer || s.remote === this.selfNode) {
      s.fail(new PeerIdInUseError(`a peer in this room uses our own peer id ${JSON.stringify(this.selfPeer)}`))
      return false
    }
    return true
  }

  /** HELLOs exchanged: make the session the peer's active one, or keep the current one (duplicate dials). */
  private establish(s: Session): void {
    s.open(this.maxFrameSize)
    s.flushNow()
    this.nonMembers.delete(s.remote)
    this.heardOf(s.remote)
    this.resetRedial(s.remote)
    this.counters.sessions++
    if (s.limited) this.counters.limitedSessions++
    const peer = s.peer!
    const link = this.links.get(peer)
    if (link === undefined) {
      this.links.set(peer, { peer, remote: s.remote, remotePeer: s.connection.remotePeer, session: s, relayed: s.limited, pending: [], pendingBytes: 0, limbo: undefined })
      this.emitPeer('peer:up', peer)
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
      this.emitPeer('peer:down', peer)
      this.emitPeer('peer:up', peer)
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
    if (link.limbo !== undefined) this.clearTimer(link.limbo)
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
    const opener = this.selfNode < a.remote ? this.selfNode : a.remote
    const ap = a.opener === opener
    const bp = b.opener === opener
    if (ap !== bp) return ap
    return true
  }

  private sessionEnded(s: Session): void {
    this.sessions.delete(s)
    if (!this.isLive()) return
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
      link.limbo ??= this.after(this.handshakeTimeoutMs, () => {
        link.limbo = undefined
        if (link.session === undefined) this.peerDown(link)
      })
      return
    }
    this.peerDown(link)
  }

  private peerDown(link: PeerLink): void {
    if (link.limbo !== undefined) this.clearTimer(link.limbo)
    link.limbo = undefined
    if (this.links.get(link.peer) !== link) return
    this.links.delete(link.peer)
    this.emitPeer('peer:down', link.peer)
    this.scheduleRedial(link.remotePeer, link.relayed ? Math.min(100, this.redialMs) : this.redialMs)
  }

  /** Keeps a frame for a peer whose stream is being replaced. */
  private park(link: PeerLink, encoded: Uint8Array): boolean {
    if (link.pendingBytes + encoded.byteLength > this.maxQueuedBytes) {
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

  private checkSize(frame: Uint8Array): void {
    if (!(frame instanceof Uint8Array)) throw new TransportArgumentError('frame must be a Uint8Array')
    if (frame.byteLength > this.maxFrameSize) throw new FrameTooLargeError(frame.byteLength, this.maxFrameSize)
  }

  private isLive(): boolean {
    return this.state === 'started' || this.state === 'starting'
  }

  private hasSessionWith(remote: string): boolean {
    for (const s of this.sessions) if (s.remote === remote && !s.retired && s.state !== 'ended') return true
    return false
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Finding and dialing members

  /** Opens a session with a node (dialing it if needed). Failures are quiet: the node is just not (yet) a member. */
  private async probe(target: Libp2pPeerId | Multiaddr, bootstrap?: BootstrapEntry): Promise<void> {
    const node = this.current
    if (!node || !this.isLive()) return
    const known = 'toMultihash' in target ? target.toString() : bootstrap?.peer
    if (known !== undefined && (known === this.selfNode || this.dialing.has(known) || this.hasSessionWith(known))) return
    if (bootstrap === undefined && known !== undefined && !this.wants(known)) return // outside our overlay
    const gen = this.generation
    if (known !== undefined) this.dialing.add(known)
    try {
      const connection = await node.dial(target, { signal: AbortSignal.timeout(this.dialTimeoutMs) })
      const remote = connection.remotePeer.toString()
      if (bootstrap) {
        bootstrap.peer = remote
        bootstrap.peerId = connection.remotePeer
      }
      if (gen !== this.generation || remote === this.selfNode) return
      if (known === undefined && (this.dialing.has(remote) || this.hasSessionWith(remote))) return
      if (this.hasSessionWith(remote) || (this.nonMembers.has(remote) && bootstrap !== undefined)) return
      this.dialing.add(remote)
      let stream: Stream
      try {
        stream = await connection.newStream(this.protocol, { runOnLimitedConnection: true, signal: AbortSignal.timeout(this.dialTimeoutMs) })
      } catch {
        this.nonMembers.add(remote) // does not speak the protocol (or refused it): not a member
        return
      } finally {
        if (known === undefined) this.dialing.delete(remote)
      }
      if (gen !== this.generation) {
        stream.abort(new Error('syncmesh transport stopped'))
        return
      }
      const s = this.createSession(stream, connection, this.selfNode)
      this.sessions.add(s)
      s.enqueue(encodeFrame(encodeHello({ topic: this.topic, peerId: this.selfPeer, maxFrameSize: this.maxFrameSize })))
      s.flushNow()
      stream.addEventListener('close', () => {
        // Refused during the handshake (the remote serves another room): remember, do not retry blindly.
        if (s.hello === undefined && gen === this.generation) this.nonMembers.add(remote)
      })
    } catch {
      // unreachable for now; bootstrap entries, redials and announcements try again later
    } finally {
      if (known !== undefined) this.dialing.delete(known)
    }
  }

  /** At start: connected nodes that speak our protocol or subscribe to our topic. */
  private async probeConnected(gen: number): Promise<void> {
    const node = this.current
    if (!node) return
    const subscribers = new Set((this.pubsub?.getSubscribers(this.topic) ?? []).map((p) => p.toString()))
    const seen = new Set<string>()
    for (const conn of node.getConnections()) {
      const id = conn.remotePeer.toString()
      if (seen.has(id)) continue
      seen.add(id)
      let speaks = subscribers.has(id)
      if (!speaks) {
        try {
          speaks = (await node.peerStore.get(conn.remotePeer)).protocols.includes(this.protocol)
        } catch {
          speaks = false
        }
      }
      if (gen !== this.generation) return
      if (speaks) void this.probe(conn.remotePeer)
    }
  }

  private maintainBootstrap(): void {
    const now = Date.now()
    for (const b of this.bootstrap) {
      if (b.busy || now < b.nextAt) continue
      if (b.peer !== undefined && this.hasSessionWith(b.peer)) continue
      // A bootstrap member outside our overlay is only needed while we have no session at all.
      if (b.peer !== undefined && this.links.size > 0 && this.known.has(b.peer) && !this.wants(b.peer)) continue
      // A rendezvous peer outside the room: keep the connection (gossipsub rides it), do not re-probe.
      if (b.peerId !== undefined && this.nonMembers.has(b.peer!) && (this.current?.getConnections(b.peerId).length ?? 0) > 0) continue
      b.busy = true
      b.nextAt = now + b.delay
      b.delay = Math.min(b.delay * 2, MAX_REDIAL_MS)
      void this.probe(b.addr, b).finally(() => {
        b.busy = false
        if (b.peer !== undefined && this.hasSessionWith(b.peer)) b.delay = this.redialMs
      })
    }
  }

  private scheduleRedial(peer: Libp2pPeerId, firstDelay = this.redialMs): void {
    const remote = peer.toString()
    let r = this.redial.get(remote)
    if (!r) this.redial.set(remote, (r = { delay: firstDelay, timer: undefined, peer }))
    if (r.timer !== undefined) return
    const state = r
    state.timer = this.after(state.delay, () => {
      state.timer = undefined
      state.delay = Math.min(state.delay * 2, MAX_REDIAL_MS)
      if (this.hasSessionWith(remote) || this.nonMembers.has(remote)) return
      void this.probe(state.peer).then(() => {
        if (!this.hasSessionWith(remote) && state.delay < MAX_REDIAL_MS) this.scheduleRedial(state.peer)
      })
    })
  }

  private resetRedial(remote: string): void {
    const r = this.redial.get(remote)
    if (!r) return
    if (r.timer !== undefined) this.clearTimer(r.timer)
    this.redial.delete(remote)
    for (const b of this.bootstrap) if (b.peer === remote) b.delay = this.redialMs
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Node events and gossipsub discovery

  private listen(node: Libp2p, gen: number): void {
    const onIdentify = (evt: CustomEvent<IdentifyResult>): void => {
      if (gen !== this.generation) return
      const { peerId, protocols } = evt.detail
      if (protocols.includes(this.protocol) && !this.nonMembers.has(peerId.toString())) void this.probe(peerId)
    }
    node.addEventListener('peer:identify', onIdentify)
    this.cleanups.push(() => node.removeEventListener('peer:identify', onIdentify))

    const name = this.init.pubsub ?? 'pubsub'
    const ps = name === false ? undefined : (node.services as Record<string, unknown>)[name]
    if (!isPubSub(ps)) return
    this.pubsub = ps
    const onSubscription = (evt: CustomEvent): void => {
      if (gen !== this.generation) return
      const { peerId, subscriptions } = evt.detail as SubscriptionChangeData
      if (!subscriptions.some((s) => s.topic === this.topic && s.subscribe)) return
      this.nonMembers.delete(peerId.toString())
      this.heardOf(peerId.toString())
      void this.probe(peerId)
      this.announceSoon() // a new topic peer: whoever is new learns about us through it
    }
    const onMessage = (evt: CustomEvent, opened?: Uint8Array): void => {
      if (gen !== this.generation) return
      const msg = evt.detail as PubsubMessage
      if (msg.topic !== this.topic) return
      if (msg.type !== 'signed') return
      const remote = msg.from.toString()
      if (remote === this.selfNode) return
      if (this.room?.cipher && opened === undefined) {
        void this.openAnnouncement(this.room, msg.data).then((plain) => plain && gen === this.generation && onMessage(evt, plain))
        return
      }
      let addrs: Multiaddr[]
      try {
        addrs = decodeAnnounce(opened ?? msg.data).map((b) => multiaddr(b))
      } catch (err) {
        this.protocolError(err instanceof Libp2pProtocolError ? err : new Libp2pProtocolError(`malformed announcement: ${asError(err).message}`), { remote })
        return
      }
      const isNew = !this.known.has(remote)
      this.heardOf(remote)
      if (this.hasSessionWith(remote)) return
      this.nonMembers.delete(remote)
      // A member new to us may not know us either: announce soon (not on every announcement, or in a large room each
      // one would set off everyone else's).
      if (isNew) this.announceSoon()
      if (!this.wants(remote)) return // outside our overlay: remember it, do not dial it
      const dial = (): void => {
        if (gen !== this.generation || this.hasSessionWith(remote) || this.dialing.has(remote)) return
        void node.peerStore
          .merge(msg.from, { multiaddrs: addrs })
          .catch(() => undefined)
          .then(() => this.probe(msg.from))
      }
      // Both ends usually learn of each other at once: the smaller PeerId dials, the other waits a moment first, so a
      // pair opens one connection rather than two (each costs a noise handshake).
      if (this.selfNode < remote) dial()
      else this.after(DIAL_YIELD_MS, dial)
    }
    ps.addEventListener('subscription-change', onSubscription)
    ps.addEventListener('message', onMessage)
    ps.subscribe(this.topic)
    this.cleanups.push(() => {
      ps.removeEventListener('subscription-change', onSubscription)
      ps.removeEventListener('message', onMessage)
      try {
        ps.unsubscribe(this.topic)
      } catch {
        // the node may be stopping
      }
    })
    this.every(this.announceIntervalMs, () => {
      this.announce()
      this.expireMembers()
      this.prune()
    })
    this.announce()
  }

  private announce(): void {
    const node = this.current
    const ps = this.pubsub
    if (!node || !ps || this.state !== 'started' && this.state !== 'starting') return
    this.lastAnnounce = Date.now()
    const addrs = node.getMultiaddrs().map((m) => m.bytes)
    const cipher = this.room?.cipher
    const data = cipher ? cipher.seal(encodeAnnounce(addrs), this.announceAad()) : Promise.resolve(encodeAnnounce(addrs))
    data.then((d) => ps.publish(this.topic, d)).catch(() => undefined) // no topic peers yet, or stopping: fine
  }

  private announceAad(): Uint8Array {
    return new TextEncoder().encode(`syncmesh/announce/v1\u0000${this.topic}`)
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
  private announceSoon(): void {
    if (this.announceSoonTimer !== undefined) return
    const wait = Math.max(100, this.lastAnnounce + 1000 - Date.now())
    this.announceSoonTimer = this.after(wait, () => {
      this.announceSoonTimer = undefined
      this.announce()
    })
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Teardown, timers, events

  private async teardown(): Promise<void> {
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    this.announceSoonTimer = undefined
    this.pruneTimer = undefined
    this.known.clear()
    this.wantedCache = undefined
    this.redial.clear()
    this.bootstrap = []
    for (const c of this.cleanups.splice(0)) c()
    this.pubsub = undefined
    const hub = this.hub
    this.hub = undefined
    if (hub) await hub.detach(this.topic, this).catch(() => undefined)
    const closing = [...this.sessions].map((s) => s.shutdown(1_000))
    await Promise.allSettled(closing)
    this.sessions.clear()
    this.links.clear()
    this.dialing.clear()
    this.nonMembers.clear()
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

  private after(ms: number, fn: () => void): ReturnType<typeof setTimeout> {
    const t = setTimeout(() => {
      this.timers.delete(t)
      fn()
    }, ms)
    unref(t)
    this.timers.add(t)
    return t
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms)
    unref(t)
    this.timers.add(t)
  }

  private clearTimer(t: ReturnType<typeof setTimeout>): void {
    clearTimeout(t)
    this.timers.delete(t)
  }

  private emitPeer(event: 'peer:up' | 'peer:down', peer: PeerId): void {
    if (!this.isLive()) return
    this.listeners.emitPeer(event, peer, (error) => this.listenerError(error, { event, peer }))
  }

  private emitFrame(peer: PeerId, frame: Uint8Array): void {
    this.listeners.emitFrame(peer, frame, (error) => this.listenerError(error, { event: 'frame', peer }))
  }

  private listenerError(error: unknown, context: Libp2pErrorContext): void {
    if (this.init.onError) this.report(asError(error), context)
    else
      setTimeout(() => {
        throw error
      }, 0)
  }

  private report(error: Error, context: Libp2pErrorContext): void {
    try {
      this.init.onError?.(error, context)
    } catch {
      // an error handler that throws must not break the transport
    }
  }
}

/** Creates and starts the node of a transport that was not given one. */
async function createNode(init: Libp2pTransportInit, listen: Multiaddr[], relays: Multiaddr[], maxPeers: number): Promise<Libp2p> {
  installPromiseWithResolvers()
  const [{ createLibp2p }, { tcp }, { webSockets }, { noise }, { yamux }, { identify }, { circuitRelayTransport }] = await Promise.all([
    import('libp2p'),
    import('@libp2p/tcp'),
    import('@libp2p/websockets'),
    import('@chainsafe/libp2p-noise'),
    import('@chainsafe/libp2p-yamux'),
    import('@libp2p/identify'),
    import('@libp2p/circuit-relay-v2'),
  ])
  // @libp2p/websockets dials with the global WebSocket, which Node 20 lacks.
  if (typeof (globalThis as { WebSocket?: unknown }).WebSocket === 'undefined') {
    const ws = await import('ws')
    ;(globalThis as { WebSocket?: unknown }).WebSocket ??= ws.WebSocket
  }
  const services: Record<string, unknown> = { identify: identify() }
  const pubsubName = init.pubsub ?? 'pubsub'
  if (pubsubName !== false) {
    const { gossipsub } = await import('@libp2p/gossipsub')
    // No IP-colocation penalty: members of a room often share an address (one NAT, one machine), and past ten of
    // them gossipsub's default would graylist the rest, silencing room discovery. Announcements are signed anyway.
    services[pubsubName] = gossipsub({ allowPublishToZeroTopicPeers: true, runOnLimitedConnection: true, emitSelf: false, scoreParams: { IPColocationFactorWeight: 0 } })
  }
  const extra = init.libp2p ?? {}
  const options = {
    addresses: { listen: [...listen.map(String), ...relays.map((r) => `${r.toString()}/p2p-circuit`)] },
    transports: [tcp(), webSockets(), circuitRelayTransport()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // libp2p refuses more than 5 inbound connections per second from one address (and more than 10 upgrading at
    // once); room members sharing an address (a NAT, a LAN, one machine) that all dial their overlay neighbours at
    // once would be refused. Allow a whole overlay's worth.
    connectionManager: { inboundConnectionThreshold: Math.max(5, Math.min(2 * maxPeers, 200)), maxIncomingPendingConnections: Math.max(10, Math.min(maxPeers, 100)) },
    ...extra,
    services: { ...services, ...(extra.services ?? {}) },
  }
  return (await createLibp2p(options as Libp2pOptions<Record<string, unknown>>)) as unknown as Libp2p
}
