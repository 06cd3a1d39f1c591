/**
 * The one-line property: generated schedules over generated replica counts, each run to quiescence and checked for
 * convergence; seeded and replayable (`SEED`, `PROP_PATH`, `NUM_RUNS`), with the failing schedule minimized.
 */
import fc from 'fast-check'
import { InvalidArgumentError, SyncmeshError } from '../../crdt/errors.js'
import { type AssertConvergedOptions, assertConverged } from './converge.js'
import { type ScheduleOptions, scheduleArb } from './generators.js'
import { describeError, formatSchedule } from './print.js'
import { type RunError, type RunResult, type RunScheduleOptions, runSchedule } from './run.js'
import type { Faults, Step, Topology } from './schedule.js'
import { minimizeSchedule, simplifyValues } from './shrink.js'

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

/**
 * Replicas or the network reported errors during a run of {@link runConvergenceProperty} (`error` events, failed
 * writes, throwing listeners), which fails the run unless `allowErrors` is set; `cause` is the first of them.
 */
export class RunErrorsError extends SyncmeshError {
  override readonly code = 'RUN_ERRORS'
  constructor(
    message: string,
    /** Every error reported, in order. */
    readonly errors: readonly RunError[],
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

/** The environment variable `name`, trimmed; undefined when unset or blank (or outside Node). */
export function envValue(name: string): string | undefined {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env
  const raw = env?.[name]?.trim()
  return raw === undefined || raw === '' ? undefined : raw
}

/** The environment variable `name` as an integer (undefined when unset); anything else is an InvalidArgumentError. */
export function envInt(name: string): number | undefined {
  const raw = envValue(name)
  if (raw === undefined) return undefined
  const n = Number(raw)
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`${name} must be an integer, got ${JSON.stringify(raw)}`)
  return n
}

/** The fast-check arbitrary of whole runs that {@link runConvergenceProperty} uses. */
export function convergenceCaseArb(options: Pick<ConvergencePropertyOptions, 'replicas' | 'steps' | 'topology' | 'schedule'> = {}): fc.Arbitrary<ConvergenceCase> {
  const r = options.replicas ?? { min: 2, max: 5 }
  const [min, max] = typeof r === 'number' ? [r, r] : [r.min, r.max]
  const topologies: readonly Topology[] = options.topology === undefined ? ['mesh'] : typeof options.topology === 'string' ? [options.topology] : options.topology
  if (topologies.length === 0) throw new InvalidArgumentError('runConvergenceProperty: topology list is empty')
  if (!(Number.isSafeInteger(min) && Number.isSafeInteger(max) && min >= 1 && max >= min)) throw new InvalidArgumentError('runConvergenceProperty: replicas must be a positive integer or a { min, max } range')
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
        throw new RunErrorsError(
          `${result.errors.length} error(s) reported during the run; first, by ${e.replica < 0 ? 'a network listener' : `r${e.replica}`} at step ${e.step}: ${describeError(e.error)}`,
          result.errors,
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
