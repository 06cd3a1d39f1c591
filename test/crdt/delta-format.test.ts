import { describe, expect, it } from 'vitest'
import { Reader, Writer } from '../../crdt/bytes.js'
import { COUNTER_BIT_LENGTHS, counterRadix, newestInDelta, noteCounter, oneVarintStamp } from '../../crdt/delta.js'
import { type Delta, DecodeError, InvalidArgumentError, MAX_COUNTER, MAX_WALL, RecordStore, type Timestamp, compareTimestamps, decodeDelta, encodeDelta } from '../../crdt/index.js'
import { mulberry32 } from '../prng.js'
import { V1_FIXTURES } from './fixtures/delta-v1.js'

const fromHex = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex, 'hex'))
/** A delta as the fixtures spell it: vectors as their entries in order. */
const plain = (d: Delta): unknown => JSON.parse(JSON.stringify({ from: [...d.from.values()], to: [...d.to.values()], records: d.records }))

describe('delta format version 1 (pinned bytes of the build before format 2)', () => {
  for (const [name, fx] of Object.entries(V1_FIXTURES)) {
    const bytes = fromHex(fx.hex)
    it(`${name}: decodeDelta and newestInDelta read what the old build read`, () => {
      expect(bytes[0]).toBe(1)
      expect(plain(decodeDelta(bytes))).toEqual(fx.decoded)
      expect(newestInDelta(bytes)).toEqual(fx.newest)
    })

    it(`${name}: applyEncoded and decodeState hold what apply of the decoded delta holds`, () => {
      const viaObjects = new RecordStore()
      viaObjects.apply(decodeDelta(bytes))
      const viaBytes = new RecordStore()
      viaBytes.applyEncoded(bytes)
      expect(viaBytes.digest()).toBe(viaObjects.digest())
      expect(viaBytes.versionVector()).toEqual(viaObjects.versionVector())
      expect(plain(viaBytes.changesSince(new Map()))).toEqual(plain(viaObjects.changesSince(new Map())))
      const decoded = RecordStore.decodeState(bytes)
      expect(decoded.digest()).toBe(viaObjects.digest())
      if (fx.digest !== undefined) expect(decoded.digest()).toBe(fx.digest)
      // Re-encoded by this build, it reads back the same.
      expect(plain(decodeDelta(decoded.encodeState()))).toEqual(plain(decodeDelta(viaObjects.encodeState())))
    })
  }

  it('the state fixture re-encoded by this build decodes to the same records and vector', () => {
    const store = RecordStore.decodeState(fromHex(V1_FIXTURES.state.hex))
    expect(plain(decodeDelta(store.encodeState()))).toEqual(V1_FIXTURES.state.decoded)
  })
})

/** The header of a delta: its version, peer table, base wall and (version 2) counter radix. */
function header(bytes: Uint8Array): { version: number; peers: string[]; baseWall: number; radix: number | undefined } {
  const r = new Reader(bytes)
  const version = r.u8()
  const peers: string[] = []
  for (let n = r.uint(); n > 0; n--) peers.push(r.string())
  const baseWall = r.uint()
  return { version, peers, baseWall, radix: version === 2 ? r.uint() : undefined }
}

/** Every record stamp (floors and fields) of a delta. */
function recordStamps(d: Delta): Timestamp[] {
  return d.records.flatMap((rd) => [...(rd.floor ? [rd.floor] : []), ...rd.fields.map((f) => f.ts)])
}

interface Shape {
  /** Walls are `base + [0, span]`, counters `[0, maxCounter]`, peers `p0 … p(peers − 1)`. */
  readonly base: number
  readonly span: number
  readonly maxCounter: number
  readonly peers: number
  readonly ops: number
}

