/**
 * LWWMap: merge is commutative, associative and idempotent over whole states (every register, tombstones
 * included), and `merge` returns exactly the keys whose visible value changed.
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import { LWWMap, type Timestamp, type Value } from '../crdt/index.js'
import { FIELDS, HOT_FIELDS, timestampArb, valueArb } from './arbitraries.js'
import { check, propTest } from './helpers.js'
import { repr, tsRepr, valueKey } from './state.js'

const RUNS = 10_000

type M = LWWMap<Value>

/** Keys: a hot pool (collisions) or, for some maps, a pool of 30 (beyond the map's 12-key linear-scan threshold). */
const WIDE_KEYS = [...FIELDS, ...Array.from({ length: 14 }, (_, i) => `k${i}`)]
const mapOpArb = (keys: readonly string[]) =>
  fc.record({
    key: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...HOT_FIELDS) }, { weight: 2, arbitrary: fc.constantFrom(...keys) }),
    value: fc.oneof({ weight: 5, arbitrary: valueArb as fc.Arbitrary<Value | undefined> }, { weight: 2, arbitrary: fc.constant(undefined) }),
    tsIndex: fc.nat(),
  })
const mapSpecArb = fc.oneof(
  { weight: 3, arbitrary: fc.array(mapOpArb(FIELDS), { maxLength: 6 }) },
  { weight: 1, arbitrary: fc.array(mapOpArb(WIDE_KEYS), { minLength: 10, maxLength: 30 }) },
)
type MapSpec = ReadonlyArray<{ key: string; value: Value | undefined; tsIndex: number }>

const sharedTsArb = fc.array(timestampArb, { minLength: 1, maxLength: 4 })

function build(spec: MapSpec, tss: readonly Timestamp[]): M {
  const m = new LWWMap<Value>()
  for (const { key, value, tsIndex } of spec) {
    const ts = tss[tsIndex % tss.length]!
    if (value === undefined) m.delete(key, ts)
    else m.set(key, value, ts)
  }
  return m
}

/** Every register, sorted by key, values compared by canonical bytes. */
function stateKey(m: M): string {
  const entries = m.state().entries.map(([k, r]) => `${JSON.stringify(k)}=${tsRepr(r.timestamp)} ${valueKey(r.value)}`)
  return entries.sort().join('\n')
}

function copy(m: M): M {
  return LWWMap.from(m.state())
}

function merged(...maps: M[]): M {
  const out = copy(maps[0]!)
  for (const m of maps.slice(1)) out.merge(m)
  return out
}

function visible(m: M, keys: Iterable<string>): Map<string, string> {
  const out = new Map<string, string>()
  for (const k of keys) out.set(k, repr(m.get(k)))
  return out
}

const threeMaps = fc.tuple(sharedTsArb, mapSpecArb, mapSpecArb, mapSpecArb)

describe('LWWMap laws', () => {
  propTest('merge is commutative', RUNS, () =>
    fc.property(threeMaps, ([tss, sa, sb]) => {
      const a = build(sa, tss)
      const b = build(sb, tss)
      const ab = stateKey(merged(a, b))
      const ba = stateKey(merged(b, a))
      check(ab === ba, () => `a∪b:\n${ab}\nb∪a:\n${ba}`)
    }),
  )

  propTest('merge is associative', RUNS, () =>
    fc.property(threeMaps, ([tss, sa, sb, sc]) => {
      const a = build(sa, tss)
      const b = build(sb, tss)
      const c = build(sc, tss)
      const left = stateKey(merged(merged(a, b), c))
      const right = stateKey(merged(a, merged(b, c)))
      check(left === right, () => `(a∪b)∪c:\n${left}\na∪(b∪c):\n${right}`)
    }),
  )

  propTest('merge is idempotent', RUNS, () =>
    fc.property(threeMaps, ([tss, sa, sb]) => {
      const a = build(sa, tss)
      const b = build(sb, tss)
      const before = stateKey(a)
      check(stateKey(copy(a)) === before, () => `LWWMap.from(a.state()) differs from a:\n${stateKey(copy(a))}\n${before}`)
      const aa = copy(a)
      const changed = aa.merge(a)
      check(stateKey(aa) === before && changed.length === 0, () => `a∪a = ${stateKey(aa)} (changed ${JSON.stringify(changed)})\na = ${before}`)
      const ab = merged(a, b)
      const abKey = stateKey(ab)
      const again = ab.merge(b)
      check(stateKey(ab) === abKey && again.length === 0, () => `(a∪b)∪b differs from a∪b (changed ${JSON.stringify(again)})`)
    }),
  )

  propTest('merge returns exactly the keys whose visible value changed', RUNS, () =>
    fc.property(threeMaps, fc.boolean(), ([tss, sa, sb], asState) => {
      const a = build(sa, tss)
      const b = build(sb, tss)
      const keys = new Set([...a.state().entries.map(([k]) => k), ...b.state().entries.map(([k]) => k)])
      const before = visible(a, keys)
      const changed = a.merge(asState ? b.state() : b)
      const after = visible(a, keys)
      const expected = [...keys].filter((k) => before.get(k) !== after.get(k)).sort()
      const got = [...changed].sort()
      check(JSON.stringify(got) === JSON.stringify(expected), () => `merge returned ${JSON.stringify(got)}, visible changes ${JSON.stringify(expected)}`)
      // keys()/has()/toObject() agree with get()
      const obj = a.toObject()
      const vis = [...keys].filter((k) => a.get(k) !== undefined).sort()
      check(JSON.stringify([...a.keys()].sort()) === JSON.stringify(vis), () => 'keys() disagrees with get()')
      check(JSON.stringify(Object.keys(obj).sort()) === JSON.stringify(vis), () => 'toObject() disagrees with get()')
      for (const k of keys) check(a.has(k) === (a.get(k) !== undefined), () => `has(${JSON.stringify(k)}) disagrees with get()`)
    }),
  )
})
