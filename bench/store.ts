/**
 * Store-and-forward and scale-out (`tsx bench/store.ts`, part of `npm run bench`), everything on 127.0.0.1:
 *
 * 1. Catch-up of a peer that was offline during `--writes` writes (default 10 000: updates of a random field of a
 *    random one of 1 000 records, seeded): time from going online until it holds the writer's state, and bytes it
 *    received on its WebSocket — through the store (`serve --store <LevelDB>`, the writer offline by then) against a
 *    live writer (no store: delta sync by version vectors through the relay). Plain and encrypted rooms.
 * 2. Stored bytes of the room right after that (automatic compaction) and after one more compaction, relative to the
 *    room's state (`encodeState()` bytes); target ≤ 1.5× after compaction.
 * 3. Relay write → visible on another replica, p50 / p99 over `--pings` sequential writes (default 500), with one
 *    `syncmesh serve` process, and with three sharing rooms through a local redis-server (writer and reader on
 *    different processes).
 *   options: --writes N --pings N --seed N
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { WebSocket } from 'ws'
import { createReplica, storeSync, type Replica } from '../src/index.js'
import type { ReplicaImpl } from '../src/replica.js'
import { startServer } from '../src/server/index.js'
import { relayTransport } from '../transports/relay/index.js'
import { mulberry32 } from '../test/prng.js'
import { killChildren, sigkill, spawnServe } from '../test/server/helpers.js'
import { spawn } from 'node:child_process'
import net from 'node:net'
import { arg, printAndSave, runBench, summary } from './stats.js'

const WRITES = Number(arg('writes', '10000'))
const PINGS = Number(arg('pings', '500'))
const SEED = Number(arg('seed', '1'))
const RECORDS = 1000
const FIELDS = ['title', 'done', 'n', 'note', 'owner']

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const turn = (): Promise<void> => new Promise((r) => setImmediate(r))
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(2)
  }
}
const digest = (r: Replica): string => (r as ReplicaImpl).store.digest()

/** A throwaway redis-server on 127.0.0.1 (test/storage/redis-server.ts needs vitest); resolves with its URL. */
async function startRedis(): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await new Promise<number>((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(p))
    })
  })
  const dir = mkdtempSync(join(tmpdir(), 'syncmesh-bench-redis-'))
  const proc = spawn(process.env.REDIS_SERVER ?? '/usr/bin/redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' })
  const ok = (): Promise<boolean> =>
    new Promise((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port }, () => sock.write('PING\r\n'))
      sock.on('data', (d) => {
        sock.destroy()
        resolve(d.toString().startsWith('+PONG'))
      })
      sock.on('error', () => resolve(false))
    })
  const end = Date.now() + 10_000
  while (!(await ok())) {
    if (Date.now() > end) throw new Error('redis-server did not start')
    await sleep(20)
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      const exited = new Promise((r) => proc.once('exit', r))
      proc.kill('SIGTERM')
      await exited
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** A `ws` WebSocket that counts the bytes it receives into `counter.bytes`. */
function countingWebSocket(counter: { bytes: number }): typeof WebSocket {
  return class extends WebSocket {
    constructor(url: string) {
      super(url)
      this.on('message', (d: Buffer) => (counter.bytes += d.byteLength))
    }
  } as typeof WebSocket
}

interface CatchUp {
  mode: 'store' | 'live'
  secret: boolean
  ms: number
  bytes: number
  stateBytes: number
  roomBytes?: number
  roomBytesCompacted?: number
}

async function catchUp(mode: 'store' | 'live', secret: string | undefined): Promise<CatchUp> {
  const dir = mkdtempSync(join(tmpdir(), 'syncmesh-bench-store-'))
  const server = await startServer({ port: 0, log: false, store: join(dir, 'store'), ratePerSecond: 10_000 })
  const rnd = mulberry32(SEED)
  const counter = { bytes: 0 }
  const common = { app: 'bench-store', room: `${mode}-${secret ? 'sealed' : 'plain'}`, secret, antiEntropyMs: 1000, storeSync: storeSync() }
  const a = await createReplica({ ...common, peerId: 'writer', transports: [relayTransport({ url: server.url, store: mode === 'store' })] })
  const b = await createReplica({ ...common, peerId: 'reader', transports: [relayTransport({ url: server.url, store: mode === 'store', WebSocket: countingWebSocket(counter) })] })
  try {
    for (let i = 0; i < RECORDS; i++) await a.collection('todos').put({ id: `t${i}`, title: `todo ${i}`, done: false, n: i, note: 'x', owner: 'a' })
    await until(() => digest(b) === digest(a), 30_000, 'the initial state')
    await b.setOnline(false)
    for (let i = 0; i < WRITES; i++) {
      const field = FIELDS[Math.floor(rnd() * FIELDS.length)]!
      await a.collection('todos').update(`t${Math.floor(rnd() * RECORDS)}`, { [field]: field === 'done' ? rnd() < 0.5 : field === 'n' ? Math.floor(rnd() * 1e6) : `v${Math.floor(rnd() * 1e9)}` })
      if (i % 4 === 0) await turn()
    }
    const want = digest(a)
    if (mode === 'store') {
      await until(() => (a as ReplicaImpl).storeSyncs[0]!.uploadedAll, 60_000, 'the uploads')
      await a.close() // the writer is gone: only the store can help
    }
    counter.bytes = 0
    const t0 = performance.now()
    await b.setOnline(true)
    await until(() => digest(b) === want, 120_000, 'the catch-up')
    const ms = performance.now() - t0
    const bytes = counter.bytes
    const stateBytes = (b as ReplicaImpl).store.encodeState().byteLength
    const out: CatchUp = { mode, secret: secret !== undefined, ms, bytes, stateBytes }
    if (mode === 'store') {
      const sync = (b as ReplicaImpl).storeSyncs[0]!
      await sync.idle()
      out.roomBytes = sync.stats.roomBytes
      await sync.compact()
      out.roomBytesCompacted = sync.stats.roomBytes
    }
    return out
  } finally {
    await Promise.allSettled([a.close(), b.close()])
    await server.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Write → visible from a replica on `urls[0]` to one on `urls[1]`, `PINGS` sequential writes. */
async function latency(writerUrl: string, readerUrl: string): Promise<ReturnType<typeof summary>> {
  const room = { app: 'bench-store', room: `ping-${writerUrl}-${readerUrl}`, antiEntropyMs: 1000 }
  const a = await createReplica({ ...room, peerId: 'w', transports: [relayTransport({ url: writerUrl })] })
  const b = await createReplica({ ...room, peerId: 'r', transports: [relayTransport({ url: readerUrl })] })
  try {
    await until(() => a.status().peers.length === 1 && b.status().peers.length === 1, 20_000, 'the two replicas to meet')
    let seen = -1
    b.collection('ping').subscribe((changes) => {
      for (const c of changes) if (c.record) seen = Math.max(seen, Number(c.record["n"]))
    })
    const samples: number[] = []
    for (let i = 0; i < PINGS + 50; i++) {
      const t0 = performance.now()
      void a.collection('ping').put({ id: 'p', n: i })
      await until(() => seen >= i, 10_000, `write ${i}`)
      if (i >= 50) samples.push(performance.now() - t0)
    }
    return summary(samples)
  } finally {
    await Promise.allSettled([a.close(), b.close()])
  }
}

async function main(): Promise<void> {
  const results: CatchUp[] = []
  for (const secret of [undefined, 'bench secret']) {
    for (const mode of ['store', 'live'] as const) {
      const r = await catchUp(mode, secret)
      results.push(r)
      console.error(`catch-up ${mode} ${secret ? 'encrypted' : 'plain'}: ${r.ms.toFixed(0)} ms, ${r.bytes} B`)
    }
  }
  // Relay latency: one process; three processes over Redis (writer and reader on different processes).
  const one = await spawnServe(['--quiet'])
  const single = await latency(one.url, one.url)
  await sigkill(one.child)
  const redis = await startRedis()
  let three
  try {
    const servers = await Promise.all([0, 1, 2].map(() => spawnServe(['--redis', redis.url, '--quiet'])))
    three = await latency(servers[0]!.url, servers[1]!.url)
  } finally {
    await killChildren()
    await redis.stop()
  }
  const kb = (n: number): string => `${(n / 1024).toFixed(1)} KiB`
  const rows = results.map((r) => {
    const stored = r.roomBytes === undefined ? '—' : `${kb(r.roomBytes)} (${(r.roomBytes / r.stateBytes).toFixed(2)}×) → ${kb(r.roomBytesCompacted!)} (${(r.roomBytesCompacted! / r.stateBytes).toFixed(2)}×)`
    return `| ${r.mode === 'store' ? 'through the store (writer offline)' : 'from the live writer (no store)'} | ${r.secret ? 'encrypted' : 'plain'} | ${r.ms.toFixed(0)} ms | ${kb(r.bytes)} | ${kb(r.stateBytes)} | ${stored} |`
  })
  const ms = (x: number): string => `${x.toFixed(2)} ms`
  const table = [
    `| catch-up after ${WRITES} writes to ${RECORDS} records | room | time | bytes received | state | stored bytes: after auto-compaction → after one more (× state; target ≤ 1.5×) |`,
    '| --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    '| relay write → visible, sequential writes | p50 | p99 | max |',
    '| --- | --- | --- | --- |',
    `| one \`syncmesh serve\` process | ${ms(single.p50)} | ${ms(single.p99)} | ${ms(single.max)} |`,
    `| three processes over Redis, writer and reader on different ones | ${ms(three.p50)} | ${ms(three.p99)} | ${ms(three.max)} |`,
  ].join('\n')
  printAndSave(`Store-and-forward and scale-out (seed ${SEED}, ${PINGS} pings)`, table, '.bench-results/store.json', { writes: WRITES, records: RECORDS, seed: SEED, catchUp: results, latency: { one: single, three } })
}

runBench(main)
