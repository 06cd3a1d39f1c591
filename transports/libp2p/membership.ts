/**
 * The room members a libp2p transport has heard of ({@link Membership}), and which of them its bounded overlay
 * wants a session with: a ring lattice over libp2p PeerIds (../overlay.ts: connected, degree ≤ maxPeers), or
 * everyone in a room of at most maxPeers + 1.
 */
import { overlayNeighbours } from '../overlay.js'

/** Members heard of (announcements, topic subscriptions, sessions), by libp2p PeerId, with when last heard of. */
export class Membership {
  private readonly known = new Map<string, number>()
  /** The overlay's wanted members, recomputed when `known` changes; undefined when stale. */
  private wantedCache: Set<string> | undefined

  constructor(
    private readonly maxPeers: number,
    /** Our own libp2p PeerId (set at start). */
    private readonly self: () => string,
    /** Called when a member is noted while the room holds more than maxPeers members (sessions may need pruning). */
    private readonly onCrowded: () => void,
  ) {}

  /** Number of members heard of. */
  get size(): number {
    return this.known.size
  }

  has(remote: string): boolean {
    return this.known.has(remote)
  }

  /** The members heard of, ourselves excluded. */
  list(): string[] {
    return [...this.known.keys()]
  }

  /** Notes that a node is a room member. */
  heardOf(remote: string): void {
    if (remote === this.self()) return
    if (!this.known.has(remote)) this.wantedCache = undefined
    this.known.set(remote, Date.now())
    if (this.known.size > this.maxPeers) this.onCrowded()
  }

  /** Whether the overlay wants a session with this member (always, in a room of at most maxPeers + 1). */
  wants(remote: string): boolean {
    if (this.known.size <= this.maxPeers) return true
    this.wantedCache ??= overlayNeighbours(this.self(), this.known.keys(), this.maxPeers)
    return this.wantedCache.has(remote)
  }

  /** Forgets the members not heard of since `before` for which `keep` is false (those without a session). */
  expire(before: number, keep: (remote: string) => boolean): void {
    for (const [remote, at] of this.known) {
      if (at < before && !keep(remote)) {
        this.known.delete(remote)
        this.wantedCache = undefined
      }
    }
  }

  clear(): void {
    this.known.clear()
    this.wantedCache = undefined
  }
}
