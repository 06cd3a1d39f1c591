/**
 * Browser benchmarks (part of `npm run bench`), in headless Debian Chromium driven by playwright-core, all on
 * loopback against one `syncmesh serve` (signaling + relay) in this process:
 *
 * 1. write → visible in another browser over native RTCPeerConnection: two browser profiles (separate contexts, so
 *    separate processes, IndexedDB and BroadcastChannel), a ping-pong of sequential writes after a warm-up, run
 *    entirely inside the pages; one way = round trip / 2 (the two pages share no clock). Side by side in the same
 *    run and the same browsers: y-webrtc + yjs (Y.Map set → remote observe, same signaling server), each system with
 *    and without its IndexedDB persistence (syncmesh hands a write to peers only once it is durable; y-indexeddb
 *    does not hold back y-webrtc).
 * 2. write → visible in another tab of the same profile (shared IndexedDB: syncmesh's tab link over
 *    BroadcastChannel; y-webrtc's own BroadcastChannel link between tabs).
 * 3. minified + gzipped browser bundle sizes of `syncmesh` alone, of `syncmesh` + webrtc + relay + indexeddb +
 *    broadcast, and of yjs + y-webrtc (+ y-indexeddb), bundled the same way with esbuild; and whether fast-check
 *    reached any bundle that does not import the test kit.
 *
 *   npx tsx bench/browser.ts [--writes 1000] [--only wire,tabs,bundle]
 *
 * Prints a markdown table (PASS / MISS per target) and writes `.bench-results/browser.json`. Exits 0 when targets
 * are missed; non-zero only when something fails to run. Without /usr/bin/chromium it prints how to install it and
 * measures the bundles only.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { loadavg } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import type { Page } from 'playwright-core'
import { bundleDetails, bundleForBrowser } from '../examples/web/bundle.js'
import { startServer, type SyncmeshServer } from '../src/server/index.js'
import { haveChromium, launchBrowser, warnIfNoChromium, type TestBrowser } from '../test/browser/chromium.js'
import { type Latency, arg, printAndSave, runBench, summary } from './stats.js'
import { formatMs, markdownTable } from './table.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const RESULTS_FILE = path.join(ROOT, '.bench-results', 'browser.json')
const WRITES = Number(arg('writes', '1000'))
const WARMUP = 50
const ONLY = new Set(arg('only', 'wire,tabs,bundle').split(','))

/**
 * One page per system, driven through `window.bench`: `open` joins a room, `echo` answers every ping with a pong,
 * `pingPong` times `n` sequential round trips in the page and returns them (ms).
 */
const SYNCMESH_PAGE = String.raw`
import { createReplica, MemoryStorage } from 'syncmesh'
import { indexedDBStorage } from 'syncmesh/storage/indexeddb'
import { webrtcTransport } from 'syncmesh/transports/webrtc'

let replica, items
window.bench = {
  async open({ server, room, db }) {
    replica = await createReplica({
      room,
      storage: db ? indexedDBStorage(db) : new MemoryStorage(),
      transports: [webrtcTransport({ signaling: [server] })],
      antiEntropyMs: 0,
    })
    items = replica.collection('bench')
  },
  viaWebRTC: () => replica.status().peers.some((p) => p.connected && p.via === 0),
  leader: () => replica.status().leader,
  echo() {
    items.subscribe((changes) => {
      for (const c of changes) if (c.origin === 'remote' && c.id === 'ping') void items.put({ id: 'pong', i: c.record.i })
    })
  },
  pingPong(n, from) {
    return new Promise((resolve) => {
      const out = []
      let i = from, t0 = 0
      const next = () => { t0 = performance.now(); void items.put({ id: 'ping', i }) }
      const stop = items.subscribe((changes) => {
        for (const c of changes) {
          if (c.origin !== 'remote' || c.id !== 'pong' || c.record.i !== i) continue
          out.push(performance.now() - t0)
          if (++i === from + n) { stop(); resolve(out) } else next()
        }
      })
      next()
    })
  },
  close: () => replica.close(),
}
document.title = 'ready'
`

