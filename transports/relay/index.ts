/**
 * `syncmesh/transports/relay` — the relay fallback: a `Transport` that reaches the other peers of a room through a
 * relay server (`npx syncmesh serve`, or `startServer` from `syncmesh/server`) over one WebSocket, for when direct
 * connections are impossible. The server forwards opaque frames; it never learns the room name (the replica hands
 * transports a hash of it) and cannot read anything the sync layer encrypts.
 *
 * ```ts
 * import { relayTransport } from 'syncmesh/transports/relay'
 * const replica = await createReplica({ room: 'todos', transports: [relayTransport({ url: 'ws://127.0.0.1:4444' })] })
 * ```
 *
 * This module is the entry point: the factory and the curated list of public names. Modules, by job: wire.ts (the
 * relay wire format — its specification and the codec the client and the server share), transport.ts (connection,
 * reconnect, keep-alive, membership), send-queue.ts (pacing and coalescing outgoing ops), store.ts (uploads to and
 * downloads from the server's store), socket.ts (WebSocket implementation, closing), types.ts (public types).
 */
import { RelayTransportImpl } from './transport.js'
import type { RelayTransport, RelayTransportInit } from './types.js'

export { AccessDeniedError, FrameTooLargeError, PeerIdInUseError, StoreRefusedError, TransportArgumentError, TransportError, TransportStateError } from '../errors.js'
export { DEFAULT_RELAY_MAX_FRAME_SIZE } from './types.js'
export type { RelayTransport, RelayTransportInit, RelayTransportStats, WebSocketConstructorLike, WebSocketLike } from './types.js'
export {
  RELAY_MAX_ID_BYTES,
  RELAY_MAX_OPS,
  RELAY_MAX_TOKEN_BYTES,
  RELAY_MIN_PROTOCOL_VERSION,
  RELAY_PROTOCOL_VERSION,
  RelayErrorCode,
  RelayOp,
  RelayProtocolError,
  decodeClientMessage,
  decodeServerMessage,
  encodeClientOp,
  encodeRelayMessage,
  encodeServerOp,
  relayIdBytes,
  relayMaxPayload,
  relayMessageVersion,
} from './wire.js'
export type { RelayClientOp, RelayLimits, RelayServerOp } from './wire.js'

/** Creates a relay transport for one replica. */
export function relayTransport(init: RelayTransportInit): RelayTransport {
  return new RelayTransportImpl(init)
}
