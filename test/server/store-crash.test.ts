/**
 * An acknowledged upload survives a crash of the server: `syncmesh serve --store` in a child process is killed with
 * SIGKILL while a replica uploads a stream of writes; restarted on the same store, it serves every write whose
 * upload had been acknowledged (STORED: the server answers only once the blob is durable).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { compareTimestamps, createReplica, storeSync, type Replica, type Timestamp } from '../../src/index.js'
import type { ReplicaImpl } from '../../src/replica.js'
import { relayTransport } from '../../transports/relay/index.js'
import { mulberry32 } from '../prng.js'
import { available as redisAvailable, RedisServer } from '../storage/redis-server.js'
import { killChildren, sigkill, spawnServe, until } from './helpers.js'

const SEED = Number(process.env.SEED ?? 77)
const dirs: string[] = []
const replicas: Replica[] = []
afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail') console.error(`store-crash.test.ts failed with SEED=${SEED}`)
  for (const r of replicas.splice(0)) await r.close().catch(() => {})
  await killChildren()
})
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

const turn = (): Promise<void> => new Promise((r) => setImmediate(r))
/** Writes made at most while waiting for the uploads to be acknowledged. */
const MAX_WRITES = 20_000

async function crashMidUpload(store: string, secret?: string): Promise<void> {
  const rnd = mulberry32(SEED)
  const first = await spawnServe(['--store', store, '--quiet'])
  const a = await createReplica({ app: 'crash', room: 'r', peerId: 'a', secret, storeSync: storeSync(), transports: [relayTransport({ url: first.url, store: true, minReconnectDelayMs: 50 })] })
  replicas.push(a)
  const sync = (a as ReplicaImpl).storeSyncs[0]!
  const writer = (a as ReplicaImpl).writerId
  const stamps: Timestamp[] = []
  let acked: Timestamp | undefined
  // Writes go on until 25 uploads were acknowledged (however slowly a loaded machine lets the server answer), then
  // the server dies mid-upload while 100 more writes come.
  let last = MAX_WRITES
  for (let i = 0; i < last; i++) {
    await a.collection('log').put({ id: `w${i}`, v: Math.floor(rnd() * 1e9) })
    stamps.push((a as ReplicaImpl).store.versionVector().get(writer)!)
    if (i % 3 === 0) await turn()
    if (acked === undefined && sync.stats.uploaded >= 25) {
      acked = (sync as unknown as { state: { uploaded: Timestamp } }).state.uploaded
      await sigkill(first.child)
      last = i + 100
    }
  }
  expect(acked, `the server was not killed: fewer than 25 uploads acknowledged in ${MAX_WRITES} writes`).toBeDefined()
  const mustHave = stamps.map((ts, i) => (compareTimestamps(ts, acked!) <= 0 ? i : -1)).filter((i) => i >= 0)
  expect(mustHave.length).toBeGreaterThan(0)
  expect(mustHave.length).toBeLessThan(stamps.length)
  await a.close()
  replicas.splice(0)

  const second = await spawnServe(['--store', store, '--quiet'])
  const b = await createReplica({ app: 'crash', room: 'r', peerId: 'b', secret, storeSync: storeSync(), transports: [relayTransport({ url: second.url, store: true })] })
  replicas.push(b)
  await until(() => mustHave.every((i) => b.collection('log').get(`w${i}`) !== undefined), 15_000, `the ${mustHave.length} acknowledged writes`)
}

describe('the server killed with SIGKILL mid-upload loses no acknowledged upload', () => {
  it('LevelDB store, encrypted room', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'syncmesh-crash-'))
    dirs.push(dir)
    await crashMidUpload(join(dir, 'store'), 'crash secret')
  })

  it.runIf(redisAvailable)('Redis store (appendfsync always), plain room', async () => {
    const redis = new RedisServer()
    try {
      await redis.start()
      await crashMidUpload(redis.url)
    } finally {
      await redis.dispose()
    }
  })
})
