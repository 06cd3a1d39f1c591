/**
 * Sealed frames: the {@link Transport} wrapper the replica puts around every transport of an encrypted room
 * (`createReplica({ secret })`). The inner transport, and whatever server or relay it goes through, sees only
 * sealed frames; the sync engine above sees only frames that opened.
 *
 * Wire shape (version 1):
 *
 * ```
 * sealed = version:u8 (=0xE1)  kind:u8  nonce[12]  ciphertext  tag[16]       (AES-256-GCM, see ./room-key.ts)
 * kind   = 0 DATA         plaintext: one sync-engine frame
 *          1 HELLO        plaintext: empty — "I hold the room key; are you there?"
 *          2 HELLO_REPLY  plaintext: empty — "I hold it too"
 * aad    = "syncmesh/frame/v1" 0x00 topic 0x00 sender-peer-id 0x00 version kind
 * ```
 *
 * Rules
 * - A peer the inner transport reports up is *not* reported up to the engine until it has proved that it holds the
 *   room key: on `peer:up` we send HELLO (again every {@link SealedTransportInit.helloRetryMs}, doubling up to 8×,
 *   while unanswered, because the inner transport may drop it); any frame from the peer that opens (HELLO,
 *   HELLO_REPLY or DATA) makes it up. HELLO is answered with HELLO_REPLY. So a peer with a wrong secret never reaches
 *   the engine: it is sent no data, and it does not hold up `replica.sync()`.
 * - A frame that does not open (wrong key, no key, altered, truncated, replayed under another sender id) is dropped
 *   and reported as an `AuthError` through `RoomContext.onError` with the inner transport's sender id.
 * - The sender id is in the AAD, so a relay that claims a frame came from someone else produces an `AuthError`.
 *   The receiver is not: a broadcast is sealed once for every receiver. A frame replayed or redirected to another
 *   member is harmless: deltas are idempotent, and a delta advances a receiver's version vector only when the
 *   receiver already covers the delta's `from`.
 * - WebCrypto is asynchronous: outbound frames are sealed at once (in parallel) and handed to the inner transport
 *   in call order; inbound frames are opened in parallel and delivered in arrival order, with `peer:down` behind
 *   the frames that came before it. At most `maxPendingBytes` wait in each direction; beyond, frames are dropped
 *   (the engine's anti-entropy repairs losses, as with any lossy transport). `stop()` first lets the frames still
 *   being sealed reach the inner transport (for at most 2 s), so a replica's last writes before `close()` go out.
 * - `maxFrameSize` is the inner transport's less {@link SEALED_FRAME_OVERHEAD}; a per-peer message-size hint of the
 *   inner transport (`maxMessageSize`, for links cut after so many bytes) is passed on less the overhead too.
 */
import { asError } from '../../crdt/errors.js'
import { AuthError, FrameTooLargeError, TransportArgumentError, TransportStateError } from '../../transports/errors.js'
import { TransportListeners } from '../../transports/listeners.js'
import type { FrameListener, PeerId, PeerListener, RoomCipher, RoomContext, Transport } from '../../transports/types.js'
import { SEAL_OVERHEAD } from './room-key.js'

/**
 * First byte of sealed frames (format 1). Distinct from every sync protocol version, so a peer without the secret
 * refuses a sealed frame at once (UnsupportedVersionError) instead of trying to decode it.
 */
export const SEALED_FRAME_VERSION = 0xe1
/** Bytes a sealed frame adds to an engine frame: version, kind, nonce and tag. */
export const SEALED_FRAME_OVERHEAD = 2 + SEAL_OVERHEAD

/** Longest `stop()` waits for frames still being sealed. */
const STOP_FLUSH_MS = 2000

const DATA = 0
const HELLO = 1
const HELLO_REPLY = 2

/** Options of {@link sealedTransport}. */
export interface SealedTransportInit {
  /**
   * Bytes of frames that may wait for sealing or opening, per direction; beyond, new frames are dropped.
   * @default 8_388_608
   */
  maxPendingBytes?: number
  /**
   * First interval between HELLOs to a peer that has not proved it holds the key (doubling up to 8×).
   * @default 1000
   */
  helloRetryMs?: number
}

/** What {@link SealedTransport.stats} returns. */
export interface SealedTransportStats {
  /** Frames dropped because too many bytes were waiting to be sealed or opened. */
  readonly dropped: number
  /** Inbound frames that did not open. */
  readonly rejected: number
}

