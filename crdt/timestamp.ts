import { DecodeError, InvalidArgumentError } from './errors.js'

/** A hybrid logical clock timestamp: physical wall time in ms, a logical counter, and the issuing peer's id. */
export interface Timestamp {
  /** Wall-clock milliseconds since the Unix epoch (an integer in `[0, MAX_WALL]`). */
  readonly wall: number
  /** Logical counter that orders events within one millisecond (an integer in `[0, MAX_COUNTER]`). */
  readonly counter: number
  /** The id of the peer that issued the timestamp; breaks ties between peers. */
  readonly peer: string
}

/** Largest wall time a timestamp may carry: 2^48 − 1 ms (year 10889); encodes as 12 hex digits. */
export const MAX_WALL = 2 ** 48 - 1
/** Largest logical counter: 2^32 − 1; encodes as 8 hex digits. The clock never wraps past it. */
export const MAX_COUNTER = 2 ** 32 - 1
/** Longest peer id accepted, in UTF-16 code units. */
export const MAX_PEER_LENGTH = 256

/** Orders timestamps by (wall, counter, peer), lexicographically; peers compare by JavaScript string order. */
export function compareTimestamps(a: Timestamp, b: Timestamp): -1 | 0 | 1 {
  if (a.wall !== b.wall) return a.wall < b.wall ? -1 : 1
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1
  if (a.peer !== b.peer) return a.peer < b.peer ? -1 : 1
  return 0
}

/** Returns the reason `peer` is not a valid peer id, or undefined when it is. */
export function invalidPeerReason(peer: unknown): string | undefined {
  if (typeof peer !== 'string') return 'peer id must be a string'
  if (peer.length === 0) return 'peer id must not be empty'
  if (peer.length > MAX_PEER_LENGTH) return `peer id longer than ${MAX_PEER_LENGTH} characters`
  return undefined
}

/** Returns the reason `ts` is not a valid timestamp, or undefined when it is. */
export function invalidTimestampReason(ts: unknown): string | undefined {
  if (typeof ts !== 'object' || ts === null) return 'timestamp must be an object'
  const { wall, counter, peer } = ts as Record<string, unknown>
  if (typeof wall !== 'number' || !Number.isInteger(wall) || wall < 0 || wall > MAX_WALL) {
    return `timestamp wall must be an integer in [0, ${MAX_WALL}]`
  }
  if (typeof counter !== 'number' || !Number.isInteger(counter) || counter < 0 || counter > MAX_COUNTER) {
    return `timestamp counter must be an integer in [0, ${MAX_COUNTER}]`
  }
  return invalidPeerReason(peer)
}

/**
 * Encodes a timestamp as a string whose plain string order equals {@link compareTimestamps} order:
 * 12 hex digits of wall, 8 hex digits of counter, then the peer id verbatim.
 */
export function encodeTimestamp(ts: Timestamp): string {
  const reason = invalidTimestampReason(ts)
  if (reason) throw new InvalidArgumentError(`encodeTimestamp: ${reason}`)
  return ts.wall.toString(16).padStart(12, '0') + ts.counter.toString(16).padStart(8, '0') + ts.peer
}

const HEX20 = /^[0-9a-f]{20}/

/** Decodes {@link encodeTimestamp}'s output; throws {@link DecodeError} on malformed input. */
export function decodeTimestamp(s: string): Timestamp {
  if (typeof s !== 'string') throw new DecodeError('timestamp: expected a string')
  if (s.length < 21 || !HEX20.test(s)) {
    throw new DecodeError(`timestamp: expected 20 lowercase hex digits and a peer id, got ${JSON.stringify(s.slice(0, 40))}`)
  }
  const ts = { wall: parseInt(s.slice(0, 12), 16), counter: parseInt(s.slice(12, 20), 16), peer: s.slice(20) }
  const reason = invalidTimestampReason(ts)
  if (reason) throw new DecodeError(`timestamp: ${reason}`)
  return ts
}
