/**
 * A {@link Transport} over WebRTC data channels, with peers meeting through y-webrtc-compatible signaling servers
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
 *   overlay (see overlay.ts: a ring lattice over the sorted ids, connected, degree ≤ maxPeers) and the sync
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
 */
import { AuthError, FrameTooLargeError, TransportArgumentError, TransportError, TransportStateError } from './errors.js'
import { compareIds, overlayNeighbours } from './overlay.js'
import { type BackoffInit, SignalingClient, type WebSocketConstructor, backoffDelay, isObject } from './webrtc-signaling.js'
import { TransportListeners } from './listeners.js'
import type { FrameListener, PeerId, PeerListener, RoomCipher, RoomContext, Transport } from './types.js'

export { FrameTooLargeError, TransportArgumentError, TransportError, TransportStateError } from './errors.js'
export type { BackoffInit, WebSocketConstructor } from './webrtc-signaling.js'

// ---------------------------------------------------------------------------------------------------------------------
// Public types

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

/** Creates a WebRTC transport; nothing happens until `start()`. */
export function webrtcTransport(init: WebRTCTransportInit): WebRTCTransport {
  return new WebRTCTransportImpl(init)
}

// ---------------------------------------------------------------------------------------------------------------------
// The parts of the WebRTC API used here (the standard API; typed loosely so that any implementation fits)

interface IceCandidateInit {
  candidate: string
  sdpMid: string | null
  sdpMLineIndex: number | null
}

interface DataChannelLike {
  readonly readyState: string
  readonly bufferedAmount: number
  bufferedAmountLowThreshold: number
  binaryType: string
  send(data: Uint8Array): void
  close(): void
  onopen: (() => void) | null
  onclose: (() => void) | null
  onerror: ((ev: unknown) => void) | null
  onmessage: ((ev: { data: unknown }) => void) | null
  onbufferedamountlow: (() => void) | null
}

interface PeerConnectionLike {
  readonly connectionState?: string
  readonly iceConnectionState?: string
  readonly localDescription: { type: string; sdp: string } | null
  createDataChannel(label: string, init: { negotiated: boolean; id: number; ordered: boolean }): DataChannelLike
  createOffer(): Promise<{ type: string; sdp?: string }>
  createAnswer(): Promise<{ type: string; sdp?: string }>
  setLocalDescription(description: { type: string; sdp?: string }): Promise<void>
  setRemoteDescription(description: { type: string; sdp: string }): Promise<void>
  addIceCandidate(candidate: IceCandidateInit): Promise<void>
  close(): void
  onicecandidate: ((ev: { candidate: { candidate: string; sdpMid?: string | null; sdpMLineIndex?: number | null } | null }) => void) | null
  onconnectionstatechange: (() => void) | null
  oniceconnectionstatechange: (() => void) | null
}

type PeerConnectionCtor = new (config: { iceServers: IceServer[] }) => PeerConnectionLike

// ---------------------------------------------------------------------------------------------------------------------
// Internals

type Signal =
  | { type: 'offer' | 'answer'; sdp: string }
  | { type: 'candidate'; candidate: IceCandidateInit }
  | { type: 'reject' | 'bye' }

type Incoming =
  | { type: 'announce'; from: PeerId; session: string; to: PeerId | undefined }
  | { type: 'leave'; from: PeerId; session: string | undefined }
  | { type: 'signal'; from: PeerId; to: PeerId; token: string; session: string | undefined; signal: Signal }

const MAX_ID_CHARS = 256
const MAX_TOKEN_CHARS = 64
const MAX_PENDING_CANDIDATES = 32
const MAX_EARLY_TOKENS = 64
const MAX_SEEN_TOKENS = 1024
/** Sealed signaling payloads waiting to be opened, at most (encrypted rooms). */
const MAX_PENDING_SIGNALS = 256
/** Members remembered at most (a flood of fake announces must not grow memory without bound). */
const MAX_MEMBERS = 4096
const TICK_MS = 250
const DRAIN_POLL_MS = 5

const isId = (x: unknown): x is string => typeof x === 'string' && x.length > 0 && x.length <= MAX_ID_CHARS
const isToken = (x: unknown): x is string => typeof x === 'string' && x.length > 0 && x.length <= MAX_TOKEN_CHARS

/** Reads one signaling payload; undefined for anything that is not a well-formed message of this protocol. */
function parseIncoming(data: unknown): Incoming | undefined {
  if (!isObject(data)) return undefined
  const from = data['from']
  if (!isId(from)) return undefined
  const session = data['session']
  switch (data['type']) {
    case 'announce': {
      const to = data['to']
      if (!isToken(session) || (to !== undefined && !isId(to))) return undefined
      return { type: 'announce', from, session, to }
    }
    case 'leave':
      if (session !== undefined && !isToken(session)) return undefined
      return { type: 'leave', from, session }
    case 'signal': {
      const { to, token } = data
      if (!isId(to) || !isToken(token) || (session !== undefined && !isToken(session))) return undefined
      const signal = parseSignal(data['signal'])
      return signal && { type: 'signal', from, to, token, session, signal }
    }
    default:
      return undefined
  }
}

