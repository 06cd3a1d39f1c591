/**
 * Unit tests of the convergence test kit itself: the diff is exact and readable, runs are deterministic, failures
 * carry a working replay, generated data stays inside its pools, and the README example runs.
 */
import fc from 'fast-check'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { InvalidArgumentError } from '../../crdt/errors.js'
import { type Value, normalizeValue } from '../../crdt/value.js'
import { type Replica, createReplica } from '../../src/replica.js'
import {
  ConvergenceError,
  ConvergencePropertyError,
  NotQuiescentError,
  type Op,
  RunErrorsError,
  type RunResult,
  type Step,
  arbitraries,
  assertConverged,
  compareReplicas,
  formatSchedule,
  formatValue,
  runConvergenceProperty,
  runSchedule,
  transportConformanceCases,
} from '../../src/testkit/index.js'

/** The replay environment variables would change what these tests ask for: set them aside. */
const ENV = ['SEED', 'PROP_PATH', 'NUM_RUNS'] as const
const saved: Partial<Record<(typeof ENV)[number], string>> = {}
beforeEach(() => {
  for (const k of ENV) {
    saved[k] = process.env[k]
    delete process.env[k]
  }
})
afterEach(() => {
  for (const k of ENV) if (saved[k] !== undefined) process.env[k] = saved[k]
})

async function pair(a: Record<string, unknown>, b: Record<string, unknown>): Promise<Replica[]> {
  const r0 = await createReplica({ peerId: 'r0' })
  const r1 = await createReplica({ peerId: 'r1' })
  await r0.collection('todos').put({ id: 'a', ...a })
  await r1.collection('todos').put({ id: 'a', ...b })
  return [r0, r1]
}

function divergence(fn: () => void): ConvergenceError {
  try {
    fn()
  } catch (e) {
    expect(e).toBeInstanceOf(ConvergenceError)
    return e as ConvergenceError
  }
  throw new Error('expected a ConvergenceError')
}

describe('assertConverged', () => {
  it('detects a single-field difference, names the record and field, and prints the seed', async () => {
    const replicas = await pair({ title: 'x', n: 1 }, { title: 'y', n: 1 })
    const err = divergence(() => assertConverged(replicas, { seed: 42 }))
    expect(err.name).toBe('ConvergenceError')
    expect(err.code).toBe('CONVERGENCE')
    expect(err.message).toContain('todos/"a"."title": r0 = "x" | r1 = "y"')
    expect(err.message).not.toContain('"n"')
    expect(err.message).toContain('Replay: SEED=42')
    expect(err.differences.map((d) => d.where)).toEqual(['digest', 'todos/"a"."title"'])
  })

  it('tells NaN from null and -0 from 0, and renders them as such', async () => {
    const replicas = await pair({ v: NaN, z: -0 }, { v: null, z: 0 })
    const e = divergence(() => assertConverged(replicas))
    expect(e.message).toContain('todos/"a"."v": r0 = NaN | r1 = null')
    expect(e.message).toContain('todos/"a"."z": r0 = -0 | r1 = 0')
  })

  it('treats NaN as equal to NaN (value-exact, not ===)', async () => {
    const replicas = await pair({ v: NaN, z: -0, b: new Uint8Array([1, 2]) }, { v: NaN, z: -0, b: new Uint8Array([1, 2]) })
    expect(() => assertConverged(replicas)).not.toThrow()
    expect(compareReplicas(replicas)).toEqual([])
  })

  it('renders Uint8Array, lone surrogates, __proto__ keys and missing records exactly', async () => {
    const r0 = await createReplica({ peerId: 'r0' })
    const r1 = await createReplica({ peerId: 'r1' })
    const r2 = await createReplica({ peerId: 'r2' })
    const proto = JSON.parse('{"__proto__": 1}') as { [k: string]: number }
    await r0.collection('c').put({ id: '\uD800', b: new Uint8Array([0, 255]), o: proto })
    await r1.collection('c').put({ id: '\uD800', b: new Uint8Array([0, 254]), o: proto })
    const e = divergence(() => assertConverged([r0, r1, r2]))
    expect(e.message).toContain('c/"\\ud800": r0,r1 = ')
    expect(e.message).toContain('r2 = <no record>')
    expect(e.message).toContain('c/"\\ud800"."b": r0 = Uint8Array(2)[00 ff] | r1 = Uint8Array(2)[00 fe]')
    expect(formatValue(proto as never)).toBe('{"__proto__": 1}')
  })

  it('shows at most 20 differences and counts the rest', async () => {
    const a: Record<string, number> = {}
    const b: Record<string, number> = {}
    for (let i = 0; i < 30; i++) {
      a[`f${String(i).padStart(2, '0')}`] = i
      b[`f${String(i).padStart(2, '0')}`] = -i - 1
    }
    const replicas = await pair(a, b)
    const err = divergence(() => assertConverged(replicas))
    expect(err.differences).toHaveLength(31) // the digest and 30 fields
    expect(err.message.split('\n').filter((l) => l.startsWith('  todos/'))).toHaveLength(19)
    expect(err.message).toContain('… and 11 more')
  })

  it('passes for a single replica or identical replicas', async () => {
    const replicas = await pair({ t: 'same' }, { t: 'same' })
    expect(() => assertConverged(replicas)).not.toThrow()
    expect(() => assertConverged(replicas.slice(0, 1))).not.toThrow()
  })
})

