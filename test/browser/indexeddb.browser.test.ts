/**
 * `syncmesh/storage/indexeddb` in a real browser: Debian's Chromium driven by playwright-core. The page script is
 * bundled from the sources with esbuild and served from 127.0.0.1; the checks run inside the page and hand a verdict
 * (with details) back to Node. Skips, loudly, when /usr/bin/chromium is missing (`apt-get install chromium`).
 */
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const CHROMIUM = '/usr/bin/chromium'
const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const haveChromium = existsSync(CHROMIUM)
if (!haveChromium) {
  console.warn(
    `\n${'!'.repeat(100)}\n!! SKIPPING the IndexedDB browser tests: ${CHROMIUM} not found.\n` +
      `!! Install it with: sudo apt-get update && sudo apt-get install -y chromium   (.ci/run does this in CI)\n${'!'.repeat(100)}\n`,
  )
}

/** What the page exposes on `window.syncmesh` (the source is PAGE below). */
interface PageApi {
  open(db: string): Promise<{ peerId: string; count: number }>
  write(n: number): Promise<{ peerId: string; count: number }>
  read(n: number): Promise<{ ok: boolean; peerId: string; count: number; problems: string[]; logEntries: number; snapshots: number }>
  conformance(): Promise<{ name: string; ok: boolean; ms: number; error?: string }[]>
  corrupt(db: string): Promise<string[]>
  openExpectingCorruption(db: string): Promise<{ name: string; code: string; key: string[] } | { opened: true }>
  writeAfterClose(db: string): Promise<{ name: string; code: string }[]>
  holdOpen(db: string): Promise<void>
  afterUpgrade(): Promise<{ versionChange: number; error: string }>
  upgrade(db: string, version: number): Promise<{ blocked: boolean; upgraded: boolean }>
}

declare global {
  interface Window {
    syncmesh: PageApi
  }
}

/**
 * The page script (bundled from the sources). Record i is deterministic, so the reloaded page knows what to expect;
 * values carry -0, NaN, ±Infinity, lone surrogates (also in ids), bytes and nested structures.
 */