function parseSignal(s: unknown): Signal | undefined {
  if (!isObject(s)) return undefined
  const type = s['type']
  if (type === 'offer' || type === 'answer') {
    const sdp = s['sdp']
    return typeof sdp === 'string' && sdp.length > 0 ? { type, sdp } : undefined
  }
  if (type === 'candidate') {
    const c = s['candidate']
    if (!isObject(c)) return undefined
    const { candidate, sdpMid, sdpMLineIndex } = c
    if (typeof candidate !== 'string' || candidate.length > 2048) return undefined
    if (!(sdpMid === undefined || sdpMid === null || (typeof sdpMid === 'string' && sdpMid.length <= 64))) return undefined
    if (
      !(sdpMLineIndex === undefined || sdpMLineIndex === null || (Number.isInteger(sdpMLineIndex) && (sdpMLineIndex as number) >= 0 && (sdpMLineIndex as number) < 65536))
    ) {
      return undefined
    }
    return {
      type,
      candidate: { candidate, sdpMid: (sdpMid as string | null | undefined) ?? null, sdpMLineIndex: (sdpMLineIndex as number | null | undefined) ?? null },
    }
  }
  if (type === 'reject' || type === 'bye') return { type }
  return undefined
}

/** Base64 (standard alphabet, padded) of bytes; chunked so that large inputs do not overflow the call stack. */
function toBase64(bytes: Uint8Array): string {
  let bin = ''
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(bin)
}

/** The bytes of a base64 string, or undefined when it is not base64. */
function fromBase64(text: string): Uint8Array | undefined {
  let bin: string
  try {
    bin = atob(text)
  } catch {
    return undefined
  }
  const out = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out
}

function randomToken(): string {
  const bytes = new Uint8Array(12)
  globalThis.crypto.getRandomValues(bytes)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

/** Insertion-ordered set that forgets its oldest entries beyond `cap`. */
class BoundedSet {
  private readonly items = new Set<string>()
  constructor(private readonly cap: number) {}
  has(x: string): boolean {
    return this.items.has(x)
  }
  add(x: string): void {
    this.items.add(x)
    if (this.items.size > this.cap) this.items.delete(this.items.values().next().value!)
  }
  clear(): void {
    this.items.clear()
  }
}

/** FIFO of frames with a moving head (amortised O(1)). */
class FrameQueue {
  private items: Uint8Array[] = []
  private head = 0
  bytes = 0
  get length(): number {
    return this.items.length - this.head
  }
  peek(): Uint8Array | undefined {
    return this.items[this.head]
  }
  push(frame: Uint8Array): void {
    this.items.push(frame)
    this.bytes += frame.byteLength
  }
  shift(): void {
    const f = this.items[this.head]
    if (!f) return
    this.bytes -= f.byteLength
    this.head++
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head > 256 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
  }
  clear(): void {
    this.items = []
    this.head = 0
    this.bytes = 0
  }
}

interface Member {
  session: string
  /** When we first heard of this (id, session). */
  knownSince: number
  /** Last sign of life: a message from it, or an open connection. */
  lastSeen: number
  /** Consecutive failed connection attempts. */
  failures: number
  /** No new attempt (and no place in our overlay view) before this time, after a failure. */
  retryAt: number
}

interface Conn {
  readonly peer: PeerId
  readonly token: string
  readonly initiator: boolean
  readonly pc: PeerConnectionLike
  readonly dc: DataChannelLike
  /** The remote incarnation this connection belongs to, once known. */
  remoteSession: string | undefined
  open: boolean
  closed: boolean
  remoteDescriptionSet: boolean
  readonly pendingCandidates: IceCandidateInit[]
  timer: ReturnType<typeof setTimeout> | undefined
  drainTimer: ReturnType<typeof setTimeout> | undefined
  readonly queue: FrameQueue
  /**
   * Bytes handed to the channel since the last macrotask. Some implementations (@roamhq/wrtc under load) update
   * `bufferedAmount` late, so a synchronous burst is bounded by this count as well.
   */
  burst: number
}

let wrtcPromise: Promise<RTCImplementation> | undefined
let wsPromise: Promise<WebSocketConstructor> | undefined

async function defaultRtc(): Promise<RTCImplementation> {
  const g = globalThis as { RTCPeerConnection?: RTCImplementation['RTCPeerConnection'] }
  if (typeof g.RTCPeerConnection === 'function') return { RTCPeerConnection: g.RTCPeerConnection }
  wrtcPromise ??= import('@roamhq/wrtc').then((mod: unknown) => {
    const m = mod as { default?: unknown; RTCPeerConnection?: unknown }
    const impl = (isObject(m.default) || typeof m.default === 'function' ? m.default : m) as { RTCPeerConnection?: unknown }
    if (typeof impl.RTCPeerConnection !== 'function') throw new Error('@roamhq/wrtc has no RTCPeerConnection')
    return impl as RTCImplementation
  })
  try {
    return await wrtcPromise
  } catch (error) {
    wrtcPromise = undefined
    throw new TransportError(
      `no WebRTC implementation: this runtime has no global RTCPeerConnection and @roamhq/wrtc could not be loaded (${String(error)}); install @roamhq/wrtc or pass the 'rtc' option`,
    )
  }
}

async function defaultWebSocket(): Promise<{ ctor: WebSocketConstructor; options?: object }> {
  const g = globalThis as { WebSocket?: WebSocketConstructor }
  if (typeof g.WebSocket === 'function') return { ctor: g.WebSocket }
  wsPromise ??= import('ws').then((mod: unknown) => {
    const m = mod as { default?: unknown; WebSocket?: unknown }
    const ctor = typeof m.WebSocket === 'function' ? m.WebSocket : m.default
    if (typeof ctor !== 'function') throw new Error('ws has no WebSocket export')
    return ctor as WebSocketConstructor
  })
  try {
    // `ws` accepts options as its second argument: cap what one signaling message may make us buffer.
    return { ctor: await wsPromise, options: { maxPayload: 8 * 1024 * 1024 } }
  } catch (error) {
    wsPromise = undefined
    throw new TransportError(
      `no WebSocket implementation: this runtime has no global WebSocket and the ws package could not be loaded (${String(error)}); install ws or pass the 'WebSocket' option`,
    )
  }
}

function positiveInt(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value < min) throw new TransportArgumentError(`${name} must be an integer >= ${min}, got ${String(value)}`)
  return value
}

