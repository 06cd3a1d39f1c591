/**
 * LWWRegister: merge is commutative, associative and idempotent, and always keeps the greatest
 * (timestamp, canonical value bytes) write — so replicas agree even on exact timestamp ties.
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import { LWWRegister, type RegisterState, type Timestamp, type Value, compareTimestamps, encodeValue } from '../crdt/index.js'
import { timestampArb, valueArb } from './arbitraries.js'
import { check, propTest } from './helpers.js'
import { tsRepr, valueKey } from './state.js'

const RUNS = 10_000

type Reg = LWWRegister<Value>
type Write = { value: Value | undefined; ts: Timestamp }

/** A few timestamps shared by the registers of one run, so that exact ties are common. */
const sharedTsArb = fc.array(timestampArb, { minLength: 1, maxLength: 3 })
const writeSpecArb = fc.tuple(
  fc.nat(),
  fc.oneof({ weight: 6, arbitrary: valueArb as fc.Arbitrary<Value | undefined> }, { weight: 1, arbitrary: fc.constant(undefined) }),
)
/** A register: empty, or the result of some writes (a removal arrives as merged state). */
const registerSpecArb = fc.array(writeSpecArb, { maxLength: 3 })

function build(spec: ReadonlyArray<readonly [number, Value | undefined]>, tss: readonly Timestamp[]): { reg: Reg; writes: Write[] } {
  const reg = new LWWRegister<Value>()
  const writes: Write[] = []
  for (const [i, value] of spec) {
    const ts = tss[i % tss.length]!
    writes.push({ value, ts })
    if (value === undefined) reg.merge({ value: undefined, timestamp: ts })
    else reg.set(value, ts)
  }
  return { reg, writes }
}

function key(s: RegisterState<Value>): string {
  return `${tsRepr(s.timestamp)} ${valueKey(s.value)}`
}

function merged(...regs: Reg[]): Reg {
  const out = LWWRegister.from(regs[0]!.state())
  for (const r of regs.slice(1)) out.merge(r)
  return out
}

function cmpBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!
  return a.length - b.length
}

/** The spec's winner: greatest timestamp, then greatest canonical bytes (a removal, tag 10, above every value). */
function winner(writes: readonly Write[]): Write | undefined {
  let best: Write | undefined
  for (const w of writes) {
    if (!best) best = w
    else {
      const c = compareTimestamps(w.ts, best.ts)
      if (c > 0 || (c === 0 && cmpBytes(encodeValue(w.value), encodeValue(best.value)) > 0)) best = w
    }
  }
  return best
}

const threeRegisters = fc.tuple(sharedTsArb, registerSpecArb, registerSpecArb, registerSpecArb)

describe('LWWRegister laws', () => {
  propTest('merge is commutative', RUNS, () =>
    fc.property(threeRegisters, ([tss, sa, sb]) => {
      const a = build(sa, tss).reg
      const b = build(sb, tss).reg
      const ab = key(merged(a, b).state())
      const ba = key(merged(b, a).state())
      check(ab === ba, () => `a∪b = ${ab}\nb∪a = ${ba}`)
    }),
  )

  propTest('merge is associative', RUNS, () =>
    fc.property(threeRegisters, ([tss, sa, sb, sc]) => {
      const a = build(sa, tss).reg
      const b = build(sb, tss).reg
      const c = build(sc, tss).reg
      const left = key(merged(merged(a, b), c).state())
      const right = key(merged(a, merged(b, c)).state())
      check(left === right, () => `(a∪b)∪c = ${left}\na∪(b∪c) = ${right}`)
    }),
  )

  propTest('merge is idempotent', RUNS, () =>
    fc.property(threeRegisters, ([tss, sa, sb]) => {
      const a = build(sa, tss).reg
      const b = build(sb, tss).reg
      const before = key(a.state())
      const aa = merged(a, a)
      check(key(aa.state()) === before, () => `a∪a = ${key(aa.state())}\na = ${before}`)
      check(!LWWRegister.from(a.state()).merge(a), () => 'merging a register into its copy reported a change')
      const ab = merged(a, b)
      const abState = key(ab.state())
      const changed = ab.merge(b)
      check(!changed && key(ab.state()) === abState, () => `(a∪b)∪b = ${key(ab.state())}\na∪b = ${abState}`)
    }),
  )

  propTest('the merged register holds the greatest (timestamp, value bytes) write', RUNS, () =>
    fc.property(threeRegisters, ([tss, sa, sb, sc]) => {
      const ra = build(sa, tss)
      const rb = build(sb, tss)
      const rc = build(sc, tss)
      const all = [...ra.writes, ...rb.writes, ...rc.writes]
      const w = winner(all)
      const got = merged(ra.reg, rb.reg, rc.reg).state()
      const want = w ? key({ value: w.value, timestamp: w.ts }) : key({ value: undefined, timestamp: undefined })
      check(key(got) === want, () => `merged = ${key(got)}\nexpected = ${want}`)
    }),
  )

  propTest('set and merge report exactly whether the register changed', RUNS, () =>
    fc.property(sharedTsArb, registerSpecArb, writeSpecArb, (tss, sa, [i, value]) => {
      const a = build(sa, tss).reg
      const ts = tss[i % tss.length]!
      const before = key(a.state())
      const win = winner([
        ...(a.timestamp ? [{ value: a.value, ts: a.timestamp }] : []),
        { value, ts },
      ])!
      const expected = key({ value: win.value, timestamp: win.ts })
      const changed = value === undefined ? a.merge({ value: undefined, timestamp: ts }) : a.set(value, ts)
      const after = key(a.state())
      check(after === expected, () => `after write = ${after}\nexpected = ${expected}`)
      check(changed === (after !== before), () => `returned ${changed} but state went ${before} → ${after}`)
    }),
  )
})
