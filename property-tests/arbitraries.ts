/**
 * fast-check generators shared by the property suites: values (with every awkward corner the codec must carry),
 * timestamps biased towards collisions, and record-store operations over small pools so that writes collide.
 */
import fc from 'fast-check'
import {
  type Delta,
  type FieldDelta,
  type RecordDelta,
  type Timestamp,
  type Value,
  type VersionVector,
  MAX_COUNTER,
  MAX_PEER_LENGTH,
  MAX_VALUE_DEPTH,
  MAX_WALL,
} from '../crdt/index.js'

/** Largest integer magnitude the value codec writes as an integer (beyond it numbers travel as float64). */
export const MAX_EXACT_INT = 2 ** 52 - 1

// ---------------------------------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------------------------------

/**
 * Code units / sequences that stress string codecs: a byte-order mark, lone and paired surrogates (adjacent lone
 * halves join into pairs), NUL, the UTF-8 length boundaries (1/2/3/4 bytes), U+FFFD, a noncharacter.
 */
export const TRICKY_UNITS: readonly string[] = [
  '\uFEFF',
  '\uD800',
  '\uDBFF',
  '\uDC00',
  '\uDFFF',
  '\uD83D\uDE00',
  '\u0000',
  '\u007F',
  '\u0080',
  '\u07FF',
  '\u0800',
  '\uFFFD',
  '\uFFFF',
  'a',
  'é',
  '€',
  '\u{10FFFF}',
]

/** Strings assembled from {@link TRICKY_UNITS}. */
export function trickyString(maxUnits: number): fc.Arbitrary<string> {
  return fc.array(fc.constantFrom(...TRICKY_UNITS), { maxLength: maxUnits, size: 'max' }).map((a) => a.join(''))
}

/** Strings of at least 1 000 code units (cheap to build: a short tricky prefix and a repeated unit). */
export const longStringArb: fc.Arbitrary<string> = fc.oneof(
  fc
    .tuple(trickyString(6), fc.integer({ min: 1000, max: 2500 }), fc.constantFrom('x', 'é', '\uD800', '\uDC00', '\uD83D\uDE00', '€'))
    .map(([prefix, n, unit]) => prefix + unit.repeat(Math.ceil(n / unit.length))),
  fc.string({ unit: 'binary', minLength: 1000, maxLength: 1100 }),
)

/** Any string, with the interesting ones (empty, lone surrogates, BOM, long) heavily represented. */
export const stringArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 8 }) },
  { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 4 }) },
  { weight: 3, arbitrary: trickyString(40) },
  { weight: 1, arbitrary: fc.constant('') },
  { weight: 1, arbitrary: longStringArb },
)

// ---------------------------------------------------------------------------------------------------------------
// Numbers and values
// ---------------------------------------------------------------------------------------------------------------

/** Numbers: the ±2^52−1 integer boundary and its neighbours, NaN, -0, ±Infinity, 2-decimal floats, any double. */
export const numberArb: fc.Arbitrary<number> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      0,
      -0,
      NaN,
      Infinity,
      -Infinity,
      MAX_EXACT_INT,
      -MAX_EXACT_INT,
      2 ** 52,
      -(2 ** 52),
      Number.MAX_SAFE_INTEGER,
      Number.MIN_SAFE_INTEGER,
      Number.MAX_VALUE,
      Number.MIN_VALUE,
      -Number.MIN_VALUE,
      0.1,
      0.1 + 0.2,
      19.99,
      -0.01,
      1e21,
      1e-7,
    ),
  },
  { weight: 2, arbitrary: fc.integer({ min: -1000, max: 1000 }) },
  { weight: 1, arbitrary: fc.integer({ min: -20, max: 20 }).map((d) => MAX_EXACT_INT + d) },
  { weight: 1, arbitrary: fc.integer({ min: -20, max: 20 }).map((d) => -MAX_EXACT_INT + d) },
  { weight: 1, arbitrary: fc.maxSafeInteger() },
  { weight: 2, arbitrary: fc.integer({ min: -1_000_000, max: 1_000_000 }).map((n) => n / 100) },
  {
    weight: 1,
    arbitrary: fc.tuple(fc.maxSafeInteger(), fc.integer({ min: 1, max: 17 })).map(([m, k]) => m / 10 ** k),
  },
  { weight: 2, arbitrary: fc.double() },
)

