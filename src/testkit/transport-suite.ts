/**
 * The Transport conformance suite: one list of test cases that every {@link Transport} must pass, whatever the test
 * runner. Each case creates fresh transports through a {@link TransportHarness}, starts them in a room of its own,
 * and throws a {@link TransportConformanceError} describing the broken promise when the transport misbehaves.
 *
 * ```ts
 * for (const c of transportConformanceCases(harness)) it(c.name, c.run)        // vitest / jest / mocha
 * for (const c of transportConformanceCases(harness)) test(c.name, c.run)      // node:test
 * ```
 *
 * Conventions checked beyond the `Transport` type: an oversized frame throws an error whose `code` is
 * `'FRAME_TOO_LARGE'`; `start()` on a started transport rejects; a stopped transport neither sends nor receives.
 * Every wait is bounded (`timeoutMs`, default 5 s) and fails with a message saying what was awaited.
 */
import { SyncmeshError } from '../../crdt/errors.js'
import type { PeerId, Transport } from '../../transports/types.js'
import { equalBytes, pattern, preview } from './bytes.js'

/** Builds fresh transports for one conformance case. */
export interface TransportHarness {
  /**
   * Creates n unstarted transports that can reach each other once started in the same room, with lossless,
   * duplicate-free delivery. `settle()` pumps delivery (manual networks: deliver everything; real networks: a short
   * wait); `close()` releases whatever the harness created (the transports are stopped by the case already).
   */
  create(n: number): Promise<{ transports: Transport[]; settle(): Promise<void>; close(): Promise<void> }>
}

/** One named conformance test; `run` resolves on success and throws on failure. */
export interface ConformanceCase {
  /** Names the failure the case prevents. */
  name: string
  /** Runs the case. */
  run(): Promise<void>
}

/** Options of {@link transportConformanceCases}. */
export interface TransportConformanceOptions {
  /**
   * Longest wait, in ms, for any expected event before the case fails.
   * @default 5000
   */
  timeoutMs?: number
  /**
   * How long, in ms, to keep watching after `settle()` when checking that something does NOT happen.
   * @default 50
   */
  quietMs?: number
  /**
   * Number of frames sent in the bulk-delivery case.
   * @default 1000
   */
  manyFrames?: number
}

/** A conformance case failed: the message says which promise of the Transport contract was broken. */
export class TransportConformanceError extends SyncmeshError {
  override readonly code = 'TRANSPORT_CONFORMANCE'
}

// ---------------------------------------------------------------------------------------------------------------------
// Helpers (local, framework-free)

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new TransportConformanceError(message)
}

