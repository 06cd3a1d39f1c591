/**
 * Record-store spec conformance: whatever order operations are applied in — directly, shuffled, or spread over
 * several stores and merged through encoded full deltas — the visible state equals the brute-force reference model
 * (`reference-model.ts`), exact timestamp ties included.
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import { RecordStore, decodeDelta, encodeDelta } from '../crdt/index.js'
import { COLLECTIONS, type StampedOp, WIDE_SHAPE, opsArb, permutation } from './arbitraries.js'
import { propTest } from './helpers.js'
import { referenceState } from './reference-model.js'
import { applyOp, assertSame, visibleState } from './state.js'

const RUNS = 10_000

function storeFrom(ops: readonly StampedOp[]): RecordStore {
  const s = new RecordStore()
  for (const op of ops) applyOp(s, op)
  return s
}

function viaWire(s: RecordStore): Uint8Array {
  return encodeDelta(s.changesSince(new Map()))
}

describe('RecordStore conforms to the reference model', () => {
  propTest('local writes in generated order', RUNS, () =>
    fc.property(opsArb(24), (ops) => {
      const expected = JSON.stringify(referenceState(ops))
      assertSame('store vs model', JSON.stringify(visibleState(storeFrom(ops), COLLECTIONS)), expected)
    }),
  )

  propTest('local writes in any order', RUNS, () =>
    fc.property(opsArb(24), fc.array(fc.nat(), { minLength: 24, maxLength: 24 }), (ops, keys) => {
      const expected = JSON.stringify(referenceState(ops))
      const shuffled = permutation(ops.length, keys).map((i) => ops[i]!)
      assertSame('shuffled store vs model', JSON.stringify(visibleState(storeFrom(shuffled), COLLECTIONS)), expected)
    }),
  )

  propTest('writes spread over stores, merged through encoded deltas in any order and grouping', RUNS, () =>
    fc.property(
      opsArb(24),
      fc.integer({ min: 2, max: 4 }),
      fc.array(fc.nat(), { minLength: 24, maxLength: 24 }),
      fc.array(fc.nat(), { minLength: 4, maxLength: 8 }),
      (ops, n, owner, deliveries) => {
        const expected = JSON.stringify(referenceState(ops))
        const groups: StampedOp[][] = Array.from({ length: n }, () => [])
        ops.forEach((op, i) => groups[(owner[i] ?? 0) % n]!.push(op))
        const stores = groups.map(storeFrom)
        // Gossip: a few random full-state transfers between stores (duplicates and any order) ...
        for (const d of deliveries) {
          const from = stores[d % n]!
          const to = stores[Math.floor(d / n) % n]!
          to.apply(decodeDelta(viaWire(from)))
        }
        // ... then every store's state into a fresh one, last to first.
        const sink = new RecordStore()
        for (let i = n - 1; i >= 0; i--) sink.apply(decodeDelta(viaWire(stores[i]!)))
        assertSame('merged store vs model', JSON.stringify(visibleState(sink, COLLECTIONS)), expected)
        // A chain s0 → s1 → … → s(n-1) → s0 converges every store to the same state.
        for (let i = 1; i < n; i++) stores[i]!.apply(decodeDelta(viaWire(stores[i - 1]!)))
        for (let i = 0; i < n - 1; i++) stores[i]!.apply(decodeDelta(viaWire(stores[n - 1]!)))
        for (const s of stores) {
          assertSame('chained store vs model', JSON.stringify(visibleState(s, COLLECTIONS)), expected)
          assertSame('chained store digest', s.digest(), sink.digest())
        }
      },
    ),
  )

  propTest('wide records (more fields than the linear-scan threshold), any order', 5_000, () =>
    fc.property(opsArb(24, WIDE_SHAPE), fc.array(fc.nat(), { minLength: 24, maxLength: 24 }), (ops, keys) => {
      const expected = JSON.stringify(referenceState(ops))
      assertSame('store vs model', JSON.stringify(visibleState(storeFrom(ops), COLLECTIONS)), expected)
      const shuffled = permutation(ops.length, keys).map((i) => ops[i]!)
      const s = storeFrom(shuffled)
      assertSame('shuffled store vs model', JSON.stringify(visibleState(s, COLLECTIONS)), expected)
      const t = new RecordStore()
      t.apply(decodeDelta(viaWire(s)))
      assertSame('store via wire vs model', JSON.stringify(visibleState(t, COLLECTIONS)), expected)
    }),
  )
})
