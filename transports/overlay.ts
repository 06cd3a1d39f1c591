/**
 * The bounded overlay of a large room: which members a transport keeps a link with when the room has more members
 * than its `maxPeers` (the WebRTC transport over replica peer ids, the libp2p transport over libp2p PeerIds).
 *
 * Every member sorts the ids it knows (its own included) into a ring and wants its `⌊maxPeers / 2⌋` nearest
 * neighbours on each side: a ring lattice (Harary graph). Each member's wanted degree is at most `maxPeers`, the
 * relation is symmetric when views agree (so both ends of an edge want it), and the graph stays connected even after
 * one member vanishes; messages reach everyone by hops (the sync engine forwards live deltas and anti-entropy repairs
 * the rest). Views that disagree (a member not yet announced, or one suspected dead) shift a few edges, which the
 * transport mends as views converge. A room no larger than `maxPeers + 1` is a full mesh.
 */
import type { PeerId } from './types.js'

/** The peers `self` wants as neighbours among `others` (which must not contain `self`), at most `maxPeers` of them. */
export function overlayNeighbours(self: PeerId, others: Iterable<PeerId>, maxPeers: number): Set<PeerId> {
  const ids = [...new Set(others)].filter((p) => p !== self)
  if (ids.length <= maxPeers) return new Set(ids)
  const ring = [...ids, self].sort(compareIds)
  const n = ring.length
  const i = ring.indexOf(self)
  const k = Math.floor(maxPeers / 2)
  const out = new Set<PeerId>()
  for (let d = 1; d <= k; d++) {
    out.add(ring[(i + d) % n]!)
    out.add(ring[(i - d + n) % n]!)
  }
  return out
}

/** Code-unit order of peer ids (the order every member computes identically). */
export function compareIds(a: PeerId, b: PeerId): number {
  return a < b ? -1 : a > b ? 1 : 0
}
