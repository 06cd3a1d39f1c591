/**
 * `syncmesh/transports/broadcast` — a {@link Transport} over the web's `BroadcastChannel`: every tab, iframe and
 * worker of one origin that opens the same channel name is a peer (in Node, every channel of one process). It needs
 * no server and works offline. Replicas on one shared store (tabs on one IndexedDB database) link up over it by
 * themselves; give it to `createReplica({ transports })` to sync replicas that each have storage of their own.
 *
 * ```ts
 * import { broadcastTransport } from 'syncmesh/transports/broadcast'
 * const replica = await createReplica({ room: 'todos', transports: [broadcastTransport()] })
 * ```
 *
 * Wire, version `bc1` (structured-clone objects on the channel; anything else on it is ignored):
 *
 * ```
 * { sm: 'bc1', t: 'hello', from, session }             sent by start(): "I am here, who else is?"
 * { sm: 'bc1', t: 'here',  from, session, to? }        the answer to a newcomer (to = the newcomer), and every
 *                                                      `heartbeatMs` to everyone (no `to`)
 * { sm: 'bc1', t: 'bye',   from, session }             sent by stop(), and on a `pagehide` that is not into the
 *                                                      back/forward cache
 * { sm: 'bc1', t: 'frame', from, session, to?, data }  one frame (a Uint8Array) for `to`, or for everyone
 * ```
 *
 * `from`, `session` and `to` are non-empty strings; a message with any other shape, tag or type, or a frame whose
 * `data` is not a Uint8Array, is dropped whole (other code may use the same channel name). Receiving never throws.
 *
 * Membership
 * - `session` is random per `start()`: a peer that comes back under the same id is a new peer, reported down, then up.
 * - A peer is up from its first message of a session (any type but `bye`, whoever it is addressed to); a newcomer
 *   that may not know us yet (its message was not addressed to us and was not a `hello`, which is answered anyway)
 *   gets a directed `here`. `peer:up` always precedes the first `frame` of a session.
 * - A peer is down on its `bye`, or once it has been silent for `peerTimeoutMs` (a tab that crashed or was killed
 *   says nothing); silence is checked every `heartbeatMs`, so the report comes within `peerTimeoutMs + heartbeatMs`.
 * - Messages under our own id are never a peer. From another session (a second transport misconfigured with the
 *   same id) they are reported once per start through `RoomContext.onError` as a {@link PeerIdInUseError}.
 * - A stopped transport neither sends nor receives, and reports nothing; stop() closes the channel.
 *
 * Delivery is what BroadcastChannel gives: in order per sender, nothing lost while both ends stay open. `send`
 * posts one message, seen by every end of the channel and dropped by those it is not for; `broadcast` posts one for
 * all. `postMessage` clones, so the caller may reuse its buffer at once; a view into part of a larger buffer is
 * copied first, so only the viewed bytes travel. In Node, the channel and the heartbeat timer are unref'd: an open
 * transport does not keep a process alive.
 */
import { FrameTooLargeError, PeerIdInUseError, TransportArgumentError, TransportStateError, toError } from './errors.js'
import { TransportListeners } from './listeners.js'
import type { FrameListener, PeerId, PeerListener, RoomContext, Transport } from './types.js'

export { FrameTooLargeError, PeerIdInUseError, TransportArgumentError, TransportError, TransportStateError } from './errors.js'

/** The part of `BroadcastChannel` this transport uses (a fake one can be passed for tests). */
export interface BroadcastChannelLike {
  /** Sends a structured-cloneable message to every other end of the channel. */
  postMessage(message: unknown): void
  /** Called with each message from another end. */
  onmessage: ((event: { readonly data: unknown }) => void) | null
  /** Closes this end. */
  close(): void
}

/** Options of {@link broadcastTransport}. */
export interface BroadcastTransportInit {
  /**
   * The channel name; transports on the same name meet.
   * @default `'syncmesh/' + room` (the room topic the replica passes to `start()`)
   */
  channel?: string
  /**
   * The id this transport announces (e.g. one per tab when the tabs of a browser share a replica id).
   * @default the replica's peer id (`RoomContext.peerId`)
   */
  peerId?: string
  /**
   * The BroadcastChannel constructor.
   * @default globalThis.BroadcastChannel
   */
  BroadcastChannel?: new (name: string) => BroadcastChannelLike
  /**
   * How often, in ms, each end tells the others it is still there (and checks who fell silent).
   * @default 1000
   */
  heartbeatMs?: number
  /**
   * After how many ms of silence a peer is reported down; must exceed `heartbeatMs`.
   * @default 4000
   */
  peerTimeoutMs?: number
  /**
   * Largest frame `send` / `broadcast` accept, in bytes.
   * @default 262144 (256 KiB)
   */
  maxFrameSize?: number
}

/** The transport returned by {@link broadcastTransport}; `broadcast` is always present. */
export interface BroadcastTransport extends Transport {
  /** Sends one frame to every peer on the channel with a single post. */
  broadcast(frame: Uint8Array): void
  /** The channel name in use while started; undefined while stopped. */
  readonly channel: string | undefined
}

