/**
 * `npm run web` — serves the browser example (examples/web/) with a local `syncmesh serve` (signaling + relay) on
 * 127.0.0.1, and prints the URL to open in two browsers (or two profiles; tabs of one browser share its IndexedDB
 * and link up over BroadcastChannel instead). Options: `--port N` for the page (default 8080), `--server-port N`
 * for `syncmesh serve` (default 4444); 0 picks a free port.
 */
import { readFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { startServer, type SyncmeshServer } from 'syncmesh/server'
import { bundleWebApp } from './bundle.js'

/** The example being served. */
export interface WebApp {
  /** The page, e.g. `http://127.0.0.1:8080/`. */
  readonly url: string
  /** The `syncmesh serve` URL the page connects to. */
  readonly server: string
  close(): Promise<void>
}

/** Bundles the app and serves it beside a fresh `syncmesh serve`. */
export async function startWebApp(options: { port?: number; serverPort?: number; host?: string } = {}): Promise<WebApp> {
  const host = options.host ?? '127.0.0.1'
  const syncServer: SyncmeshServer = await startServer({ host, port: options.serverPort ?? 4444, log: false })
  const server = `ws://${host}:${syncServer.port}`
  const js = await bundleWebApp()
  const html = (await readFile(fileURLToPath(new URL('./index.html', import.meta.url)), 'utf8')).replace(
    '<script type="module"',
    `<script>window.SYNCMESH_SERVER = ${JSON.stringify(server)}</script>\n<script type="module"`,
  )
  const http: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    if (path === '/' || path === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(html)
    } else if (path === '/app.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' }).end(js)
    } else {
      res.writeHead(404).end()
    }
  })
  try {
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject)
      http.listen(options.port ?? 8080, host, resolve)
    })
  } catch (err) {
    await syncServer.close()
    throw err
  }
  return {
    url: `http://${host}:${(http.address() as AddressInfo).port}/`,
    server,
    async close() {
      http.closeAllConnections()
      await new Promise<void>((resolve) => http.close(() => resolve()))
      await syncServer.close()
    },
  }
}

const isMain = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]
if (isMain) {
  const arg = (name: string): number | undefined => {
    const i = process.argv.indexOf(name)
    return i < 0 ? undefined : Number(process.argv[i + 1])
  }
  const app = await startWebApp({ port: arg('--port'), serverPort: arg('--server-port') })
  console.log(`syncmesh serve (signaling + relay): ${app.server}`)
  console.log(`\n  Open ${app.url}#room=todos in two browsers (add &secret=… for an encrypted room).\n`)
  console.log('  Tabs of one browser share its IndexedDB: they sync over BroadcastChannel and meet the room as one peer.')
  console.log('  Ctrl-C stops.')
  const stop = (): void => void app.close().finally(() => process.exit(0))
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}
