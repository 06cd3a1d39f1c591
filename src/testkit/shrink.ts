/**
 * Minimizing a failing schedule: the runs are deterministic, so delta-debugging the steps (then simplifying the
 * values they write) yields a small schedule that fails every time.
 */
import type { Value } from '../../crdt/value.js'
import type { Step } from './schedule.js'
import { buildObject } from './values.js'

/**
 * Delta-debugging: removes chunks of steps while `fails` still holds, halving the chunk size down to single steps,
 * until `deadline` (ms since the epoch). Runs are deterministic, so the result fails every time.
 */
export async function minimizeSchedule(steps: readonly Step[], fails: (steps: Step[]) => Promise<boolean>, deadline = Date.now() + 30_000): Promise<Step[]> {
  let current = [...steps]
  let chunk = Math.max(1, current.length >> 1)
  for (;;) {
    let removed = false
    for (let at = 0; at < current.length && Date.now() < deadline; ) {
      const candidate = [...current.slice(0, at), ...current.slice(at + chunk)]
      if (candidate.length < current.length && (await fails(candidate))) {
        current = candidate
        removed = true
      } else {
        at += chunk
      }
    }
    if (Date.now() >= deadline) return current
    if (chunk === 1 && !removed) return current
    if (!removed) chunk = Math.max(1, chunk >> 1)
  }
}

/** After {@link minimizeSchedule}: replaces each write's values by small ones (0, or `undefined` kept) while it still fails. */
export async function simplifyValues(steps: Step[], fails: (steps: Step[]) => Promise<boolean>, deadline: number): Promise<Step[]> {
  let current = steps
  const small = (fields: { readonly [k: string]: Value | undefined }): { [k: string]: Value | undefined } =>
    buildObject(Object.keys(fields).map((k) => [k, fields[k] === undefined ? undefined : 0] as const))
  for (let i = 0; i < current.length && Date.now() < deadline; i++) {
    const s = current[i]!
    let simpler: Step | undefined
    if (s.kind === 'put' && Object.values(s.fields).some((v) => v !== 0)) simpler = { ...s, fields: small(s.fields) }
    else if (s.kind === 'update' && Object.values(s.patch).some((v) => v !== undefined && v !== 0)) simpler = { ...s, patch: small(s.patch) }
    else if (s.kind === 'text' && s.insert.length > 1) simpler = { ...s, insert: 'x' }
    if (!simpler) continue
    const candidate = [...current.slice(0, i), simpler, ...current.slice(i + 1)]
    if (await fails(candidate)) current = candidate
  }
  return current
}