/** Default {@link BroadcastTransportInit.maxFrameSize}: 256 KiB. */
export const DEFAULT_BROADCAST_MAX_FRAME_SIZE = 256 * 1024

/** Creates an unstarted {@link Transport} over BroadcastChannel (see the module comment). */
export function broadcastTransport(init: BroadcastTransportInit = {}): BroadcastTransport {
  return new BroadcastTransportImpl(init)
}

// ---------------------------------------------------------------------------------------------------------------------
// Implementation

const TAG = 'bc1'

type Kind = 'hello' | 'here' | 'bye' | 'frame'

interface Wire {
  readonly sm: typeof TAG
  readonly t: Kind
  readonly from: string
  readonly session: string
  readonly to?: string
  readonly data?: Uint8Array
}

interface Member {
  readonly session: string
  lastSeen: number
}

type PageHide = (event: { readonly persisted?: boolean }) => void
interface PageEvents {
  addEventListener?: (type: 'pagehide', fn: PageHide) => void
  removeEventListener?: (type: 'pagehide', fn: PageHide) => void
}

class BroadcastTransportImpl implements BroadcastTransport {
  readonly maxFrameSize: number
  private readonly heartbeatMs: number
  private readonly peerTimeoutMs: number
  private readonly listeners = new TransportListeners()
  private readonly members = new Map<PeerId, Member>()
  private bc: BroadcastChannelLike | undefined
  private name: string | undefined
  private self = ''
  private session = ''
  private room: RoomContext | undefined
  private timer: ReturnType<typeof setInterval> | undefined
  private reportedClash = false
  private readonly onPageHide: PageHide = (event) => {
    if (!event.persisted) this.post({ t: 'bye' })
  }

  constructor(private readonly init: BroadcastTransportInit) {
    this.maxFrameSize = positive('maxFrameSize', init.maxFrameSize, DEFAULT_BROADCAST_MAX_FRAME_SIZE)
    if (!Number.isSafeInteger(this.maxFrameSize)) throw new TransportArgumentError('maxFrameSize must be an integer')
    this.heartbeatMs = positive('heartbeatMs', init.heartbeatMs, 1000)
    this.peerTimeoutMs = positive('peerTimeoutMs', init.peerTimeoutMs, 4000)
    if (this.peerTimeoutMs <= this.heartbeatMs) {
      throw new TransportArgumentError(`peerTimeoutMs (${this.peerTimeoutMs}) must exceed heartbeatMs (${this.heartbeatMs})`)
    }
    nonEmpty('peerId', init.peerId)
    nonEmpty('channel', init.channel)
    if (init.BroadcastChannel !== undefined && typeof init.BroadcastChannel !== 'function') {
      throw new TransportArgumentError('BroadcastChannel must be a constructor')
    }
  }

  get channel(): string | undefined {
    return this.name
  }

  async start(room: RoomContext): Promise<void> {
    if (this.bc) throw new TransportStateError(`broadcast transport already started as ${JSON.stringify(this.self)}; stop() it first`)
    const Ctor = this.init.BroadcastChannel ?? (globalThis as { BroadcastChannel?: new (name: string) => BroadcastChannelLike }).BroadcastChannel
    if (typeof Ctor !== 'function') {
      throw new TransportArgumentError('broadcast transport: this environment has no BroadcastChannel (pass the BroadcastChannel option)')
    }
    const self = this.init.peerId ?? room?.peerId
    if (typeof self !== 'string' || self === '') throw new TransportArgumentError('broadcast transport: the peer id must be a non-empty string')
    if (this.init.channel === undefined && (typeof room?.room !== 'string' || room.room === '')) {
      throw new TransportArgumentError('broadcast transport: the room must be a non-empty string')
    }
    const name = this.init.channel ?? `syncmesh/${room.room}`
    const bc = new Ctor(name)
    ;(bc as { unref?: () => void }).unref?.()
    // A message already queued for an earlier channel of this transport must not reach a later start.
    bc.onmessage = (event) => {
      if (this.bc === bc) this.receive(event?.data)
    }
    this.bc = bc
    this.name = name
    this.self = self
    this.room = room
    this.session = randomSession()
    this.reportedClash = false
    this.post({ t: 'hello' })
    this.timer = setInterval(() => this.tick(), this.heartbeatMs)
    ;(this.timer as { unref?: () => void }).unref?.()
    ;(globalThis as PageEvents).addEventListener?.('pagehide', this.onPageHide)
  }

  async stop(): Promise<void> {
    const bc = this.bc
    if (!bc) return
    this.post({ t: 'bye' })
    this.bc = undefined
    this.name = undefined
    clearInterval(this.timer)
    this.timer = undefined
    ;(globalThis as PageEvents).removeEventListener?.('pagehide', this.onPageHide)
    this.members.clear() // a stopped transport reports nothing more, not even its own peers going away
    bc.onmessage = null
    try {
      bc.close()
    } catch (error) {
      this.report(error)
    }
  }