function fail(message: string): never {
  throw new TransportConformanceError(message)
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TransportConformanceError(`timed out after ${ms} ms: ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

function tagged(index: number): Uint8Array {
  const out = new Uint8Array(8)
  new DataView(out.buffer).setUint32(0, index)
  new DataView(out.buffer).setUint32(4, (index * 2654435761) >>> 0)
  return out
}

function readTag(frame: Uint8Array): number | undefined {
  if (frame.byteLength !== 8) return undefined
  const view = new DataView(frame.buffer, frame.byteOffset, 8)
  const index = view.getUint32(0)
  return view.getUint32(4) === (index * 2654435761) >>> 0 ? index : undefined
}

let roomCounter = 0
function freshRoom(caseName: string): string {
  const c = globalThis.crypto as { randomUUID?: () => string } | undefined
  const unique = typeof c?.randomUUID === 'function' ? c.randomUUID() : `${Date.now().toString(36)}`
  return `syncmesh-conformance-${++roomCounter}-${unique}-${caseName.length}`
}

interface Received {
  readonly from: PeerId
  readonly frame: Uint8Array
}

/** Everything one transport reported, recorded by listeners attached before start. */
class Recorder {
  readonly up: PeerId[] = []
  readonly down: PeerId[] = []
  readonly frames: Received[] = []
  private readonly offs: (() => void)[] = []

  constructor(readonly t: Transport) {
    this.offs.push(t.on('peer:up', (p) => this.up.push(p)))
    this.offs.push(t.on('peer:down', (p) => this.down.push(p)))
    this.offs.push(t.on('frame', (from, frame) => this.frames.push({ from, frame })))
  }

  /** Peers currently up according to the events seen so far. */
  connected(): Set<PeerId> {
    const set = new Set<PeerId>()
    // peer:up and peer:down alternate per peer, so a positive balance means "up".
    const ups = new Map<PeerId, number>()
    for (const p of this.up) ups.set(p, (ups.get(p) ?? 0) + 1)
    for (const p of this.down) ups.set(p, (ups.get(p) ?? 0) - 1)
    for (const [p, n] of ups) if (n > 0) set.add(p)
    return set
  }

  framesFrom(peer: PeerId): Uint8Array[] {
    return this.frames.filter((r) => r.from === peer).map((r) => r.frame)
  }

  detach(): void {
    for (const off of this.offs.splice(0)) off()
  }
}

interface Ctx {
  readonly transports: Transport[]
  readonly ids: PeerId[]
  readonly rec: Recorder[]
  readonly room: string
  settle(): Promise<void>
  /** Waits until `cond()` holds, pumping the harness; fails with `what` (evaluated at timeout) on timeout. */
  until(cond: () => boolean, what: string | (() => string)): Promise<void>
  /** Settles, keeps watching for `quietMs`, settles again: for checks that something did NOT happen. */
  quiet(): Promise<void>
  start(i: number): Promise<void>
  /** Starts transports `indices` and waits until each sees all the others up. */
  startMesh(indices: number[]): Promise<void>
}

/** Sorted, readable list for error messages. */
function show(items: Iterable<PeerId>): string {
  return JSON.stringify([...items].sort())
}

// ---------------------------------------------------------------------------------------------------------------------
// The suite

/** Returns the conformance cases for transports built by `harness`; run each with any test runner. */
export function transportConformanceCases(
  harness: TransportHarness,
  opts: TransportConformanceOptions = {},
): ConformanceCase[] {
  const timeoutMs = opts.timeoutMs ?? 5000
  const quietMs = opts.quietMs ?? 50
  const manyFrames = opts.manyFrames ?? 1000

  /** Wraps a case body with harness setup, recorders, bounded waits and cleanup. */
  function conformanceCase(name: string, n: number, body: (ctx: Ctx) => Promise<void>): ConformanceCase {
    return {
      name,
      run: async () => {
        const made = await withTimeout(harness.create(n), timeoutMs, `harness.create(${n})`)
        assert(
          Array.isArray(made.transports) && made.transports.length === n,
          `harness.create(${n}) must return ${n} transports, got ${String(made.transports?.length)}`,
        )
        const room = freshRoom(name)
        const ids = made.transports.map((_, i) => `peer-${i}-${room.slice(-6)}`)
        const rec = made.transports.map((t) => new Recorder(t))
        const settle = () => withTimeout(made.settle(), timeoutMs, 'harness settle()')
        const until = async (cond: () => boolean, what: string | (() => string)): Promise<void> => {
          const deadline = Date.now() + timeoutMs
          for (;;) {
            if (cond()) return
            await settle()
            if (cond()) return
            if (Date.now() >= deadline) {
              fail(`timed out after ${timeoutMs} ms waiting until ${typeof what === 'function' ? what() : what}`)
            }
            await sleep(5)
          }
        }
        const ctx: Ctx = {
          transports: made.transports,
          ids,
          rec,
          room,
          settle,
          until,
          quiet: async () => {
            await settle()
            await sleep(quietMs)
            await settle()
          },
          start: async (i) => {
            const t = made.transports[i] ?? fail(`no transport #${i}`)
            await withTimeout(t.start({ room, peerId: ids[i]! }), timeoutMs, `start() of ${ids[i]}`)
          },
          startMesh: async (indices) => {
            for (const i of indices) await ctx.start(i)
            for (const i of indices) {
              const others = indices.filter((j) => j !== i).map((j) => ids[j]!)
              await until(
                () => others.every((p) => rec[i]!.connected().has(p)),
                () => `${ids[i]} sees peer:up from ${show(others)} (saw ${show(rec[i]!.connected())})`,
              )
            }
          },
        }
        let failed = false
        try {
          await body(ctx)
        } catch (error) {
          failed = true
          throw error
        } finally {
          for (const r of rec) r.detach()
          for (const t of made.transports) {
            await withTimeout(t.stop(), timeoutMs, 'stop() during cleanup').catch(() => undefined)
          }
          // A cleanup failure must not mask the failure of the case itself.
          const closing = withTimeout(made.close(), timeoutMs, 'harness close()')
          if (failed) await closing.catch(() => undefined)
          else await closing
        }
      },
    }
  }

  return [
    conformanceCase('maxFrameSize is a positive integer (the engine chunks against it)', 1, async ({ transports }) => {
      const max = transports[0]!.maxFrameSize
      assert(Number.isSafeInteger(max) && max > 0, `maxFrameSize must be a positive safe integer, got ${String(max)}`)
      assert(max >= 8, `maxFrameSize ${max} is below the 8 bytes this suite's probe frames need`)
    }),

    conformanceCase('peer:up fires on both sides once both started', 2, async ({ ids, rec, start, until, quiet }) => {
      await start(0)
      await quiet()
      assert(show(rec[0]!.up) === '[]', `a lone transport must not report peers, saw peer:up ${show(rec[0]!.up)}`)
      await start(1)
      await until(() => rec[0]!.up.includes(ids[1]!), `${ids[0]} sees peer:up(${ids[1]})`)
      await until(() => rec[1]!.up.includes(ids[0]!), `${ids[1]} sees peer:up(${ids[0]})`)
      await quiet()
      assert(rec[0]!.up.length === 1, `peer:up must fire once per peer, ${ids[0]} saw ${show(rec[0]!.up)}`)
      assert(rec[1]!.up.length === 1, `peer:up must fire once per peer, ${ids[1]} saw ${show(rec[1]!.up)}`)
      assert(rec[0]!.down.length + rec[1]!.down.length === 0, 'no peer:down may fire while both stay started')
    }),

    conformanceCase('transports in different rooms never see each other', 2, async ({ transports, ids, rec, room, quiet }) => {
      await withTimeout(transports[0]!.start({ room, peerId: ids[0]! }), timeoutMs, 'start()')
      await withTimeout(transports[1]!.start({ room: `${room}-other`, peerId: ids[1]! }), timeoutMs, 'start()')
      await quiet()
      transports[0]!.send(ids[1]!, new Uint8Array([1]))
      transports[0]!.broadcast?.(new Uint8Array([2]))
      await quiet()
      assert(rec[0]!.up.length === 0 && rec[1]!.up.length === 0, 'peers in different rooms must not see peer:up')
      assert(rec[1]!.frames.length === 0, 'a frame crossed from one room into another')
    }),

    conformanceCase(
      'frames arrive intact byte-for-byte, including an empty frame and one of exactly maxFrameSize bytes',
      2,
      async ({ transports, ids, rec, startMesh, until }) => {
        await startMesh([0, 1])
        const max = transports[0]!.maxFrameSize
        const expected = [
          new Uint8Array(0),
          new Uint8Array([0]),
          new Uint8Array([0, 1, 2, 127, 128, 254, 255]),
          Uint8Array.from({ length: 256 }, (_, i) => i),
          pattern(1000, 1),
          // A view into a larger buffer: only the viewed bytes may travel.
          pattern(64, 3).subarray(10, 30),
        ].filter((f) => f.byteLength < max)
        expected.push(pattern(max, 2))
        for (const frame of expected) transports[0]!.send(ids[1]!, frame)
        await until(() => rec[1]!.frames.length >= expected.length, `${expected.length} frames arrive at ${ids[1]}`)
        const got = rec[1]!.framesFrom(ids[0]!)
        assert(got.length === expected.length, `expected ${expected.length} frames from ${ids[0]}, got ${got.length}`)
        const unmatched = [...got]
        for (const frame of expected) {
          const k = unmatched.findIndex((g) => equalBytes(g, frame))
          if (k < 0) {
            fail(
              `frame ${preview(frame)} did not arrive intact; received ${unmatched.map(preview).join(', ')}`,
            )
          }
          unmatched.splice(k, 1)
        }
        for (const g of got) assert(g instanceof Uint8Array, 'delivered frames must be Uint8Array instances')
      },
    ),

    conformanceCase('no frame is delivered to its sender', 2, async ({ transports, ids, rec, startMesh, until, quiet }) => {
      await startMesh([0, 1])
      transports[0]!.send(ids[0]!, new Uint8Array([9, 9])) // to itself
      transports[0]!.send(ids[1]!, new Uint8Array([1]))
      transports[0]!.broadcast?.(new Uint8Array([2]))
      await until(() => rec[1]!.frames.length >= (transports[0]!.broadcast ? 2 : 1), `${ids[1]} receives the frames`)
      await quiet()
      assert(
        rec[0]!.frames.length === 0,
        `the sender received ${rec[0]!.frames.length} frame(s) of its own: ${rec[0]!.frames.map((r) => preview(r.frame)).join(', ')}`,
      )
      assert(rec[0]!.up.every((p) => p !== ids[0]), 'a transport must not report itself as a peer')
    }),

    conformanceCase('send to an unknown peer does not throw and reaches no one', 2, async ({ transports, ids, rec, startMesh, quiet }) => {
      await startMesh([0, 1])
      try {
        transports[0]!.send('no-such-peer', new Uint8Array([1, 2, 3]))
        transports[0]!.send('', new Uint8Array([4]))
      } catch (error) {
        fail(`send to an unknown peer threw: ${String(error)}`)
      }
      await quiet()
      assert(rec[1]!.frames.length === 0, `a frame addressed to an unknown peer reached ${ids[1]}`)
    }),

    conformanceCase(
      'mutating a buffer after send does not change the delivered frame',
      3,
      async ({ transports, ids, rec, startMesh, until }) => {
        await startMesh([0, 1, 2])
        const buf = new Uint8Array([1, 2, 3, 4, 5])
        transports[0]!.send(ids[1]!, buf)
        buf.fill(0xee)
        const hasBroadcast = typeof transports[0]!.broadcast === 'function'
        const bbuf = new Uint8Array([6, 7, 8])
        if (hasBroadcast) {
          transports[0]!.broadcast!(bbuf)
          bbuf.fill(0xdd)
        }
        const want1 = hasBroadcast ? 2 : 1
        await until(() => rec[1]!.frames.length >= want1, `${ids[1]} receives ${want1} frame(s)`)
        const got = rec[1]!.framesFrom(ids[0]!)
        assert(
          got.some((g) => equalBytes(g, new Uint8Array([1, 2, 3, 4, 5]))),
          `send() must copy (or transmit) the bytes before returning; received ${got.map(preview).join(', ')}`,
        )
        if (hasBroadcast) {
          await until(() => rec[2]!.frames.length >= 1, `${ids[2]} receives the broadcast`)
          for (const r of [rec[1]!, rec[2]!]) {
            assert(
              r.framesFrom(ids[0]!).some((g) => equalBytes(g, new Uint8Array([6, 7, 8]))),
              `broadcast() must copy the bytes before returning; received ${r.frames.map((x) => preview(x.frame)).join(', ')}`,
            )
          }
        }
      },
    ),

    conformanceCase('broadcast reaches every other peer exactly once', 4, async ({ transports, ids, rec, startMesh, until, quiet }) => {
      const b = transports[0]!.broadcast
      if (typeof b !== 'function') return // optional in the interface: nothing to check
      await startMesh([0, 1, 2, 3])
      transports[0]!.broadcast!(new Uint8Array([42, 43]))
      await until(() => [1, 2, 3].every((i) => rec[i]!.frames.length >= 1), 'every other peer receives the broadcast')
      await quiet()
      for (const i of [1, 2, 3]) {
        const got = rec[i]!.frames
        assert(got.length === 1, `${ids[i]} received the broadcast ${got.length} times, expected once`)
        assert(got[0]!.from === ids[0], `${ids[i]} got the broadcast attributed to ${got[0]!.from}, not ${ids[0]}`)
        assert(equalBytes(got[0]!.frame, new Uint8Array([42, 43])), `${ids[i]} got ${preview(got[0]!.frame)}`)
      }
      assert(rec[0]!.frames.length === 0, 'broadcast was delivered back to its sender')
    }),

    conformanceCase(
      'three peers all see each other and frames carry the right sender id',
      3,
      async ({ transports, ids, rec, startMesh, until, quiet }) => {
        await startMesh([0, 1, 2])
        for (let i = 0; i < 3; i++) {
          const others = ids.filter((_, j) => j !== i)
          assert(
            show(rec[i]!.connected()) === show(others),
            `${ids[i]} should see exactly ${show(others)}, sees ${show(rec[i]!.connected())}`,
          )
        }
        for (let i = 0; i < 3; i++) transports[i]!.send(ids[(i + 1) % 3]!, new Uint8Array([i]))
        await until(() => rec.every((r) => r.frames.length >= 1), 'each peer receives one frame')
        await quiet()
        for (let i = 0; i < 3; i++) {
          const sender = (i + 2) % 3
          const got = rec[i]!.frames
          assert(got.length === 1, `${ids[i]} received ${got.length} frames, expected 1`)
          assert(got[0]!.from === ids[sender], `${ids[i]} got a frame from ${got[0]!.from}, expected ${ids[sender]}`)
          assert(equalBytes(got[0]!.frame, new Uint8Array([sender])), `${ids[i]} got ${preview(got[0]!.frame)}`)
        }
      },
    ),

    conformanceCase(
      'stop() fires peer:down on the others and is idempotent',
      3,
      async ({ transports, ids, rec, startMesh, until, quiet }) => {
        await startMesh([0, 1, 2])
        await withTimeout(Promise.all([transports[0]!.stop(), transports[0]!.stop()]), timeoutMs, 'two concurrent stop()')
        await withTimeout(transports[0]!.stop(), timeoutMs, 'a third stop()')
        for (const i of [1, 2]) await until(() => rec[i]!.down.includes(ids[0]!), `${ids[i]} sees peer:down(${ids[0]})`)
        await quiet()
        for (const i of [1, 2]) {
          const downs = rec[i]!.down.filter((p) => p === ids[0])
          assert(downs.length === 1, `${ids[i]} saw peer:down(${ids[0]}) ${downs.length} times, expected once`)
          assert(
            rec[i]!.down.every((p) => p === ids[0]),
            `${ids[i]} saw peer:down for peers that did not stop: ${show(rec[i]!.down)}`,
          )
          assert(!rec[i]!.connected().has(ids[0]!), `${ids[i]} still considers ${ids[0]} up after peer:down`)
        }
      },
    ),

    conformanceCase('starting an already started transport rejects instead of joining twice', 1, async ({ transports, ids, room, start }) => {
      await start(0)
      let threw = false
      try {
        await withTimeout(transports[0]!.start({ room, peerId: ids[0]! }), timeoutMs, 'second start()')
      } catch (error) {
        if (error instanceof TransportConformanceError) throw error
        threw = true
      }
      assert(threw, 'start() on a started transport must throw/reject')
    }),

    conformanceCase('unsubscribe functions stop delivery', 2, async ({ transports, ids, rec, startMesh, until, quiet }) => {
      const t1 = transports[1]!
      let removedFrames = 0
      let removedUps = 0
      let removedDowns = 0
      const offFrame = t1.on('frame', () => removedFrames++)
      const offUp = t1.on('peer:up', () => removedUps++)
      const offDown = t1.on('peer:down', () => removedDowns++)
      offFrame()
      offUp()
      offDown()
      // Double unsubscribe is harmless and must not remove other listeners.
      offFrame()
      offUp()
      offDown()
      await startMesh([0, 1])
      transports[0]!.send(ids[1]!, new Uint8Array([7]))
      await until(() => rec[1]!.frames.length >= 1, `the still-subscribed listener of ${ids[1]} receives the frame`)
      await withTimeout(transports[0]!.stop(), timeoutMs, 'stop()')
      await until(() => rec[1]!.down.includes(ids[0]!), `the still-subscribed listener of ${ids[1]} sees peer:down`)
      await quiet()
      assert(removedFrames === 0, `an unsubscribed frame listener was called ${removedFrames} time(s)`)
      assert(removedUps === 0, `an unsubscribed peer:up listener was called ${removedUps} time(s)`)
      assert(removedDowns === 0, `an unsubscribed peer:down listener was called ${removedDowns} time(s)`)
    }),

    conformanceCase(
      'after stop, send is a no-op and nothing is delivered to or from the stopped transport',
      2,
      async ({ transports, ids, rec, startMesh, until, quiet }) => {
        await startMesh([0, 1])
        await withTimeout(transports[1]!.stop(), timeoutMs, 'stop()')
        await until(() => rec[0]!.down.includes(ids[1]!), `${ids[0]} sees peer:down(${ids[1]})`)
        const before1 = { up: rec[1]!.up.length, down: rec[1]!.down.length, frames: rec[1]!.frames.length }
        const before0 = rec[0]!.frames.length
        try {
          transports[0]!.send(ids[1]!, new Uint8Array([1]))
          transports[0]!.broadcast?.(new Uint8Array([2]))
          transports[1]!.send(ids[0]!, new Uint8Array([3]))
          transports[1]!.broadcast?.(new Uint8Array([4]))
        } catch (error) {
          fail(`send/broadcast involving a stopped transport threw: ${String(error)}`)
        }
        await quiet()
        await withTimeout(transports[0]!.stop(), timeoutMs, 'stop()')
        await quiet()
        assert(rec[1]!.frames.length === before1.frames, 'a stopped transport received a frame')
        assert(rec[0]!.frames.length === before0, 'a stopped transport sent a frame')
        assert(
          rec[1]!.up.length === before1.up && rec[1]!.down.length === before1.down,
          'a stopped transport still reported peer events',
        )
      },
    ),

    conformanceCase(
      `many frames to one peer all arrive exactly once (order not required)`,
      2,
      async ({ transports, ids, rec, startMesh, until, quiet }) => {
        await startMesh([0, 1])
        for (let i = 0; i < manyFrames; i++) transports[0]!.send(ids[1]!, tagged(i))
        await until(
          () => rec[1]!.frames.length >= manyFrames,
          () => `${manyFrames} frames arrive (got ${rec[1]!.frames.length} so far)`,
        )
        await quiet()
        const seen = new Uint8Array(manyFrames)
        for (const { from, frame } of rec[1]!.frames) {
          assert(from === ids[0], `frame attributed to ${from}, expected ${ids[0]}`)
          const tag = readTag(frame)
          assert(tag !== undefined && tag < manyFrames, `a corrupted frame arrived: ${preview(frame)}`)
          seen[tag]!++
        }
        const missing = seen.reduce((n, c) => n + (c === 0 ? 1 : 0), 0)
        const dups = seen.reduce((n, c) => n + (c > 1 ? 1 : 0), 0)
        assert(missing === 0, `${missing} of ${manyFrames} frames never arrived`)
        assert(dups === 0, `${dups} frames arrived more than once on a lossless harness`)
      },
    ),

    conformanceCase(
      'frames larger than maxFrameSize are refused with a thrown error rather than silently truncated',
      2,
      async ({ transports, ids, rec, startMesh, quiet }) => {
        await startMesh([0, 1])
        const max = transports[0]!.maxFrameSize
        const oversized = pattern(max + 1, 4)
        const expectRefusal = (what: string, act: () => void): void => {
          let error: unknown
          try {
            act()
          } catch (e) {
            error = e
          }
          assert(error !== undefined, `${what} of ${max + 1} bytes (maxFrameSize ${max}) did not throw`)
          assert(
            (error as { code?: unknown }).code === 'FRAME_TOO_LARGE',
            `${what} of an oversized frame should throw an error with code 'FRAME_TOO_LARGE', got ${String(error)}`,
          )
        }
        expectRefusal('send()', () => transports[0]!.send(ids[1]!, oversized))
        if (typeof transports[0]!.broadcast === 'function') {
          expectRefusal('broadcast()', () => transports[0]!.broadcast!(oversized))
        }
        await quiet()
        assert(
          rec[1]!.frames.length === 0,
          `a refused frame was delivered anyway: ${rec[1]!.frames.map((r) => preview(r.frame)).join(', ')}`,
        )
      },
    ),
  ]
}
