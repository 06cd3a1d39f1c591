/**
 * fast-check arbitraries of field values: every awkward corner the value codec must carry exactly (NaN, -0,
 * ±Infinity, integers around 2^52, lone surrogates, Uint8Array, nested objects with keys like `__proto__`).
 * The one set of value generators of the project: the property tests build on these too.
 */
import fc from 'fast-check'
import type { Value } from '../../crdt/value.js'

/** Options of {@link arbitraries.value}. */
export interface ValueOptions {
  /**
   * Generate long strings (1 000–3 000 code units) now and then.
   * @default true
   */
  long?: boolean
  /**
   * Deepest nesting of arrays / objects.
   * @default 3
   */
  maxDepth?: number
}

/** Builds a plain object whose keys are own data properties (`__proto__` included); a repeated key keeps its last value. */
export function buildObject<V>(entries: Iterable<readonly [string, V]>): { [key: string]: V } {
  const out: { [key: string]: V } = {}
  for (const [k, v] of entries) Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true })
  return out
}

/** Largest integer magnitude the value codec writes as an integer (beyond it numbers travel as float64). */
export const MAX_EXACT_INT = 2 ** 52 - 1

/** Numbers: the ±2^52−1 integer boundary and its neighbours, NaN, -0, ±Infinity, 2-decimal floats, any double. */
export const numberArb: fc.Arbitrary<number> = fc.oneof(
  {
    weight: 4,
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
      2 ** 64,
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
  { weight: 3, arbitrary: fc.integer({ min: -1000, max: 1000 }) },
  { weight: 1, arbitrary: fc.integer({ min: -20, max: 20 }).map((d) => MAX_EXACT_INT + d) },
  { weight: 1, arbitrary: fc.integer({ min: -20, max: 20 }).map((d) => -MAX_EXACT_INT + d) },
  { weight: 1, arbitrary: fc.maxSafeInteger() },
  { weight: 3, arbitrary: fc.integer({ min: -1_000_000, max: 1_000_000 }).map((n) => n / 100) },
  { weight: 1, arbitrary: fc.tuple(fc.maxSafeInteger(), fc.integer({ min: 1, max: 17 })).map(([m, k]) => m / 10 ** k) },
  { weight: 2, arbitrary: fc.double() },
)

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

/** Strings assembled from up to `maxUnits` {@link TRICKY_UNITS}. */
export function trickyString(maxUnits: number): fc.Arbitrary<string> {
  return fc.array(fc.constantFrom(...TRICKY_UNITS), { maxLength: maxUnits, size: 'max' }).map((a) => a.join(''))
}

/** Strings of 1 000–3 000 code units (cheap to build: a short tricky prefix and a repeated unit, or random units). */
export const longStringArb: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .tuple(trickyString(6), fc.integer({ min: 1000, max: 3000 }), fc.constantFrom('x', 'é', '\uD800', '\uDC00', '\uD83D\uDE00', '€'))
      .map(([prefix, n, unit]) => prefix + unit.repeat(Math.ceil(n / unit.length))),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1000, maxLength: 1100 }) },
)

/** Any string, with the interesting ones (empty, lone surrogates, BOM, `__proto__`, and long ones if `long`) well represented. */
function stringArb(long: boolean): fc.Arbitrary<string> {
  const arbs: fc.WeightedArbitrary<string>[] = [
    { weight: 2, arbitrary: fc.constantFrom('', 'x', 'y', '\uD800', 'a\uDC00b', '\uDBFF\uDFFF', '__proto__', '😀') },
    { weight: 3, arbitrary: fc.string({ maxLength: 8 }) },
    { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 4 }) },
    { weight: 3, arbitrary: trickyString(40) },
  ]
  if (long) arbs.push({ weight: 1, arbitrary: longStringArb })
  return fc.oneof(...arbs)
}

/** Uint8Arrays, the empty one included. */
export const bytesArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(null).map(() => new Uint8Array(0)) },
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 24 }) },
)

/** Object keys, the awkward ones (`__proto__`, `constructor`, '', '0', a lone surrogate…) well represented. */
export const objectKeyArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('__proto__', 'constructor', 'toString', '', 'a', 'b', '0', '1', '10', 'id', '\uD800') },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 4 }) },
)

const valueArbCache = new Map<string, fc.Arbitrary<Value>>()

/** Values with every edge case the codec must carry exactly (built once per options: fast-check's string arbitraries are costly to build). */
export function valueArb(options: ValueOptions = {}): fc.Arbitrary<Value> {
  const long = options.long ?? true
  const maxDepth = options.maxDepth ?? 3
  const key = `${long}/${maxDepth}`
  let arb = valueArbCache.get(key)
  if (!arb) valueArbCache.set(key, (arb = buildValueArb(long, maxDepth)))
  return arb
}

function buildValueArb(long: boolean, maxDepth: number): fc.Arbitrary<Value> {
  const scalar: fc.Arbitrary<Value> = fc.oneof(
    { weight: 1, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.boolean() },
    { weight: 4, arbitrary: numberArb },
    { weight: 4, arbitrary: stringArb(long) },
    { weight: 1, arbitrary: bytesArb },
  )
  if (maxDepth <= 0) return scalar
  const nested = fc.letrec<{ value: Value; array: Value; object: Value }>((tie) => ({
    value: fc.oneof(
      { maxDepth, depthIdentifier: 'syncmesh-value', withCrossShrink: true },
      { weight: 3, arbitrary: scalar },
      { weight: 1, arbitrary: tie('array') },
      { weight: 1, arbitrary: tie('object') },
    ),
    array: fc.array(tie('value'), { maxLength: 4, depthIdentifier: 'syncmesh-value' }),
    object: fc.array(fc.tuple(objectKeyArb, tie('value')), { maxLength: 4, depthIdentifier: 'syncmesh-value' }).map((e) => buildObject(e)),
  })).value
  return fc.oneof({ weight: 8, arbitrary: scalar }, { weight: 2, arbitrary: nested })
}

/** Text to insert: well-formed strings (Yjs sends a lone surrogate as U+FFFD, so a local copy would differ). */
export const textInsertArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 6 }) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom('a', 'é', '😀', '\n', ' ', '€'), { maxLength: 6 }).map((a) => a.join('')) },
)