/** Uint8Arrays, the empty one included. */
export const bytesArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(null).map(() => new Uint8Array(0)) },
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 24 }) },
)

/** Object keys, including the awkward ones. */
export const objectKeyArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 2, arbitrary: fc.constantFrom('__proto__', '', 'a', 'b', '0', '1', '10', 'constructor', 'id', '\uD800') },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 4 }) },
)

/** Builds a plain object with own enumerable data properties (so that `__proto__` is a key, not the prototype). */
export function buildObject(entries: ReadonlyArray<readonly [string, Value]>): { [key: string]: Value } {
  const out: { [key: string]: Value } = {}
  for (const [k, v] of entries) Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true })
  return out
}

/** Atomic (non-container) values. */
export const atomArb: fc.Arbitrary<Value> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: fc.boolean() },
  { weight: 4, arbitrary: numberArb },
  { weight: 4, arbitrary: stringArb },
  { weight: 2, arbitrary: bytesArb },
)

/** Values nested exactly `depth` containers deep (the limit is {@link MAX_VALUE_DEPTH}). */
export const deepValueArb: fc.Arbitrary<Value> = fc
  .tuple(
    fc.integer({ min: MAX_VALUE_DEPTH - 4, max: MAX_VALUE_DEPTH }),
    fc.oneof(fc.constant(null), numberArb, fc.string({ maxLength: 3 })),
    fc.array(fc.boolean(), { minLength: MAX_VALUE_DEPTH, maxLength: MAX_VALUE_DEPTH }),
  )
  .map(([depth, leaf, kinds]) => {
    let v: Value = leaf
    for (let i = 0; i < depth; i++) v = kinds[i] ? [v] : buildObject([['k', v]])
    return v
  })

/** Nested arrays/objects of atomic values, a few levels deep. */
const nestedArb: fc.Arbitrary<Value> = fc.letrec<{ value: Value; array: Value; object: Value }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    { weight: 3, arbitrary: atomArb },
    { weight: 1, arbitrary: tie('array') },
    { weight: 1, arbitrary: tie('object') },
  ),
  array: fc.array(tie('value'), { maxLength: 4 }),
  object: fc.array(fc.tuple(objectKeyArb, tie('value')), { maxLength: 4 }).map(buildObject),
})).value

/** Any storable value. */
export const valueArb: fc.Arbitrary<Value> = fc.oneof(
  { weight: 6, arbitrary: atomArb },
  { weight: 3, arbitrary: nestedArb },
  { weight: 1, arbitrary: fc.array(nestedArb, { maxLength: 3 }) },
  { weight: 1, arbitrary: fc.array(fc.tuple(objectKeyArb, nestedArb), { maxLength: 3 }).map(buildObject) },
  { weight: 1, arbitrary: deepValueArb },
)

/**
 * Cheaper values for operation-heavy properties: small pools so that equal and different values meet on the same
 * field, plus a sprinkling of every special case.
 */
export const opValueArb: fc.Arbitrary<Value> = fc.oneof(
  { weight: 16, arbitrary: fc.constantFrom<Value>(null, true, false, 0, -0, 1, -1, NaN, Infinity, 1.5, 0.01, '', 'x', 'y', '\uD800', '\uFEFF') },
  { weight: 8, arbitrary: fc.integer({ min: -3, max: 3 }) },
  { weight: 4, arbitrary: fc.constantFrom(MAX_EXACT_INT, -MAX_EXACT_INT, 2 ** 52, -Infinity) },
  { weight: 8, arbitrary: fc.string({ unit: 'binary', maxLength: 3 }) },
  { weight: 4, arbitrary: trickyString(30) },
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 3 }) },
  { weight: 4, arbitrary: fc.constantFrom<Value>([], [1], [[]], { a: 1 }, buildObject([['__proto__', 1]]), buildObject([['', null]])) },
  { weight: 4, arbitrary: fc.array(fc.constantFrom<Value>(0, -0, 'a', null), { maxLength: 3 }) },
  { weight: 1, arbitrary: longStringArb },
)

// ---------------------------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------------------------

/** A small pool of peers (unicode, a lone surrogate, the longest allowed id) so that writes share peers. */
export const PEERS: readonly string[] = ['a', 'b', 'c', 'é', '\u{1F600}', '\uD800', 'p'.repeat(MAX_PEER_LENGTH)]

export const peerArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('a', 'b', 'c') },
  { weight: 1, arbitrary: fc.constantFrom(...PEERS) },
)

