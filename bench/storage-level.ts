/**
 * LevelDB storage benchmark (standalone; not part of the test run):
 *
 *   node --expose-gc --import tsx bench/storage-level.ts (also the last part of `npm run bench`)
 *
 * Prints
 *  1. durable write throughput through `collection.update` on LevelDB: awaited one at a time, and pipelined in groups
 *     of 1 000 (every resolved write is fsync'd);
 *  2. cold start: a fresh process reopens a store holding 10 000 records × 5 fields after 100 000 overwrites (default
 *     compaction policy) → ms until the replica is readable, and the heap after GC (target ≤ 150 ms);
 *  3. storage size after the overwrites vs inserts-only: stored value bytes, and bytes on disk before / after LevelDB's
 *     compactRange.
 * BENCH_QUICK=1 shrinks the workloads (a smoke run).
 */
import { spawnSync } from 'node:child_process'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createReplica } from '../src/replica.js'
import { LevelStorage, levelStorage } from '../src/storage/level.js'
import { mulberry32 } from '../test/prng.js'

const QUICK = process.env.BENCH_QUICK === '1'
const RECORDS = QUICK ? 1_000 : 10_000
const OVERWRITES = QUICK ? 10_000 : 100_000
const FIELDS = ['a', 'b', 'c', 'd', 'e'] as const
const MiB = 1024 * 1024
const fmt = (n: number): string => (n >= MiB ? `${(n / MiB).toFixed(2)} MiB` : `${(n / 1024).toFixed(1)} KiB`)


async function dirBytes(dir: string): Promise<number> {
  let n = 0
  for (const name of await readdir(dir)) n += (await stat(join(dir, name))).size
  return n
}

async function storedValueBytes(dir: string): Promise<{ bytes: number; entries: number }> {
  const s = await LevelStorage.open(dir)
  try {
    const all = await s.loadRange([])
    return { bytes: all.reduce((n, e) => n + e.data.length, 0), entries: all.length }
  } finally {
    await s.close()
  }
}

async function compactedDiskBytes(dir: string): Promise<number> {
  const s = await LevelStorage.open(dir)
  await s.compact()
  await s.close()
  return dirBytes(dir)
}

function gcHeap(): number {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) throw new Error('run with node --expose-gc')
  for (let i = 0; i < 3; i++) gc()
  return process.memoryUsage().heapUsed
}

/** Child mode: only the storage part of a cold start (LevelDB open, checks, reading snapshot and log). */
async function coldStorage(dir: string): Promise<void> {
  const t0 = performance.now()
  const s = await LevelStorage.open(dir)
  await s.load(['meta', 'peer'])
  await s.loadRange(['snapshot'])
  await s.loadRange(['log'])
  const ms = performance.now() - t0
  await s.close()
  process.stdout.write(`${JSON.stringify({ ms })}\n`)
}

/** Child mode: open the store, report ms until readable and the heap after GC (as one JSON line). */
async function coldStart(dir: string): Promise<void> {
  const heapBefore = gcHeap()
  const t0 = performance.now()
  const replica = await createReplica({ storage: levelStorage(dir) })
  const readyMs = performance.now() - t0
  const records = replica.collection('c').all().length
  const heapAfter = gcHeap()
  await replica.close()
  process.stdout.write(`${JSON.stringify({ readyMs, heapBefore, heapAfter, records })}\n`)
}

async function throughput(root: string): Promise<void> {
  const dir = join(root, 'throughput')
  const r = await createReplica({ storage: levelStorage(dir) })
  const c = r.collection('c')
  const one = QUICK ? 300 : 2_000
  for (let i = 0; i < 50; i++) await c.update(`w${i}`, { v: i }) // warm-up
  let t0 = performance.now()
  for (let i = 0; i < one; i++) await c.update(`r${i % 1000}`, { v: i })
  const oneMs = performance.now() - t0
  const groups = QUICK ? 10 : 100
  t0 = performance.now()
  for (let g = 0; g < groups; g++) {
    const batch: Promise<void>[] = []
    for (let i = 0; i < 1000; i++) batch.push(c.update(`r${(g * 1000 + i) % 10_000}`, { v: g * 1000 + i }))
    await Promise.all(batch)
  }
  const pipeMs = performance.now() - t0
  await r.close()
  console.log('1. durable write throughput, collection.update on LevelDB (sync writes)')
  console.log(`   awaited one at a time:       ${Math.round(one / (oneMs / 1000)).toLocaleString('en')} writes/s  (${one} writes, ${(oneMs / one).toFixed(2)} ms each)`)
  console.log(`   pipelined, groups of 1 000:  ${Math.round((groups * 1000) / (pipeMs / 1000)).toLocaleString('en')} writes/s  (${groups * 1000} writes, ${(pipeMs / groups).toFixed(1)} ms per group)`)
}

