/**
 * RecordStore.apply over deltas is commutative, associative and idempotent: several stores are built from random
 * operations, their full deltas (`changesSince(new Map())`) are applied in different orders, groupings and with
 * duplicates, and every resulting store must have the same digest, the same visible state (value-exact) and the same
 * set of registers and floors (its own full delta, normalised) — and the same version vector.
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import { type Delta, MAX_COUNTER, MAX_WALL, RecordStore } from '../crdt/index.js'
import { COLLECTIONS, type StampedOp, opsArb, permutation } from './arbitraries.js'
import { check, propTest } from './helpers.js'
import { applyOp, assertSame, registerState, visibleState } from './state.js'

const RUNS = 10_000

/** Ops split into 2–4 stores (by a per-op store index). */
const storesArb = fc
  .tuple(opsArb(16), fc.integer({ min: 2, max: 4 }), fc.array(fc.nat(), { minLength: 16, maxLength: 16 }))
  .map(([ops, n, owner]) => {
    const groups: StampedOp[][] = Array.from({ length: n }, () => [])
    ops.forEach((op, i) => groups[(owner[i] ?? 0) % n]!.push(op))
    return groups
  })

function storeFrom(ops: readonly StampedOp[]): RecordStore {
  const s = new RecordStore()
  for (const op of ops) applyOp(s, op)
  return s
}

function fullDelta(s: RecordStore): Delta {
  return s.changesSince(new Map())
}

function applied(deltas: readonly Delta[]): RecordStore {
  const s = new RecordStore()
  for (const d of deltas) s.apply(d)
  return s
}

interface Snapshot {
  digest: string
  visible: string
  registers: string
}

function snapshot(s: RecordStore): Snapshot {
  return { digest: s.digest(), visible: JSON.stringify(visibleState(s, COLLECTIONS)), registers: registerState(s) }
}

function assertSameStore(label: string, a: RecordStore, b: RecordStore): void {
  const x = snapshot(a)
  const y = snapshot(b)
  assertSame(`${label}: visible state`, x.visible, y.visible)
  assertSame(`${label}: registers`, x.registers, y.registers)
  assertSame(`${label}: digest`, x.digest, y.digest)
}

const keysArb = fc.array(fc.nat(), { minLength: 4, maxLength: 4 })