const YJS_PAGE = String.raw`
import * as Y from 'yjs'
import { WebrtcProvider } from 'y-webrtc'
import { IndexeddbPersistence } from 'y-indexeddb'

let doc, provider, persistence, map
window.bench = {
  async open({ server, room, db }) {
    doc = new Y.Doc()
    if (db) { persistence = new IndexeddbPersistence(db, doc); await persistence.whenSynced }
    provider = new WebrtcProvider(room, doc, { signaling: [server] })
    map = doc.getMap('bench')
  },
  // y-webrtc keeps tabs of one origin on BroadcastChannel and other browsers on WebRTC.
  viaWebRTC: () => [...provider.room.webrtcConns.values()].some((c) => c.connected),
  viaBroadcast: () => provider.room.bcconnected,
  leader: () => true,
  echo() {
    map.observe((e, tx) => { if (!tx.local && e.keysChanged.has('ping')) map.set('pong', map.get('ping')) })
  },
  pingPong(n, from) {
    return new Promise((resolve) => {
      const out = []
      let i = from, t0 = 0
      const next = () => { t0 = performance.now(); map.set('ping', i) }
      const on = (e, tx) => {
        if (tx.local || !e.keysChanged.has('pong') || map.get('pong') !== i) return
        out.push(performance.now() - t0)
        if (++i === from + n) { map.unobserve(on); resolve(out) } else next()
      }
      map.observe(on)
      next()
    })
  },
  async close() { provider.destroy(); await persistence?.destroy(); doc.destroy() },
}
document.title = 'ready'
`

declare global {
  interface Window {
    bench: {
      open(o: { server: string; room: string; db?: string }): Promise<void>
      viaWebRTC(): boolean
      viaBroadcast?(): boolean
      leader(): boolean
      echo(): void
      pingPong(n: number, from: number): Promise<number[]>
      close(): Promise<void>
    }
  }
}

type System = 'syncmesh' | 'yjs'

