/**
 * Codecs round-trip exactly: deltas (values compared canonically and structurally — -0, NaN, lone surrogates, byte
 * order marks, Uint8Array, nesting, `__proto__` keys), version vectors, whole store states, and single values carried
 * through a delta.
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import {
  type Delta,
  type RecordDelta,
  RecordStore,
  type Value,
  decodeDelta,
  decodeVersionVector,
  encodeDelta,
  encodeValue,
  encodeVersionVector,
} from '../crdt/index.js'
import { MAX_EXACT_INT } from '../src/testkit/values.js'
import { COLLECTIONS, deltaArb, opBodyArb, opsArb, valueArb, versionVectorArb } from './arbitraries.js'
import { check, propTest } from './helpers.js'
import { applyOp, assertSame, bytesHex, normalizeDelta, registerState, repr, visibleState } from './state.js'

const RUNS = 10_000

/**
 * What a delta should decode to: the codec groups records by collection (in order of first appearance) and keeps
 * record order within a collection; `deleted` only travels with a floor.
 */
function expectedAfterRoundTrip(d: Delta): Delta {
  const groups = new Map<string, RecordDelta[]>()
  for (const rd of d.records) {
    let g = groups.get(rd.collection)
    if (!g) groups.set(rd.collection, (g = []))
    g.push(
      rd.floor
        ? { collection: rd.collection, id: rd.id, floor: rd.floor, deleted: rd.deleted === true, fields: rd.fields }
        : { collection: rd.collection, id: rd.id, fields: rd.fields },
    )
  }
  return { from: d.from, to: d.to, records: [...groups.values()].flat() }
}

/** Version vectors in their map order (the codec keeps it). */
function vvText(vv: ReadonlyMap<string, { wall: number; counter: number; peer: string }>): string {
  return [...vv].map(([k, t]) => `${JSON.stringify(k)}=${t.wall}.${t.counter}.${JSON.stringify(t.peer)}`).join(' ')
}

function singleValueDelta(v: Value | undefined): Delta {
  const ts = { wall: 5, counter: 1, peer: 'p' }
  return { from: new Map(), to: new Map([['p', ts]]), records: [{ collection: 'c', id: 'r', fields: [{ name: 'f', value: v, ts }] }] }
}

