/**
 * A large room on the memory network (part of `npm run bench`): 100 replicas, each linked only to its bounded-overlay
 * neighbours (transports/overlay.ts, `maxPeers` 8: a ring lattice, so changes cross by forwarding). Every replica
 * makes 10 writes at once (1 000 concurrent writes); measured: the time from the last write's resolve until all
 * 100 replicas hold all 1 000 records with equal digests, and every byte the network carried meanwhile (sync
 * frames, forwards, ACKs), per write delivered to a replica (1 000 × 99 deliveries).
 *
 *   npx tsx bench/overlay.ts [--replicas 100] [--writes-each 10] [--max-peers 8]
 */
import { loadavg } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createReplica } from '../src/index.js'
import type { ReplicaImpl } from '../src/replica.js'
import { MemoryNetwork } from '../transports/memory.js'
import { overlayNeighbours } from '../transports/overlay.js'
import { arg, printAndSave, runBench } from './stats.js'
import { formatMs, markdownTable } from './table.js'

const RESULTS_FILE = path.join(fileURLToPath(new URL('..', import.meta.url)), '.bench-results', 'overlay.json')
const N = Number(arg('replicas', '100'))
const EACH = Number(arg('writes-each', '10'))
const MAX_PEERS = Number(arg('max-peers', '8'))

async function main(): Promise<void> {
  const loadBefore = loadavg()
  const net = new MemoryNetwork({ seed: 1 })
  const ids = Array.from({ length: N }, (_, i) => `p${String(i).padStart(3, '0')}`)
  const wanted = new Map(ids.map((id) => [id, overlayNeighbours(id, ids, MAX_PEERS)]))
  for (let i = 0; i < N; i++) {
    for (let j = i + 1; j < N; j++) if (!wanted.get(ids[i]!)!.has(ids[j]!)) net.link(ids[i]!, ids[j]!, false)
  }
  const replicas: ReplicaImpl[] = []
  for (const id of ids) replicas.push((await createReplica({ peerId: id, transports: [net.transport()], antiEntropyMs: 0 })) as ReplicaImpl)
  const until = async (done: () => boolean, what: string, ms = 120_000): Promise<void> => {
    const t0 = Date.now()
    while (!done()) {
      if (Date.now() - t0 > ms) throw new Error(`overlay bench: ${what} not reached in ${ms} ms`)
      await new Promise((r) => setTimeout(r, 5))
    }
  }
  await until(() => replicas.every((r) => r.status().peers.length === wanted.get(r.peerId)!.size), 'the overlay')
  const before = net.stats()
  const cpu0 = process.cpuUsage()
  await Promise.all(replicas.flatMap((r, i) => Array.from({ length: EACH }, (_, k) => r.collection('items').put({ id: `r${i}-${k}`, n: k, title: `record ${k} of ${r.peerId}` }))))
  const written = performance.now()
  const total = N * EACH
  await until(() => replicas.every((r) => r.store.count('items').visible === total), 'every record everywhere')
  const converged = performance.now()
  const cpu = process.cpuUsage(cpu0)
  const digests = new Set(replicas.map((r) => r.store.digest()))
  if (digests.size !== 1) throw new Error(`overlay bench: ${digests.size} different digests after convergence`)
  const after = net.stats()
  await new Promise((r) => setTimeout(r, 200)) // the last ACKs
  const settled = net.stats()
  for (const r of replicas) await r.close()
  const bytes = after.bytes - before.bytes
  const frames = after.sent - before.sent
  const deliveries = total * (N - 1)
  const rows = [
    [`time from the last of ${total} concurrent writes until all ${N} replicas hold them all`, `${formatMs(converged - written)} ms`],
    ['CPU time of the process from the first write until then (all replicas run in it)', `${formatMs((cpu.user + cpu.system) / 1000)} ms`],
    ['bytes on the network until then (sync frames, forwards, ACKs)', `${(bytes / 1e6).toFixed(2)} MB (${frames} frames)`],
    [`bytes per write delivered (${deliveries} deliveries)`, `${(bytes / deliveries).toFixed(1)} B`],
    ['bytes still sent in the 200 ms after (late ACKs)', `${((settled.bytes - after.bytes) / 1e3).toFixed(1)} kB`],
  ]
  printAndSave(
    `## ${N} replicas, bounded overlay maxPeers ${MAX_PEERS}, memory network (bench/overlay.ts), load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')}`,
    markdownTable(['measure', 'syncmesh'], rows),
    RESULTS_FILE,
    { started: new Date().toISOString(), replicas: N, writesEach: EACH, maxPeers: MAX_PEERS, convergeMs: converged - written, cpuMs: (cpu.user + cpu.system) / 1000, bytes, frames, deliveries },
  )
}

runBench(main)
