/**
 * The convergence proof, written with the public test kit (`syncmesh/testkit`):
 * - 500 seeds × 500 steps over 2–8 replicas with 10 % drop, 10 % duplication, reordering, partitions, cut links,
 *   graceful restarts, crashes (kill -9 with writes in flight), clock jumps and one amnesiac replica → zero divergence;
 * - topologies (line, ring, star over 4–6 replicas): links outside the topology are cut for the whole run, so every
 *   change must cross intermediate peers — checked by recording every peer a replica ever meets;
 * - hand-written schedules that pin down the failures the property found (each names the failure it prevents).
 *
 * Replay a failure with the `Replay: SEED=… PROP_PATH=…` line it prints:
 *   SEED=… PROP_PATH=… npx vitest run property-tests/convergence.test.ts -t "<test name>"
 * `NUM_RUNS=…` overrides the number of runs.
 */
import { describe, expect, it } from 'vitest'
import {
  type ConvergencePropertyOptions,
  type Replica,
  type RunResult,
  type Step,
  type Topology,
  assertConverged,
  runConvergenceProperty,
  runSchedule,
} from '../src/testkit/index.js'
import type { MemoryNetwork } from '../transports/memory.js'

/** Small frames (messages get chunked) and frequent compaction (restarts load a snapshot plus a log). */
const RUN: ConvergencePropertyOptions['run'] = { maxFrameSize: 2048, replica: { compactAfterEntries: 32 } }
const FAULTS = { dropRate: 0.1, duplicateRate: 0.1, reorder: true } as const

/** Counts the step kinds a property really ran (parsed from the traces), to prove the faults were exercised. */
function kindCounter(): { check: (r: RunResult) => void; counts: Map<string, number>; runs: () => number } {
  const counts = new Map<string, number>()
  let runs = 0
  const kinds = /^\S+ (?:r\d+ )?(put|update|delete|deliver|deliverAll|burst|partition|heal|link|restart|crash|amnesia|clock|antiEntropy)\b/
  return {
    counts,
    runs: () => runs,
    check(result) {
      runs++
      for (const line of result.trace) {
        const kind = kinds.exec(line)?.[1]
        if (kind) counts.set(kind, (counts.get(kind) ?? 0) + 1)
        if (/writes in flight lost/.test(line)) counts.set('lost in flight', (counts.get('lost in flight') ?? 0) + 1)
      }
    },
  }
}

describe('convergence under faults (500 seeds × 500 steps)', () => {
  it(
    '2–8 replicas, 10 % drop, 10 % duplication, reordering, partitions, restarts, crashes, clock jumps, one amnesiac replica: zero divergence',
    async () => {
      const counter = kindCounter()
      const started = Date.now()
      await runConvergenceProperty({
        replicas: { min: 2, max: 8 },
        steps: 500,
        numRuns: 500,
        faults: FAULTS,
        run: RUN,
        check: counter.check,
      })
      const ms = Date.now() - started
      console.info(`convergence: ${counter.runs()} runs × 500 steps in ${ms} ms (${(ms / Math.max(1, counter.runs())).toFixed(1)} ms/run)`)
      for (const kind of ['put', 'update', 'delete', 'deliver', 'burst', 'partition', 'heal', 'link', 'restart', 'crash', 'amnesia', 'clock', 'antiEntropy', 'lost in flight']) {
        expect(counter.counts.get(kind) ?? 0, `step kind ${kind} never ran`).toBeGreaterThan(0)
      }
    },
    300_000,
  )
})

// ---------------------------------------------------------------------------------------------------------------------
// Topologies

function inTopology(topology: Topology, n: number, i: number, j: number): boolean {
  const [a, b] = i < j ? [i, j] : [j, i]
  if (topology === 'line') return b === a + 1
  if (topology === 'ring') return b === a + 1 || (a === 0 && b === n - 1)
  if (topology === 'star') return a === 0
  return true
}

