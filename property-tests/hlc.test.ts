/**
 * HLC under arbitrary physical clocks (stalls, backward jumps, big forward jumps, out-of-range readings) and
 * arbitrary remotes (far-future ones included): issued timestamps strictly increase past everything issued or
 * accepted, walls stay within the drift bound, refused remotes leave the clock unchanged, counters never pass
 * MAX_COUNTER and `receive` keeps RECEIVE_HEADROOM free.
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import {
  ClockDriftError,
  ClockOverflowError,
  HLC,
  MAX_COUNTER,
  MAX_WALL,
  RECEIVE_HEADROOM,
  type Timestamp,
  compareTimestamps,
  InvalidArgumentError,
} from '../crdt/index.js'
import { anyPeerArb, peerArb } from './arbitraries.js'
import { check, propTest } from './helpers.js'
import { tsRepr } from './state.js'

const RUNS = 10_000
const LIMIT = MAX_COUNTER - RECEIVE_HEADROOM

/** The next physical reading, relative to the previous one. */
type PhysStep =
  | { readonly t: 'stall' }
  | { readonly t: 'tick'; readonly d: number }
  | { readonly t: 'back'; readonly d: number }
  | { readonly t: 'jump'; readonly d: number }
  | { readonly t: 'abs'; readonly v: number }

const physArb: fc.Arbitrary<PhysStep> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ t: 'stall' as const }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('tick' as const), d: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('back' as const), d: fc.integer({ min: 1, max: 200_000 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('jump' as const), d: fc.integer({ min: 1000, max: 10 ** 12 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant('abs' as const),
      v: fc.oneof(
        fc.constantFrom(0, -5, MAX_WALL, MAX_WALL - 1, MAX_WALL + 10, 2 ** 53, 1.5, 99.999, Infinity, -Infinity),
        fc.integer({ min: 0, max: MAX_WALL }),
      ),
    }),
  },
)

/** How a remote timestamp is made, relative to the current physical reading (pt) or the local clock (l). */
type RemoteSpec = {
  readonly wallFrom: 'pt' | 'local' | 'abs'
  readonly offset: number
  readonly counter: 'small' | 'local' | 'limit' | 'max' | 'any'
  readonly counterOffset: number
  readonly peer: string
}

const remoteArb: fc.Arbitrary<RemoteSpec> = fc.record({
  wallFrom: fc.constantFrom('pt' as const, 'local' as const, 'abs' as const),
  offset: fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: -3, max: 3 }) },
    { weight: 2, arbitrary: fc.integer({ min: -1000, max: 70_000 }) },
    { weight: 1, arbitrary: fc.integer({ min: -(10 ** 12), max: 10 ** 12 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: MAX_WALL }) },
  ),
  counter: fc.constantFrom('small' as const, 'local' as const, 'limit' as const, 'max' as const, 'any' as const),
  counterOffset: fc.integer({ min: -3, max: 3 }),
  peer: peerArb,
})

type Step =
  | { readonly kind: 'now'; readonly phys: PhysStep }
  | { readonly kind: 'receive'; readonly phys: PhysStep; readonly remote: RemoteSpec }
  | { readonly kind: 'restore'; readonly phys: PhysStep; readonly remote: RemoteSpec }

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('now' as const), phys: physArb }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('receive' as const), phys: physArb, remote: remoteArb }) },
  // A timestamp this peer issued before a restart (read back from storage): no drift check applies.
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('restore' as const), phys: physArb, remote: remoteArb }) },
)

function nextPhysical(prev: number, s: PhysStep): number {
  switch (s.t) {
    case 'stall':
      return prev
    case 'tick':
      return prev + s.d
    case 'back':
      return prev - s.d
    case 'jump':
      return prev + s.d
    case 'abs':
      return s.v
  }
}

/** The reading the clock should use: floored and clamped to [0, MAX_WALL]. */
function clamp(t: number): number {
  return Math.min(Math.max(Math.floor(t), 0), MAX_WALL)
}

function makeRemote(spec: RemoteSpec, pt: number, local: Timestamp): Timestamp {
  const base = spec.wallFrom === 'pt' ? pt : spec.wallFrom === 'local' ? local.wall : 0
  const wall = Math.min(Math.max(base + spec.offset, 0), MAX_WALL)
  const c =
    spec.counter === 'small'
      ? spec.counterOffset + 3
      : spec.counter === 'local'
        ? local.counter + spec.counterOffset
        : spec.counter === 'limit'
          ? LIMIT - 1 + spec.counterOffset
          : spec.counter === 'max'
            ? MAX_COUNTER + spec.counterOffset
            : Math.abs(spec.offset * 7919) % (MAX_COUNTER + 1)
  const counter = Math.min(Math.max(c, 0), MAX_COUNTER)
  return { wall, counter, peer: spec.peer }
}