describe('codecs round-trip exactly', () => {
  propTest('decodeDelta(encodeDelta(d)) equals d', RUNS, () =>
    fc.property(deltaArb, (d) => {
      const back = decodeDelta(encodeDelta(d))
      assertSame('delta', normalizeDelta(back, false), normalizeDelta(expectedAfterRoundTrip(d), false))
      assertSame('from (in order)', vvText(back.from), vvText(d.from))
      assertSame('to (in order)', vvText(back.to), vvText(d.to))
      // Canonical value bytes agree too (normalizeDelta compares the structural repr).
      const want = expectedAfterRoundTrip(d).records.flatMap((r) => r.fields.map((f) => bytesHex(f.value)))
      const got = back.records.flatMap((r) => r.fields.map((f) => bytesHex(f.value)))
      assertSame('value bytes', got, want)
    }),
  )

  propTest('a value round-trips through a delta (repr and canonical bytes)', RUNS, () =>
    fc.property(fc.oneof(valueArb, fc.constant(undefined)), (v) => {
      const bytes = encodeDelta(singleValueDelta(v))
      const got = decodeDelta(bytes).records[0]?.fields[0]?.value
      assertSame('value', repr(got), repr(v))
      assertSame('value bytes', bytesHex(got), bytesHex(v))
      // encodeValue is deterministic and a re-encoding of the decoded value is byte-identical.
      check(Buffer.from(encodeValue(v)).equals(Buffer.from(encodeValue(got))), () => 'encodeValue differs after the round trip')
      check(Buffer.from(encodeDelta(singleValueDelta(got))).equals(Buffer.from(bytes)), () => 'the delta re-encodes differently')
    }),
  )

  propTest('decodeVersionVector(encodeVersionVector(v)) equals v', RUNS, () =>
    fc.property(versionVectorArb, (vv) => {
      assertSame('version vector', vvText(decodeVersionVector(encodeVersionVector(vv))), vvText(vv))
    }),
  )

  propTest('RecordStore.decodeState(s.encodeState()) has the same digest, visible state and registers', RUNS, () =>
    fc.property(opsArb(16), (ops) => {
      const s = new RecordStore()
      for (const op of ops) applyOp(s, op)
      const bytes = s.encodeState()
      const t = RecordStore.decodeState(bytes)
      assertSame('visible state', JSON.stringify(visibleState(t, COLLECTIONS)), JSON.stringify(visibleState(s, COLLECTIONS)))
      assertSame('registers', registerState(t), registerState(s))
      assertSame('digest', t.digest(), s.digest())
      check(Buffer.from(t.encodeState()).equals(Buffer.from(bytes)), () => 'a decoded state re-encodes differently')
    }),
  )

  // Every string travels as WTF-8; one that starts with U+FEFF (a byte-order mark) must come back with it, in
  // whatever role it plays and at every length (short strings and long ones take different decoder paths).
  propTest('strings starting with U+FEFF round-trip in every role', RUNS, () =>
    fc.property(
      fc.constantFrom('value' as const, 'field' as const, 'collection' as const, 'id' as const, 'peer' as const),
      fc.nat({ max: 200 }),
      fc.constantFrom('x', 'é', '\uD800', '\uFEFF'),
      (role, n, unit) => {
        const s = '\uFEFF' + unit.repeat(n)
        const ts = { wall: 1, counter: 0, peer: role === 'peer' ? s.slice(0, 256) : 'p' }
        const d: Delta = {
          from: new Map(),
          to: new Map([[ts.peer, ts]]),
          records: [
            {
              collection: role === 'collection' ? s : 'c',
              id: role === 'id' ? s : 'r',
              fields: [{ name: role === 'field' ? s : 'f', value: role === 'value' ? s : 0, ts }],
            },
          ],
        }
        const back = decodeDelta(encodeDelta(d))
        const rd = back.records[0]!
        const f = rd.fields[0]!
        const got = { value: f.value, field: f.name, collection: rd.collection, id: rd.id, peer: f.ts.peer }[role]
        const want = role === 'peer' ? ts.peer : s
        check(got === want, () => `${role} ${JSON.stringify(want)} (${want.length} units) came back as ${JSON.stringify(got)}`)
      },
    ),
  )

  // A store must never hold what its own snapshot cannot carry: a local write with an invalid timestamp is either
  // refused (leaving the store unchanged) or, if accepted, the state still round-trips register for register.
  propTest('local writes with invalid timestamps are refused, or the state still round-trips', 2_000, () =>
    fc.property(
      opsArb(4),
      opBodyArb(),
      fc.oneof(
        fc.record({ wall: fc.constantFrom(-1, 0.5, 2 ** 48, MAX_EXACT_INT, NaN, Infinity), counter: fc.constant(0), peer: fc.constant('p') }),
        fc.record({ wall: fc.constant(1), counter: fc.constantFrom(-1, 0.5, 2 ** 32, NaN), peer: fc.constant('p') }),
        fc.record({ wall: fc.constant(1), counter: fc.constant(0), peer: fc.constantFrom('', 'p'.repeat(257)) }),
      ),
      (ops, body, ts) => {
        const s = new RecordStore()
        for (const op of ops) applyOp(s, op)
        const before = registerState(s)
        try {
          applyOp(s, { ...body, ts })
        } catch {
          assertSame('registers after a refused write', registerState(s), before)
          return
        }
        let back: RecordStore
        try {
          back = RecordStore.decodeState(s.encodeState())
        } catch (e) {
          throw new Error(`${body.kind} at invalid timestamp ${JSON.stringify(ts)} was accepted, and the store's own state no longer decodes: ${String(e)}`)
        }
        assertSame(`registers after accepting ${JSON.stringify(ts)}`, registerState(back), registerState(s))
      },
    ),
  )
})