/** Serves each system's page at `/<system>`. */
async function servePages(): Promise<{ url: string; http: Server }> {
  const js: Record<System, string> = { syncmesh: await bundleForBrowser(SYNCMESH_PAGE), yjs: await bundleForBrowser(YJS_PAGE) }
  const http = createServer((req, res) => {
    const name = (req.url ?? '').slice(1).replace(/\.js$/, '') as System
    if (req.url?.endsWith('.js') && js[name]) res.writeHead(200, { 'content-type': 'text/javascript' }).end(js[name])
    else if (js[name]) res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>loading</title><script type="module" src="/${name}.js"></script>`)
    else res.writeHead(404).end()
  })
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${(http.address() as AddressInfo).port}/`, http }
}

async function waitUntil(page: Page, what: string, fn: () => boolean, ms = 20_000): Promise<void> {
  await page.waitForFunction(fn, undefined, { timeout: ms, polling: 20 }).catch(() => {
    throw new Error(`timed out after ${ms} ms waiting for ${what}`)
  })
}

let roomSeq = 0

/** Opens `system` in two pages, has the second echo, and times round trips from the first. */
async function pingPong(pages: [Page, Page], system: System, pageUrl: string, server: string, opts: { db: boolean; link: 'webrtc' | 'broadcast' }): Promise<Latency> {
  const room = `bench-browser-${system}-${++roomSeq}`
  const db = opts.db ? `bench-${room}` : undefined
  for (const p of pages) {
    await p.goto(pageUrl + system)
    await waitUntil(p, 'the page', () => document.title === 'ready')
  }
  try {
    for (const p of pages) await p.evaluate((o) => window.bench.open(o), { server, room, db })
    if (opts.link === 'webrtc') for (const p of pages) await waitUntil(p, `${system} to connect over WebRTC`, () => window.bench.viaWebRTC())
    else if (system === 'yjs') for (const p of pages) await waitUntil(p, 'y-webrtc to link the tabs', () => window.bench.viaBroadcast!())
    await pages[1].evaluate(() => window.bench.echo())
    await pages[0].evaluate((n) => window.bench.pingPong(n, 0), WARMUP)
    const rtt = await pages[0].evaluate(([n, from]) => window.bench.pingPong(n, from), [WRITES, WARMUP] as const)
    return summary(rtt.map((x) => x / 2))
  } finally {
    for (const p of pages) await p.evaluate(() => window.bench.close()).catch(() => {})
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// 3. Bundle sizes

interface BundleSize {
  name: string
  minBytes: number
  gzBytes: number
  fastCheck: boolean
  /** Whether yjs was bundled. */
  yjs: boolean
}

const BUNDLES: { name: string; entry: string }[] = [
  { name: 'syncmesh (createReplica, collections, memory storage)', entry: `import { createReplica } from 'syncmesh'\nglobalThis.x = createReplica` },
  {
    name: 'syncmesh + webrtc + relay + indexeddb + broadcast',
    entry: [
      `import { createReplica } from 'syncmesh'`,
      `import { webrtcTransport } from 'syncmesh/transports/webrtc'`,
      `import { relayTransport } from 'syncmesh/transports/relay'`,
      `import { broadcastTransport } from 'syncmesh/transports/broadcast'`,
      `import { indexedDBStorage } from 'syncmesh/storage/indexeddb'`,
      `globalThis.x = [createReplica, webrtcTransport, relayTransport, broadcastTransport, indexedDBStorage]`,
    ].join('\n'),
  },
  { name: 'yjs + y-webrtc', entry: `import * as Y from 'yjs'\nimport { WebrtcProvider } from 'y-webrtc'\nglobalThis.x = [Y, WebrtcProvider]` },
  {
    name: 'yjs + y-webrtc + y-indexeddb',
    entry: `import * as Y from 'yjs'\nimport { WebrtcProvider } from 'y-webrtc'\nimport { IndexeddbPersistence } from 'y-indexeddb'\nglobalThis.x = [Y, WebrtcProvider, IndexeddbPersistence]`,
  },
  {
    name: 'syncmesh + syncmesh/text (yjsText, so yjs)',
    entry: `import { createReplica } from 'syncmesh'\nimport { yjsText } from 'syncmesh/text'\nglobalThis.x = [createReplica, yjsText]`,
  },
]

/** Minified and gzipped (level 9) sizes; `fastCheck` says whether any fast-check module was bundled. */
async function bundleSizes(): Promise<BundleSize[]> {
  const out: BundleSize[] = []
  for (const { name, entry } of BUNDLES) {
    const { js, inputs } = await bundleDetails(entry, { minify: true })
    const fastCheck = inputs.some((f) => f.includes('fast-check'))
    const yjs = inputs.some((f) => f.includes('node_modules/yjs/'))
    out.push({ name, minBytes: Buffer.byteLength(js), gzBytes: gzipSync(js, { level: 9 }).byteLength, fastCheck, yjs })
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const loadBefore = loadavg()
  const started = new Date().toISOString()
  const results: Record<string, unknown> = {}
  if (ONLY.has('bundle')) results['bundle'] = await bundleSizes()
  const runBrowsers = haveChromium && (ONLY.has('wire') || ONLY.has('tabs'))
  warnIfNoChromium('the browser latency benchmarks')
  let server: SyncmeshServer | undefined
  let pages: { url: string; http: Server } | undefined
  const browsers: TestBrowser[] = []
  try {
    if (runBrowsers) {
      server = await startServer({ host: '127.0.0.1', port: 0, log: false })
      pages = await servePages()
      const [a, b] = await Promise.all([launchBrowser(), launchBrowser()])
      browsers.push(a!, b!)
      const two = async (x: TestBrowser, y: TestBrowser): Promise<[Page, Page]> => [await x.page(), await y.page()]
      if (ONLY.has('wire')) {
        const wire = await two(a!, b!)
        for (const system of ['syncmesh', 'yjs'] as const) {
          for (const db of [false, true]) results[`wire/${system}/${db ? 'idb' : 'mem'}`] = await pingPong(wire, system, pages.url, server.url, { db, link: 'webrtc' })
        }
        await Promise.all(wire.map((p) => p.close()))
      }
      if (ONLY.has('tabs')) {
        const tabs = await two(a!, a!)
        for (const system of ['syncmesh', 'yjs'] as const) results[`tabs/${system}`] = await pingPong(tabs, system, pages.url, server.url, { db: true, link: 'broadcast' })
      }
    }
  } finally {
    await Promise.allSettled(browsers.map((b) => b.close()))
    if (pages) await new Promise<void>((resolve) => pages!.http.close(() => resolve()))
    await server?.close()
  }
  const loadAfter = loadavg()

  const rows: string[][] = []
  const mark = (ok: boolean): string => (ok ? 'PASS' : '**MISS**')
  const lat = (key: string): Latency | undefined => results[key] as Latency | undefined
  const both = (l: Latency | undefined): string => (l ? `${formatMs(l.p50)} / ${formatMs(l.p99)} ms` : '—')
  for (const db of ['mem', 'idb'] as const) {
    const s = lat(`wire/syncmesh/${db}`)
    const y = lat(`wire/yjs/${db}`)
    if (!s) continue
    const store = db === 'idb' ? 'IndexedDB (y-indexeddb)' : 'in memory'
    rows.push([`browser A → browser B over native WebRTC, ${store}, p50 / p99 (${s.n} writes, RTT/2)`, both(s), both(y), 'p50 ≤ 5, p99 ≤ 25 ms', mark(s.p50 <= 5 && s.p99 <= 25)])
  }
  if (lat('tabs/syncmesh')) {
    rows.push([`tab → tab of one profile (shared IndexedDB, BroadcastChannel), p50 / p99`, both(lat('tabs/syncmesh')), both(lat('tabs/yjs')), 'p99 ≤ 50 ms', mark(lat('tabs/syncmesh')!.p99 <= 50)])
  }
  const sizes = results['bundle'] as BundleSize[] | undefined
  if (sizes) {
    const kB = (n: number): string => `${(n / 1000).toFixed(1)} kB`
    const [alone, full, yw, ywi] = sizes
    rows.push([`bundle, min + gzip: ${alone!.name}`, kB(alone!.gzBytes), `${yw!.name}: ${kB(yw!.gzBytes)}`, '—', ''])
    rows.push([`bundle, min + gzip: ${full!.name}`, kB(full!.gzBytes), `${ywi!.name}: ${kB(ywi!.gzBytes)}`, '≤ 40 kB', mark(full!.gzBytes <= 40_000)])
    const leaked = sizes.filter((s) => s.name.startsWith('syncmesh') && s.fastCheck)
    rows.push(['fast-check in a bundle that does not import the test kit', leaked.length ? leaked.map((s) => s.name).join('; ') : 'no', '—', 'never', mark(leaked.length === 0)])
    const text = sizes[4]
    if (text) rows.push([`bundle, min + gzip: ${text.name}`, kB(text.gzBytes), `${yw!.name}: ${kB(yw!.gzBytes)}`, '—', ''])
    const yjsLeaked = sizes.filter((s) => s.name.startsWith('syncmesh') && !s.name.includes('syncmesh/text') && s.yjs)
    rows.push(['yjs in a bundle that does not import syncmesh/text', yjsLeaked.length ? yjsLeaked.map((s) => s.name).join('; ') : 'no', '—', 'never', mark(yjsLeaked.length === 0)])
  }
  printAndSave(`## In the browser (bench/browser.ts), headless Chromium, loopback, load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')} → ${loadAfter.map((x) => x.toFixed(2)).join(' ')}`, markdownTable(['measure', 'syncmesh', 'yjs + y-webrtc, same run', 'target', ''], rows), RESULTS_FILE, { started, loadBefore, loadAfter, writes: WRITES, results })
}

runBench(main)
