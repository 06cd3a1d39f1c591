/**
 * The BroadcastChannel transport, on Node's global BroadcastChannel (channels of one process deliver to each other):
 * the whole Transport conformance suite, then what is particular to it — peers that vanish without a word, restarts
 * under the same id, foreign traffic on the channel, directed frames, and two replicas syncing over it.
 */
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createReplica, MemoryStorage } from '../../src/index.js'
import { transportConformanceCases, type TransportHarness } from '../../src/testkit/transport-suite.js'
import {
  broadcastTransport,
  DEFAULT_BROADCAST_MAX_FRAME_SIZE,
  FrameTooLargeError,
  PeerIdInUseError,
  TransportArgumentError,
  TransportStateError,
  type BroadcastChannelLike,
  type BroadcastTransport,
  type BroadcastTransportInit,
} from '../../transports/broadcast.js'
import type { PeerId } from '../../transports/types.js'
import { until } from '../src/helpers.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

let channels = 0
/** A channel name no other test uses. */
const freshChannel = (): string => `syncmesh-test/broadcast/${++channels}/${crypto.randomUUID()}`

/** Short timings so that silence is noticed quickly. */
const FAST = { heartbeatMs: 25, peerTimeoutMs: 150 } as const

/** Everything one transport reported. */
function watch(t: BroadcastTransport): { up: PeerId[]; down: PeerId[]; frames: { from: PeerId; data: number[] }[]; events: string[] } {
  const seen = { up: [] as PeerId[], down: [] as PeerId[], frames: [] as { from: PeerId; data: number[] }[], events: [] as string[] }
  t.on('peer:up', (p) => (seen.up.push(p), seen.events.push(`up:${p}`)))
  t.on('peer:down', (p) => (seen.down.push(p), seen.events.push(`down:${p}`)))
  t.on('frame', (from, f) => (seen.frames.push({ from, data: [...f] }), seen.events.push(`frame:${from}`)))
  return seen
}

/** A raw end of a channel that records what is posted on it, and can post anything. */
function tap(name: string): { messages: unknown[]; post(m: unknown): void; close(): void } {
  const bc = new BroadcastChannel(name)
  const messages: unknown[] = []
  bc.onmessage = (e) => messages.push(e.data)
  return { messages, post: (m) => bc.postMessage(m), close: () => bc.close() }
}

/** BroadcastChannel ends that can be killed: closed under the transport without it knowing, as when a tab dies. */
function killableChannels(): { Ctor: new (name: string) => BroadcastChannelLike; killAll(): void } {
  const all: { inner: BroadcastChannel; dead: boolean }[] = []
  class Killable implements BroadcastChannelLike {
    onmessage: ((event: { readonly data: unknown }) => void) | null = null
    private readonly end: { inner: BroadcastChannel; dead: boolean }
    constructor(name: string) {
      this.end = { inner: new BroadcastChannel(name), dead: false }
      this.end.inner.onmessage = (e) => this.onmessage?.(e)
      all.push(this.end)
    }
    postMessage(m: unknown): void {
      if (!this.end.dead) this.end.inner.postMessage(m)
    }
    close(): void {
      this.end.inner.close()
    }
  }
  return {
    Ctor: Killable,
    killAll: () => {
      for (const end of all) {
        end.dead = true
        end.inner.close()
      }
    },
  }
}

const started: BroadcastTransport[] = []
/** Creates and starts a transport; every one is stopped after its test. */
async function open(peerId: PeerId, init: BroadcastTransportInit, onError?: (e: Error) => void): Promise<BroadcastTransport> {
  const t = broadcastTransport({ ...FAST, ...init })
  started.push(t)
  await t.start({ room: 'unused', peerId, ...(onError ? { onError } : {}) })
  return t
}

afterEach(async () => {
  vi.unstubAllGlobals()
  for (const t of started.splice(0)) await t.stop()
})

describe('broadcastTransport conformance (Node BroadcastChannel)', () => {
  const harness: TransportHarness = {
    async create(n) {
      const transports = Array.from({ length: n }, () => broadcastTransport())
      return {
        transports,
        settle: () => sleep(5),
        close: async () => {
          for (const t of transports) await t.stop()
        },
      }
    },
  }
  for (const c of transportConformanceCases(harness)) it(c.name, c.run)
})

