/**
 * Tabs of one origin on one IndexedDB database, in a real Chromium: real IndexedDB, Web Locks and BroadcastChannel
 * shared by the tabs of one browser profile. What test/src/tabs.test.ts checks in Node, here for real, plus what only
 * a browser can show: a tab closed in the middle of writing, and a page that is not a secure context.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bundleForBrowser } from '../../examples/web/bundle.js'
import { haveChromium, launchBrowser, warnIfNoChromium, type TestBrowser } from './chromium.js'

warnIfNoChromium('the browser tab tests')

/** The page: a replica on IndexedDB database `db`, driven from the test through `window.tabs`. */
const PAGE = String.raw`
import { createReplica } from 'syncmesh'
import { indexedDBStorage } from 'syncmesh/storage/indexeddb'

let replica
const seen = new Map() // id → ms from the writer's stamp to when this tab saw it
const stamp = () => performance.timeOrigin + performance.now()
window.tabs = {
  async open(db, init = {}) {
    replica = await createReplica({ storage: indexedDBStorage(db), antiEntropyMs: 500, ...init })
    replica.collection('items').subscribe((changes) => {
      const now = stamp()
      for (const c of changes) if (c.origin === 'remote' && c.record && typeof c.record.at === 'number') seen.set(c.id, now - c.record.at)
    })
    return { peerId: replica.peerId, writer: replica.writerId }
  },
  async openError(db, init = {}) {
    try {
      await createReplica({ storage: indexedDBStorage(db), ...init })
      return 'opened'
    } catch (e) {
      return e.name + ': ' + e.message
    }
  },
  status: () => replica.status(),
  ids: () => replica.collection('items').all().map((r) => r.id).sort(),
  async write(prefix, n) {
    const c = replica.collection('items')
    for (let i = 0; i < n; i++) await c.put({ id: prefix + i, at: stamp() })
  },
  /** Writes one after another until the page dies, logging each acknowledged id. */
  writeForever(prefix) {
    const c = replica.collection('items')
    let i = 0
    const next = () => { const id = prefix + i++; c.put({ id, at: stamp() }).then(() => { console.log('acked ' + id); next() }) }
    next()
  },
  latencies: (prefix) => [...seen].filter(([id]) => id.startsWith(prefix)).map(([, ms]) => ms),
  close: () => replica.close(),
}
document.title = 'ready'
`

