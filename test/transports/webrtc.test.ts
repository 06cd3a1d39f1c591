/**
 * The WebRTC transport over real data channels (@roamhq/wrtc) with y-webrtc's own signaling server
 * (node_modules/y-webrtc/bin/server.js) in a child process, held to 127.0.0.1.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer } from 'ws'
import { createReplica, type Replica } from '../../src/index.js'
import { compareReplicas } from '../../src/testkit/index.js'
import { transportConformanceCases, type TransportHarness } from '../../src/testkit/transport-suite.js'
import type { PeerId, Transport } from '../../transports/types.js'
import {
  FrameTooLargeError,
  TransportArgumentError,
  WEBRTC_MAX_FRAME_SIZE,
  webrtcTransport,
  type RTCImplementation,
  type WebRTCTransport,
  type WebRTCTransportInit,
} from '../../transports/webrtc/index.js'
import { overlayNeighbours } from '../../transports/overlay.js'
import { backoffDelay } from '../../transports/webrtc/signaling.js'
import { type SignalingServer, rawSignalingClient, startYWebrtcServer, waitFor } from './webrtc-helpers.js'

let server: SignalingServer
/** Everything a test created, released in afterAll even when the test failed half-way. */
const transports: Transport[] = []
const replicas: Replica[] = []
const cleanups: (() => Promise<void> | void)[] = []

beforeAll(async () => {
  server = await startYWebrtcServer()
})

afterAll(async () => {
  await Promise.allSettled(replicas.map((r) => r.close()))
  await Promise.allSettled(transports.map((t) => t.stop()))
  for (const c of cleanups) await Promise.resolve(c()).catch(() => undefined)
  await server?.kill()
})

