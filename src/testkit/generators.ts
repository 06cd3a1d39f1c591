/**
 * fast-check arbitraries of operations (put / update / delete / text edits over small pools, so that writes collide)
 * and of whole schedules mixing them with network and lifecycle events.
 */
import fc from 'fast-check'
import { InvalidArgumentError } from '../../crdt/errors.js'
import type { Value } from '../../crdt/value.js'
import { positiveInt } from './args.js'
import type { Op, PutOp, RecordOp, Step, StepKind, UpdateOp } from './schedule.js'
import { buildObject, textInsertArb, valueArb } from './values.js'

/** Options of {@link arbitraries.op}. */
export interface OpOptions {
  /**
   * Number of replicas (ops pick `replica` in `[0, replicas)`).
   * @default 1
   */
  replicas?: number
  /**
   * Collection names to write to.
   * @default ['todos', 'notes']
   */
  collections?: readonly string[]
  /**
   * Record ids — keep the pool small so that writes collide.
   * @default ['a', 'ab', 'b', '__proto__', '\uD83D', '\uD83D\uDE00']
   */
  ids?: readonly string[]
  /**
   * Field names (never `id`).
   * @default ['title', 'done', 'n', '__proto__', 'constructor', '']
   */
  fields?: readonly string[]
  /**
   * Field values; pass your own for your domain.
   * @default arbitraries.value()
   */
  value?: fc.Arbitrary<Value>
  /**
   * Relative weights of put / update / delete, and of text edits (0 unless `text` is given).
   * @default { put: 3, update: 4, delete: 1, text: 4 with `text` }
   */
  kinds?: { put?: number; update?: number; delete?: number; text?: number }
  /**
   * Text fields to edit (text ops, {@link TextOp}); without it, schedules hold no text edits.
   * @default none
   */
  text?: {
    /** Text field names. */
    fields: readonly string[]
    /**
     * Strings to insert.
     * @default short strings of ASCII, accented letters, emoji (surrogate pairs) and newlines
     */
    insert?: fc.Arbitrary<string>
  }
}

/** Options of {@link arbitraries.schedule}. */
export interface ScheduleOptions extends Omit<OpOptions, 'replicas'> {
  /** Number of replicas the schedule is for. */
  replicas: number
  /**
   * Number of steps: exact, or a range (a range lets fast-check shrink a failing schedule to fewer steps).
   * @default 100
   */
  steps?: number | { min?: number; max: number }
  /** Relative weights of the step kinds (0 disables one); see {@link DEFAULT_STEP_WEIGHTS}. */
  weights?: Partial<Record<StepKind, number>>
  /**
   * The one replica that may lose its storage (`amnesia` steps); `null` for none.
   * @default replicas - 1 (none with a single replica)
   */
  amnesiac?: number | null
}

/** Default relative weights of the step kinds of a schedule (about half the steps are writes). */
export const DEFAULT_STEP_WEIGHTS: Readonly<Record<StepKind, number>> = Object.freeze({
  op: 50,
  deliver: 25,
  deliverAll: 3,
  antiEntropy: 4,
  burst: 2,
  partition: 2,
  heal: 2,
  link: 3,
  restart: 1,
  crash: 1,
  amnesia: 1,
  clock: 1,
})

const DEFAULT_COLLECTIONS = ['todos', 'notes'] as const
const DEFAULT_IDS = ['a', 'ab', 'b', '__proto__', '\uD83D', '\uD83D\uDE00'] as const
const DEFAULT_FIELDS = ['title', 'done', 'n', '__proto__', 'constructor', ''] as const
const ABSENT: unique symbol = Symbol('absent')
const REMOVE: unique symbol = Symbol('remove')

function checkPool(name: string, pool: readonly string[]): readonly string[] {
  if (!Array.isArray(pool) || pool.length === 0) throw new InvalidArgumentError(`testkit: ${name} must be a non-empty array of strings`)
  return pool
}

