/** What a worker process prints (one JSON line) for the orchestrator, and the name checks both CLIs share. */
import type { SystemName } from './systems/types.js'
import type { Metrics, WorkloadName } from './workloads.js'

/** One JSON line printed by a worker. */
export interface WorkerResult {
  system: SystemName
  workload: WorkloadName
  seed: number
  scale: number
  metrics?: Metrics
  /** The workload does not apply to this system (e.g. the floor has no replication). */
  skipped?: string
  /** The workload ran but failed. */
  error?: string
  /** The system itself could not be loaded (e.g. the syncmesh core is missing or broken). */
  unavailable?: string
}

/** Returns `value` if it is one of `allowed`, else throws naming the option. */
export function oneOf<T extends string>(option: string, value: string | undefined, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) throw new Error(`--${option}: expected one of ${allowed.join(', ')}, got ${value}`)
  return value as T
}

/** The message of an unknown thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