async function buildStore(dir: string, rand: () => number): Promise<{ insertsStored: number; insertsDisk: number; insertsEntries: number; buildMs: number }> {
  const value = (f: (typeof FIELDS)[number]): number | string | boolean =>
    f === 'a' || f === 'd' ? Math.floor(rand() * 1e6) : f === 'c' ? rand() < 0.5 : `v${Math.floor(rand() * 1e9).toString(36)}`
  const t0 = performance.now()
  let r = await createReplica({ storage: levelStorage(dir) })
  let c = r.collection('c')
  for (let g = 0; g < RECORDS; g += 1000) {
    const batch: Promise<void>[] = []
    for (let i = g; i < g + 1000; i++) {
      const rec: Record<string, number | string | boolean> = {}
      for (const f of FIELDS) rec[f] = value(f)
      batch.push(c.put({ id: `r${i}`, ...rec }))
    }
    await Promise.all(batch)
  }
  await r.close()
  const inserts = await storedValueBytes(dir)
  const insertsDisk = await compactedDiskBytes(dir)
  r = await createReplica({ storage: levelStorage(dir) })
  c = r.collection('c')
  // Overwrites in groups of 100 (1 000 log entries), default compaction policy.
  for (let g = 0; g < OVERWRITES; g += 100) {
    const batch: Promise<void>[] = []
    for (let i = 0; i < 100; i++) {
      const f = FIELDS[Math.floor(rand() * FIELDS.length)]!
      batch.push(c.update(`r${Math.floor(rand() * RECORDS)}`, { [f]: value(f) }))
    }
    await Promise.all(batch)
  }
  await r.close()
  return { insertsStored: inserts.bytes, insertsDisk, insertsEntries: inserts.entries, buildMs: performance.now() - t0 }
}

async function main(): Promise<void> {
  if (process.argv[2] === '--cold') return coldStart(process.argv[3]!)
  if (process.argv[2] === '--cold-storage') return coldStorage(process.argv[3]!)
  gcHeap() // fail early without --expose-gc
  const root = await mkdtemp(join(tmpdir(), 'syncmesh-level-bench-'))
  try {
    console.log(`syncmesh LevelDB storage benchmark — node ${process.version}, ${QUICK ? 'QUICK' : 'full'} run, data in ${root}\n`)
    await throughput(root)

    const dir = join(root, 'cold')
    const built = await buildStore(dir, mulberry32(42))
    const stored = await storedValueBytes(dir)
    const diskAsLeft = await dirBytes(dir)

    const child = <T>(mode: string): T => {
      const run = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), mode, dir], { encoding: 'utf8' })
      if (run.status !== 0) throw new Error(`cold-start child failed: ${run.stderr}`)
      return JSON.parse(run.stdout.trim().split('\n').at(-1)!) as T
    }
    const runs: { readyMs: number; heapBefore: number; heapAfter: number; records: number }[] = []
    const storageRuns: number[] = []
    for (let i = 0; i < 5; i++) {
      runs.push(child('--cold'))
      storageRuns.push(child<{ ms: number }>('--cold-storage').ms)
    }
    storageRuns.sort((a, b) => a - b)
    const ms = runs.map((r) => r.readyMs).sort((a, b) => a - b)
    const median = runs.slice().sort((a, b) => a.readyMs - b.readyMs)[2]!
    console.log(`\n2. cold start: ${RECORDS.toLocaleString('en')} records × 5 fields after ${OVERWRITES.toLocaleString('en')} overwrites (default compaction; store built in ${(built.buildMs / 1000).toFixed(1)} s)`)
    console.log(`   store as left: ${stored.entries} entries, ${fmt(stored.bytes)} of values, ${fmt(diskAsLeft)} on disk`)
    console.log(`   ms until readable (fresh process, 5 runs): median ${median.readyMs.toFixed(1)} ms, min ${ms[0]!.toFixed(1)}, max ${ms.at(-1)!.toFixed(1)}  (target ≤ 150 ms)`)
    console.log(`   of which storage (LevelDB open + log check + reading snapshot and log): median ${storageRuns[2]!.toFixed(1)} ms; the rest is decoding the snapshot and replaying the log`)
    console.log(`   heap after GC: ${fmt(median.heapAfter)} with the replica open (${fmt(median.heapBefore)} before opening; ${median.records} records readable)`)

    // One more write with compactAfterEntries: 1 forces a snapshot: the size "once compacted".
    const r = await createReplica({ storage: levelStorage(dir), compactAfterEntries: 1 })
    await r.collection('c').update('r0', { a: 0 })
    await r.close()
    const forced = await storedValueBytes(dir)
    const compactedDisk = await compactedDiskBytes(dir)
    console.log(`\n3. storage size, ${OVERWRITES.toLocaleString('en')} overwrites vs inserts-only`)
    console.log(`   stored value bytes: inserts-only ${fmt(built.insertsStored)} (${built.insertsEntries} entries, right after a compaction); after overwrites ${fmt(stored.bytes)} as left by the default policy = ${(stored.bytes / built.insertsStored).toFixed(2)}×; once compacted ${fmt(forced.bytes)} (${forced.entries} entries) = ${(forced.bytes / built.insertsStored).toFixed(3)}×`)
    console.log(`   on disk after LevelDB compactRange: inserts-only ${fmt(built.insertsDisk)}, after overwrites ${fmt(compactedDisk)} = ${(compactedDisk / built.insertsDisk).toFixed(2)}× (before compactRange: ${fmt(diskAsLeft)})`)
  } finally {
    await rm(root, { recursive: true, force: true })
  }
}

await main()