/** What a put / update / delete is made of, as arbitraries: {@link opArb} draws them from its pools. */
export interface RecordOpParts {
  readonly replica: fc.Arbitrary<number>
  readonly collection: fc.Arbitrary<string>
  readonly id: fc.Arbitrary<string>
  /** The fields of a put. */
  readonly fields: fc.Arbitrary<PutOp['fields']>
  /** The patch of an update (`undefined` removes a field). */
  readonly patch: fc.Arbitrary<UpdateOp['patch']>
}

/** Puts, updates and deletes assembled from `parts`, weighted by `kinds` (a kind of weight 0 is left out). */
export function recordOpArbs(parts: RecordOpParts, kinds: { readonly put: number; readonly update: number; readonly delete: number }): fc.WeightedArbitrary<RecordOp>[] {
  const { replica, collection, id, fields, patch } = parts
  const arbs: fc.WeightedArbitrary<RecordOp>[] = []
  if (kinds.put > 0) arbs.push({ weight: kinds.put, arbitrary: fc.record({ replica, collection, id, fields }).map((o): RecordOp => ({ kind: 'put', ...o })) })
  if (kinds.update > 0) arbs.push({ weight: kinds.update, arbitrary: fc.record({ replica, collection, id, patch }).map((o): RecordOp => ({ kind: 'update', ...o })) })
  if (kinds.delete > 0) arbs.push({ weight: kinds.delete, arbitrary: fc.record({ replica, collection, id }).map((o): RecordOp => ({ kind: 'delete', ...o })) })
  return arbs
}

/** Writes on records picked from small pools. */
export function opArb(options: OpOptions = {}): fc.Arbitrary<Op> {
  const replicas = positiveInt('testkit: replicas', options.replicas ?? 1)
  const collections = checkPool('collections', options.collections ?? DEFAULT_COLLECTIONS)
  const ids = checkPool('ids', options.ids ?? DEFAULT_IDS)
  const fields = checkPool('fields', options.fields ?? DEFAULT_FIELDS)
  if (fields.includes('id')) throw new InvalidArgumentError("testkit: 'id' is not a field name (it is the record's key)")
  const value = options.value ?? valueArb()
  const kinds = { put: 3, update: 4, delete: 1, text: options.text ? 4 : 0, ...options.kinds }
  const replica = fc.nat({ max: replicas - 1 })
  const collection = fc.constantFrom(...collections)
  const id = fc.constantFrom(...ids)
  const putFields = fc
    .tuple(...fields.map(() => fc.oneof({ weight: 1, arbitrary: fc.constant<typeof ABSENT>(ABSENT) }, { weight: 1, arbitrary: value })))
    .map((vals) => buildObject(vals.flatMap((v, i) => (v === ABSENT ? [] : [[fields[i]!, v] as const]))))
  const patch = fc
    .tuple(
      ...fields.map(() =>
        fc.oneof(
          { weight: 3, arbitrary: fc.constant<typeof ABSENT>(ABSENT) },
          { weight: 1, arbitrary: fc.constant<typeof REMOVE>(REMOVE) },
          { weight: 2, arbitrary: value },
        ),
      ),
    )
    .map((vals) => buildObject(vals.flatMap((v, i) => (v === ABSENT ? [] : [[fields[i]!, v === REMOVE ? undefined : v] as const]))))
  const arbs: fc.WeightedArbitrary<Op>[] = recordOpArbs({ replica, collection, id, fields: putFields, patch }, kinds)
  if (kinds.text > 0) {
    if (!options.text) throw new InvalidArgumentError('testkit: text ops need text: { fields }')
    const field = fc.constantFrom(...checkPool('text fields', options.text.fields))
    const insert = options.text.insert ?? textInsertArb
    arbs.push({
      weight: kinds.text,
      arbitrary: fc
        .record({ replica, collection, id, field, index: fc.nat({ max: 64 }), remove: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat({ max: 4 }) }), insert })
        .map((o): Op => ({ kind: 'text', ...o })),
    })
  }
  if (arbs.length === 0) throw new InvalidArgumentError('testkit: at least one of put / update / delete needs a positive weight')
  return fc.oneof(...arbs)
}