describe('topologies: links outside the topology stay cut for the whole run, changes cross intermediate peers', () => {
  for (const topology of ['line', 'ring', 'star'] as const) {
    it(
      `${topology} over 4–6 replicas: 100 seeds × 500 steps converge, and no replica ever meets a non-neighbour`,
      async () => {
        // Every peer a replica meets, per run (keyed by the run's network).
        const met = new WeakMap<MemoryNetwork, [string, string][]>()
        let runs = 0
        let farApart = 0
        await runConvergenceProperty({
          replicas: { min: 4, max: 6 },
          steps: 500,
          numRuns: 100,
          topology,
          faults: FAULTS,
          // Amnesia and crashes are left to the main proof (they currently fail there, see the tests below); this
          // property isolates routing across intermediate peers.
          schedule: { weights: { amnesia: 0, crash: 0 } },
          run: {
            ...RUN,
            onReplica(replica: Replica, _index: number, network: MemoryNetwork) {
              let list = met.get(network)
              if (!list) met.set(network, (list = []))
              const pairs = list
              replica.on('peer:join', (peer) => pairs.push([replica.peerId, peer]))
            },
          },
          check(result) {
            runs++
            const n = result.replicas.length
            const pairs = met.get(result.network) ?? []
            expect(pairs.length, 'replicas met no peer at all').toBeGreaterThan(0)
            for (const [a, b] of pairs) {
              const i = Number(a.slice(1))
              const j = Number(b.slice(1))
              if (!inTopology(topology, n, i, j)) throw new Error(`${a} met ${b}, which is not its neighbour in a ${topology} of ${n}`)
            }
            // Replicas two or more hops apart converged although they never met: changes crossed intermediate peers.
            if (result.replicas.some((r) => r.collection('todos').all().length + r.collection('notes').all().length > 0)) farApart++
          },
        })
        expect(runs).toBeGreaterThanOrEqual(100)
        expect(farApart, 'no run wrote anything').toBeGreaterThan(0)
      },
      120_000,
    )
  }
})

// ---------------------------------------------------------------------------------------------------------------------
// Failures the property found, pinned as small hand-written schedules (deterministic, no faults)

const NO_FAULTS = { dropRate: 0, duplicateRate: 0, reorder: false } as const

async function run(steps: Step[], replicas = 2): Promise<RunResult> {
  const result = await runSchedule(steps, { replicas, seed: 1, faults: NO_FAULTS })
  expect(result.errors).toEqual([])
  return result
}

