/**
 * `syncmesh/testkit` — prove that your use of syncmesh converges.
 *
 * - {@link arbitraries}: fast-check generators for values (every awkward corner the codec must carry), operations
 *   (put / update / delete over small pools so that writes collide, and with `text: { fields }` edits of
 *   collaborative text fields) and whole schedules mixing operations with network
 *   events (delivery, drop and duplicate bursts, partitions, cut links, restarts, one amnesiac replica, anti-entropy).
 * - {@link runSchedule}: runs a schedule over N real replicas on a manual, seeded {@link MemoryNetwork} with an
 *   injected clock — fully deterministic — then drives the system to quiescence.
 * - {@link assertConverged}: compares the replicas' visible states (text fields' content included) and digests; on failure it throws a
 *   {@link ConvergenceError} with a readable per-field diff and the replay line.
 * - {@link runConvergenceProperty}: all of the above as one seeded, replayable property (one line in your tests).
 *
 * ```ts
 * import { runConvergenceProperty } from 'syncmesh/testkit'
 * it('converges', () => runConvergenceProperty({ replicas: { min: 2, max: 5 }, steps: 200, numRuns: 50 }))
 * ```
 */
import fc from 'fast-check'
import { SyncmeshError } from '../../crdt/errors.js'
import type { StoredRecord } from '../../crdt/record-store.js'
import { type Value, valuesEqual } from '../../crdt/value.js'
import { type MemoryFaults, type MemoryTransport, MemoryNetwork } from '../../transports/memory.js'
import { StorageClosedError } from '../errors.js'
import { type Replica, type ReplicaInit, ReplicaImpl, createReplica } from '../replica.js'
import { MemoryStorage } from '../storage/memory.js'
import type { Storage } from '../storage/types.js'

/** The replica type runs return, and the value type of fields (re-exported for typing your own arbitraries). */
export type { Replica } from '../replica.js'
export type { Value } from '../../crdt/value.js'
/** The Transport conformance suite: run `transportConformanceCases(harness)` against your own transport. */
export {
  transportConformanceCases,
  TransportConformanceError,
  type ConformanceCase,
  type TransportConformanceOptions,
  type TransportHarness,
} from './transport-suite.js'
export { storageConformanceCases, StorageConformanceError, type StorageHarness, type StorageConformanceOptions } from './storage-suite.js'

// =====================================================================================================================
// Types

/** Replaces a record (fields absent from `fields` are removed). */
export interface PutOp {
  readonly kind: 'put'
  /** Index of the replica that writes. */
  readonly replica: number
  readonly collection: string
  readonly id: string
  readonly fields: { readonly [field: string]: Value }
}

/** Sets some fields of a record (`undefined` removes a field). */
export interface UpdateOp {
  readonly kind: 'update'
  /** Index of the replica that writes. */
  readonly replica: number
  readonly collection: string
  readonly id: string
  readonly patch: { readonly [field: string]: Value | undefined }
}

/** Deletes a record. */
export interface DeleteOp {
  readonly kind: 'delete'
  /** Index of the replica that writes. */
  readonly replica: number
  readonly collection: string
  readonly id: string
}

/**
 * Edits a collaborative text field (runs need text support: see {@link RunScheduleOptions.text}): at position
 * `index % (length + 1)` removes up to `remove` characters, then inserts `insert`. Text ops make the run load yjs.
 */
export interface TextOp {
  readonly kind: 'text'
  /** Index of the replica that edits. */
  readonly replica: number
  readonly collection: string
  readonly id: string
  readonly field: string
  readonly index: number
  readonly remove: number
  readonly insert: string
}

/** One local write on one replica. Consecutive ops in a schedule are issued in the same tick (so they coalesce). */
export type Op = PutOp | UpdateOp | DeleteOp | TextOp

/** A network or lifecycle event of a schedule. */
export type NetworkStep =
  /** Delivers up to `count` queued items (peer events first, then frames; reordered when the faults say so). */
  | { readonly kind: 'deliver'; readonly count: number }
  /** Delivers until nothing is queued. */
  | { readonly kind: 'deliverAll' }
  /** Sets drop / duplicate rates for the next `steps` steps, then restores the run's baseline faults. */
  | { readonly kind: 'burst'; readonly dropRate: number; readonly duplicateRate: number; readonly steps: number }
  /** Splits the replicas into groups (`groups[i]` is replica i's group); links between groups are cut. Replaces an earlier partition. */
  | { readonly kind: 'partition'; readonly groups: readonly number[] }
  /** Ends the partition and restores every cut link (topology links stay as the topology says). */
  | { readonly kind: 'heal' }
  /** Cuts (`up: false`) or restores the link between two replicas; ignored for pairs outside the topology. */
  | { readonly kind: 'link'; readonly a: number; readonly b: number; readonly up: boolean }
  /**
   * Stops a replica and reopens it from its storage with the same peer id. `crash` is a kill -9: writes still in
   * flight never become durable (their frames may already be on the wire), received deltas not yet saved are lost.
   */
  | { readonly kind: 'restart'; readonly replica: number; readonly crash: boolean }
  /** Moves one replica's physical clock by `ms` (negative: backwards) for the rest of the run. */
  | { readonly kind: 'clock'; readonly replica: number; readonly ms: number }
  /** Stops a replica and reopens it with EMPTY storage and the same peer id. */
  | { readonly kind: 'amnesia'; readonly replica: number }
  /** One anti-entropy round on one replica, or on every replica when `replica` is absent. */
  | { readonly kind: 'antiEntropy'; readonly replica?: number }

/** One step of a schedule. */
export type Step = Op | NetworkStep

/** The kinds of step a schedule mixes (keys of {@link ScheduleOptions.weights}; `restart` is graceful, `crash` is a restart with `crash: true`). */
export type StepKind = 'op' | NetworkStep['kind'] | 'crash'

/** Which links exist: every pair (`mesh`), a chain r0–r1–…, a ring, or a star around r0. */
export type Topology = 'mesh' | 'line' | 'ring' | 'star'

/** Baseline fault knobs of a run. */
export interface Faults {
  /**
   * Probability that a frame is lost.
   * @default 0.1
   */
  dropRate?: number
  /**
   * Probability that a frame is delivered twice.
   * @default 0.1
   */
  duplicateRate?: number
  /**
   * Reordering of frames (see {@link MemoryFaults.reorder}).
   * @default true
   */
  reorder?: boolean | number
}

/** The faults a run uses unless told otherwise: 10 % drop, 10 % duplication, reordering. */
export const DEFAULT_FAULTS: Readonly<Required<Faults>> = Object.freeze({ dropRate: 0.1, duplicateRate: 0.1, reorder: true })

