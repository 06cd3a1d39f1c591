import { describe, expect, it } from 'vitest'
import {
  ClockDriftError,
  ClockOverflowError,
  DecodeError,
  HLC,
  MAX_COUNTER,
  RECEIVE_HEADROOM,
  compareTimestamps,
  decodeTimestamp,
  encodeTimestamp,
  InvalidArgumentError,
} from '../../crdt/index.js'

const ts = (wall: number, counter: number, peer: string) => ({ wall, counter, peer })

describe('timestamps', () => {
  it('order by wall, then counter, then peer string', () => {
    expect(compareTimestamps(ts(1, 9, 'z'), ts(2, 0, 'a'))).toBe(-1)
    expect(compareTimestamps(ts(2, 1, 'a'), ts(2, 0, 'z'))).toBe(1)
    expect(compareTimestamps(ts(2, 1, 'a'), ts(2, 1, 'b'))).toBe(-1)
    expect(compareTimestamps(ts(2, 1, 'b'), ts(2, 1, 'b'))).toBe(0)
  })

  it('encode to strings whose plain order is timestamp order', () => {
    const list = [ts(0, 0, 'a'), ts(1, 0, 'a'), ts(1, 1, 'a'), ts(1, 1, 'b'), ts(1, 1, 'ba'), ts(2 ** 48 - 1, MAX_COUNTER, 'z')]
    const enc = list.map(encodeTimestamp)
    expect([...enc].sort()).toEqual(enc)
    for (const t of list) expect(decodeTimestamp(encodeTimestamp(t))).toEqual(t)
  })

  it('refuse malformed strings with DecodeError, naming the problem', () => {
    for (const bad of ['', 'xyz', '0000000000000000000', '00000000000000000000', 'G0000000000000000000p', '0000000000000000000Ap']) {
      expect(() => decodeTimestamp(bad)).toThrow(DecodeError)
    }
    expect(() => decodeTimestamp(42 as unknown as string)).toThrow(DecodeError)
  })

  it('refuse to encode out-of-range fields', () => {
    expect(() => encodeTimestamp(ts(-1, 0, 'a'))).toThrow(InvalidArgumentError)
    expect(() => encodeTimestamp(ts(1.5, 0, 'a'))).toThrow(InvalidArgumentError)
    expect(() => encodeTimestamp(ts(1, MAX_COUNTER + 1, 'a'))).toThrow(InvalidArgumentError)
    expect(() => encodeTimestamp(ts(1, 0, ''))).toThrow(InvalidArgumentError)
  })
})

describe('HLC', () => {
  it('stays strictly increasing when the wall clock stalls or jumps backwards', () => {
    const walls = [100, 100, 100, 50, 50, 101, 10, 200]
    let i = 0
    const clock = new HLC('p', { now: () => walls[Math.min(i++, walls.length - 1)]! })
    let prev = clock.now()
    for (let k = 0; k < 20; k++) {
      const next = clock.now()
      expect(compareTimestamps(next, prev)).toBe(1)
      prev = next
    }
  })

  it('uses the physical time as soon as it moves ahead, with counter 0', () => {
    let t = 1000
    const clock = new HLC('p', { now: () => t })
    clock.now()
    clock.now()
    t = 2000
    expect(clock.now()).toEqual(ts(2000, 0, 'p'))
  })

  it('receive returns a timestamp above both the remote and everything issued', () => {
    const clock = new HLC('p', { now: () => 1000 })
    const a = clock.now()
    const r = clock.receive(ts(1500, 7, 'q'))
    expect(compareTimestamps(r, ts(1500, 7, 'q'))).toBe(1)
    expect(compareTimestamps(r, a)).toBe(1)
    expect(compareTimestamps(clock.now(), r)).toBe(1)
  })

  it('refuses a far-future remote with ClockDriftError and leaves the clock unchanged', () => {
    const clock = new HLC('p', { now: () => 1000, maxDriftMs: 500 })
    clock.now()
    const before = clock.peek()
    const err = (() => {
      try {
        clock.receive(ts(1501, 0, 'q'))
      } catch (e) {
        return e
      }
    })()
    expect(err).toBeInstanceOf(ClockDriftError)
    expect((err as ClockDriftError).remoteWall).toBe(1501)
    expect(clock.peek()).toEqual(before)
    expect(clock.receive(ts(1500, 0, 'q')).wall).toBe(1500) // exactly at the bound is accepted
  })

  it('never wraps the counter: now() throws ClockOverflowError and recovers when the wall clock moves', () => {
    let t = 1000
    const clock = new HLC('p', { now: () => t })
    clock.restore(ts(1000, MAX_COUNTER, 'p'))
    expect(() => clock.now()).toThrow(ClockOverflowError)
    expect(clock.peek()).toEqual(ts(1000, MAX_COUNTER, 'p'))
    t = 1001
    expect(clock.now()).toEqual(ts(1001, 0, 'p'))
  })

  it('keeps counter headroom for local events: a remote near the limit is refused', () => {
    const clock = new HLC('p', { now: () => 1000 })
    expect(() => clock.receive(ts(1000, MAX_COUNTER - RECEIVE_HEADROOM, 'q'))).toThrow(ClockOverflowError)
    expect(clock.receive(ts(1000, MAX_COUNTER - RECEIVE_HEADROOM - 1, 'q')).counter).toBe(MAX_COUNTER - RECEIVE_HEADROOM)
  })

  it('restore moves past a persisted timestamp without a drift check', () => {
    const clock = new HLC('p', { now: () => 1000, maxDriftMs: 0 })
    clock.restore(ts(9_000_000, 3, 'p'))
    expect(clock.now()).toEqual(ts(9_000_000, 4, 'p'))
  })

  it('validates its inputs', () => {
    expect(() => new HLC('')).toThrow(InvalidArgumentError)
    expect(() => new HLC('p', { maxDriftMs: -1 })).toThrow(InvalidArgumentError)
    expect(() => new HLC('p', { now: () => NaN }).now()).toThrow(InvalidArgumentError)
    expect(() => new HLC('p').receive(ts(1, -1, 'q'))).toThrow(InvalidArgumentError)
  })
})
