/**
 * What the property suites generate beyond the test kit: timestamps biased towards collisions, version vectors,
 * deltas, and record-store operations with the timestamps they are applied at. Values and the operations themselves
 * come from the test kit (`src/testkit/values.ts`, `src/testkit/generators.ts`): one set of value generators and one
 * `Op` type for the whole project; what is tuned here is only how the property suites weight them.
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
import { recordOpArbs } from '../src/testkit/generators.js'
import { type RecordOp, arbitraries } from '../src/testkit/index.js'
import { MAX_EXACT_INT, buildObject, bytesArb, longStringArb, numberArb, objectKeyArb, trickyString } from '../src/testkit/values.js'

// ---------------------------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------------------------

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

/**
 * Any storable value: the test kit's values, with bytes, containers (arrays and objects of them, a level deeper than
 * the kit nests) and values at the codec's depth limit weighted up, since the codec properties are about them.
 */
export const valueArb: fc.Arbitrary<Value> = fc.oneof(
  { weight: 6, arbitrary: arbitraries.value({ maxDepth: 0 }) },
  { weight: 1, arbitrary: bytesArb },
  { weight: 2, arbitrary: arbitraries.value() },
  { weight: 2, arbitrary: fc.array(arbitraries.value(), { maxLength: 4 }) },
  { weight: 2, arbitrary: fc.array(fc.tuple(objectKeyArb, arbitraries.value()), { maxLength: 4 }).map(buildObject) },
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

/** A test kit write (put / update / delete) with the timestamp a record store applies it at. */
export type StampedOp = RecordOp & { readonly ts: Timestamp }

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

/**
 * The fields of a write: up to `maxFields` names of the shape (a name drawn twice keeps its last value, as in an object
 * literal); `undefined` values mean "remove" in an update and are skipped by a put.
 */
function fieldsArb(shape: OpShape, removalWeight: number): fc.Arbitrary<{ [field: string]: Value | undefined }> {
  const v = fc.oneof(
    { weight: 8, arbitrary: opValueArb as fc.Arbitrary<Value | undefined> },
    { weight: removalWeight, arbitrary: fc.constant(undefined) },
  )
  return fc.array(fc.tuple(shape.field, v), { maxLength: shape.maxFields }).map(buildObject)
}

/** One operation without its timestamp (always by replica 0: the record-store properties have no replicas). */
export function opBodyArb(shape: OpShape = DEFAULT_SHAPE): fc.Arbitrary<RecordOp> {
  const parts = { replica: fc.constant(0), collection: shape.collection, id: shape.id, fields: fieldsArb(shape, 1), patch: fieldsArb(shape, 3) }
  return fc.oneof(...recordOpArbs(parts, { put: 3, update: 4, delete: 2 }))
}

/**
 * How operations get their timestamps:
 * - `raw`: straight from {@link timestampArb} (collisions happen by chance);
 * - `unique`: the counter is made unique per op (a total order with no ties);
 * - `dup`: some ops reuse an earlier op's exact timestamp (identical-timestamp ties between different writes).
 */
export type TimestampMode = 'raw' | 'unique' | 'dup'

/** A list of timestamped record-store operations. */
export function opsArb(maxOps: number, shape: OpShape = DEFAULT_SHAPE): fc.Arbitrary<StampedOp[]> {
  const raw = fc.record({ body: opBodyArb(shape), ts: timestampArb, dupOf: fc.option(fc.nat(), { freq: 3 }) })
  return fc
    .tuple(fc.array(raw, { minLength: 1, maxLength: maxOps, size: 'medium' }), fc.constantFrom<TimestampMode>('raw', 'unique', 'dup'))
    .map(([items, mode]) => {
      const ops: StampedOp[] = []
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
