/**
 * `sync()` is live on a lossless network (issue 11, item 1): on any schedule of writes, `sync()` calls and deliveries
 * over a full mesh that never loses a frame (but may reorder and duplicate them), with anti-entropy switched off,
 * every `sync()` has resolved once the network is quiet, and when it resolved every peer held what the caller held.
 *
 * The network runs in manual mode, so a run is a pure function of its case: replay a failure with the
 * `Replay: SEED=… PROP_PATH=…` line it prints (`NUM_RUNS=…` changes the run count):
 *   SEED=… PROP_PATH=… npx vitest run property-tests/sync-liveness.test.ts
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import { type VersionVector, covers } from '../crdt/version-vector.js'
import { createReplica } from '../src/index.js'
import { ReplicaImpl } from '../src/replica.js'
import { type Op, arbitraries } from '../src/testkit/index.js'
import { MemoryNetwork } from '../transports/memory.js'
import { asyncPropTest, check } from './helpers.js'

type Event =
  | { readonly t: 'write'; readonly op: Op }
  | { readonly t: 'sync'; readonly at: number }
  | { readonly t: 'deliver'; readonly count: number }

const MAX_REPLICAS = 6

const eventArb: fc.Arbitrary<Event> = fc.oneof(
  { weight: 4, arbitrary: arbitraries.op({ replicas: MAX_REPLICAS, value: fc.oneof(fc.integer(), fc.string({ maxLength: 4 }), fc.boolean()) }).map((op) => ({ t: 'write' as const, op })) },
  { weight: 2, arbitrary: fc.nat({ max: MAX_REPLICAS - 1 }).map((at) => ({ t: 'sync' as const, at })) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 30 }).map((count) => ({ t: 'deliver' as const, count })) },
)

const caseArb = fc.record({
  replicas: fc.integer({ min: 2, max: MAX_REPLICAS }),
  networkSeed: fc.nat(),
  reorder: fc.constantFrom(0, 0.5, 1),
  duplicateRate: fc.constantFrom(0, 0.2),
  events: fc.array(eventArb, { maxLength: 40 }),
})

/** Lets storage writes and the continuations they release run (they resolve through microtasks only). */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

describe('sync() on a lossless network', () => {
  asyncPropTest(
    'every sync() resolves once the network is quiet, without anti-entropy, and only when every peer holds what the caller held',
    { numRuns: 150 },
    () =>
      fc.asyncProperty(caseArb, async ({ replicas: n, networkSeed, reorder, duplicateRate, events }) => {
        let now = 1_700_000_000_000
        const net = new MemoryNetwork({ seed: networkSeed, mode: 'manual', reorder, duplicateRate })
        const rs: ReplicaImpl[] = []
        for (let i = 0; i < n; i++) {
          const r = await createReplica({ peerId: `r${i}`, transports: [net.transport()], antiEntropyMs: 0, clock: { now: () => now } })
          if (!(r instanceof ReplicaImpl)) throw new TypeError('createReplica did not return a ReplicaImpl')
          rs.push(r)
        }
        const syncs: { label: string; state: 'pending' | 'resolved' | 'rejected'; problem?: string }[] = []
        // Every replica's vector after each step and each delivered frame. A sync() resolves in the middle of a burst
        // of deliveries, but its callback runs only after the burst, when the caller may hold more: what it promised is
        // checked against the moments between its call and its callback.
        const history: VersionVector[][] = []
        const record = (): void => void history.push(rs.map((r) => r.store.versionVector()))
        const deliver = (count: number): void => {
          for (let i = 0; i < count && net.deliverNext(); i++) record()
        }
        try {
          // Every replica meets every other before the schedule starts (sync() is about connected peers).
          net.deliverAll()
          await turn()
          check(rs.every((r) => r.status().peers.length === n - 1), () => 'the mesh did not form')
          for (const [k, ev] of events.entries()) {
            now += 1
            if (ev.t === 'write') {
              const { op } = ev
              const c = rs[op.replica % n]!.collection(op.collection)
              void (op.kind === 'put' ? c.put({ ...op.fields, id: op.id }) : op.kind === 'update' ? c.update(op.id, op.patch) : c.delete(op.id))
            } else if (ev.t === 'sync') {
              const r = rs[ev.at % n]!
              const s: (typeof syncs)[number] = { label: `step ${k}: r${ev.at % n}.sync()`, state: 'pending' }
              syncs.push(s)
              const caller = ev.at % n
              record()
              const called = history.length - 1
              r.sync({ timeoutMs: 600_000 }).then(
                () => {
                  s.state = 'resolved'
                  // What a resolved sync() promises: at its resolution every peer held what the caller held. So at
                  // some moment between the call and now, no replica lacked anything of the caller's.
                  record()
                  const moments = history.slice(called)
                  if (!moments.some((vvs) => vvs.every((vv) => covers(vv, vvs[caller]!)))) {
                    const last = moments.at(-1)!
                    const behind = rs.filter((_, i) => !covers(last[i]!, last[caller]!)).map((o) => o.peerId)
                    s.problem = `resolved, but at no moment since the call did every replica hold what the caller held (now ${behind.join(', ')} lack some of it)`
                  }
                },
                (err: unknown) => {
                  s.state = 'rejected'
                  s.problem = String(err)
                },
              )
            } else {
              deliver(ev.count)
            }
            await turn()
            record()
          }
          // Quiet: deliver until nothing is queued, nothing more gets sent, and every write is durable.
          for (let rounds = 0; ; rounds++) {
            check(rounds < 1000, () => `the network never became quiet (${net.pending()} items queued)`)
            deliver(Infinity)
            await turn()
            record()
            await turn()
            record()
            if (net.pending() === 0 && rs.every((r) => r.status().pending === 0)) break
          }
          for (const s of syncs) {
            check(s.state === 'resolved', () => `${s.label} is still ${s.state} on a quiet lossless network${s.problem ? `: ${s.problem}` : ''}`)
            check(s.problem === undefined, () => `${s.label}: ${s.problem}`)
          }
          const digest = rs[0]!.store.digest()
          for (const r of rs) check(r.store.digest() === digest, () => `${r.peerId} diverged from r0 on a lossless mesh`)
          // A sync() started now, on a quiet network, resolves too.
          const last = rs[n - 1]!.sync({ timeoutMs: 600_000 })
          let done = false
          void last.then(() => (done = true))
          for (let rounds = 0; rounds < 1000 && !done; rounds++) {
            net.deliverAll()
            await turn()
          }
          check(done, () => `a sync() on the quiet network did not resolve (${net.pending()} items queued)`)
        } finally {
          await Promise.all(rs.map((r) => r.close()))
        }
      }),
    120_000,
  )
})