/** A transport whose frames are sealed with the room key; see the module comment. */
export interface SealedTransport extends Transport {
  /** The wrapped transport. */
  readonly inner: Transport
  /** Seals the frame once and sends it to every peer that proved it holds the key. */
  broadcast(frame: Uint8Array): void
  /** The inner transport's message-size hint for `peer` less the sealing overhead; undefined when it gives none. */
  maxMessageSize(peer: PeerId): number | undefined
  /** Drop and rejection counts since creation. */
  stats(): SealedTransportStats
}

/** Wraps `inner` so that every frame is sealed with `RoomContext.cipher` (required at `start()`). */
export function sealedTransport(inner: Transport, init: SealedTransportInit = {}): SealedTransport {
  return new SealedTransportImpl(inner, init)
}

interface Link {
  /** The peer proved it holds the key (and the engine was told `peer:up`). */
  authed: boolean
  timer: ReturnType<typeof setTimeout> | undefined
  hellos: number
}

const encoder = new TextEncoder()

class SealedTransportImpl implements SealedTransport {
  private readonly listeners = new TransportListeners()
  private readonly links = new Map<PeerId, Link>()
  private readonly maxPending: number
  private readonly helloRetryMs: number
  private ctx: RoomContext | undefined
  private cipher: RoomCipher | undefined
  private offs: (() => void)[] = []
  /** Incremented by every start and stop: work of an older generation stands down. */
  private generation = 0
  private started = false
  private outbound: Promise<void> = Promise.resolve()
  private inbound: Promise<void> = Promise.resolve()
  private pendingOut = 0
  private pendingIn = 0
  private dropped = 0
  private rejected = 0
  private readonly aadPrefixes = new Map<PeerId, Uint8Array>()

  constructor(
    readonly inner: Transport,
    init: SealedTransportInit,
  ) {
    if (inner === null || typeof inner !== 'object' || typeof inner.start !== 'function') throw new TransportArgumentError('sealedTransport() needs a Transport')
    this.maxPending = init.maxPendingBytes ?? 8 * 1024 * 1024
    this.helloRetryMs = init.helloRetryMs ?? 1000
    if (!Number.isSafeInteger(this.maxPending) || this.maxPending < 1) throw new TransportArgumentError('maxPendingBytes must be a positive integer')
    if (!Number.isSafeInteger(this.helloRetryMs) || this.helloRetryMs < 1) throw new TransportArgumentError('helloRetryMs must be a positive integer')
  }

  get maxFrameSize(): number {
    return Math.max(0, this.inner.maxFrameSize - SEALED_FRAME_OVERHEAD)
  }

  /**
   * The inner transport's message-size hint for a limited link, less the sealing overhead of the frames such a
   * message becomes (and of a HELLO); undefined when the inner transport gives none.
   */
  maxMessageSize(peer: PeerId): number | undefined {
    const hint = (this.inner as { maxMessageSize?(peer: PeerId): number | undefined }).maxMessageSize?.(peer)
    if (hint === undefined) return undefined
    const frames = Math.ceil(hint / Math.max(1, this.maxFrameSize)) + 1
    return Math.max(1, hint - frames * SEALED_FRAME_OVERHEAD)
  }

  async start(room: RoomContext): Promise<void> {
    if (this.started) throw new TransportStateError('sealed transport already started; stop() it first')
    if (room === null || typeof room !== 'object') throw new TransportArgumentError('start() needs a RoomContext')
    const cipher = room.cipher
    if (!cipher || typeof cipher.seal !== 'function' || typeof cipher.open !== 'function') {
      throw new TransportArgumentError('a sealed transport needs RoomContext.cipher')
    }
    this.started = true
    const gen = ++this.generation
    this.ctx = room
    this.cipher = cipher
    this.aadPrefixes.clear()
    this.offs = [
      this.inner.on('peer:up', (peer) => this.innerUp(peer, gen)),
      this.inner.on('peer:down', (peer) => this.innerDown(peer, gen)),
      this.inner.on('frame', (peer, frame) => this.innerFrame(peer, frame, gen)),
    ]
    try {
      await this.inner.start(room)
    } catch (error) {
      if (this.generation === gen) this.reset()
      throw error
    }
  }