const PAGE = String.raw`
import { createReplica } from './src/index.js'
import { indexedDBStorage } from './src/storage/indexeddb.js'
import { storageConformanceCases } from './src/testkit/storage-suite.js'

let replica
let currentDb

function recordFor(i) {
  const lone = i % 2 ? '\uD800' : '\uDFFF'
  return {
    id: 'r' + i + (i % 10 === 0 ? '\uD83D' : ''),
    n: i,
    negZero: -0,
    nan: NaN,
    inf: i % 2 ? Infinity : -Infinity,
    text: 'x' + lone + 'y' + i + '\u0000',
    bytes: new Uint8Array([i & 255, 0, 255, i >> 8]),
    nested: { a: [i, -0, NaN, { s: lone, b: null, t: true }], empty: {}, list: [] },
    big: 2 ** 53 - 1 - i,
    frac: i / 7,
  }
}
const DELETED = 7
const UPDATED = 3
function expectedFor(i) {
  if (i === DELETED) return undefined
  const r = recordFor(i)
  if (i === UPDATED) r.n = 'updated \uDBFF'
  return r
}

function show(v) {
  return JSON.stringify(v, (_, x) =>
    typeof x === 'number' && !Number.isFinite(x) ? String(x) : Object.is(x, -0) ? '-0' : x instanceof Uint8Array ? 'bytes:' + Array.from(x).join(',') : x,
  )
}
function same(a, b) {
  if (typeof a === 'number' || typeof b === 'number') return Object.is(a, b)
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && a.length === b.length && a.every((x, i) => x === b[i])
  }
  if (Array.isArray(a) || Array.isArray(b)) return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => same(x, b[i]))
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a).sort(), kb = Object.keys(b).sort()
    return same(ka, kb) && ka.every((k) => same(a[k], b[k]))
  }
  return a === b
}

function rawOpen(db, version) {
  return new Promise((resolve, reject) => {
    const req = version === undefined ? indexedDB.open(db) : indexedDB.open(db, version)
    req.onsuccess = () => resolve(req.result)
    req.onerror = () => reject(req.error)
  })
}
function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve()
    tx.onabort = () => reject(tx.error)
  })
}
const deleteDb = (db) => new Promise((resolve, reject) => {
  const req = indexedDB.deleteDatabase(db)
  req.onsuccess = () => resolve()
  req.onerror = () => reject(req.error)
})

let held
let versionChanges = 0

window.syncmesh = {
  async open(db) {
    currentDb = db
    replica = await createReplica({ storage: indexedDBStorage(db), compactAfterEntries: 8 })
    return { peerId: replica.peerId, count: replica.collection('things').all().length }
  },
  async write(n) {
    const c = replica.collection('things')
    for (let i = 0; i < n; i += 10) {
      const batch = []
      for (let j = i; j < Math.min(n, i + 10); j++) batch.push(c.put(recordFor(j)))
      await Promise.all(batch)
    }
    await c.update(recordFor(UPDATED).id, { n: 'updated \uDBFF' })
    await c.delete(recordFor(DELETED).id)
    return { peerId: replica.peerId, count: c.all().length }
  },
  async read(n) {
    const c = replica.collection('things')
    const problems = []
    for (let i = 0; i < n; i++) {
      const want = expectedFor(i)
      const got = c.get(recordFor(i).id)
      if (!same(got, want)) problems.push('record ' + i + ': got ' + show(got) + ', expected ' + show(want))
    }
    const all = c.all()
    if (all.length !== n - 1) problems.push('all() has ' + all.length + ' records, expected ' + (n - 1))
    // Peek at the layout: a snapshot (compaction ran) plus the log written after it.
    const raw = await rawOpen(currentDb)
    const tx = raw.transaction('entries')
    const keys = await new Promise((resolve) => { const r = tx.objectStore('entries').getAllKeys(); r.onsuccess = () => resolve(r.result) })
    raw.close()
    return {
      ok: problems.length === 0,
      peerId: replica.peerId,
      count: all.length,
      problems: problems.slice(0, 10),
      logEntries: keys.filter((k) => k[0] === 'log').length,
      snapshots: keys.filter((k) => k[0] === 'snapshot').length,
    }
  },
  async conformance() {
    let n = 0
    const made = []
    const harness = {
      async create() {
        const db = 'conformance-' + ++n
        made.push(db)
        return indexedDBStorage(db)
      },
      async reopen(s) {
        await s.close()
        return indexedDBStorage(s.name)
      },
      async cleanup() {
        for (const db of made.splice(0)) await deleteDb(db)
      },
    }
    const out = []
    for (const c of storageConformanceCases(harness, { timeoutMs: 20000 })) {
      const t0 = performance.now()
      try {
        await c.run()
        out.push({ name: c.name, ok: true, ms: Math.round(performance.now() - t0) })
      } catch (err) {
        out.push({ name: c.name, ok: false, ms: Math.round(performance.now() - t0), error: String(err && err.stack || err) })
      }
    }
    return out
  },
  async corrupt(db) {
    // Truncate the newest stored state behind the library's back; returns its key. (close() compacts, so that is
    // the snapshot; the log replay itself was checked by the reload before, which happened without a close.)
    await replica.close()
    const raw = await rawOpen(db)
    const tx = raw.transaction('entries', 'readwrite')
    const store = tx.objectStore('entries')
    const keys = await new Promise((resolve) => { const r = store.getAllKeys(); r.onsuccess = () => resolve(r.result) })
    const log = keys.filter((k) => k[0] === 'log' || k[0] === 'snapshot').at(-1)
    const value = await new Promise((resolve) => { const r = store.get(log); r.onsuccess = () => resolve(r.result) })
    store.put(value.slice(0, value.length - 3), log)
    await done(tx)
    raw.close()
    return log
  },
  async openExpectingCorruption(db) {
    try {
      await createReplica({ storage: indexedDBStorage(db) })
      return { opened: true }
    } catch (err) {
      return { name: err.name, code: err.code, key: err.key }
    }
  },
  async writeAfterClose(db) {
    const s = indexedDBStorage(db)
    await s.save(['x'], new Uint8Array([1]))
    await s.close()
    const out = []
    for (const call of [() => s.save(['x'], new Uint8Array([2])), () => s.remove(['x']), () => s.load(['x']), () => s.loadRange([])]) {
      try {
        await call()
        out.push({ name: 'resolved', code: '' })
      } catch (err) {
        out.push({ name: err.name, code: err.code })
      }
    }
    return out
  },
  async holdOpen(db) {
    held = indexedDBStorage(db, { onVersionChange: () => versionChanges++ })
    await held.save(['a'], new Uint8Array([1]))
  },
  async afterUpgrade() {
    try {
      await held.save(['b'], new Uint8Array([2]))
      return { versionChange: versionChanges, error: 'none' }
    } catch (err) {
      return { versionChange: versionChanges, error: err.name }
    }
  },
  upgrade(db, version) {
    return new Promise((resolve, reject) => {
      let blocked = false
      const req = indexedDB.open(db, version)
      req.onblocked = () => { blocked = true }
      req.onupgradeneeded = () => req.result.createObjectStore('v' + version)
      req.onsuccess = () => { req.result.close(); resolve({ blocked, upgraded: true }) }
      req.onerror = () => reject(req.error)
      setTimeout(() => resolve({ blocked, upgraded: false }), 5000)
    })
  },
}
document.title = 'ready'
`

