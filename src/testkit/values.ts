/**
 * fast-check arbitraries of field values: every awkward corner the value codec must carry exactly (NaN, -0,
 * ±Infinity, integers around 2^52, lone surrogates, Uint8Array, nested objects with keys like `__proto__`).
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

/** Builds a plain object whose keys are own data properties (`__proto__` included). */
export function buildObject<V>(entries: Iterable<readonly [string, V]>): { [key: string]: V } {
  const out: { [key: string]: V } = {}
  for (const [k, v] of entries) Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true })
  return out
}

const numberArb: fc.Arbitrary<number> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      0,
      -0,
      NaN,
      Infinity,
      -Infinity,
      2 ** 52 - 1,
      -(2 ** 52 - 1),
      2 ** 52,
      -(2 ** 52),
      Number.MAX_SAFE_INTEGER,
      Number.MIN_SAFE_INTEGER,
      2 ** 64,
      Number.MAX_VALUE,
      Number.MIN_VALUE,
      -Number.MIN_VALUE,
      0.1 + 0.2,
      19.99,
      -0.01,
      1e21,
      1e-7,
    ),
  },
  { weight: 3, arbitrary: fc.integer({ min: -1000, max: 1000 }) },
  { weight: 1, arbitrary: fc.integer({ min: -3, max: 3 }).map((d) => 2 ** 52 + d) },
  { weight: 1, arbitrary: fc.maxSafeInteger() },
  { weight: 3, arbitrary: fc.integer({ min: -1_000_000, max: 1_000_000 }).map((n) => n / 100) },
  { weight: 1, arbitrary: fc.double() },
)

const trickyUnits = ['\uD800', '\uDBFF', '\uDC00', '\uDFFF', '\uD83D\uDE00', '\uFEFF', '\u0000', '\u007F', '\u0080', '\u07FF', '\u0800', '\uFFFF', 'a', 'é', '€'] as const

function stringArb(long: boolean): fc.Arbitrary<string> {
  const arbs: fc.WeightedArbitrary<string>[] = [
    { weight: 2, arbitrary: fc.constantFrom('', 'x', 'y', '\uD800', 'a\uDC00b', '\uDBFF\uDFFF', '__proto__', '😀') },
    { weight: 3, arbitrary: fc.string({ maxLength: 8 }) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }) },
    { weight: 2, arbitrary: fc.array(fc.constantFrom(...trickyUnits), { maxLength: 12 }).map((a) => a.join('')) },
  ]
  if (long) {
    arbs.push({
      weight: 1,
      arbitrary: fc
        .tuple(fc.integer({ min: 1000, max: 3000 }), fc.constantFrom('x', 'é', '\uD800', '\uDC00', '\uD83D\uDE00'))
        .map(([n, unit]) => unit.repeat(Math.ceil(n / unit.length))),
    })
  }
  return fc.oneof(...arbs)
}

const bytesArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(null).map(() => new Uint8Array(0)) },
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 16 }) },
)

const objectKeyArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('__proto__', 'constructor', 'toString', '', 'a', 'b', '0', 'id', '\uD800') },
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
