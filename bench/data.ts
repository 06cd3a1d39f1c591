/**
 * Deterministic benchmark data: seeded streams (mulberry32), the 10 000 × 5-field records and the random field updates that
 * every workload and every system shares. The same seed always yields the same records and updates.
 */
import { mulberry32 } from '../test/prng.js'

/** The five fields of a benchmark record, in canonical order. */
export const FIELDS = ['title', 'n', 'price', 'done', 'tag'] as const

/** One field name of a benchmark record. */
export type Field = (typeof FIELDS)[number]

/** One benchmark record: two short strings, an int, a 2-decimal float and a bool. */
export interface Rec {
  title: string
  n: number
  price: number
  done: boolean
  tag: string
}

/** A value of any record field. */
export type Value = Rec[Field]

/** A record with its id, as inserted. */
export interface Entry {
  readonly id: string
  readonly rec: Rec
}

/** Sets one field of one record to a new value. */
export interface Update {
  readonly id: string
  readonly field: Field
  readonly value: Value
}

/** A random source returning floats in [0, 1). */
export type Rand = () => number

/** Workload sizes at BENCH_SCALE = 1, as given by the spec. */
const BASE_SIZES = {
  records: 10_000,
  w1Updates: 100_000,
  perOpSample: 1_000,
  w3UpdatesPerReplica: 25_000,
  w4Changes: 100,
  w4Overwrites: 100_000,
}

/** Workload sizes in use. */
export type Sizes = typeof BASE_SIZES

/** Workload sizes scaled by `scale` (BENCH_SCALE), each at least 1. */
export function scaledSizes(scale: number): Sizes {
  const out = { ...BASE_SIZES }
  for (const key of Object.keys(out) as (keyof Sizes)[]) out[key] = Math.max(1, Math.round(BASE_SIZES[key] * scale))
  return out
}

/** An independent deterministic random stream for (`seed`, `stream`), so workloads never share sequences. */
export function rng(seed: number, stream: number): Rand {
  return mulberry32(Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(stream + 1, 0xc2b2ae35))
}

/** Random 32-bit unsigned integer from `rand`. */
export function randomU32(rand: Rand): number {
  return Math.floor(rand() * 4294967296) >>> 0
}

/** The id of record number `i`: `r00000` … `r09999`. */
export function recordId(i: number): string {
  return 'r' + String(i).padStart(5, '0')
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789'

function randomString(rand: Rand, minLen: number, maxLen: number): string {
  const len = minLen + Math.floor(rand() * (maxLen - minLen + 1))
  let s = ''
  for (let i = 0; i < len; i++) s += ALPHABET[Math.floor(rand() * ALPHABET.length)]
  return s
}

/** One random-value generator per field, matching the field's type and range. */
const GENERATORS: { readonly [F in Field]: (rand: Rand) => Rec[F] } = {
  title: (rand) => randomString(rand, 6, 12),
  n: (rand) => Math.floor(rand() * 1_000_001),
  price: (rand) => Math.round(rand() * 1e6) / 100,
  done: (rand) => rand() < 0.5,
  tag: (rand) => randomString(rand, 3, 8),
}

/** `count` fresh records `r00000`…, with random field values. */
export function makeRecords(count: number, rand: Rand): Entry[] {
  const out: Entry[] = []
  for (let i = 0; i < count; i++) {
    const rec: Rec = {
      title: GENERATORS.title(rand),
      n: GENERATORS.n(rand),
      price: GENERATORS.price(rand),
      done: GENERATORS.done(rand),
      tag: GENERATORS.tag(rand),
    }
    out.push({ id: recordId(i), rec })
  }
  return out
}

/** `count` updates, each setting a random field of a random one of `recordCount` records to a new random value. */
export function makeUpdates(count: number, recordCount: number, rand: Rand): Update[] {
  const out: Update[] = []
  for (let i = 0; i < count; i++) {
    const id = recordId(Math.floor(rand() * recordCount))
    const field = FIELDS[Math.floor(rand() * FIELDS.length)] as Field
    out.push({ id, field, value: GENERATORS[field](rand) })
  }
  return out
}
