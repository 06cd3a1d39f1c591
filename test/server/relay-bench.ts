/**
 * Relay latency bench: N replicas (default 20) in one process, each with its own relay transport, against one
 * in-process server on 127.0.0.1. Measures, for W sequential writes (default 50, rotating the writer), the time from
 * `put()` until every other replica has emitted the change; then the time for a burst of one write per replica
 * to converge everywhere. Run: `npx tsx test/server/relay-bench.ts [replicas] [writes]`; `BASELINE=memory` runs the
 * same workload over the in-memory network instead, `RATE=<ops/s>` overrides the server's per-connection rate.
 */
import { createReplica, type Replica } from '../../src/index.js'
import { startServer } from '../../src/server/index.js'
import { MemoryNetwork } from '../../transports/memory.js'
import { relayTransport } from '../../transports/relay.js'

const N = Number(process.argv[2] ?? 20)
const W = Number(process.argv[3] ?? 50)

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

async function main(): Promise<void> {
  const server = await startServer({ port: 0, log: false, ...(process.env['RATE'] ? { ratePerSecond: Number(process.env['RATE']) } : {}) })
  const seen = new Map<string, number>() // record id → replicas that saw it (remote)
  const waiters = new Map<string, () => void>()
  const rs: Replica[] = []
  // BASELINE=memory runs the same workload over the in-memory network, to separate the relay's share of the latency.
  const memory = process.env['BASELINE'] === 'memory' ? new MemoryNetwork() : undefined
  const t0 = performance.now()
  for (let i = 0; i < N; i++) {
    const r = await createReplica({ peerId: `bench-${i}`, room: 'bench', transports: [memory ? memory.transport() : relayTransport({ url: server.url })] })
    r.on('change', (changes) => {
      for (const c of changes) {
        if (c.origin !== 'remote') continue
        const n = (seen.get(c.id) ?? 0) + 1
        seen.set(c.id, n)
        if (n === N - 1) waiters.get(c.id)?.()
      }
    })
    rs.push(r)
  }
  const everyone = (): boolean => rs.every((r) => r.status().peers.length === N - 1)
  while (!everyone()) await new Promise((r) => setTimeout(r, 5))
  const meshMs = performance.now() - t0

  const lat: number[] = []
  for (let w = 0; w < W; w++) {
    const id = `w${w}`
    const done = new Promise<void>((resolve) => waiters.set(id, resolve))
    const start = performance.now()
    void rs[w % N]!.collection('bench').put({ id, w, payload: 'x'.repeat(100) })
    await done
    lat.push(performance.now() - start)
  }
  lat.sort((a, b) => a - b)

  // A burst: every replica writes at once; time until all replicas hold all N records.
  const burstStart = performance.now()
  const burst = rs.map((r, i) => {
    const id = `burst-${i}`
    const p = new Promise<void>((resolve) => waiters.set(id, resolve))
    void r.collection('bench').put({ id, i })
    return p
  })
  await Promise.all(burst)
  const burstMs = performance.now() - burstStart
  const stats = server.stats()

  for (const r of rs) await r.close()
  await server.close()
  const f = (x: number): string => x.toFixed(1)
  console.log(`${memory ? 'in-memory baseline' : 'relay'} bench: ${N} replicas in one process${memory ? '' : ', one server on 127.0.0.1'} (Node ${process.versions.node})`)
  console.log(`  full mesh (every replica sees ${N - 1} peers): ${f(meshMs)} ms`)
  console.log(`  ${W} sequential writes, put() → all ${N - 1} others have it: p50 ${f(percentile(lat, 50))} ms, p90 ${f(percentile(lat, 90))} ms, p99 ${f(percentile(lat, 99))} ms, max ${f(lat[lat.length - 1]!)} ms`)
  console.log(`  burst of ${N} concurrent writes (one per replica) → every replica holds all: ${f(burstMs)} ms`)
  console.log(`  server: ${stats.forwarded} frames forwarded, ${stats.violations} violations, ${stats.droppedSlow} dropped`)
}

main().catch((e: unknown) => {
  console.error(e)
  process.exit(1)
})