// =====================================================================================================================
// Arbitraries

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

/** Builds a plain object whose keys are own data properties (`__proto__` included). */
function buildObject<V>(entries: Iterable<readonly [string, V]>): { [key: string]: V } {
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
function valueArb(options: ValueOptions = {}): fc.Arbitrary<Value> {
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
const textInsertArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 6 }) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom('a', 'é', '😀', '\n', ' ', '€'), { maxLength: 6 }).map((a) => a.join('')) },
)

function checkPool(name: string, pool: readonly string[]): readonly string[] {
  if (!Array.isArray(pool) || pool.length === 0) throw new TypeError(`testkit: ${name} must be a non-empty array of strings`)
  return pool
}

/** Writes on records picked from small pools. */
function opArb(options: OpOptions = {}): fc.Arbitrary<Op> {
  const replicas = options.replicas ?? 1
  if (!Number.isSafeInteger(replicas) || replicas < 1) throw new TypeError('testkit: replicas must be a positive integer')
  const collections = checkPool('collections', options.collections ?? DEFAULT_COLLECTIONS)
  const ids = checkPool('ids', options.ids ?? DEFAULT_IDS)
  const fields = checkPool('fields', options.fields ?? DEFAULT_FIELDS)
  if (fields.includes('id')) throw new TypeError("testkit: 'id' is not a field name (it is the record's key)")
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
  const arbs: fc.WeightedArbitrary<Op>[] = []
  if (kinds.put > 0) {
    arbs.push({
      weight: kinds.put,
      arbitrary: fc.record({ replica, collection, id, fields: putFields }).map((o): Op => ({ kind: 'put', ...o })),
    })
  }
  if (kinds.update > 0) {
    arbs.push({
      weight: kinds.update,
      arbitrary: fc.record({ replica, collection, id, patch }).map((o): Op => ({ kind: 'update', ...o })),
    })
  }
  if (kinds.delete > 0) {
    arbs.push({
      weight: kinds.delete,
      arbitrary: fc.record({ replica, collection, id }).map((o): Op => ({ kind: 'delete', ...o })),
    })
  }
  if (kinds.text > 0) {
    if (!options.text) throw new TypeError('testkit: text ops need text: { fields }')
    const field = fc.constantFrom(...checkPool('text fields', options.text.fields))
    const insert = options.text.insert ?? textInsertArb
    arbs.push({
      weight: kinds.text,
      arbitrary: fc
        .record({ replica, collection, id, field, index: fc.nat({ max: 64 }), remove: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat({ max: 4 }) }), insert })
        .map((o): Op => ({ kind: 'text', ...o })),
    })
  }
  if (arbs.length === 0) throw new TypeError('testkit: at least one of put / update / delete needs a positive weight')
  return fc.oneof(...arbs)
}

/** Schedules mixing writes with network and lifecycle events. */
function scheduleArb(options: ScheduleOptions): fc.Arbitrary<Step[]> {
  const n = options.replicas
  if (!Number.isSafeInteger(n) || n < 1) throw new TypeError('testkit: schedule({ replicas }) must be a positive integer')
  const steps = options.steps ?? 100
  const [minLength, maxLength] = typeof steps === 'number' ? [steps, steps] : [steps.min ?? 0, steps.max]
  const amnesiac = options.amnesiac === undefined ? (n >= 2 ? n - 1 : null) : options.amnesiac
  if (amnesiac !== null && !(Number.isSafeInteger(amnesiac) && amnesiac >= 0 && amnesiac < n)) {
    throw new TypeError(`testkit: amnesiac must be a replica index in [0, ${n}) or null`)
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
  if (arbs.length === 0) throw new TypeError('testkit: every step kind has weight 0')
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

// =====================================================================================================================
// Running a schedule

/** The simulated clock of a run. */
export interface SimClockOptions {
  /**
   * Physical time at the start of the run (ms since the epoch).
   * @default 1_700_000_000_000
   */
  startMs?: number
  /**
   * How far the clock advances per step.
   * @default 1
   */
  stepMs?: number
  /**
   * Per-replica offsets of the physical clock at the start (ms; `clock` steps move them; keep them well below the
   * replicas' `maxDriftMs`).
   * @default none
   */
  skewMs?: readonly number[]
}

/** Options of {@link runSchedule}. */
export interface RunScheduleOptions {
  /** Number of replicas (peer ids `r0` … `r{n-1}`). */
  replicas: number
  /**
   * Seed of the network's fault decisions.
   * @default 0
   */
  seed?: number
  /** Baseline faults while the schedule runs (all faults are off during quiescence); see {@link DEFAULT_FAULTS}. */
  faults?: Faults
  /**
   * Links that exist; the others are cut for the whole run.
   * @default 'mesh'
   */
  topology?: Topology
  /** The deterministic clock. */
  clock?: SimClockOptions
  /**
   * Largest frame of the simulated network (small values exercise chunking).
   * @default 65536
   */
  maxFrameSize?: number
  /** Extra replica options (e.g. `compactAfterEntries`, `maxMessageBytes`). */
  replica?: Pick<ReplicaInit, 'compactAfterEntries' | 'maxMessageBytes' | 'room' | 'app'> & { maxDriftMs?: number }
  /**
   * Most anti-entropy rounds to reach quiescence before {@link NotQuiescentError}.
   * @default 50
   */
  maxRounds?: number
  /**
   * Most deliveries one `deliverAll` may take before the run is declared a ping-pong ({@link NotQuiescentError}).
   * @default 1_000_000
   */
  maxDeliveries?: number
  /** Called with each replica as it opens (again after every restart), and the run's network: attach listeners, count events. */
  onReplica?: (replica: Replica, index: number, network: MemoryNetwork) => void
  /**
   * Open the replicas with text support (`yjsText()`, which loads yjs).
   * @default whether the schedule holds text ops
   */
  text?: boolean
}

/** An error a replica or the network reported during a run. */
export interface RunError {
  /** Index of the replica (-1 for network listener errors). */
  readonly replica: number
  /** Index of the step being run (the schedule length during quiescence). */
  readonly step: number
  readonly error: unknown
}

/** What {@link runSchedule} returns. */
export interface RunResult {
  /** The replicas, open and quiescent, index i = peer id `r{i}`. */
  readonly replicas: Replica[]
  /** The network (manual mode; faults off). */
  readonly network: MemoryNetwork
  /** One line per step and per quiescence round; equal for equal seeds and schedules. */
  readonly trace: string[]
  /** Errors reported by replicas (`error` events, failed writes) or by network listeners; empty in a healthy run. */
  readonly errors: RunError[]
  /** Anti-entropy rounds quiescence took. */
  readonly rounds: number
  /** Closes every replica. */
  close(): Promise<void>
}

/** The system did not become quiescent: a round still changed state after `maxRounds`, or frames ping-ponged forever. */
export class NotQuiescentError extends SyncmeshError {
  override readonly code = 'NOT_QUIESCENT'
}

/** What a text op needs of a text field (a Y.Text has it). */
interface EditableText {
  readonly length: number
  insert(index: number, text: string): void
  delete(index: number, length: number): void
}

/** Applies a {@link TextOp} to a text field. */
function editText(t: EditableText, op: TextOp): void {
  const at = op.index % (t.length + 1)
  const remove = Math.min(op.remove, t.length - at)
  if (remove > 0) t.delete(at, remove)
  if (op.insert.length > 0) t.insert(at, op.insert)
}

/** Resolves on the next macrotask (setImmediate in Node, setTimeout elsewhere). */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => (typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0)))
}

