/**
 * libp2p benchmarks (the last part of `npm run bench`), real libp2p nodes on 127.0.0.1 (TCP, noise, yamux):
 *
 * 1. write → remote-visible latency: replica A `put()` → replica B's `subscribe()` fires, sequential writes after a
 *    warm-up; beside it, on the same two nodes in the same run: a raw libp2p stream round trip (an echo protocol,
 *    the floor: one way ≈ RTT / 2), our transport's frame send → remote listener, and a gossipsub publish → remote
 *    message (the alternative for live changes, see the transport's header comment);
 * 2. a 50-node room (5 child processes, test/transports/libp2p-room.ts; each node keeps 6 connections, a ring
 *    lattice, changes cross it by the sync protocol's forwarding): time until all 49 others see one write;
 * 3. bytes on the wire per field update: one replica updates one number field, one write at a time, through a
 *    counting TCP proxy (every byte of the libp2p connection both ways: noise, yamux, our framing, the sync
 *    message and its ACK), against the encoded field value.
 *
 *   npx tsx bench/libp2p.ts [--writes 1000] [--probes 100] [--updates 500] [--only latency,room50,bytes]
 *
 * Prints a markdown table (PASS / MISS per target) and writes `.bench-results/libp2p.json`. Exits 0 when targets
 * are missed; non-zero only when something fails to run.
 */
import { type Server, type Socket, createConnection, createServer } from 'node:net'
import { loadavg } from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import type { Libp2p, Stream } from '@libp2p/interface'
import { encodeValue } from '../crdt/value.js'
import { createReplica, type Replica } from '../src/index.js'
import { type Libp2pTransport, libp2pTransport } from '../transports/libp2p/index.js'
import { startRoom, until } from '../test/transports/libp2p-room.js'
import { mulberry32 } from '../test/prng.js'
import { type Latency, arg, printAndSave, runBench, summary } from './stats.js'
import { formatMs, markdownTable } from './table.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const RESULTS_FILE = path.join(ROOT, '.bench-results', 'libp2p.json')
const WRITES = Number(arg('writes', '1000'))
const PROBES = Number(arg('probes', '100'))
const UPDATES = Number(arg('updates', '500'))
const WARMUP = 50
const ONLY = new Set(arg('only', 'latency,room50,bytes').split(','))
const SEED = Number(process.env.SEED ?? 1)

const tcpOnly = (t: Libp2pTransport): string[] => t.multiaddrs.filter((a) => a.includes('/tcp/') && !a.includes('/ws'))

/** Two replicas over libp2p TCP, B bootstrapping to A; resolves once they see each other. */
async function pair(room: string): Promise<{ a: Replica; b: Replica; tA: Libp2pTransport; tB: Libp2pTransport }> {
  const common = { listen: ['/ip4/127.0.0.1/tcp/0'] }
  const tA = libp2pTransport(common)
  const a = await createReplica({ peerId: `${room}-a`, room, transports: [tA], antiEntropyMs: 0 })
  const tB = libp2pTransport({ ...common, bootstrap: tcpOnly(tA) })
  const b = await createReplica({ peerId: `${room}-b`, room, transports: [tB], antiEntropyMs: 0 })
  await until(() => a.status().peers.length === 1 && b.status().peers.length === 1, 20_000, 'the pair to connect')
  return { a, b, tA, tB }
}

// ---------------------------------------------------------------------------------------------------------------------
// 1. Latency: replica write → remote visible, with a raw stream floor, our frames and gossipsub, same nodes

interface LatencyResults {
  write: Latency
  rawRtt: Latency
  frame: Latency
  gossipsub: Latency
  burstWritesPerSec: number
}

