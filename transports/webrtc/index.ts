/**
 * A `Transport` over WebRTC data channels, with peers meeting through y-webrtc-compatible signaling servers
 * (y-webrtc's own `bin/server.js`, or `syncmesh serve`).
 *
 * ```ts
 * import { webrtcTransport } from 'syncmesh/transports/webrtc'
 * const replica = await createReplica({ transports: [webrtcTransport({ signaling: ['wss://signal.example.com'] })] })
 * ```
 *
 * Browsers use their native `RTCPeerConnection` and `WebSocket`. Node has neither: the transport loads
 * `@roamhq/wrtc` and `ws` when they are installed, or takes implementations through `rtc` / `WebSocket`.
 *
 * Signaling (JSON, the `data` of a publish on the room topic; shapes follow y-webrtc's where y-webrtc has one)
 * - `{type:'announce', from, session}` — broadcast when a signaling socket (re)opens and every `announceIntervalMs`.
 *   `session` is random per `start()`, so a peer that restarts with the same id is seen as new. A peer that learns of
 *   a new (id, session) answers with a directed `{type:'announce', from, session, to}`, so a newcomer learns the room.
 * - `{type:'signal', from, to, token, session, signal}` — about one connection attempt, named by `token` (chosen by
 *   the offerer). `signal` is `{type:'offer'|'answer', sdp}`, `{type:'candidate', candidate:{candidate, sdpMid,
 *   sdpMLineIndex}}` (trickle ICE), `{type:'reject'}` (no room for you) or `{type:'bye'}` (closing this one).
 * - `{type:'leave', from, session}` — broadcast by `stop()`.
 * Anything else — wrong shapes, unknown types, text over `maxSignalBytes`, messages for other peers — is ignored.
 * - Encrypted rooms (`RoomContext.cipher`, from `createReplica({ secret })`): every payload above is sealed whole —
 *   `from`, `to`, `token`, `session`, SDP and candidates included — and published as `{sm:1, c:<base64>}` with
 *   AAD `"syncmesh/signal/v1" 0x00 topic`; the server sees the topic hash, ciphertext and its size. Payloads are
 *   sealed and opened in order. A payload that is not sealed, or does not open, is ignored and reported as an
 *   `AuthError` (source `'signaling'`) through `RoomContext.onError`. Without a cipher nothing changes (y-webrtc
 *   compatible).
 *
 * Connections
 * - One `RTCPeerConnection` per peer with one pre-negotiated, ordered, reliable data channel (id 0) carrying frames
 *   as binary messages, one frame per message; `peer:up` when it opens, `peer:down` when it closes or fails.
 * - Either side may offer. Offer glare (both offered) resolves deterministically: the offer of the smaller peer id
 *   wins, and the larger one drops its own attempt and answers. To make glare rare, the larger id waits a moment
 *   before offering to a peer it just learned of.
 * - An attempt that is not open after `connectTimeoutMs` (ICE failed, peer gone, offer lost) is closed and the peer
 *   is retried later with jittered exponential backoff (`reconnect`); meanwhile the overlay routes around it.
 * - At most `maxPeers` connections (pending ones included). With more members than that, each peer keeps a bounded
 *   overlay (see ../overlay.ts: a ring lattice over the sorted ids, connected, degree ≤ maxPeers) and the sync
 *   engine's forwarding and anti-entropy carry writes across hops. An offer beyond capacity is rejected unless it
 *   comes from a wanted neighbour and an unwanted connection can make room.
 * - Signaling sockets reconnect on their own (jittered exponential backoff) and re-announce; open data channels do
 *   not depend on them.
 *
 * Frames and backpressure
 * - `maxFrameSize` is 16 KiB, the message size every WebRTC stack accepts; larger frames throw
 *   {@link FrameTooLargeError} (the sync engine chunks its messages below it).
 * - While a channel's `bufferedAmount` stays under `maxBufferedBytes`, `send` hands the frame to the channel at
 *   once. Above it, frames wait in a per-peer FIFO of at most `maxQueuedBytes`, drained as the channel empties
 *   (`bufferedamountlow`, with a polling fallback for stacks that never fire it); a frame that does not fit is dropped
 *   and counted (`status().dropped`) — the sync layer repairs losses.
 *
 * This module is the entry point `syncmesh/transports/webrtc`: the factory and the curated list of public names.
 * Modules, by job: transport.ts (options, start / stop, the Transport surface, room signaling, overlay upkeep),
 * connections.ts (peer connection lifecycle), frames.ts (frame queue, backpressure), membership.ts (members and
 * the overlay view), signaling.ts (signaling server client), messages.ts (signaling payloads), runtime.ts (WebRTC
 * and WebSocket implementations), types.ts (public types).
 */
import { WebRTCTransportImpl } from './transport.js'
import type { WebRTCTransport, WebRTCTransportInit } from './types.js'

export { FrameTooLargeError, TransportArgumentError, TransportError, TransportStateError } from '../errors.js'
export type { BackoffInit, WebSocketConstructor } from './signaling.js'
export { WEBRTC_MAX_FRAME_SIZE } from './types.js'
export type { IceServer, RTCImplementation, WebRTCPeerStatus, WebRTCStatus, WebRTCTransport, WebRTCTransportInit } from './types.js'

/** Creates a WebRTC transport; nothing happens until `start()`. */
export function webrtcTransport(init: WebRTCTransportInit): WebRTCTransport {
  return new WebRTCTransportImpl(init)
}
