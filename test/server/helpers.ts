/**
 * Test helpers for the signaling + relay server: raw clients, a recording proxy, child-process tracking. y-webrtc's own
 * server is started with startYWebrtcServer from ../transports/webrtc-helpers.ts.
 */
import type { ChildProcess } from 'node:child_process'
import net from 'node:net'
import WebSocket from 'ws'
import {
  type RelayClientOp,
  type RelayServerOp,
  decodeServerMessage,
  encodeClientOp,
  encodeRelayMessage,
} from '../../transports/relay/index.js'
import { sleep, until } from '../wait.js'

/** Every child process a test spawned; {@link killChildren} (run in afterAll) kills whatever is still running. */
const children = new Set<ChildProcess>()

/** Registers a spawned child for {@link killChildren}. */
export function track<C extends ChildProcess>(child: C): C {
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

/** Kills (SIGKILL) every tracked child that is still running and waits for them to exit. */
export async function killChildren(): Promise<void> {
  await Promise.all(
    [...children].map(async (c) => {
      if (c.exitCode === null && c.signalCode === null) {
        const exited = new Promise((r) => c.once('exit', r))
        c.kill('SIGKILL')
        await exited
      }
      children.delete(c)
    }),
  )
}

/** The shared waits (test/wait.ts), re-exported for the server tests. */
export { sleep, until }

/** A raw WebSocket client that records everything: parsed text (JSON) messages, relay ops, and how it closed. */
export class RawClient {
  readonly ws: WebSocket
  readonly json: unknown[] = []
  readonly texts: string[] = []
  readonly ops: RelayServerOp[] = []
  readonly badBinary: Uint8Array[] = []
  closed: { code: number; reason: string } | undefined
  private opened: Promise<void>

  constructor(url: string, options: WebSocket.ClientOptions = {}) {
    this.ws = new WebSocket(url, options)
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve())
      this.ws.once('error', reject)
    })
    this.ws.on('error', () => {})
    this.ws.on('message', (data, isBinary) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer)
      if (isBinary) {
        try {
          this.ops.push(...decodeServerMessage(new Uint8Array(buf)))
        } catch {
          this.badBinary.push(new Uint8Array(buf))
        }
      } else {
        const text = buf.toString('utf8')
        this.texts.push(text)
        try {
          this.json.push(JSON.parse(text))
        } catch {
          // recorded in texts only
        }
      }
    })
    this.ws.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }))
  }

  static async open(url: string, options?: WebSocket.ClientOptions): Promise<RawClient> {
    const c = new RawClient(url, options)
    await c.opened
    return c
  }

  sendJson(value: unknown): void {
    this.ws.send(JSON.stringify(value))
  }

  sendOps(...ops: RelayClientOp[]): void {
    this.ws.send(encodeRelayMessage(ops.map(encodeClientOp)))
  }

  async waitJson(pred: (m: Record<string, unknown>) => boolean, ms = 3000): Promise<Record<string, unknown>> {
    let found: Record<string, unknown> | undefined
    await until(() => (found = this.json.find((m) => m !== null && typeof m === 'object' && pred(m as Record<string, unknown>)) as Record<string, unknown> | undefined) !== undefined, ms, 'a matching JSON message')
    return found!
  }

  async waitOp<K extends RelayServerOp['op']>(kind: K, pred: (op: Extract<RelayServerOp, { op: K }>) => boolean = () => true, ms = 3000): Promise<Extract<RelayServerOp, { op: K }>> {
    let found: Extract<RelayServerOp, { op: K }> | undefined
    await until(() => (found = this.ops.find((o) => o.op === kind && pred(o as Extract<RelayServerOp, { op: K }>)) as Extract<RelayServerOp, { op: K }> | undefined) !== undefined, ms, `a ${kind} op`)
    return found!
  }

  async waitClosed(ms = 3000): Promise<{ code: number; reason: string }> {
    await until(() => this.closed !== undefined, ms, 'the connection to close')
    return this.closed!
  }

  close(): void {
    if (this.ws.readyState <= 1) this.ws.terminate()
  }
}

/** A GET on the server's HTTP side. */
export async function httpGet(url: string, path: string, method = 'GET'): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(`${url.replace(/^ws/, 'http')}${path}`, { method })
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') }
}

/**
 * A TCP proxy in front of a server that records what clients send, decoded: the HTTP upgrade request and the
 * unmasked payload of every WebSocket frame. This is exactly what the server receives.
 */
export class RecordingProxy {
  readonly headers: string[] = []
  readonly payloads: Buffer[] = []
  private readonly server: net.Server
  private readonly sockets = new Set<net.Socket>()
  port = 0