describe('broadcastTransport', () => {
  it('reports a peer that vanished without bye as down after peerTimeoutMs of silence, and not before', async () => {
    const name = freshChannel()
    const dying = killableChannels()
    const a = await open('a', { channel: name, BroadcastChannel: dying.Ctor })
    const b = await open('b', { channel: name })
    const seen = watch(b)
    await until(() => seen.up.includes('a'), 2000, 'b to see a')
    await sleep(FAST.peerTimeoutMs * 2) // heartbeats keep a live peer up
    expect(seen.down).toEqual([])
    const killedAt = Date.now()
    dying.killAll() // no bye, no more heartbeats
    await until(() => seen.down.includes('a'), 2000, 'b to time a out')
    const after = Date.now() - killedAt
    // Silence counts from a's last heartbeat, up to heartbeatMs before the kill; it is checked every heartbeatMs.
    expect(after).toBeGreaterThanOrEqual(FAST.peerTimeoutMs - FAST.heartbeatMs - 10)
    expect(after).toBeLessThan(FAST.peerTimeoutMs + FAST.heartbeatMs + 400)
    expect(seen.down).toEqual(['a'])
    b.send('a', new Uint8Array([1])) // a gone peer is ignored
    await a.stop()
  })

  it('sees a peer that restarts under the same id as a new peer: down, then up, and frames flow again', async () => {
    const name = freshChannel()
    const a = await open('a', { channel: name })
    const b = await open('b', { channel: name })
    const seen = watch(b)
    await until(() => seen.up.length === 1, 2000, 'b to see a')
    await a.stop()
    expect(a.channel).toBeUndefined()
    await a.start({ room: 'unused', peerId: 'a' })
    expect(a.channel).toBe(name)
    await until(() => seen.up.length === 2, 2000, 'b to see a again')
    expect(seen.events).toEqual(['up:a', 'down:a', 'up:a'])
    a.send('b', new Uint8Array([7]))
    await until(() => seen.frames.length === 1, 2000, 'the frame')
    expect(seen.frames).toEqual([{ from: 'a', data: [7] }])
  })

  it('notices a restart without bye at once (a new session), not after the timeout', async () => {
    const name = freshChannel()
    const dying = killableChannels()
    await open('a', { channel: name, BroadcastChannel: dying.Ctor, heartbeatMs: 1000, peerTimeoutMs: 60_000 })
    const b = await open('b', { channel: name, heartbeatMs: 1000, peerTimeoutMs: 60_000 })
    const seen = watch(b)
    await until(() => seen.up.length === 1, 2000, 'b to see a')
    dying.killAll() // the tab crashed...
    await open('a', { channel: name }) // ...and was reloaded
    await until(() => seen.up.length === 2, 1000, 'b to see the new a')
    expect(seen.events).toEqual(['up:a', 'down:a', 'up:a'])
  })

  it('ignores foreign and malformed messages on its channel, never throwing or reporting them', async () => {
    const name = freshChannel()
    const errors: Error[] = []
    const a = await open('a', { channel: name }, (e) => errors.push(e))
    const seen = watch(a)
    const raw = tap(name)
    const ok = { sm: 'bc1', from: 'x', session: 's1' }
    const junk: unknown[] = [
      null, undefined, 0, 42, 'hello', true, [], [ok], new Uint8Array([1, 2]), new ArrayBuffer(4), new Map([['sm', 'bc1']]), new Date(),
      {}, { sm: 'bc1' }, { ...ok }, { ...ok, sm: 'bc2', t: 'hello' }, { ...ok, t: 'nope' }, { ...ok, t: 'HELLO' },
      { ...ok, t: 'hello', from: '' }, { ...ok, t: 'hello', from: 7 }, { ...ok, t: 'hello', session: '' }, { ...ok, t: 'hello', session: null },
      { ...ok, t: 'hello', to: 5 }, { ...ok, t: 'hello', to: '' }, { ...ok, t: 'frame' }, { ...ok, t: 'frame', data: 'bytes' },
      { ...ok, t: 'frame', data: [1, 2] }, { ...ok, t: 'frame', data: new ArrayBuffer(2) }, { ...ok, t: 'frame', data: new Uint16Array(2) },
      { ...ok, t: 'bye' }, // well-formed, but from a peer never seen: nothing to report
    ]
    for (const m of junk) raw.post(m)
    raw.post({ ...ok, from: 'y', t: 'hello' }) // and one well-formed hello, after all the junk
    await until(() => seen.up.length === 1, 2000, 'the well-formed hello')
    expect(seen.up).toEqual(['y'])
    expect(seen.frames).toEqual([])
    expect(errors).toEqual([])
    await until(() => raw.messages.length > 0, 2000, 'the answer to the hello')
    expect(raw.messages[0]).toMatchObject({ sm: 'bc1', t: 'here', from: 'a', to: 'y' })
    expect(typeof (raw.messages[0] as { session: unknown }).session).toBe('string')
    raw.close()
  })

  it('delivers a directed frame to its peer only, as one post that others drop', async () => {
    const name = freshChannel()
    const [a, b, c] = [await open('a', { channel: name }), await open('b', { channel: name }), await open('c', { channel: name })]
    const [sb, sc] = [watch(b), watch(c)]
    await until(() => sb.up.length === 2 && sc.up.length === 2, 2000, 'the mesh')
    const raw = tap(name)
    a.send('b', new Uint8Array([1, 2, 3]))
    a.broadcast(new Uint8Array([9]))
    await until(() => sb.frames.length === 2 && sc.frames.length === 1, 2000, 'the frames')
    await sleep(20)
    expect(sb.frames).toEqual([{ from: 'a', data: [1, 2, 3] }, { from: 'a', data: [9] }])
    expect(sc.frames).toEqual([{ from: 'a', data: [9] }])
    const frames = raw.messages.filter((m) => (m as { t?: string }).t === 'frame')
    expect(frames).toMatchObject([
      { sm: 'bc1', t: 'frame', from: 'a', to: 'b', data: new Uint8Array([1, 2, 3]) },
      { sm: 'bc1', t: 'frame', from: 'a', data: new Uint8Array([9]) },
    ])
    expect('to' in (frames[1] as object)).toBe(false)
    raw.close()
  })

  it('posts only the viewed bytes of a frame that is a view into a larger buffer', async () => {
    const name = freshChannel()
    const a = await open('a', { channel: name })
    const seen = watch(a)
    await open('b', { channel: name })
    await until(() => seen.up.includes('b'), 2000, 'a to see b')
    const raw = tap(name)
    const secret = Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff)
    a.send('b', secret.subarray(100, 104))
    await until(() => raw.messages.some((m) => (m as { t?: string }).t === 'frame'), 2000, 'the frame')
    const frame = raw.messages.find((m) => (m as { t?: string }).t === 'frame') as { data: Uint8Array }
    expect([...frame.data]).toEqual([100, 101, 102, 103])
    expect(frame.data.buffer.byteLength).toBe(4)
    raw.close()
  })

  it('reports a second transport under its own id as PeerIdInUseError and never peers with itself', async () => {
    const name = freshChannel()
    const errors: Error[] = []
    const a1 = await open('a', { channel: name }, (e) => errors.push(e))
    const a2 = await open('a', { channel: name }, (e) => errors.push(e))
    const [s1, s2] = [watch(a1), watch(a2)]
    await until(() => errors.length >= 2, 2000, 'both to notice the clash')
    await sleep(FAST.heartbeatMs * 3)
    expect(errors).toHaveLength(2) // once per start, not once per heartbeat
    for (const e of errors) {
      expect(e).toBeInstanceOf(PeerIdInUseError)
      expect((e as PeerIdInUseError).code).toBe('PEER_ID_IN_USE')
    }
    expect(s1.up).toEqual([])
    expect(s2.up).toEqual([])
  })

  it('refuses oversized frames with FrameTooLargeError, and validates its options', async () => {
    expect(broadcastTransport().maxFrameSize).toBe(DEFAULT_BROADCAST_MAX_FRAME_SIZE)
    expect(DEFAULT_BROADCAST_MAX_FRAME_SIZE).toBe(256 * 1024)
    const a = await open('a', { channel: freshChannel(), maxFrameSize: 10 })
    expect(() => a.send('b', new Uint8Array(11))).toThrow(FrameTooLargeError)
    expect(() => a.broadcast(new Uint8Array(11))).toThrow(expect.objectContaining({ code: 'FRAME_TOO_LARGE', size: 11, maxFrameSize: 10 }))
    await expect(a.start({ room: 'r', peerId: 'a' })).rejects.toThrow(TransportStateError)
    for (const bad of [{ maxFrameSize: 0 }, { maxFrameSize: 1.5 }, { heartbeatMs: -1 }, { heartbeatMs: 100, peerTimeoutMs: 100 }, { peerId: '' }, { channel: '' }]) {
      expect(() => broadcastTransport(bad), JSON.stringify(bad)).toThrow(TransportArgumentError)
    }
  })

  it('rejects start() with a clear error where there is no BroadcastChannel', async () => {
    vi.stubGlobal('BroadcastChannel', undefined)
    const t = broadcastTransport()
    await expect(t.start({ room: 'r', peerId: 'a' })).rejects.toThrow(TransportArgumentError)
    await expect(t.start({ room: 'r', peerId: 'a' })).rejects.toThrow(/BroadcastChannel/)
    expect(t.channel).toBeUndefined()
  })

  it('says bye on a pagehide that unloads the page, not on one into the back/forward cache', async () => {
    const handlers = new Set<(e: { persisted?: boolean }) => void>()
    vi.stubGlobal('addEventListener', (type: string, fn: (e: { persisted?: boolean }) => void) => type === 'pagehide' && handlers.add(fn))
    vi.stubGlobal('removeEventListener', (type: string, fn: (e: { persisted?: boolean }) => void) => type === 'pagehide' && handlers.delete(fn))
    const name = freshChannel()
    const a = await open('a', { channel: name, heartbeatMs: 1000, peerTimeoutMs: 60_000 })
    const b = await open('b', { channel: name, heartbeatMs: 1000, peerTimeoutMs: 60_000 })
    const seen = watch(b)
    await until(() => seen.up.length === 1, 2000, 'b to see a')
    expect(handlers.size).toBe(2)
    const [hideA] = handlers
    hideA!({ persisted: true })
    await sleep(30)
    expect(seen.down).toEqual([])
    hideA!({ persisted: false })
    await until(() => seen.down.length === 1, 2000, 'the bye')
    await a.stop()
    await b.stop()
    expect(handlers.size).toBe(0)
  })

  it('keeps delivering when a listener throws, and reports the error through onError', async () => {
    const name = freshChannel()
    const errors: Error[] = []
    const a = await open('a', { channel: name })
    const b = await open('b', { channel: name }, (e) => errors.push(e))
    b.on('frame', () => {
      throw new Error('listener bug')
    })
    const seen = watch(b)
    await until(() => seen.up.length === 1, 2000, 'b to see a')
    a.send('b', new Uint8Array([1]))
    a.send('b', new Uint8Array([2]))
    await until(() => seen.frames.length === 2, 2000, 'both frames')
    expect(errors.map((e) => e.message)).toEqual(['listener bug', 'listener bug'])
  })

  it('does not keep a Node process alive while started', async () => {
    const script = `
      import { broadcastTransport } from ${JSON.stringify(fileURLToPath(new URL('../../transports/broadcast.ts', import.meta.url)))}
      const a = broadcastTransport(), b = broadcastTransport()
      b.on('peer:up', (p) => console.log('up', p))
      await a.start({ room: 'r', peerId: 'a' })
      await b.start({ room: 'r', peerId: 'b' })
      setTimeout(() => {}, 50) // let the hello arrive; then nothing holds the event loop
    `
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { timeout: 10_000 })
    expect(stdout.trim()).toBe('up a')
  })

  it('syncs two replicas over it (createReplica, MemoryStorage), on a channel named after the room topic', async () => {
    const room = `broadcast-test-${crypto.randomUUID()}`
    const ta = broadcastTransport({ heartbeatMs: 50, peerTimeoutMs: 500 })
    const tb = broadcastTransport({ heartbeatMs: 50, peerTimeoutMs: 500 })
    const a = await createReplica({ peerId: 'A', room, storage: new MemoryStorage(), transports: [ta], antiEntropyMs: 0 })
    const b = await createReplica({ peerId: 'B', room, storage: new MemoryStorage(), transports: [tb], antiEntropyMs: 0 })
    try {
      expect(ta.channel).toMatch(/^syncmesh\/.+/)
      expect(ta.channel).toBe(tb.channel)
      expect(ta.channel).not.toContain(room) // the replica hands transports a hash of the room
      await a.collection('todos').put({ id: 't1', title: 'from A' })
      await until(() => b.collection('todos').get('t1') !== undefined, 5000, 'A’s write on B')
      await b.collection('todos').update('t1', { done: true })
      await until(() => a.collection('todos').get('t1')?.done === true, 5000, 'B’s update on A')
      expect(a.collection('todos').get('t1')).toEqual({ id: 't1', title: 'from A', done: true })
      expect(b.collection('todos').get('t1')).toEqual({ id: 't1', title: 'from A', done: true })
    } finally {
      await Promise.all([a.close(), b.close()])
    }
    expect(ta.channel).toBeUndefined() // closing the replica stopped its transport
  })
})