/** A store written by seeded random puts, updates (some removing fields) and deletes at timestamps of `shape`. */
function randomStore(seed: number, shape: Shape): RecordStore {
  const rand = mulberry32(seed)
  const int = (n: number): number => Math.floor(rand() * (n + 1))
  const s = new RecordStore()
  for (let i = 0; i < shape.ops; i++) {
    // Ends of the ranges often: the largest stamp is the one a radix must still carry.
    const wall = shape.base + (rand() < 0.1 ? shape.span : int(shape.span))
    const counter = rand() < 0.1 ? shape.maxCounter : int(shape.maxCounter)
    const ts = { wall, counter, peer: `p${int(shape.peers - 1)}` }
    const collection = rand() < 0.5 ? 'c' : 'd'
    const id = `r${int(20)}`
    const k = rand()
    if (k < 0.3) s.put(collection, id, { a: int(9), b: `v${int(3)}` }, ts)
    else if (k < 0.8) s.update(collection, id, { [`f${int(4)}`]: rand() < 0.2 ? undefined : int(99) }, ts)
    else s.delete(collection, id, ts)
  }
  return s
}

/** Checks that every encoder of `s` writes format 2 that every decoder reads back; returns the state's radix. */
function checkRoundTrips(s: RecordStore, seed: number): number {
  const all = s.changesSince(new Map())
  const state = s.encodeState()
  expect(Buffer.from(state).equals(Buffer.from(encodeDelta(all)))).toBe(true)
  const h = header(state)
  expect(h.version).toBe(2)
  const stamps = recordStamps(all)
  const maxCounter = Math.max(-1, ...stamps.map((t) => t.counter))
  const maxWall = Math.max(0, ...stamps.map((t) => t.wall))
  const counterBits = new Float64Array(COUNTER_BIT_LENGTHS)
  for (const t of stamps) noteCounter(counterBits, t.counter)
  expect(h.radix).toBe(counterRadix(h.baseWall, { maxWall, maxCounter, counterBits }, h.peers.length))
  if (h.radix! > 0) expect(h.radix).toBe(maxCounter + 1) // the largest counter is exactly M − 1
  expect(plain(decodeDelta(state))).toEqual(plain(all))
  const newest = [...stamps, ...all.to.values()].sort(compareTimestamps).at(-1)
  expect(newestInDelta(state)).toEqual(newest)
  const copy = RecordStore.decodeState(state)
  expect(copy.digest()).toBe(s.digest())
  expect(copy.versionVector()).toEqual(s.versionVector())
  // Partial: since a vector covering part of each origin's writes.
  const rand = mulberry32(seed ^ 0x5eed)
  const vv = new Map<string, Timestamp>()
  for (const [peer, t] of s.versionVector()) if (rand() < 0.7) vv.set(peer, { ...t, wall: t.wall - Math.floor(rand() * 50), counter: 0 })
  const since = s.changesSince(vv)
  const sinceBytes = s.encodeChangesSince(vv)
  expect(Buffer.from(sinceBytes).equals(Buffer.from(encodeDelta(since)))).toBe(true)
  expect(plain(decodeDelta(sinceBytes))).toEqual(plain(since))
  // applyEncoded into a store holding part of it (records merged, not copied) and into an empty one.
  const holder = new RecordStore()
  holder.apply(s.changesSince(new Map([...vv].slice(0, 1))))
  const viaObjects = new RecordStore()
  viaObjects.apply(decodeDelta(holder.encodeState()))
  viaObjects.apply(since)
  holder.applyEncoded(sinceBytes)
  expect(holder.digest()).toBe(viaObjects.digest())
  // A sync answer in parts, applied in reverse order.
  const target = new RecordStore()
  const { parts } = s.encodeChangesSinceParts(new Map(), undefined, 600)
  for (const part of parts.reverse()) {
    expect(header(part).version).toBe(2)
    target.applyEncoded(part)
  }
  expect(target.digest()).toBe(s.digest())
  // One origin's writes, as a replica's commit encodes them.
  const origin = [...s.versionVector().keys()][0]!
  const refs = s.collections().flatMap((collection) => s.ids(collection).map((id) => ({ collection, id })))
  const written = new Map(s.collections().map((c) => [c, s.ids(c)]))
  const own = s.encodeChangesOf(origin, undefined, written)
  expect(Buffer.from(own).equals(Buffer.from(encodeDelta(s.changesOf(origin, undefined, refs))))).toBe(true)
  expect(plain(decodeDelta(own))).toEqual(plain(s.changesOf(origin, undefined, refs)))
  return h.radix!
}

