/** Checking the numeric options of the transports: one rule, one error type ({@link TransportArgumentError}). */
import { TransportArgumentError } from './errors.js'

/** `value`, or `fallback` when it is undefined; throws unless `value` is a safe integer of at least `min`. */
export function positiveInt(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value < min) throw new TransportArgumentError(`${name} must be an integer ≥ ${min}, got ${String(value)}`)
  return value
}