function transport(init: Partial<WebRTCTransportInit> = {}): WebRTCTransport {
  const t = webrtcTransport({ signaling: [server.url], ...init })
  transports.push(t)
  return t
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
let roomCounter = 0
const freshRoom = (): string => `webrtc-test-${process.pid}-${Date.now().toString(36)}-${++roomCounter}`

/** Records peer events of a transport, and the largest number of peers it ever had up at once. */
function watch(t: Transport): { up: PeerId[]; down: PeerId[]; frames: { from: PeerId; frame: Uint8Array }[]; maxUp: () => number } {
  const up: PeerId[] = []
  const down: PeerId[] = []
  const frames: { from: PeerId; frame: Uint8Array }[] = []
  let current = 0
  let max = 0
  t.on('peer:up', (p) => {
    up.push(p)
    max = Math.max(max, ++current)
  })
  t.on('peer:down', (p) => {
    down.push(p)
    current--
  })
  t.on('frame', (from, frame) => frames.push({ from, frame }))
  return { up, down, frames, maxUp: () => max }
}

// ---------------------------------------------------------------------------------------------------------------------

describe('webrtc transport: Transport conformance (y-webrtc signaling server)', () => {
  const harness: TransportHarness = {
    async create(n) {
      return {
        transports: Array.from({ length: n }, () => transport()),
        settle: () => sleep(20),
        close: async () => {},
      }
    },
  }
  for (const c of transportConformanceCases(harness, { quietMs: 150 })) it(c.name, c.run)
})

describe('webrtc transport: options and pure parts', () => {
  it('rejects bad options at construction with TransportArgumentError', () => {
    const bad: unknown[] = [
      { signaling: [] },
      { signaling: ['http://127.0.0.1:1'] },
      { signaling: ['ws://127.0.0.1:1'], maxPeers: 1 },
      { signaling: ['ws://127.0.0.1:1'], maxFrameSize: WEBRTC_MAX_FRAME_SIZE + 1 },
      { signaling: ['ws://127.0.0.1:1'], connectTimeoutMs: 0 },
      { signaling: ['ws://127.0.0.1:1'], reconnect: { initialMs: 1000, maxMs: 10 } },
      { signaling: ['ws://127.0.0.1:1'], rtc: {} },
    ]
    for (const init of bad) expect(() => webrtcTransport(init as WebRTCTransportInit), JSON.stringify(init)).toThrow(TransportArgumentError)
    expect(webrtcTransport({ signaling: ['ws://127.0.0.1:1'] }).maxFrameSize).toBe(16384)
  })

  it('overlay: bounded degree, symmetric, connected ring lattice; full mesh when the room is small', () => {
    for (const m of [2, 3, 4, 7]) {
      for (const n of [1, 2, 3, 5, 8, 13, 40]) {
        const ids = Array.from({ length: n }, (_, i) => `p${(i * 7919) % 1000}-${i}`)
        const nb = new Map(ids.map((id) => [id, overlayNeighbours(id, ids, m)]))
        for (const [id, set] of nb) {
          expect(set.size).toBeLessThanOrEqual(m)
          expect(set.has(id)).toBe(false)
          if (n - 1 <= m) expect(set.size).toBe(n - 1)
          for (const other of set) expect(nb.get(other)!.has(id), `${id}→${other} symmetric (n=${n} m=${m})`).toBe(true)
        }
        const seen = new Set<string>([ids[0]!])
        const stack = [ids[0]!]
        while (stack.length) for (const o of nb.get(stack.pop()!)!) if (!seen.has(o)) (seen.add(o), stack.push(o))
        expect(seen.size, `connected (n=${n} m=${m})`).toBe(n)
      }
    }
  })

  it('backoff: exponential, capped, jittered within [d/2, d]', () => {
    const b = { initialMs: 100, maxMs: 1000 }
    expect(backoffDelay(0, b, () => 0)).toBe(50)
    expect(backoffDelay(0, b, () => 1)).toBe(100)
    expect(backoffDelay(3, b, () => 1)).toBe(800)
    expect(backoffDelay(4, b, () => 0.999)).toBeLessThanOrEqual(1000)
    expect(backoffDelay(400, b, () => 0)).toBe(500)
  })
})

describe('webrtc transport: behaviour over real data channels', () => {
  it('2 transports connect through y-webrtc’s server and frames of every size up to maxFrameSize flow both ways', async () => {
    const room = freshRoom()
    const a = transport()
    const b = transport()
    const wa = watch(a)
    const wb = watch(b)
    await a.start({ room, peerId: 'alice' })
    await b.start({ room, peerId: 'bob' })
    await waitFor(() => wa.up.includes('bob') && wb.up.includes('alice'), 5000, 'peer:up on both sides')
    expect(a.connectedPeers()).toEqual(['bob'])
    const sizes = [0, 1, 100, 4096, 16383, 16384]
    for (const s of sizes) a.send('bob', new Uint8Array(s).fill(s & 0xff))
    for (const s of sizes) b.send('alice', new Uint8Array(s).fill(1))
    expect(() => a.send('bob', new Uint8Array(16385))).toThrow(FrameTooLargeError)
    await waitFor(() => wb.frames.length === sizes.length && wa.frames.length === sizes.length, 5000, 'frames both ways')
    expect(wb.frames.map((f) => f.frame.byteLength)).toEqual(sizes)
    expect(wb.frames.every((f) => f.frame.every((x) => x === (f.frame.byteLength & 0xff)))).toBe(true)
    await a.stop()
    await waitFor(() => wb.down.includes('alice'), 5000, 'peer:down after stop')
    await b.stop()
  })

  it('backpressure: a burst far beyond the channel buffer is queued (bounded) and drained, and the rest is dropped and counted', async () => {
    const room = freshRoom()
    const a = transport({ maxBufferedBytes: 256 * 1024, maxQueuedBytes: 512 * 1024 })
    const b = transport()
    const wb = watch(b)
    await a.start({ room, peerId: 'a' })
    await b.start({ room, peerId: 'b' })
    await waitFor(() => a.connectedPeers().includes('b') && b.connectedPeers().includes('a'), 5000, 'connected')
    const frame = new Uint8Array(16384)
    const n = 256 // 4 MiB in one synchronous burst: 256 KiB buffered + 512 KiB queued fit, the rest must drop
    let peakQueued = 0
    for (let i = 0; i < n; i++) {
      new DataView(frame.buffer).setUint32(0, i)
      a.send('b', frame)
      peakQueued = Math.max(peakQueued, a.status().peers[0]!.queuedBytes)
    }
    expect(peakQueued).toBeGreaterThan(0)
    expect(peakQueued).toBeLessThanOrEqual(512 * 1024)
    const dropped = a.status().dropped
    expect(dropped).toBeGreaterThan(0)
    await waitFor(() => wb.frames.length === n - dropped, 10_000, () => `${n - dropped} frames (got ${wb.frames.length})`)
    // Whatever was not dropped arrives in order (the channel is ordered and the queue is FIFO).
    const idx = wb.frames.map((f) => new DataView(f.frame.buffer, f.frame.byteOffset).getUint32(0))
    expect(idx).toEqual([...idx].sort((x, y) => x - y))
    expect(a.status().peers[0]!.queuedBytes).toBe(0)
  })

  it('3 replicas converge on concurrent writes over real WebRTC', async () => {
    const app = freshRoom()
    const rs = await Promise.all(
      [0, 1, 2].map((i) => createReplica({ peerId: `r${i}`, app, room: 'todos', transports: [transport()], antiEntropyMs: 1000 })),
    )
    replicas.push(...rs)
    await waitFor(() => rs.every((r) => r.status().peers.filter((p) => p.connected).length === 2), 10_000, 'every replica sees 2 peers')
    await Promise.all(
      rs.map(async (r, i) => {
        const todos = r.collection<{ id: string; title?: string; by?: number; n?: number }>('todos')
        const writes: Promise<void>[] = []
        for (let k = 0; k < 30; k++) writes.push(todos.put({ id: `r${i}-${k}`, title: `from r${i}`, n: k }))
        writes.push(todos.update('shared', { title: `r${i} wins?`, by: i }))
        writes.push(todos.update(`r${(i + 1) % 3}-0`, { title: `edited by r${i}` }))
        await Promise.all(writes)
      }),
    )
    await waitFor(() => compareReplicas(rs).length === 0 && rs[0]!.collection('todos').all().length === 91, 15_000, () => `convergence: ${JSON.stringify(compareReplicas(rs).slice(0, 3))}`)
    const shared = rs.map((r) => r.collection('todos').get('shared'))
    expect(shared[0]).toEqual(shared[1])
    expect(shared[1]).toEqual(shared[2])
    await Promise.all(rs.map((r) => r.close()))
  })

  it('maxPeers: 2 with 5 replicas: a bounded overlay (never more than 2 channels each), still converges by multi-hop', async () => {
    const app = freshRoom()
    const ts = [0, 1, 2, 3, 4].map(() => transport({ maxPeers: 2 }))
    const ws = ts.map(watch)
    const rs: Replica[] = []
    for (let i = 0; i < 5; i++) {
      rs.push(await createReplica({ peerId: `m${i}`, app, room: 'overlay', transports: [ts[i]!], antiEntropyMs: 1000 }))
      replicas.push(rs[i]!)
    }
    await Promise.all(
      rs.map(async (r, i) => {
        const c = r.collection<{ id: string; v: number }>('items')
        await Promise.all(Array.from({ length: 10 }, (_, k) => c.put({ id: `m${i}-${k}`, v: k })))
      }),
    )
    await waitFor(
      () => compareReplicas(rs).length === 0 && rs.every((r) => r.collection('items').all().length === 50),
      30_000,
      () => `convergence; counts ${rs.map((r) => r.collection('items').all().length)}; peers ${ts.map((t) => t.connectedPeers().join('+')).join(' | ')}`,
    )
    for (const w of ws) expect(w.maxUp()).toBeLessThanOrEqual(2)
    const edges = new Set<string>()
    ts.forEach((t, i) => t.connectedPeers().forEach((p) => edges.add([`m${i}`, p].sort().join('-'))))
    expect(edges.size).toBeLessThan(10) // not a full mesh (5 peers would need 10 edges)
    // A write made now still reaches everyone through the overlay.
    await rs[0]!.collection<{ id: string; v: number }>('items').put({ id: 'late', v: 1 })
    await waitFor(() => rs.every((r) => r.collection('items').get('late') !== undefined), 10_000, 'late write everywhere')
    await Promise.all(rs.map((r) => r.close()))
  })

  it('signaling server restart: open channels keep working, sockets reconnect with backoff, new peers join afterwards', async () => {
    const own = await startYWebrtcServer()
    cleanups.push(() => own.kill())
    const room = freshRoom()
    const mk = (): WebRTCTransport => transport({ signaling: [own.url], reconnect: { initialMs: 100, maxMs: 800 } })
    const a = mk()
    const b = mk()
    const wa = watch(a)
    const wb = watch(b)
    await a.start({ room, peerId: 'a' })
    await b.start({ room, peerId: 'b' })
    await waitFor(() => a.connectedPeers().includes('b') && b.connectedPeers().includes('a'), 5000, 'a–b connected')
    await own.kill()
    await waitFor(() => !a.status().signaling[0]!.connected && !b.status().signaling[0]!.connected, 5000, 'sockets notice the crash')
    a.send('b', new Uint8Array([1]))
    b.send('a', new Uint8Array([2]))
    await waitFor(() => wb.frames.length === 1 && wa.frames.length === 1, 5000, 'frames flow while the server is down')
    await sleep(500) // a few failed reconnect attempts
    await own.restart()
    await waitFor(() => a.status().signaling[0]!.opens >= 2 && b.status().signaling[0]!.opens >= 2, 5000, 'sockets reconnect')
    const c = mk()
    const wc = watch(c)
    await c.start({ room, peerId: 'c' })
    await waitFor(() => wc.up.includes('a') && wc.up.includes('b'), 8000, () => `c connects to a and b (sees ${wc.up})`)
    c.send('a', new Uint8Array([3]))
    await waitFor(() => wa.frames.length === 2, 5000, 'c → a frame')
    expect(wa.down).toEqual([])
    expect(wb.down).toEqual([])
  })

  it('a peer that crashes (SIGKILL: no leave, no SCTP abort) is reported down once ICE gives up, and rejoins when restarted', async () => {
    const room = freshRoom()
    const child = (): { proc: ChildProcess; lines: string[] } => {
      const proc = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./webrtc-child.ts', import.meta.url)), server.url, room, 'child'], {
        cwd: fileURLToPath(new URL('../..', import.meta.url)),
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      cleanups.push(() => void proc.kill('SIGKILL'))
      const lines: string[] = []
      proc.stdout!.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)))
      return { proc, lines }
    }
    const a = transport({ connectTimeoutMs: 2000, reconnect: { initialMs: 100, maxMs: 1000 } })
    const b = transport({ connectTimeoutMs: 2000, reconnect: { initialMs: 100, maxMs: 1000 } })
    const wa = watch(a)
    const wb = watch(b)
    await a.start({ room, peerId: 'a' })
    await b.start({ room, peerId: 'b' })
    const first = child()
    await waitFor(() => wa.up.includes('child') && wb.up.includes('child') && wa.up.includes('b'), 15_000, () => `all connected (child says ${first.lines})`)
    a.send('child', new Uint8Array([1, 2, 3]))
    await waitFor(() => wa.frames.some((f) => f.from === 'child'), 5000, 'echo from the child')
    const killedAt = Date.now()
    first.proc.kill('SIGKILL')
    await waitFor(() => wa.down.includes('child') && wb.down.includes('child'), 25_000, 'peer:down for the crashed peer')
    const detectMs = Date.now() - killedAt
    expect(wa.down).toEqual(['child'])
    expect(wb.down).toEqual(['child'])
    expect(a.connectedPeers()).toEqual(['b'])
    // The same peer id in a new process (a new session) is welcomed back.
    const second = child()
    await waitFor(() => wa.up.filter((p) => p === 'child').length === 2 && wb.up.filter((p) => p === 'child').length === 2, 15_000, 'the restarted peer rejoins')
    a.send('child', new Uint8Array([4]))
    await waitFor(() => wa.frames.filter((f) => f.from === 'child').length === 2, 5000, 'echo from the new child')
    second.proc.kill('SIGTERM') // a clean stop: leave + closed channels, seen at once
    const stoppedAt = Date.now()
    await waitFor(() => wa.down.length === 2 && wb.down.length === 2, 5000, 'peer:down after a clean stop')
    console.log(`crash detected after ${detectMs} ms; clean stop after ${Date.now() - stoppedAt} ms`)
  })

  it('malformed signaling messages on the topic (wrong shapes, impersonation with bad tokens, huge) are ignored', async () => {
    const room = freshRoom()
    const a = transport()
    const b = transport()
    const wa = watch(a)
    const wb = watch(b)
    await a.start({ room, peerId: 'a' })
    await b.start({ room, peerId: 'b' })
    await waitFor(() => a.connectedPeers().includes('b') && b.connectedPeers().includes('a'), 5000, 'connected')
    const evil = await rawSignalingClient(server.url, room)
    cleanups.push(() => evil.close())
    const junk: unknown[] = [
      'garbage', 42, null, [], {}, [{ type: 'announce', from: 'x', session: 's' }],
      { type: 'announce' }, { type: 'announce', from: 5, session: 's' }, { type: 'announce', from: 'y', session: 7 },
      { type: 'announce', from: 'z'.repeat(100_000), session: 's' },
      { type: 'announce', from: '__proto__', session: 'constructor' },
      { type: 'signal', from: 'evil', to: 'a' }, { type: 'signal', from: 'evil', to: 'a', token: 't', signal: 'offer' },
      { type: 'signal', from: 'evil', to: 'a', token: 't1', signal: { type: 'offer', sdp: 'garbage' } },
      { type: 'signal', from: 'evil', to: 'a', token: 't2', signal: { type: 'offer', sdp: 42 } },
      { type: 'signal', from: 'evil', to: 'a', token: 't3', signal: { type: 'candidate', candidate: { candidate: 'garbage', sdpMid: '0', sdpMLineIndex: 0 } } },
      { type: 'signal', from: 'evil', to: 'a', token: 't3', signal: { type: 'candidate', candidate: { candidate: 'x', sdpMLineIndex: -1 } } },
      { type: 'signal', from: 'b', to: 'a', token: 'not-the-token', signal: { type: 'answer', sdp: 'garbage' } },
      { type: 'signal', from: 'b', to: 'a', token: 'not-the-token', signal: { type: 'bye' } },
      { type: 'signal', from: 'b', to: 'a', token: 'not-the-token', signal: { type: 'reject' } },
      { type: 'signal', from: 'b', to: 'a', token: 'not-the-token', signal: { type: 'unknown' } },
      { type: 'leave', from: 'b', session: 'not-b-session' },
      { type: 'leave', from: 'b', session: 12 },
      { type: 'announce', from: 'huge', session: 's', pad: 'x'.repeat(2 * 1024 * 1024) },
      { type: 'signal', from: 'evil', to: 'a', token: 't4', signal: { type: 'offer', sdp: 'v=0\r\n'.repeat(200_000) } },
    ]
    for (const j of junk) evil.publish(j)
    for (let i = 0; i < 100; i++) evil.publish({ type: 'signal', from: `flood${i}`, to: 'a', token: `f${i}`, signal: { type: 'candidate', candidate: { candidate: 'c', sdpMid: '0', sdpMLineIndex: 0 } } })
    await sleep(1500)
    // The real link is untouched and still carries frames; a newcomer still joins.
    expect(wa.down).toEqual([])
    expect(wb.down).toEqual([])
    a.send('b', new Uint8Array([7]))
    await waitFor(() => wb.frames.length === 1, 5000, 'a → b frame after the junk')
    const c = transport()
    const wc = watch(c)
    await c.start({ room, peerId: 'c' })
    await waitFor(() => wc.up.includes('a') && wc.up.includes('b'), 8000, 'newcomer joins after the junk')
  })

  it('a hostile signaling server (non-JSON, binary, huge, wrong topics) next to a good one does not break anything', async () => {
    const room = freshRoom()
    const http = createServer()
    const wss = new WebSocketServer({ server: http })
    const hostile = [
      'not json', '{"type":', '[]', 'null', '"str"', '{"type":"publish"}', `{"type":"publish","topic":"other","data":{}}`,
      JSON.stringify({ type: 'publish', topic: room, data: 'x' }),
      JSON.stringify({ type: 'publish', topic: room, data: { type: 'announce', from: 'ghost', session: 's' } }),
      JSON.stringify({ type: 'publish', topic: room, data: { type: 'leave', from: 'a' } }).replace('"a"', '"nobody"'),
      'x'.repeat(3 * 1024 * 1024),
    ]
    wss.on('connection', (sock) => {
      for (const h of hostile) sock.send(h)
      sock.send(Buffer.from([0xff, 0xfe, 0x00, 0x01]))
      sock.send(Buffer.from(JSON.stringify({ type: 'publish', topic: room, data: 'bin' })))
      sock.on('message', () => sock.send('{{{{')) // answers everything with garbage
      setTimeout(() => sock.terminate(), 300) // and drops the connection
    })
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()))
    cleanups.push(() => new Promise<void>((r) => (wss.close(), http.close(() => r()))))
    const url = `ws://127.0.0.1:${(http.address() as AddressInfo).port}`
    const mk = (): WebRTCTransport => transport({ signaling: [url, server.url], reconnect: { initialMs: 50, maxMs: 200 } })
    const a = mk()
    const b = mk()
    const wb = watch(b)
    await a.start({ room, peerId: 'a' })
    await b.start({ room, peerId: 'b' })
    await waitFor(() => a.connectedPeers().includes('b') && b.connectedPeers().includes('a'), 8000, 'connected via the good server')
    await sleep(800) // several reconnects to the hostile server
    expect(a.status().signaling.find((s) => s.url === url)!.opens).toBeGreaterThan(1)
    a.send('b', new Uint8Array([1, 2]))
    await waitFor(() => wb.frames.length === 1, 5000, 'frame')
    expect(wb.down).toEqual([])
  })

  it('a peer whose ICE never completes is cleaned up after connectTimeoutMs and retried with backoff', async () => {
    const { default: wrtc } = (await import('@roamhq/wrtc')) as unknown as { default: { RTCPeerConnection: new (c: object) => { close(): void } } }
    let created = 0
    let closed = 0
    const made: number[] = []
    // No candidates at all: relay-only ICE and no TURN server.
    function NoIcePeerConnection(config: object): { close(): void } {
      const pc = new wrtc.RTCPeerConnection({ ...config, iceTransportPolicy: 'relay' })
      created++
      made.push(Date.now())
      const close = pc.close.bind(pc)
      pc.close = () => {
        closed++
        close()
      }
      return pc
    }
    const rtc = { RTCPeerConnection: NoIcePeerConnection } as unknown as RTCImplementation
    const room = freshRoom()
    const opts = { rtc, connectTimeoutMs: 300, reconnect: { initialMs: 200, maxMs: 1600 } }
    const a = transport(opts)
    const b = transport(opts)
    const wa = watch(a)
    await a.start({ room, peerId: 'a' })
    await b.start({ room, peerId: 'b' })
    await sleep(3500)
    expect(wa.up).toEqual([])
    expect(created).toBeGreaterThanOrEqual(3) // retried
    expect(created).toBeLessThanOrEqual(24) // with backoff, not in a hot loop
    expect(closed).toBeGreaterThanOrEqual(created - 2) // at most the current attempt of each side is still open
    expect(a.status().peers.length).toBeLessThanOrEqual(1)
    await a.stop()
    await b.stop()
    expect(closed).toBe(created) // stop closes every RTCPeerConnection
  })

  it('a WebRTC implementation that throws, or an unreachable signaling server, neither crashes nor hangs', async () => {
    const room = freshRoom()
    let calls = 0
    const rtc = {
      RTCPeerConnection: function Broken() {
        calls++
        throw new Error('no WebRTC today')
      },
    } as unknown as RTCImplementation
    const a = transport({ rtc, reconnect: { initialMs: 100, maxMs: 400 } })
    const b = transport({ rtc, reconnect: { initialMs: 100, maxMs: 400 } })
    const wa = watch(a)
    await a.start({ room, peerId: 'a' })
    await b.start({ room, peerId: 'b' })
    await sleep(1500)
    expect(calls).toBeGreaterThan(0)
    expect(wa.up).toEqual([])
    expect(a.status().peers).toEqual([])
    // Nothing listens on this port: start() gives up waiting after connectTimeoutMs, and stop() ends the wait at once.
    const dead = transport({ signaling: ['ws://127.0.0.1:9'], connectTimeoutMs: 800, reconnect: { initialMs: 50, maxMs: 100 } })
    let t0 = Date.now()
    await dead.start({ room, peerId: 'lonely' })
    expect(Date.now() - t0).toBeGreaterThanOrEqual(700)
    expect(dead.status().signaling[0]!.connected).toBe(false)
    await dead.stop()
    const waiting = transport({ signaling: ['ws://127.0.0.1:9'], connectTimeoutMs: 60_000 })
    t0 = Date.now()
    const starting = waiting.start({ room, peerId: 'lonely2' })
    await sleep(100)
    await waiting.stop()
    await starting
    expect(Date.now() - t0).toBeLessThan(2000)
  })

  describe('offer glare against a hand-driven peer speaking the signaling protocol', () => {
    /** A bare RTCPeerConnection driven through a raw signaling client, to force both sides to offer at once. */
    async function manualPeer(room: string, id: string) {
      const { default: wrtc } = (await import('@roamhq/wrtc')) as unknown as { default: RTCImplementation }
      const Pc = wrtc.RTCPeerConnection as unknown as typeof RTCPeerConnection
      const sig = await rawSignalingClient(server.url, room)
      cleanups.push(() => sig.close())
      const inbox: { from: string; token: string; signal: { type: string; sdp?: string; candidate?: RTCIceCandidateInit } }[] = []
      sig.onData((d) => {
        const m = d as { type?: string; to?: string; from: string; token: string; signal: never }
        if (m && m.type === 'signal' && m.to === id) inbox.push(m)
      })
      const pcs: RTCPeerConnection[] = []
      cleanups.push(() => pcs.forEach((pc) => pc.close()))
      const send = (to: string, token: string, signal: object): void => sig.publish({ type: 'signal', from: id, to, token, session: `manual-${id}`, signal })
      const connection = (to: string, token: string) => {
        const pc = new Pc({ iceServers: [] })
        pcs.push(pc)
        const dc = pc.createDataChannel('syncmesh', { negotiated: true, id: 0 })
        dc.binaryType = 'arraybuffer'
        const got: Uint8Array[] = []
        dc.onmessage = (ev) => got.push(new Uint8Array(ev.data as ArrayBuffer))
        pc.onicecandidate = (ev) => {
          if (ev.candidate?.candidate) send(to, token, { type: 'candidate', candidate: { candidate: ev.candidate.candidate, sdpMid: ev.candidate.sdpMid, sdpMLineIndex: ev.candidate.sdpMLineIndex } })
        }
        // Apply the remote peer's candidates for this token as they come.
        let applied = 0
        const pump = setInterval(() => {
          if (!pc.remoteDescription) return
          const mine = inbox.filter((m) => m.token === token && m.signal.type === 'candidate')
          for (; applied < mine.length; applied++) pc.addIceCandidate(mine[applied]!.signal.candidate!).catch(() => {})
        }, 10)
        cleanups.push(() => clearInterval(pump))
        return { pc, dc, got }
      }
      return {
        inbox,
        announce: () => sig.publish({ type: 'announce', from: id, session: `manual-${id}` }),
        async offer(to: string, token: string) {
          const c = connection(to, token)
          await c.pc.setLocalDescription(await c.pc.createOffer())
          send(to, token, { type: 'offer', sdp: c.pc.localDescription!.sdp })
          return c
        },
        async answer(to: string, token: string, sdp: string) {
          const c = connection(to, token)
          await c.pc.setRemoteDescription({ type: 'offer', sdp })
          await c.pc.setLocalDescription(await c.pc.createAnswer())
          send(to, token, { type: 'answer', sdp: c.pc.localDescription!.sdp })
          return c
        },
      }
    }

    it('the smaller id’s offer wins: the larger transport drops its own offer and answers', async () => {
      const room = freshRoom()
      const t = transport()
      const wt = watch(t)
      await t.start({ room, peerId: 'zzz' })
      const m = await manualPeer(room, 'aaa')
      m.announce()
      // The transport (larger id) offers after a short grace period; the manual peer then offers too: glare.
      await waitFor(() => m.inbox.some((x) => x.from === 'zzz' && x.signal.type === 'offer'), 5000, 'the transport offers')
      const theirs = m.inbox.find((x) => x.signal.type === 'offer')!.token
      const ours = await m.offer('zzz', 'manual-token')
      await waitFor(() => m.inbox.some((x) => x.token === 'manual-token' && x.signal.type === 'answer'), 5000, 'the transport answers our offer')
      await ours.pc.setRemoteDescription({ type: 'answer', sdp: m.inbox.find((x) => x.token === 'manual-token' && x.signal.type === 'answer')!.signal.sdp! })
      await waitFor(() => wt.up.includes('aaa') && ours.dc.readyState === 'open', 5000, 'connected')
      expect(theirs).not.toBe('manual-token')
      expect(t.status().peers).toMatchObject([{ id: 'aaa', state: 'open', initiator: false }])
      t.send('aaa', new Uint8Array([5]))
      ours.dc.send(new Uint8Array([6]))
      await waitFor(() => ours.got.length === 1 && wt.frames.length === 1, 5000, 'frames both ways')
      await sleep(300)
      expect(wt.up).toEqual(['aaa'])
    })

    it('the smaller transport ignores the larger peer’s concurrent offer and keeps its own', async () => {
      const room = freshRoom()
      const t = transport()
      const wt = watch(t)
      await t.start({ room, peerId: 'aaa' })
      const m = await manualPeer(room, 'zzz')
      m.announce()
      await waitFor(() => m.inbox.some((x) => x.signal.type === 'offer'), 5000, 'the transport offers')
      const offer = m.inbox.find((x) => x.signal.type === 'offer')!
      const rival = await m.offer('aaa', 'rival-token') // glare: the transport must ignore this one
      const ans = await m.answer('aaa', offer.token, offer.signal.sdp!)
      await waitFor(() => wt.up.includes('zzz') && ans.dc.readyState === 'open', 5000, 'connected on the transport’s offer')
      await sleep(300)
      expect(m.inbox.some((x) => x.token === 'rival-token' && x.signal.type === 'answer')).toBe(false)
      expect(rival.pc.remoteDescription).toBeNull()
      expect(t.status().peers).toMatchObject([{ id: 'zzz', state: 'open', initiator: true }])
      expect(wt.up).toEqual(['zzz'])
    })
  })
})
