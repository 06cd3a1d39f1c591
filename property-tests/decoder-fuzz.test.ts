/**
 * Decoder fuzz: ≥ 100 000 random and mutated-valid frames, fed
 * - directly to `decodeMessage`, `Reassembler.push` (then `decodeMessage` of what it reassembles) and `decodeDelta`;
 * - to a real replica's receive path, sent by a rogue peer of a MemoryNetwork room.
 * Promises checked: nothing but the typed errors (DecodeError / MessageTooLargeError / UnsupportedVersionError, plus
 * ClockDriftError / ClockOverflowError for deltas that decode but carry refused timestamps) ever escapes or reaches the
 * replica's `error` event; every call is bounded in time; no unhandled rejection; after a frame the replica refused,
 * its state (digest and version vector) is exactly what it was; and afterwards an honest peer still syncs with it.
 *
 * Seeded: a failure prints `Replay: SEED=… PROP_PATH=…` and the hex of the offending frame.
 *   SEED=… PROP_PATH=… npx vitest run property-tests/decoder-fuzz.test.ts
 */
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Writer } from '../crdt/bytes.js'
import { type Delta, decodeDelta, encodeDelta } from '../crdt/delta.js'
import { ClockDriftError, ClockOverflowError, DecodeError } from '../crdt/errors.js'
import { RecordStore } from '../crdt/record-store.js'
import type { Timestamp } from '../crdt/timestamp.js'
import type { Value } from '../crdt/value.js'
import { MessageTooLargeError, UnsupportedVersionError } from '../src/errors.js'
import { ReplicaImpl, createReplica, roomTopic } from '../src/replica.js'
import { Reassembler, decodeMessage, encodeDeltaMessage, encodeDeltaParts, encodeLiveMessage, encodeNeighboursMessage, encodeTextAckToMessage, encodeVectorMessage, toFrames } from '../src/sync/protocol.js'
import { arbitraries, assertConverged } from '../src/testkit/index.js'
import { MemoryNetwork, type MemoryTransport } from '../transports/memory.js'

const RUNS = Number(process.env.NUM_RUNS ?? 1100)
const BURSTS_PER_RUN = 100
const MIN_FRAMES = 100_000
/**
 * A pure decode slower than this, three times in a row, is a hang (one slow call alone may be a GC pause or a busy
 * machine); a reassembly or a delivery to the replica (stateful, so not retried) must stay under the second bound.
 */
const MAX_CALL_MS = 250
const MAX_STATEFUL_CALL_MS = 2000
const START = 1_700_000_000_000
const VICTIM_MAX_MESSAGE = 16 * 1024

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')
const isTypedDecodeError = (e: unknown): boolean => e instanceof DecodeError || e instanceof MessageTooLargeError || e instanceof UnsupportedVersionError
/** On the replica path a delta can decode fine and still be refused for its timestamps: typed too, and harmless. */
const isTypedReplicaError = (e: unknown): boolean => isTypedDecodeError(e) || e instanceof ClockDriftError || e instanceof ClockOverflowError

// ---------------------------------------------------------------------------------------------------------------------
// A corpus of valid frames

