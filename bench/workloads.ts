/**
 * The workloads of the spec: W1–W4, written once against the {@link System} interface, and API, which drives
 * syncmesh's public replica API (bench/api.ts). Each returns flat numeric metrics; the worker prints them and the
 * orchestrator takes medians.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { FIELDS, makeRecords, makeUpdates, recordId, rng, type Sizes } from './data.js'
import type { Replica, Sync, System } from './systems/types.js'

/** The workloads, in table order. */
export const WORKLOADS = ['W1', 'W2', 'W3', 'W4', 'API'] as const

/** Name of one workload. */
export type WorkloadName = (typeof WORKLOADS)[number]

/** Workloads that need replication; systems without `sync` (the floor) skip them. */
export const NEEDS_SYNC: ReadonlySet<WorkloadName> = new Set(['W3', 'W4'])

/** Workloads that start from the state files W1 writes in the same run (W1 then runs first, selected or not). */
export const FROM_W1_STATES: ReadonlySet<WorkloadName> = new Set(['W2', 'W3', 'W4'])

/** Why `system` does not run `workload` (the cell is reported n/a), or undefined if it does. */
export function skipReason(workload: WorkloadName, system: System): string | undefined {
  if (NEEDS_SYNC.has(workload) && !system.sync) return `${system.name} has no replication`
  if (workload === 'API' && system.name !== 'syncmesh' && system.name !== 'floor') {
    return 'API measures syncmesh’s own replica API; no counterpart is measured'
  }
  return undefined
}

/** Flat numeric results of one (system, workload, run). */
export type Metrics = Record<string, number>

/** Random-stream ids: one per data set, so every system sees exactly the same records and updates. */
export const STREAM = { records: 1, w1Updates: 2, w3Updates: 10, w4Fresh: 20, w4After: 21 } as const
/** W3 replica count. */
const W3_REPLICAS = 4
/** W3 gives up (and fails) if the replicas have not converged after this many full pairwise rounds. */
const W3_MAX_ROUNDS = 5
/** Index of the record W2 reads to prove the loaded state is usable. */
const PROBE_INDEX = 42

/** What every workload receives. */
export interface WorkloadContext {
  readonly system: System
  readonly sizes: Sizes
  readonly seed: number
  /**
   * Path prefix of the state files W1 writes (`<prefix>.inserts`: encoded right after the inserts, `<prefix>.final`:
   * after all updates) and W2–W4 start from, so no process rebuilds what W1 already built.
   */
  readonly states: string
}

/** MB (10^6 bytes) of JS heap used + array buffers + the system's memory outside the JS heap, after two full GCs. */
export function heapAfterGcMB(system: System): { heapMB: number; outsideHeapMB: number } {
  if (!globalThis.gc) throw new Error('run the worker with node --expose-gc')
  globalThis.gc()
  globalThis.gc()
  const { heapUsed, arrayBuffers } = process.memoryUsage()
  const outside = system.outsideHeapBytes?.() ?? 0
  return { heapMB: (heapUsed + arrayBuffers + outside) / 1e6, outsideHeapMB: outside / 1e6 }
}

/** Canonical JSON of records 0…count-1 of a replica (field order fixed, missing records as null). */
export function snapshot(replica: Pick<Replica, 'get'>, count: number): string {
  const rows: unknown[] = []
  for (let i = 0; i < count; i++) {
    const rec = replica.get(recordId(i))
    rows.push(rec ? FIELDS.map((field) => rec[field]) : null)
  }
  return JSON.stringify(rows)
}

/** The snapshot W1 must end in: the seeded records with the seeded updates applied, computed independently. */
export function expectedW1Snapshot(sizes: Sizes, seed: number): string {
  const records = makeRecords(sizes.records, rng(seed, STREAM.records)).map(({ rec }) => ({ ...rec }))
  for (const { id, field, value } of makeUpdates(sizes.w1Updates, sizes.records, rng(seed, STREAM.w1Updates))) {
    const rec: Record<string, unknown> | undefined = records[Number(id.slice(1))]
    if (rec) rec[field] = value
  }
  return JSON.stringify(records.map((rec) => FIELDS.map((field) => rec[field])))
}

