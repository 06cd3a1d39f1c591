/**
 * A transport that can be switched off and on without the sync engine noticing anything but peers leaving and
 * coming back: `replica.setOnline(false)` and tabs that are not their store's leader (see tabs/group.ts) keep their
 * transports closed this way. The inner transport is stopped while the gate is closed and started again when it
 * opens; listeners subscribed through the gate stay subscribed across both. Closing reports `peer:down` for every
 * peer the inner transport had reported up (a stopped transport need not say so itself).
 */
import { asError } from '../../crdt/errors.js'
import { TransportListeners } from '../../transports/listeners.js'
import type { FrameListener, PeerId, PeerListener, RoomContext, Transport } from '../../transports/types.js'

/** Frames and bytes exchanged with one peer through one transport (sync-protocol frames, before any sealing). */
export interface Traffic {
  framesIn: number
  bytesIn: number
  framesOut: number
  bytesOut: number
  /** When the last frame from the peer arrived (ms since the epoch), 0 before the first. */
  lastHeard: number
}

/** A {@link Transport} wrapper whose inner transport runs only while the gate is open. */
export class GatedTransport implements Transport {
  /** What went through the gate, per peer, since the replica started. */
  readonly traffic = new Map<PeerId, Traffic>()
  private room: RoomContext | undefined
  private open: boolean
  private readonly listeners = new TransportListeners()
  /** Peers the inner transport reported up (and not down) while the gate was open. */
  private readonly up = new Set<PeerId>()
  /** The last start/stop of the inner transport: changes run one after another. */
  private change: Promise<void> = Promise.resolve()

  constructor(
    readonly inner: Transport,
    open: boolean,
    /** Where a failed (re)start of the inner transport is reported (there is no caller to throw to). */
    private readonly onError: (error: Error) => void,
  ) {
    this.open = open
    const report = (err: unknown): void => this.onError(asError(err))
    inner.on('peer:up', (peer) => {
      if (!this.open || this.up.has(peer)) return
      this.up.add(peer)
      this.listeners.emitPeer('peer:up', peer, report)
    })
    inner.on('peer:down', (peer) => {
      if (this.up.delete(peer)) this.listeners.emitPeer('peer:down', peer, report)
    })
    inner.on('frame', (peer, frame) => {
      if (!this.open || !this.up.has(peer)) return
      const t = this.trafficOf(peer)
      t.framesIn++
      t.bytesIn += frame.byteLength
      t.lastHeard = Date.now()
      this.listeners.emitFrame(peer, frame, report)
    })
  }

  get maxFrameSize(): number {
    return this.inner.maxFrameSize
  }

  /** Whether the inner transport runs (or will, once the room is joined). */
  get isOpen(): boolean {
    return this.open
  }

  async start(room: RoomContext): Promise<void> {
    this.room = room
    if (this.open) await this.enqueue(() => this.inner.start(room), true)
  }

  async stop(): Promise<void> {
    const wasStarted = this.room !== undefined && this.open
    this.room = undefined
    if (wasStarted) await this.enqueue(() => this.stopInner(), true)
    await this.change
  }

  /** Opens or closes the gate; resolves once the inner transport has started or stopped. */
  setOpen(open: boolean): Promise<void> {
    if (open === this.open) return this.change
    this.open = open
    const room = this.room
    if (!room) return this.change
    return this.enqueue(() => (open ? this.inner.start(room) : this.stopInner()), false)
  }

  send(peer: PeerId, frame: Uint8Array): void {
    if (!this.open || !this.up.has(peer)) return
    const t = this.trafficOf(peer)
    t.framesOut++
    t.bytesOut += frame.byteLength
    this.inner.send(peer, frame)
  }

  /** Sends one frame to every peer up on the inner transport (its own broadcast when it has one). */
  broadcast(frame: Uint8Array): void {
    if (!this.open || this.up.size === 0) return
    for (const peer of this.up) {
      const t = this.trafficOf(peer)
      t.framesOut++
      t.bytesOut += frame.byteLength
    }
    if (this.inner.broadcast) this.inner.broadcast(frame)
    else for (const peer of this.up) this.inner.send(peer, frame)
  }

  private trafficOf(peer: PeerId): Traffic {
    let t = this.traffic.get(peer)
    if (!t) this.traffic.set(peer, (t = { framesIn: 0, bytesIn: 0, framesOut: 0, bytesOut: 0, lastHeard: 0 }))
    return t
  }

  maxMessageSize(peer: PeerId): number | undefined {
    return this.inner.maxMessageSize?.(peer)
  }

  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  on(event: 'frame', fn: FrameListener): () => void
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    return this.listeners.on(event, fn)
  }

  private async stopInner(): Promise<void> {
    try {
      await this.inner.stop()
    } finally {
      const report = (err: unknown): void => this.onError(asError(err))
      for (const peer of [...this.up]) {
        this.up.delete(peer)
        this.listeners.emitPeer('peer:down', peer, report)
      }
    }
  }

  /** Runs a start or stop after the previous one; `rethrow` for the caller's own start/stop, else reported. */
  private enqueue(task: () => Promise<void>, rethrow: boolean): Promise<void> {
    const run = this.change.then(task)
    this.change = run.catch((err: unknown) => {
      if (!rethrow) this.onError(asError(err))
    })
    return rethrow ? run : this.change
  }
}
