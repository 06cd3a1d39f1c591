/**
 * Latency of the libp2p transport on 127.0.0.1 (real nodes, TCP, noise, yamux), and why live changes ride direct
 * streams rather than gossipsub. Run: `npx tsx test/transports/libp2p-bench.ts [writes=1000]`.
 *
 * 1. replica write → visible on the remote replica (put() called → the remote's subscribe() fires), sequential writes;
 * 2. one transport frame, send() → remote 'frame' listener (the raw stream path under 1.);
 * 3. one gossipsub message between the same two nodes, publish() → remote 'message' (the alternative for live changes);
 * 4. a burst of writes: first write → last one visible.
 */
import { performance } from 'node:perf_hooks'
import { createReplica, type Replica } from '../../src/index.js'
import { type Libp2pTransport, libp2pTransport } from '../../transports/libp2p.js'

const N = Number(process.argv[2] ?? 1000)

function summary(name: string, samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b)
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!.toFixed(3)
  const mean = s.reduce((a, b) => a + b, 0) / s.length
  return `${name.padEnd(44)} n=${s.length}  p50 ${q(0.5)} ms  p90 ${q(0.9)} ms  p99 ${q(0.99)} ms  max ${s[s.length - 1]!.toFixed(3)} ms  mean ${mean.toFixed(3)} ms`
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 5))
  }
}

async function main(): Promise<void> {
  const tA = libp2pTransport({ listen: ['/ip4/127.0.0.1/tcp/0'] })
  const a = await createReplica({ peerId: 'bench-a', room: 'bench', transports: [tA], antiEntropyMs: 0 })
  const tB = libp2pTransport({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: tA.multiaddrs.filter((x) => !x.includes('/ws')) })
  const b = await createReplica({ peerId: 'bench-b', room: 'bench', transports: [tB], antiEntropyMs: 0 })
  await until(() => a.status().peers.length === 1 && b.status().peers.length === 1)
  const lines: string[] = []

  // 1. write → remote visible
  {
    const seen = new Map<string, () => void>()
    b.collection('items').subscribe((changes) => {
      for (const c of changes) seen.get(c.id)?.()
    })
    const ca = a.collection<{ id: string; n: number; text: string }>('items')
    const warm = 50
    const samples: number[] = []
    for (let i = 0; i < N + warm; i++) {
      const id = `w${i}`
      const visible = new Promise<void>((resolve) => seen.set(id, resolve))
      const t0 = performance.now()
      void ca.put({ id, n: i, text: 'hello world' })
      await visible
      seen.delete(id)
      if (i >= warm) samples.push(performance.now() - t0)
    }
    lines.push(summary('write → visible on remote replica (TCP)', samples))
  }

  // 2. raw frames over our stream (a separate room on fresh transports, to leave the replicas alone)
  const [f1, f2] = await pair()
  {
    let resolve: (() => void) | undefined
    f2.on('frame', () => resolve?.())
    const frame = new Uint8Array(64)
    const samples: number[] = []
    for (let i = 0; i < N + 50; i++) {
      const got = new Promise<void>((r) => (resolve = r))
      const t0 = performance.now()
      f1.send('f2', frame)
      await got
      if (i >= 50) samples.push(performance.now() - t0)
    }
    lines.push(summary('transport frame send → remote listener', samples))
  }

  // 3. gossipsub between the same two nodes
  {
    type PS = {
      subscribe(t: string): void
      publish(t: string, d: Uint8Array): Promise<unknown>
      getSubscribers(t: string): unknown[]
      addEventListener(e: string, fn: (e: CustomEvent<{ topic: string }>) => void): void
    }
    const p1 = (f1.node!.services as { pubsub: PS }).pubsub
    const p2 = (f2.node!.services as { pubsub: PS }).pubsub
    const topic = 'bench-live-changes'
    p1.subscribe(topic)
    p2.subscribe(topic)
    await until(() => p1.getSubscribers(topic).length === 1 && p2.getSubscribers(topic).length === 1)
    await new Promise((r) => setTimeout(r, 1500)) // let the mesh form (heartbeat)
    let resolve: (() => void) | undefined
    p2.addEventListener('message', (e) => {
      if (e.detail.topic === topic) resolve?.()
    })
    const samples: number[] = []
    for (let i = 0; i < N + 50; i++) {
      const data = new Uint8Array(64)
      new DataView(data.buffer).setUint32(0, i) // distinct payloads (gossipsub dedupes by message id)
      const got = new Promise<void>((r) => (resolve = r))
      const t0 = performance.now()
      await p1.publish(topic, data)
      await got
      if (i >= 50) samples.push(performance.now() - t0)
    }
    lines.push(summary('gossipsub publish → remote message', samples))
  }

  // 4. burst
  {
    const cb = b.collection('burst')
    const ca = a.collection<{ id: string; n: number }>('burst')
    const t0 = performance.now()
    await Promise.all(Array.from({ length: N }, (_, i) => ca.put({ id: `b${i}`, n: i })))
    await until(() => cb.all().length === N, 30_000)
    const ms = performance.now() - t0
    lines.push(`${`burst of ${N} writes → all visible on remote`.padEnd(44)} ${ms.toFixed(1)} ms (${((N / ms) * 1000).toFixed(0)} writes/s)`)
  }

  await Promise.all([a.close(), b.close(), f1.stop(), f2.stop()])
  console.log(`libp2p transport on 127.0.0.1 — Node ${process.version}, ${N} samples each\n${lines.join('\n')}`)
}

async function pair(): Promise<[Libp2pTransport, Libp2pTransport]> {
  const f1 = libp2pTransport({ listen: ['/ip4/127.0.0.1/tcp/0'] })
  await f1.start({ room: 'bench-frames', peerId: 'f1' })
  const f2 = libp2pTransport({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: f1.multiaddrs.filter((x) => !x.includes('/ws')) })
  let up = false
  f2.on('peer:up', () => (up = true))
  await f2.start({ room: 'bench-frames', peerId: 'f2' })
  await until(() => up)
  return [f1, f2]
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
