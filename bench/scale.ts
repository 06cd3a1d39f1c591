/**
 * Scale benchmark (part of `npm run bench`): one replica's state at 10 000, 100 000 and 1 000 000 records × 5
 * fields, syncmesh beside Yjs (one Y.Map of nested Y.Maps, as in bench/systems/yjs.ts) in the same run. Every
 * (system, size) runs in a fresh `node --expose-gc` process, so heap figures are that state's alone (JS heap used plus
 * array buffers after GC with the state loaded, minus before):
 *
 * - encode the full state (syncmesh `RecordStore.encodeState`, Yjs `encodeStateAsUpdate`): ms and bytes;
 * - cold load of that encoding into a new store / doc: ms and heap;
 * - the delta for 100 fields changed by another writer, given the vector before them (`changesSince` /
 *   `encodeStateAsUpdate(doc, stateVector)`): median ms of 5, after a first request (syncmesh builds its index by
 *   origin and timestamp on the first incremental request after a load: that request's ms, and the heap with the
 *   index, are reported apart);
 * - syncmesh only: a new replica's full sync of the state over the memory network (start → its vector covers the
 *   source's), and cold start of a replica stored on LevelDB until readable.
 *
 *   npx tsx bench/scale.ts [--sizes 10000,100000,1000000] [--systems syncmesh,yjs] [--parts core]
 *
 * `--parts core` measures the state alone (no full sync, no LevelDB start: those take minutes at 1 M on a busy
 * machine, and each child has 15 minutes).
 *
 * Prints a markdown table (with the growth 10 k → 100 k → 1 M) and writes `.bench-results/scale.json`.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { FIELDS, type Rand, type Rec, rng } from './data.js'
import { arg, printAndSave, runBench } from './stats.js'
import { formatMs, markdownTable } from './table.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const RESULTS_FILE = path.join(ROOT, '.bench-results', 'scale.json')
const SEED = 1
const CHANGED_FIELDS = 100

/** What one child measures for one (system, size). */
interface ScaleResult {
  system: string
  records: number
  buildMs: number
  encodeMs: number
  encodedBytes: number
  loadMs: number
  heapMB: number
  deltaMs: number
  deltaBytes: number
  firstDeltaMs?: number
  heapIndexedMB?: number
  /** A tombstone collection with nothing to drop (the sync engine runs one after every anti-entropy round). */
  collectMs?: number
  /** The same delta request right after that collection. */
  deltaAfterCollectMs?: number
  syncMs?: number
  /** Event-loop delay (p99, max) of two live replicas holding the state, see {@link liveDelay}. */
  liveP99Ms?: number
  liveMaxMs?: number
  levelStartMs?: number
  /** The snapshot's bytes as stored on LevelDB (in the store's memory layout from 65 536 records, else a delta). */
  levelSnapshotBytes?: number
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789'
const str = (rand: Rand, min: number, max: number): string => {
  let s = ''
  for (let i = min + Math.floor(rand() * (max - min + 1)); i > 0; i--) s += ALPHABET[Math.floor(rand() * ALPHABET.length)]
  return s
}
/** Record `i` (ids `r0000000`…), the same in every system for a seed. */
function* records(count: number): Generator<[string, Rec]> {
  const rand = rng(SEED, 0)
  for (let i = 0; i < count; i++) {
    yield [`r${String(i).padStart(7, '0')}`, { title: str(rand, 6, 12), n: Math.floor(rand() * 1_000_001), price: Math.round(rand() * 1e6) / 100, done: rand() < 0.5, tag: str(rand, 3, 8) }]
  }
}
/** The 100 field changes: (record index, field, value). */
function changes(count: number): [number, (typeof FIELDS)[number], number][] {
  const rand = rng(SEED, 1)
  return Array.from({ length: CHANGED_FIELDS }, () => [Math.floor(rand() * count), FIELDS[Math.floor(rand() * FIELDS.length)]!, Math.floor(rand() * 1e6)])
}

/**
 * JS heap used plus array buffers (the store keeps its records in typed arrays, outside `heapUsed`), after two full
 * GCs with a turn of the event loop between them: array buffers are freed after the GC that finds them dead, so one
 * GC can still count a buffer just dropped (a load's arena before it was trimmed).
 */
const gcHeap = async (): Promise<number> => {
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  await new Promise((resolve) => setTimeout(resolve, 10))
  gc?.()
  const { heapUsed, arrayBuffers } = process.memoryUsage()
  return heapUsed + arrayBuffers
}
const time = <T>(fn: () => T): [T, number] => {
  const t0 = performance.now()
  const out = fn()
  return [out, performance.now() - t0]
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!

async function childSyncmesh(count: number): Promise<ScaleResult> {
  const { RecordStore, HLC, encodeDelta } = await import('../crdt/index.js')
  let wall = 1_700_000_000_000
  const clock = { now: () => wall }
  const a = new HLC('writer-a', clock)
  const store = new RecordStore()
  const [, buildMs] = time(() => {
    for (const [id, rec] of records(count)) store.put('records', id, rec, a.now())
  })
  const [bytes, encodeMs] = time(() => store.encodeState())
  // Cold load, with nothing else of the state alive.
  const before = await gcHeap()
  const [loaded, loadMs] = time(() => RecordStore.decodeState(bytes))
  const heapMB = ((await gcHeap()) - before) / 1e6
  const vv = loaded.versionVector()
  const b = new HLC('writer-b', clock)
  wall += 1000
  for (const [i, field, value] of changes(count)) loaded.update('records', `r${String(i).padStart(7, '0')}`, { [field]: value }, b.now())
  const [, firstDeltaMs] = time(() => loaded.changesSince(vv))
  const heapIndexedMB = ((await gcHeap()) - before) / 1e6
  const runs: number[] = []
  let deltaBytes = 0
  for (let r = 0; r < 5; r++) {
    const [delta, ms] = time(() => loaded.changesSince(vv))
    runs.push(ms)
    deltaBytes = encodeDelta(delta).byteLength
  }
  const [, collectMs] = time(() => loaded.collect(loaded.versionVector()))
  const [, deltaAfterCollectMs] = time(() => loaded.changesSince(vv))
  const coreOnly = arg('parts', 'all') === 'core'
  const syncMs = coreOnly ? undefined : await fullSync(loaded)
  const live = coreOnly ? undefined : await liveDelay(loaded)
  const level = coreOnly ? undefined : await levelStart(loaded)
  return { system: 'syncmesh', records: count, buildMs, encodeMs, encodedBytes: bytes.byteLength, loadMs, heapMB, deltaMs: median(runs), deltaBytes, firstDeltaMs, heapIndexedMB, collectMs, deltaAfterCollectMs, syncMs, liveP99Ms: live?.p99, liveMaxMs: live?.max, levelStartMs: level?.ms, levelSnapshotBytes: level?.snapshotBytes }
}

/** How long {@link liveDelay} watches, and how often each replica writes meanwhile. */
const LIVE_MS = 10_000
const LIVE_WRITE_MS = 50

/**
 * Two replicas holding `store` on the memory network, in sync, anti-entropy (and so tombstone collection) every
 * second; each updates a record every {@link LIVE_WRITE_MS} ms for {@link LIVE_MS} ms. Returns the event-loop delay
 * meanwhile (p99 and max, ms; sampled every 5 ms): the stalls an app of that size sees while it runs.
 */
async function liveDelay(store: import('../crdt/index.js').RecordStore): Promise<{ p99: number; max: number }> {
  const { monitorEventLoopDelay } = await import('node:perf_hooks')
  const { createReplica, storage, net } = await holding(store)
  const a = await createReplica({ peerId: 'live-a', storage, transports: [net.transport()], antiEntropyMs: 1000 })
  const b = await createReplica({ peerId: 'live-b', transports: [net.transport()], antiEntropyMs: 1000 })
  await b.sync({ timeoutMs: 600_000 })
  const ids = store.ids('records')
  const delay = monitorEventLoopDelay({ resolution: 5 })
  delay.enable()
  let k = 0
  const writes = setInterval(() => {
    k++
    void a.collection('records').update(ids[(k * 7919) % ids.length]!, { n: -k })
    void b.collection('records').update(ids[(k * 104_729) % ids.length]!, { title: `live ${k}` })
  }, LIVE_WRITE_MS)
  await new Promise((resolve) => setTimeout(resolve, LIVE_MS))
  clearInterval(writes)
  delay.disable()
  await Promise.all([a.close(), b.close()])
  return { p99: delay.percentile(99) / 1e6, max: delay.max / 1e6 }
}

/** `createReplica`, a memory storage holding `store` as one snapshot, and a memory network, for the replica parts. */
async function holding(store: import('../crdt/index.js').RecordStore) {
  const { createReplica, MemoryStorage } = await import('../src/index.js')
  const { MemoryNetwork } = await import('../transports/memory.js')
  const { Persistence } = await import('../src/persistence.js')
  const storage = new MemoryStorage()
  await (await Persistence.open(storage)).persistence.compact(store)
  return { createReplica, storage, net: new MemoryNetwork({ seed: SEED }) }
}

/** A replica holding `store` (stored as one snapshot) and a new one on the memory network: ms until it holds it all. */
async function fullSync(store: import('../crdt/index.js').RecordStore): Promise<number> {
  const { createReplica, storage, net } = await holding(store)
  const source = await createReplica({ peerId: 'source', storage, transports: [net.transport()], antiEntropyMs: 0 })
  const t0 = performance.now()
  const fresh = await createReplica({ peerId: 'fresh', transports: [net.transport()], antiEntropyMs: 0 })
  await fresh.sync({ timeoutMs: 600_000 })
  const ms = performance.now() - t0
  if (fresh.collection('records').all().length !== store.ids('records').length) throw new Error('full sync: the new replica is missing records')
  await Promise.all([source.close(), fresh.close()])
  return ms
}

/** A LevelDB store holding `store`: ms from createReplica until it returns (readable), and the snapshot's bytes. */
async function levelStart(store: import('../crdt/index.js').RecordStore): Promise<{ ms: number; snapshotBytes: number }> {
  const { createReplica } = await import('../src/index.js')
  const { levelStorage } = await import('../src/storage/level.js')
  const { Persistence } = await import('../src/persistence.js')
  const dir = mkdtempSync(path.join(tmpdir(), 'syncmesh-scale-'))
  try {
    const storage = levelStorage(dir)
    await (await Persistence.open(storage)).persistence.compact(store)
    await storage.close()
    const t0 = performance.now()
    const replica = await createReplica({ storage: levelStorage(dir) })
    const ms = performance.now() - t0
    if (replica.collection('records').get('r0000000') === undefined) throw new Error('LevelDB start: not readable')
    await replica.close()
    const after = levelStorage(dir)
    const snapshotBytes = (await after.loadRange(['snapshot'])).reduce((n, e) => n + e.data.byteLength, 0)
    await after.close()
    return { ms, snapshotBytes }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

async function childYjs(count: number): Promise<ScaleResult> {
  const Y = await import('yjs')
  const doc = new Y.Doc()
  doc.clientID = 1
  const map = doc.getMap<import('yjs').Map<unknown>>('records')
  const [, buildMs] = time(() => {
    let batch: [string, Rec][] = []
    const flush = (): void => {
      doc.transact(() => {
        for (const [id, rec] of batch) {
          const m = new Y.Map<unknown>()
          map.set(id, m)
          for (const f of FIELDS) m.set(f, rec[f])
        }
      })
      batch = []
    }
    for (const entry of records(count)) if (batch.push(entry) === 1000) flush()
    flush()
  })
  const [bytes, encodeMs] = time(() => Y.encodeStateAsUpdate(doc))
  doc.destroy()
  const before = await gcHeap()
  const [loaded, loadMs] = time(() => {
    const d = new Y.Doc()
    Y.applyUpdate(d, bytes)
    return d
  })
  const heapMB = ((await gcHeap()) - before) / 1e6
  const sv = Y.encodeStateVector(loaded)
  const other = new Y.Doc()
  other.clientID = 2
  Y.applyUpdate(other, Y.encodeStateAsUpdate(loaded))
  const records2 = other.getMap<import('yjs').Map<unknown>>('records')
  other.transact(() => {
    for (const [i, field, value] of changes(count)) records2.get(`r${String(i).padStart(7, '0')}`)!.set(field, value)
  })
  Y.applyUpdate(loaded, Y.encodeStateAsUpdate(other, Y.encodeStateVector(loaded)))
  other.destroy()
  const runs: number[] = []
  let deltaBytes = 0
  for (let r = 0; r < 5; r++) {
    const [delta, ms] = time(() => Y.encodeStateAsUpdate(loaded, sv))
    runs.push(ms)
    deltaBytes = delta.byteLength
  }
  return { system: 'yjs', records: count, buildMs, encodeMs, encodedBytes: bytes.byteLength, loadMs, heapMB, deltaMs: median(runs), deltaBytes }
}

// ---------------------------------------------------------------------------------------------------------------------

function runChild(system: string, size: number): ScaleResult | { system: string; records: number; error: string } {
  const out = spawnSync(process.execPath, ['--expose-gc', '--max-old-space-size=12000', '--import', 'tsx', fileURLToPath(import.meta.url), '--child', system, '--size', String(size), '--parts', arg('parts', 'all')], {
    cwd: ROOT,
    encoding: 'utf8',
    maxBuffer: 16 * 1024 * 1024,
    timeout: 15 * 60_000,
  })
  const line = out.stdout.trim().split('\n').at(-1) ?? ''
  try {
    return JSON.parse(line) as ScaleResult
  } catch {
    return { system, records: size, error: (out.stderr || out.error?.message || `exit ${out.status}`).trim().split('\n').slice(-3).join(' ') }
  }
}

async function main(): Promise<void> {
  const child = arg('child', '')
  if (child) {
    const size = Number(arg('size', '10000'))
    const result = child === 'yjs' ? await childYjs(size) : await childSyncmesh(size)
    process.stdout.write(JSON.stringify(result) + '\n')
    return
  }
  const sizes = arg('sizes', '10000,100000,1000000').split(',').map(Number)
  const systems = arg('systems', 'syncmesh,yjs').split(',')
  const loadBefore = loadavg()
  const results: (ScaleResult | { system: string; records: number; error: string })[] = []
  for (const size of sizes) {
    for (const system of systems) {
      const r = runChild(system, size)
      console.error(`[scale] ${system} ${size}: ${JSON.stringify(r)}`)
      results.push(r)
    }
  }
  const ok = results.filter((r): r is ScaleResult => !('error' in r))
  const get = (system: string, size: number): ScaleResult | undefined => ok.find((r) => r.system === system && r.records === size)
  const ms = (x: number | undefined): string => (x === undefined ? '—' : `${formatMs(x)} ms`)
  const mb = (x: number | undefined): string => (x === undefined ? '—' : `${x.toFixed(1)} MB`)
  const top = Math.max(...sizes)
  const cells = (pick: (r: ScaleResult) => number | undefined, fmt: (x: number | undefined) => string): string[] => [
    ...sizes.map((n) => fmt(get('syncmesh', n) && pick(get('syncmesh', n)!))),
    fmt(get('yjs', top) && pick(get('yjs', top)!)),
  ]
  const growth = (pick: (r: ScaleResult) => number | undefined): string => {
    const xs = sizes.map((n) => get('syncmesh', n) && pick(get('syncmesh', n)!))
    return xs.slice(1).map((x, i) => (x !== undefined && xs[i] ? `${(x / xs[i]!).toFixed(1)}×` : '—')).join(' → ')
  }
  const target = (pick: (r: ScaleResult) => number | undefined, limit: number, unit: string): string => {
    const x = get('syncmesh', 1_000_000) && pick(get('syncmesh', 1_000_000)!)
    return x === undefined ? `≤ ${limit} ${unit}` : `≤ ${limit} ${unit}: ${x <= limit ? 'PASS' : '**MISS**'}`
  }
  const rows: string[][] = [
    ['cold load of the full state', ...cells((r) => r.loadMs, ms), growth((r) => r.loadMs), target((r) => r.loadMs, 1500, 'ms')],
    ['heap of the loaded state', ...cells((r) => r.heapMB, mb), growth((r) => r.heapMB), target((r) => r.heapMB, 250, 'MB')],
    ['encode the full state', ...cells((r) => r.encodeMs, ms), growth((r) => r.encodeMs), target((r) => r.encodeMs, 1000, 'ms')],
    ['encoded state size', ...cells((r) => r.encodedBytes / 1e6, mb), growth((r) => r.encodedBytes), '—'],
    [`delta for ${CHANGED_FIELDS} changed fields`, ...cells((r) => r.deltaMs, ms), growth((r) => r.deltaMs), target((r) => r.deltaMs, 2, 'ms')],
    ['… its size', ...cells((r) => r.deltaBytes, (x) => (x === undefined ? '—' : `${x} B`)), '—', '—'],
    ['… the first request after the load (builds the index)', ...cells((r) => r.firstDeltaMs, ms), growth((r) => r.firstDeltaMs), '—'],
    ['heap of the loaded state with that index', ...cells((r) => r.heapIndexedMB, mb), growth((r) => r.heapIndexedMB), target((r) => r.heapIndexedMB, 250, 'MB')],
    ['tombstone collection with none to drop (after every anti-entropy round)', ...cells((r) => r.collectMs, ms), growth((r) => r.collectMs), '—'],
    ['… the same delta request right after it', ...cells((r) => r.deltaAfterCollectMs, ms), growth((r) => r.deltaAfterCollectMs), '—'],
    ['new replica, full sync over the memory network', ...cells((r) => r.syncMs, ms), growth((r) => r.syncMs), target((r) => r.syncMs, 5000, 'ms')],
    [
      `two live replicas, an update each every ${LIVE_WRITE_MS} ms, anti-entropy every 1 s: event-loop delay p99 / max`,
      ...sizes.map((n) => {
        const r = get('syncmesh', n)
        return r?.liveP99Ms === undefined ? '—' : `${ms(r.liveP99Ms)} / ${ms(r.liveMaxMs)}`
      }),
      '—',
      '—',
      '—',
    ],
    ['LevelDB cold start until readable', ...cells((r) => r.levelStartMs, ms), growth((r) => r.levelStartMs), target((r) => r.levelStartMs, 2000, 'ms')],
    ['… the snapshot it loads, as stored', ...cells((r) => (r.levelSnapshotBytes === undefined ? undefined : r.levelSnapshotBytes / 1e6), mb), growth((r) => r.levelSnapshotBytes), '—'],
  ]
  const header = ['measure', ...sizes.map((n) => `syncmesh ${n.toLocaleString('en-US')}`), `yjs ${top.toLocaleString('en-US')}`, 'growth', 'target at 1 M']
  for (const r of results) if ('error' in r) rows.push([`${r.system} ${r.records} failed`, r.error.slice(0, 120), '', '', '', '', ''])
  printAndSave(
    `## Scale (bench/scale.ts), ${FIELDS.length} fields per record, load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')} → ${loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    markdownTable(header, rows),
    RESULTS_FILE,
    { started: new Date().toISOString(), loadBefore, results },
  )
}

runBench(main)