function concat(...parts: (Uint8Array | readonly number[])[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

function buildCorpus(): { frames: Uint8Array[]; sequences: Uint8Array[][] } {
  const values = fc.sample(arbitraries.value({ long: false }), { seed: 1234, numRuns: 80 })
  const peers = ['p1', 'p2', 'p\uD800', 'é']
  const store = new RecordStore()
  const mid = new Map<string, Timestamp>()
  for (let i = 0; i < 80; i++) {
    const ts: Timestamp = { wall: START - 5000 + i * 7, counter: i % 3, peer: peers[i % peers.length]! }
    const id = ['a', 'ab', '__proto__', '\uD83D'][i % 4]!
    const collection = i % 5 === 0 ? 'notes' : 'todos'
    const value = values[i] as Value
    if (i % 11 === 10) store.delete(collection, id, ts)
    else if (i % 3 === 0) store.put(collection, id, { title: value, n: i }, ts)
    else store.update(collection, id, i % 7 === 0 ? { title: undefined, done: value } : { done: value }, ts)
    if (i === 40) for (const [p, t] of store.versionVector()) mid.set(p, t)
  }
  const full = store.changesSince(new Map())
  const partial = store.changesSince(mid)
  const tiny: Delta = { from: new Map(), to: new Map(), records: [{ collection: 'c', id: 'x', floor: { wall: START, counter: 0, peer: 'p1' }, deleted: true, fields: [] }] }
  const frames: Uint8Array[] = [
    encodeVectorMessage('sync-request', store.versionVector()),
    encodeVectorMessage('ack', store.versionVector()),
    encodeVectorMessage('sync-request', new Map()),
    encodeDeltaMessage(encodeDelta(full), true),
    encodeDeltaMessage(encodeDelta(partial), false),
    encodeDeltaMessage(encodeDelta(tiny), true),
    encodeDeltaMessage(encodeDelta({ from: new Map(), to: new Map(), records: [] }), false),
    ...encodeDeltaParts(full, 400).map((p, i) => encodeDeltaMessage(p, i % 2 === 0)),
    encodeLiveMessage(encodeDelta(partial), [0x811c9dc5, 1, 0xffffffff]),
    encodeLiveMessage(encodeDelta(tiny), []),
    encodeNeighboursMessage([0x811c9dc5, 7, 0xffffffff]),
    encodeTextAckToMessage(0xdeadbeef),
  ]
  // Chunked messages: each chunk alone is a frame; the whole sequence reassembles.
  const sequences = [
    toFrames(encodeDeltaMessage(encodeDelta(partial), true), 96, 7),
    toFrames(encodeVectorMessage('ack', store.versionVector()), 48, 8),
    toFrames(encodeDeltaMessage(encodeDelta(full), false), 512, 9),
  ]
  for (const s of sequences) frames.push(...s.slice(0, 3))
  return { frames, sequences }
}

/** Hand-made hostile inputs: deep nesting, absurd counts and lengths, chunk abuse. */
function craftedBursts(corpus: Uint8Array[]): Uint8Array[][] {
  const deltaHeader = (w: Writer, nFields: number): void => {
    w.u8(1) // delta format version
    w.uint(1)
    w.string('p1')
    w.uint(START)
    w.uint(1)
    w.string('f')
    w.uint(0) // from
    w.uint(0) // to
    w.uint(1)
    w.string('c')
    w.uint(1)
    w.uint(0)
    w.string('r')
    w.u8(0)
    w.uint(nFields)
    w.uint(0) // field name index
  }
  const deep = (tag: number, depth: number): Uint8Array => {
    const w = new Writer(depth * 2 + 64)
    w.raw(Uint8Array.of(1, 2, 1))
    deltaHeader(w, 1)
    for (let i = 0; i < depth; i++) {
      w.u8(tag)
      w.uint(1)
      if (tag === 9) w.string('k')
    }
    w.u8(0)
    w.uint(0)
    w.uint(0)
    return w.finish()
  }
  const varint = (v: number): Uint8Array => {
    const w = new Writer(10)
    w.uint(v)
    return w.finish()
  }
  const huge = 2 ** 53 - 1
  const out: Uint8Array[][] = [
    [deep(8, 100_000)], // arrays nested 100 000 deep: must be refused, not overflow the stack
    [deep(9, 50_000)], // objects nested 50 000 deep
    [concat([1, 2, 0, 1], varint(huge))], // a delta claiming 2^53 peers
    [concat([1, 1], varint(huge))], // a vector of 2^53 entries
    [concat([1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f], [0])], // a peer id of 4 GiB
    [concat([1, 4], varint(1), varint(0), varint(2 ** 40), varint(4), [1, 2, 3, 4])], // a chunk of 2^40 pieces
    [concat([1, 4], varint(huge), varint(huge - 1), varint(huge), varint(1), [0])], // extreme chunk ids
    [concat([1, 4], varint(1), varint(5), varint(3), varint(1), [0])], // index beyond count
    [concat([1, 4], varint(1), varint(0), varint(1), varint(1), [0])], // a "chunked" message of one piece
    [concat([1, 4], varint(1), varint(0), varint(2), varint(huge), [0])], // piece length beyond the frame
    // Two chunks of one id with different counts.
    [concat([1, 4], varint(3), varint(0), varint(2), varint(1), [1]), concat([1, 4], varint(3), varint(1), varint(3), varint(1), [2])],
    // A whole CHUNK frame nested inside a chunked message.
    toFrames(concat([1, 4], varint(1), varint(0), varint(2), varint(1), [1]), 30, 11),
    // More partial messages in flight than allowed.
    Array.from({ length: 20 }, (_, id) => concat([1, 4], varint(100 + id), varint(0), varint(4), varint(8), new Uint8Array(8))),
    // A chunked message larger than the victim's maxMessageBytes.
    Array.from({ length: 6 }, (_, i) => concat([1, 4], varint(55), varint(i), varint(6), varint(4000), new Uint8Array(4000))),
    // A message whose declared piece count exceeds the limit.
    [concat([1, 4], varint(56), varint(0), varint(VICTIM_MAX_MESSAGE + 1), varint(1), [0])],
    [new Uint8Array(0)],
    [Uint8Array.of(1)],
    [Uint8Array.of(2, 1, 0)], // another protocol version
    [Uint8Array.of(1, 99, 1, 2, 3)], // an unknown message type (ignored)
    [new Uint8Array(VICTIM_MAX_MESSAGE + 10).fill(1)], // an unchunked frame over the victim's limit
  ]
  for (const f of corpus.slice(0, 4)) out.push([concat(f, [0])]) // trailing bytes
  return out
}

// ---------------------------------------------------------------------------------------------------------------------
// Mutations

interface Mutation {
  readonly op: number
  readonly at: number
  readonly byte: number
  readonly len: number
  readonly other: number
  readonly ins: Uint8Array
}

const INTERESTING = [0, 1, 2, 3, 4, 0x7f, 0x80, 0xff, 0x3f, 0x40, 10]

function mutate(src: Uint8Array, muts: readonly Mutation[], corpus: readonly Uint8Array[]): Uint8Array {
  let b: Uint8Array = src.slice()
  for (const m of muts) {
    const at = b.length === 0 ? 0 : m.at % b.length
    switch (m.op) {
      case 0: // flip one bit
        if (b.length > 0) b[at]! ^= 1 << (m.byte & 7)
        break
      case 1: // an interesting byte
        if (b.length > 0) b[at] = INTERESTING[m.byte % INTERESTING.length]!
        break
      case 2: // truncate
        b = b.slice(0, at)
        break
      case 3: // insert bytes
        b = concat(b.subarray(0, at), m.ins, b.subarray(at))
        break
      case 4: // delete a range
        b = concat(b.subarray(0, at), b.subarray(at + m.len))
        break
      case 5: // overwrite with a huge varint
        b = concat(b.subarray(0, at), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f], b.subarray(at + 1))
        break
      case 6: // duplicate a slice
        b = concat(b.subarray(0, at + m.len), b.subarray(at, at + m.len), b.subarray(at + m.len))
        break
      case 7: // splice the tail of another valid frame
        {
          const o = corpus[m.other % corpus.length]!
          b = concat(b.subarray(0, at), o.subarray(o.length === 0 ? 0 : m.at % o.length))
        }
        break
      default: // nudge a byte
        if (b.length > 0) b[at] = (b[at]! + (m.byte & 1 ? 1 : 255)) & 0xff
    }
  }
  return b
}

// ---------------------------------------------------------------------------------------------------------------------
// The rig: a victim replica, a rogue peer, later an honest peer

interface Rig {
  readonly net: MemoryNetwork
  readonly victim: ReplicaImpl
  readonly rogue: MemoryTransport
  readonly errors: Error[]
  readonly clock: { now: number }
}

const ROOM = roomTopic('syncmesh', 'default')

async function rig(listenerErrors: unknown[]): Promise<Rig> {
  const net = new MemoryNetwork({ mode: 'manual', onError: (e) => listenerErrors.push(e) })
  const clock = { now: START }
  const victim = (await createReplica({
    peerId: 'victim',
    transports: [net.transport()],
    antiEntropyMs: 0,
    clock: { now: () => clock.now },
    maxMessageBytes: VICTIM_MAX_MESSAGE,
  })) as ReplicaImpl
  const errors: Error[] = []
  victim.on('error', (e) => errors.push(e))
  await victim.collection('todos').put({ id: 'mine', title: 'victim data', n: -0, bytes: new Uint8Array([1, 2]) })
  const rogue = net.transport()
  await rogue.start({ room: ROOM, peerId: 'rogue' })
  net.deliverAll()
  return { net, victim, rogue, errors, clock }
}

function stateOf(r: ReplicaImpl): string {
  return `${r.store.digest()} ${[...r.store.versionVector().values()].map((t) => `${t.peer}@${t.wall}.${t.counter}`).sort().join(',')}`
}

// ---------------------------------------------------------------------------------------------------------------------

describe('decoder fuzz', () => {
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason)
  beforeAll(() => process.on('unhandledRejection', onUnhandled))
  afterAll(() => process.off('unhandledRejection', onUnhandled))

  it(`≥ ${MIN_FRAMES} random and mutated-valid frames: only typed errors, no hang, replica state untouched, honest peers still sync`, async () => {
    const { frames: corpus, sequences } = buildCorpus()
    const crafted = craftedBursts(corpus)
    const mutation: fc.Arbitrary<Mutation> = fc.record({
      op: fc.nat({ max: 8 }),
      at: fc.nat({ max: 1_000_000 }),
      byte: fc.nat({ max: 255 }),
      len: fc.integer({ min: 1, max: 16 }),
      other: fc.nat({ max: 1000 }),
      ins: fc.uint8Array({ minLength: 1, maxLength: 12 }),
    })
    const pick = <T,>(list: readonly T[]): fc.Arbitrary<T> => fc.nat({ max: list.length - 1 }).map((i) => list[i]!)
    const burst: fc.Arbitrary<Uint8Array[]> = fc.oneof(
      { weight: 2, arbitrary: fc.uint8Array({ maxLength: 64 }).map((f) => [f]) },
      {
        weight: 3,
        arbitrary: fc
          .tuple(fc.constantFrom(1, 1, 1, 1, 0, 2, 255), fc.nat({ max: 6 }), fc.uint8Array({ maxLength: 96 }))
          .map(([v, t, rest]) => [concat([v, t], rest)]),
      },
      {
        weight: 12,
        arbitrary: fc.tuple(pick(corpus), fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([f, m]) => [mutate(f, m, corpus)]),
      },
      {
        weight: 1,
        // A chunk sequence with one piece mutated (and sometimes reordered or repeated).
        arbitrary: fc
          .tuple(pick(sequences), fc.nat(), mutation, fc.boolean())
          .map(([seq, k, m, rev]) => {
            const out = seq.map((f, i) => (i === k % seq.length ? mutate(f, [m], corpus) : f))
            return rev ? [...out.reverse(), out[0]!] : out
          }),
      },
      { weight: 1, arbitrary: pick(crafted) },
      { weight: 1, arbitrary: pick(corpus).map((f) => [f]) },
    )

    const seed = process.env.SEED ? Number(process.env.SEED) : (Math.random() * 2 ** 32) | 0
    const path = process.env.PROP_PATH?.trim() || undefined
    let frames = 0
    let refusedByReplica = 0
    let maxCallMs = 0
    const listenerErrors: unknown[] = []
    /** Runs fn, returns its duration in ms (a throw counts as a result). */
    const clock = (fn: () => unknown): { ms: number; error: unknown } => {
      const t0 = performance.now()
      let error: unknown
      try {
        fn()
      } catch (e) {
        error = e
      }
      const ms = performance.now() - t0
      if (ms > maxCallMs) maxCallMs = ms
      return { ms, error }
    }
    const expectTyped = (what: string, frame: Uint8Array, fn: () => unknown, pure: boolean): void => {
      let { ms, error } = clock(fn)
      for (let retry = 0; pure && ms > MAX_CALL_MS && retry < 2; retry++) ms = Math.min(ms, clock(fn).ms)
      if (ms > (pure ? MAX_CALL_MS : MAX_STATEFUL_CALL_MS)) throw new Error(`${what} took ${ms.toFixed(0)} ms on frame ${hex(frame)}`)
      if (error !== undefined && !isTypedDecodeError(error)) {
        throw new Error(`${what} threw ${(error as Error)?.name}: ${(error as Error)?.message} on frame ${hex(frame)}`, { cause: error })
      }
    }

    const started = performance.now()
    const property = fc.asyncProperty(fc.array(burst, { minLength: BURSTS_PER_RUN, maxLength: BURSTS_PER_RUN }), async (bursts) => {
      const r = await rig(listenerErrors)
      const reassembler = new Reassembler(4096)
      for (const b of bursts) {
        for (const frame of b) {
          frames++
          r.clock.now++
          // 1. The decoders on their own.
          expectTyped('decodeMessage', frame, () => decodeMessage(frame), true)
          expectTyped('decodeDelta', frame, () => decodeDelta(frame), true)
          expectTyped('decodeDelta (DELTA payload)', frame, () => decodeDelta(frame.subarray(3)), true)
          expectTyped(
            'Reassembler.push',
            frame,
            () => {
              const whole = reassembler.push(frame)
              if (whole) decodeMessage(whole)
            },
            false,
          )
          // A delta that decodes re-encodes to bytes that decode to the same thing.
          let delta: Delta | undefined
          try {
            delta = decodeDelta(frame.subarray(3))
          } catch {
            delta = undefined
          }
          if (delta) {
            const again = encodeDelta(delta)
            if (hex(encodeDelta(decodeDelta(again))) !== hex(again)) throw new Error(`delta re-encoding is not stable for frame ${hex(frame)}`)
          }
          // 2. The replica's receive path.
          if (frame.length > r.net.maxFrameSize) continue
          const before = stateOf(r.victim)
          const errorsBefore = r.errors.length
          const delivery = clock(() => {
            r.rogue.send('victim', frame)
            r.net.deliverAll()
          })
          if (delivery.error !== undefined) throw delivery.error
          if (delivery.ms > MAX_STATEFUL_CALL_MS) throw new Error(`delivering frame ${hex(frame)} to the replica took ${delivery.ms.toFixed(0)} ms`)
          const fresh = r.errors.slice(errorsBefore)
          for (const e of fresh) {
            if (!isTypedReplicaError(e)) throw new Error(`the replica reported ${e.name}: ${e.message} for frame ${hex(frame)}`, { cause: e })
          }
          if (fresh.length > 0) {
            refusedByReplica++
            const after = stateOf(r.victim)
            if (after !== before) throw new Error(`the replica refused frame ${hex(frame)} (${fresh[0]!.name}) but its state changed:\n  before ${before}\n  after  ${after}`)
            // A peer that sent malformed input is ignored until it reconnects: reconnect it.
            r.net.link('rogue', 'victim', false)
            r.net.deliverAll()
            r.net.link('rogue', 'victim', true)
            r.net.deliverAll()
          }
        }
      }
      // 3. An honest peer joins afterwards, writes, and both converge.
      const honest = (await createReplica({ peerId: 'honest', transports: [r.net.transport()], antiEntropyMs: 0, clock: { now: () => r.clock.now } })) as ReplicaImpl
      const honestErrors: Error[] = []
      honest.on('error', (e) => honestErrors.push(e))
      r.net.deliverAll()
      await honest.collection('todos').put({ id: 'from-honest', n: -0, x: NaN })
      await r.victim.collection('todos').update('mine', { after: 'fuzz' })
      for (let i = 0; i < 3; i++) {
        r.net.deliverAll()
        r.victim.engine.antiEntropy()
        honest.engine.antiEntropy()
        r.net.deliverAll()
      }
      if (honestErrors.length > 0) throw new Error(`the honest peer reported ${honestErrors[0]!.name}: ${honestErrors[0]!.message}`)
      const got = r.victim.collection('todos').get('from-honest') as Record<string, unknown> | undefined
      if (!got || !Object.is(got.n, -0) || !Number.isNaN(got.x)) throw new Error('the victim did not receive the honest peer’s write')
      assertConverged([r.victim, honest], { replay: 'Replay: see the Replay line above' })
      await honest.close()
      await r.victim.close()
    })
    const details = await fc.check(property, { seed, numRuns: RUNS, endOnFailure: true, ...(path ? { path } : {}) })
    const ms = performance.now() - started
    if (details.failed) {
      const replay = `Replay: SEED=${seed} PROP_PATH=${JSON.stringify(details.counterexamplePath ?? '')} npx vitest run property-tests/decoder-fuzz.test.ts`
      console.error(replay)
      const cause = details.errorInstance
      throw new Error(`${replay}\n${cause instanceof Error ? cause.message : String(cause)}`, { cause })
    }
    console.info(`decoder fuzz: ${frames} frames in ${details.numRuns} runs, ${refusedByReplica} refused by the replica, slowest call ${maxCallMs.toFixed(1)} ms, ${ms.toFixed(0)} ms total`)
    expect(frames).toBeGreaterThanOrEqual(path || process.env.NUM_RUNS ? 1 : MIN_FRAMES)
    expect(refusedByReplica).toBeGreaterThan(0)
    expect(listenerErrors).toEqual([])
    expect(unhandled).toEqual([])
    expect(ms).toBeLessThan(90_000)
  }, 120_000)
})