describe('delta format version 2', () => {
  const NOW = 1_765_000_000_000
  const shapes: [string, Shape, 'radix' | 'two varints'][] = [
    ['one peer, a burst of writes (the W1 shape)', { base: NOW, span: 120, maxCounter: 700, peers: 1, ops: 300 }, 'radix'],
    ['a few peers, counters 0', { base: NOW, span: 10_000, maxCounter: 0, peers: 4, ops: 200 }, 'radix'],
    ['walls far apart, large counters', { base: 1, span: 2 ** 40, maxCounter: MAX_COUNTER, peers: 3, ops: 200 }, 'two varints'],
    ['a wall near MAX_WALL with a large counter', { base: MAX_WALL - 2 ** 36, span: 2 ** 36, maxCounter: 2 ** 30, peers: 2, ops: 100 }, 'two varints'],
    ['many peers', { base: NOW, span: 2 ** 30, maxCounter: 2 ** 16, peers: 600, ops: 800 }, 'two varints'],
    ['many peers, small stamps', { base: NOW, span: 1000, maxCounter: 50, peers: 600, ops: 800 }, 'radix'],
  ]
  for (const [name, shape, expected] of shapes) {
    it(`random states round-trip through every encoder and decoder: ${name} (${expected})`, () => {
      for (let seed = 1; seed <= 6; seed++) {
        const radix = checkRoundTrips(randomStore(seed, shape), seed)
        expect(radix > 0 ? 'radix' : 'two varints').toBe(expected)
      }
    })
  }

  it('two varints when most counters are far below the radix (a burst among quiet writes), one when they are not', () => {
    const bits = (counters: number[]): Float64Array => {
      const b = new Float64Array(COUNTER_BIT_LENGTHS)
      for (const c of counters) noteCounter(b, c)
      return b
    }
    const burst = [...Array.from({ length: 900 }, () => 0), ...Array.from({ length: 100 }, (_, i) => 1900 + i)]
    expect(counterRadix(0, { maxWall: 10 ** 9, maxCounter: 1999, counterBits: bits(burst) }, 3)).toBe(0)
    expect(counterRadix(0, { maxWall: 10 ** 9, maxCounter: 1999 }, 3)).toBe(2000) // without the counts: the largest + 1
    const spread = Array.from({ length: 1000 }, (_, i) => (i * 7) % 700)
    expect(counterRadix(0, { maxWall: 200, maxCounter: 699, counterBits: bits(spread) }, 1)).toBe(700)
    expect(counterRadix(0, { maxWall: 200, maxCounter: 1, counterBits: bits([0, 1, 1, 0]) }, 3)).toBe(2)
    // Through the encoder: the state of such a store takes no more bytes than format 1 would (within the header's byte).
    const s = new RecordStore()
    for (let i = 0; i < 300; i++) s.put('c', `r${i}`, { a: i }, { wall: NOW + i * 3_600_000, counter: 0, peer: `p${i % 3}` })
    const quiet = s.encodeState()
    expect(header(quiet).radix).toBe(1)
    for (let i = 0; i < 100; i++) s.update('c', `r${i}`, { a: -i }, { wall: NOW + 400 * 3_600_000, counter: 1900 + i, peer: 'p0' })
    const state = s.encodeState()
    expect(header(state).radix).toBe(0)
    expect(plain(decodeDelta(state))).toEqual(plain(s.changesSince(new Map())))
  })

  it('the radix is used exactly while the largest stamp stays below 2^53, and that stamp round-trips', () => {
    // One peer, M = 2^21: walls up to 2^32 − 2 past the base fit (largest stamp 2^53 − 2^21 − 1), 2^32 − 1 does not.
    expect(counterRadix(0, { maxWall: 2 ** 32 - 2, maxCounter: 2 ** 21 - 1 }, 1)).toBe(2 ** 21)
    expect(counterRadix(0, { maxWall: 2 ** 32 - 1, maxCounter: 2 ** 21 - 1 }, 1)).toBe(0)
    expect(counterRadix(5, { maxWall: 5 + 2 ** 32 - 2, maxCounter: 2 ** 21 - 1 }, 2)).toBe(0)
    expect(counterRadix(0, { maxWall: 0, maxCounter: -1 }, 3)).toBe(0)
    // An encoder whose bounds were wrong throws rather than write a stamp that reads back as another.
    expect(oneVarintStamp(3, 4, 1, 5, 2)).toBe((3 * 5 + 4) * 2 + 1)
    expect(() => oneVarintStamp(3, 5, 1, 5, 2)).toThrow(InvalidArgumentError)
    expect(() => oneVarintStamp(2 ** 33, 0, 0, 2 ** 21, 1)).toThrow(InvalidArgumentError)
    expect(() => oneVarintStamp(-1, 0, 0, 2, 1)).toThrow(InvalidArgumentError)
    for (const [maxOffset, radix] of [
      [2 ** 32 - 2, 2 ** 21],
      [2 ** 32 - 1, 0],
    ] as const) {
      const base = 1000
      const top: Timestamp = { wall: base + maxOffset, counter: 2 ** 21 - 1, peer: 'p' }
      const delta: Delta = {
        from: new Map(),
        to: new Map([['p', top]]),
        records: [
          { collection: 'c', id: 'a', floor: { wall: base, counter: 2 ** 21 - 3, peer: 'p' }, deleted: true, fields: [{ name: 'x', value: 1, ts: top }] },
          { collection: 'c', id: 'b', fields: [{ name: 'x', value: undefined, ts: { wall: base + 7, counter: 2 ** 21 - 2, peer: 'p' } }] },
        ],
      }
      const bytes = encodeDelta(delta)
      expect(header(bytes).radix).toBe(radix)
      expect(plain(decodeDelta(bytes))).toEqual(plain(delta))
      expect(newestInDelta(bytes)).toEqual(top)
      const viaObjects = new RecordStore()
      viaObjects.apply(delta)
      expect(RecordStore.decodeState(bytes).digest()).toBe(viaObjects.digest())
      expect(Buffer.from(viaObjects.encodeState()).equals(Buffer.from(bytes))).toBe(true)
    }
  })
})

