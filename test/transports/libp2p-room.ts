/**
 * Drives a large libp2p room spread over child processes (libp2p-room-child.ts), either bootstrapping to one
 * `npx syncmesh serve --libp2p` process and finding each other by gossipsub, or wired as a ring lattice. Used by
 * libp2p-room.test.ts (50 nodes, in `npm test`) and bench/libp2p.ts (50-node reach time).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { type Server, createServer } from 'node:net'
import { createInterface } from 'node:readline'
import type { ChildInit } from './libp2p-room-child.js'

const REPO = fileURLToPath(new URL('../..', import.meta.url))
const CHILD = fileURLToPath(new URL('./libp2p-room-child.ts', import.meta.url))

/** Options of {@link startRoom}. */
export interface RoomInit {
  readonly nodes: number
  readonly processes: number
  readonly maxPeers?: number
  readonly announceIntervalMs?: number
  readonly antiEntropyMs?: number
  /** Prefix of replica peer ids (they are `${prefix}${index}`, zero-padded). */
  readonly prefix?: string
  /**
   * 'gossipsub': every node bootstraps to the relay and finds the others by gossipsub (the transport's discovery).
   * 'ring': no gossipsub; node i bootstraps to nodes i+1 … i+`ring` (a ring lattice of degree 2 × ring, on pre-picked
   * ports): the room is held together by the sync protocol's forwarding alone.
   * @default 'gossipsub'
   */
  readonly discovery?: 'gossipsub' | 'ring'
  /** @default 3 */
  readonly ring?: number
}

/** What one node reports on `state`. */
export interface NodeState {
  readonly id: string
  readonly peers: number
  readonly conns: number
  readonly members: number
  readonly count: number
  readonly hash: string
}

/** A running room. */
export interface Room {
  readonly ids: string[]
  /** The rendezvous (gossipsub discovery only): a `syncmesh serve --libp2p` process. */
  readonly relay: { readonly multiaddrs: string[] } | undefined
  /** Every replica writes `n` records and a field of "shared" at once; resolves with ms until all hold everything. */
  writeAll(n: number, timeoutMs: number): Promise<number>
  /** One write by `writer`; resolves with ms until each of the others saw it (sorted ascending). */
  probe(writer: string, timeoutMs: number): Promise<number[]>
  state(): Promise<NodeState[]>
  /** Waits until every node has at least `minPeers` peers. */
  waitPeers(minPeers: number, timeoutMs: number): Promise<void>
  close(): Promise<void>
}

type Event = { t: string; [k: string]: unknown }

/** The shared polling wait (test/wait.ts), re-exported for the libp2p tests and bench/libp2p.ts. */
export { until } from '../wait.js'

