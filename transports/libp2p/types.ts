/**
 * The public types of the libp2p transport: its options ({@link Libp2pTransportInit}, with defaults), what it
 * reports (stats, connections, error contexts) and the {@link Libp2pTransport} interface it implements.
 */
import type { Libp2p } from '@libp2p/interface'
import type { Libp2pOptions } from 'libp2p'
import type { PeerId, Transport } from '../types.js'

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
   * over the members it has heard of (a ring lattice over libp2p PeerIds, see ../overlay.ts: connected, degree
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