describe.skipIf(!haveChromium)('IndexedDB storage in headless Chromium', () => {
  let server: Server | undefined
  let context: BrowserContext | undefined
  let profile: string | undefined
  let page: Page
  let url = ''
  const pageErrors: string[] = []

  async function load(p: Page): Promise<void> {
    await p.goto(url)
    await p.waitForFunction(() => document.title === 'ready', undefined, { timeout: 10_000 })
  }

  beforeAll(async () => {
    const t0 = performance.now()
    const bundle = await build({
      stdin: { contents: PAGE, resolveDir: ROOT, sourcefile: 'indexeddb-page.ts', loader: 'ts' },
      bundle: true,
      write: false,
      platform: 'browser',
      format: 'esm',
      target: 'es2022',
      logLevel: 'silent',
    })
    const js = bundle.outputFiles[0]!.text
    server = createServer((req, res) => {
      if (req.url === '/page.js') {
        res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' })
        res.end(js)
      } else if (req.url === '/' || req.url === '/index.html') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
        res.end('<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>loading</title><script type="module" src="/page.js"></script>')
      } else {
        res.writeHead(404).end()
      }
    })
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
    profile = await mkdtemp(join(tmpdir(), 'syncmesh-chromium-'))
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    })
    page = context.pages()[0] ?? (await context.newPage())
    page.on('pageerror', (err) => pageErrors.push(String(err)))
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(`console.error: ${m.text()}`)
    })
    await load(page)
    console.log(`chromium ${context.browser()?.version() ?? '(persistent context)'}; bundle ${(js.length / 1024).toFixed(0)} KiB; setup ${Math.round(performance.now() - t0)} ms`)
  })

  afterAll(async () => {
    await context?.close()
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()))
    if (profile) await rm(profile, { recursive: true, force: true })
  })

  it('writes 200 records and a delete, survives page.reload(), reads them back exactly with the same peer id', async () => {
    const t0 = performance.now()
    const first = await page.evaluate(() => window.syncmesh.open('replica'))
    expect(first.count).toBe(0)
    const written = await page.evaluate((n) => window.syncmesh.write(n), 200)
    expect(written).toEqual({ peerId: first.peerId, count: 199 })
    const t1 = performance.now()
    await page.reload()
    await page.waitForFunction(() => document.title === 'ready', undefined, { timeout: 10_000 })
    const again = await page.evaluate(() => window.syncmesh.open('replica'))
    const verdict = await page.evaluate((n) => window.syncmesh.read(n), 200)
    console.log(
      `reload round trip: write ${Math.round(t1 - t0)} ms, reload + reopen + verify ${Math.round(performance.now() - t1)} ms; ` +
        `${verdict.count} records; ${verdict.snapshots} snapshot(s) + ${verdict.logEntries} log entries on disk`,
    )
    expect(verdict.problems).toEqual([])
    expect(verdict.ok).toBe(true)
    expect(again.peerId).toBe(first.peerId)
    expect(verdict.peerId).toBe(first.peerId)
    expect(verdict.count).toBe(199)
    expect(verdict.snapshots).toBeGreaterThan(0) // compaction ran (every 8 entries)...
    expect(verdict.logEntries).toBeGreaterThan(0) // ...and the log written after it was replayed too

    // Damage the newest log entry behind the library's back: after a reload, opening reports it, typed and named.
    const damaged = await page.evaluate(() => window.syncmesh.corrupt('replica'))
    await page.reload()
    await page.waitForFunction(() => document.title === 'ready', undefined, { timeout: 10_000 })
    const refused = await page.evaluate(() => window.syncmesh.openExpectingCorruption('replica'))
    expect(refused).toEqual({ name: 'StorageCorruptError', code: 'STORAGE_CORRUPT', key: damaged })
  })

  it('passes the storage conformance suite inside the page against real IndexedDB', async () => {
    const results = await page.evaluate(() => window.syncmesh.conformance())
    for (const r of results) console.log(`  ${r.ok ? 'ok  ' : 'FAIL'} ${String(r.ms).padStart(5)} ms  ${r.name}${r.error ? `\n       ${r.error}` : ''}`)
    expect(results.length).toBeGreaterThan(10)
    expect(results.filter((r) => !r.ok)).toEqual([])
  })

  it('rejects every call after close() with StorageClosedError', async () => {
    const out = await page.evaluate(() => window.syncmesh.writeAfterClose('closing'))
    expect(out).toEqual(Array(4).fill({ name: 'StorageClosedError', code: 'STORAGE_CLOSED' }))
  })

  it('steps aside for an upgrade from another tab: the other tab is not blocked, this one rejects later calls', async () => {
    await page.evaluate(() => window.syncmesh.holdOpen('tabs'))
    const other = await context!.newPage()
    try {
      await load(other)
      const upgrade = await other.evaluate(() => window.syncmesh.upgrade('tabs', 2))
      expect(upgrade).toEqual({ blocked: false, upgraded: true })
    } finally {
      await other.close()
    }
    expect(await page.evaluate(() => window.syncmesh.afterUpgrade())).toEqual({ versionChange: 1, error: 'StorageClosedError' })
  })

  it('raised no uncaught page errors', () => {
    expect(pageErrors).toEqual([])
  })
})
