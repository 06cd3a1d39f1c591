/**
 * Crash test: a child process (`crash-child.ts`) writes through a replica on LevelDB as fast as it can and reports
 * each acknowledged unit of writes; the parent kills it with SIGKILL at a seeded random instant 50–400 ms after the
 * first acknowledgement (the child compacts every 50 log entries, so many kills land mid-compaction or mid-write),
 * reopens the store with `createReplica({ storage: levelStorage(dir) })` and checks that
 *  - the store loads (no StorageCorruptError, no other failure), and
 *  - the collection holds exactly the state after the acknowledged units — or after one more unit, the one that may
 *    have been in flight and durable but not yet reported. Every acknowledged write is there with its exact value,
 *    deletes included, and nothing else is.
 *
 * CRASH_RUNS (default 50; `npm run stress` runs 1 000), CRASH_SEED (default random; run i > 0 uses a seed derived from
 * it), CRASH_CONCURRENCY (default 2: children start up in parallel). A failure prints its seed and the line that
 * replays it: CRASH_SEED=<seed> CRASH_RUNS=1 npx vitest run test/storage/crash.test.ts
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, expect, it } from 'vitest'
import { createReplica } from '../../src/replica.js'
import { LevelStorage, levelStorage } from '../../src/storage/level.js'
import { CRASH_COLLECTION, type CrashValue, applyUnit, crashUnits } from './crash-child.js'

const RUNS = envInt('CRASH_RUNS') ?? 50
const MASTER_SEED = envInt('CRASH_SEED') ?? Math.floor(Math.random() * 2 ** 31)
const CONCURRENCY = Math.max(1, envInt('CRASH_CONCURRENCY') ?? 2)
const COMPACT_AFTER_ENTRIES = 50
const KILL_MIN_MS = 50
const KILL_SPREAD_MS = 350
/** A child that has not acknowledged anything after this long (start-up included) fails its run. */
const FIRST_ACK_TIMEOUT_MS = 30_000

const CHILD = fileURLToPath(new URL('./crash-child.ts', import.meta.url))
const REPO = fileURLToPath(new URL('../..', import.meta.url))

function envInt(name: string): number | undefined {
  const raw = process.env[name]?.trim()
  if (!raw) return undefined
  const n = Number(raw)
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(raw)}`)
  return n
}

/** Seed of run i: the master seed itself for run 0, so that `CRASH_SEED=<seed> CRASH_RUNS=1` replays any run. */
function runSeed(i: number): number {
  if (i === 0) return MASTER_SEED
  let x = (MASTER_SEED ^ Math.imul(i, 0x9e3779b1)) >>> 0
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0
  return (x ^ (x >>> 16)) & 0x7fffffff
}

/** Kill delay of a run, derived from its seed (independent of the writes). */
function killDelay(seed: number): number {
  const x = Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2d) >>> 0
  return KILL_MIN_MS + (((x ^ (x >>> 15)) >>> 0) % (KILL_SPREAD_MS + 1))
}

interface RunResult {
  readonly seed: number
  readonly killMs: number
  readonly ackedUnits: number
  readonly ackedWrites: number
  /** Whether the unit after the last acknowledged one turned out durable too. */
  readonly inFlightDurable: boolean
  /** The kill left a compaction half done (an old snapshot, or log entries the newest snapshot covers). */
  readonly midCompaction: boolean
  readonly storedEntries: number
  readonly failure?: { kind: 'lost' | 'unloadable' | 'child'; message: string; lostWrites: number }
}

const live = new Set<ChildProcess>()
const dirs: string[] = []
afterAll(async () => {
  for (const c of live) c.kill('SIGKILL')
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})

/** Starts the child, kills it `killMs` after its first acknowledgement, and returns the acknowledged unit count. */
function runChild(dir: string, seed: number, killMs: number): Promise<{ acked: number; killedByUs: boolean; stderr: string; exit: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, String(seed), String(COMPACT_AFTER_ENTRIES)], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '' },
    })
    live.add(child)
    let out = ''
    let stderr = ''
    let killedByUs = false
    let killTimer: ReturnType<typeof setTimeout> | undefined
    const kill = () => {
      killedByUs = true
      child.kill('SIGKILL')
    }
    const startTimer = setTimeout(kill, FIRST_ACK_TIMEOUT_MS)
    child.stdout!.setEncoding('utf8')
    child.stdout!.on('data', (chunk: string) => {
      out += chunk
      if (killTimer === undefined && out.includes('\n')) {
        clearTimeout(startTimer)
        killTimer = setTimeout(kill, killMs)
      }
    })
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (chunk: string) => {
      stderr += chunk
    })
    child.on('error', reject)
    // 'close': the process is gone AND its stdout is drained, so every line it wrote before dying has been read.
    child.on('close', (code, signal) => {
      live.delete(child)
      clearTimeout(startTimer)
      clearTimeout(killTimer)
      const lines = out.split('\n')
      lines.pop() // an incomplete last line is not an acknowledgement
      for (let i = 0; i < lines.length; i++) {
        if (lines[i] !== String(i)) return reject(new Error(`child reported ${JSON.stringify(lines[i])} as its acknowledgement #${i}`))
      }
      resolve({ acked: lines.length, killedByUs: killedByUs && signal === 'SIGKILL', stderr, exit: signal ?? `exit code ${code}` })
    })
  })
}