describe('runSchedule', () => {
  const schedule = (seed: number, replicas = 4, steps = 300): Step[] =>
    fc.sample(arbitraries.schedule({ replicas, steps }), { seed, numRuns: 1 })[0]!

  it('is deterministic: the same seed and schedule give the same trace and the same final digests', async () => {
    const steps = schedule(7)
    const digests = (r: RunResult): string[] => r.replicas.map((x) => (x as unknown as { store: { digest(): string } }).store.digest())
    const a = await runSchedule(steps, { replicas: 4, seed: 99 })
    const b = await runSchedule(steps, { replicas: 4, seed: 99 })
    expect(b.trace).toEqual(a.trace)
    expect(digests(b)).toEqual(digests(a))
    expect(a.trace.length).toBeGreaterThan(steps.length)
    const c = await runSchedule(steps, { replicas: 4, seed: 100 })
    expect(c.trace).not.toEqual(a.trace) // the network seed matters
    for (const r of [a, b, c]) await r.close()
  })

  it('runs to quiescence: a write made during a partition reaches every replica afterwards', async () => {
    const result = await runSchedule(
      [
        { kind: 'partition', groups: [0, 1, 1] },
        { kind: 'put', replica: 0, collection: 'todos', id: 'a', fields: { n: -0, x: NaN } },
        { kind: 'deliverAll' },
      ],
      { replicas: 3, seed: 5 },
    )
    for (const r of result.replicas) {
      const rec = r.collection('todos').get('a') as Record<string, unknown>
      expect(Object.is(rec.n, -0)).toBe(true)
      expect(Number.isNaN(rec.x)).toBe(true)
    }
    expect(result.errors).toEqual([])
    expect(result.network.pending()).toBe(0)
    await result.close()
  })

  it('keeps links outside the topology cut for the whole run', async () => {
    const met: string[] = []
    const result = await runSchedule(
      [
        { kind: 'heal' },
        { kind: 'link', a: 0, b: 2, up: true }, // not a link of a line: ignored
        { kind: 'put', replica: 0, collection: 'todos', id: 'a', fields: { t: 1 } },
        { kind: 'deliverAll' },
      ],
      { replicas: 3, seed: 1, topology: 'line', onReplica: (r) => void r.on('peer:join', (p) => met.push(`${r.peerId}-${p}`)) },
    )
    expect(met.sort()).toEqual(['r0-r1', 'r1-r0', 'r1-r2', 'r2-r1'])
    expect(result.trace.some((l) => l.includes('ignored'))).toBe(true)
    expect(result.replicas[2]!.collection('todos').get('a')).toEqual({ id: 'a', t: 1 })
    await result.close()
  })

  it('reopens restarted, crashed and amnesiac replicas with the same peer id', async () => {
    const result = await runSchedule(
      [
        { kind: 'put', replica: 1, collection: 'todos', id: 'a', fields: { t: 1 } },
        { kind: 'restart', replica: 1, crash: false },
        { kind: 'restart', replica: 1, crash: true },
        { kind: 'amnesia', replica: 0 },
      ],
      { replicas: 2, seed: 1 },
    )
    expect(result.replicas.map((r) => r.peerId)).toEqual(['r0', 'r1'])
    expect(result.trace.filter((l) => /restart r1|crash r1|amnesia r0/.test(l))).toHaveLength(3)
    assertConverged(result.replicas)
    await result.close()
  })

  it('throws NotQuiescentError with the last states when quiescence takes more rounds than allowed', async () => {
    await expect(runSchedule([], { replicas: 2, maxRounds: 0 })).rejects.toBeInstanceOf(NotQuiescentError)
  })

  it('refuses a step that names a replica the run does not have', async () => {
    await expect(runSchedule([{ kind: 'delete', replica: 5, collection: 'c', id: 'a' }], { replicas: 2 })).rejects.toThrow(/names replica 5/)
  })

  it('a put with an undefined field writes the record without that field, as Collection.put does', async () => {
    const steps: Step[] = [{ kind: 'put', replica: 0, collection: 'todos', id: 'a', fields: { title: 'x', n: undefined } }]
    const run = await runSchedule(steps, { replicas: 2, faults: { dropRate: 0, duplicateRate: 0, reorder: false } })
    expect(run.errors).toEqual([])
    assertConverged(run.replicas)
    expect(run.replicas[1]!.collection('todos').get('a')).toEqual({ id: 'a', title: 'x' })
    await run.close()
  })

  it('refuses bad arguments with InvalidArgumentError (a SyncmeshError with a code), not a bare TypeError', async () => {
    const err = await runSchedule([], { replicas: 0 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(InvalidArgumentError)
    expect((err as InvalidArgumentError).code).toBe('INVALID_ARGUMENT')
    await expect(runSchedule([{ kind: 'partition', groups: [] }], { replicas: 2 })).rejects.toBeInstanceOf(InvalidArgumentError)
    expect(() => arbitraries.op({ fields: ['id'] })).toThrow(InvalidArgumentError)
  })
})

describe('arbitraries', () => {
  it('value() yields storable values, edge cases included', () => {
    const values = fc.sample(arbitraries.value(), { seed: 3, numRuns: 3000 })
    for (const v of values) expect(() => normalizeValue(v)).not.toThrow()
    expect(values.some((v) => Number.isNaN(v))).toBe(true)
    expect(values.some((v) => Object.is(v, -0))).toBe(true)
    expect(values.some((v) => v instanceof Uint8Array)).toBe(true)
    expect(values.some((v) => typeof v === 'string' && /^[\uDC00-\uDFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])/.test(v))).toBe(true) // a lone surrogate
    expect(values.some((v) => typeof v === 'string' && v.length >= 1000)).toBe(true)
    expect(values.some((v) => typeof v === 'object' && v !== null && !(v instanceof Uint8Array) && Object.keys(v).includes('__proto__'))).toBe(true)
  })

  it('op() stays inside its pools and uses the given value arbitrary', () => {
    const ops = fc.sample(arbitraries.op({ replicas: 3, collections: ['c'], ids: ['x', 'y'], fields: ['f', 'g'], value: fc.constant('v') }), { seed: 1, numRuns: 500 })
    const kinds = new Set(ops.map((o: Op) => o.kind))
    expect(kinds).toEqual(new Set(['put', 'update', 'delete']))
    for (const o of ops) {
      expect(o.replica).toBeGreaterThanOrEqual(0)
      expect(o.replica).toBeLessThan(3)
      expect(o.collection).toBe('c')
      expect(['x', 'y']).toContain(o.id)
      const fields = o.kind === 'put' ? o.fields : o.kind === 'update' ? o.patch : {}
      for (const [k, v] of Object.entries(fields)) {
        expect(['f', 'g']).toContain(k)
        expect([undefined, 'v']).toContain(v)
      }
    }
  })

  it("schedule() gives amnesia only to the amnesiac replica and honours zero weights", () => {
    const steps = fc.sample(arbitraries.schedule({ replicas: 4, steps: 400, amnesiac: 2, weights: { partition: 0 } }), { seed: 9, numRuns: 5 }).flat()
    expect(steps).toHaveLength(2000)
    const amnesia = steps.filter((s) => s.kind === 'amnesia')
    expect(amnesia.length).toBeGreaterThan(0)
    for (const s of amnesia) expect(s).toEqual({ kind: 'amnesia', replica: 2 })
    expect(steps.some((s) => s.kind === 'partition')).toBe(false)
    expect(() => arbitraries.schedule({ replicas: 2, amnesiac: 5 })).toThrow(InvalidArgumentError)
  })
})

describe('formatSchedule', () => {
  it('prints steps as code that evaluates back to the same steps (NaN, -0, bytes, lone surrogates, __proto__)', () => {
    const steps = fc.sample(arbitraries.schedule({ replicas: 3, steps: 200 }), { seed: 11, numRuns: 1 })[0]!
    const code = formatSchedule(steps)
    const back = new Function(`return ${code}`)() as Step[]
    expect(back).toHaveLength(steps.length)
    // Object.is-exact comparison through the canonical formatter, which renders -0, NaN and bytes distinctly.
    expect(formatSchedule(back)).toBe(code)
    const withProto = back.find((s) => s.kind === 'put' && Object.keys(s.fields).includes('__proto__'))
    if (withProto && withProto.kind === 'put') expect(Object.getPrototypeOf(withProto.fields)).toBe(Object.prototype)
  })
})

describe('runConvergenceProperty', () => {
  it('passes on a healthy system', async () => {
    let runs = 0
    await runConvergenceProperty({ replicas: { min: 2, max: 3 }, steps: 60, numRuns: 10, seed: 1, schedule: { weights: { amnesia: 0, crash: 0 } }, check: () => void runs++ })
    expect(runs).toBe(10)
  })

  it('fails with the Replay line first, a minimal schedule, and replays the same failure from SEED and PROP_PATH', async () => {
    const logged: string[] = []
    // An app-level invariant that breaks as soon as a record has a field `n` equal to 0.
    const check = (r: RunResult): void => {
      for (const rep of r.replicas) for (const rec of rep.collection('todos').all()) if (Object.is(rec.n, 0)) throw new Error('n must never be 0')
    }
    const options = { replicas: 2, steps: 80, numRuns: 50, seed: 1234, check, log: (l: string) => void logged.push(l), minimizeMs: 10_000, schedule: { weights: { amnesia: 0, crash: 0 } } }
    const err = await runConvergenceProperty(options).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(ConvergencePropertyError)
    const e = err as ConvergencePropertyError
    expect(e.message.split('\n')[0]).toMatch(/^Replay: SEED=1234 PROP_PATH="\d+"$/)
    expect(logged).toEqual([e.message.split('\n')[0]])
    expect(e.message).toContain('n must never be 0')
    expect(e.minimal!.steps.length).toBeLessThan(e.counterexample!.steps.length)
    expect(e.message).toContain('const steps: Step[] = [')
    // The replay: the path through the environment, as a user would.
    process.env.SEED = '1234'
    process.env.PROP_PATH = e.path!
    const again = await runConvergenceProperty({ ...options, seed: 1, minimizeMs: 0 }).then(
      () => undefined,
      (x: unknown) => x as ConvergencePropertyError,
    )
    expect(again?.counterexample).toEqual(e.counterexample)
    // And the minimal schedule fails on its own with runSchedule.
    const m = e.minimal!
    const run = await runSchedule(m.steps, { replicas: m.replicas, seed: m.networkSeed, topology: m.topology })
    expect(() => check(run)).toThrow('n must never be 0')
    await run.close()
  }, 60_000)

  it('fails a run in which a replica reported an error with RunErrorsError as the cause', async () => {
    // A function is not a storable value: every put and update of it is refused, and the run records the error.
    const value = fc.constant((() => 0) as unknown as Value)
    const err = await runConvergenceProperty({ replicas: 2, steps: 20, numRuns: 5, seed: 7, minimizeMs: 0, log: () => {}, schedule: { value } }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ConvergencePropertyError)
    const cause = (err as ConvergencePropertyError).cause
    expect(cause).toBeInstanceOf(RunErrorsError)
    expect((cause as RunErrorsError).code).toBe('RUN_ERRORS')
    expect((cause as RunErrorsError).errors.length).toBeGreaterThan(0)
  })
})

describe('re-exports', () => {
  it('exports the Transport conformance suite', () => {
    expect(typeof transportConformanceCases).toBe('function')
  })
})

// ---------------------------------------------------------------------------------------------------------------------
// The README example, verbatim except for the import path.

{
  // ---- README begins ----
  // Values from your domain, plus the kit's edge cases (NaN, -0, lone surrogates, Uint8Array, '__proto__' keys…)
  const value = fc.oneof(
    fc.integer({ min: 0, max: 100_000 }).map((cents) => cents / 100), // prices
    fc.constantFrom('open', 'paid', 'void'), // statuses
    arbitraries.value(),
  )

  describe('invoices on syncmesh', () => {
    it('converge under drops, duplicates, reordering, partitions, restarts and crashes', () =>
      runConvergenceProperty({
        replicas: { min: 2, max: 5 },
        steps: 200,
        numRuns: 50,
        schedule: { collections: ['invoices'], ids: ['inv-1', 'inv-2', 'inv-3'], fields: ['total', 'status', 'note'], value },
      }), 120_000)

    it('converge after a concurrent update and delete across a partition', async () => {
      const steps: Step[] = [
        { kind: 'put', replica: 0, collection: 'invoices', id: 'inv-1', fields: { total: 19.99, status: 'open' } },
        { kind: 'deliverAll' },
        { kind: 'partition', groups: [0, 1] }, // r0 and r1 can no longer reach each other
        { kind: 'update', replica: 1, collection: 'invoices', id: 'inv-1', patch: { status: 'paid' } },
        { kind: 'delete', replica: 0, collection: 'invoices', id: 'inv-1' },
        { kind: 'heal' },
      ]
      const run = await runSchedule(steps, { replicas: 2, seed: 1 })
      assertConverged(run.replicas, { seed: 1 }) // the later write wins on both replicas
      await run.close()
    })
  })
  // ---- README ends ----
}
