/** Shared by the network benchmarks: latency summaries (quantiles of a sample of milliseconds) and `--name value` options. */
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
