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
 * Wire (structured-clone objects on the channel; anything else on it is ignored):
 *
 *   { sm: 'bc1', t: 'hello', from, session }            sent by start(): "I am here, who else is?"
 *   { sm: 'bc1', t: 'here',  from, session, to? }       the answer to a hello (to = the newcomer), and every
 *                                                       `heartbeatMs` to everyone (no `to`)
 *   { sm: 'bc1', t: 'bye',   from, session }            sent by stop() and when the page is hidden for good
 *   { sm: 'bc1', t: 'frame', from, session, to?, data } one frame (a Uint8Array) for `to`, or for everyone
 *
 * - `session` is random per `start()`: a peer that comes back under the same id is reported down, then up.
 * - A peer is up from its first message (any type); down on `bye`, or when it has been silent for
 *   `peerTimeoutMs` (a tab that crashed or was killed says nothing).
 * - Messages from our own id with another session (a second transport under the same id) are ignored and
 *   reported once through `RoomContext.onError` as {@link PeerIdInUseError}.
 * - Delivery is what BroadcastChannel gives: in order per sender, nothing lost while both ends are open. `send`
 *   posts one message, seen by every end of the channel and dropped by those it is not for; `broadcast` posts one
 *   for all. `postMessage` clones, so the caller may reuse its buffer at once.
 */
import { FrameTooLargeError, PeerIdInUseError, TransportArgumentError, TransportError, TransportStateError } from './errors.js'
import { TransportListeners } from './listeners.js'
import type { FrameListener, PeerId, PeerListener, RoomContext, Transport } from './types.js'

export { FrameTooLargeError, PeerIdInUseError, TransportArgumentError, TransportError, TransportStateError } from './errors.js'

/** The part of `BroadcastChannel` this transport uses. */
export interface BroadcastChannelLike {
  postMessage(message: unknown): void
  onmessage: ((event: { readonly data: unknown }) => void) | null
  close(): void
}

/** Options of {@link broadcastTransport}. */
export interface BroadcastTransportInit {
  /**
   * The channel name; peers on the same name meet.
   * @default `'syncmesh/' + room` (the room topic the replica passes to `start()`)
   */
  channel?: string
  /**
   * The id this transport announces.
   * @default the replica's peer id (`RoomContext.peerId`)
   */
  peerId?: string
  /**
   * The BroadcastChannel constructor.
   * @default globalThis.BroadcastChannel
   */
  BroadcastChannel?: new (name: string) => BroadcastChannelLike
  /**
   * How often, in ms, each end tells the others it is still there.
   * @default 1000
   */
  heartbeatMs?: number
  /**
   * After how many ms of silence a peer is reported down.
   * @default 4000
   */
  peerTimeoutMs?: number
  /**
   * Largest frame `send` accepts, in bytes.
   * @default 262144
   */
  maxFrameSize?: number
}

/** The transport returned by {@link broadcastTransport}. */
export interface BroadcastTransport extends Transport {
  /** The channel name in use (undefined until started). */
  readonly channel: string | undefined
}

/** A {@link Transport} over BroadcastChannel (see the module comment). */
export function broadcastTransport(init: BroadcastTransportInit = {}): BroadcastTransport {
  return new BroadcastTransportImpl(init)
}

const TAG = 'bc1'

type Wire = { sm: typeof TAG; t: 'hello' | 'here' | 'bye' | 'frame'; from: string; session: string; to?: string; data?: Uint8Array }

interface Member {
  session: string
  lastSeen: number
}

class BroadcastTransportImpl implements BroadcastTransport {
  readonly maxFrameSize: number
  private readonly heartbeatMs: number
  private readonly peerTimeoutMs: number
  private readonly listeners = new TransportListeners()
  private bc: BroadcastChannelLike | undefined
  private self = ''
  private session = ''
  private room: RoomContext | undefined
  private readonly members = new Map<PeerId, Member>()
  private timer: ReturnType<typeof setInterval> | undefined
  private reportedClash = false
  private readonly onPageHide = (event: { persisted?: boolean }): void => {
    if (!event.persisted) this.post({ t: 'bye' })
  }
  channel: string | undefined

  constructor(private readonly init: BroadcastTransportInit) {
    const positive = (name: string, v: number | undefined, d: number): number => {
      if (v === undefined) return d
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new TransportArgumentError(`${name} must be a positive number`)
      return v
    }
    this.maxFrameSize = Math.floor(positive('maxFrameSize', init.maxFrameSize, 256 * 1024))
    this.heartbeatMs = positive('heartbeatMs', init.heartbeatMs, 1000)
    this.peerTimeoutMs = positive('peerTimeoutMs', init.peerTimeoutMs, 4000)
    if (this.peerTimeoutMs <= this.heartbeatMs) throw new TransportArgumentError('peerTimeoutMs must exceed heartbeatMs')
    if (init.peerId !== undefined && (typeof init.peerId !== 'string' || init.peerId === '')) throw new TransportArgumentError('peerId must be a non-empty string')
    if (init.channel !== undefined && (typeof init.channel !== 'string' || init.channel === '')) throw new TransportArgumentError('channel must be a non-empty string')
  }

