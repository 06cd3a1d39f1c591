/**
 * Write-to-remote-visible latency over WebRTC on loopback: two replicas connected through y-webrtc's signaling server
 * (child process on 127.0.0.1), 1 000 sequential writes on one, each timed until the other's change event reports it.
 *
 *   npx tsx test/transports/webrtc-bench.ts [writes=1000]
 *
 * Targets: p50 ≤ 5 ms, p99 ≤ 25 ms. Exit code 1 when a target is missed.
 */
import { createReplica } from '../../src/index.js'
import { webrtcTransport } from '../../transports/webrtc.js'
import { startYWebrtcServer, waitFor } from './webrtc-helpers.js'

const WRITES = Number(process.argv[2] ?? 1000)
const WARMUP = 50

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!

async function main(): Promise<void> {
  const server = await startYWebrtcServer()
  const app = `bench-${process.pid}`
  const a = await createReplica({ peerId: 'bench-a', app, transports: [webrtcTransport({ signaling: [server.url] })], antiEntropyMs: 0 })
  const b = await createReplica({ peerId: 'bench-b', app, transports: [webrtcTransport({ signaling: [server.url] })], antiEntropyMs: 0 })
  try {
    const t0 = performance.now()
    await waitFor(() => a.status().peers.some((p) => p.connected) && b.status().peers.some((p) => p.connected), 10_000, 'connection')
    await a.sync({ timeoutMs: 5000 })
    const connectMs = performance.now() - t0

    const items = a.collection<{ id: string; n: number; text: string }>('items')
    let waiting: { id: string; resolve: () => void } | undefined
    b.collection('items').subscribe((changes) => {
      if (waiting && changes.some((c) => c.id === waiting!.id)) waiting.resolve()
    })
    const one = async (i: number): Promise<number> => {
      const id = `w${i}`
      const seen = new Promise<void>((resolve) => (waiting = { id, resolve }))
      const start = performance.now()
      void items.put({ id, n: i, text: `write number ${i}` })
      await seen
      return performance.now() - start
    }
    for (let i = 0; i < WARMUP; i++) await one(-1 - i)
    const lat: number[] = []
    for (let i = 0; i < WRITES; i++) lat.push(await one(i))
    lat.sort((x, y) => x - y)
    const p50 = quantile(lat, 0.5)
    const p99 = quantile(lat, 0.99)
    const mean = lat.reduce((s, x) => s + x, 0) / lat.length
    const f = (x: number): string => `${x.toFixed(2)} ms`
    console.log(`WebRTC write→remote-visible latency, 2 replicas on loopback (y-webrtc signaling), ${WRITES} sequential writes after ${WARMUP} warm-up`)
    console.log(`  connect + first sync: ${f(connectMs)}`)
    console.log(`  p50 ${f(p50)}  p90 ${f(quantile(lat, 0.9))}  p99 ${f(p99)}  max ${f(lat[lat.length - 1]!)}  mean ${f(mean)}  min ${f(lat[0]!)}`)
    const ok = p50 <= 5 && p99 <= 25
    console.log(`  targets p50 ≤ 5 ms, p99 ≤ 25 ms: ${ok ? 'met' : 'MISSED'}`)
    process.exitCode = ok ? 0 : 1
  } finally {
    await Promise.allSettled([a.close(), b.close()])
    await server.kill()
  }
}

await main()
