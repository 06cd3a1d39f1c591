import { type Timestamp, compareTimestamps } from './timestamp.js'

/**
 * What a replica holds, per origin peer: `vv.get(p) = t` promises that every write issued by `p` with a timestamp
 * `≤ t` is either held or superseded by something held. Sync sends a peer only the writes above its vector.
 */
export type VersionVector = Map<string, Timestamp>

/** True when `ts` is not covered by `vv` (its origin's entry is absent or older). */
export function isNewer(vv: ReadonlyMap<string, Timestamp>, ts: Timestamp): boolean {
  const seen = vv.get(ts.peer)
  return seen === undefined || compareTimestamps(ts, seen) > 0
}

/** Raises `vv`'s entry for `ts.peer` to `ts` if that is newer; returns whether it changed. */
export function advance(vv: VersionVector, ts: Timestamp): boolean {
  if (!isNewer(vv, ts)) return false
  vv.set(ts.peer, ts)
  return true
}

/** Entry-wise maximum of two vectors (a new vector). */
export function mergeVersionVectors(a: ReadonlyMap<string, Timestamp>, b: ReadonlyMap<string, Timestamp>): VersionVector {
  const out: VersionVector = new Map(a)
  for (const ts of b.values()) advance(out, ts)
  return out
}

/** True when `a` covers everything `b` covers (every entry of `b` is ≤ the matching entry of `a`). */
export function covers(a: ReadonlyMap<string, Timestamp>, b: ReadonlyMap<string, Timestamp>): boolean {
  for (const ts of b.values()) if (isNewer(a, ts)) return false
  return true
}

/** The entry-wise minimum of two vectors: an origin missing from either is missing from the result. */
export function minVersionVector(a: ReadonlyMap<string, Timestamp>, b: ReadonlyMap<string, Timestamp>): VersionVector {
  const out: VersionVector = new Map()
  for (const [origin, ts] of a) {
    const other = b.get(origin)
    if (other) out.set(origin, compareTimestamps(ts, other) <= 0 ? ts : other)
  }
  return out
}

/**
 * The claims (`from`/`to`) of a delta answering a peer whose vector is `theirs`: every origin of `ours` it lacks, from
 * its entry to ours. The ceiling's origin is claimed no further than the ceiling (writes of that origin newer than it
 * are not durable yet: after a crash its clock restarts from the ceiling and must not reissue a claimed time).
 */
export function claimsFor(
  ours: ReadonlyMap<string, Timestamp>,
  theirs: ReadonlyMap<string, Timestamp>,
  ceiling: Timestamp | undefined,
): { from: VersionVector; to: VersionVector } {
  const from: VersionVector = new Map()
  const to: VersionVector = new Map()
  for (const [peer, newest] of ours) {
    const ts = ceiling !== undefined && newest.peer === ceiling.peer && compareTimestamps(newest, ceiling) > 0 ? ceiling : newest
    const seen = theirs.get(peer)
    if (ts.wall < 0 || (seen !== undefined && compareTimestamps(ts, seen) <= 0)) continue
    to.set(peer, ts)
    if (seen !== undefined) from.set(peer, seen)
  }
  return { from, to }
}

/**
 * Raises `vv` by a delta's claims: for each origin, to `to`'s entry when `vv` already covers `from`'s (the
 * advancement rule: only over contiguous ranges). Returns whether anything rose.
 */
export function applyClaims(vv: VersionVector, from: ReadonlyMap<string, Timestamp>, to: ReadonlyMap<string, Timestamp>): boolean {
  let advanced = false
  for (const [peer, ts] of to) {
    const needed = from.get(peer)
    const held = vv.get(peer)
    if (needed !== undefined && (held === undefined || compareTimestamps(held, needed) < 0)) continue
    if (advance(vv, ts)) advanced = true
  }
  return advanced
}
