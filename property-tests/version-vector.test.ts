/**
 * Version vectors: `mergeVersionVectors` is an entry-wise maximum (commutative, associative, idempotent),
 * `covers` is the matching partial order and `isNewer` is "not covered".
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import { type Timestamp, type VersionVector, compareTimestamps, covers, isNewer, mergeVersionVectors } from '../crdt/index.js'
import { timestampArb } from './arbitraries.js'
import { check, propTest } from './helpers.js'
import { tsRepr } from './state.js'

const RUNS = 10_000

/** Vectors over the small peer pool, so that entries meet. */
const vvArb: fc.Arbitrary<VersionVector> = fc
  .uniqueArray(timestampArb, { maxLength: 4, selector: (t) => t.peer })
  .map((tss) => new Map(tss.map((t) => [t.peer, t] as const)))

function text(vv: ReadonlyMap<string, Timestamp>): string {
  return [...vv.entries()].map(([k, t]) => `${JSON.stringify(k)}=${tsRepr(t)}`).sort().join(' ')
}

describe('version vectors', () => {
  propTest('merge is commutative, associative, idempotent, and an entry-wise maximum', RUNS, () =>
    fc.property(vvArb, vvArb, vvArb, (a, b, c) => {
      const ab = mergeVersionVectors(a, b)
      check(text(ab) === text(mergeVersionVectors(b, a)), () => 'not commutative')
      check(text(mergeVersionVectors(ab, c)) === text(mergeVersionVectors(a, mergeVersionVectors(b, c))), () => 'not associative')
      check(text(mergeVersionVectors(a, a)) === text(a), () => 'not idempotent')
      for (const peer of new Set([...a.keys(), ...b.keys()])) {
        const x = a.get(peer)
        const y = b.get(peer)
        const want = x && y ? (compareTimestamps(x, y) >= 0 ? x : y) : (x ?? y)!
        check(tsRepr(ab.get(peer)) === tsRepr(want), () => `entry ${peer}: ${tsRepr(ab.get(peer))}, expected ${tsRepr(want)}`)
      }
      check(ab.size === new Set([...a.keys(), ...b.keys()]).size, () => 'merge invented or lost peers')
    }),
  )

  propTest('covers is the order of merge; isNewer means not covered', RUNS, () =>
    fc.property(vvArb, vvArb, timestampArb, (a, b, ts) => {
      const ab = mergeVersionVectors(a, b)
      check(covers(ab, a) && covers(ab, b) && covers(a, a), () => 'merge does not cover its inputs')
      check(covers(a, b) === (text(mergeVersionVectors(a, b)) === text(a)), () => 'covers(a, b) disagrees with a ∪ b = a')
      check(isNewer(a, ts) === !covers(a, new Map([[ts.peer, ts]])), () => `isNewer(a, ${tsRepr(ts)}) disagrees with covers`)
      const seen = a.get(ts.peer)
      check(isNewer(a, ts) === (seen === undefined || compareTimestamps(ts, seen) > 0), () => `isNewer(a, ${tsRepr(ts)})`)
    }),
  )
})