const scenarioArb = fc.record({
  peer: anyPeerArb,
  maxDriftMs: fc.constantFrom(0, 1, 10, 60_000),
  start: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: MAX_WALL })),
  steps: fc.array(stepArb, { maxLength: 40, size: 'medium' }),
})

describe('HLC', () => {
  propTest('timestamps strictly increase, stay within the drift bound, and refusals change nothing', RUNS, () =>
    fc.property(scenarioArb, ({ peer, maxDriftMs, start, steps }) => {
      let physical = start
      const clock = new HLC(peer, { now: () => physical, maxDriftMs })
      let high: Timestamp | undefined // greatest timestamp issued or accepted so far
      let maxPhys = 0 // greatest (clamped) physical reading so far
      let maxAccepted = 0 // greatest accepted remote wall
      let maxRestored = 0 // greatest restored wall (restore skips the drift check)
      const after = (label: string, ts: Timestamp): void => {
        check(ts.peer === peer, () => `${label}: issued with peer ${JSON.stringify(ts.peer)}`)
        check(high === undefined || compareTimestamps(ts, high) > 0, () => `${label}: ${tsRepr(ts)} not above ${tsRepr(high)}`)
        check(Number.isInteger(ts.counter) && ts.counter >= 0 && ts.counter <= MAX_COUNTER, () => `${label}: counter ${ts.counter}`)
        check(ts.wall <= Math.max(maxPhys, maxAccepted, maxRestored), () => `${label}: wall ${ts.wall} above every physical reading, accepted remote and restored timestamp`)
        check(ts.wall <= Math.max(maxPhys + maxDriftMs, maxRestored), () => `${label}: wall ${ts.wall} more than ${maxDriftMs} ms past physical ${maxPhys}`)
        const peek = clock.peek()
        check(compareTimestamps(peek, ts) === 0, () => `${label}: peek ${tsRepr(peek)} is not the issued ${tsRepr(ts)}`)
        high = ts
      }
      for (const [i, step] of steps.entries()) {
        physical = nextPhysical(physical, step.phys)
        const pt = clamp(physical)
        const before = clock.peek()
        const label = `step ${i} (${step.kind}, pt ${pt}, clock ${tsRepr(before)})`
        if (step.kind === 'now') {
          let ts: Timestamp
          try {
            ts = clock.now()
          } catch (e) {
            check(e instanceof ClockOverflowError, () => `${label}: now() threw ${String(e)}`)
            check(pt <= before.wall && before.counter === MAX_COUNTER, () => `${label}: overflow with counter ${before.counter}`)
            check(compareTimestamps(clock.peek(), before) === 0, () => `${label}: overflow changed the clock`)
            continue
          }
          maxPhys = Math.max(maxPhys, pt)
          after(label, ts)
          continue
        }
        if (step.kind === 'restore') {
          const own = { ...makeRemote(step.remote, pt, before), peer }
          clock.restore(own)
          const ahead = own.wall > before.wall || (own.wall === before.wall && own.counter > before.counter)
          const want = ahead ? own : before
          const got = clock.peek()
          check(got.wall === want.wall && got.counter === want.counter, () => `${label}: restore(${tsRepr(own)}) left ${tsRepr(got)}, expected ${tsRepr(want)}`)
          if (high === undefined || compareTimestamps(own, high) > 0) high = own
          maxRestored = Math.max(maxRestored, own.wall)
          continue
        }
        const remote = makeRemote(step.remote, pt, before)
        // Kulkarni et al.: the merged (wall, counter) the clock must take.
        const wall = Math.max(pt, before.wall, remote.wall)
        const counter =
          wall === before.wall && wall === remote.wall
            ? Math.max(before.counter, remote.counter) + 1
            : wall === before.wall
              ? before.counter + 1
              : wall === remote.wall
                ? remote.counter + 1
                : 0
        const farFuture = remote.wall > pt + maxDriftMs
        let ts: Timestamp
        try {
          ts = clock.receive(remote)
        } catch (e) {
          const unchanged = compareTimestamps(clock.peek(), before) === 0
          check(unchanged, () => `${label}: refusing ${tsRepr(remote)} changed the clock to ${tsRepr(clock.peek())}`)
          if (e instanceof ClockDriftError) {
            check(farFuture, () => `${label}: ClockDriftError for ${tsRepr(remote)}, within the ${maxDriftMs} ms bound`)
            check(e.remoteWall === remote.wall && e.physicalNow === pt, () => `${label}: ClockDriftError fields ${e.remoteWall}/${e.physicalNow}`)
          } else if (e instanceof ClockOverflowError) {
            check(!farFuture && counter > LIMIT, () => `${label}: ClockOverflowError for ${tsRepr(remote)} (merged counter ${counter})`)
          } else {
            throw new Error(`${label}: receive(${tsRepr(remote)}) threw ${String(e)}`)
          }
          continue
        }
        check(!farFuture, () => `${label}: accepted far-future remote ${tsRepr(remote)}`)
        check(counter <= LIMIT, () => `${label}: accepted ${tsRepr(remote)} leaving less than RECEIVE_HEADROOM (counter ${ts.counter})`)
        check(ts.wall === wall && ts.counter === counter, () => `${label}: receive(${tsRepr(remote)}) gave ${tsRepr(ts)}, expected ${wall}.${counter}`)
        check(compareTimestamps(ts, remote) > 0, () => `${label}: ${tsRepr(ts)} not above the remote ${tsRepr(remote)}`)
        maxPhys = Math.max(maxPhys, pt)
        maxAccepted = Math.max(maxAccepted, remote.wall)
        after(label, ts)
      }
    }),
  )

  propTest('receive refuses invalid remotes with a TypeError and leaves the clock unchanged', 2_000, () =>
    fc.property(
      fc.integer({ min: 0, max: 1000 }),
      fc.constantFrom<unknown>(
        { wall: -1, counter: 0, peer: 'x' },
        { wall: 1.5, counter: 0, peer: 'x' },
        { wall: MAX_WALL + 1, counter: 0, peer: 'x' },
        { wall: 0, counter: MAX_COUNTER + 1, peer: 'x' },
        { wall: 0, counter: -1, peer: 'x' },
        { wall: 0, counter: 0, peer: '' },
        { wall: 0, counter: 0, peer: 'x'.repeat(257) },
        { wall: NaN, counter: 0, peer: 'x' },
        null,
        'ts',
      ),
      (pt, remote) => {
        const clock = new HLC('me', { now: () => pt })
        clock.now()
        const before = clock.peek()
        let threw: unknown
        try {
          clock.receive(remote as Timestamp)
        } catch (e) {
          threw = e
        }
        check(threw instanceof InvalidArgumentError, () => `receive(${JSON.stringify(remote)}) threw ${String(threw)}`)
        check(compareTimestamps(clock.peek(), before) === 0, () => 'an invalid remote changed the clock')
      },
    ),
  )

  // 2^20 local events in one millisecond per run: a handful of runs is plenty.
  propTest('now() never wraps: at MAX_COUNTER it throws, changes nothing, and recovers when time advances', { numRuns: 6, maxRuns: 20 }, () =>
    fc.property(fc.integer({ min: 0, max: MAX_WALL - 1 }), fc.integer({ min: -5, max: 0 }), peerArb, (wall, d, peer) => {
      let physical = wall
      const clock = new HLC(peer, { now: () => physical })
      clock.now()
      // The highest counter receive accepts; then local events exhaust the rest.
      const accepted = clock.receive({ wall, counter: LIMIT - 1 + d, peer: 'remote' })
      check(accepted.counter === LIMIT + d, () => `receive gave counter ${accepted.counter}`)
      let last = accepted
      for (let c = accepted.counter; c < MAX_COUNTER; c++) last = clock.now()
      check(last.counter === MAX_COUNTER && last.wall === wall, () => `exhausted at ${tsRepr(last)}`)
      const before = clock.peek()
      let threw: unknown
      try {
        clock.now()
      } catch (e) {
        threw = e
      }
      check(threw instanceof ClockOverflowError, () => `now() at MAX_COUNTER threw ${String(threw)}`)
      check(compareTimestamps(clock.peek(), before) === 0, () => 'overflow changed the clock')
      physical = wall + 1
      const next = clock.now()
      check(next.wall === wall + 1 && next.counter === 0, () => `after time advanced: ${tsRepr(next)}`)
    }),
  )
})