  constructor(private readonly target: () => number) {
    this.server = net.createServer((client) => this.onClient(client))
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}`
  }

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r))
    this.port = (this.server.address() as net.AddressInfo).port
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((r) => this.server.close(() => r()))
  }

  /** Everything recorded, as one buffer (headers + payloads). */
  all(): Buffer {
    return Buffer.concat([...this.headers.map((h) => Buffer.from(h, 'latin1')), ...this.payloads])
  }

  private onClient(client: net.Socket): void {
    const upstream = net.connect(this.target(), '127.0.0.1')
    this.sockets.add(client)
    this.sockets.add(upstream)
    let pending = Buffer.alloc(0)
    let inHeader = true
    client.on('data', (chunk) => {
      upstream.write(chunk)
      pending = Buffer.concat([pending, chunk])
      if (inHeader) {
        const end = pending.indexOf('\r\n\r\n')
        if (end < 0) return
        this.headers.push(pending.subarray(0, end).toString('latin1'))
        pending = pending.subarray(end + 4)
        inHeader = false
      }
      for (;;) {
        const frame = parseClientFrame(pending)
        if (frame === undefined) break
        this.payloads.push(frame.payload)
        pending = pending.subarray(frame.length)
      }
    })
    upstream.on('data', (chunk) => client.write(chunk))
    const end = (): void => {
      client.destroy()
      upstream.destroy()
      this.sockets.delete(client)
      this.sockets.delete(upstream)
    }
    client.on('close', end)
    upstream.on('close', end)
    client.on('error', end)
    upstream.on('error', end)
  }
}

/** Parses one (masked) client-to-server WebSocket frame at the start of `b`, or undefined when incomplete. */
function parseClientFrame(b: Buffer): { payload: Buffer; length: number } | undefined {
  if (b.length < 2) return undefined
  const masked = (b[1]! & 0x80) !== 0
  let len = b[1]! & 0x7f
  let pos = 2
  if (len === 126) {
    if (b.length < 4) return undefined
    len = b.readUInt16BE(2)
    pos = 4
  } else if (len === 127) {
    if (b.length < 10) return undefined
    len = Number(b.readBigUInt64BE(2))
    pos = 10
  }
  const maskAt = pos
  if (masked) pos += 4
  if (b.length < pos + len) return undefined
  const payload = Buffer.from(b.subarray(pos, pos + len))
  if (masked) for (let i = 0; i < len; i++) payload[i]! ^= b[maskAt + (i % 4)]!
  return { payload, length: pos + len }
}

/** A `syncmesh serve` child process (`node --import tsx src/cli.ts serve --port 0 …`), tracked for killChildren. */
export interface ServeProcess {
  readonly url: string
  readonly child: ChildProcess
  /** Everything it wrote to stderr (its log). */
  log(): string
}

/** Starts `syncmesh serve` with `args` in a child process on 127.0.0.1 and resolves with its URL once it listens. */
export async function spawnServe(args: readonly string[], env: Record<string, string> = {}): Promise<ServeProcess> {
  const { spawn } = await import('node:child_process')
  const { fileURLToPath } = await import('node:url')
  const repo = fileURLToPath(new URL('../..', import.meta.url))
  const child = track(spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--port', '0', ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }))
  let out = ''
  let err = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-200_000)))
  await until(() => /ws:\/\/127\.0\.0\.1:\d+/.test(out) || child.exitCode !== null, 20_000, `syncmesh serve ${args.join(' ')} to print its URL`)
  const url = /(ws:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1]
  if (url === undefined) throw new Error(`syncmesh serve exited (${child.exitCode}): ${err}`)
  return { url, child, log: () => err }
}

/** Kills a child with SIGKILL and waits for it to exit. */
export async function sigkill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGKILL')
  await exited
}

/**
 * A TCP proxy to `port` on 127.0.0.1 that holds back by `lagMs` one way of the connections `slow` picks (by their
 * order through it, from 0): what the server sends (`'replies'`) or what the client sends (`'requests'`). The other
 * way, and the other connections, pass straight through.
 */
export async function lagProxy(port: number, lagMs: number, way: 'replies' | 'requests', slow: (n: number) => boolean = () => true): Promise<net.Server> {
  let count = 0
  const proxy = net.createServer((client) => {
    const lag = slow(count++)
    const upstream = net.connect({ host: '127.0.0.1', port })
    const [from, to] = way === 'replies' ? [upstream, client] : [client, upstream]
    to.pipe(from) // the other way, straight through
    from.on('data', (d: Buffer) => (lag ? setTimeout(() => to.write(d), lagMs) : to.write(d)))
    const end = (): void => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', end).on('close', end)
    upstream.on('error', end).on('close', end)
  })
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r))
  return proxy
}