describe('pinned schedules', () => {
  it('changes cross a line of 5 replicas (r0 → r4) although r0 and r4 never meet', async () => {
    const result = await runSchedule(
      [
        { kind: 'deliverAll' },
        { kind: 'put', replica: 0, collection: 'todos', id: 'a', fields: { title: 'from r0', n: -0 } },
        { kind: 'update', replica: 4, collection: 'todos', id: 'a', patch: { done: NaN } },
        { kind: 'deliverAll' },
      ],
      { replicas: 5, seed: 3, topology: 'line', faults: NO_FAULTS },
    )
    assertConverged(result.replicas, { seed: 3 })
    const rec = result.replicas[4]!.collection('todos').get('a') as Record<string, unknown>
    expect(rec.title).toBe('from r0')
    expect(Object.is(rec.n, -0)).toBe(true)
    expect(Number.isNaN(rec.done)).toBe(true)
    await result.close()
  })

  it('an amnesiac replica (empty storage, same peer id) that writes before its first sync gets its own lost writes back', async () => {
    const result = await run([
      { kind: 'put', replica: 1, collection: 'todos', id: 'x', fields: { title: 'written by r1 before it lost its disk' } },
      { kind: 'deliverAll' },
      { kind: 'amnesia', replica: 1 },
      { kind: 'put', replica: 1, collection: 'todos', id: 'y', fields: { title: 'written by r1 before its first sync' } },
    ])
    assertConverged(result.replicas, { replay: 'Replay: the schedule of this test (no randomness)' })
    await result.close()
  })

  it('an amnesiac replica whose wall clock was set back to its first start gets a new origin all the same', async () => {
    // Replicas open at wall T. r1 writes x at T+1, then its clock steps back 4 ms, so when it loses its disk (step 3,
    // wall T+4-4 = T) its new history starts at the same ms as its first one, and its next write is again stamped
    // T+1, counter 0. An origin id made of the ms alone repeated: r0 took y for x's already-known timestamp.
    const result = await run([
      { kind: 'put', replica: 1, collection: 'todos', id: 'x', fields: { title: 'first history' } },
      { kind: 'deliverAll' },
      { kind: 'clock', replica: 1, ms: -4 },
      { kind: 'amnesia', replica: 1 },
      { kind: 'put', replica: 1, collection: 'todos', id: 'y', fields: { title: 'second history, same wall ms' } },
    ])
    assertConverged(result.replicas, { replay: 'Replay: the schedule of this test (no randomness)' })
    expect(result.replicas[0]!.collection('todos').get('y')).toBeDefined()
    await result.close()
  })

  it('a write broadcast before it was durable comes back to its replica after a crash (kill -9) and a new write', async () => {
    const result = await run([
      { kind: 'put', replica: 1, collection: 'todos', id: 'x', fields: { title: 'in flight when r1 crashed' } },
      { kind: 'restart', replica: 1, crash: true }, // x reached r0 but never r1's disk
      { kind: 'put', replica: 1, collection: 'todos', id: 'y', fields: { title: 'written by r1 after the crash' } },
    ])
    assertConverged(result.replicas, { replay: 'Replay: the schedule of this test (no randomness)' })
    await result.close()
  })

  it('a replica that crashed with a write in flight and whose clock stepped back never reissues that write’s timestamp', async () => {
    // r1 writes x at wall T+1 (step 0) and crashes; its clock steps back 3 ms, so its next write (step 3) is stamped
    // at wall T+1 again, counter 0: the same timestamp as x, with different content.
    const result = await run([
      { kind: 'put', replica: 1, collection: 'todos', id: 'x', fields: { title: 'in flight when r1 crashed' } },
      { kind: 'restart', replica: 1, crash: true },
      { kind: 'clock', replica: 1, ms: -3 },
      { kind: 'put', replica: 1, collection: 'todos', id: 'y', fields: { title: 'same timestamp as x' } },
    ])
    assertConverged(result.replicas, { replay: 'Replay: the schedule of this test (no randomness)' })
    await result.close()
  })

  // Found by the random proof (SEED=1780993900, 2958002, -251504778): an overwrite still in flight when its replica
  // crashed was held back from a sync answer that nevertheless claimed the older, durable write it had replaced.
  const LOSSY = { dropRate: 0.1, duplicateRate: 0.1, reorder: true }
  it('a sync answer never claims a durable write that an in-flight overwrite replaced (crash, amnesiac peer)', async () => {
    const steps: Step[] = [
      { kind: 'deliver', count: 6 },
      { kind: 'update', replica: 0, collection: 'todos', id: '__proto__', patch: { done: undefined, n: 0 } },
      { kind: 'amnesia', replica: 1 },
      { kind: 'update', replica: 0, collection: 'todos', id: '__proto__', patch: { title: 0, n: 0, ['__proto__']: 0 } },
      { kind: 'restart', replica: 0, crash: true },
    ]
    const result = await runSchedule(steps, { replicas: 2, seed: 370263453, faults: LOSSY })
    assertConverged(result.replicas, { replay: 'Replay: the schedule of this test' })
    await result.close()
  })

  it('a sync answer never claims a durable write that an in-flight overwrite replaced (crash, 7 replicas)', async () => {
    const steps: Step[] = [
      { kind: 'deliver', count: 1 },
      { kind: 'put', replica: 0, collection: 'todos', id: 'ab', fields: { done: 0, n: 0, ['__proto__']: 0, '': 0 } },
      { kind: 'put', replica: 2, collection: 'notes', id: '😀', fields: { ['__proto__']: 0, constructor: 0, '': 0 } },
      { kind: 'put', replica: 4, collection: 'todos', id: 'a', fields: { ['__proto__']: 0 } },
      { kind: 'deliver', count: 27 },
      { kind: 'deliver', count: 27 },
      { kind: 'put', replica: 0, collection: 'todos', id: 'ab', fields: { title: 0, done: 0, n: 0, ['__proto__']: 0, constructor: 0 } },
      { kind: 'restart', replica: 0, crash: true },
    ]
    const result = await runSchedule(steps, { replicas: 7, seed: 1, faults: LOSSY })
    assertConverged(result.replicas, { replay: 'Replay: the schedule of this test' })
    await result.close()
  })

  it('a sync answer never claims a durable write that an in-flight overwrite replaced (crash, removals)', async () => {
    const steps: Step[] = [
      { kind: 'update', replica: 1, collection: 'todos', id: 'b', patch: { title: 0, done: undefined, n: undefined, ['__proto__']: undefined, constructor: 0, '': 0 } },
      { kind: 'deliver', count: 2 },
      { kind: 'update', replica: 1, collection: 'todos', id: 'b', patch: { title: undefined, done: 0, n: undefined, ['__proto__']: 0, constructor: 0 } },
      { kind: 'restart', replica: 1, crash: true },
    ]
    const result = await runSchedule(steps, { replicas: 2, seed: 2147483643, faults: LOSSY })
    assertConverged(result.replicas, { replay: 'Replay: the schedule of this test' })
    await result.close()
  })

  // Found by the random proof (SEED=-775770614 PROP_PATH="392"): r3's delete, not yet durable, had erased r0's put
  // from r3's memory; r3's sync answer to the amnesiac r4 held the delete back but still claimed r0's writes; r3
  // then crashed and the delete was lost, leaving r4 with a claim on a put it never got.
  it('a sync answer that holds back a write claims nothing, since that write may have superseded any origin', async () => {
    const steps: Step[] = [
      { kind: 'deliver', count: 6 },
      { kind: 'deliver', count: 3 },
      { kind: 'put', replica: 2, collection: "todos", id: "ab", fields: { title: 0 } },
      { kind: 'antiEntropy', replica: 2 },
      { kind: 'antiEntropy', replica: 3 },
      { kind: 'update', replica: 4, collection: "todos", id: "a", patch: { done: 0, n: 0, constructor: 0 } },
      { kind: 'delete', replica: 0, collection: "todos", id: "😀" },
      { kind: 'update', replica: 2, collection: "notes", id: "ab", patch: { done: 0, n: undefined, ["__proto__"]: 0 } },
      { kind: 'deliver', count: 3 },
      { kind: 'deliver', count: 1 },
      { kind: 'put', replica: 2, collection: "notes", id: "b", fields: { title: 0, ["__proto__"]: 0, constructor: 0, "": 0 } },
      { kind: 'deliver', count: 4 },
      { kind: 'deliver', count: 16 },
      { kind: 'update', replica: 3, collection: "notes", id: "b", patch: { n: 0, constructor: 0 } },
      { kind: 'update', replica: 0, collection: "todos", id: "\ud83d", patch: { title: undefined, done: 0, constructor: undefined } },
      { kind: 'deliver', count: 7 },
      { kind: 'update', replica: 2, collection: "todos", id: "a", patch: { title: 0, done: 0, n: 0, ["__proto__"]: undefined, "": 0 } },
      { kind: 'put', replica: 3, collection: "notes", id: "\ud83d", fields: { title: null, done: 4503599627370496, n: "i;iwx(uf", ["__proto__"]: "\udc00".repeat(2443), "": "c-~l" } },
      { kind: 'update', replica: 1, collection: "notes", id: "b", patch: { done: undefined, "": 0 } },
      { kind: 'deliver', count: 4 },
      { kind: 'put', replica: 0, collection: "todos", id: "a", fields: { ["__proto__"]: 0 } },
      { kind: 'deliver', count: 3 },
      { kind: 'update', replica: 4, collection: "todos", id: "b", patch: { title: 0, done: undefined, n: 0 } },
      { kind: 'update', replica: 2, collection: "notes", id: "__proto__", patch: { done: 0, n: 0, ["__proto__"]: 0, constructor: undefined, "": 0 } },
      { kind: 'update', replica: 1, collection: "notes", id: "\ud83d", patch: { ["__proto__"]: 0 } },
      { kind: 'burst', dropRate: 0, duplicateRate: 0.3, steps: 8 },
      { kind: 'antiEntropy', replica: 0 },
      { kind: 'put', replica: 2, collection: "todos", id: "b", fields: { title: 0, "": 0 } },
      { kind: 'put', replica: 4, collection: "notes", id: "a", fields: { done: 0, n: 0 } },
      { kind: 'deliverAll' },
      { kind: 'update', replica: 4, collection: "notes", id: "__proto__", patch: { n: 0, constructor: undefined, "": undefined } },
      { kind: 'delete', replica: 2, collection: "todos", id: "a" },
      { kind: 'partition', groups: [2, 1, 1, 0, 1] },
      { kind: 'update', replica: 4, collection: "todos", id: "😀", patch: { title: undefined, done: undefined, ["__proto__"]: 0, "": 0 } },
      { kind: 'antiEntropy', replica: 2 },
      { kind: 'update', replica: 0, collection: "todos", id: "\ud83d", patch: { n: 0, ["__proto__"]: 0, constructor: undefined, "": undefined } },
      { kind: 'put', replica: 2, collection: "todos", id: "__proto__", fields: { title: 0, done: 0, "": 0 } },
      { kind: 'heal' },
      { kind: 'put', replica: 2, collection: "notes", id: "__proto__", fields: { title: 0, ["__proto__"]: 0, constructor: 0 } },
      { kind: 'partition', groups: [1, 2, 2, 1, 1] },
      { kind: 'update', replica: 3, collection: "notes", id: "b", patch: { title: 0, done: 0, n: 0, constructor: 0 } },
      { kind: 'put', replica: 1, collection: "notes", id: "a", fields: { title: 0, n: 0, constructor: 0, "": 0 } },
      { kind: 'antiEntropy', replica: 1 },
      { kind: 'put', replica: 0, collection: "notes", id: "\ud83d", fields: { done: 0, n: 0, ["__proto__"]: 0 } },
      { kind: 'amnesia', replica: 4 },
      { kind: 'update', replica: 2, collection: "notes", id: "b", patch: { done: 0, n: 0, "": undefined } },
      { kind: 'delete', replica: 3, collection: "notes", id: "\ud83d" },
      { kind: 'restart', replica: 3, crash: true },
    ]
    const result = await runSchedule(steps, { replicas: 5, seed: 272612649, faults: LOSSY, ...RUN })
    assertConverged(result.replicas, { replay: 'Replay: the schedule of this test' })
    await result.close()
  })
})