/** Throws unless every replica shows the same records (and the same digest, where the system has one). */
function assertConverged(replicas: readonly Replica[], count: number): void {
  const [first, ...rest] = replicas.map((replica) => snapshot(replica, count))
  if (rest.some((s) => s !== first)) throw new Error('replicas did not converge: record snapshots differ')
  const digests = new Set(replicas.map((replica) => replica.digest?.()))
  if (digests.size !== 1) throw new Error('record snapshots are equal but digests differ')
}

/** True if all replicas agree (by digest where available, else by snapshot). */
function converged(replicas: readonly Replica[], count: number): boolean {
  const keys = replicas.map((replica) => replica.digest?.() ?? snapshot(replica, count))
  return keys.every((key) => key === keys[0])
}

/** The system's replication, or an error for systems without one. */
function requireSync(system: System): Sync<Replica> {
  if (!system.sync) throw new Error(`${system.name} has no replication`)
  return system.sync
}

/** Inserts, then times updates (on a sample for bulk-batched systems); returns the replica and the raw numbers. */
function buildW1({ system, sizes, seed, states }: WorkloadContext) {
  const records = makeRecords(sizes.records, rng(seed, STREAM.records))
  const updates = makeUpdates(sizes.w1Updates, sizes.records, rng(seed, STREAM.w1Updates))
  const replica = system.create(0)
  const insertsPerChange = system.bulkBatch ?? 1
  let start = performance.now()
  replica.insert(records, insertsPerChange)
  const insertMs = performance.now() - start
  const insertsOnly = replica.encode()
  writeFileSync(`${states}.inserts`, insertsOnly)
  const timed = system.bulkBatch ? updates.slice(0, sizes.perOpSample) : updates
  start = performance.now()
  replica.update(timed)
  const updateMs = performance.now() - start
  replica.update(updates.slice(timed.length), system.bulkBatch)
  const state = replica.encode()
  writeFileSync(`${states}.final`, state)
  return {
    replica,
    insertOpsPerSec: (records.length / insertMs) * 1000,
    updateOpsPerSec: (timed.length / updateMs) * 1000,
    updateOpsTimed: timed.length,
    insertsPerChange,
    updatesPerChangeUntimed: system.bulkBatch ?? 1,
    stateBytes: state.byteLength,
    insertsOnlyBytes: insertsOnly.byteLength,
  }
}

/** W1: 10k inserts then 100k single-field updates, one op per transaction; rates, heap, state size, growth. */
function runW1(ctx: WorkloadContext): Metrics {
  const baseline = heapAfterGcMB(ctx.system)
  const { replica, ...numbers } = buildW1(ctx)
  const heap = heapAfterGcMB(ctx.system)
  if (snapshot(replica, ctx.sizes.records) !== expectedW1Snapshot(ctx.sizes, ctx.seed)) {
    throw new Error('final W1 state differs from the expected records')
  }
  return {
    ...numbers,
    heapMB: heap.heapMB,
    outsideHeapMB: heap.outsideHeapMB,
    baselineHeapMB: baseline.heapMB,
    growth: numbers.stateBytes / numbers.insertsOnlyBytes,
  }
}

/** Reads one of the state files W1 wrote. */
function readState(ctx: WorkloadContext, which: 'inserts' | 'final'): Uint8Array {
  return new Uint8Array(readFileSync(`${ctx.states}.${which}`))
}

/** Reads W1's final state (untimed), then times decode + reading one record. */
function loadW2(ctx: WorkloadContext) {
  const { system, sizes } = ctx
  const bytes = readState(ctx, 'final')
  const start = performance.now()
  const replica = system.load(bytes, 1)
  const probe = replica.get(recordId(PROBE_INDEX % sizes.records))
  const loadMs = performance.now() - start
  if (!probe) throw new Error('loaded state lacks the probe record')
  return { replica, loadMs, stateBytes: bytes.byteLength }
}

