/**
 * Load and abuse test of `syncmesh serve` (issue 11, item 4). The server runs in a child process (its memory is its
 * own); this process opens hundreds of WebSocket clients on 127.0.0.1 and, while a pair of well-behaved signaling
 * clients and a pair of relay clients measure their round-trip time in a room under attack, throws at it: a publish
 * flood at the rate limit and floods above it, slow readers that never read, malformed and oversized messages of both
 * protocols (signaling JSON and relay binary), and many topics from one client. It checks that the server stays up,
 * answers /health, keeps the well-behaved clients talking, cuts off exactly the abusers, and keeps its memory bounded;
 * and prints the figures (README, "Deploying the server", quotes one run).
 *
 * Seeded: LOAD_SEED=<n> replays a run's choices (the printed seed). Bounded: about 15 s of wall time.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import net from 'node:net'
import { availableParallelism, loadavg } from 'node:os'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { afterAll, expect, it } from 'vitest'
import WebSocket from 'ws'
import type { ServerInit, ServerStats } from '../../src/server/index.js'
import {
  RELAY_PROTOCOL_VERSION,
  RelayOp,
  type RelayClientOp,
  decodeServerMessage,
  encodeClientOp,
  encodeRelayMessage,
} from '../../transports/relay/index.js'
import { mulberry32 } from '../prng.js'
import { killChildren, sleep, track, until } from './helpers.js'

const MB = 1024 * 1024
const REPO = fileURLToPath(new URL('../..', import.meta.url))
const SEED = Number(process.env['LOAD_SEED'] ?? 20261211)
const CROWD = 400
const ABUSE_MS = 10_000

/**
 * The limits under test: the defaults, except that a slow consumer is cut after 2 s over a 4 MiB buffer (defaults
 * 10 s and 8 MiB), so that the slow readers are cut off well within the abuse phase.
 */
const INIT: ServerInit = { slowConsumerMs: 2000, maxBufferedBytes: 4 * MB }
const MAX_MESSAGE = 128 * 1024

afterAll(killChildren)

// ---------------------------------------------------------------------------------------------------------------------
// The server process

interface MemoryProbe {
  rss: number
  heapUsed: number
  external: number
  arrayBuffers: number
  /** Longest event-loop delay of the server since the previous probe. */
  lagMaxMs: number
  /** CPU time (user + system) the server process used so far. */
  cpuMs: number
  stats: ServerStats
}

/** `syncmesh serve` in a child process (test/server/serve-child.ts), probed for memory and stats over IPC. */
class ServerProcess {
  private queue: Promise<unknown> = Promise.resolve()
  private constructor(
    readonly child: ChildProcess,
    readonly url: string,
  ) {}

  static async start(init: ServerInit): Promise<ServerProcess> {
    const child = track(
      spawn(process.execPath, [...(process.env['LOAD_NODE_ARGS']?.split(' ') ?? []), '--expose-gc', '--import', 'tsx', 'test/server/serve-child.ts', JSON.stringify(init)], {
        cwd: REPO,
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      }),
    )
    const url = await new Promise<string>((resolve, reject) => {
      child.once('message', (m) => resolve((m as { url: string }).url))
      child.once('exit', (code) => reject(new Error(`server process exited with ${code} before listening`)))
    })
    expect(url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/)
    return new ServerProcess(child, url)
  }