describe('RecordStore.apply laws', () => {
  propTest('apply is commutative (any order of deltas gives the same store)', RUNS, () =>
    fc.property(storesArb, keysArb, keysArb, (groups, k1, k2) => {
      const deltas = groups.map((g) => fullDelta(storeFrom(g)))
      const x = applied(permutation(deltas.length, k1).map((i) => deltas[i]!))
      const y = applied(permutation(deltas.length, k2).map((i) => deltas[i]!))
      assertSameStore('two orders', x, y)
      // Merging stores that hold local writes commutes too: s0 ← d1 versus s1 ← d0.
      const s0 = storeFrom(groups[0]!)
      s0.apply(deltas[1]!)
      const s1 = storeFrom(groups[1]!)
      s1.apply(deltas[0]!)
      assertSameStore('s0←d1 vs s1←d0', s0, s1)
    }),
  )

  propTest('apply is associative (grouping deltas through intermediate stores)', RUNS, () =>
    fc.property(storesArb, (groups) => {
      const deltas = groups.map((g) => fullDelta(storeFrom(g)))
      const [d0, d1, ...rest] = deltas as [Delta, Delta, ...Delta[]]
      // ((d0 · d1) · rest)  versus  (d0 · (d1 · rest))
      const left = applied([fullDelta(applied([d0, d1])), ...rest])
      const right = applied([d0, fullDelta(applied([d1, ...rest]))])
      assertSameStore('(d0·d1)·rest vs d0·(d1·rest)', left, right)
      const flat = applied(deltas)
      assertSameStore('grouped vs flat', left, flat)
    }),
  )

  propTest('apply is idempotent (duplicates and re-applying change nothing)', RUNS, () =>
    fc.property(storesArb, keysArb, (groups, k) => {
      const deltas = groups.map((g) => fullDelta(storeFrom(g)))
      const once = applied(deltas)
      const order = permutation(deltas.length, k)
      const twice = applied([...order, ...order.slice().reverse(), ...order].map((i) => deltas[i]!))
      assertSameStore('once vs with duplicates', once, twice)
      const before = snapshot(once)
      for (const d of deltas) {
        const r = once.apply(d)
        check(r.changed.length === 0 && !r.advanced, () => `re-applying a delta reported ${JSON.stringify(r)}`)
      }
      const self = once.apply(fullDelta(once))
      check(self.changed.length === 0 && !self.advanced, () => `applying a store's own state reported ${JSON.stringify(self)}`)
      const after = snapshot(once)
      assertSame('re-applied: visible', after.visible, before.visible)
      assertSame('re-applied: registers', after.registers, before.registers)
      // A local store and its full delta applied to a fresh store are the same store.
      for (const g of groups) assertSameStore('store vs its full delta', storeFrom(g), applied([fullDelta(storeFrom(g))]))
    }),
  )

  // ApplyResult.changed: "records whose visible content changed (appeared, changed or disappeared)".
  const visibleByRecord = (s: RecordStore): Map<string, string> =>
    new Map(visibleState(s, COLLECTIONS).flatMap(([c, recs]) => recs.map(([id, f]) => [JSON.stringify([c, id]), JSON.stringify(f)] as const)))
  /** Applies each other store's full delta to the first store, one at a time, comparing `changed` with reality. */
  const changeReports = (groups: StampedOp[][]) => {
    const target = storeFrom(groups[0]!)
    return groups.slice(1).map((g) => {
      const before = visibleByRecord(target)
      const reported = new Set(target.apply(fullDelta(storeFrom(g))).changed.map((r) => JSON.stringify([r.collection, r.id])))
      const after = visibleByRecord(target)
      const really = [...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k))
      return { before, after, reported, really }
    })
  }

  propTest('apply reports every record whose visible content changed', RUNS, () =>
    fc.property(storesArb, (groups) => {
      for (const { before, after, reported, really } of changeReports(groups)) {
        const missed = really.filter((k) => !reported.has(k))
        check(missed.length === 0, () => `changed misses ${missed.map((k) => `${k}: ${before.get(k)} → ${after.get(k)}`).join('; ')}`)
      }
    }),
  )

  propTest('apply reports only records whose visible content changed', RUNS, () =>
    fc.property(storesArb, fc.nat(), (groups, pick) => {
      for (const { before, reported, really } of changeReports(groups)) {
        const spurious = [...reported].filter((k) => !really.includes(k))
        check(spurious.length === 0, () => `changed lists unchanged records ${spurious.map((k) => `${k} (stayed ${before.get(k)})`).join('; ')}`)
      }
      // The sharpest case: another replica re-puts a visible record with exactly the content it already has.
      const a = storeFrom(groups[0]!)
      const visible = a.collections().flatMap((c) => a.all(c).map((rec) => ({ c, rec })))
      if (visible.length === 0) return
      const { c, rec } = visible[pick % visible.length]!
      const { id, ...fields } = rec
      const b = new RecordStore()
      b.apply(fullDelta(a))
      b.put(c, id, fields, { wall: MAX_WALL, counter: MAX_COUNTER, peer: '\uFFFF' }) // above every generated timestamp
      const r = a.apply(fullDelta(b))
      const spurious = r.changed.filter((x) => x.collection === c && x.id === id)
      check(spurious.length === 0, () => `re-putting ${JSON.stringify(c)}/${JSON.stringify(id)} with its own content was reported as a change`)
    }),
  )

  propTest('digests are equal exactly when visible states are equal', RUNS, () =>
    fc.property(opsArb(6), opsArb(6), fc.boolean(), (o1, o2, share) => {
      // Sharing a prefix of operations makes equal visible states common.
      const a = storeFrom(share ? [...o1, ...o2.slice(0, 2)] : o1)
      const b = storeFrom(share ? [...o2.slice(0, 2), ...o1] : o2)
      const same = JSON.stringify(visibleState(a, COLLECTIONS)) === JSON.stringify(visibleState(b, COLLECTIONS))
      check((a.digest() === b.digest()) === same, () => `visible states ${same ? 'equal' : 'differ'} but digests ${a.digest()} / ${b.digest()}`)
    }),
  )
})