describe.skipIf(!haveChromium)('tabs of one origin in real Chromium', () => {
  let server: Server
  let url: string
  let insecureUrl: string
  let browser: TestBrowser

  beforeAll(async () => {
    const js = await bundleForBrowser(PAGE)
    server = createServer((req, res) => {
      if (req.url === '/page.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(js)
      else res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>loading</title><script type="module" src="/page.js"></script>')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as AddressInfo).port
    url = `http://127.0.0.1:${port}/`
    insecureUrl = `http://insecure.test:${port}/` // mapped to 127.0.0.1 below: a page that is not a secure context
    browser = await launchBrowser({ extraArgs: ['--host-resolver-rules=MAP insecure.test 127.0.0.1'] })
  })

  afterAll(async () => {
    await browser?.close()
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()))
  })

  async function tab(at = url): Promise<Page> {
    const p = await browser.page()
    await p.goto(at)
    await p.waitForFunction(() => document.title === 'ready')
    return p
  }

  it('two tabs writing at once lose nothing, share one peer id, never one origin, and see each other’s writes (latency printed)', async () => {
    const [a, b] = [await tab(), await tab()]
    const [ia, ib] = [await a.evaluate(() => window.tabs.open('shared')), await b.evaluate(() => window.tabs.open('shared'))]
    expect(ia.peerId).toBe(ib.peerId)
    expect(ia.writer).not.toBe(ib.writer)
    await Promise.all([a.evaluate(() => window.tabs.write('a', 300)), b.evaluate(() => window.tabs.write('b', 300))])
    const deadline = Date.now() + 5000
    while ((await a.evaluate(() => window.tabs.ids().length)) < 600 || (await b.evaluate(() => window.tabs.ids().length)) < 600) {
      if (Date.now() > deadline) throw new Error('the tabs did not both reach 600 records')
      await new Promise((r) => setTimeout(r, 20))
    }
    const ms = [...(await b.evaluate(() => window.tabs.latencies('a'))), ...(await a.evaluate(() => window.tabs.latencies('b')))].sort((x, y) => x - y)
    const q = (f: number): string => ms[Math.min(ms.length - 1, Math.floor(f * ms.length))]!.toFixed(1)
    console.log(`tab → tab write visible (${ms.length} writes, both tabs writing): p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${q(1)} ms`)
    await a.evaluate(() => window.tabs.close())
    await b.evaluate(() => window.tabs.close())
    await a.reload()
    await a.waitForFunction(() => document.title === 'ready')
    await a.evaluate(() => window.tabs.open('shared'))
    expect(await a.evaluate(() => window.tabs.ids().length)).toBe(600)
    await a.close()
    await b.close()
  })

  it('a tab closed in the middle of writing loses none of its acknowledged writes', async () => {
    const [a, b] = [await tab(), await tab()]
    await a.evaluate(() => window.tabs.open('killed'))
    await b.evaluate(() => window.tabs.open('killed'))
    const acked: string[] = []
    b.on('console', (m) => {
      const hit = /^acked (\S+)$/.exec(m.text())
      if (hit) acked.push(hit[1]!)
    })
    await b.evaluate(() => window.tabs.writeForever('w'))
    while (acked.length < 150) await new Promise((r) => setTimeout(r, 5))
    await b.close({ runBeforeUnload: false }) // the tab goes away mid-write: no close(), no goodbye
    const survivor = new Set(await a.evaluate(() => window.tabs.ids()))
    const missingLive = acked.filter((id) => !survivor.has(id))
    await a.evaluate(() => window.tabs.close())
    const c = await tab()
    await c.evaluate(() => window.tabs.open('killed'))
    const stored = new Set(await c.evaluate(() => window.tabs.ids()))
    const missingStored = acked.filter((id) => !stored.has(id))
    console.log(`tab closed mid-write: ${acked.length} writes acknowledged before it went; missing in the other tab ${missingLive.length}, in storage ${missingStored.length}`)
    expect(missingStored).toEqual([])
    expect(missingLive).toEqual([])
    await a.close()
    await c.close()
  })

  it('hands the leadership over when the leader tab goes away', async () => {
    const a = await tab()
    await a.evaluate(() => window.tabs.open('leader'))
    const b = await tab()
    await b.evaluate(() => window.tabs.open('leader'))
    expect(await a.evaluate(() => window.tabs.status().leader)).toBe(true)
    expect(await b.evaluate(() => window.tabs.status().leader)).toBe(false)
    await a.close({ runBeforeUnload: false })
    const deadline = Date.now() + 5000
    while (!(await b.evaluate(() => window.tabs.status().leader))) {
      if (Date.now() > deadline) throw new Error('the second tab did not become the leader')
      await new Promise((r) => setTimeout(r, 20))
    }
    await b.close()
  })

  it('a page that is not a secure context gets typed errors naming what is missing (Web Locks, WebCrypto)', async () => {
    const p = await tab(insecureUrl)
    expect(await p.evaluate(() => window.isSecureContext)).toBe(false)
    expect(await p.evaluate(() => window.tabs.openError('insecure'))).toMatch(/^SharingUnavailableError: .*navigator\.locks/)
    expect(await p.evaluate(() => window.tabs.openError('insecure2', { secret: 'pw' }))).toMatch(/^CryptoUnavailableError: .*crypto\.subtle/)
    await p.close()
  })

  it('raised no uncaught page errors', () => {
    expect(browser.errors).toEqual([])
  })
})

declare global {
  interface Window {
    tabs: {
      open(db: string, init?: object): Promise<{ peerId: string; writer: string }>
      openError(db: string, init?: object): Promise<string>
      status(): { leader: boolean; online: boolean; peers: unknown[] }
      ids(): string[]
      write(prefix: string, n: number): Promise<void>
      writeForever(prefix: string): void
      latencies(prefix: string): number[]
      close(): Promise<void>
    }
  }
}
