/**
 * The public types of the WebRTC transport: its options ({@link WebRTCTransportInit}, with defaults), what
 * {@link WebRTCTransport.status} reports, and the {@link WebRTCTransport} interface it implements.
 */
import type { PeerId, Transport } from '../types.js'
import type { BackoffInit, WebSocketConstructor } from './signaling.js'

/** A WebRTC implementation: the browser's globals, `@roamhq/wrtc`'s module, or anything with a standard constructor. */
export interface RTCImplementation {
  /** A standard `RTCPeerConnection` constructor. */
  readonly RTCPeerConnection: new (...args: never[]) => unknown
}

/** An ICE server entry (`RTCIceServer`). */
export interface IceServer {
  urls: string | string[]
  username?: string
  credential?: string
}

/** Options of {@link webrtcTransport}. */
export interface WebRTCTransportInit {
  /** Signaling server URLs (`ws://` or `wss://`), all used at once; at least one. */
  signaling: readonly string[]
  /**
   * The WebRTC implementation.
   * @default the global `RTCPeerConnection` when there is one, else `@roamhq/wrtc` (loaded on `start()`)
   */
  rtc?: RTCImplementation
  /**
   * STUN / TURN servers for ICE. Without any, only host candidates are used (same machine or same LAN).
   * @default []
   */
  iceServers?: readonly IceServer[]
  /**
   * Most data connections kept at once (pending ones included); larger rooms use a bounded overlay. At least 2.
   * @default 20
   */
  maxPeers?: number
  /**
   * How long a connection attempt may take before it is dropped and retried with backoff.
   * @default 5000
   */
  connectTimeoutMs?: number
  /**
   * The WebSocket constructor for signaling.
   * @default the global `WebSocket`, else the `ws` package (loaded on `start()`)
   */
  WebSocket?: WebSocketConstructor
  /**
   * Largest frame accepted by `send`, at most 16384.
   * @default 16384
   */
  maxFrameSize?: number
  /**
   * Bytes a data channel may hold in its own send buffer before frames wait in the transport's queue.
   * @default 1_048_576
   */
  maxBufferedBytes?: number
  /**
   * Bytes of frames that may wait per peer once the channel's buffer is full; beyond, frames are dropped.
   * @default 2_097_152
   */
  maxQueuedBytes?: number
  /** Backoff for reconnecting to signaling servers and retrying failed peers. */
  reconnect?: BackoffInit
  /**
   * Interval of the periodic re-announce (keeps membership fresh; members unheard of for 3 intervals are forgotten).
   * @default 15_000
   */
  announceIntervalMs?: number
  /**
   * Interval of signaling pings; a socket silent for two intervals is reopened.
   * @default 10_000
   */
  pingIntervalMs?: number
  /**
   * Signaling messages longer than this many characters are ignored unread.
   * @default 65_536
   */
  maxSignalBytes?: number
  /**
   * Receives errors thrown by `peer:up` / `peer:down` / `frame` listeners.
   * @default rethrown from a fresh macrotask (an uncaught exception)
   */
  onListenerError?: (error: unknown) => void
}

/** One peer connection, as {@link WebRTCTransport.status} reports it. */
export interface WebRTCPeerStatus {
  readonly id: PeerId
  /** `connecting` until the data channel opens. */
  readonly state: 'connecting' | 'open'
  /** Whether this side sent the offer. */
  readonly initiator: boolean
  /** Bytes in the data channel's send buffer. */
  readonly bufferedAmount: number
  /** Bytes of frames waiting in the transport's queue. */
  readonly queuedBytes: number
  /** Whether the overlay wants this connection (always true in a room of at most maxPeers + 1). */
  readonly wanted: boolean
}

/** What {@link WebRTCTransport.status} returns. */
export interface WebRTCStatus {
  readonly peerId: PeerId | undefined
  readonly started: boolean
  readonly signaling: readonly { readonly url: string; readonly connected: boolean; readonly opens: number }[]
  readonly peers: readonly WebRTCPeerStatus[]
  /** Peers known to be in the room (announced, not left). */
  readonly members: readonly PeerId[]
  /** Frames dropped because a peer's queue was full, since creation. */
  readonly dropped: number
}

/** The transport returned by {@link webrtcTransport}. */
export interface WebRTCTransport extends Transport {
  /** Sends one frame to every connected peer. */
  broadcast(frame: Uint8Array): void
  /** Peers with an open data channel. */
  connectedPeers(): PeerId[]
  /** Signaling sockets, connections, membership and drop counts. */
  status(): WebRTCStatus
}

/** The largest data-channel message every WebRTC stack delivers intact: 16 KiB. */
export const WEBRTC_MAX_FRAME_SIZE = 16 * 1024
