/**
 * `syncmesh/server` — one process that is both a y-webrtc-compatible signaling server and the syncmesh relay
 * (`npx syncmesh serve`). One HTTP server, one port:
 *
 * - `GET /health` → `200 {"ok":true,"clients":n,"topics":n,"uptimeMs":n}` (`topics` counts signaling topics and relay
 *   rooms). Every other path upgrades to a WebSocket (`/` is what y-webrtc clients use); plain HTTP elsewhere is 404.
 * - **Text** WebSocket messages speak the y-webrtc signaling protocol (./signaling.ts).
 * - **Binary** WebSocket messages speak the relay protocol (./relay.ts; wire format in transports/relay/wire.ts), with
 *   store-and-forward when the server has a `store` (./relay-store.ts, ./store.ts) and rooms shared with other
 *   server processes through `redis` (./cluster.ts).
 *
 * Hardening (each applies per connection and never affects other connections; see ./connections.ts):
 * - a message longer than `maxMessageBytes` closes the connection with 1009 (enforced while reading, by `ws`);
 * - malformed input closes it with 1008; an exception while handling a message is caught, logged and closes only
 *   that connection (1011) — the process never crashes on input;
 * - two token buckets: ops (`ratePerSecond`, burst `rateBurst`; a text message counts as one op, a relay message as
 *   its number of ops) and bytes (`bytesPerSecond`, burst `bytesBurst`); exceeding either closes with 1008. Relay
 *   clients learn the limits from WELCOME and pace themselves, so only misbehaving clients hit them;
 * - every `pingIntervalMs` the server pings each connection at WebSocket level; a connection from which nothing (no
 *   message, no pong) arrived for more than two intervals is terminated;
 * - frames and signaling messages to a receiver whose send buffer exceeds `maxBufferedBytes` are dropped (best-effort
 *   delivery; relay membership events are never dropped). A receiver whose buffer stays above that for
 *   `slowConsumerMs`, or grows past twice it, is a slow consumer: its socket is destroyed at once (a close frame would
 *   wait behind the bytes it does not read, so the client sees 1006), logged and counted with
 *   {@link ServerCloseCode.SLOW_CONSUMER}. So one connection never holds more than about 2 × `maxBufferedBytes`;
 * - at most `maxConnections` connections (further upgrades get 503) and `maxPeersPerRoom` peers per relay room.
 *
 * Close codes the server sends are listed in {@link ServerCloseCode}.
 *
 * Logging (./log.ts): one line per connection event — open, subscribe, join / join refused, violation, slow consumer,
 * timeout, error, close — each `<ISO time> conn=<n> <event> ...`, with remote address and topic hashes; never topics
 * or peer ids.
 *
 * ```ts
 * import { startServer } from 'syncmesh/server'
 * const server = await startServer({ port: 0 })   // host defaults to 127.0.0.1
 * console.log(server.url)                          // ws://127.0.0.1:<port>
 * await server.close()
 * ```
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer } from 'ws'
import { type Cluster, startCluster } from './cluster.js'
import { Connections, type ServerCounters } from './connections.js'
import { serverLog } from './log.js'
import { type ServerInit, resolveServerOptions } from './options.js'
import { RelayProtocol } from './relay.js'
import { SignalingProtocol } from './signaling.js'
import { type BlobStore, openBlobStore } from './store.js'

export { ServerCloseCode } from './connections.js'
export { InvalidArgumentError, MissingDependencyError, StoreLimitError } from './errors.js'
export type { JoinRequest, ServerInit } from './options.js'
export { type BlobStore, type BlobPage, type StoreLimits, memoryBlobStore, levelBlobStore, redisBlobStore, openBlobStore } from './store.js'

/** Counters of a running server. */
export interface ServerStats {
  /** Open WebSocket connections. */
  readonly clients: number
  /** Signaling topics with at least one subscriber. */
  readonly signalingTopics: number
  /** Relay rooms with at least one peer. */
  readonly relayRooms: number
  /** Connections accepted since start. */
  readonly connections: number
  /** Connections closed by the server for malformed input, oversized messages or rate limits. */
  readonly violations: number
  /** Connections dropped for silence. */
  readonly timeouts: number
  /** Relay frames forwarded (one per receiver). */
  readonly forwarded: number
  /** Relay frames and signaling messages dropped because a receiver's buffer was full. */
  readonly droppedSlow: number
  /** Connections dropped as slow consumers (send buffer over `maxBufferedBytes` for `slowConsumerMs`). */
  readonly slowConsumers: number
  /** Uploads acknowledged (stored durably). */
  readonly stored: number
  /** Blobs served to fetching members. */
  readonly served: number
  /** Compactions applied. */
  readonly compactions: number
  /** JOINs refused by the access check. */
  readonly denied: number
}

/** A running server. */
export interface SyncmeshServer {
  /** `ws://host:port` — give it to `relayTransport({ url })` and to y-webrtc's `signaling` option. */
  readonly url: string
  readonly host: string
  readonly port: number
  /** A snapshot of the counters. */
  stats(): ServerStats
  /** Closes every connection (1001 going away), stops listening; resolves when done. Idempotent. */
  close(): Promise<void>
}