/** Any valid peer id (1–256 code units). */
export const anyPeerArb: fc.Arbitrary<string> = fc.oneof(
  peerArb,
  fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }),
  fc.string({ minLength: 1, maxLength: MAX_PEER_LENGTH }),
)

/** Wall times in [0, MAX_WALL], biased to tiny ranges so that ties happen. */
export const wallArb: fc.Arbitrary<number> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 3 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 1000 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, MAX_WALL, MAX_WALL - 1, 2 ** 31, 2 ** 32, 2 ** 47) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: MAX_WALL }) },
)

/** Counters in [0, MAX_COUNTER], biased to tiny values. */
export const counterArb: fc.Arbitrary<number> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 2 }) },
  { weight: 1, arbitrary: fc.constantFrom(MAX_COUNTER, MAX_COUNTER - 1, 2 ** 31) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: MAX_COUNTER }) },
)

export const timestampArb: fc.Arbitrary<Timestamp> = fc.record({ wall: wallArb, counter: counterArb, peer: peerArb })

/** Timestamps over the whole valid range (any valid peer id). */
export const wideTimestampArb: fc.Arbitrary<Timestamp> = fc.record({
  wall: fc.oneof(wallArb, fc.integer({ min: 0, max: MAX_WALL })),
  counter: fc.oneof(counterArb, fc.integer({ min: 0, max: MAX_COUNTER })),
  peer: anyPeerArb,
})

/** A version vector: per peer its newest timestamp. */
export const versionVectorArb: fc.Arbitrary<VersionVector> = fc
  .uniqueArray(wideTimestampArb, { maxLength: 6, selector: (t) => t.peer })
  .map((tss) => new Map(tss.map((t) => [t.peer, t] as const)))

// ---------------------------------------------------------------------------------------------------------------
// Record-store operations
// ---------------------------------------------------------------------------------------------------------------

export const COLLECTIONS: readonly string[] = ['users', 'c\u00e9', '\uD800']
export const IDS: readonly string[] = ['r1', 'r2', '__proto__', '\uDC00x', 'r'.repeat(300)]
/** Field names: a hot pool of four (so writes collide) and a wider pool of 16 (so maps outgrow their linear scan). */
export const HOT_FIELDS: readonly string[] = ['a', 'b', '', '__proto__']
export const FIELDS: readonly string[] = [...HOT_FIELDS, 'c', 'd', 'é', '\uD800', 'constructor', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7']

export const collectionArb = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...COLLECTIONS.slice(0, 2)) }, { weight: 1, arbitrary: fc.constantFrom(...COLLECTIONS) })
export const idArb = fc.oneof({ weight: 4, arbitrary: fc.constantFrom('r1', 'r2') }, { weight: 1, arbitrary: fc.constantFrom(...IDS) })
export const fieldNameArb = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...HOT_FIELDS) }, { weight: 1, arbitrary: fc.constantFrom(...FIELDS) })

/** Fields of a write: `undefined` values mean "remove" in an update and are skipped by a put. */
export type Fields = ReadonlyArray<readonly [name: string, value: Value | undefined]>

export type OpBody =
  | { readonly kind: 'put'; readonly collection: string; readonly id: string; readonly fields: Fields }
  | { readonly kind: 'update'; readonly collection: string; readonly id: string; readonly fields: Fields }
  | { readonly kind: 'delete'; readonly collection: string; readonly id: string }

export type Op = OpBody & { readonly ts: Timestamp }

/** Turns a field list into the object handed to `put`/`update` (later duplicates win, like object literals). */
export function fieldsObject(fields: Fields): object {
  const out: Record<string, Value | undefined> = {}
  for (const [k, v] of fields) Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true })
  return out
}

/** Where operations write: which collections, records and field names. */
export interface OpShape {
  readonly collection: fc.Arbitrary<string>
  readonly id: fc.Arbitrary<string>
  readonly field: fc.Arbitrary<string>
  readonly maxFields: number
}

/** The default shape: small pools, so that operations collide on records and fields. */
export const DEFAULT_SHAPE: OpShape = { collection: collectionArb, id: idArb, field: fieldNameArb, maxFields: 4 }

/**
 * Wide records: one or two records with up to 24 distinct fields, so that records outgrow the map's linear scan
 * (12 registers) and floors drop registers from indexed maps.
 */