/** A durable disk: outlives the replica that uses it; each incarnation gets its own handle. */
class SimDisk {
  readonly backing = new MemoryStorage()

  /** A storage handle for one incarnation; `cut()` makes every later call fail (a crash). */
  open(): Storage & { cut(): void } {
    const backing = this.backing
    let closed = false
    const check = (): void => {
      if (closed) throw new StorageClosedError('storage handle is closed (the replica crashed or closed)')
    }
    return {
      async load(key) {
        check()
        return backing.load(key)
      },
      async save(key, data) {
        check()
        return backing.save(key, data)
      },
      async remove(key) {
        check()
        return backing.remove(key)
      },
      async loadRange(prefix) {
        check()
        return backing.loadRange(prefix)
      },
      async close() {
        closed = true
      },
      cut() {
        closed = true
      },
    }
  }
}

interface Slot {
  replica: ReplicaImpl
  transport: MemoryTransport
  handle: Storage & { cut(): void }
  off: () => void
}

function inTopology(topology: Topology, n: number, i: number, j: number): boolean {
  const [a, b] = i < j ? [i, j] : [j, i]
  switch (topology) {
    case 'mesh':
      return true
    case 'line':
      return b === a + 1
    case 'ring':
      return b === a + 1 || (a === 0 && b === n - 1)
    case 'star':
      return a === 0
  }
}

/** Short, exact, readable form of a value (NaN, -0, ±Infinity, Uint8Array and lone surrogates shown as such). */
export function formatValue(v: Value | undefined, maxString = 40): string {
  if (v === undefined) return '<absent>'
  if (v === null) return 'null'
  switch (typeof v) {
    case 'number':
      return Object.is(v, -0) ? '-0' : String(v)
    case 'boolean':
      return String(v)
    case 'string': {
      const s = JSON.stringify(v)
      if (s.length <= maxString + 2) return s
      // Cut without splitting an escape; the length and a hash keep different long strings apart.
      const head = s.slice(0, maxString + 1).replace(/\\(u[0-9a-fA-F]{0,3})?$/, '')
      return `${head}…" (${v.length} code units, #${fnv1a(v)})`
    }
  }
  if (v instanceof Uint8Array) {
    const hex = Array.from(v.subarray(0, 16), (b) => b.toString(16).padStart(2, '0')).join(' ')
    return `Uint8Array(${v.length})[${hex}${v.length > 16 ? ' …' : ''}]`
  }
  if (Array.isArray(v)) return `[${(v as readonly Value[]).map((x) => formatValue(x, maxString)).join(', ')}]`
  const obj = v as { readonly [key: string]: Value }
  return `{${Object.keys(obj)
    .map((k) => `${/^[A-Za-z_$][\w$]*$/.test(k) && k !== '__proto__' ? k : JSON.stringify(k)}: ${formatValue(obj[k], maxString)}`)
    .join(', ')}}`
}

/** 32-bit FNV-1a over UTF-16 code units, as 8 hex digits. */
function fnv1a(s: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0
  return h.toString(16).padStart(8, '0')
}

function formatFields(fields: { readonly [k: string]: Value | undefined }): string {
  return `{${Object.keys(fields)
    .map((k) => `${JSON.stringify(k)}: ${formatValue(fields[k], 12)}`)
    .join(', ')}}`
}

function describeStep(step: Step): string {
  switch (step.kind) {
    case 'put':
      return `r${step.replica} put ${step.collection}/${JSON.stringify(step.id)} ${formatFields(step.fields)}`
    case 'update':
      return `r${step.replica} update ${step.collection}/${JSON.stringify(step.id)} ${formatFields(step.patch)}`
    case 'delete':
      return `r${step.replica} delete ${step.collection}/${JSON.stringify(step.id)}`
    case 'text':
      return `r${step.replica} text ${step.collection}/${JSON.stringify(step.id)}.${JSON.stringify(step.field)} @${step.index} -${step.remove} +${formatValue(step.insert, 12)}`
    case 'deliver':
      return `deliver ${step.count}`
    case 'deliverAll':
      return 'deliverAll'
    case 'burst':
      return `burst drop=${step.dropRate} dup=${step.duplicateRate} for ${step.steps} steps`
    case 'partition':
      return `partition [${step.groups.join(',')}]`
    case 'heal':
      return 'heal'
    case 'link':
      return `link r${step.a}-r${step.b} ${step.up ? 'up' : 'cut'}`
    case 'restart':
      return `${step.crash ? 'crash' : 'restart'} r${step.replica}`
    case 'amnesia':
      return `amnesia r${step.replica}`
    case 'antiEntropy':
      return step.replica === undefined ? 'antiEntropy all' : `antiEntropy r${step.replica}`
    case 'clock':
      return `clock r${step.replica} ${step.ms >= 0 ? '+' : ''}${step.ms} ms`
  }
}

function vvString(replica: ReplicaImpl, text = false): string {
  return [...(text ? replica.text!.versionVector() : replica.store.versionVector()).values()]
    .map((ts) => `${ts.peer}@${ts.wall}.${ts.counter}`)
    .sort()
    .join(',')
}

/**
 * Runs a schedule over `replicas` fresh replicas (peer ids `r0`…) on a manual, seeded {@link MemoryNetwork} with an
 * injected clock that advances `stepMs` per step, then runs to quiescence: heals every partition and cut link
 * (the topology stays), turns every fault off, and repeats {anti-entropy on every replica; deliver everything} until
 * a whole round changes no replica's state (digest and version vector). Deterministic: the same seed and schedule
 * give the same trace. Throws {@link NotQuiescentError} when quiescence is not reached within `maxRounds`.
 */