class WebRTCTransportImpl implements WebRTCTransport {
  readonly maxFrameSize: number
  private readonly urls: readonly string[]
  private readonly iceServers: IceServer[]
  private readonly maxPeers: number
  private readonly connectTimeoutMs: number
  private readonly maxBuffered: number
  private readonly maxQueued: number
  private readonly backoff: Required<BackoffInit>
  private readonly announceIntervalMs: number
  private readonly pingIntervalMs: number
  private readonly maxSignalChars: number
  private readonly politeDelayMs: number

  private state: 'idle' | 'starting' | 'started' | 'stopped' = 'idle'
  /** Incremented by every start and stop: async work of an older generation stands down. */
  private generation = 0
  private room = ''
  private self: PeerId | undefined
  private session = ''
  private Pc: PeerConnectionCtor | undefined
  private signaling: SignalingClient[] = []
  private readonly members = new Map<PeerId, Member>()
  private readonly conns = new Map<PeerId, Conn>()
  /** `from \0 token` of every offer handled (duplicates arrive when several signaling servers relay the same one). */
  private readonly seenOffers = new BoundedSet(MAX_SEEN_TOKENS)
  /** Candidates that arrived before their offer (possible with several signaling servers). */
  private readonly earlyCandidates = new Map<string, { at: number; candidates: IceCandidateInit[] }>()
  private tickTimer: ReturnType<typeof setInterval> | undefined
  private lastAnnounce = 0
  private maintainQueued = false
  /** Ends start()'s wait for a first signaling connection (called by stop()). */
  private releaseStart: (() => void) | undefined
  private dropped = 0
  private readonly listeners = new TransportListeners()
  /** The room key (encrypted rooms only) and where to report payloads that do not open. */
  private cipher: RoomCipher | undefined
  private onError: ((error: Error, peer?: PeerId) => void) | undefined
  private signalAad = new Uint8Array(0)
  /** Sealed publications go out in the order they were made; opened payloads are handled in arrival order. */
  private signalOut: Promise<void> = Promise.resolve()
  private signalIn: Promise<void> = Promise.resolve()
  /** Sealed payloads received and not yet handled (a flooding server cannot make this grow without bound). */
  private signalPending = 0

