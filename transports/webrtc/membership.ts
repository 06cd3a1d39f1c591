/**
 * The room members a WebRTC transport knows of ({@link Membership}): who announced itself (and in which
 * incarnation), who failed to connect and backs off until when, who has gone silent, and which members the bounded
 * overlay wants a connection with (../overlay.ts; everyone in a room of at most maxPeers + 1).
 */
import { overlayNeighbours } from '../overlay.js'
import type { PeerId } from '../types.js'
import { type BackoffInit, backoffDelay } from './signaling.js'

/** Members remembered at most (a flood of fake announces must not grow memory without bound). */
const MAX_MEMBERS = 4096

/** What is known of one member. */
export interface Member {
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

/** The members of the room, by peer id. */
export class Membership {
  private readonly members = new Map<PeerId, Member>()

  constructor(private readonly backoff: Required<BackoffInit>) {}

  get(peer: PeerId): Member | undefined {
    return this.members.get(peer)
  }

  ids(): PeerId[] {
    return [...this.members.keys()]
  }

  /**
   * An announcement of (peer, session): `'known'` when it only refreshes a member, `'full'` when a new member does
   * not fit, otherwise the member is (re)recorded and the answer says whether it `'restarted'` or is `'new'`.
   */
  announced(from: PeerId, session: string): 'known' | 'full' | 'restarted' | 'new' {
    const now = Date.now()
    const m = this.members.get(from)
    if (m && m.session === session) {
      m.lastSeen = now
      return 'known'
    }
    if (!m && this.members.size >= MAX_MEMBERS) return 'full'
    this.members.set(from, { session, knownSince: now, lastSeen: now, failures: 0, retryAt: 0 })
    return m ? 'restarted' : 'new'
  }

  /** A leave of (peer, session): false when it is a stale leave of an older incarnation (the member stays). */
  left(from: PeerId, session: string | undefined): boolean {
    const m = this.members.get(from)
    if (m && session !== undefined && m.session !== session) return false
    this.members.delete(from)
    return true
  }

  /** Notes that `from` is alive (a signal proves it), adding it to the members when unknown. */
  touch(from: PeerId, session: string | undefined): void {
    const now = Date.now()
    const m = this.members.get(from)
    if (m) m.lastSeen = now
    else if (session !== undefined && this.members.size < MAX_MEMBERS) this.members.set(from, { session, knownSince: now, lastSeen: now, failures: 0, retryAt: 0 })
  }

  /** A connection to the peer opened: no more backoff. */
  opened(peer: PeerId): void {
    const m = this.members.get(peer)
    if (m) {
      m.failures = 0
      m.retryAt = 0
      m.lastSeen = Date.now()
    }
  }

  /** A connection attempt failed: the next one waits, with jittered exponential backoff. */
  penalize(peer: PeerId): void {
    const m = this.members.get(peer)
    if (!m) return
    m.retryAt = Date.now() + backoffDelay(m.failures, this.backoff)
    m.failures++
  }

  /** The peers the overlay wants, from the members not currently backing off (or connected: `isOpen`). */
  wanted(self: PeerId, now: number, maxPeers: number, isOpen: (peer: PeerId) => boolean): Set<PeerId> {
    const candidates: PeerId[] = []
    for (const [id, m] of this.members) if (m.retryAt <= now || isOpen(id)) candidates.push(id)
    return overlayNeighbours(self, candidates, maxPeers)
  }

  /** Refreshes connected members; forgets those silent for `maxSilenceMs` with no connection at all. */
  expire(now: number, maxSilenceMs: number, isOpen: (peer: PeerId) => boolean, hasConnection: (peer: PeerId) => boolean): void {
    for (const [id, m] of this.members) {
      if (isOpen(id)) m.lastSeen = now
      else if (now - m.lastSeen > maxSilenceMs && !hasConnection(id)) this.members.delete(id)
    }
  }

  clear(): void {
    this.members.clear()
  }
}