/** A format-2 delta of one record with one field, written by hand: `stamp` writes the field's timestamp. */
function craft(opts: { peers?: string[]; baseWall?: number; radix: number; stamp: (w: Writer) => void; version?: number }): Uint8Array {
  const w = new Writer(64)
  w.u8(opts.version ?? 2)
  const peers = opts.peers ?? ['p']
  w.uint(peers.length)
  for (const p of peers) w.string(p)
  w.uint(opts.baseWall ?? 1000)
  if ((opts.version ?? 2) === 2) w.uint(opts.radix)
  w.uint(1)
  w.string('f')
  w.uint(0) // from
  w.uint(0) // to
  w.uint(1)
  w.string('c')
  w.uint(1)
  w.uint(0)
  w.string('r')
  w.u8(0) // no floor
  w.uint(1)
  w.uint(0) // name f
  w.u8(1) // value tag: null
  opts.stamp(w)
  return w.finish()
}

/** Every decoder of a delta, each expected to throw DecodeError (and nothing else) on malformed input. */
const decoders: [string, (b: Uint8Array) => unknown][] = [
  ['decodeDelta', decodeDelta],
  ['newestInDelta', newestInDelta],
  ['RecordStore.decodeState', RecordStore.decodeState],
  [
    'applyEncoded into a store holding the record',
    (b) => {
      const s = new RecordStore()
      s.put('c', 'r', { f: 1 }, { wall: 1, counter: 0, peer: 'p' })
      return s.applyEncoded(b)
    },
  ],
]