  constructor(private readonly init: WebRTCTransportInit) {
    if (init === null || typeof init !== 'object') throw new TransportArgumentError('webrtcTransport() needs an init object')
    const urls = init.signaling
    if (!Array.isArray(urls) || urls.length === 0) throw new TransportArgumentError('signaling must be a non-empty array of ws:// or wss:// URLs')
    for (const u of urls) {
      if (typeof u !== 'string' || !/^wss?:\/\/./i.test(u)) throw new TransportArgumentError(`not a ws:// or wss:// URL: ${JSON.stringify(u)}`)
    }
    this.urls = [...new Set(urls as string[])]
    this.iceServers = (init.iceServers ?? []).map((s) => ({ ...s }))
    this.maxPeers = positiveInt('maxPeers', init.maxPeers, 20, 2)
    this.connectTimeoutMs = positiveInt('connectTimeoutMs', init.connectTimeoutMs, 5000)
    this.maxFrameSize = positiveInt('maxFrameSize', init.maxFrameSize, WEBRTC_MAX_FRAME_SIZE)
    if (this.maxFrameSize > WEBRTC_MAX_FRAME_SIZE) throw new TransportArgumentError(`maxFrameSize must be at most ${WEBRTC_MAX_FRAME_SIZE}`)
    this.maxBuffered = positiveInt('maxBufferedBytes', init.maxBufferedBytes, 1024 * 1024)
    this.maxQueued = positiveInt('maxQueuedBytes', init.maxQueuedBytes, 2 * 1024 * 1024, 0)
    this.backoff = {
      initialMs: positiveInt('reconnect.initialMs', init.reconnect?.initialMs, 500),
      maxMs: positiveInt('reconnect.maxMs', init.reconnect?.maxMs, 30_000),
    }
    if (this.backoff.maxMs < this.backoff.initialMs) throw new TransportArgumentError('reconnect.maxMs must be >= reconnect.initialMs')
    this.announceIntervalMs = positiveInt('announceIntervalMs', init.announceIntervalMs, 15_000)
    this.pingIntervalMs = positiveInt('pingIntervalMs', init.pingIntervalMs, 10_000)
    this.maxSignalChars = positiveInt('maxSignalBytes', init.maxSignalBytes, 65_536, 1024)
    if (init.rtc !== undefined && typeof init.rtc?.RTCPeerConnection !== 'function') {
      throw new TransportArgumentError('rtc must provide an RTCPeerConnection constructor')
    }
    if (init.WebSocket !== undefined && typeof init.WebSocket !== 'function') throw new TransportArgumentError('WebSocket must be a constructor')
    this.politeDelayMs = Math.min(1000, Math.floor(this.connectTimeoutMs / 2))
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Transport API

  async start(room: RoomContext): Promise<void> {
    if (this.state === 'started' || this.state === 'starting') {
      throw new TransportStateError(`transport already started as ${JSON.stringify(this.self)}; stop() it first`)
    }
    if (room === null || typeof room !== 'object') throw new TransportArgumentError('start() needs a RoomContext')
    if (typeof room.room !== 'string' || room.room === '') throw new TransportArgumentError('room must be a non-empty string')
    if (!isId(room.peerId)) throw new TransportArgumentError(`peerId must be a non-empty string of at most ${MAX_ID_CHARS} characters`)
    if (room.cipher !== undefined && (typeof room.cipher?.seal !== 'function' || typeof room.cipher.open !== 'function')) {
      throw new TransportArgumentError('cipher must have seal() and open()')
    }
    this.state = 'starting'
    const generation = ++this.generation
    let ws: { ctor: WebSocketConstructor; options?: object }
    try {
      const rtc = this.init.rtc ?? (await defaultRtc())
      this.Pc = rtc.RTCPeerConnection as unknown as PeerConnectionCtor
      ws = this.init.WebSocket ? { ctor: this.init.WebSocket } : await defaultWebSocket()
    } catch (error) {
      if (this.generation === generation) this.state = 'idle'
      throw error
    }
    if (this.generation !== generation) return // stopped while loading
    this.state = 'started'
    this.room = room.room
    this.self = room.peerId
    this.session = randomToken()
    this.cipher = room.cipher
    this.onError = room.onError
    this.signalAad = new TextEncoder().encode(`syncmesh/signal/v1\u0000${room.room}`)
    let ready!: () => void
    const opened = new Promise<void>((resolve) => (ready = resolve))
    this.signaling = this.urls.map(
      (url) =>
        new SignalingClient({
          url,
          topic: this.room,
          WebSocket: ws.ctor,
          socketOptions: ws.options,
          backoff: this.backoff,
          maxMessageChars: this.maxSignalChars,
          pingIntervalMs: this.pingIntervalMs,
          onOpen: () => {
            ready()
            this.announceOn(url)
          },
          onData: (data) => this.onSignalingData(data),
        }),
    )
    for (const s of this.signaling) s.start()
    this.tickTimer = setInterval(() => this.tick(), TICK_MS)
    // Ready once a signaling server is reachable; an unreachable one does not fail start (it keeps retrying).
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([
      opened,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.connectTimeoutMs)
        this.releaseStart = resolve
      }),
    ])
    clearTimeout(timer)
    this.releaseStart = undefined
  }

  async stop(): Promise<void> {
    if (this.state !== 'started' && this.state !== 'starting') return
    const wasStarted = this.state === 'started'
    this.state = 'stopped'
    this.generation++
    this.releaseStart?.()
    clearInterval(this.tickTimer)
    this.tickTimer = undefined
    const sockets = this.signaling
    this.signaling = []
    for (const conn of [...this.conns.values()]) this.teardown(conn)
    this.conns.clear()
    this.members.clear()
    this.earlyCandidates.clear()
    this.seenOffers.clear()
    if (wasStarted) {
      const leave = { type: 'leave', from: this.self, session: this.session }
      if (!this.cipher) for (const s of sockets) s.publish(leave)
      // Sealing is asynchronous: the sockets stay open until the sealed leave is out (a new start() makes new ones).
      else await this.sealSignal(leave).then((sealed) => sockets.forEach((s) => s.publish(sealed)), () => undefined)
    }
    for (const s of sockets) s.close()
  }

  send(peer: PeerId, frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkFrame(frame)
    const conn = this.conns.get(peer)
    if (conn?.open) this.sendOn(conn, frame)
  }

  broadcast(frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkFrame(frame)
    for (const conn of this.conns.values()) if (conn.open) this.sendOn(conn, frame)
  }

  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  on(event: 'frame', fn: FrameListener): () => void
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    return this.listeners.on(event, fn)
  }

  connectedPeers(): PeerId[] {
    return [...this.conns.values()].filter((c) => c.open).map((c) => c.peer)
  }

  status(): WebRTCStatus {
    const wanted = this.state === 'started' ? this.wanted(Date.now()) : new Set<PeerId>()
    return {
      peerId: this.self,
      started: this.state === 'started',
      signaling: this.signaling.map((s) => ({ url: s.url, connected: s.connected, opens: s.opens })),
      peers: [...this.conns.values()].map((c) => ({
        id: c.peer,
        state: c.open ? 'open' : 'connecting',
        initiator: c.initiator,
        bufferedAmount: c.closed ? 0 : c.dc.bufferedAmount,
        queuedBytes: c.queue.bytes,
        wanted: wanted.has(c.peer),
      })),
      members: [...this.members.keys()],
      dropped: this.dropped,
    }
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Signaling

  private announceOn(url: string): void {
    this.publish({ type: 'announce', from: this.self, session: this.session }, url)
  }

  private announce(): void {
    this.lastAnnounce = Date.now()
    this.publish({ type: 'announce', from: this.self, session: this.session })
  }

  /** Publishes on every signaling socket (or the one of `url`), sealed first in an encrypted room. */
  private publish(data: unknown, url?: string): void {
    const targets = (): SignalingClient[] => (url === undefined ? this.signaling : this.signaling.filter((s) => s.url === url))
    if (!this.cipher) {
      for (const s of targets()) s.publish(data)
      return
    }
    const gen = this.generation
    const sealed = this.sealSignal(data)
    sealed.catch(() => undefined) // handled in order below
    this.signalOut = this.signalOut
      .then(() => sealed)
      .then(
        (payload) => {
          if (gen === this.generation) for (const s of targets()) s.publish(payload)
        },
        (error: unknown) => {
          if (gen === this.generation) this.report(error instanceof Error ? error : new TransportError(String(error)))
        },
      )
  }

  /** `{sm: 1, c: base64(seal(JSON))}`. */
  private async sealSignal(data: unknown): Promise<{ sm: 1; c: string }> {
    const sealed = await this.cipher!.seal(new TextEncoder().encode(JSON.stringify(data)), this.signalAad)
    return { sm: 1, c: toBase64(sealed) }
  }

  /** A signaling payload in an encrypted room: opened (in arrival order), then handled like a plain one. */
  private onSealedData(data: unknown): void {
    const c = isObject(data) && data['sm'] === 1 && typeof data['c'] === 'string' ? fromBase64(data['c']) : undefined
    if (!c) {
      this.report(new AuthError('a signaling payload in an encrypted room is not sealed (a peer without the room secret, or another build)', 'signaling'))
      return
    }
    if (this.signalPending >= MAX_PENDING_SIGNALS) return // a flood: signaling is best-effort, announces repeat
    const gen = this.generation
    const opened = this.cipher!.open(c, this.signalAad)
    opened.catch(() => undefined) // handled in order below
    this.signalPending++
    this.signalIn = this.signalIn
      .then(() => opened)
      .finally(() => this.signalPending--)
      .then(
        (plain) => {
          if (gen !== this.generation || this.state !== 'started') return
          let message: unknown
          try {
            message = JSON.parse(new TextDecoder().decode(plain))
          } catch {
            return // authentic but not JSON: another build's business
          }
          try {
            this.onPlainData(message)
          } catch (error) {
            setTimeout(() => {
              throw error // a bug of ours, surfaced as the plain path surfaces it
            }, 0)
          }
        },
        (cause: unknown) => {
          if (gen !== this.generation) return
          this.report(
            new AuthError('a signaling payload does not open with the room key (a peer with another secret, or altered by the server)', 'signaling', { cause }),
          )
        },
      )
  }

  private report(error: Error): void {
    if (!this.onError) return // nobody to tell: the payload is ignored, as malformed ones are
    try {
      this.onError(error)
    } catch {
      // the sink failed: nothing sensible left to do
    }
  }

  private sendSignal(to: PeerId, token: string, signal: Signal): void {
    this.publish({ type: 'signal', from: this.self, to, token, session: this.session, signal })
  }

  private onSignalingData(data: unknown): void {
    if (this.state !== 'started') return
    if (this.cipher) this.onSealedData(data)
    else this.onPlainData(data)
  }

  private onPlainData(data: unknown): void {
    const msg = parseIncoming(data)
    if (!msg || msg.from === this.self) return
    switch (msg.type) {
      case 'announce':
        return this.onAnnounce(msg.from, msg.session, msg.to)
      case 'leave':
        return this.onLeave(msg.from, msg.session)
      case 'signal':
        if (msg.to !== this.self) return
        return this.onSignal(msg.from, msg.token, msg.session, msg.signal)
    }
  }

  private onAnnounce(from: PeerId, session: string, to: PeerId | undefined): void {
    const now = Date.now()
    const m = this.members.get(from)
    if (m && m.session === session) {
      m.lastSeen = now
      return
    }
    if (!m && this.members.size >= MAX_MEMBERS) return
    if (m) {
      // The peer restarted: a connection to its previous incarnation is dead weight.
      const conn = this.conns.get(from)
      if (conn && conn.remoteSession !== undefined && conn.remoteSession !== session) this.teardown(conn)
    }
    this.members.set(from, { session, knownSince: now, lastSeen: now, failures: 0, retryAt: 0 })
    // Tell a newcomer we exist (once per incarnation), so that it learns the whole room from one announce.
    if (to === undefined) this.publish({ type: 'announce', from: this.self, session: this.session, to: from })
    this.scheduleMaintain()
  }

  private onLeave(from: PeerId, session: string | undefined): void {
    const m = this.members.get(from)
    if (m && session !== undefined && m.session !== session) return // a stale leave of an older incarnation
    this.members.delete(from)
    const conn = this.conns.get(from)
    if (conn && (session === undefined || conn.remoteSession === undefined || conn.remoteSession === session)) this.teardown(conn)
    this.scheduleMaintain()
  }

  /** Notes that `from` is alive (a signal proves it), adding it to the members when unknown. */
  private touch(from: PeerId, session: string | undefined): void {
    const now = Date.now()
    const m = this.members.get(from)
    if (m) m.lastSeen = now
    else if (session !== undefined && this.members.size < MAX_MEMBERS) this.members.set(from, { session, knownSince: now, lastSeen: now, failures: 0, retryAt: 0 })
  }

  private onSignal(from: PeerId, token: string, session: string | undefined, signal: Signal): void {
    this.touch(from, session)
    const conn = this.conns.get(from)
    switch (signal.type) {
      case 'offer': {
        const key = `${from}\u0000${token}`
        if (this.seenOffers.has(key)) return
        this.seenOffers.add(key)
        if (conn) {
          if (conn.token === token) return
          if (conn.initiator && !conn.open && compareIds(this.self!, from) < 0) return // glare: our offer wins
          // Glare lost, or the peer started over (it offers only when it holds no connection to us): replace ours.
          this.teardown(conn)
        }
        if (this.conns.size >= this.maxPeers && !this.makeRoomFor(from)) {
          this.sendSignal(from, token, { type: 'reject' })
          return
        }
        void this.answer(from, token, session, signal.sdp)
        return
      }
      case 'answer': {
        if (!conn || conn.token !== token || !conn.initiator || conn.remoteDescriptionSet) return
        conn.remoteSession = session
        void this.acceptAnswer(conn, signal.sdp)
        return
      }
      case 'candidate': {
        if (conn && conn.token === token) {
          if (conn.remoteDescriptionSet) this.addCandidate(conn, signal.candidate)
          else if (conn.pendingCandidates.length < MAX_PENDING_CANDIDATES) conn.pendingCandidates.push(signal.candidate)
          return
        }
        const key = `${from}\u0000${token}`
        if (this.seenOffers.has(key)) return // for an offer we turned down
        let early = this.earlyCandidates.get(key)
        if (!early) {
          if (this.earlyCandidates.size >= MAX_EARLY_TOKENS) return
          this.earlyCandidates.set(key, (early = { at: Date.now(), candidates: [] }))
        }
        if (early.candidates.length < MAX_PENDING_CANDIDATES) early.candidates.push(signal.candidate)
        return
      }
      case 'reject':
      case 'bye': {
        if (!conn || conn.token !== token) return
        this.teardown(conn)
        this.penalize(from)
        this.scheduleMaintain()
        return
      }
    }
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Connections

  private newConn(peer: PeerId, token: string, initiator: boolean, remoteSession: string | undefined): Conn {
    const pc = new this.Pc!({ iceServers: this.iceServers })
    let dc: DataChannelLike
    try {
      dc = pc.createDataChannel('syncmesh', { negotiated: true, id: 0, ordered: true })
      dc.binaryType = 'arraybuffer'
    } catch (error) {
      pc.close()
      throw error
    }
    const conn: Conn = {
      peer,
      token,
      initiator,
      pc,
      dc,
      remoteSession,
      open: false,
      closed: false,
      remoteDescriptionSet: false,
      pendingCandidates: [],
      timer: undefined,
      drainTimer: undefined,
      burst: 0,
      queue: new FrameQueue(),
    }
    this.conns.set(peer, conn)
    pc.onicecandidate = (ev) => {
      const c = ev.candidate
      if (conn.closed || !c || !c.candidate) return // null / empty: end of candidates
      this.sendSignal(peer, token, { type: 'candidate', candidate: { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null } })
    }
    const onState = (): void => this.onPcState(conn)
    pc.onconnectionstatechange = onState
    pc.oniceconnectionstatechange = onState
    dc.onopen = () => this.onOpen(conn)
    dc.onclose = () => this.onBroken(conn)
    dc.onerror = () => {} // 'close' follows
    dc.onmessage = (ev) => this.onMessage(conn, ev.data)
    try {
      dc.bufferedAmountLowThreshold = Math.floor(this.maxBuffered / 2)
    } catch {
      // not supported: the drain poll covers it
    }
    dc.onbufferedamountlow = () => this.drain(conn)
    conn.timer = setTimeout(() => {
      if (!conn.open) this.onBroken(conn)
    }, this.connectTimeoutMs)
    return conn
  }

  private async offer(peer: PeerId): Promise<void> {
    let conn: Conn
    try {
      conn = this.newConn(peer, randomToken(), true, undefined)
    } catch {
      this.penalize(peer) // the WebRTC implementation refused to create a connection: try again later
      return
    }
    try {
      const offer = await conn.pc.createOffer()
      if (conn.closed) return
      await conn.pc.setLocalDescription(offer)
      if (conn.closed) return
      const sdp = conn.pc.localDescription?.sdp ?? offer.sdp
      if (!sdp) throw new Error('no local description')
      this.sendSignal(peer, conn.token, { type: 'offer', sdp })
    } catch {
      this.onBroken(conn)
    }
  }

  private async answer(peer: PeerId, token: string, session: string | undefined, sdp: string): Promise<void> {
    let conn: Conn
    try {
      conn = this.newConn(peer, token, false, session)
    } catch {
      this.sendSignal(peer, token, { type: 'reject' })
      return
    }
    const key = `${peer}\u0000${token}`
    const early = this.earlyCandidates.get(key)
    if (early) {
      this.earlyCandidates.delete(key)
      conn.pendingCandidates.push(...early.candidates)
    }
    try {
      await conn.pc.setRemoteDescription({ type: 'offer', sdp })
      if (conn.closed) return
      this.remoteDescriptionReady(conn)
      const answer = await conn.pc.createAnswer()
      if (conn.closed) return
      await conn.pc.setLocalDescription(answer)
      if (conn.closed) return
      const local = conn.pc.localDescription?.sdp ?? answer.sdp
      if (!local) throw new Error('no local description')
      this.sendSignal(peer, token, { type: 'answer', sdp: local })
    } catch {
      // A malformed offer, or a peer connection closed under us: nothing to keep, and nothing to retry soon.
      if (!conn.closed) {
        this.teardown(conn)
        this.penalize(peer)
      }
    }
  }

  private async acceptAnswer(conn: Conn, sdp: string): Promise<void> {
    conn.remoteDescriptionSet = true // claim it: a duplicate answer must not be applied twice
    try {
      await conn.pc.setRemoteDescription({ type: 'answer', sdp })
      if (conn.closed) return
      this.remoteDescriptionReady(conn)
    } catch {
      this.onBroken(conn)
    }
  }

  private remoteDescriptionReady(conn: Conn): void {
    conn.remoteDescriptionSet = true
    for (const c of conn.pendingCandidates.splice(0)) this.addCandidate(conn, c)
  }

  private addCandidate(conn: Conn, candidate: IceCandidateInit): void {
    conn.pc.addIceCandidate(candidate).catch(() => {
      // A malformed or duplicate candidate: ICE goes on with the others.
    })
  }

  private onPcState(conn: Conn): void {
    if (conn.closed) return
    const state = conn.pc.connectionState ?? conn.pc.iceConnectionState
    if (state === 'failed' || state === 'closed') this.onBroken(conn)
    else if (state === 'disconnected' && conn.open) {
      // Often transient; give ICE a connect timeout's worth of time to recover.
      clearTimeout(conn.timer)
      conn.timer = setTimeout(() => {
        const s = conn.pc.connectionState ?? conn.pc.iceConnectionState
        if (s !== 'connected' && s !== 'completed') this.onBroken(conn)
      }, this.connectTimeoutMs)
    } else if (state === 'connected' && conn.open) clearTimeout(conn.timer)
  }

  private onOpen(conn: Conn): void {
    if (conn.closed || conn.open || this.state !== 'started') return
    conn.open = true
    clearTimeout(conn.timer)
    conn.timer = undefined
    const m = this.members.get(conn.peer)
    if (m) {
      m.failures = 0
      m.retryAt = 0
      m.lastSeen = Date.now()
    }
    this.emitPeer('peer:up', conn.peer)
    this.scheduleMaintain()
  }

  /** The connection failed, timed out or closed on the other side: drop it, retry later. */
  private onBroken(conn: Conn): void {
    if (conn.closed) return
    this.teardown(conn)
    this.penalize(conn.peer)
    this.scheduleMaintain()
  }

  /** Closes a connection; reports `peer:down` when it was open and the transport still runs. */
  private teardown(conn: Conn, bye = false): void {
    if (conn.closed) return
    conn.closed = true
    if (this.conns.get(conn.peer) === conn) this.conns.delete(conn.peer)
    clearTimeout(conn.timer)
    clearTimeout(conn.drainTimer)
    conn.queue.clear()
    const { pc, dc } = conn
    pc.onicecandidate = null
    pc.onconnectionstatechange = null
    pc.oniceconnectionstatechange = null
    dc.onopen = null
    dc.onclose = null
    dc.onmessage = null
    dc.onbufferedamountlow = null
    if (bye) this.sendSignal(conn.peer, conn.token, { type: 'bye' })
    try {
      dc.close()
    } catch {
      // already closed
    }
    try {
      pc.close()
    } catch {
      // already closed
    }
    if (conn.open && this.state === 'started') this.emitPeer('peer:down', conn.peer)
  }

  private penalize(peer: PeerId): void {
    const m = this.members.get(peer)
    if (!m) return
    m.retryAt = Date.now() + backoffDelay(m.failures, this.backoff)
    m.failures++
  }

  /** Frees a slot for a wanted peer by closing a connection the overlay does not want; false when there is none. */
  private makeRoomFor(peer: PeerId): boolean {
    const wanted = this.wanted(Date.now())
    if (!wanted.has(peer)) return false
    let victim: Conn | undefined
    for (const c of this.conns.values()) {
      if (wanted.has(c.peer)) continue
      if (!victim || (victim.open && !c.open)) victim = c // prefer an attempt still pending
    }
    if (!victim) return false
    this.teardown(victim, true)
    return true
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Overlay maintenance

  /** The peers the overlay wants, from the members not currently backing off. */
  private wanted(now: number): Set<PeerId> {
    const candidates: PeerId[] = []
    for (const [id, m] of this.members) if (m.retryAt <= now || this.conns.get(id)?.open) candidates.push(id)
    return overlayNeighbours(this.self!, candidates, this.maxPeers)
  }

  private scheduleMaintain(): void {
    if (this.maintainQueued) return
    this.maintainQueued = true
    queueMicrotask(() => {
      this.maintainQueued = false
      this.maintain()
    })
  }

  /** Opens connections to wanted peers that lack one (making room when needed). */
  private maintain(): void {
    if (this.state !== 'started' || !this.signaling.some((s) => s.connected)) return
    const now = Date.now()
    const wanted = this.wanted(now)
    for (const peer of wanted) {
      if (this.conns.has(peer)) continue
      const m = this.members.get(peer)
      if (!m || m.retryAt > now) continue
      // The smaller id is the usual offerer; the larger one waits a moment for its offer before trying itself.
      if (compareIds(this.self!, peer) > 0 && m.failures === 0 && now - m.knownSince < this.politeDelayMs) continue
      if (this.conns.size >= this.maxPeers && !this.makeRoomFor(peer)) break
      void this.offer(peer)
    }
  }

  private tick(): void {
    if (this.state !== 'started') return
    const now = Date.now()
    if (now - this.lastAnnounce >= this.announceIntervalMs) this.announce()
    for (const [id, m] of this.members) {
      if (this.conns.get(id)?.open) m.lastSeen = now
      else if (now - m.lastSeen > 3 * this.announceIntervalMs && !this.conns.has(id)) this.members.delete(id)
    }
    for (const [key, early] of this.earlyCandidates) if (now - early.at > this.connectTimeoutMs) this.earlyCandidates.delete(key)
    this.maintain()
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Frames

  private checkFrame(frame: Uint8Array): void {
    if (!(frame instanceof Uint8Array)) throw new TransportArgumentError('frame must be a Uint8Array')
    if (frame.byteLength > this.maxFrameSize) throw new FrameTooLargeError(frame.byteLength, this.maxFrameSize)
  }

  private sendOn(conn: Conn, frame: Uint8Array): void {
    if (conn.queue.length === 0 && this.buffered(conn) + frame.byteLength <= this.maxBuffered) {
      this.transmit(conn, frame)
      return
    }
    if (conn.queue.bytes + frame.byteLength > this.maxQueued) {
      this.dropped++
      return
    }
    conn.queue.push(frame.slice()) // the caller may reuse its buffer once send returns
    this.scheduleDrain(conn)
  }

  /** What the channel holds, as far as we can tell: its bufferedAmount, or this turn's burst when larger. */
  private buffered(conn: Conn): number {
    return Math.max(conn.dc.bufferedAmount, conn.burst)
  }

  private transmit(conn: Conn, frame: Uint8Array): void {
    if (conn.burst === 0) setTimeout(() => (conn.burst = 0), 0)
    conn.burst += frame.byteLength
    try {
      conn.dc.send(frame)
    } catch {
      // The channel is closing: the frame is lost, and 'close' follows.
      this.dropped++
    }
  }

  private drain(conn: Conn): void {
    if (conn.closed) return
    for (let f = conn.queue.peek(); f !== undefined; f = conn.queue.peek()) {
      if (this.buffered(conn) + f.byteLength > this.maxBuffered) break
      conn.queue.shift()
      this.transmit(conn, f)
    }
    if (conn.queue.length > 0) this.scheduleDrain(conn)
  }

  private scheduleDrain(conn: Conn): void {
    if (conn.drainTimer !== undefined) return
    conn.drainTimer = setTimeout(() => {
      conn.drainTimer = undefined
      this.drain(conn)
    }, DRAIN_POLL_MS)
  }

  private onMessage(conn: Conn, data: unknown): void {
    if (conn.closed || this.state !== 'started') return
    let frame: Uint8Array
    if (data instanceof ArrayBuffer) frame = new Uint8Array(data)
    else if (ArrayBuffer.isView(data)) frame = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength))
    else return // text or Blob: not ours
    this.listeners.emitFrame(conn.peer, frame, (error) => this.reportListenerError(error))
  }

  private emitPeer(event: 'peer:up' | 'peer:down', peer: PeerId): void {
    this.listeners.emitPeer(event, peer, (error) => this.reportListenerError(error))
  }

  private reportListenerError(error: unknown): void {
    if (this.init.onListenerError) {
      try {
        this.init.onListenerError(error)
      } catch {
        // the error handler itself failed: nothing sensible left to do
      }
      return
    }
    setTimeout(() => {
      throw error
    }, 0)
  }
}