  async stop(): Promise<void> {
    if (!this.started) return
    // Frames already handed to us (the replica's last writes, sent just before it leaves) are still being sealed:
    // let them reach the inner transport first, for at most STOP_FLUSH_MS.
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([this.outbound, new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_FLUSH_MS)))])
    clearTimeout(timer)
    if (!this.started) return // a concurrent stop() finished first
    this.reset()
    await this.inner.stop()
  }

  send(peer: PeerId, frame: Uint8Array): void {
    if (!this.started) return
    this.checkFrame(frame)
    if (!this.links.get(peer)?.authed) return
    this.enqueueOut(frame.byteLength, () => this.seal(DATA, frame), (sealed) => this.inner.send(peer, sealed))
  }

  broadcast(frame: Uint8Array): void {
    if (!this.started) return
    this.checkFrame(frame)
    const targets = [...this.links].filter(([, l]) => l.authed).map(([p]) => p)
    if (targets.length === 0) return
    const everyone = targets.length === this.links.size && typeof this.inner.broadcast === 'function'
    this.enqueueOut(frame.byteLength, () => this.seal(DATA, frame), (sealed) => {
      // One ciphertext for all: through the inner broadcast when every linked peer is authenticated (a peer that is
      // not must not even get ciphertext), else one send per authenticated peer still linked.
      if (everyone && [...this.links.values()].every((l) => l.authed)) this.inner.broadcast!(sealed)
      else for (const p of targets) if (this.links.get(p)?.authed) this.inner.send(p, sealed)
    })
  }

  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  on(event: 'frame', fn: FrameListener): () => void
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    return this.listeners.on(event, fn)
  }

  stats(): SealedTransportStats {
    return { dropped: this.dropped, rejected: this.rejected }
  }

  // -------------------------------------------------------------------------------------------------------------------

  private reset(): void {
    this.started = false
    this.generation++
    for (const off of this.offs) off()
    this.offs = []
    for (const l of this.links.values()) clearTimeout(l.timer)
    this.links.clear()
  }

  private checkFrame(frame: Uint8Array): void {
    if (!(frame instanceof Uint8Array)) throw new TransportArgumentError('frame must be a Uint8Array')
    if (frame.byteLength > this.maxFrameSize) throw new FrameTooLargeError(frame.byteLength, this.maxFrameSize)
  }

  private aad(sender: PeerId, version: number, kind: number): Uint8Array {
    let prefix = this.aadPrefixes.get(sender)
    if (!prefix) {
      prefix = encoder.encode(`syncmesh/frame/v1\u0000${this.ctx!.room}\u0000${sender}\u0000`)
      if (this.aadPrefixes.size >= 1024) this.aadPrefixes.clear()
      this.aadPrefixes.set(sender, prefix)
    }
    const out = new Uint8Array(prefix.length + 2)
    out.set(prefix, 0)
    out[prefix.length] = version
    out[prefix.length + 1] = kind
    return out
  }

  /** Seals one frame (starts at once; WebCrypto copies `plain` synchronously). */
  private async seal(kind: number, plain: Uint8Array): Promise<Uint8Array> {
    const body = await this.cipher!.seal(plain, this.aad(this.ctx!.peerId, SEALED_FRAME_VERSION, kind))
    const out = new Uint8Array(2 + body.length)
    out[0] = SEALED_FRAME_VERSION
    out[1] = kind
    out.set(body, 2)
    return out
  }

  /** Starts sealing at once (unless too much is waiting) and hands the results over in the order of the calls. */
  private enqueueOut(bytes: number, seal: () => Promise<Uint8Array>, deliver: (sealed: Uint8Array) => void): void {
    if (this.pendingOut + bytes > this.maxPending) {
      this.dropped++
      return
    }
    const sealed = seal()
    sealed.catch(() => {}) // handled in order below
    this.pendingOut += bytes
    const gen = this.generation
    this.outbound = this.outbound
      .then(() => sealed)
      .then(
        (frame) => {
          this.pendingOut -= bytes
          if (gen !== this.generation) return
          try {
            deliver(frame)
          } catch (error) {
            this.report(asError(error))
          }
        },
        (error: unknown) => {
          this.pendingOut -= bytes
          if (gen === this.generation) this.report(asError(error))
        },
      )
  }

  private innerUp(peer: PeerId, gen: number): void {
    if (gen !== this.generation || peer === this.ctx!.peerId) return
    const old = this.links.get(peer)
    if (old) clearTimeout(old.timer)
    const link: Link = { authed: false, timer: undefined, hellos: 0 }
    this.links.set(peer, link)
    this.hello(peer, link, gen)
  }

  /** Sends HELLO and schedules the next one, until the peer proves it holds the key or goes away. */
  private hello(peer: PeerId, link: Link, gen: number): void {
    if (gen !== this.generation || link.authed || this.links.get(peer) !== link) return
    this.sendControl(peer, HELLO)
    const delay = this.helloRetryMs * 2 ** Math.min(link.hellos++, 3)
    link.timer = setTimeout(() => this.hello(peer, link, gen), delay)
    ;(link.timer as { unref?: () => void }).unref?.()
  }

  private sendControl(peer: PeerId, kind: number): void {
    this.enqueueOut(0, () => this.seal(kind, new Uint8Array(0)), (sealed) => {
      if (this.links.has(peer)) this.inner.send(peer, sealed)
    })
  }

  private innerDown(peer: PeerId, gen: number): void {
    if (gen !== this.generation) return
    const link = this.links.get(peer)
    if (!link) return
    clearTimeout(link.timer)
    this.links.delete(peer)
    if (!link.authed) return
    // Behind the frames that arrived before it: the engine sees them while the peer is still up.
    this.inbound = this.inbound.then(() => {
      if (gen === this.generation && !this.links.get(peer)?.authed) this.emitPeer('peer:down', peer)
    })
  }

  private innerFrame(peer: PeerId, frame: Uint8Array, gen: number): void {
    if (gen !== this.generation) return
    const link = this.links.get(peer)
    if (!link) return
    if (this.pendingIn + frame.byteLength > this.maxPending) {
      this.dropped++
      return
    }
    const opened = this.open(peer, frame)
    opened.catch(() => {}) // handled in order below
    const bytes = frame.byteLength
    this.pendingIn += bytes
    this.inbound = this.inbound
      .then(() => opened)
      .then(
        ({ kind, plain }) => {
          this.pendingIn -= bytes
          if (gen !== this.generation || this.links.get(peer) !== link) return
          if (!link.authed) {
            link.authed = true
            clearTimeout(link.timer)
            this.emitPeer('peer:up', peer)
            if (gen !== this.generation || this.links.get(peer) !== link) return
          }
          if (kind === HELLO) this.sendControl(peer, HELLO_REPLY)
          else if (kind === DATA) this.listeners.emitFrame(peer, plain, (e) => this.report(asError(e)), () => gen === this.generation)
        },
        (error: unknown) => {
          this.pendingIn -= bytes
          if (gen !== this.generation) return
          this.rejected++
          const e = error instanceof AuthError ? error : new AuthError(`a frame from ${JSON.stringify(peer)} could not be opened: ${asError(error).message}`, 'frame', { cause: error })
          this.report(e, peer)
        },
      )
  }

  private async open(peer: PeerId, frame: Uint8Array): Promise<{ kind: number; plain: Uint8Array }> {
    const version = frame[0]
    const kind = frame[1]
    if (frame.length < SEALED_FRAME_OVERHEAD || version !== SEALED_FRAME_VERSION || kind === undefined || kind > HELLO_REPLY) {
      throw new AuthError(
        `a frame from ${JSON.stringify(peer)} is not sealed for this room (a peer without the room secret, or another build)`,
        'frame',
      )
    }
    try {
      const plain = await this.cipher!.open(frame.subarray(2), this.aad(peer, version, kind))
      return { kind, plain }
    } catch (cause) {
      throw new AuthError(
        `a frame from ${JSON.stringify(peer)} does not open with the room key (a wrong secret on one side, or altered on the way)`,
        'frame',
        { cause },
      )
    }
  }

  private emitPeer(event: 'peer:up' | 'peer:down', peer: PeerId): void {
    const gen = this.generation
    this.listeners.emitPeer(event, peer, (e) => this.report(asError(e)), () => gen === this.generation)
  }

  private report(error: Error, peer?: PeerId): void {
    const onError = this.ctx?.onError
    if (onError) {
      try {
        onError(error, peer)
        return
      } catch {
        // the handler failed: fall through to an uncaught report
      }
    }
    setTimeout(() => {
      throw error
    }, 0)
  }
}

