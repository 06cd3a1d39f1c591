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
