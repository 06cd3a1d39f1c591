/**
 * `npm run bench`: runs each selected (system, workload) BENCH_RUNS times (default 3), every run in a fresh worker
 * process, prints a markdown report of the medians and writes the raw results to `.bench-results/latest.json`.
 *   tsx bench/run.ts [--only W1,W2,API] [--systems syncmesh,yjs]     env: BENCH_RUNS, BENCH_SCALE, BENCH_SEED
 */
import { spawnSync } from 'node:child_process'
import { buildSync } from 'esbuild'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { scaledSizes } from './data.js'
import { errorMessage, oneOf, type WorkerResult } from './protocol.js'
import { cellKey, renderReport, type Problem } from './report.js'
import { SYSTEM_NAMES, type SystemName } from './systems/types.js'
import { FROM_W1_STATES, WORKLOADS, type Metrics, type WorkloadName } from './workloads.js'

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.dirname(BENCH_DIR)
const WORKER_SOURCE = path.join(BENCH_DIR, 'worker.ts')
const WORKER_DIR = path.join(ROOT, '.bench-results', 'worker')
const WORKER = path.join(WORKER_DIR, 'worker.js')
const RESULTS_FILE = path.join(ROOT, '.bench-results', 'latest.json')
const WORKER_TIMEOUT_MS = 10 * 60_000

/** One worker's result as recorded by the orchestrator. */
interface RunRecord extends WorkerResult {
  run: number
  wallMs: number
}

/** Parses a comma list of names into the canonical order of `all`; absent = all. */
function parseList<T extends string>(option: string, raw: string | undefined, all: readonly T[]): T[] {
  if (raw === undefined) return [...all]
  const picked = raw.split(',').map((name) => oneOf(option, name.trim(), all))
  return all.filter((name) => picked.includes(name))
}

/** Reads a positive number from the environment variable `name`, or `fallback` when unset. */
function positiveNumber(name: string, fallback: number): number {
  const value = Number(process.env[name] ?? fallback)
  if (!(value > 0)) throw new Error(`${name} must be a positive number`)
  return value
}

/** Median of a non-empty list. */
function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/** Installed version of a dependency. */
function packageVersion(name: string): string {
  const file = path.join(ROOT, 'node_modules', name, 'package.json')
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version
}

/** Node, CPU, memory, load and peer-library versions, for the report header and the JSON. */
function machineInfo() {
  return {
    loadAverage1m: Number((os.loadavg()[0] ?? 0).toFixed(2)),
    node: process.version,
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown cpu',
    cores: os.availableParallelism(),
    platform: `${os.platform()} ${os.arch()}`,
    memoryGB: Number((os.totalmem() / 1e9).toFixed(1)),
    yjs: packageVersion('yjs'),
    automerge: packageVersion('@automerge/automerge'),
  }
}

