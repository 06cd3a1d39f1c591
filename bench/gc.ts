/**
 * Tombstone collection (part of `npm run bench`): a delete-heavy workload — 100 000 records × 5 fields created, then
 * every one deleted — on one replica (in-memory storage, so stored bytes are exact), before and after collection:
 * the encoded state, what storage holds once compacted, and the heap of the store. Also the time one collection
 * round takes.
 *
 *   npx tsx bench/gc.ts [--records 100000]
 */
import { loadavg } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createReplica, MemoryStorage } from '../src/index.js'
import type { ReplicaImpl } from '../src/replica.js'
import { arg, printAndSave, runBench } from './stats.js'
import { formatMs, markdownTable } from './table.js'

const RESULTS_FILE = path.join(fileURLToPath(new URL('..', import.meta.url)), '.bench-results', 'gc.json')
const RECORDS = Number(arg('records', '100000'))

const heapMB = (): number => {
  ;(globalThis as { gc?: () => void }).gc?.()
  return process.memoryUsage().heapUsed / 1e6
}

async function main(): Promise<void> {
  const loadBefore = loadavg()
  const storage = new MemoryStorage()
  const replica = (await createReplica({ peerId: 'bench', storage, antiEntropyMs: 0 })) as ReplicaImpl
  const items = replica.collection('items')
  const writes: Promise<void>[] = []
  for (let i = 0; i < RECORDS; i++) writes.push(items.put({ id: `r${i}`, title: `title ${i}`, n: i, price: i / 100, done: i % 2 === 0, tag: 'x' }))
  await Promise.all(writes)
  const deletes: Promise<void>[] = []
  for (let i = 0; i < RECORDS; i++) deletes.push(items.delete(`r${i}`))
  await Promise.all(deletes)
  await replica.close() // compacts: storage holds one snapshot
  const reopened = (await createReplica({ peerId: 'bench', storage: Object.assign(storage, { closed: false }), antiEntropyMs: 0 })) as ReplicaImpl
  const before = { state: reopened.store.encodeState().byteLength, stored: storage.byteSize, heap: heapMB(), kept: reopened.store.count('items').deleted }
  const t0 = performance.now()
  const dropped = reopened.engine.collect()
  const collectMs = performance.now() - t0
  await reopened.close()
  const after = { state: reopened.store.encodeState().byteLength, stored: storage.byteSize, heap: heapMB(), kept: reopened.store.count('items').deleted }
  const kB = (n: number): string => `${(n / 1000).toFixed(1)} kB`
  const rows = [
    [`deleted records kept (of ${RECORDS} created and deleted)`, String(before.kept), String(after.kept)],
    ['encoded state', kB(before.state), kB(after.state)],
    ['stored bytes (compacted)', kB(before.stored), kB(after.stored)],
    ['heap of the process after GC', `${before.heap.toFixed(1)} MB`, `${after.heap.toFixed(1)} MB`],
    [`one collection round (dropped ${dropped} tombstones)`, '—', `${formatMs(collectMs)} ms`],
  ]
  printAndSave(
    `## Tombstone collection (bench/gc.ts), load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')}`,
    markdownTable(['delete-heavy workload', 'before collection', 'after'], rows),
    RESULTS_FILE,
    { started: new Date().toISOString(), records: RECORDS, before, after, dropped, collectMs },
  )
}

runBench(main)
