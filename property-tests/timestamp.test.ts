/**
 * Timestamp codec: the string form round-trips, its plain string order is the timestamp order, and decoding any
 * string either yields a valid timestamp (whose encoding is that very string) or throws DecodeError.
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import {
  DecodeError,
  MAX_COUNTER,
  MAX_PEER_LENGTH,
  MAX_WALL,
  type Timestamp,
  compareTimestamps,
  decodeTimestamp,
  encodeTimestamp,
} from '../crdt/index.js'
import { anyPeerArb, timestampArb, wideTimestampArb } from './arbitraries.js'
import { check, propTest } from './helpers.js'
import { sign, tsRepr } from './state.js'

const RUNS = 10_000

/** Strings that look like encoded timestamps (hex of either case, odd lengths) as well as arbitrary ones. */
const hexDigit = fc.constantFrom(...'0123456789abcdefABCDEF'.split(''), 'g', ' ')
const candidateArb: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc
    .tuple(
      fc.array(hexDigit, { minLength: 18, maxLength: 22 }).map((a) => a.join('')),
      fc.oneof(fc.constant(''), fc.string({ unit: 'binary', maxLength: 6 }), fc.string({ minLength: 250, maxLength: 260 })),
    )
    .map(([h, p]) => h + p),
  wideTimestampArb.map((t) => encodeTimestamp(t)),
  fc.tuple(wideTimestampArb, fc.nat(), fc.string({ unit: 'binary', maxLength: 3 })).map(([t, i, ins]) => {
    const s = encodeTimestamp(t)
    const at = i % (s.length + 1)
    return s.slice(0, at) + ins + s.slice(at + (i % 2))
  }),
)

function valid(t: Timestamp): boolean {
  return (
    Number.isInteger(t.wall) &&
    t.wall >= 0 &&
    t.wall <= MAX_WALL &&
    Number.isInteger(t.counter) &&
    t.counter >= 0 &&
    t.counter <= MAX_COUNTER &&
    typeof t.peer === 'string' &&
    t.peer.length >= 1 &&
    t.peer.length <= MAX_PEER_LENGTH
  )
}

describe('timestamp codec', () => {
  propTest('decodeTimestamp(encodeTimestamp(t)) equals t', RUNS, () =>
    fc.property(wideTimestampArb, (t) => {
      const back = decodeTimestamp(encodeTimestamp(t))
      check(back.wall === t.wall && back.counter === t.counter && back.peer === t.peer, () => `${tsRepr(t)} came back as ${tsRepr(back)}`)
    }),
  )

  propTest('plain string order of encodings equals compareTimestamps', RUNS, () =>
    fc.property(fc.oneof(timestampArb, wideTimestampArb), fc.oneof(timestampArb, wideTimestampArb), (a, b) => {
      const ea = encodeTimestamp(a)
      const eb = encodeTimestamp(b)
      const byString = ea < eb ? -1 : ea > eb ? 1 : 0
      check(byString === compareTimestamps(a, b), () => `${tsRepr(a)} vs ${tsRepr(b)}: strings ${byString}, compareTimestamps ${compareTimestamps(a, b)}`)
    }),
  )

  propTest('compareTimestamps is a total order (antisymmetric, transitive, consistent with field order)', RUNS, () =>
    fc.property(timestampArb, timestampArb, timestampArb, (a, b, c) => {
      check(compareTimestamps(a, b) === -compareTimestamps(b, a), () => 'not antisymmetric')
      check(compareTimestamps(a, a) === 0, () => 'not reflexive')
      if (compareTimestamps(a, b) <= 0 && compareTimestamps(b, c) <= 0) check(compareTimestamps(a, c) <= 0, () => 'not transitive')
      const lex = sign(a.wall - b.wall) || sign(a.counter - b.counter) || (a.peer < b.peer ? -1 : a.peer > b.peer ? 1 : 0)
      check(compareTimestamps(a, b) === lex, () => `compareTimestamps(${tsRepr(a)}, ${tsRepr(b)}) is not (wall, counter, peer) order`)
    }),
  )

  propTest('decodeTimestamp of any string returns a valid timestamp or throws DecodeError', RUNS, () =>
    fc.property(candidateArb, (s) => {
      let t: Timestamp
      try {
        t = decodeTimestamp(s)
      } catch (e) {
        check(e instanceof DecodeError, () => `decodeTimestamp(${JSON.stringify(s)}) threw ${String(e)}`)
        return
      }
      check(valid(t), () => `decodeTimestamp(${JSON.stringify(s)}) returned invalid ${tsRepr(t)}`)
      check(encodeTimestamp(t) === s, () => `decodeTimestamp(${JSON.stringify(s)}) is not canonical: re-encodes as ${JSON.stringify(encodeTimestamp(t))}`)
    }),
  )

  propTest('decodeTimestamp of a non-string throws DecodeError', 1_000, () =>
    fc.property(fc.oneof(fc.anything(), anyPeerArb.map((p) => ({ wall: 1, counter: 1, peer: p }))), (x) => {
      fc.pre(typeof x !== 'string')
      try {
        decodeTimestamp(x as unknown as string)
      } catch (e) {
        check(e instanceof DecodeError, () => `decodeTimestamp(${fc.stringify(x)}) threw ${String(e)}`)
        return
      }
      throw new Error(`decodeTimestamp(${fc.stringify(x)}) accepted a non-string`)
    }),
  )
})
