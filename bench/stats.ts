/** Shared by the network benchmarks: latency summaries (quantiles of a sample of milliseconds) and `--name value` options. */
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'

/** The value of command-line option `--name`, or `fallback` when absent. */
export const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback
}

/** The q-quantile (0 ≤ q ≤ 1) of `xs` by the nearest-rank method. */
export const quantile = (xs: readonly number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!
}

/** A latency sample summarised, in ms. */
export interface Latency {
  n: number
  p50: number
  p90: number
  p99: number
  max: number
  mean: number
}

/** Summarises a sample of latencies (ms). */
export const summary = (xs: readonly number[]): Latency => ({
  n: xs.length,
  p50: quantile(xs, 0.5),
  p90: quantile(xs, 0.9),
  p99: quantile(xs, 0.99),
  max: Math.max(...xs),
  mean: xs.reduce((s, x) => s + x, 0) / xs.length,
})

/** Prints a benchmark's markdown table under `title` and writes `data` as JSON to `file` (a path under the repository). */
export function printAndSave(title: string, table: string, file: string, data: unknown): void {
  console.log(`\n${title}\n`)
  console.log(table)
  mkdirSync(path.dirname(file), { recursive: true })
  writeFileSync(file, JSON.stringify(data, null, 2) + '\n')
  console.log(`\nraw results: ${path.relative(process.cwd(), file)}`)
}

/** Runs a benchmark's `main`: exit code 0 when it ran (targets missed or not), 1 when something failed to run. */
export function runBench(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (error: unknown) => {
      console.error(error)
      process.exit(1)
    },
  )
}

/** Runs `node <script> <args>` in `cwd`; resolves with its stdout + stderr when it exits 0, rejects otherwise (or when killed after `timeoutMs`). */
export function runChild(script: string, args: readonly string[], cwd: string, what: string, timeoutMs = 150_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('exit', (code) => {
      clearTimeout(timer)
      if (code === 0) resolve(out)
      else reject(new Error(`${what} exited with ${code}: ${out.slice(-2000)}`))
    })
  })
}
