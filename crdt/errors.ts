/**
 * Named error classes. Every error syncmesh throws or emits extends {@link SyncmeshError}, and each class
 * carries a stable `name` (`static readonly name`) and `code` that callers can match on.
 */

/** Base class of every error syncmesh throws or emits. */
export class SyncmeshError extends Error {
  /** Stable machine-readable code, e.g. `'DECODE'`. */
  readonly code: string = 'SYNCMESH'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

/** Malformed, truncated or otherwise invalid bytes or strings given to a decoder. */
export class DecodeError extends SyncmeshError {
  override readonly code = 'DECODE'
}

/** A remote timestamp lies further in the future than the clock's `maxDriftMs` allows; the clock is unchanged. */
export class ClockDriftError extends SyncmeshError {
  override readonly code = 'CLOCK_DRIFT'
  constructor(
    message: string,
    /** The wall time (ms) of the offending remote timestamp. */
    readonly remoteWall: number,
    /** The local physical time (ms) when it was received. */
    readonly physicalNow: number,
  ) {
    super(message)
  }
}

/** The logical counter of a hybrid logical clock would exceed {@link MAX_COUNTER}; the clock is unchanged. */
export class ClockOverflowError extends SyncmeshError {
  override readonly code = 'CLOCK_OVERFLOW'
}

/** A caller passed an argument of the wrong type or out of range (a programming error, not bad data from a peer). */
export class InvalidArgumentError extends SyncmeshError {
  override readonly code = 'INVALID_ARGUMENT'
}

/** `err` if it is an Error, else an Error carrying its text (for values thrown or rejected by other code). */
export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}

/** A value that syncmesh cannot store: not JSON, not `Uint8Array`, cyclic, too deep, or a bad record shape. */
export class InvalidValueError extends SyncmeshError {
  override readonly code = 'INVALID_VALUE'
}
