import { TransportArgumentError } from './errors.js'
import type { FrameListener, PeerId, PeerListener } from './types.js'

interface Entry<F> {
  readonly fn: F
  active: boolean
}

/**
 * The `peer:up` / `peer:down` / `frame` listeners of one transport. Lists are copy-on-write, so a listener added
 * during a delivery does not receive it, and one removed during a delivery is skipped. Each transport passes its
 * own way of reporting a listener's error.
 */
export class TransportListeners {
  private up: readonly Entry<PeerListener>[] = []
  private down: readonly Entry<PeerListener>[] = []
  private frames: readonly Entry<FrameListener>[] = []

  /** Implements `Transport.on`: validates, subscribes, returns the unsubscribe function. */
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    if (typeof fn !== 'function') throw new TransportArgumentError('listener must be a function')
    switch (event) {
      case 'peer:up':
        return this.add(() => this.up, (l) => (this.up = l), fn as PeerListener)
      case 'peer:down':
        return this.add(() => this.down, (l) => (this.down = l), fn as PeerListener)
      case 'frame':
        return this.add(() => this.frames, (l) => (this.frames = l), fn as FrameListener)
      default:
        throw new TransportArgumentError(`unknown event ${JSON.stringify(event)}`)
    }
  }

  /**
   * Calls the current listeners of `event`; `onError` receives what one throws. When given, `proceed` is asked
   * before each call and ends the delivery when it returns false (the transport stopped meanwhile).
   */
  emitPeer(event: 'peer:up' | 'peer:down', peer: PeerId, onError: (error: unknown) => void, proceed?: () => boolean): void {
    for (const entry of event === 'peer:up' ? this.up : this.down) {
      if (proceed && !proceed()) return
      if (!entry.active) continue
      try {
        entry.fn(peer)
      } catch (error) {
        onError(error)
      }
    }
  }

  /** Calls the current `frame` listeners, as {@link TransportListeners.emitPeer} does. */
  emitFrame(peer: PeerId, frame: Uint8Array, onError: (error: unknown) => void, proceed?: () => boolean): void {
    for (const entry of this.frames) {
      if (proceed && !proceed()) return
      if (!entry.active) continue
      try {
        entry.fn(peer, frame)
      } catch (error) {
        onError(error)
      }
    }
  }

  private add<F>(get: () => readonly Entry<F>[], set: (list: readonly Entry<F>[]) => void, fn: F): () => void {
    const entry: Entry<F> = { fn, active: true }
    set([...get(), entry])
    return () => {
      if (!entry.active) return
      entry.active = false
      set(get().filter((e) => e !== entry))
    }
  }
}