function formatUrl(scheme: string, host: string, port: number): string {
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`
}

/** Starts the signaling + relay server; resolves once it listens. */
export async function startServer(init: ServerInit = {}): Promise<SyncmeshServer> {
  const o = resolveServerOptions(init)
  const log = serverLog(init.log)
  const ownsStore = typeof init.store === 'string'
  const store: BlobStore | undefined = typeof init.store === 'string' ? await openBlobStore(init.store) : init.store
  const cluster: Cluster | undefined =
    init.redis === undefined
      ? undefined
      : await startCluster(
          { url: init.redis, nodeTtlMs: init.clusterNodeTtlMs },
          {
            up: (topic, peer, node) => relay.remoteUp(topic, peer, node),
            down: (topic, peer, node) => relay.remoteDown(topic, peer, node),
            frame: (topic, from, to, payload) => relay.remoteFrame(topic, from, to, payload),
            error: (message) => log(`cluster error ${message}`),
          },
        )

  const startedAt = Date.now()
  let closing: Promise<void> | undefined
  const counters: ServerCounters = { connections: 0, violations: 0, timeouts: 0, forwarded: 0, droppedSlow: 0, slowConsumers: 0, stored: 0, served: 0, compactions: 0, denied: 0 }
  const connections = new Connections(o, log, counters, {
    message: (c, buf, isBinary, now) => (isBinary ? relay.onMessage(c, buf, now) : signaling.onMessage(c, buf, now)),
    detach: (c) => {
      signaling.detach(c)
      relay.detach(c)
    },
  })
  const signaling = new SignalingProtocol(o, connections, log, counters)
  const relay = new RelayProtocol({ options: o, connections, log, counters, store, cluster })

  // -- HTTP ---------------------------------------------------------------------------------------------------------

  const http = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]
    if (path === '/health' && (req.method === 'GET' || req.method === 'HEAD')) {
      const topics = signaling.topics.size + relay.rooms.size
      const body = JSON.stringify({ ok: closing === undefined, clients: connections.open.size, topics, uptimeMs: Date.now() - startedAt })
      res.writeHead(closing === undefined ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      res.end(req.method === 'HEAD' ? undefined : body)
      return
    }
    const text = path === '/' ? 'syncmesh signaling + relay server: connect with a WebSocket; GET /health for status\n' : 'not found\n'
    res.writeHead(path === '/' ? 200 : 404, { 'content-type': 'text/plain; charset=utf-8' })
    res.end(text)
  })
  http.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n')
    else socket.destroy()
  })

  const wss = new WebSocketServer({ noServer: true, maxPayload: o.maxMessageBytes, perMessageDeflate: false, clientTracking: false })
  wss.on('error', (err) => log(`server error ${err.message}`))

  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy())
    const refuse = (status: string): void => {
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
    }
    const path = (req.url ?? '/').split('?')[0]
    if (path === '/health') return refuse('400 Bad Request')
    if (closing !== undefined) return refuse('503 Service Unavailable')
    if (connections.open.size >= o.maxConnections) {
      log(`refused upgrade from ${req.socket.remoteAddress ?? '?'}: ${o.maxConnections} connections already open`)
      return refuse('503 Service Unavailable')
    }
    try {
      wss.handleUpgrade(req, socket, head, (ws) => connections.accept(ws, req))
    } catch (err) {
      log(`upgrade failed: ${(err as Error).message}`)
      socket.destroy()
    }
  })

  // -- liveness -----------------------------------------------------------------------------------------------------

  const sweep = setInterval(() => connections.sweep(), o.pingIntervalMs)
  sweep.unref()

  // -- listen -------------------------------------------------------------------------------------------------------

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      clearInterval(sweep)
      reject(err)
    }
    http.once('error', onError)
    http.listen(o.port, o.host, () => {
      http.off('error', onError)
      resolve()
    })
  })
  http.on('error', (err) => log(`server error ${err.message}`))
  const address = http.address() as AddressInfo
  const boundPort = address.port
  const url = formatUrl('ws', o.host, boundPort)
  log(`listening on ${url}`)

  return {
    url,
    host: o.host,
    port: boundPort,
    stats: () => ({
      clients: connections.open.size,
      signalingTopics: signaling.topics.size,
      relayRooms: relay.rooms.size,
      ...counters,
    }),
    close(): Promise<void> {
      closing ??= (async () => {
        clearInterval(sweep)
        connections.goingAway()
        const closed = new Promise<void>((resolve) => http.close(() => resolve()))
        http.closeIdleConnections()
        // Give clients a moment for the closing handshake, then cut whatever is left.
        const deadline = Date.now() + 1000
        while (connections.open.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
        for (const c of connections.open) c.ws.terminate()
        http.closeAllConnections()
        await closed
        wss.close()
        relay.close()
        await cluster?.close().catch((err: unknown) => log(`cluster close failed: ${(err as Error)?.message}`))
        if (ownsStore) await store?.close().catch((err: unknown) => log(`store close failed: ${(err as Error)?.message}`))
        log('closed')
      })()
      return closing
    },
  }
}