function sameValue(a: unknown, b: CrashValue | undefined): boolean {
  if (a instanceof Uint8Array && b instanceof Uint8Array) return a.length === b.length && a.every((x, i) => x === b[i])
  return Object.is(a, b)
}

/** Records of `got` that differ from `model` (missing, extra, or with a different field set or value). */
function differences(got: Map<string, Record<string, unknown>>, model: Map<string, Record<string, CrashValue>>): string[] {
  const out: string[] = []
  for (const [id, want] of model) {
    const have = got.get(id)
    if (!have) {
      out.push(`${id} missing`)
      continue
    }
    const keys = new Set([...Object.keys(want), ...Object.keys(have)])
    keys.delete('id')
    for (const k of keys) if (!sameValue(have[k], want[k])) out.push(`${id}.${k} differs`)
  }
  for (const id of got.keys()) if (!model.has(id)) out.push(`${id} should not exist`)
  return out
}

async function oneRun(index: number): Promise<RunResult> {
  const seed = runSeed(index)
  const killMs = killDelay(seed)
  const dir = await mkdtemp(join(tmpdir(), `syncmesh-crash-${index}-`))
  dirs.push(dir)
  const base = { seed, killMs, ackedUnits: 0, ackedWrites: 0, inFlightDurable: false, midCompaction: false, storedEntries: 0 }
  try {
    const child = await runChild(dir, seed, killMs)
    if (!child.killedByUs || child.acked === 0) {
      return { ...base, ackedUnits: child.acked, failure: { kind: 'child', message: `child ended by itself (${child.exit}) after ${child.acked} acks: ${child.stderr.trim().slice(0, 2000)}`, lostWrites: 0 } }
    }
    // The two states the store may hold: after the acknowledged units, or after one more (in flight at the kill).
    const units = crashUnits(seed)
    const acked = new Map<string, Record<string, CrashValue>>()
    let ackedWrites = 0
    for (let u = 0; u < child.acked; u++) {
      const unit = units.next().value!
      ackedWrites += unit.length
      applyUnit(acked, unit)
    }
    const withNext = new Map([...acked].map(([id, r]) => [id, { ...r }]))
    applyUnit(withNext, units.next().value!)
    const result = { ...base, ackedUnits: child.acked, ackedWrites }

    // What the kill left behind, read raw (before the replica's own open).
    let midCompaction = false
    let storedEntries = 0
    try {
      const raw = await LevelStorage.open(dir)
      try {
        const keys = (await raw.loadRange([])).map((e) => e.key)
        storedEntries = keys.length
        const snapshots = keys.filter((k) => k[0] === 'snapshot').map((k) => Number(k[1]))
        const newest = Math.max(-1, ...snapshots)
        midCompaction = snapshots.length > 1 || keys.some((k) => k[0] === 'log' && Number(k[1]) <= newest)
      } finally {
        await raw.close()
      }
    } catch (err) {
      return { ...result, failure: { kind: 'unloadable', message: `LevelDB store does not open: ${String(err)}`, lostWrites: 0 } }
    }

    const storage = levelStorage(dir)
    let replica
    try {
      replica = await createReplica({ storage })
    } catch (err) {
      await storage.close().catch(() => {})
      return { ...result, midCompaction, storedEntries, failure: { kind: 'unloadable', message: `createReplica failed: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`, lostWrites: 0 } }
    }
    try {
      const got = new Map(replica.collection(CRASH_COLLECTION).all().map((r) => [r.id, r as Record<string, unknown>]))
      const vsAcked = differences(got, acked)
      if (vsAcked.length === 0) return { ...result, midCompaction, storedEntries }
      const vsNext = differences(got, withNext)
      if (vsNext.length === 0) return { ...result, midCompaction, storedEntries, inFlightDurable: true }
      return {
        ...result,
        midCompaction,
        storedEntries,
        failure: {
          kind: 'lost',
          message: `after ${child.acked} acknowledged units the store matches neither the acknowledged state (${vsAcked.length} differences: ${vsAcked.slice(0, 5).join(', ')}) nor the state with the in-flight unit (${vsNext.slice(0, 5).join(', ')})`,
          lostWrites: Math.min(vsAcked.length, vsNext.length),
        },
      }
    } finally {
      await replica.close()
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

it(
  `acknowledged writes survive kill -9 of a process writing through LevelDB (${RUNS} runs)`,
  async () => {
    console.log(`[crash] ${RUNS} runs, CRASH_SEED=${MASTER_SEED}, concurrency ${CONCURRENCY}, compactAfterEntries ${COMPACT_AFTER_ENTRIES}`)
    const t0 = performance.now()
    const results: RunResult[] = []
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < RUNS) {
        const i = next++
        const r = await oneRun(i)
        results.push(r)
        if (r.failure) {
          console.error(`[crash] run ${i} FAILED (${r.failure.kind}), seed ${r.seed}, kill after ${r.killMs} ms: ${r.failure.message}`)
          console.error(`[crash] replay: CRASH_SEED=${r.seed} CRASH_RUNS=1 npx vitest run test/storage/crash.test.ts`)
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, RUNS) }, worker))
    const seconds = (performance.now() - t0) / 1000
    const failures = results.filter((r) => r.failure)
    const sum = (f: (r: RunResult) => number): number => results.reduce((n, r) => n + f(r), 0)
    const lost = sum((r) => (r.failure?.kind === 'lost' ? r.failure.lostWrites : 0))
    const unloadable = results.filter((r) => r.failure?.kind === 'unloadable').length
    const units = results.map((r) => r.ackedUnits).sort((a, b) => a - b)
    console.log(
      `[crash] ${results.length} runs in ${seconds.toFixed(1)} s: acknowledged writes verified ${sum((r) => r.ackedWrites)} ` +
        `(${sum((r) => r.ackedUnits)} units; per run min ${units[0]}, median ${units[Math.floor(units.length / 2)]}, max ${units.at(-1)}), ` +
        `lost ${lost}, unloadable stores ${unloadable}, child failures ${results.filter((r) => r.failure?.kind === 'child').length}; ` +
        `in-flight unit durable in ${results.filter((r) => r.inFlightDurable).length} runs, killed mid-compaction in ${results.filter((r) => r.midCompaction).length} runs`,
    )
    expect(failures.map((f) => `seed ${f.seed}: ${f.failure!.kind}: ${f.failure!.message}`)).toEqual([])
    expect(results.length).toBe(RUNS)
  },
  60_000 + RUNS * 5_000,
)