export async function runSchedule(schedule: readonly Step[], options: RunScheduleOptions): Promise<RunResult> {
  const n = options.replicas
  if (!Number.isSafeInteger(n) || n < 1) throw new TypeError('runSchedule: replicas must be a positive integer')
  const topology = options.topology ?? 'mesh'
  if (!['mesh', 'line', 'ring', 'star'].includes(topology)) throw new TypeError(`runSchedule: unknown topology ${JSON.stringify(topology)}`)
  const baseline: MemoryFaults = { ...DEFAULT_FAULTS, ...options.faults }
  const maxRounds = options.maxRounds ?? 50
  const maxDeliveries = options.maxDeliveries ?? 1_000_000
  const stepMs = options.clock?.stepMs ?? 1
  const skew = Array.from({ length: n }, (_, i) => options.clock?.skewMs?.[i] ?? 0)
  let now = options.clock?.startMs ?? 1_700_000_000_000
  let stepIndex = 0
  const trace: string[] = []
  const errors: RunError[] = []
  const network = new MemoryNetwork({
    seed: options.seed ?? 0,
    mode: 'manual',
    ...baseline,
    ...(options.maxFrameSize !== undefined ? { maxFrameSize: options.maxFrameSize } : {}),
    onError: (error) => errors.push({ replica: -1, step: stepIndex, error }),
  })
  const ids = Array.from({ length: n }, (_, i) => `r${i}`)
  const disks = Array.from({ length: n }, () => new SimDisk())
  const withText = options.text ?? schedule.some((s) => s.kind === 'text')
  const text = withText ? (await import('../text/index.js')).yjsText() : undefined
  const slots: Slot[] = []
  // Randomness for new origin ids (an amnesiac replica's new history), drawn from the seed so runs replay exactly.
  let idDraws = 0
  const idRandom = (): number => (Math.imul((options.seed ?? 0) + 0x632be5ab * ++idDraws, 0x9e3779b1) >>> 0) / 2 ** 32

  // Link state: topology ∧ ¬cut ∧ same partition group. Only pairs whose state changes are touched.
  const linkUp = new Map<string, boolean>()
  const cut = new Set<string>()
  let groups: readonly number[] | undefined
  const pair = (i: number, j: number): string => (i < j ? `${i}-${j}` : `${j}-${i}`)
  const applyLinks = (): void => {
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const key = pair(i, j)
        const want =
          inTopology(topology, n, i, j) && !cut.has(key) && (groups === undefined || groups[i % groups.length] === groups[j % groups.length])
        if ((linkUp.get(key) ?? true) !== want) {
          linkUp.set(key, want)
          network.link(ids[i]!, ids[j]!, want)
        }
      }
    }
  }
  applyLinks()

  const open = async (i: number): Promise<void> => {
    const transport = network.transport()
    const handle = disks[i]!.open()
    const replica = await createReplica({
      peerId: ids[i]!,
      storage: handle,
      transports: [transport],
      antiEntropyMs: 0,
      random: idRandom,
      clock: { now: () => now + skew[i]!, ...(options.replica?.maxDriftMs !== undefined ? { maxDriftMs: options.replica.maxDriftMs } : {}) },
      ...(options.replica?.compactAfterEntries !== undefined ? { compactAfterEntries: options.replica.compactAfterEntries } : {}),
      ...(options.replica?.maxMessageBytes !== undefined ? { maxMessageBytes: options.replica.maxMessageBytes } : {}),
      ...(options.replica?.room !== undefined ? { room: options.replica.room } : {}),
      ...(options.replica?.app !== undefined ? { app: options.replica.app } : {}),
      ...(text ? { text } : {}),
    })
    if (!(replica instanceof ReplicaImpl)) throw new TypeError('runSchedule: createReplica did not return a ReplicaImpl')
    const off = replica.on('error', (error) => errors.push({ replica: i, step: stepIndex, error }))
    slots[i] = { replica, transport, handle, off }
    options.onReplica?.(replica, i, network)
  }
  for (let i = 0; i < n; i++) await open(i)

  const drain = (what: string): number => {
    const steps = network.deliverAll(maxDeliveries)
    if (network.pending() > 0) {
      throw new NotQuiescentError(`${what}: the network still had ${network.pending()} items queued after ${maxDeliveries} deliveries (frames ping-pong forever?)`)
    }
    return steps
  }

  let writes: { replica: number; lost: boolean; done: Promise<void> }[] = []
  const settleWrites = async (): Promise<void> => {
    if (writes.length === 0) return
    const batch = writes
    writes = []
    await Promise.all(batch.map((w) => w.done))
  }
  const issue = (op: Op, i: number): void => {
    const replica = slots[op.replica]!.replica
    let p: Promise<void>
    try {
      const c = replica.collection(op.collection)
      if (op.kind === 'text') {
        editText(c.text(op.id, op.field) as EditableText, op)
        p = replica.whenFlushed()
      } else p = op.kind === 'put' ? c.put({ ...op.fields, id: op.id }) : op.kind === 'update' ? c.update(op.id, op.patch) : c.delete(op.id)
    } catch (error) {
      p = Promise.reject(error)
    }
    const w = { replica: op.replica, lost: false, done: p }
    w.done = p.catch((error: unknown) => {
      if (!w.lost) errors.push({ replica: op.replica, step: i, error })
    })
    writes.push(w)
  }
  const checkReplica = (r: number, step: Step): number => {
    if (!Number.isSafeInteger(r) || r < 0 || r >= n) throw new RangeError(`runSchedule: step ${describeStep(step)} names replica ${r}, but the run has ${n}`)
    return r
  }

  let burstLeft = 0
  const pad = String(schedule.length + maxRounds).length
  const line = (i: number | string, text: string): void => {
    trace.push(`${typeof i === 'number' ? String(i).padStart(pad, '0') : i.padStart(pad, ' ')} ${text} q=${network.pending()}`)
  }

  for (let i = 0; i < schedule.length; i++) {
    const step = schedule[i]!
    // Storage and delivery resolve through microtasks only: yield to the event loop now and then, so the test
    // runner (timers, worker messages) is not starved during long properties.
    if (i % 64 === 63) await yieldToEventLoop()
    stepIndex = i
    now += stepMs
    if (step.kind === 'put' || step.kind === 'update' || step.kind === 'delete' || step.kind === 'text') {
      checkReplica(step.replica, step)
      issue(step, i)
      line(i, describeStep(step))
    } else {
      let note = ''
      if (step.kind === 'restart' && step.crash) {
        // kill -9 while the writes just issued are in flight: they never become durable, but their frames leave first.
        const r = checkReplica(step.replica, step)
        slots[r]!.off() // the dying incarnation's complaints (its storage is gone) are expected
        slots[r]!.handle.cut()
        const lost = writes.filter((w) => w.replica === r)
        for (const w of lost) w.lost = true
        if (lost.length > 0) note = ` (${lost.length} writes in flight lost)`
      }
      await settleWrites()
      switch (step.kind) {
        case 'deliver': {
          let k = 0
          while (k < step.count && network.deliverNext()) k++
          note = ` → ${k}`
          break
        }
        case 'deliverAll':
          note = ` → ${drain(`step ${i}`)}`
          break
        case 'antiEntropy':
          if (step.replica === undefined) for (const s of slots) s.replica.engine.antiEntropy()
          else slots[checkReplica(step.replica, step)]!.replica.engine.antiEntropy()
          break
        case 'burst':
          network.setFaults({ dropRate: step.dropRate, duplicateRate: step.duplicateRate })
          burstLeft = step.steps + 1
          break
        case 'partition':
          if (step.groups.length === 0) throw new RangeError('runSchedule: a partition needs at least one group entry')
          groups = step.groups
          applyLinks()
          break
        case 'heal':
          groups = undefined
          cut.clear()
          applyLinks()
          break
        case 'link': {
          const a = checkReplica(step.a, step)
          const b = checkReplica(step.b, step)
          if (a === b || !inTopology(topology, n, a, b)) {
            note = ' (not a link of the topology: ignored)'
            break
          }
          if (step.up) cut.delete(pair(a, b))
          else cut.add(pair(a, b))
          applyLinks()
          break
        }
        case 'restart': {
          const r = checkReplica(step.replica, step)
          const slot = slots[r]!
          if (step.crash) {
            // No flush, no goodbye: what was sent before the crash arrives, received deltas not yet durable are lost.
            note += ` → ${drain(`crash of r${r}`)} delivered first`
            await slot.transport.stop()
          } else {
            await slot.replica.close()
            slot.off()
          }
          await open(r)
          break
        }
        case 'amnesia': {
          const r = checkReplica(step.replica, step)
          const slot = slots[r]!
          await slot.replica.close()
          slot.off()
          disks[r] = new SimDisk()
          await open(r)
          break
        }
        case 'clock':
          skew[checkReplica(step.replica, step)]! += step.ms
          break
        default: {
          const never: never = step
          throw new TypeError(`runSchedule: unknown step ${JSON.stringify(never)}`)
        }
      }
      line(i, describeStep(step) + note)
    }
    if (burstLeft > 0 && --burstLeft === 0) network.setFaults({ dropRate: baseline.dropRate, duplicateRate: baseline.duplicateRate })
  }
  await settleWrites()

  // Quiescence: everything healed (the topology stays), faults off, anti-entropy until a whole round changes nothing.
  stepIndex = schedule.length
  network.setFaults({ dropRate: 0, duplicateRate: 0, reorder: false })
  groups = undefined
  cut.clear()
  applyLinks()
  drain('quiescence')
  const fingerprint = (): string[] =>
    slots.map((s) => `${s.replica.store.digest()} ${vvString(s.replica)}${s.replica.text ? ` text ${s.replica.text.digest()} ${vvString(s.replica, true)}` : ''}`)
  let before = fingerprint()
  let rounds = 0
  for (;;) {
    if (rounds >= maxRounds) {
      throw new NotQuiescentError(
        `not quiescent after ${maxRounds} anti-entropy rounds (${n} replicas, topology ${topology}, seed ${options.seed ?? 0}); last states:\n` +
          before.map((f, i) => `  r${i}: ${f}`).join('\n'),
      )
    }
    rounds++
    now += stepMs
    for (const s of slots) s.replica.engine.antiEntropy()
    const delivered = drain(`quiescence round ${rounds}`)
    await Promise.resolve()
    const after = fingerprint()
    const changed = after.filter((f, i) => f !== before[i]).length
    line(`Q${rounds}`, `anti-entropy round → ${delivered} delivered, ${changed} replicas changed`)
    if (changed === 0) break
    before = after
  }
  for (let i = 0; i < n; i++) trace.push(`final r${i} ${before[i]}`)

  return {
    replicas: slots.map((s) => s.replica),
    network,
    trace,
    errors,
    rounds,
    close: async () => {
      for (const s of slots) await s.replica.close()
    },
  }
}

