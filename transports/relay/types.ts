/** The public types of the relay transport: its options, its counters, and the WebSocket it needs. */
import type { RoomStoreLink, Transport } from '../types.js'

/** The subset of the WHATWG `WebSocket` the transport uses (browsers' native one and `ws` both fit). */
export interface WebSocketLike {
  binaryType: string
  readonly readyState: number
  readonly bufferedAmount: number
  send(data: Uint8Array): void
  close(code?: number, reason?: string): void
  // Handlers are only ever assigned by the transport, so `never` lets every implementation's own event types fit.
  onopen: ((event: never) => void) | null
  onmessage: ((event: never) => void) | null
  onclose: ((event: never) => void) | null
  onerror: ((event: never) => void) | null
}

/** A `WebSocket` constructor: `globalThis.WebSocket` in browsers, `WebSocket` from `ws` in Node. */
export type WebSocketConstructorLike = new (url: string) => WebSocketLike

/** Options of {@link relayTransport}. */
export interface RelayTransportInit {
  /**
   * The relay server, e.g. `ws://127.0.0.1:4444` (`wss://` in production), or several servers that share rooms
   * (`syncmesh serve --redis`): the transport uses one at a time and, whenever a connection is lost or cannot be
   * made, tries the next one.
   */
  url: string | readonly string[]
  /**
   * Use the server's store (`syncmesh serve --store`): the replica uploads its writes to it and, when it joins,
   * fetches what was stored while it was away. Without a store on the server this does nothing.
   * @default false
   */
  store?: boolean
  /**
   * Access token sent with every JOIN (a server started with `authenticate` or `--token` checks it); a function is
   * called before each connection attempt, so it can return a fresh one.
   * @default none
   */
  token?: string | Uint8Array | (() => string | Uint8Array | Promise<string | Uint8Array>)
  /**
   * The WebSocket implementation.
   * @default `globalThis.WebSocket`, else the `ws` package (Node 20 has no global WebSocket)
   */
  WebSocket?: WebSocketConstructorLike
  /**
   * Largest frame `send` accepts; must fit the server's `maxMessageBytes` (frame + 262 bytes of framing).
   * @default 65536
   */
  maxFrameSize?: number
  /**
   * First reconnect delay; each failed attempt doubles it up to `maxReconnectDelayMs`. Each delay is jittered
   * uniformly over [d/2, d] so that clients of a restarted server do not reconnect in lockstep.
   * @default 250
   */
  minReconnectDelayMs?: number
  /**
   * Cap of the reconnect delay.
   * @default 5000
   */
  maxReconnectDelayMs?: number
  /**
   * Bytes of frames waiting to be written (pacing within the server's rate limits, socket backpressure); frames
   * beyond are dropped (counted in `stats().dropped`) — delivery is best-effort and the sync layer repairs loss.
   * @default 8 MiB
   */
  maxQueuedBytes?: number
  /**
   * After this long without hearing from the server the transport sends a PING; after twice this long it considers
   * the connection dead and reconnects.
   * @default 15000
   */
  keepAliveMs?: number
  /**
   * How long a connection attempt (WebSocket open + JOIN accepted) may take before it is abandoned and retried.
   * @default 10000
   */
  connectTimeoutMs?: number
  /**
   * Receives non-fatal problems: connection failures, refused joins, undecodable server messages, errors thrown by
   * listeners. Without it, listener errors are rethrown asynchronously and the rest is ignored.
   */
  onError?: (error: Error) => void
  /**
   * Source of randomness for the reconnect jitter (tests inject one).
   * @default Math.random
   */
  random?: () => number
}

/** Counters of a relay transport. */
export interface RelayTransportStats {
  /** Frames accepted by `send` (one per call) and `broadcast` (one per call). */
  readonly sentFrames: number
  /** Frames delivered to `frame` listeners. */
  readonly receivedFrames: number
  /** Frames dropped locally: queue full, disconnected before they could be written, or too large for the server. */
  readonly dropped: number
  /** WebSocket messages written. */
  readonly messagesOut: number
  /** Completed joins (the first one and every rejoin after a reconnect). */
  readonly joins: number
  /** Connection attempts made. */
  readonly connectAttempts: number
}

/** A {@link Transport} through a relay server; `broadcast` is always present. */
export interface RelayTransport extends Transport {
  broadcast(frame: Uint8Array): void
  /** The server's store, with `store: true` (see {@link RoomStoreLink}). */
  readonly store: RoomStoreLink | undefined
  /** The server URL in use (or next to be tried). */
  readonly url: string
  /** Whether the transport is joined to its room on the server right now. */
  readonly connected: boolean
  /** A snapshot of the counters. */
  stats(): RelayTransportStats
}

/** Default {@link RelayTransportInit.maxFrameSize}: 64 KiB. */
export const DEFAULT_RELAY_MAX_FRAME_SIZE = 64 * 1024
