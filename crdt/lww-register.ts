import { type Timestamp, compareTimestamps } from './timestamp.js'
import { type Value, compareValues } from './value.js'

/** Plain-data form of a register (structured-clone safe). `value: undefined` with a timestamp means "removed". */
export interface RegisterState<T> {
  readonly value: T | undefined
  readonly timestamp: Timestamp | undefined
}

/**
 * True when a write of `value` at `ts` beats the current `(curValue, curTs)`: a greater timestamp wins; an exactly
 * equal timestamp (only possible with a duplicated peer id) is settled by the values' canonical bytes.
 */
export function writeWins<T>(ts: Timestamp, value: T | undefined, curTs: Timestamp | undefined, curValue: T | undefined): boolean {
  if (curTs === undefined) return true
  const c = compareTimestamps(ts, curTs)
  if (c !== 0) return c > 0
  return compareValues(value as Value | undefined, curValue as Value | undefined) > 0
}

/** A last-writer-wins register: holds the value of the write with the greatest timestamp. */
export class LWWRegister<T> {
  private _value: T | undefined
  private _ts: Timestamp | undefined

  /** Starts empty, or holding `value` written at `timestamp`. */
  constructor(value?: T, timestamp?: Timestamp) {
    this._value = value
    this._ts = timestamp
  }

  /** The winning value (undefined when empty or removed). */
  get value(): T | undefined {
    return this._value
  }

  /** The winning write's timestamp (undefined when never written). */
  get timestamp(): Timestamp | undefined {
    return this._ts
  }

  /** Applies a write; returns true when it won (and is now the register's value). */
  set(value: T, ts: Timestamp): boolean {
    if (!writeWins(ts, value, this._ts, this._value)) return false
    this._value = value
    this._ts = ts
    return true
  }

  /** Merges another register (or its state); returns true when this register's value or timestamp changed. */
  merge(other: LWWRegister<T> | RegisterState<T>): boolean {
    const ts = other.timestamp
    if (ts === undefined || !writeWins(ts, other.value, this._ts, this._value)) return false
    this._value = other.value
    this._ts = ts
    return true
  }

  /** Plain-data snapshot. */
  state(): RegisterState<T> {
    return { value: this._value, timestamp: this._ts }
  }

  /** Rebuilds a register from {@link LWWRegister.state}. */
  static from<T>(state: RegisterState<T>): LWWRegister<T> {
    return new LWWRegister<T>(state.value, state.timestamp)
  }
}