// =====================================================================================================================
// Convergence check

/** One difference between replicas, as {@link ConvergenceError} lists them. */
export interface ConvergenceDifference {
  /** `'digest'` for differing digests, else `'collection/id'` or `'collection/id.field'`. */
  readonly where: string
  /** Per distinct value, the replicas (by peer id) that hold it, rendered exactly. */
  readonly values: readonly { readonly replicas: readonly string[]; readonly value: string }[]
}

/** Replicas that should have converged hold different visible states or digests; the message has the diff and replay line. */
export class ConvergenceError extends SyncmeshError {
  override readonly code = 'CONVERGENCE'
  constructor(
    message: string,
    /** Every difference found (the message shows the first {@link AssertConvergedOptions.maxDifferences}). */
    readonly differences: readonly ConvergenceDifference[],
  ) {
    super(message)
  }
}

/** Options of {@link assertConverged}. */
export interface AssertConvergedOptions {
  /** The seed that reproduces the run, printed as `Replay: SEED=…`. */
  seed?: number | string
  /** A full replay line to print instead of the one built from `seed`. */
  replay?: string
  /**
   * The collections to compare.
   * @default every collection any replica holds (requires replicas made by createReplica)
   */
  collections?: readonly string[]
  /**
   * Most differences shown in the message.
   * @default 20
   */
  maxDifferences?: number
}

interface Snapshot {
  readonly name: string
  readonly digest: string | undefined
  readonly records: Map<string, Map<string, StoredRecord>>
  /** Per collection and id, the alive text fields' content (replicas with text support). */
  readonly text: Map<string, Map<string, Map<string, string>>>
}

