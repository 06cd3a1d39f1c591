/** Argument checks shared by the test kit's entry points; a wrong argument throws {@link InvalidArgumentError}. */
import { InvalidArgumentError } from '../../crdt/errors.js'

/** `n` if it is a positive safe integer; else throws InvalidArgumentError saying `what` must be one. */
export function positiveInt(what: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${what} must be a positive integer, got ${String(n)}`)
  return n
}
