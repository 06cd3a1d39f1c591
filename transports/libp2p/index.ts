/**
 * A `Transport` over js-libp2p (v3): replicas of a room meet on libp2p nodes and exchange frames over one
 * long-lived `/syncmesh/sync/1.0.0` stream per pair (wire format: wire.ts). This module is the entry point
 * `syncmesh/transports/libp2p`: the factory and the curated list of public names.
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
 * Node 20: libp2p v3 needs `Promise.withResolvers`. The transport installs a guarded polyfill where a node enters it:
 * when it creates its node, and at `start()` with yours. A node you create yourself accepts connections before that,
 * so on Node 20 create the transport's node first, or polyfill `Promise.withResolvers` yourself.
 *
 * Modules, by job: transport.ts (options, start / stop, the Transport surface), node.ts (the node it creates, the
 * polyfill), hub.ts (one protocol handler per node, shared by rooms), peers.ts (peers up and the session carrying
 * each, duplicate streams), session.ts (one stream: framing, queue, backpressure, relay budgets), dialer.ts
 * (bootstrap, redial, probes), discovery.ts (identify and gossipsub announcements), membership.ts (the bounded
 * overlay), wire.ts (the wire format, specified in its header), types.ts (public types), timers.ts.
 */
import { Libp2pTransportImpl } from './transport.js'
import type { Libp2pTransport, Libp2pTransportInit } from './types.js'

export { FrameTooLargeError, PeerIdInUseError, TransportArgumentError, TransportError, TransportStateError } from '../errors.js'
export { DEFAULT_LISTEN, DEFAULT_MAX_FRAME_SIZE } from './types.js'
export type { Libp2pErrorContext, Libp2pPeerConnection, Libp2pTransport, Libp2pTransportInit, Libp2pTransportStats } from './types.js'
export { Libp2pProtocolError, QueueFullError, SYNC_PROTOCOL, roomTopicOf } from './wire.js'

/** Creates a libp2p transport; nothing happens on the network before `start()`. */
export function libp2pTransport(init: Libp2pTransportInit = {}): Libp2pTransport {
  return new Libp2pTransportImpl(init)
}