function snapshot(replica: Replica, collections: readonly string[]): Snapshot {
  const records = new Map<string, Map<string, StoredRecord>>()
  const text = new Map<string, Map<string, Map<string, string>>>()
  const state = replica instanceof ReplicaImpl ? replica.text : undefined
  for (const c of collections) {
    const byId = new Map<string, StoredRecord>()
    const texts = new Map<string, Map<string, string>>()
    for (const rec of replica.collection(c).all() as StoredRecord[]) {
      byId.set(rec.id, rec)
      const fields = state?.fields(c, rec.id) ?? []
      if (fields.length > 0) texts.set(rec.id, new Map(fields.map((f) => [f, state!.content(c, rec.id, f)])))
    }
    records.set(c, byId)
    text.set(c, texts)
  }
  const digest = replica instanceof ReplicaImpl ? replica.store.digest() + (state ? `+${state.digest()}` : '') : undefined
  return { name: replica.peerId, digest, records, text }
}

/** Groups replicas by exact value: `[{ replicas: ['r0','r2'], value: '"x"' }, …]`, or undefined when all agree. */
function distinct<T>(snaps: readonly Snapshot[], get: (s: Snapshot) => T, same: (a: T, b: T) => boolean, show: (v: T) => string): ConvergenceDifference['values'] | undefined {
  const groups: { value: T; replicas: string[] }[] = []
  for (const s of snaps) {
    const v = get(s)
    const g = groups.find((x) => same(x.value, v))
    if (g) g.replicas.push(s.name)
    else groups.push({ value: v, replicas: [s.name] })
  }
  return groups.length > 1 ? groups.map((g) => ({ replicas: g.replicas, value: show(g.value) })) : undefined
}

/** Every difference in visible state and digest between the replicas (empty when they agree). */
export function compareReplicas(replicas: readonly Replica[], options: Pick<AssertConvergedOptions, 'collections'> = {}): ConvergenceDifference[] {
  let collections = options.collections
  if (!collections) {
    const names = new Set<string>()
    for (const r of replicas) {
      if (!(r instanceof ReplicaImpl)) throw new TypeError('assertConverged: pass { collections } for replicas not made by createReplica')
      for (const c of [...r.store.collections(), ...(r.text?.collections() ?? [])]) names.add(c)
    }
    collections = [...names].sort()
  }
  const snaps = replicas.map((r) => snapshot(r, collections))
  const out: ConvergenceDifference[] = []
  const digests = distinct(snaps, (s) => s.digest, (a, b) => a === b, (d) => d ?? '<unknown>')
  if (digests) out.push({ where: 'digest', values: digests })
  for (const c of collections) {
    const allIds = new Set<string>()
    for (const s of snaps) for (const id of s.records.get(c)!.keys()) allIds.add(id)
    for (const id of [...allIds].sort()) {
      const where = `${c}/${JSON.stringify(id)}`
      const recs = snaps.map((s) => s.records.get(c)!.get(id))
      if (recs.some((r) => r === undefined)) {
        const presence = distinct(
          snaps,
          (s) => s.records.get(c)!.get(id),
          (a, b) => (a === undefined) === (b === undefined),
          (r) => (r === undefined ? '<no record>' : formatValue(r as unknown as Value)),
        )
        if (presence) out.push({ where, values: presence })
        if (recs.every((r) => r === undefined)) continue
      }
      const fields = new Set<string>()
      for (const r of recs) if (r) for (const k of Object.keys(r)) if (k !== 'id') fields.add(k)
      const present = snaps.filter((s) => s.records.get(c)!.has(id))
      for (const f of [...fields].sort()) {
        const d = distinct(
          present,
          (s) => {
            const rec = s.records.get(c)!.get(id)!
            return Object.prototype.hasOwnProperty.call(rec, f) ? rec[f] : undefined
          },
          (a, b) => valuesEqual(a, b),
          (v) => formatValue(v),
        )
        if (d) out.push({ where: `${where}.${JSON.stringify(f)}`, values: d })
      }
      const textFields = new Set<string>()
      for (const s of present) for (const f of s.text.get(c)!.get(id)?.keys() ?? []) textFields.add(f)
      for (const f of [...textFields].sort()) {
        const d = distinct(
          present,
          (s) => s.text.get(c)!.get(id)?.get(f),
          (a, b) => a === b,
          (v) => (v === undefined ? '<no text>' : formatValue(v, 60)),
        )
        if (d) out.push({ where: `${where}~text.${JSON.stringify(f)}`, values: d })
      }
    }
  }
  return out
}

/**
 * Throws {@link ConvergenceError} unless every replica holds the same visible records (value-exact: NaN equals NaN,
 * -0 differs from 0) and the same digest. The message lists at most `maxDifferences` differences, then the replay line.
 */
export function assertConverged(replicas: readonly Replica[], options: AssertConvergedOptions = {}): void {
  if (replicas.length < 2) return
  const diffs = compareReplicas(replicas, options)
  if (diffs.length === 0) return
  const max = options.maxDifferences ?? 20
  const lines = diffs.slice(0, max).map((d) => `  ${d.where}: ${d.values.map((v) => `${v.replicas.join(',')} = ${v.value}`).join(' | ')}`)
  if (diffs.length > max) lines.push(`  … and ${diffs.length - max} more`)
  const replay = options.replay ?? (options.seed !== undefined ? `Replay: SEED=${options.seed}` : undefined)
  const message = `${replicas.length} replicas did not converge (${diffs.length} difference${diffs.length === 1 ? '' : 's'}):\n${lines.join('\n')}${replay ? `\n${replay}` : ''}`
  throw new ConvergenceError(message, diffs)
}

// =====================================================================================================================
// Printing schedules as code

function valueToCode(v: Value | undefined): string {
  if (v === undefined) return 'undefined'
  if (v === null) return 'null'
  switch (typeof v) {
    case 'number':
      return Object.is(v, -0) ? '-0' : String(v)
    case 'boolean':
      return String(v)
    case 'string':
      return stringToCode(v)
  }
  if (v instanceof Uint8Array) return `new Uint8Array([${v.join(', ')}])`
  if (Array.isArray(v)) return `[${(v as readonly Value[]).map(valueToCode).join(', ')}]`
  return fieldsToCode(v as { readonly [key: string]: Value })
}

/** A string literal; long repetitions of a short unit as `"unit".repeat(k)`. */
function stringToCode(s: string): string {
  if (s.length > 40) {
    for (let p = 1; p <= 8 && p < s.length; p++) {
      if (s.length % p === 0 && s === s.slice(0, p).repeat(s.length / p)) return `${JSON.stringify(s.slice(0, p))}.repeat(${s.length / p})`
    }
  }
  return JSON.stringify(s)
}

function fieldsToCode(obj: { readonly [key: string]: Value | undefined }): string {
  const keys = Object.keys(obj)
  if (keys.length === 0) return '{}'
  // A computed key defines an own property even for `__proto__` (a plain `__proto__:` would set the prototype).
  const key = (k: string): string => (k === '__proto__' ? '["__proto__"]' : /^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k))
  return `{ ${keys.map((k) => `${key(k)}: ${valueToCode(obj[k])}`).join(', ')} }`
}