  /** Memory and stats of the server process; after a full GC when `gc`. Probes are answered in order. */
  probe(gc = false): Promise<MemoryProbe> {
    const next = this.queue.then(
      () =>
        new Promise<MemoryProbe>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('the server process did not answer a probe in 5 s')), 5000)
          this.child.once('message', (m) => {
            clearTimeout(timer)
            resolve((m as { probe: MemoryProbe }).probe)
          })
          this.child.send(gc ? 'probe-gc' : 'probe')
        }),
    )
    this.queue = next.catch(() => {})
    return next
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  async stop(): Promise<void> {
    if (!this.alive) return
    const exited = new Promise((r) => this.child.once('exit', r))
    this.child.disconnect()
    await exited
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// A lean client: hundreds of these must cost this process little, so it records counts, not messages.

class Peer {
  closed: { code: number; at: number } | undefined
  received = 0
  receivedBytes = 0
  onData: ((data: Buffer, isBinary: boolean) => void) | undefined

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      const buf = data as Buffer
      this.received++
      this.receivedBytes += buf.byteLength
      this.onData?.(buf, isBinary)
    })
    ws.on('close', (code) => (this.closed = { code, at: Date.now() }))
    ws.on('error', () => {})
  }

  static open(url: string): Promise<Peer> {
    const ws = new WebSocket(url, { perMessageDeflate: false })
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new Peer(ws)))
      ws.once('error', reject)
    })
  }

  json(value: unknown): void {
    this.raw(JSON.stringify(value))
  }

  ops(...ops: RelayClientOp[]): void {
    this.raw(encodeRelayMessage(ops.map(encodeClientOp)))
  }

  raw(data: string | Uint8Array): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(data)
  }

  /** Stops reading: the socket is paused, so the kernel buffers fill and then the server's send buffer grows. */
  stopReading(): void {
    ;(this.ws as unknown as { _socket: net.Socket })._socket.pause()
  }

  /** The close code, or -1 when the connection is still open after `ms`. */
  async closedWithin(ms: number): Promise<number> {
    const end = Date.now() + ms
    while (this.closed === undefined && Date.now() < end) await sleep(5)
    return this.closed?.code ?? -1
  }

  end(): void {
    if (this.ws.readyState <= WebSocket.OPEN) this.ws.terminate()
  }
}

async function openMany(url: string, n: number, batch = 50): Promise<Peer[]> {
  const out: Peer[] = []
  for (let i = 0; i < n; i += batch) out.push(...(await Promise.all(Array.from({ length: Math.min(batch, n - i) }, () => Peer.open(url)))))
  return out
}

async function health(url: string): Promise<{ status: number; ms: number }> {
  const t0 = performance.now()
  const res = await fetch(`${url.replace(/^ws/, 'http')}/health`, { signal: AbortSignal.timeout(5000) })
  await res.text()
  return { status: res.status, ms: performance.now() - t0 }
}

// ---------------------------------------------------------------------------------------------------------------------
// Round trips between two well-behaved clients

/** Sends probe n from one side and resolves when the other side's answer comes back. */
interface Pair {
  readonly name: string
  roundTrip(n: number): Promise<void>
}

/** A pair whose round trip n starts with `ping(n)` and ends when `answered(n)` is called. */
function pairOf(name: string, peers: Peer[], ping: (n: number) => void): Pair & { peers: Peer[]; answered(n: number): void } {
  const waiting = new Map<number, () => void>()
  return {
    name,
    peers,
    answered: (n) => waiting.get(n)?.(),
    roundTrip: (n) =>
      new Promise((resolve) => {
        waiting.set(n, () => {
          waiting.delete(n)
          resolve()
        })
        ping(n)
      }),
  }
}

/** Two signaling clients in topic `topic`: a publishes ping n, b answers with a publish of pong n. */
async function signalingPair(url: string, topic: string): Promise<Pair & { peers: Peer[] }> {
  const [a, b] = (await openMany(url, 2)) as [Peer, Peer]
  const pair = pairOf('signaling', [a, b], (n) => a.json({ type: 'publish', topic, probe: 'ping-probe', n }))
  b.onData = (data) => {
    if (data.includes('"ping-probe"')) b.json({ type: 'publish', topic, probe: 'pong-probe', n: (JSON.parse(data.toString('utf8')) as { n: number }).n })
  }
  a.onData = (data) => {
    if (data.includes('"pong-probe"')) pair.answered((JSON.parse(data.toString('utf8')) as { n: number }).n)
  }
  a.json({ type: 'subscribe', topics: [topic] })
  b.json({ type: 'subscribe', topics: [topic] })
  return pair
}

const PING_MARK = 0xaa
const PONG_MARK = 0xbb

function probePayload(mark: number, n: number): Uint8Array {
  const p = new Uint8Array(5)
  p[0] = mark
  new DataView(p.buffer).setUint32(1, n)
  return p
}

