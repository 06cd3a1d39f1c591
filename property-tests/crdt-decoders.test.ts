/**
 * Decoder robustness of the CRDT core: random bytes and mutated valid encodings (bit flips, truncations, insertions,
 * deletions, overwritten bytes, spliced varints), at most 4 KiB, given to `decodeDelta`, `decodeVersionVector` and
 * `RecordStore.decodeState`, either decode or throw DecodeError — never another error, never a hang. What decodes
 * must also be usable: it re-encodes, and decodes again to the same thing.
 * (The sync protocol's own frame decoders are fuzzed in `decoder-fuzz.test.ts`.)
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import { DecodeError, RecordStore, decodeDelta, decodeVersionVector, encodeDelta, encodeVersionVector } from '../crdt/index.js'
import { deltaArb, opsArb, versionVectorArb } from './arbitraries.js'
import { check, propTest } from './helpers.js'
import { applyOp, assertSame, normalizeDelta, registerState } from './state.js'

const RUNS = 10_000
const MAX_INPUT = 4096
/** Far above the microseconds a decode of 4 KiB takes; only a runaway loop gets near it. */
const SLOW_MS = 500

type Mutation =
  | { readonly t: 'flip'; readonly at: number; readonly bit: number }
  | { readonly t: 'set'; readonly at: number; readonly byte: number }
  | { readonly t: 'truncate'; readonly at: number }
  | { readonly t: 'insert'; readonly at: number; readonly bytes: Uint8Array }
  | { readonly t: 'remove'; readonly at: number; readonly len: number }
  | { readonly t: 'varint'; readonly at: number; readonly big: number }

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ t: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ t: fc.constant('set' as const), at: fc.nat(), byte: fc.constantFrom(0, 1, 3, 10, 0x7f, 0x80, 0xc0, 0xed, 0xef, 0xff) }),
  fc.record({ t: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ t: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ t: fc.constant('remove' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ t: fc.constant('varint' as const), at: fc.nat(), big: fc.constantFrom(2 ** 21, 2 ** 32, 2 ** 48, 2 ** 53 - 1, 1e6) }),
)

function varint(v: number): number[] {
  const out: number[] = []
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80)
    v = Math.floor(v / 0x80)
  }
  out.push(v)
  return out
}

function mutate(input: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let b = Array.from(input)
  for (const m of mutations) {
    const at = b.length === 0 ? 0 : m.at % (b.length + (m.t === 'insert' ? 1 : 0))
    switch (m.t) {
      case 'flip':
        if (b.length) b[at] = b[at]! ^ (1 << m.bit)
        break
      case 'set':
        if (b.length) b[at] = m.byte
        break
      case 'truncate':
        b = b.slice(0, at)
        break
      case 'insert':
        b.splice(at, 0, ...m.bytes)
        break
      case 'remove':
        b.splice(at, m.len)
        break
      case 'varint':
        b.splice(at, 1, ...varint(m.big))
        break
    }
  }
  return Uint8Array.from(b.slice(0, MAX_INPUT))
}

/** Runs a decoder: returns its result, or undefined after a DecodeError; anything else (or slowness) fails. */
function attempt<T>(name: string, bytes: Uint8Array, decode: (b: Uint8Array) => T): T | undefined {
  const start = performance.now()
  try {
    return decode(bytes)
  } catch (e) {
    check(e instanceof DecodeError, () => `${name} threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)} on ${Buffer.from(bytes).toString('hex')}`)
    return undefined
  } finally {
    const ms = performance.now() - start
    check(ms < SLOW_MS, () => `${name} took ${ms.toFixed(0)} ms on ${bytes.length} bytes`)
  }
}

/** Every decoder on the same input; whatever decodes must survive a re-encode/decode cycle unchanged. */
function fuzzAll(bytes: Uint8Array): void {
  const d = attempt('decodeDelta', bytes, decodeDelta)
  if (d) {
    const again = attempt('decodeDelta(encodeDelta(decoded))', encodeDelta(d), decodeDelta)
    check(again !== undefined, () => 'a decoded delta does not survive re-encoding')
    assertSame('re-decoded delta', normalizeDelta(again, false), normalizeDelta(d, false))
  }
  const vv = attempt('decodeVersionVector', bytes, decodeVersionVector)
  if (vv) {
    const again = attempt('decodeVersionVector(encodeVersionVector(decoded))', encodeVersionVector(vv), decodeVersionVector)
    check(again !== undefined, () => 'a decoded version vector does not survive re-encoding')
    assertSame('re-decoded version vector', normalizeDelta({ from: again, to: new Map(), records: [] }, true), normalizeDelta({ from: vv, to: new Map(), records: [] }, true))
  }
  const s = attempt('RecordStore.decodeState', bytes, RecordStore.decodeState)
  if (s) {
    const again = attempt('decodeState(encodeState(decoded))', s.encodeState(), RecordStore.decodeState)
    check(again !== undefined, () => 'a decoded state does not survive re-encoding')
    assertSame('re-decoded state digest', again.digest(), s.digest())
    assertSame('re-decoded state registers', registerState(again), registerState(s))
  }
}

/** Valid encodings to start mutating from: deltas, version vectors and store states. */
const validArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  deltaArb.map(encodeDelta),
  versionVectorArb.map(encodeVersionVector),
  opsArb(10).map((ops) => {
    const s = new RecordStore()
    for (const op of ops) applyOp(s, op)
    return s.encodeState()
  }),
)

describe('CRDT decoders throw nothing but DecodeError and never hang', () => {
  propTest('random bytes', RUNS, () =>
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: MAX_INPUT }),
        // Mostly past the version byte, so that the rest of the decoder is reached.
        fc.uint8Array({ maxLength: 64 }).map((b) => Uint8Array.from([1, ...b])),
        fc.array(fc.constantFrom(0, 1, 2, 0x7f, 0x80, 0xff), { maxLength: 64 }).map((a) => Uint8Array.from([1, ...a])),
      ),
      fuzzAll,
    ),
  )

  propTest('mutated valid encodings', RUNS, () =>
    fc.property(validArb, fc.array(mutationArb, { minLength: 1, maxLength: 6 }), (valid, muts) => {
      fuzzAll(mutate(valid.slice(0, MAX_INPUT), muts))
    }),
  )
})