  async start(room: RoomContext): Promise<void> {
    if (this.bc) throw new TransportStateError(`broadcast transport already started as ${JSON.stringify(this.self)}; stop() it first`)
    const Ctor = this.init.BroadcastChannel ?? (globalThis as { BroadcastChannel?: new (name: string) => BroadcastChannelLike }).BroadcastChannel
    if (typeof Ctor !== 'function') throw new TransportError('broadcast transport: this environment has no BroadcastChannel (pass the BroadcastChannel option)')
    const self = this.init.peerId ?? room.peerId
    if (typeof self !== 'string' || self === '') throw new TransportArgumentError('broadcast transport: the peer id must be a non-empty string')
    this.self = self
    this.room = room
    this.channel = this.init.channel ?? `syncmesh/${room.room}`
    this.session = randomSession()
    this.reportedClash = false
    const bc = new Ctor(this.channel)
    ;(bc as { unref?: () => void }).unref?.()
    bc.onmessage = (event) => this.receive(event.data)
    this.bc = bc
    this.post({ t: 'hello' })
    this.timer = setInterval(() => this.tick(), this.heartbeatMs)
    ;(this.timer as { unref?: () => void }).unref?.()
    ;(globalThis as { addEventListener?: (type: string, fn: (e: { persisted?: boolean }) => void) => void }).addEventListener?.('pagehide', this.onPageHide)
  }

  async stop(): Promise<void> {
    const bc = this.bc
    if (!bc) return
    this.post({ t: 'bye' })
    this.bc = undefined
    clearInterval(this.timer)
    ;(globalThis as { removeEventListener?: (type: string, fn: (e: { persisted?: boolean }) => void) => void }).removeEventListener?.('pagehide', this.onPageHide)
    bc.onmessage = null
    bc.close()
    this.members.clear() // a stopped transport reports nothing more
  }

  send(peer: PeerId, frame: Uint8Array): void {
    this.checkFrame(frame)
    if (!this.bc || !this.members.has(peer)) return
    this.post({ t: 'frame', to: peer, data: frame })
  }

  broadcast(frame: Uint8Array): void {
    this.checkFrame(frame)
    if (this.bc && this.members.size > 0) this.post({ t: 'frame', data: frame })
  }

  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  on(event: 'frame', fn: FrameListener): () => void
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    return this.listeners.on(event, fn)
  }

  private checkFrame(frame: Uint8Array): void {
    if (!(frame instanceof Uint8Array)) throw new TransportArgumentError('frame must be a Uint8Array')
    if (frame.length > this.maxFrameSize) throw new FrameTooLargeError(frame.length, this.maxFrameSize)
  }

  private post(m: Omit<Wire, 'sm' | 'from' | 'session'>): void {
    try {
      this.bc?.postMessage({ sm: TAG, from: this.self, session: this.session, ...m })
    } catch (err) {
      this.report(err)
    }
  }

  private receive(data: unknown): void {
    if (!this.bc || !isWire(data)) return
    const { from, session, t } = data
    if (from === this.self) {
      if (session !== this.session && !this.reportedClash) {
        this.reportedClash = true
        this.room?.onError?.(new PeerIdInUseError(`another broadcast transport on channel ${JSON.stringify(this.channel)} uses the peer id ${JSON.stringify(from)}`))
      }
      return
    }
    if (data.to !== undefined && data.to !== this.self) return
    const known = this.members.get(from)
    if (t === 'bye') {
      if (known?.session === session) this.drop(from)
      return
    }
    if (known && known.session !== session) this.drop(from) // it restarted: a new peer under the old id
    const member = this.members.get(from)
    if (member) member.lastSeen = Date.now()
    else {
      this.members.set(from, { session, lastSeen: Date.now() })
      if (t !== 'hello') this.post({ t: 'here', to: from }) // it may not know us yet (it started before us)
      this.emitPeer('peer:up', from)
    }
    if (t === 'hello') this.post({ t: 'here', to: from })
    else if (t === 'frame' && data.data instanceof Uint8Array) {
      const frame = data.data
      this.listeners.emitFrame(from, frame, (err) => this.report(err), () => this.bc !== undefined && this.members.get(from)?.session === session)
    }
  }

  private tick(): void {
    this.post({ t: 'here' })
    const now = Date.now()
    for (const [peer, m] of [...this.members]) if (now - m.lastSeen > this.peerTimeoutMs) this.drop(peer)
  }

  private drop(peer: PeerId): void {
    if (!this.members.delete(peer)) return
    this.emitPeer('peer:down', peer)
  }

  private emitPeer(event: 'peer:up' | 'peer:down', peer: PeerId): void {
    this.listeners.emitPeer(event, peer, (err) => this.report(err), () => this.bc !== undefined)
  }

  private report(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err))
    if (this.room?.onError) this.room.onError(e)
    else queueMicrotask(() => {
      throw e
    })
  }
}

function isWire(x: unknown): x is Wire {
  if (typeof x !== 'object' || x === null) return false
  const m = x as Partial<Wire>
  return (
    m.sm === TAG &&
    typeof m.from === 'string' &&
    m.from !== '' &&
    typeof m.session === 'string' &&
    (m.t === 'hello' || m.t === 'here' || m.t === 'bye' || m.t === 'frame') &&
    (m.to === undefined || typeof m.to === 'string')
  )
}

function randomSession(): string {
  const bytes = new Uint8Array(8)
  globalThis.crypto.getRandomValues(bytes)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}