/** Two relay clients in room `room`: a SENDs ping n to b, b SENDs pong n back. */
async function relayPair(url: string, room: string): Promise<Pair & { peers: Peer[] }> {
  const [a, b] = (await openMany(url, 2)) as [Peer, Peer]
  const pair = pairOf('relay', [a, b], (n) => a.ops({ op: 'send', to: 'b', payload: probePayload(PING_MARK, n) }))
  const onFrom = (peer: Peer, mark: number, act: (n: number) => void): void => {
    peer.onData = (data, isBinary) => {
      if (!isBinary) return
      for (const op of decodeServerMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))) {
        if (op.op === 'from' && op.payload.byteLength === 5 && op.payload[0] === mark) act(new DataView(op.payload.buffer, op.payload.byteOffset).getUint32(1))
      }
    }
  }
  onFrom(b, PING_MARK, (n) => b.ops({ op: 'send', to: 'a', payload: probePayload(PONG_MARK, n) }))
  onFrom(a, PONG_MARK, (n) => pair.answered(n))
  a.ops({ op: 'join', topic: room, peer: 'a' })
  b.ops({ op: 'join', topic: room, peer: 'b' })
  await sleep(50)
  return pair
}

interface Latency {
  samples: number[]
  lost: number
}

/** Sequential round trips until `stop()` is true or `count` were made; one lost when no answer within 5 s. */
async function measure(pair: Pair, opts: { count?: number; stop?: () => boolean; gapMs?: number }, from = 0): Promise<Latency> {
  const out: Latency = { samples: [], lost: 0 }
  for (let n = from; (opts.count === undefined || n - from < opts.count) && !(opts.stop?.() ?? false); n++) {
    const t0 = performance.now()
    const answered = await Promise.race([pair.roundTrip(n).then(() => true), sleep(5000).then(() => false)])
    if (answered) out.samples.push(performance.now() - t0)
    else out.lost++
    if (opts.gapMs) await sleep(opts.gapMs)
  }
  return out
}

function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!
}

const fmt = (l: Latency): string =>
  `p50 ${quantile(l.samples, 0.5).toFixed(2)} ms, p99 ${quantile(l.samples, 0.99).toFixed(2)} ms, max ${quantile(l.samples, 1).toFixed(1)} ms (${l.samples.length} round trips, ${l.lost} lost)`

// ---------------------------------------------------------------------------------------------------------------------
// Malformed and oversized input: each case on a fresh connection, with the close code the server must answer.

interface BadCase {
  readonly name: string
  /** Close codes accepted (the server's typed answer for this input). */
  readonly codes: readonly number[]
  send(c: Peer, rnd: () => number): void
}

const V = RELAY_PROTOCOL_VERSION
const bytes = (rnd: () => number, n: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(rnd() * 256))

const BAD: readonly BadCase[] = [
  { name: 'signaling: not JSON', codes: [1008], send: (c, r) => c.raw(`{"type":"publish","topic":"victim",${'x'.repeat(1 + Math.floor(r() * 50))}`) },
  { name: 'signaling: topics not an array', codes: [1008], send: (c) => c.raw('{"type":"subscribe","topics":{"a":1}}') },
  { name: 'signaling: topic too long', codes: [1008], send: (c) => c.json({ type: 'subscribe', topics: ['t'.repeat(1025)] }) },
  { name: 'signaling: oversized text', codes: [1009], send: (c) => c.json({ type: 'publish', topic: 'victim', data: 'x'.repeat(MAX_MESSAGE) }) },
  {
    name: 'signaling: oversized text in 2 KiB fragments',
    codes: [1009],
    send: (c) => {
      for (let i = 0; i < 70; i++) c.ws.send('x'.repeat(2048), { fin: false })
      c.ws.send('x', { fin: true })
    },
  },
  {
    // Valid JSON, forwarded as received (the server never re-serialises it); the client then leaves by itself.
    name: 'signaling: publish nested 40 000 deep',
    codes: [1000],
    send: (c) => {
      c.raw(`{"type":"publish","topic":"nowhere","data":${'['.repeat(40_000)}${']'.repeat(40_000)}}`)
      setTimeout(() => c.ws.close(1000), 300)
    },
  },
  { name: 'signaling: invalid UTF-8', codes: [1007], send: (c) => c.ws.send(Buffer.from([0x7b, 0xc3, 0x28, 0x7d]), { binary: false }) },
  { name: 'relay: random bytes', codes: [1008], send: (c, r) => c.raw(Uint8Array.of(0x7e, ...bytes(r, 1 + Math.floor(r() * 200)))) },
  { name: 'relay: right version, garbage ops', codes: [1008], send: (c, r) => c.raw(Uint8Array.of(V, 0x40 + Math.floor(r() * 0x40), ...bytes(r, Math.floor(r() * 100)))) },
  { name: 'relay: SEND length past the end', codes: [1008], send: (c) => c.raw(Uint8Array.of(V, RelayOp.SEND, 1, 65, 0xff, 0xff, 0xff, 0xf0, 1, 2)) },
  { name: 'relay: BROADCAST outside a room', codes: [1008], send: (c) => c.ops({ op: 'broadcast', payload: Uint8Array.of(1) }) },
  { name: 'relay: oversized binary', codes: [1009], send: (c) => c.raw(new Uint8Array(MAX_MESSAGE + 1)) },
  {
    name: 'relay: flipped byte in a JOIN + BROADCAST',
    codes: [1000, 1008],
    send: (c, r) => {
      const good = encodeRelayMessage([encodeClientOp({ op: 'join', topic: 'fuzz', peer: `f${Math.floor(r() * 1e9)}` }), encodeClientOp({ op: 'broadcast', payload: bytes(r, 16) })])
      good[1 + Math.floor(r() * (good.length - 1))]! ^= 1 + Math.floor(r() * 255)
      c.raw(good)
      // When the flip left it valid (a changed id or payload byte), the client leaves by itself.
      setTimeout(() => c.ws.close(1000), 300)
    },
  },
  { name: 'relay: more than 1024 ops', codes: [1008], send: (c) => c.raw(encodeRelayMessage(Array.from({ length: 1100 }, () => Uint8Array.of(RelayOp.LEAVE)))) },
]