async function latency(): Promise<LatencyResults> {
  const { a, b, tA, tB } = await pair('bench-lat')
  try {
    // Replica write → visible on the remote replica.
    const seen = new Map<string, () => void>()
    b.collection('items').subscribe((changes) => {
      for (const c of changes) seen.get(c.id)?.()
    })
    const ca = a.collection<{ id: string; n: number; text: string }>('items')
    const write: number[] = []
    for (let i = 0; i < WRITES + WARMUP; i++) {
      const id = `w${i}`
      const visible = new Promise<void>((resolve) => seen.set(id, resolve))
      const t0 = performance.now()
      void ca.put({ id, n: i, text: 'hello world' })
      await visible
      seen.delete(id)
      if (i >= WARMUP) write.push(performance.now() - t0)
    }

    // A raw libp2p stream between the same two nodes: 64-byte echo round trips (the floor).
    const nodeA = tA.node!
    const nodeB = tB.node!
    const ECHO = '/syncmesh-bench/echo/1.0.0'
    await nodeA.handle(ECHO, (stream: Stream) => {
      stream.addEventListener('message', (evt) => {
        const d = evt.data
        stream.send(d instanceof Uint8Array ? d : d.subarray())
      })
    })
    const echo = await (nodeB as Libp2p).dialProtocol(nodeA.peerId, ECHO)
    let back: (() => void) | undefined
    echo.addEventListener('message', () => back?.())
    const rawRtt: number[] = []
    const payload = new Uint8Array(64)
    for (let i = 0; i < WRITES + WARMUP; i++) {
      const got = new Promise<void>((r) => (back = r))
      const t0 = performance.now()
      echo.send(payload)
      await got
      if (i >= WARMUP) rawRtt.push(performance.now() - t0)
    }
    await echo.close().catch(() => undefined)

    // Our transport alone: one frame, send → remote 'frame' listener (a separate room on the same kind of nodes).
    const f1 = libp2pTransport({ listen: ['/ip4/127.0.0.1/tcp/0'], pubsub: false })
    await f1.start({ room: 'bench-frames', peerId: 'f1' })
    const f2 = libp2pTransport({ listen: ['/ip4/127.0.0.1/tcp/0'], pubsub: false, bootstrap: tcpOnly(f1) })
    let up = false
    f2.on('peer:up', () => (up = true))
    await f2.start({ room: 'bench-frames', peerId: 'f2' })
    await until(() => up, 10_000, 'frame pair')
    let arrived: (() => void) | undefined
    f2.on('frame', () => arrived?.())
    const frame: number[] = []
    for (let i = 0; i < WRITES + WARMUP; i++) {
      const got = new Promise<void>((r) => (arrived = r))
      const t0 = performance.now()
      f1.send('f2', payload)
      await got
      if (i >= WARMUP) frame.push(performance.now() - t0)
    }
    await Promise.all([f1.stop(), f2.stop()])

    // gossipsub between the replicas' nodes: publish → remote 'message'.
    type PS = {
      subscribe(t: string): void
      publish(t: string, d: Uint8Array): Promise<unknown>
      getMeshPeers(t: string): unknown[]
      addEventListener(e: string, fn: (e: CustomEvent<{ topic: string }>) => void): void
    }
    const p1 = (nodeA.services as { pubsub: PS }).pubsub
    const p2 = (nodeB.services as { pubsub: PS }).pubsub
    const topic = 'bench-live-changes'
    p1.subscribe(topic)
    p2.subscribe(topic)
    await until(() => p1.getMeshPeers(topic).length === 1 && p2.getMeshPeers(topic).length === 1, 20_000, 'a gossipsub mesh')
    let delivered: (() => void) | undefined
    p2.addEventListener('message', (e) => {
      if (e.detail.topic === topic) delivered?.()
    })
    const gossipsub: number[] = []
    for (let i = 0; i < WRITES + WARMUP; i++) {
      const data = new Uint8Array(64)
      new DataView(data.buffer).setUint32(0, i) // distinct payloads (gossipsub drops duplicates by message id)
      const got = new Promise<void>((r) => (delivered = r))
      const t0 = performance.now()
      await p1.publish(topic, data)
      await got
      if (i >= WARMUP) gossipsub.push(performance.now() - t0)
    }

    // A burst: WRITES writes at once → all visible on the remote.
    const cb = b.collection('burst')
    const cBurst = a.collection<{ id: string; n: number }>('burst')
    const t0 = performance.now()
    await Promise.all(Array.from({ length: WRITES }, (_, i) => cBurst.put({ id: `b${i}`, n: i })))
    await until(() => cb.all().length === WRITES, 60_000, 'the burst')
    const burstWritesPerSec = (WRITES / (performance.now() - t0)) * 1000
    return { write: summary(write), rawRtt: summary(rawRtt), frame: summary(frame), gossipsub: summary(gossipsub), burstWritesPerSec }
  } finally {
    await Promise.allSettled([a.close(), b.close()])
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// 2. A 50-node room: one write → all 49 others

interface RoomResults {
  nodes: number
  connectionsPerNode: number
  startMs: number
  reachAll: Latency
  reachEach: Latency
}

async function room50(): Promise<RoomResults> {
  const t0 = Date.now()
  const room = await startRoom({ nodes: 50, processes: 5, discovery: 'ring', ring: 3, antiEntropyMs: 5000, prefix: 'b' })
  try {
    await room.waitPeers(6, 60_000)
    const startMs = Date.now() - t0
    const conns = Math.max(...(await room.state()).map((s) => s.conns))
    const rand = mulberry32(SEED)
    const all: number[] = []
    const each: number[] = []
    for (let i = 0; i < 5; i++) await room.probe(room.ids[Math.floor(rand() * 50)]!, 20_000) // warm-up
    for (let i = 0; i < PROBES; i++) {
      const reach = await room.probe(room.ids[Math.floor(rand() * 50)]!, 20_000)
      all.push(reach[reach.length - 1]!)
      each.push(...reach)
    }
    return { nodes: 50, connectionsPerNode: conns, startMs, reachAll: summary(all), reachEach: summary(each) }
  } finally {
    await room.close()
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// 3. Bytes on the wire per field update

/** A TCP proxy on 127.0.0.1 that counts the bytes it forwards each way. */
async function countingProxy(targetPort: number): Promise<{ port: number; up: () => number; down: () => number; close: () => Promise<void> }> {
  let up = 0
  let down = 0
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    const target = createConnection({ host: '127.0.0.1', port: targetPort })
    for (const s of [client, target]) {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
      s.on('error', () => s.destroy())
    }
    client.on('data', (d: Buffer) => {
      up += d.length
      target.write(d)
    })
    target.on('data', (d: Buffer) => {
      down += d.length
      client.write(d)
    })
    client.on('close', () => target.destroy())
    target.on('close', () => client.destroy())
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  return {
    port: (server.address() as { port: number }).port,
    up: () => up,
    down: () => down,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  }
}

interface BytesResults {
  updates: number
  valueBytes: number
  wirePerUpdate: number
  wireWriterToReader: number
  wireReaderToWriter: number
  streamPerUpdate: number
}

async function bytes(): Promise<BytesResults> {
  // B (the writer) dials A through the proxy and can dial nothing else: every byte of their libp2p connection
  // crosses it. No gossipsub, no anti-entropy rounds: what flows is the updates, their ACKs and libp2p's own pings.
  const tA2 = libp2pTransport({ listen: ['/ip4/127.0.0.1/tcp/0'], pubsub: false })
  const ra = await createReplica({ peerId: 'bytes-a', room: 'bench-bytes', transports: [tA2], antiEntropyMs: 0 })
  const addr = tcpOnly(tA2)[0]!
  const port = Number(/\/tcp\/(\d+)/.exec(addr)![1])
  const proxy = await countingProxy(port)
  const tB2 = libp2pTransport({
    listen: ['/ip4/127.0.0.1/tcp/0'],
    pubsub: false,
    bootstrap: [addr.replace(`/tcp/${port}`, `/tcp/${proxy.port}`)],
    libp2p: { connectionGater: { denyDialMultiaddr: (ma) => !ma.toString().includes(`/tcp/${proxy.port}`) } },
  })
  const rb = await createReplica({ peerId: 'bytes-b', room: 'bench-bytes', transports: [tB2], antiEntropyMs: 0 })
  try {
    await until(() => ra.status().peers.length === 1 && rb.status().peers.length === 1, 20_000, 'the proxied pair')
    const seen = new Map<number, () => void>()
    ra.collection<{ id: string; n?: number }>('stats').subscribe(() => {
      const n = ra.collection<{ id: string; n?: number }>('stats').get('counter')?.n
      if (n !== undefined) seen.get(n)?.()
    })
    const cb = rb.collection<{ id: string; n?: number }>('stats')
    const step = async (i: number): Promise<void> => {
      const visible = new Promise<void>((r) => seen.set(i, r))
      await cb.update('counter', { n: i })
      await visible
      seen.delete(i)
    }
    for (let i = 0; i < 20; i++) await step(-1 - i) // warm-up (the record exists, the connection is quiet)
    await new Promise((r) => setTimeout(r, 300))
    const up0 = proxy.up()
    const down0 = proxy.down()
    const s0 = tB2.stats().bytesSent + tA2.stats().bytesSent
    let valueBytes = 0
    for (let i = 0; i < UPDATES; i++) {
      const v = 1_000_000 + i
      valueBytes += encodeValue(v).byteLength
      await step(v)
    }
    await new Promise((r) => setTimeout(r, 300)) // the last ACK
    const upB = proxy.up() - up0
    const downB = proxy.down() - down0
    const stream = tB2.stats().bytesSent + tA2.stats().bytesSent - s0
    return {
      updates: UPDATES,
      valueBytes: valueBytes / UPDATES,
      wirePerUpdate: (upB + downB) / UPDATES,
      wireWriterToReader: upB / UPDATES,
      wireReaderToWriter: downB / UPDATES,
      streamPerUpdate: stream / UPDATES,
    }
  } finally {
    await Promise.allSettled([ra.close(), rb.close()])
    await proxy.close()
  }
}

// ---------------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = new Date().toISOString()
  const loadBefore = loadavg()
  const results: { latency?: LatencyResults; room50?: RoomResults; bytes?: BytesResults } = {}
  if (ONLY.has('latency')) results.latency = await latency()
  if (ONLY.has('room50')) results.room50 = await room50()
  if (ONLY.has('bytes')) results.bytes = await bytes()
  const loadAfter = loadavg()

  const mark = (ok: boolean): string => (ok ? 'PASS' : '**MISS**')
  const lat = (l: Latency): string => `p50 ${formatMs(l.p50)} · p99 ${formatMs(l.p99)} ms`
  const rows: string[][] = []
  const L = results.latency
  if (L) {
    rows.push([`write → visible on the remote replica (TCP, ${L.write.n} writes)`, lat(L.write), 'p50 ≤ 5 ms', mark(L.write.p50 <= 5)])
    rows.push(['raw libp2p stream round trip, 64 B (floor; one way ≈ half)', lat(L.rawRtt), '', ''])
    rows.push(['our transport: one frame send → remote listener', lat(L.frame), '', ''])
    rows.push(['gossipsub publish → remote message, 64 B', lat(L.gossipsub), '', ''])
    rows.push([`burst of ${WRITES} writes → all visible`, `${Math.round(L.burstWritesPerSec)} writes/s`, '', ''])
  }
  const R = results.room50
  if (R) {
    rows.push([`50-node room (≤ ${R.connectionsPerNode} connections each): one write → all 49 others (${R.reachAll.n} writes)`, lat(R.reachAll), 'p99 ≤ 500 ms', mark(R.reachAll.p99 <= 500)])
    rows.push(['50-node room: one write → each other node', lat(R.reachEach), '', ''])
    rows.push(['50-node room: start until every node has its 6 peers', `${formatMs(R.startMs)} ms`, '', ''])
  }
  const B = results.bytes
  if (B) {
    rows.push([`bytes on the wire per field update (TCP both ways, ${B.updates} updates)`, `${B.wirePerUpdate.toFixed(0)} B (→ ${B.wireWriterToReader.toFixed(0)}, ← ${B.wireReaderToWriter.toFixed(0)})`, '', ''])
    rows.push(['… of which our stream bytes (sync message + ACK, length prefixes)', `${B.streamPerUpdate.toFixed(0)} B`, '', ''])
    rows.push(['… the encoded field value itself', `${B.valueBytes.toFixed(0)} B (${(B.wirePerUpdate / B.valueBytes).toFixed(0)}× on the wire)`, '', ''])
  }
  printAndSave(`### libp2p (Node ${process.versions.node}, 127.0.0.1, load ${loadBefore.map((x) => x.toFixed(1)).join(' ')} → ${loadAfter.map((x) => x.toFixed(1)).join(' ')})`, markdownTable(['measure', 'syncmesh', 'target', ''], rows), RESULTS_FILE, { started, node: process.versions.node, loadBefore, loadAfter, writes: WRITES, probes: PROBES, seed: SEED, results })
}

runBench(main)