export const WIDE_SHAPE: OpShape = {
  collection: fc.constant('users'),
  id: fc.constantFrom('r1', 'r1', 'r2'),
  field: fc.constantFrom(...FIELDS, ...Array.from({ length: 8 }, (_, i) => `w${i}`)),
  maxFields: 10,
}

function fieldsArb(shape: OpShape, removalWeight: number): fc.Arbitrary<Fields> {
  const v = fc.oneof(
    { weight: 8, arbitrary: opValueArb as fc.Arbitrary<Value | undefined> },
    { weight: removalWeight, arbitrary: fc.constant(undefined) },
  )
  return fc.array(fc.tuple(shape.field, v), { maxLength: shape.maxFields })
}

/** One operation without its timestamp. */
export function opBodyArb(shape: OpShape = DEFAULT_SHAPE): fc.Arbitrary<OpBody> {
  const { collection, id } = shape
  return fc.oneof(
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('put' as const), collection, id, fields: fieldsArb(shape, 1) }) },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('update' as const), collection, id, fields: fieldsArb(shape, 3) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), collection, id }) },
  )
}

/**
 * How operations get their timestamps:
 * - `raw`: straight from {@link timestampArb} (collisions happen by chance);
 * - `unique`: the counter is made unique per op (a total order with no ties);
 * - `dup`: some ops reuse an earlier op's exact timestamp (identical-timestamp ties between different writes).
 */
export type TimestampMode = 'raw' | 'unique' | 'dup'

/** A list of timestamped record-store operations. */
export function opsArb(maxOps: number, shape: OpShape = DEFAULT_SHAPE): fc.Arbitrary<Op[]> {
  const raw = fc.record({ body: opBodyArb(shape), ts: timestampArb, dupOf: fc.option(fc.nat(), { freq: 3 }) })
  return fc
    .tuple(fc.array(raw, { minLength: 1, maxLength: maxOps, size: 'medium' }), fc.constantFrom<TimestampMode>('raw', 'unique', 'dup'))
    .map(([items, mode]) => {
      const ops: Op[] = []
      items.forEach((item, i) => {
        let ts = item.ts
        if (mode === 'unique') ts = { wall: ts.wall, counter: Math.min(ts.counter, 1000) * 256 + i, peer: ts.peer }
        else if (mode === 'dup' && i > 0 && item.dupOf !== null) ts = ops[item.dupOf % i]!.ts
        ops.push({ ...item.body, ts })
      })
      return ops
    })
}

/** A random permutation of `0..n-1` driven by `keys` (cheap to generate and shrink). */
export function permutation(n: number, keys: readonly number[]): number[] {
  const idx = Array.from({ length: n }, (_, i) => i)
  return idx.sort((x, y) => (keys[x % Math.max(keys.length, 1)] ?? 0) - (keys[y % Math.max(keys.length, 1)] ?? 0) || x - y)
}

// ---------------------------------------------------------------------------------------------------------------
// Deltas
// ---------------------------------------------------------------------------------------------------------------

const fieldDeltaArb: fc.Arbitrary<FieldDelta> = fc.record({
  name: fc.oneof(fieldNameArb, fc.string({ unit: 'binary', maxLength: 6 }).filter((n) => n !== 'id')),
  value: fc.oneof({ weight: 5, arbitrary: valueArb as fc.Arbitrary<Value | undefined> }, { weight: 1, arbitrary: fc.constant(undefined) }),
  ts: wideTimestampArb,
})

const recordDeltaArb: fc.Arbitrary<RecordDelta> = fc
  .record({
    collection: fc.oneof(collectionArb, fc.string({ unit: 'binary', minLength: 1, maxLength: 6 })),
    id: fc.oneof(idArb, fc.string({ unit: 'binary', minLength: 1, maxLength: 8 }), fc.string({ minLength: 250, maxLength: 300 })),
    floor: fc.option(wideTimestampArb, { freq: 2 }),
    deleted: fc.boolean(),
    fields: fc.array(fieldDeltaArb, { maxLength: 4 }),
  })
  .map(({ collection, id, floor, deleted, fields }) =>
    floor === null ? { collection, id, fields } : { collection, id, floor, deleted, fields },
  )

/** Arbitrary (not necessarily store-produced) deltas, valid for the codec. */
export const deltaArb: fc.Arbitrary<Delta> = fc.record({
  from: versionVectorArb,
  to: versionVectorArb,
  records: fc.array(recordDeltaArb, { maxLength: 6 }),
})
