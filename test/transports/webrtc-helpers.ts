/**
 * Test helpers for the WebRTC transport: y-webrtc's own signaling server (`node_modules/y-webrtc/bin/server.js`) run
 * in a child process and held to 127.0.0.1, and a raw signaling client for injecting arbitrary publishes.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'

const SERVER = fileURLToPath(new URL('../../node_modules/y-webrtc/bin/server.js', import.meta.url))

/**
 * Preloaded into the server: y-webrtc's server has no host option and listens on every interface; this forces
 * every `listen` onto 127.0.0.1 and reports the port actually bound (the server itself prints only `PORT`).
 */
const LOOPBACK_PRELOAD = `
import net from 'node:net'
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const cb = typeof args[args.length - 1] === 'function' ? args.pop() : undefined
  const first = args[0]
  const port = Number(first !== null && typeof first === 'object' ? first.port : first) || 0
  const server = this
  return listen.call(this, { port, host: '127.0.0.1' }, function (...a) {
    process.stdout.write('LISTENING ' + server.address().address + ' ' + server.address().port + '\\n')
    if (cb) cb.apply(this, a)
  })
}
`

/** A running (or restartable) y-webrtc signaling server bound to 127.0.0.1. */
export interface SignalingServer {
  readonly url: string
  readonly port: number
  /** Kills the server process (SIGKILL: clients see their sockets reset, as on a crash). */
  kill(): Promise<void>
  /** Starts it again on the same port. */
  restart(): Promise<void>
}

/** Starts y-webrtc's `bin/server.js` on 127.0.0.1 (ephemeral port unless given). */
export async function startYWebrtcServer(port = 0): Promise<SignalingServer> {
  let child: ChildProcess | undefined
  const launch = async (p: number): Promise<number> => {
    const proc = spawn(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(LOOPBACK_PRELOAD)}`, SERVER], {
      env: { ...process.env, PORT: String(p) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child = proc
    return await new Promise<number>((resolve, reject) => {
      let out = ''
      let err = ''
      const timer = setTimeout(() => reject(new Error(`signaling server did not start: ${out}${err}`)), 10_000)
      proc.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString()
        const m = /LISTENING (\S+) (\d+)/.exec(out)
        if (m) {
          clearTimeout(timer)
          if (m[1] !== '127.0.0.1') reject(new Error(`server bound ${m[1]}, not 127.0.0.1`))
          else resolve(Number(m[2]))
        }
      })
      proc.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()))
      proc.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`signaling server exited (${code}): ${out}${err}`))
      })
    })
  }
  const bound = await launch(port)
  const kill = async (): Promise<void> => {
    const c = child
    child = undefined
    if (!c || c.exitCode !== null || c.signalCode !== null) return
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve())
      c.kill('SIGKILL')
    })
  }
  return {
    url: `ws://127.0.0.1:${bound}`,
    port: bound,
    kill,
    async restart() {
      await kill()
      // The old listening socket is gone with the process; retry briefly in case the port is not free yet.
      for (let i = 0; ; i++) {
        try {
          await launch(bound)
          return
        } catch (error) {
          if (i >= 20) throw error
          await new Promise((r) => setTimeout(r, 100))
        }
      }
    },
  }
}

/** A bare signaling client: subscribes to `topic` and publishes whatever it is given (for hostile-input tests). */
export async function rawSignalingClient(url: string, topic: string): Promise<{
  publish(data: unknown): void
  sendText(text: string): void
  /** Every message received, parsed when it is JSON. */
  received: unknown[]
  /** Calls `fn` with the `data` of every publish on the topic. */
  onData(fn: (data: unknown) => void): void
  close(): void
}> {
  const ws = new WebSocket(url)
  const received: unknown[] = []
  const handlers: ((data: unknown) => void)[] = []
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  ws.on('message', (data: Buffer) => {
    let msg: unknown
    try {
      msg = JSON.parse(data.toString())
    } catch {
      msg = data.toString()
    }
    received.push(msg)
    const m = msg as { type?: unknown; topic?: unknown; data?: unknown } | null
    if (m && m.type === 'publish' && m.topic === topic) for (const h of handlers) h(m.data)
  })
  ws.send(JSON.stringify({ type: 'subscribe', topics: [topic] }))
  return {
    publish: (data) => ws.send(JSON.stringify({ type: 'publish', topic, data })),
    sendText: (text) => ws.send(text),
    received,
    onData: (fn) => void handlers.push(fn),
    close: () => ws.close(),
  }
}

/** Polls `cond` every few ms until it holds; throws with `what` after `ms`. */
export async function waitFor(cond: () => boolean, ms: number, what: string | (() => string)): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}