/** A raw TCP client that upgrades, then announces a 1 TiB binary frame: the server must refuse it from the header. */
async function hugeFrameHeader(url: string): Promise<number> {
  const { port } = new URL(url.replace(/^ws/, 'http'))
  const socket = net.connect(Number(port), '127.0.0.1')
  const key = createHash('sha1').update(String(SEED)).digest('base64').slice(0, 22) + '=='
  socket.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
  let buf = Buffer.alloc(0)
  let upgraded = false
  return new Promise((resolve, reject) => {
    socket.on('error', reject)
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        upgraded = true
        buf = buf.subarray(end + 4)
        const header = Buffer.alloc(14)
        header[0] = 0x82
        header[1] = 0x80 | 127
        header.writeBigUInt64BE(2n ** 40n, 2)
        socket.write(header)
      }
      // The server's close frame: 0x88, length, then the code.
      if (buf.length >= 4 && buf[0] === 0x88) {
        resolve(buf.readUInt16BE(2))
        socket.destroy()
      }
    })
  })
}

// ---------------------------------------------------------------------------------------------------------------------

it(`${CROWD} clients, floods, slow readers, bad input: the server stays up, well-behaved clients keep talking, memory stays bounded (seed ${SEED})`, async () => {
  const rnd = mulberry32(SEED)
  const server = await ServerProcess.start(INIT)
  const url = server.url
  const mem0 = await server.probe(true)

  // -- hundreds of ordinary clients: signaling topics in groups of 10, half also in relay rooms of 5 ---------------
  const t0 = performance.now()
  const crowd = await openMany(url, CROWD)
  crowd.forEach((c, i) => {
    c.json({ type: 'subscribe', topics: [i < 2 ? 'victim' : `crowd-${i % 40}`, `solo-${i}`] })
    if (i % 2 === 0) c.ops({ op: 'join', topic: `crowd-r${i % 40}`, peer: `c${i}` })
  })
  const connectMs = performance.now() - t0
  const sig = await signalingPair(url, 'victim')
  const rel = await relayPair(url, 'victim-relay')
  const wellBehaved = [...crowd, ...sig.peers, ...rel.peers]
  await until(() => crowd.every((c, i) => i % 2 === 1 || c.received >= 1), 10_000, 'every relay client in the crowd to be welcomed')
  const mem1 = await server.probe(true)
  expect(mem1.stats.clients).toBe(CROWD + 4)

  // -- before: round trips with the crowd connected and idle -------------------------------------------------------
  const [sigBefore, relBefore] = await Promise.all([measure(sig, { count: 200 }), measure(rel, { count: 200 })])

  // -- abuse ------------------------------------------------------------------------------------------------------
  let abusing = true
  const stopAt = Date.now() + ABUSE_MS
  const running = (): boolean => abusing && Date.now() < stopAt
  const abusers: Peer[] = []
  const abuser = <P extends Peer>(p: P): P => {
    abusers.push(p)
    return p
  }
  const tasks: Promise<unknown>[] = []
  const memSamples: MemoryProbe[] = []
  const healthSamples: { status: number; ms: number }[] = []
  const outcomes: { name: string; code: number; ok: boolean }[] = []

  // memory and /health, sampled throughout
  const testLag = monitorEventLoopDelay({ resolution: 10 })
  testLag.enable()
  tasks.push(
    (async () => {
      while (running()) {
        memSamples.push(await server.probe())
        await sleep(200)
      }
    })(),
    (async () => {
      while (running()) {
        healthSamples.push(await health(url))
        await sleep(200)
      }
    })(),
  )

  // chatter in the crowd: small publishes and broadcasts from random clients
  tasks.push(
    (async () => {
      while (running()) {
        for (let k = 0; k < 20; k++) {
          const i = Math.floor(rnd() * CROWD)
          crowd[i]!.json({ type: 'publish', topic: `crowd-${i % 40}`, data: { from: i, k } })
          if (i % 2 === 0) crowd[i]!.ops({ op: 'broadcast', payload: bytes(rnd, 64) })
        }
        await sleep(100)
      }
    })(),
  )

  // slow readers: a signaling subscriber and a relay peer, in the victims' room and in a sink of their own that is
  // flooded with bytes; they never read again
  const slowSig = abuser(await Peer.open(url))
  slowSig.json({ type: 'subscribe', topics: ['victim', 'sink'] })
  const slowRel = abuser(await Peer.open(url))
  slowRel.ops({ op: 'join', topic: 'sink-relay', peer: 'slow' })
  await sleep(50)
  slowSig.stopReading()
  slowRel.stopReading()
  const slowFrom = Date.now()
  // They keep writing (pings), so only the slow-consumer rule can cut them off, not the silence timeout.
  tasks.push(
    (async () => {
      for (let n = 0; running() && (slowSig.closed === undefined || slowRel.closed === undefined); n++) {
        slowSig.json({ type: 'ping' })
        slowRel.ops({ op: 'ping', nonce: n })
        await sleep(250)
      }
    })(),
  )

  // floods within the limits: into the victims' topic and room, many small messages (300 publishes and 300
  // broadcasts a second: fan-out costs the server most per byte); into the sinks, bytes (400 × 8 KiB and
  // 100 × 32 KiB a second, just under the 4 MiB/s byte limit)
  const flooders = await openMany(url, 4)
  flooders.forEach(abuser)
  const [victimFlood, sinkFlood, victimRelayFlood, sinkRelayFlood] = flooders as [Peer, Peer, Peer, Peer]
  victimRelayFlood.ops({ op: 'join', topic: 'victim-relay', peer: 'flood' })
  sinkRelayFlood.ops({ op: 'join', topic: 'sink-relay', peer: 'flood' })
  const smallText = JSON.stringify({ type: 'publish', topic: 'victim', data: Buffer.from(bytes(rnd, 100)).toString('base64') })
  const bigText = JSON.stringify({ type: 'publish', topic: 'sink', data: Buffer.from(bytes(rnd, 6000)).toString('base64') })
  const smallPayload = Uint8Array.of(0, ...bytes(rnd, 99))
  const bigPayload = Uint8Array.of(0, ...bytes(rnd, 32 * 1024 - 1))
  tasks.push(paced(300, running, () => victimFlood.raw(smallText)))
  tasks.push(paced(400, running, () => sinkFlood.raw(bigText)))
  tasks.push(paced(300, running, () => victimRelayFlood.ops({ op: 'broadcast', payload: smallPayload })))
  tasks.push(paced(100, running, () => sinkRelayFlood.ops({ op: 'broadcast', payload: bigPayload })))

  // floods above the limits, every second a fresh offender: 6000 publishes / 5000 relay ops as fast as possible
  tasks.push(
    (async () => {
      for (let round = 0; running(); round++) {
        const over = abuser(await Peer.open(url))
        if (round % 2 === 0) for (let k = 0; k < 6000; k++) over.json({ type: 'publish', topic: 'victim', data: k })
        else {
          over.ops({ op: 'join', topic: 'victim-relay', peer: `over${round}` })
          for (let k = 0; k < 5; k++) over.ops(...Array.from({ length: 1000 }, () => ({ op: 'broadcast' as const, payload: Uint8Array.of(0, k) })))
        }
        const code = await over.closedWithin(5000)
        outcomes.push({ name: `flood above the limit (${round % 2 === 0 ? 'signaling' : 'relay'})`, code, ok: code === 1008 })
        await sleep(1000)
      }
    })(),
  )

  // many topics from one client: 256 long topics is the limit, the 257th closes the connection
  tasks.push(
    (async () => {
      const hoarders = await openMany(url, 20)
      hoarders.forEach(abuser)
      hoarders.forEach((h, i) => {
        for (let k = 0; k < 256; k += 64) h.json({ type: 'subscribe', topics: Array.from({ length: 64 }, (_, j) => `${i}/${k + j}/${'t'.repeat(1000)}`) })
      })
      await sleep(500)
      expect(hoarders.every((h) => h.closed === undefined)).toBe(true)
      const greedy = hoarders[0]!
      greedy.json({ type: 'subscribe', topics: ['one-more'] })
      const code = await greedy.closedWithin(3000)
      outcomes.push({ name: 'topic 257 from one client', code, ok: code === 1008 })
    })(),
  )

  // malformed and oversized input, each on a fresh connection: every case once in a seeded order, then again
  const order = BAD.map((b) => ({ b, key: rnd() })).sort((x, y) => x.key - y.key).map((x) => x.b)
  tasks.push(
    (async () => {
      for (let round = 0; running(); round++) {
        const bad = order[round % order.length]!
        const c = abuser(await Peer.open(url))
        bad.send(c, rnd)
        const code = await c.closedWithin(5000)
        outcomes.push({ name: bad.name, code, ok: bad.codes.includes(code) })
        if (round % 5 === 0) {
          const huge = await hugeFrameHeader(url)
          outcomes.push({ name: 'a frame header announcing 1 TiB', code: huge, ok: huge === 1009 })
        }
        await sleep(20)
      }
    })(),
  )

  // -- during: the well-behaved pairs keep measuring --------------------------------------------------------------
  const [sigDuring, relDuring] = await Promise.all([measure(sig, { stop: () => !running(), gapMs: 5 }, 1000), measure(rel, { stop: () => !running(), gapMs: 5 }, 1000)])
  abusing = false
  await Promise.all(tasks)
  testLag.disable()

  const slowClosedAfter = [slowSig, slowRel].map((p) => (p.closed ? p.closed.at - slowFrom : Number.POSITIVE_INFINITY))
  for (const a of abusers) a.end()
  await until(() => abusers.every((a) => a.closed !== undefined), 5000, 'the abusers to be gone')
  await sleep(500)

  // -- after: the same round trips, and memory after a full GC ---------------------------------------------------------
  const [sigAfter, relAfter] = await Promise.all([measure(sig, { count: 100 }, 100_000), measure(rel, { count: 100 }, 100_000)])
  const memAfter = await server.probe(true)
  const peakRss = Math.max(...memSamples.map((m) => m.rss))
  const peakHeap = Math.max(...memSamples.map((m) => m.heapUsed))
  const peakExternal = Math.max(...memSamples.map((m) => m.external))
  const healthMax = Math.max(...healthSamples.map((h) => h.ms))
  const lagMax = Math.max(...memSamples.map((m) => m.lagMaxMs))
  const abuseCpuMs = memSamples.at(-1)!.cpuMs - memSamples[0]!.cpuMs
  const mb = (n: number): string => `${(n / MB).toFixed(1)} MB`

  console.log(
    [
      `syncmesh serve under load and abuse (seed ${SEED}; limits: the defaults but ${JSON.stringify(INIT)}; load average ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} cores)`,
      `  ${CROWD} + 4 well-behaved connections opened in ${connectMs.toFixed(0)} ms; ${memAfter.stats.connections} connections over the run`,
      `  signaling round trip  before: ${fmt(sigBefore)}`,
      `                        during: ${fmt(sigDuring)}`,
      `                         after: ${fmt(sigAfter)}`,
      `  relay round trip      before: ${fmt(relBefore)}`,
      `                        during: ${fmt(relDuring)}`,
      `                         after: ${fmt(relAfter)}`,
      `  server RSS: start ${mb(mem0.rss)}, with the crowd ${mb(mem1.rss)}, peak ${mb(peakRss)}, after (GC) ${mb(memAfter.rss)}`,
      `  server heap used: start ${mb(mem0.heapUsed)}, with the crowd ${mb(mem1.heapUsed)}, peak ${mb(peakHeap)}, after (GC) ${mb(memAfter.heapUsed)}; external peak ${mb(peakExternal)}`,
      `  /health: ${healthSamples.length} checks, all ${[...new Set(healthSamples.map((h) => h.status))].join('/')}, slowest ${healthMax.toFixed(1)} ms; event-loop delay max: server ${lagMax.toFixed(0)} ms, this test process ${(testLag.max / 1e6).toFixed(0)} ms`,
      `  server CPU during the abuse: ${(abuseCpuMs / 1000).toFixed(2)} s (${memAfter.stats.forwarded} relay frames forwarded in all)`,
      `  slow readers cut off after ${slowClosedAfter.map((ms) => `${ms} ms`).join(' and ')}; counters ${JSON.stringify(memAfter.stats)}`,
      `  abusers: ${outcomes.length} cut off — ${summarize(outcomes)}`,
    ].join('\n'),
  )

  // The server stayed up and answered.
  expect(server.alive).toBe(true)
  expect(healthSamples.length).toBeGreaterThan(3)
  expect(healthSamples.every((h) => h.status === 200)).toBe(true)
  // Every abuser got the typed answer for what it did.
  expect(outcomes.filter((o) => !o.ok)).toEqual([])
  expect(BAD.filter((b) => !outcomes.some((o) => o.name === b.name)).map((b) => b.name)).toEqual([])
  // The slow readers were cut off (within the grace period plus the time to fill kernel buffers and the server's).
  expect(slowClosedAfter.every((ms) => ms < ABUSE_MS)).toBe(true)
  expect(memAfter.stats.slowConsumers).toBe(2)
  // The well-behaved stayed connected and kept talking, at every stage.
  expect(wellBehaved.filter((p) => p.closed !== undefined)).toEqual([])
  for (const l of [sigBefore, relBefore, sigAfter, relAfter]) expect(l.lost).toBe(0)
  for (const l of [sigDuring, relDuring]) {
    // Loose on purpose: on a 2-core CI machine running other test files at once, both processes lose the CPU for
    // hundreds of ms; the printed figures are the measurement, these bounds only catch a server that stops serving.
    expect(l.samples.length).toBeGreaterThanOrEqual(5)
    expect(l.lost).toBe(0)
    expect(quantile(l.samples, 0.5)).toBeLessThan(1000)
  }
  expect(memAfter.stats.clients).toBe(CROWD + 4)
  // Memory stayed bounded and came back: the peak is the crowd plus a few buffers of maxBufferedBytes.
  expect(peakRss - mem1.rss).toBeLessThan(200 * MB)
  expect(memAfter.heapUsed - mem1.heapUsed).toBeLessThan(16 * MB)

  for (const p of wellBehaved) p.end()
  await server.stop()
}, 60_000)

/** Calls `send` `perSecond` times a second by the clock (a starved timer catches up, by a quarter second at most). */
async function paced(perSecond: number, go: () => boolean, send: () => void): Promise<void> {
  const start = performance.now()
  for (let sent = 0; go(); await sleep(10)) {
    const due = Math.min(Math.floor(((performance.now() - start) * perSecond) / 1000), sent + perSecond / 4)
    for (; sent < due; sent++) send()
  }
}

function summarize(outcomes: readonly { name: string; code: number }[]): string {
  const by = new Map<string, number>()
  for (const o of outcomes) by.set(`${o.name} → ${o.code}`, (by.get(`${o.name} → ${o.code}`) ?? 0) + 1)
  return [...by].map(([k, n]) => `${k} ×${n}`).join('; ')
}
