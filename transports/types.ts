/**
 * The one interface every syncmesh transport implements. Transports never import the library (`src/`): they move
 * opaque frames between peers of a room and report which peers are reachable. Delivery is best-effort: a frame may be
 * dropped, duplicated or reordered, and the sync engine above copes with all three.
 */

/** A peer's identity inside a room (an opaque, non-empty string). */
export type PeerId = string

/** What a transport is told when it starts. */
export interface RoomContext {
  /** The topic peers meet under. The replica passes a hash of (app, room), never the room name itself. */
  readonly room: string
  /** This replica's peer id. */
  readonly peerId: PeerId
  /**
   * The room key, when the room is encrypted (`createReplica({ secret })`). The replica already seals every frame
   * passed to `send` / `broadcast`; a transport uses the cipher for what else it sends through third parties
   * (signaling payloads, discovery announcements) and ignores, after reporting through `onError`, anything that
   * does not open.
   */
  readonly cipher?: RoomCipher
  /** Where a transport reports problems that have no caller to throw to (e.g. an `AuthError` from signaling). */
  readonly onError?: (error: Error, peer?: PeerId) => void
}

/**
 * Authenticated encryption with the room key (AES-256-GCM, a fresh random 96-bit nonce per message). `aad` is
 * authenticated but not encrypted: bind there what the message must not be moved to (its purpose, the room topic).
 */
export interface RoomCipher {
  /** Encrypts `plain`; the result is `overhead` bytes longer. */
  seal(plain: Uint8Array, aad: Uint8Array): Promise<Uint8Array>
  /** Decrypts what `seal` produced with the same `aad`; rejects with an `AuthError` (transports/errors.ts) otherwise. */
  open(sealed: Uint8Array, aad: Uint8Array): Promise<Uint8Array>
  /** Bytes `seal` adds: nonce and authentication tag. */
  readonly overhead: number
}

/** What a server that keeps a store of the room says about it when a member joins. */
export interface RoomStoreInfo {
  /** Identifies the store (stable across restarts and across the server processes that share it). */
  readonly storeId: string
  /** The room's newest sequence number in the store (0 when empty). */
  readonly head: number
  /** Bytes the room holds in the store. */
  readonly bytes: number
}

/** One page of a {@link RoomStoreLink.fetch}. */
export interface RoomStorePage {
  /** Blobs with `seq > after`, oldest first (a compaction's parts share one `seq`). */
  readonly blobs: readonly { readonly seq: number; readonly blob: Uint8Array }[]
  /** Everything up to here was sent: the next cursor. */
  readonly upto: number
  /** More blobs follow: fetch again from `upto`. */
  readonly more: boolean
  /** Bytes the room holds in the store now. */
  readonly bytes: number
}

/**
 * A link to a server that stores what members upload for the room and serves it to members that join later
 * (store-and-forward; the relay transport offers one with `store: true`). Blobs are opaque to the server: the replica
 * seals them in an encrypted room. Every call rejects when the connection is lost before the answer.
 */
export interface RoomStoreLink {
  /** The store on the current connection; undefined while not joined to a server that keeps one. */
  readonly info: RoomStoreInfo | undefined
  /** Largest blob {@link RoomStoreLink.put} and {@link RoomStoreLink.compact} accept. */
  readonly maxBlobBytes: number
  /** Called after each join to a server with a store (the first, and every rejoin); returns the unsubscribe function. */
  onReady(fn: (info: RoomStoreInfo) => void): () => void
  /** Appends a blob; resolves once the server has stored it durably (an acknowledged upload). */
  put(blob: Uint8Array): Promise<{ readonly seq: number; readonly bytes: number }>
  /** The blobs stored after sequence number `after`, one page. */
  fetch(after: number): Promise<RoomStorePage>
  /** Replaces every blob up to `upto` by `blobs` (a snapshot); `applied` is false when a later compaction won. */
  compact(upto: number, blobs: readonly Uint8Array[]): Promise<{ readonly applied: boolean; readonly bytes: number }>
}

/** Handler for `peer:up` / `peer:down`. */
export type PeerListener = (peer: PeerId) => void
/** Handler for inbound frames. */
export type FrameListener = (peer: PeerId, frame: Uint8Array) => void

/** A best-effort, frame-oriented link to the other peers of a room. */
export interface Transport {
  /** Joins the room; resolves once the transport is ready to report peers and send frames. */
  start(room: RoomContext): Promise<void>
  /** Leaves the room and releases every resource; idempotent. */
  stop(): Promise<void>
  /** Sends one frame (at most {@link Transport.maxFrameSize} bytes) to a peer; unknown or gone peers are ignored. */
  send(peer: PeerId, frame: Uint8Array): void
  /**
   * Sends one frame to every connected peer, when the transport can do that more cheaply than a loop of `send` (the
   * engine uses it for a live change that goes to every peer of the transport: a relay carries it once to its server,
   * an encrypted room seals it once).
   */
  broadcast?(frame: Uint8Array): void
  /** Largest frame `send` accepts; the engine chunks larger messages. */
  readonly maxFrameSize: number
  /**
   * Largest sync message (before it is chunked into frames) worth sending to `peer` now, when the link to it is
   * limited (e.g. a relayed libp2p connection that is cut after so many bytes); undefined when it is not. The engine
   * cuts deltas for that peer into independently applicable parts no larger than this, so each one can arrive
   * before the link is renewed and a sync resumes where it stopped.
   */
  maxMessageSize?(peer: PeerId): number | undefined
  /** A server-side store of the room, when the transport reaches one (see {@link RoomStoreLink}). */
  readonly store?: RoomStoreLink
  /** Subscribes to peers becoming reachable or unreachable; returns the unsubscribe function. */
  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  /** Subscribes to inbound frames; returns the unsubscribe function. */
  on(event: 'frame', fn: FrameListener): () => void
}