/** Schedules mixing writes with network and lifecycle events. */
export function scheduleArb(options: ScheduleOptions): fc.Arbitrary<Step[]> {
  const n = positiveInt('testkit: schedule({ replicas })', options.replicas)
  const steps = options.steps ?? 100
  const [minLength, maxLength] = typeof steps === 'number' ? [steps, steps] : [steps.min ?? 0, steps.max]
  const amnesiac = options.amnesiac === undefined ? (n >= 2 ? n - 1 : null) : options.amnesiac
  if (amnesiac !== null && !(Number.isSafeInteger(amnesiac) && amnesiac >= 0 && amnesiac < n)) {
    throw new InvalidArgumentError(`testkit: amnesiac must be a replica index in [0, ${n}) or null`)
  }
  const w = { ...DEFAULT_STEP_WEIGHTS, ...options.weights }
  const replica = fc.nat({ max: n - 1 })
  const byKind: Record<StepKind, fc.Arbitrary<Step> | undefined> = {
    op: opArb({ ...options, replicas: n }),
    deliver: fc.integer({ min: 1, max: 4 * n }).map((count): Step => ({ kind: 'deliver', count })),
    deliverAll: fc.constant<Step>({ kind: 'deliverAll' }),
    antiEntropy: fc.option(replica, { nil: undefined }).map((r): Step => (r === undefined ? { kind: 'antiEntropy' } : { kind: 'antiEntropy', replica: r })),
    burst: fc
      .record({
        dropRate: fc.constantFrom(0, 0.3, 0.6, 0.9, 1),
        duplicateRate: fc.constantFrom(0, 0.3, 0.6),
        steps: fc.integer({ min: 1, max: 20 }),
      })
      .map((b): Step => ({ kind: 'burst', ...b })),
    partition: n < 2 ? undefined : fc.array(fc.nat({ max: 2 }), { minLength: n, maxLength: n }).map((groups): Step => ({ kind: 'partition', groups })),
    heal: fc.constant<Step>({ kind: 'heal' }),
    link: n < 2 ? undefined : fc.record({ a: replica, b: replica, up: fc.boolean() }).map((l): Step => ({ kind: 'link', ...l })),
    restart: replica.map((r): Step => ({ kind: 'restart', replica: r, crash: false })),
    crash: replica.map((r): Step => ({ kind: 'restart', replica: r, crash: true })),
    amnesia: amnesiac === null ? undefined : fc.constant<Step>({ kind: 'amnesia', replica: amnesiac }),
    clock: fc.record({ replica, ms: fc.integer({ min: -50, max: 50 }) }).map((c): Step => ({ kind: 'clock', ...c })),
  }
  const arbs: fc.WeightedArbitrary<Step>[] = []
  for (const kind of Object.keys(byKind) as StepKind[]) {
    const arbitrary = byKind[kind]
    const weight = w[kind]
    if (arbitrary && weight > 0) arbs.push({ weight, arbitrary })
  }
  if (arbs.length === 0) throw new InvalidArgumentError('testkit: every step kind has weight 0')
  return fc.array(fc.oneof(...arbs), { minLength, maxLength })
}

/** fast-check arbitraries for convergence properties. */
export const arbitraries = {
  /** Field values with the edge cases: NaN, -0, ±Infinity, huge and 2-decimal numbers, '', long strings, lone surrogates, Uint8Array, nested objects with keys like `__proto__`. */
  value: valueArb,
  /** Writes (put / update / delete) on records from small pools, so that writes collide. */
  op: opArb,
  /** Schedules: writes mixed with deliveries, drop / duplicate bursts, partitions, cut links, restarts and crashes, amnesia, clock jumps, anti-entropy. */
  schedule: scheduleArb,
} as const