/** `syncmesh serve --libp2p` in its own process (so that its work does not stall this one); resolves once listening. */
async function serveLibp2p(maxReservations: number): Promise<{ multiaddrs: string[]; close: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--libp2p', '--port', '0', '--quiet', '--max-reservations', String(maxReservations)], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<void>((r) => child.once('exit', () => r()))
  let err = ''
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)))
  const multiaddrs: string[] = []
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve --libp2p printed no address within 30 s: ${err}`)), 30_000)
    createInterface({ input: child.stdout! }).on('line', (line) => {
      multiaddrs.push(line.trim())
      if (multiaddrs.length === 2) {
        clearTimeout(timer)
        resolve()
      }
    })
    void exited.then(() => reject(new Error(`serve --libp2p exited: ${err}`)))
  })
  return {
    multiaddrs,
    close: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(killer)
    },
  }
}

/** Free TCP ports on 127.0.0.1 (bound then released; fine on loopback within one run). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<Server>((resolve, reject) => {
      const s = createServer()
      s.once('error', reject)
      s.listen(0, '127.0.0.1', () => resolve(s))
    })),
  )
  const ports = servers.map((s) => (s.address() as { port: number }).port)
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  return ports
}

/** Starts the rendezvous and the children; resolves once every replica has started. */
export async function startRoom(init: RoomInit): Promise<Room> {
  const ring = init.discovery === 'ring'
  const relay = ring ? undefined : await serveLibp2p(init.nodes + 8)
  const prefix = init.prefix ?? 'n'
  const width = String(init.nodes - 1).length
  const ids = Array.from({ length: init.nodes }, (_, i) => `${prefix}${String(i).padStart(width, '0')}`)
  const children: ChildProcess[] = []
  const listeners = new Set<(e: Event) => void>()
  const bootstrap = relay?.multiaddrs.filter((a) => !a.includes('/ws')) ?? []
  const per = Math.ceil(init.nodes / init.processes)
  const k = init.ring ?? 3
  const ports = ring ? await freePorts(init.nodes) : []
  const addrOf = (i: number): string => `/ip4/127.0.0.1/tcp/${ports[i % init.nodes]}`
  const readies: Promise<void>[] = []
  let stderr = ''
  for (let p = 0; p < init.processes; p++) {
    const mine = ids.slice(p * per, (p + 1) * per)
    if (mine.length === 0) break
    const first = p * per
    const childInit: ChildInit = {
      ids: mine,
      bootstrap: ring ? mine.map((_, j) => Array.from({ length: k }, (_, d) => addrOf(first + j + d + 1))) : bootstrap,
      ...(ring ? { listen: mine.map((_, j) => addrOf(first + j)), pubsub: false as const } : {}),
      room: 'libp2p-room',
      maxPeers: init.maxPeers,
      announceIntervalMs: init.announceIntervalMs ?? 2000,
      antiEntropyMs: init.antiEntropyMs ?? 2000,
    }
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(childInit)], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] })
    children.push(child)
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000)
    })
    readies.push(
      new Promise<void>((resolve, reject) => {
        child.once('exit', (code) => reject(new Error(`room child exited with ${code}: ${stderr}`)))
        const lines = createInterface({ input: child.stdout! })
        lines.on('line', (line) => {
          let e: Event
          try {
            e = JSON.parse(line) as Event
          } catch {
            return
          }
          if (e.t === 'ready') resolve()
          for (const l of [...listeners]) l(e)
        })
      }),
    )
  }
  const send = (o: object): void => {
    for (const c of children) c.stdin!.write(`${JSON.stringify(o)}\n`)
  }
  const close = async (): Promise<void> => {
    const exits = children.map((c) => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => c.once('exit', () => r()))))
    send({ c: 'stop' })
    const killer = setTimeout(() => {
      for (const c of children) c.kill('SIGKILL')
    }, 5000)
    await Promise.all(exits)
    clearTimeout(killer)
    await relay?.close()
  }
  try {
    await Promise.all(readies)
  } catch (err) {
    for (const c of children) c.kill('SIGKILL')
    await relay?.close()
    throw err
  }

  const collect = <T>(want: (e: Event) => T | undefined, n: number, timeoutMs: number, what: string): Promise<T[]> =>
    new Promise((resolve, reject) => {
      const got: T[] = []
      const timer = setTimeout(() => {
        listeners.delete(l)
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${got.length} of ${n})`))
      }, timeoutMs)
      const l = (e: Event): void => {
        const v = want(e)
        if (v === undefined) return
        got.push(v)
        if (got.length < n) return
        clearTimeout(timer)
        listeners.delete(l)
        resolve(got)
      }
      listeners.add(l)
    })

  const state = async (): Promise<NodeState[]> => {
    const parts = collect((e) => (e.t === 'state' ? (e.nodes as NodeState[]) : undefined), children.length, 10_000, 'state')
    send({ c: 'state' })
    return (await parts).flat()
  }

  let probeNo = 0
  return {
    ids,
    relay,
    state,
    close,
    async writeAll(n, timeoutMs) {
      const at = Date.now() + 200
      const done = collect((e) => (e.t === 'done' ? (e.at as number) : undefined), ids.length, timeoutMs, 'every replica to hold every write')
      send({ c: 'write', n, at, expect: ids.length * n + 1, fields: ids.length })
      const times = await done
      return Math.max(...times) - at
    },
    async probe(writer, timeoutMs) {
      const key = `p${probeNo++}`
      // The writer sees its own write first (a local change event): that is the start.
      const seen = collect((e) => (e.t === 'seen' && e.key === key ? { id: e.id as string, at: e.at as number } : undefined), ids.length, timeoutMs, `probe ${key}`)
      send({ c: 'probe', key, writer })
      const all = await seen
      const t0 = all.find((x) => x.id === writer)!.at
      return all.filter((x) => x.id !== writer).map((x) => x.at - t0).sort((a, b) => a - b)
    },
    async waitPeers(minPeers, timeoutMs) {
      const end = Date.now() + timeoutMs
      for (;;) {
        const s = await state()
        if (s.every((x) => x.peers >= minPeers)) return
        if (Date.now() > end) throw new Error(`peers after ${timeoutMs} ms: ${s.map((x) => `${x.id}:${x.peers}`).join(' ')}`)
        await new Promise((r) => setTimeout(r, 250))
      }
    },
  }
}
