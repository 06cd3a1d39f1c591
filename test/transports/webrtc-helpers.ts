/**
 * Test and benchmark helpers for WebRTC: y-webrtc's own signaling server (`node_modules/y-webrtc/bin/server.js`) run
 * in a child process and held to 127.0.0.1 (the one copy of it: server tests and benchmarks use it too; its processes
 * are tracked for `killChildren` of ../server/helpers.ts), a raw signaling client for injecting arbitrary publishes,
 * and a WebRTC implementation wrapper that makes ICE fail for chosen pairs.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { track } from '../server/helpers.js'
import type { RTCImplementation } from '../../transports/webrtc/index.js'

/** y-webrtc's own signaling server script. */
export const Y_WEBRTC_SERVER = fileURLToPath(new URL('../../node_modules/y-webrtc/bin/server.js', import.meta.url))
/**
 * Preloaded (`node -r`) into y-webrtc's server, which has no host option and listens on every interface: forces every
 * `listen` onto 127.0.0.1 and reports the port actually bound (the server itself prints only `PORT`).
 */
export const LOOPBACK_PRELOAD = fileURLToPath(new URL('../server/loopback-preload.cjs', import.meta.url))

/** A running (or restartable) y-webrtc signaling server bound to 127.0.0.1. */
export interface SignalingServer {
  readonly url: string
  readonly port: number
  /** The address the server reported binding (always 127.0.0.1, or startYWebrtcServer throws). */
  readonly address: string
  /** The current server process. */
  readonly child: ChildProcess
  /** Kills the server process (SIGKILL: clients see their sockets reset, as on a crash). */
  kill(): Promise<void>
  /** The same as kill(). */
  stop(): Promise<void>
  /** Starts it again on the same port. */
  restart(): Promise<void>
}

/** Starts y-webrtc's `bin/server.js` in a child process on 127.0.0.1 (ephemeral port unless given). */
export async function startYWebrtcServer(port = 0): Promise<SignalingServer> {
  let child!: ChildProcess
  const launch = async (p: number): Promise<{ address: string; port: number }> => {
    const proc = spawn(process.execPath, ['-r', LOOPBACK_PRELOAD, Y_WEBRTC_SERVER], {
      env: { ...process.env, PORT: String(p) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child = track(proc)
    return await new Promise<{ address: string; port: number }>((resolve, reject) => {
      let out = ''
      let err = ''
      const timer = setTimeout(() => reject(new Error(`signaling server did not start: ${out}${err}`)), 10_000)
      proc.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString()
        const m = /LISTENING (\S+) (\d+)/.exec(out)
        if (m) {
          clearTimeout(timer)
          if (m[1] !== '127.0.0.1') reject(new Error(`server bound ${m[1]}, not 127.0.0.1`))
          else resolve({ address: m[1], port: Number(m[2]) })
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
    if (c.exitCode !== null || c.signalCode !== null) return
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve())
      c.kill('SIGKILL')
    })
  }
  return {
    url: `ws://127.0.0.1:${bound.port}`,
    port: bound.port,
    address: bound.address,
    get child() {
      return child
    },
    kill,
    stop: kill,
    async restart() {
      await kill()
      // The old listening socket is gone with the process; retry briefly in case the port is not free yet.
      for (let i = 0; ; i++) {
        try {
          await launch(bound.port)
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

/** What {@link blockableRtc} returns. */
export interface BlockableRtc {
  /** The implementation to give peer `owner`'s transport (`rtc` option). */
  for(owner: string): RTCImplementation
  /** Makes ICE fail between `x` and `y` (both directions) for connection attempts from now on. */
  block(x: string, y: string): void
  unblock(x: string, y: string): void
  /** Connections between `x` and `y` that were blocked and have been closed (attempts that failed). */
  failedAttempts(x: string, y: string): number
}

/**
 * Wraps a WebRTC implementation so that ICE fails for chosen pairs of peers: a connection between a blocked pair
 * drops every remote candidate (trickled, or inside the remote SDP) on both sides, so no connectivity check is ever
 * sent and the attempt stays unconnected until the transport's connect timeout. A connection learns who is at the
 * other end from the ICE ufrag in the remote description, which every wrapped connection registers for its owner.
 */
export function blockableRtc(impl: RTCImplementation): BlockableRtc {
  const owners = new Map<string, string>() // ICE ufrag → owner peer id
  const blocked = new Set<string>()
  const failed = new Map<string, number>()
  const key = (x: string, y: string): string => (x < y ? `${x}\u0000${y}` : `${y}\u0000${x}`)
  const ufrag = (sdp: string | undefined): string | undefined => /a=ice-ufrag:(\S+)/.exec(sdp ?? '')?.[1]
  const Base = impl.RTCPeerConnection as unknown as new (config: object) => {
    setLocalDescription(d?: { type: string; sdp?: string }): Promise<void>
    setRemoteDescription(d: { type: string; sdp: string }): Promise<void>
    addIceCandidate(c: unknown): Promise<void>
    close(): void
  }
  return {
    for(owner) {
      function BlockablePeerConnection(config: object): InstanceType<typeof Base> {
        const pc = new Base(config)
        let remote: string | undefined
        let wasBlocked = false
        const isBlocked = (): boolean => remote !== undefined && blocked.has(key(owner, remote))
        const setLocal = pc.setLocalDescription.bind(pc)
        pc.setLocalDescription = (d) => {
          const u = ufrag(d?.sdp)
          if (u) owners.set(u, owner)
          return setLocal(d)
        }
        const setRemote = pc.setRemoteDescription.bind(pc)
        pc.setRemoteDescription = (d) => {
          const u = ufrag(d.sdp)
          remote = u === undefined ? undefined : owners.get(u)
          if (!isBlocked()) return setRemote(d)
          wasBlocked = true
          return setRemote({ type: d.type, sdp: d.sdp.split(/\r?\n/).filter((l) => !l.startsWith('a=candidate')).join('\r\n') })
        }
        const add = pc.addIceCandidate.bind(pc)
        pc.addIceCandidate = (c) => (isBlocked() ? Promise.resolve() : add(c))
        const close = pc.close.bind(pc)
        pc.close = () => {
          if (wasBlocked && remote !== undefined) failed.set(key(owner, remote), (failed.get(key(owner, remote)) ?? 0) + 1)
          wasBlocked = false
          close()
        }
        return pc
      }
      return { RTCPeerConnection: BlockablePeerConnection } as unknown as RTCImplementation
    },
    block: (x, y) => void blocked.add(key(x, y)),
    unblock: (x, y) => void blocked.delete(key(x, y)),
    failedAttempts: (x, y) => Math.floor((failed.get(key(x, y)) ?? 0) / 2),
  }
}