/** The error each decoder throws on `bytes` (undefined: none). */
function errorsOf(bytes: Uint8Array): unknown[] {
  return decoders.map(([, decode]) => {
    try {
      decode(bytes)
      return undefined
    } catch (e) {
      return e
    }
  })
}

describe('malformed format-2 input is a DecodeError in every decoder', () => {
  it('a well-formed hand-made delta decodes (the cases below differ from it in one place)', () => {
    const ok = craft({ radix: 5, stamp: (w) => w.uint((3 * 5 + 4) * 1 + 0) })
    expect(errorsOf(ok)).toEqual([undefined, undefined, undefined, undefined])
    expect(decodeDelta(ok).records[0]!.fields[0]!.ts).toEqual({ wall: 1003, counter: 4, peer: 'p' })
    // The same stamp in version 1 (no radix, two varints).
    const v1 = craft({ version: 1, radix: 0, stamp: (w) => (w.uint(3), w.uint(4)) })
    expect(decodeDelta(v1).records[0]!.fields[0]!.ts).toEqual({ wall: 1003, counter: 4, peer: 'p' })
  })

  const cases: [string, Uint8Array][] = [
    ['a radix above MAX_COUNTER + 1', craft({ radix: MAX_COUNTER + 2, stamp: (w) => w.uint(1) })],
    ['a huge radix (2^53 − 1)', craft({ radix: Number.MAX_SAFE_INTEGER, stamp: (w) => w.uint(1) })],
    ['a radix that is not a varint of a safe integer', (() => {
      const b = craft({ radix: 1, stamp: (w) => w.uint(0) })
      const h = 1 + 1 + 2 + 2 // version, nPeers, "p", baseWall 1000
      return Uint8Array.from([...b.subarray(0, h), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, ...b.subarray(h + 1)])
    })()],
    ['a wall past MAX_WALL from the one varint', craft({ baseWall: MAX_WALL, radix: 3, stamp: (w) => w.uint(1 * 3 + 2) })],
    ['a wall far past MAX_WALL (largest varint)', craft({ baseWall: MAX_WALL, radix: 1, stamp: (w) => w.uint(Number.MAX_SAFE_INTEGER) })],
    ['a record stamp with an empty peer table', craft({ peers: [], radix: 4, stamp: (w) => w.uint(7) })],
    ['a stamp varint past 2^53 − 1', craft({ radix: 2, stamp: (w) => w.raw(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)) })],
    ['a version-2 delta labelled version 3', craft({ version: 3, radix: 0, stamp: (w) => (w.uint(0), w.uint(0)) })],
  ]
  for (const [name, bytes] of cases) {
    it(name, () => {
      for (const [i, e] of errorsOf(bytes).entries()) {
        expect(e, `${decoders[i]![0]}`).toBeInstanceOf(DecodeError)
      }
    })
  }

  it('every truncation and seeded byte mutations of real format-2 deltas: DecodeError or a valid decode, never another error', () => {
    const inputs = [
      randomStore(7, { base: 1_765_000_000_000, span: 120, maxCounter: 700, peers: 3, ops: 60 }).encodeState(),
      randomStore(8, { base: 1, span: 2 ** 40, maxCounter: MAX_COUNTER, peers: 2, ops: 30 }).encodeState(),
    ]
    const rand = mulberry32(42)
    let rejected = 0
    for (const bytes of inputs) {
      expect(header(bytes).version).toBe(2)
      for (let n = 0; n < bytes.length; n++) {
        for (const e of errorsOf(bytes.subarray(0, n))) expect(e).toBeInstanceOf(DecodeError)
      }
      for (let i = 0; i < 400; i++) {
        const m = bytes.slice()
        for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) m[Math.floor(rand() * m.length)] = Math.floor(rand() * 256)
        for (const e of errorsOf(m)) {
          if (e !== undefined) {
            rejected++
            expect(e).toBeInstanceOf(DecodeError)
          }
        }
      }
    }
    expect(rejected).toBeGreaterThan(100)
  })
})
