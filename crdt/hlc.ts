import { ClockDriftError, ClockOverflowError, InvalidArgumentError } from './errors.js'
import { type Timestamp, MAX_COUNTER, MAX_WALL, invalidPeerReason, invalidTimestampReason } from './timestamp.js'

/** Options of {@link HLC}. */
export interface HLCInit {
  /**
   * The physical clock, in ms since the Unix epoch. Injected so that tests can drive time by hand.
   * @default Date.now
   */
  now?: () => number
  /**
   * How far (ms) a remote timestamp may lie ahead of the physical clock before {@link HLC.receive} refuses it.
   * @default 60_000
   */
  maxDriftMs?: number
}

/**
 * Counter values kept free for local events after a remote timestamp is merged: `receive` refuses a remote that would
 * push the counter above `MAX_COUNTER - RECEIVE_HEADROOM`, so that a hostile peer cannot exhaust the local clock.
 */
export const RECEIVE_HEADROOM = 2 ** 20

/**
 * A hybrid logical clock (Kulkarni et al., 2014). Timestamps it issues strictly increase, even when the physical clock
 * stalls or jumps backwards, and stay within `maxDriftMs` of the physical clock however far ahead a peer's clock is.
 *
 * Counter overflow never wraps: {@link HLC.now} throws {@link ClockOverflowError} if 2^32 events happen within one
 * physical millisecond (the clock is unchanged and works again once the wall clock advances), and
 * {@link HLC.receive} refuses a remote timestamp that would leave fewer than {@link RECEIVE_HEADROOM} local events.
 */
export class HLC {
  /** The id stamped into every timestamp this clock issues. */
  readonly peer: string
  /** The physical-drift bound in ms. */
  readonly maxDriftMs: number
  private readonly physical: () => number
  private wall = 0
  private counter = 0

  constructor(peer: string, init: HLCInit = {}) {
    const reason = invalidPeerReason(peer)
    if (reason) throw new InvalidArgumentError(`HLC: ${reason}`)
    const maxDriftMs = init.maxDriftMs ?? 60_000
    if (!(maxDriftMs >= 0)) throw new InvalidArgumentError('HLC: maxDriftMs must be a non-negative number')
    this.peer = peer
    this.maxDriftMs = maxDriftMs
    this.physical = init.now ?? Date.now
  }

  /** Issues a timestamp strictly greater than every timestamp this clock has issued or received. */
  now(): Timestamp {
    const pt = this.readPhysical()
    if (pt > this.wall) {
      this.wall = pt
      this.counter = 0
    } else {
      if (this.counter >= MAX_COUNTER) {
        throw new ClockOverflowError(`HLC counter exhausted at wall ${this.wall}; wait for the physical clock to advance`)
      }
      this.counter++
    }
    return { wall: this.wall, counter: this.counter, peer: this.peer }
  }

  /**
   * Merges a remote timestamp and returns a local timestamp greater than both it and everything issued before.
   * Throws {@link ClockDriftError} (clock unchanged) when `remote.wall` exceeds the physical clock plus `maxDriftMs`.
   */
  receive(remote: Timestamp): Timestamp {
    const reason = invalidTimestampReason(remote)
    if (reason) throw new InvalidArgumentError(`HLC.receive: ${reason}`)
    const pt = this.readPhysical()
    if (remote.wall > pt + this.maxDriftMs) {
      throw new ClockDriftError(
        `remote timestamp from ${JSON.stringify(remote.peer)} is ${remote.wall - pt} ms ahead of the local clock ` +
          `(maxDriftMs ${this.maxDriftMs})`,
        remote.wall,
        pt,
      )
    }
    let wall: number
    let counter: number
    if (pt > this.wall && pt > remote.wall) {
      wall = pt
      counter = 0
    } else if (this.wall === remote.wall) {
      wall = this.wall
      counter = Math.max(this.counter, remote.counter) + 1
    } else if (this.wall > remote.wall) {
      wall = this.wall
      counter = this.counter + 1
    } else {
      wall = remote.wall
      counter = remote.counter + 1
    }
    if (counter > MAX_COUNTER - RECEIVE_HEADROOM) {
      throw new ClockOverflowError(`remote timestamp counter ${remote.counter} would exhaust the local clock`)
    }
    this.wall = wall
    this.counter = counter
    return { wall, counter, peer: this.peer }
  }

  /**
   * Moves the clock past a timestamp this peer issued before a restart (read back from storage), without the drift
   * check: a replica must never reissue one of its own timestamps, even if the wall clock went back meanwhile.
   */
  restore(ts: Timestamp): void {
    const reason = invalidTimestampReason(ts)
    if (reason) throw new InvalidArgumentError(`HLC.restore: ${reason}`)
    if (ts.wall > this.wall || (ts.wall === this.wall && ts.counter > this.counter)) {
      this.wall = ts.wall
      this.counter = ts.counter
    }
  }

  /** The last timestamp issued or merged, without advancing the clock (wall 0 before the first event). */
  peek(): Timestamp {
    return { wall: this.wall, counter: this.counter, peer: this.peer }
  }

  private readPhysical(): number {
    const t = this.physical()
    if (typeof t !== 'number' || Number.isNaN(t)) throw new InvalidArgumentError('HLC: the physical clock returned a non-number')
    return Math.min(Math.max(Math.floor(t), 0), MAX_WALL)
  }
}