  send(peer: PeerId, frame: Uint8Array): void {
    if (!this.bc) return
    this.post({ t: 'frame', to: peer, data: this.checked(frame) }, this.members.has(peer))
  }

  broadcast(frame: Uint8Array): void {
    if (!this.bc) return
    this.post({ t: 'frame', data: this.checked(frame) }, this.members.size > 0)
  }

  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  on(event: 'frame', fn: FrameListener): () => void
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    return this.listeners.on(event, fn)
  }

  /** Validates a frame and returns what may be posted: the frame itself, or a copy of exactly its bytes. */
  private checked(frame: Uint8Array): Uint8Array {
    if (!(frame instanceof Uint8Array)) throw new TransportArgumentError('frame must be a Uint8Array')
    if (frame.byteLength > this.maxFrameSize) throw new FrameTooLargeError(frame.byteLength, this.maxFrameSize)
    // Structured clone copies a view's whole buffer (and refuses shared memory): send only the viewed bytes.
    const whole = frame.byteOffset === 0 && frame.byteLength === frame.buffer.byteLength && frame.buffer instanceof ArrayBuffer
    return whole ? frame : frame.slice()
  }

  private post(m: { t: Kind; to?: string; data?: Uint8Array }, when = true): void {
    if (!when) return
    try {
      this.bc?.postMessage({ sm: TAG, from: this.self, session: this.session, ...m })
    } catch (error) {
      this.report(error)
    }
  }

  private receive(data: unknown): void {
    if (!isWire(data)) return
    const { from, session, t, to } = data
    if (from === this.self) {
      if (session !== this.session && !this.reportedClash) {
        this.reportedClash = true
        const channel = JSON.stringify(this.name)
        this.room?.onError?.(new PeerIdInUseError(`another broadcast transport on channel ${channel} announces our peer id ${JSON.stringify(from)}`), from)
      }
      return
    }
    let member = this.members.get(from)
    if (t === 'bye') {
      if (member?.session === session) this.drop(from)
      return
    }
    if (member && member.session !== session) {
      this.drop(from) // it restarted: a new peer under the old id
      if (!this.bc) return // a peer:down listener stopped us
      member = undefined
    }
    if (member) member.lastSeen = now()
    else {
      this.members.set(from, { session, lastSeen: now() })
      if (t !== 'hello' && to !== this.self) this.post({ t: 'here', to: from }) // it may not know us yet
      this.emitPeer('peer:up', from)
    }
    if (to !== undefined && to !== this.self) return
    if (t === 'hello') this.post({ t: 'here', to: from })
    else if (t === 'frame') {
      const alive = (): boolean => this.bc !== undefined && this.members.get(from)?.session === session
      if (alive()) this.listeners.emitFrame(from, data.data!, (error) => this.report(error, from), alive)
    }
  }

  private tick(): void {
    this.post({ t: 'here' })
    const cutoff = now() - this.peerTimeoutMs
    for (const [peer, m] of [...this.members]) if (m.lastSeen < cutoff) this.drop(peer)
  }

  private drop(peer: PeerId): void {
    if (this.members.delete(peer)) this.emitPeer('peer:down', peer)
  }

  private emitPeer(event: 'peer:up' | 'peer:down', peer: PeerId): void {
    this.listeners.emitPeer(event, peer, (error) => this.report(error, peer), () => this.bc !== undefined)
  }

  /** Reports an error no caller can receive: to `RoomContext.onError`, else as an uncaught exception. */
  private report(error: unknown, peer?: PeerId): void {
    const e = toError(error)
    const onError = this.room?.onError
    if (onError) onError(e, peer)
    else {
      setTimeout(() => {
        throw e
      })
    }
  }
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new TransportArgumentError(`${name} must be a positive number, got ${String(value)}`)
  }
  return value
}

function nonEmpty(name: string, value: unknown): void {
  if (value !== undefined && (typeof value !== 'string' || value === '')) throw new TransportArgumentError(`${name} must be a non-empty string`)
}

function isWire(x: unknown): x is Wire {
  if (typeof x !== 'object' || x === null) return false
  const m = x as { [K in keyof Wire]?: unknown }
  const id = (v: unknown): boolean => typeof v === 'string' && v !== ''
  if (m.sm !== TAG || !id(m.from) || !id(m.session) || (m.to !== undefined && !id(m.to))) return false
  switch (m.t) {
    case 'hello':
    case 'here':
    case 'bye':
      return true
    case 'frame':
      return m.data instanceof Uint8Array
    default:
      return false
  }
}

/** A monotonic clock where there is one: a wall-clock jump must not time every peer out at once. */
function now(): number {
  return globalThis.performance?.now() ?? Date.now()
}

function randomSession(): string {
  const bytes = new Uint8Array(8)
  globalThis.crypto.getRandomValues(bytes)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}