/** W2: cold load of W1's final state into a fresh replica in a fresh process; load ms and heap. */
function runW2(ctx: WorkloadContext): Metrics {
  const baseline = heapAfterGcMB(ctx.system)
  const { replica, ...numbers } = loadW2(ctx)
  const heap = heapAfterGcMB(ctx.system)
  if (snapshot(replica, ctx.sizes.records) !== expectedW1Snapshot(ctx.sizes, ctx.seed)) {
    throw new Error('loaded W2 state differs from the expected records')
  }
  return { ...numbers, heapMB: heap.heapMB, outsideHeapMB: heap.outsideHeapMB, baselineHeapMB: baseline.heapMB }
}

/** W3: 4 replicas of one shared state each make 25k concurrent updates, then pairwise exchange until converged. */
function runW3(ctx: WorkloadContext): Metrics {
  const { system, sizes, seed } = ctx
  const sync = requireSync(system)
  const shared = readState(ctx, 'inserts')
  const replicas: Replica[] = []
  for (let k = 0; k < W3_REPLICAS; k++) {
    const replica = system.load(shared, k + 1)
    const updates = makeUpdates(sizes.w3UpdatesPerReplica, sizes.records, rng(seed, STREAM.w3Updates + k))
    replica.update(updates, system.bulkBatch)
    replicas.push(replica)
  }
  let mergeMs = 0
  let bytesExchanged = 0
  let rounds = 0
  while (!converged(replicas, sizes.records)) {
    if (rounds === W3_MAX_ROUNDS) throw new Error(`no convergence after ${W3_MAX_ROUNDS} pairwise rounds`)
    rounds++
    const start = performance.now()
    for (let i = 0; i < replicas.length; i++) {
      for (let j = i + 1; j < replicas.length; j++) {
        bytesExchanged += sync.exchange(replicas[i] as Replica, replicas[j] as Replica)
      }
    }
    mergeMs += performance.now() - start
  }
  assertConverged(replicas, sizes.records)
  return { mergeMs, bytesExchanged, rounds, updatesPerChange: system.bulkBatch ?? 1 }
}

/** A changes 100 fields (one op per transaction); returns the bytes B needs to catch up, B's request included. */
function catchUpBytes(sync: Sync<Replica>, a: Replica, b: Replica, ctx: WorkloadContext, stream: number): number {
  a.update(makeUpdates(ctx.sizes.w4Changes, ctx.sizes.records, rng(ctx.seed, stream)))
  const bytes = sync.pull(a, b)
  assertConverged([a, b], ctx.sizes.records)
  return bytes
}

/** W4: catch-up bytes for 100 changed fields, on W1's inserts-only state and on W1's final state (100k overwrites). */
function runW4(ctx: WorkloadContext): Metrics {
  const sync = requireSync(ctx.system)
  const bytes = (which: 'inserts' | 'final', stream: number): number => {
    const state = readState(ctx, which)
    return catchUpBytes(sync, ctx.system.load(state, 1), ctx.system.load(state, 2), ctx, stream)
  }
  return { bytesFresh: bytes('inserts', STREAM.w4Fresh), bytesAfterOverwrites: bytes('final', STREAM.w4After) }
}

/**
 * The runner of each workload (API is asynchronous). API's module is imported only when API runs, so the syncmesh
 * replica layer it loads never weighs on the other workers' heap.
 */
export const RUNNERS: Record<WorkloadName, (ctx: WorkloadContext) => Metrics | Promise<Metrics>> = {
  W1: runW1,
  W2: runW2,
  W3: runW3,
  W4: runW4,
  API: async (ctx) => (await import('./api.js')).runAPI(ctx),
}
