/**
 * Collaborative text fields under faults, written with the public test kit:
 * - convergence: schedules mixing text edits of two fields with puts, updates and deletes of the same records, over
 *   2–4 replicas (100 seeds × 200 steps) with drops, duplicates, reordering, partitions, restarts, crashes and an amnesiac replica → every
 *   replica holds the same records and the same text;
 * - the floor rule, exactly: with every text edit inserting a character of its own and the clock advancing one
 *   millisecond per step (so stamps order as steps do), the text of a field after quiescence is exactly the
 *   characters inserted after the record's last put or delete, and the record is visible exactly when its last
 *   floor is a put or some text was written after it.
 *
 * Replay a failure with the `Replay: SEED=… PROP_PATH=…` line it prints (`NUM_RUNS=…` changes the run count).
 */
import fc from 'fast-check'
import { describe, it } from 'vitest'
import { type Step, arbitraries, assertConverged, runConvergenceProperty, runSchedule } from '../src/testkit/index.js'
import { ReplicaImpl } from '../src/replica.js'
import { ERASURE_BEFORE_AMNESIA } from './fixtures/erasure-before-amnesia.js'
import { assertAsyncProperty, check } from './helpers.js'

describe('text fields under faults', () => {
  it('converge with record writes, drops, duplicates, reordering, partitions, restarts, crashes and amnesia', async () => {
    let texts = 0
    let runs = 0
    await runConvergenceProperty({
      replicas: { min: 2, max: 4 },
      steps: 200,
      numRuns: 100,
      run: { maxFrameSize: 2048, replica: { compactAfterEntries: 16 } },
      schedule: {
        collections: ['todos'],
        ids: ['a', 'b', 'c'],
        fields: ['title', 'done'],
        text: { fields: ['notes', 'body'] },
        kinds: { put: 2, update: 2, delete: 1, text: 8 },
      },
      check: (result) => {
        runs++
        for (const line of result.trace) if (/ text /.test(line)) texts++
        const r0 = result.replicas[0] as ReplicaImpl
        check(r0.text !== undefined || !result.trace.some((l) => / text /.test(l)), () => 'a run with text ops opened replicas without text')
      },
    })
    check(texts > 20 * runs, () => `only ${texts} text edits ran in ${runs} runs`)
  }, 600_000)

  it('an erasure by a delete whose writer lost its storage before the delete left reaches every replica (pinned)', async () => {
    const run = await runSchedule(ERASURE_BEFORE_AMNESIA, { replicas: 3, seed: 2034894061, topology: 'mesh', maxFrameSize: 2048, replica: { compactAfterEntries: 16 } })
    try {
      assertConverged(run.replicas, { replay: 'Replay: the schedule in property-tests/fixtures/erasure-before-amnesia.ts' })
    } finally {
      await run.close()
    }
  })

  it('the floor rule: a field holds exactly the text inserted after the last put or delete, and the record is visible exactly when it should be', async () => {
    const caseArb = fc.integer({ min: 2, max: 3 }).chain((n) =>
      fc.record({
        n: fc.constant(n),
        seed: fc.nat(),
        steps: arbitraries
          .schedule({
            replicas: n,
            steps: { max: 80 },
            collections: ['todos'],
            ids: ['a', 'b'],
            fields: ['title'],
            text: { fields: ['notes', 'body'], insert: fc.constant('?') },
            kinds: { put: 2, update: 0, delete: 2, text: 8 },
            // No lost writes (crash, amnesia) and no clock jumps: stamps then order exactly as steps do.
            weights: { crash: 0, amnesia: 0, clock: 0 },
          })
          // One distinct character per edit, never removing: the final text tells which edits survived.
          .map((steps) => steps.map((s, i): Step => (s.kind === 'text' ? { ...s, remove: 0, insert: String.fromCharCode(0x4e00 + i) } : s))),
      }),
    )
    await assertAsyncProperty(
      fc.asyncProperty(caseArb, async ({ n, seed, steps }) => {
        const run = await runSchedule(steps, { replicas: n, seed, text: true })
        try {
          check(run.errors.length === 0, () => `errors: ${String(run.errors[0]?.error)}`)
          assertConverged(run.replicas)
          // The model: per record, the last floor (step index, put or delete) and the edits after it.
          const floors = new Map<string, { at: number; put: boolean }>()
          const edits: { at: number; id: string; field: string; ch: string }[] = []
          steps.forEach((s, at) => {
            if (s.kind === 'put' || s.kind === 'delete') floors.set(s.id, { at, put: s.kind === 'put' })
            if (s.kind === 'text') edits.push({ at, id: s.id, field: s.field, ch: s.insert })
          })
          for (const r of run.replicas) {
            const todos = r.collection('todos')
            for (const id of ['a', 'b']) {
              const floor = floors.get(id)
              const after = edits.filter((e) => e.id === id && (!floor || e.at > floor.at))
              for (const field of ['notes', 'body']) {
                const want = after.filter((e) => e.field === field).map((e) => e.ch).sort().join('')
                const got = [...(r as ReplicaImpl).text!.content('todos', id, field)].sort().join('')
                check(got === want, () => `${r.peerId} todos/${id}.${field}: holds ${JSON.stringify(got)}, the floor rule says ${JSON.stringify(want)}`)
              }
              const visible = (floor?.put ?? false) || after.length > 0
              check((todos.get(id) !== undefined) === visible, () => `${r.peerId} todos/${id}: visible ${todos.get(id) !== undefined}, the floor rule says ${visible}`)
            }
          }
        } finally {
          await run.close()
        }
      }),
      { numRuns: 100 },
    )
  }, 600_000)
})
