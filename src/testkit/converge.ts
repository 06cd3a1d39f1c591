/**
 * The convergence check: compares replicas' visible states (text fields' content included) and digests, and on a
 * difference throws a {@link ConvergenceError} with a readable per-field diff and the replay line.
 */
import { InvalidArgumentError, SyncmeshError } from '../../crdt/errors.js'
import type { StoredRecord } from '../../crdt/record-store.js'
import { type Value, valuesEqual } from '../../crdt/value.js'
import { type Replica, ReplicaImpl } from '../replica.js'
import { formatValue } from './print.js'

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
      if (!(r instanceof ReplicaImpl)) throw new InvalidArgumentError('assertConverged: pass { collections } for replicas not made by createReplica')
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