/** Spawns one worker process and returns its parsed JSON line (or a synthetic error if it crashed). */
function runWorker(
  system: SystemName,
  workload: WorkloadName,
  seed: number,
  scale: number,
  states: string,
): WorkerResult {
  const args = ['--system', system, '--workload', workload, '--seed', String(seed), '--states', states]
  const child = spawnSync(process.execPath, ['--expose-gc', WORKER, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: WORKER_TIMEOUT_MS,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lastLine = child.stdout.trim().split('\n').at(-1) ?? ''
  try {
    return JSON.parse(lastLine) as WorkerResult
  } catch {
    const how = child.error ? errorMessage(child.error) : `exit ${child.status ?? child.signal}`
    const stderr = child.stderr.trim().split('\n').slice(-3).join(' / ')
    return { system, workload, seed, scale, error: `worker crashed (${how}): ${stderr}` }
  }
}

/** What is recorded for a workload that cannot run because W1, which writes the states it starts from, failed. */
function blockedBy(w1: WorkerResult, workload: WorkloadName): WorkerResult {
  if (w1.unavailable !== undefined) return { ...w1, workload }
  return { ...w1, workload, error: `not run: W1, which writes the states it starts from, failed (${w1.error})` }
}

/** Median of every metric over the successful runs, and the problem (if any) of every cell. */
function summarize(records: readonly RunRecord[]) {
  const groups = new Map<string, RunRecord[]>()
  for (const record of records) {
    const key = cellKey(record.system, record.workload)
    groups.set(key, [...(groups.get(key) ?? []), record])
  }
  const medians = new Map<string, Metrics>()
  const problems = new Map<string, Problem>()
  for (const [key, group] of groups) {
    const ok = group.flatMap((r) => (r.metrics ? [r.metrics] : []))
    if (ok.length > 0) {
      const first = ok[0] as Metrics
      const keys = Object.keys(first)
      medians.set(key, Object.fromEntries(keys.map((k) => [k, median(ok.map((m) => m[k] ?? Number.NaN))])))
    }
    const bad = group.find((r) => !r.metrics)
    if (bad) {
      const kind = bad.unavailable !== undefined ? 'unavailable' : bad.skipped !== undefined ? 'skipped' : 'error'
      const message = bad.unavailable ?? bad.skipped ?? bad.error ?? ''
      const failed = group.length - ok.length
      const partial = kind === 'error' && ok.length > 0
      problems.set(key, { kind, message: partial ? `${failed} of ${group.length} runs: ${message}` : message })
    }
  }
  return { medians, problems }
}

/** What one `npm run bench` invocation measures. */
interface Config {
  workloads: WorkloadName[]
  systems: SystemName[]
  runs: number
  scale: number
  seed: number
}

/** Reads the CLI filters and the BENCH_* environment variables. */
function readConfig(): Config {
  const { values } = parseArgs({ options: { only: { type: 'string' }, systems: { type: 'string' } } })
  return {
    workloads: parseList('only', values.only, WORKLOADS),
    systems: parseList('systems', values.systems, SYSTEM_NAMES),
    runs: Math.round(positiveNumber('BENCH_RUNS', 3)),
    scale: positiveNumber('BENCH_SCALE', 1),
    seed: Math.round(positiveNumber('BENCH_SEED', 1)),
  }
}

/** Runs every (run, system, workload) in order, one worker process each, logging progress to stderr. */
function runAll({ workloads, systems, runs, scale, seed }: Config): RunRecord[] {
  // W2–W4 start from the states W1 wrote in the same run, so W1 runs first whenever one of them is selected (it is
  // reported only if selected too). API needs no states.
  const needsW1 = !workloads.includes('W1') && workloads.some((w) => FROM_W1_STATES.has(w))
  const plan: WorkloadName[] = needsW1 ? ['W1', ...workloads] : workloads
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'syncmesh-bench-'))
  const records: RunRecord[] = []
  const unavailable = new Set<SystemName>()
  const skipped = new Set<string>()
  try {
    for (let run = 1; run <= runs; run++) {
      for (const system of systems) {
        if (unavailable.has(system)) continue
        const states = path.join(tmp, `${system}-${run}`)
        let w1Failure: WorkerResult | undefined
        for (const workload of plan) {
          if (skipped.has(cellKey(system, workload))) continue
          const t0 = Date.now()
          const result =
            w1Failure && FROM_W1_STATES.has(workload)
              ? blockedBy(w1Failure, workload)
              : runWorker(system, workload, seed, scale, states)
          records.push({ ...result, run, wallMs: Date.now() - t0 })
          const seconds = ((Date.now() - t0) / 1000).toFixed(1)
          const outcome = result.metrics ? 'ok' : `${result.unavailable ?? result.skipped ?? result.error}`
          process.stderr.write(`[run ${run}/${runs}] ${system} ${workload} (${seconds} s): ${outcome}\n`)
          if (workload === 'W1' && !result.metrics) w1Failure = result
          if (result.unavailable !== undefined) unavailable.add(system)
          if (result.skipped !== undefined) skipped.add(cellKey(system, workload))
        }
        for (const which of ['inserts', 'final']) rmSync(`${states}.${which}`, { force: true })
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
  return records
}

/**
 * Bundles the worker to plain JavaScript once per bench, so workers run under bare `node`: a TypeScript loader in
 * every worker would add the same ~3 MB of heap to every system and blur the memory columns. yjs and automerge stay
 * external (loaded from node_modules as users load them); each system is its own chunk, loaded only when measured.
 */
function bundleWorker(): void {
  buildSync({
    entryPoints: [WORKER_SOURCE],
    outdir: WORKER_DIR,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: ['yjs', '@automerge/automerge'],
    logLevel: 'error',
  })
}

function main(): void {
  bundleWorker()
  const config = readConfig()
  const machine = machineInfo()
  const started = Date.now()
  const records = runAll(config)
  const { medians, problems } = summarize(records)
  const endLoad = Number((os.loadavg()[0] ?? 0).toFixed(2))
  const header = [
    `# syncmesh benchmark — ${new Date(started).toISOString()}`,
    '',
    `- machine: node ${machine.node} · ${machine.cpu} · ${machine.cores} cores · ${machine.platform} · ` +
      `${machine.memoryGB} GB RAM · 1-min load average ${machine.loadAverage1m} at start, ${endLoad} at end`,
    `- peers: yjs ${machine.yjs} · @automerge/automerge ${machine.automerge} · floor = plain \`Map\``,
    `- ${config.runs === 1 ? '1 run' : `medians of ${config.runs} runs`}; every (system, workload, run) in a ` +
      `fresh \`node --expose-gc\` process (the worker bundled to plain JS); seed ${config.seed}; scale ${config.scale}`,
  ]
  const sizes = scaledSizes(config.scale)
  const { text, targets } = renderReport({ ...config, header, sizes, medians, problems })
  const wallSeconds = Math.round((Date.now() - started) / 1000)
  process.stdout.write(`${text}\n\nTotal wall time ${wallSeconds} s.\n`)
  const json = {
    date: new Date(started).toISOString(),
    wallSeconds,
    machine: { ...machine, loadAverage1mAtEnd: endLoad },
    config: { ...config, sizes },
    medians: Object.fromEntries(medians),
    problems: Object.fromEntries(problems),
    targets,
    results: records,
  }
  mkdirSync(path.dirname(RESULTS_FILE), { recursive: true })
  writeFileSync(RESULTS_FILE, JSON.stringify(json, null, 2) + '\n')
  process.stderr.write(`raw results: ${path.relative(process.cwd(), RESULTS_FILE)}\n`)
}

try {
  main()
} catch (err) {
  process.stderr.write(`bench: ${errorMessage(err)}\n`)
  process.exitCode = 2
}
