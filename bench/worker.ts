/**
 * Runs ONE workload for ONE system in this (fresh) process and prints one JSON line ({@link WorkerResult}):
 *   node --expose-gc --import tsx bench/worker.ts --system yjs --workload W1 --seed 1 --states /tmp/x/yjs
 * W1 writes `<states>.inserts` and `<states>.final`; W2–W4 (same system, seed and scale) start from them. API needs
 * no states (it still requires `--states`, unused).
 * Exit code 0 with `metrics` (or `skipped`); 1 with `error` on failure; 2 with `unavailable` if the system cannot load.
 */
import { parseArgs } from 'node:util'
import { scaledSizes } from './data.js'
import { errorMessage, oneOf, type WorkerResult } from './protocol.js'
import { loadSystem } from './systems/index.js'
import { SYSTEM_NAMES, type System } from './systems/types.js'
import { RUNNERS, WORKLOADS, skipReason } from './workloads.js'

function emit(result: WorkerResult, exitCode: number): number {
  process.stdout.write(JSON.stringify(result) + '\n')
  return exitCode
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      system: { type: 'string' },
      workload: { type: 'string' },
      seed: { type: 'string', default: '1' },
      states: { type: 'string' },
    },
  })
  const result: WorkerResult = {
    system: oneOf('system', values.system, SYSTEM_NAMES),
    workload: oneOf('workload', values.workload, WORKLOADS),
    seed: Number(values.seed),
    scale: Number(process.env.BENCH_SCALE ?? 1),
  }
  if (!values.states) throw new Error('--states <path prefix> is required')
  const states = values.states
  let system: System
  try {
    system = await loadSystem(result.system, result.seed)
  } catch (err) {
    return emit({ ...result, unavailable: errorMessage(err) }, 2)
  }
  const skipped = skipReason(result.workload, system)
  if (skipped !== undefined) return emit({ ...result, skipped }, 0)
  try {
    const metrics = await RUNNERS[result.workload]({
      system,
      sizes: scaledSizes(result.scale),
      seed: result.seed,
      states,
    })
    return emit({ ...result, metrics }, 0)
  } catch (err) {
    return emit({ ...result, error: errorMessage(err) }, 1)
  }
}

process.exitCode = await main()