/** A schedule as TypeScript source (exact: NaN, -0, Uint8Array, lone surrogates, `__proto__` keys), to paste into a test. */
export function formatSchedule(steps: readonly Step[]): string {
  const lines = steps.map((s) => {
    switch (s.kind) {
      case 'put':
        return `{ kind: 'put', replica: ${s.replica}, collection: ${JSON.stringify(s.collection)}, id: ${JSON.stringify(s.id)}, fields: ${fieldsToCode(s.fields)} }`
      case 'update':
        return `{ kind: 'update', replica: ${s.replica}, collection: ${JSON.stringify(s.collection)}, id: ${JSON.stringify(s.id)}, patch: ${fieldsToCode(s.patch)} }`
      case 'delete':
        return `{ kind: 'delete', replica: ${s.replica}, collection: ${JSON.stringify(s.collection)}, id: ${JSON.stringify(s.id)} }`
      case 'text':
        return `{ kind: 'text', replica: ${s.replica}, collection: ${JSON.stringify(s.collection)}, id: ${JSON.stringify(s.id)}, field: ${JSON.stringify(s.field)}, index: ${s.index}, remove: ${s.remove}, insert: ${stringToCode(s.insert)} }`
      default:
        return `{ ${Object.entries(s)
          .map(([k, v]) => `${k}: ${typeof v === 'string' ? `'${v}'` : Array.isArray(v) ? `[${v.join(', ')}]` : String(v)}`)
          .join(', ')} }`
    }
  })
  return `[\n${lines.map((l) => `  ${l},`).join('\n')}\n]`
}

/**
 * Delta-debugging: removes chunks of steps while `fails` still holds, halving the chunk size down to single steps,
 * until `deadline` (ms since the epoch). Runs are deterministic, so the result fails every time.
 */
export async function minimizeSchedule(steps: readonly Step[], fails: (steps: Step[]) => Promise<boolean>, deadline = Date.now() + 30_000): Promise<Step[]> {
  let current = [...steps]
  let chunk = Math.max(1, current.length >> 1)
  for (;;) {
    let removed = false
    for (let at = 0; at < current.length && Date.now() < deadline; ) {
      const candidate = [...current.slice(0, at), ...current.slice(at + chunk)]
      if (candidate.length < current.length && (await fails(candidate))) {
        current = candidate
        removed = true
      } else {
        at += chunk
      }
    }
    if (Date.now() >= deadline) return current
    if (chunk === 1 && !removed) return current
    if (!removed) chunk = Math.max(1, chunk >> 1)
  }
}

/** After {@link minimizeSchedule}: replaces each write's values by small ones (0, or `undefined` kept) while it still fails. */
async function simplifyValues(steps: Step[], fails: (steps: Step[]) => Promise<boolean>, deadline: number): Promise<Step[]> {
  let current = steps
  const small = (fields: { readonly [k: string]: Value | undefined }): { [k: string]: Value | undefined } =>
    buildObject(Object.keys(fields).map((k) => [k, fields[k] === undefined ? undefined : 0] as const))
  for (let i = 0; i < current.length && Date.now() < deadline; i++) {
    const s = current[i]!
    let simpler: Step | undefined
    if (s.kind === 'put' && Object.values(s.fields).some((v) => v !== 0)) simpler = { ...s, fields: small(s.fields) as PutOp['fields'] }
    else if (s.kind === 'update' && Object.values(s.patch).some((v) => v !== undefined && v !== 0)) simpler = { ...s, patch: small(s.patch) }
    else if (s.kind === 'text' && s.insert.length > 1) simpler = { ...s, insert: 'x' }
    if (!simpler) continue
    const candidate = [...current.slice(0, i), simpler, ...current.slice(i + 1)]
    if (await fails(candidate)) current = candidate
  }
  return current
}

// =====================================================================================================================
// The one-line property

/** Options of {@link runConvergenceProperty}. */
export interface ConvergencePropertyOptions {
  /**
   * Number of replicas per run: fixed or a range.
   * @default { min: 2, max: 5 }
   */
  replicas?: number | { min: number; max: number }
  /**
   * Steps per run (see {@link ScheduleOptions.steps}).
   * @default 100
   */
  steps?: number | { min?: number; max: number }
  /**
   * Number of runs; the environment variable `NUM_RUNS` overrides it.
   * @default 100
   */
  numRuns?: number
  /**
   * fast-check seed; the environment variable `SEED` overrides it.
   * @default a fresh random seed (printed on failure)
   */
  seed?: number
  /** Replays one run (fast-check `path`); the environment variable `PROP_PATH` overrides it. */
  path?: string
  /** Baseline faults; see {@link DEFAULT_FAULTS}. */
  faults?: Faults
  /**
   * Topology of every run, or a list to pick from per run.
   * @default 'mesh'
   */
  topology?: Topology | readonly Topology[]
  /** Schedule generation: pools, your own value arbitrary, step weights, the amnesiac replica. */
  schedule?: Omit<ScheduleOptions, 'replicas' | 'steps'>
  /** Other {@link runSchedule} options (clock, frame size, replica options, bounds, `onReplica`). */
  run?: Omit<RunScheduleOptions, 'replicas' | 'seed' | 'faults' | 'topology'>
  /** Collections to compare (see {@link AssertConvergedOptions.collections}). */
  collections?: readonly string[]
  /** Extra checks on each quiescent run (throw to fail). */
  check?: (result: RunResult) => void | Promise<void>
  /**
   * Accept runs in which replicas reported errors (by default any error fails the run).
   * @default false
   */
  allowErrors?: boolean
  /**
   * Time spent minimizing a failing schedule (removing steps while it still fails the same way); 0 skips it.
   * @default 30_000
   */
  minimizeMs?: number
  /**
   * Where the replay line goes on failure.
   * @default console.error
   */
  log?: (line: string) => void
}

/** One generated run of {@link runConvergenceProperty}. */
export interface ConvergenceCase {
  readonly replicas: number
  readonly networkSeed: number
  readonly topology: Topology
  readonly steps: Step[]
}

/** A convergence property failed; the message starts with the `Replay:` line and ends with the minimal schedule. */
export class ConvergencePropertyError extends SyncmeshError {
  override readonly code = 'CONVERGENCE_PROPERTY'
  constructor(
    message: string,
    /** The fast-check seed of the failing property run. */
    readonly seed: number,
    /** The fast-check path of the failing run. */
    readonly path: string | undefined,
    /** The failing case as generated. */
    readonly counterexample: ConvergenceCase | undefined,
    /** The failing case with as few steps as minimization found (fails deterministically with {@link runSchedule}). */
    readonly minimal: ConvergenceCase | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

function envValue(name: string): string | undefined {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env
  const raw = env?.[name]?.trim()
  return raw === undefined || raw === '' ? undefined : raw
}

function envInt(name: string): number | undefined {
  const raw = envValue(name)
  if (raw === undefined) return undefined
  const n = Number(raw)
  if (!Number.isSafeInteger(n)) throw new TypeError(`${name} must be an integer, got ${JSON.stringify(raw)}`)
  return n
}

/** The fast-check arbitrary of whole runs that {@link runConvergenceProperty} uses. */
export function convergenceCaseArb(options: Pick<ConvergencePropertyOptions, 'replicas' | 'steps' | 'topology' | 'schedule'> = {}): fc.Arbitrary<ConvergenceCase> {
  const r = options.replicas ?? { min: 2, max: 5 }
  const [min, max] = typeof r === 'number' ? [r, r] : [r.min, r.max]
  const topologies: readonly Topology[] = options.topology === undefined ? ['mesh'] : typeof options.topology === 'string' ? [options.topology] : options.topology
  if (topologies.length === 0) throw new TypeError('runConvergenceProperty: topology list is empty')
  if (!(Number.isSafeInteger(min) && Number.isSafeInteger(max) && min >= 1 && max >= min)) throw new TypeError('runConvergenceProperty: replicas must be a positive integer or a { min, max } range')
  // One schedule arbitrary per replica count, built up front (not inside `chain`, which would rebuild it per run).
  const byCount = new Map<number, fc.Arbitrary<ConvergenceCase>>()
  for (let n = min; n <= max; n++) {
    byCount.set(
      n,
      fc.record({
        replicas: fc.constant(n),
        networkSeed: fc.nat(),
        topology: fc.constantFrom(...topologies),
        steps: scheduleArb({ ...options.schedule, replicas: n, ...(options.steps !== undefined ? { steps: options.steps } : {}) }),
      }),
    )
  }
  return fc.integer({ min, max }).chain((n) => byCount.get(n)!)
}

function describeError(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err)
}

/**
 * Runs a seeded, replayable convergence property: generated schedules over generated replica counts, each run to
 * quiescence and checked with {@link assertConverged} (and no replica errors). On failure it minimizes the failing
 * schedule, logs and throws `Replay: SEED=… PROP_PATH=…` (set those environment variables and rerun the test) followed
 * by the diff and the minimal schedule as code.
 */
export async function runConvergenceProperty(options: ConvergencePropertyOptions = {}): Promise<void> {
  const seed = envInt('SEED') ?? options.seed ?? (Math.random() * 2 ** 32) | 0
  const path = envValue('PROP_PATH') ?? options.path
  const numRuns = envInt('NUM_RUNS') ?? options.numRuns ?? 100
  const log = options.log ?? ((l: string) => console.error(l))
  const runCase = async (c: ConvergenceCase): Promise<void> => {
    const result = await runSchedule(c.steps, {
      ...options.run,
      replicas: c.replicas,
      seed: c.networkSeed,
      topology: c.topology,
      ...(options.faults ? { faults: options.faults } : {}),
    })
    try {
      if (!options.allowErrors && result.errors.length > 0) {
        const e = result.errors[0]!
        throw new Error(
          `${result.errors.length} error(s) reported during the run; first, by ${e.replica < 0 ? 'a network listener' : `r${e.replica}`} at step ${e.step}: ${describeError(e.error)}`,
          { cause: e.error },
        )
      }
      assertConverged(result.replicas, { replay: 'Replay: see the first line of this report', ...(options.collections ? { collections: options.collections } : {}) })
      await options.check?.(result)
    } finally {
      await result.close()
    }
  }
  // fast-check's own shrinking cannot drop steps from a fixed-length schedule and yields a path of hundreds of
  // segments; the runs are deterministic, so delta-debugging the schedule afterwards is both shorter and smaller.
  const details = await fc.check(fc.asyncProperty(convergenceCaseArb(options), runCase), {
    seed,
    numRuns,
    endOnFailure: true,
    ...(path !== undefined ? { path } : {}),
  })
  if (!details.failed) return
  const failPath = details.counterexamplePath ?? undefined
  const replay = `Replay: SEED=${seed}${failPath ? ` PROP_PATH=${JSON.stringify(failPath)}` : ''}`
  log(replay)
  const c = details.counterexample?.[0]
  const cause = details.errorInstance
  const kind = cause instanceof Error ? cause.name : typeof cause
  let minimal: ConvergenceCase | undefined
  const minimizeMs = options.minimizeMs ?? 30_000
  let minimalError: unknown
  if (c && minimizeMs > 0) {
    const fails = async (candidate: Step[]): Promise<boolean> => {
      try {
        await runCase({ ...c, steps: candidate })
        return false
      } catch (err) {
        if ((err instanceof Error ? err.name : typeof err) !== kind) return false
        minimalError = err
        return true
      }
    }
    const deadline = Date.now() + minimizeMs
    const steps = await simplifyValues(await minimizeSchedule(c.steps, fails, deadline), fails, deadline)
    minimal = { ...c, steps }
    await fails(steps) // the minimal case's own diff
  }
  let minimalText = ''
  if (minimal) {
    const call = `runSchedule(steps, { replicas: ${minimal.replicas}, seed: ${minimal.networkSeed}, topology: '${minimal.topology}'${options.faults ? `, faults: ${JSON.stringify(options.faults)}` : ''}${options.run ? ', ...<your run options>' : ''} })`
    minimalText =
      minimal.steps.length <= 60
        ? `Minimal failing schedule (${minimal.steps.length} of ${c!.steps.length} steps), fails deterministically with ${call}:\nconst steps: Step[] = ${formatSchedule(minimal.steps)}\nwhich gives:\n${describeError(minimalError)}`
        : `Minimization left ${minimal.steps.length} of ${c!.steps.length} steps (error.minimal holds them).`
  }
  const message = [
    replay,
    `Convergence property failed at run ${details.numRuns} of ${numRuns}.`,
    c ? `Case: ${c.replicas} replicas, topology ${c.topology}, network seed ${c.networkSeed}, ${c.steps.length} steps.` : '',
    describeError(cause),
    minimalText,
  ]
    .filter((l) => l !== '')
    .join('\n')
  throw new ConvergencePropertyError(message, seed, failPath, c, minimal, { cause })
}
