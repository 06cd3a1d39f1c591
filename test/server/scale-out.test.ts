/**
 * Scale-out: three `syncmesh serve --redis … --store redis://…` processes and a real redis-server on 127.0.0.1.
 * Peers spread over the processes converge; one process is killed with SIGKILL, its peers fail over to the next
 * server of their list and everyone converges, with no acknowledged write lost.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createReplica, storeSync, type Replica } from '../../src/index.js'
import type { ReplicaImpl } from '../../src/replica.js'
import { relayTransport, type RelayTransport } from '../../transports/relay/index.js'
import { mulberry32 } from '../prng.js'
import { available as redisAvailable, RedisServer } from '../storage/redis-server.js'
import { killChildren, sigkill, spawnServe, type ServeProcess, until } from './helpers.js'

const SEED = Number(process.env.SEED ?? 4242)
const replicas: Replica[] = []
const links = new Map<Replica, RelayTransport>()
afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail') console.error(`scale-out.test.ts failed with SEED=${SEED}`)
  for (const r of replicas.splice(0)) await r.close().catch(() => {})
})

const turn = (): Promise<void> => new Promise((r) => setImmediate(r))

describe.runIf(redisAvailable)('three server processes share rooms through Redis', () => {
  const redis = new RedisServer()
  let servers: ServeProcess[] = []
  beforeAll(async () => {
    await redis.start()
    servers = await Promise.all([0, 1, 2].map(() => spawnServe(['--redis', redis.url, '--store', redis.url, '--quiet'])))
  }, 60_000)
  afterAll(async () => {
    await killChildren()
    await redis.dispose()
  })

  /** Replica i connects to server i % 3 first, then the others in order. */
  async function spread(n: number, room: string): Promise<Replica[]> {
    const urls = servers.map((s) => s.url)
    return Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const list = [...urls.slice(i % 3), ...urls.slice(0, i % 3)]
        const link = relayTransport({ url: list, store: true, minReconnectDelayMs: 50, maxReconnectDelayMs: 500 })
        const r = await createReplica({ app: 'scale', room, peerId: `p${i}`, antiEntropyMs: 300, storeSync: storeSync(), transports: [link] })
        replicas.push(r)
        links.set(r, link)
        return r
      }),
    )
  }

  const digest = (r: Replica): string => (r as ReplicaImpl).store.digest()

  it('peers spread over the processes converge; a SIGKILLed process’s peers fail over and nothing acknowledged is lost', async () => {
    const rnd = mulberry32(SEED)
    const rs = await spread(6, 'shared')
    const seen = (): string => rs.map((r, i) => `p${i} sees ${r.status().peers.map((p) => p.id).join(',') || 'nobody'}`).join('; ')
    await until(() => rs.every((r) => r.status().peers.length === 5), 30_000, () => `every replica to see the 5 others across the 3 processes (${seen()})`)
    const acked: string[] = []
    const write = async (r: Replica, id: string): Promise<void> => {
      await r.collection('items').put({ id, v: Math.floor(rnd() * 1e9) })
      acked.push(id)
    }
    await Promise.all(rs.map(async (r, i) => {
      for (let k = 0; k < 20; k++) {
        await write(r, `before-${i}-${k}`)
        await turn()
      }
    }))
    await until(() => rs.every((r) => digest(r) === digest(rs[0]!)) && rs[0]!.collection('items').all().length === 120, 15_000, 'convergence over 3 processes')

    // Kill server 0 while everyone keeps writing; p0 and p3 were on it.
    const writing = Promise.all(rs.map(async (r, i) => {
      for (let k = 0; k < 30; k++) {
        await write(r, `during-${i}-${k}`)
        await new Promise((res) => setTimeout(res, 10))
      }
    }))
    await new Promise((res) => setTimeout(res, 80))
    await sigkill(servers[0]!.child)
    await writing
    const moved = [rs[0]!, rs[3]!].map((r) => links.get(r)!)
    await until(() => moved.every((l) => l.connected && l.url !== servers[0]!.url), 20_000, 'p0 and p3 to fail over to another process')
    await until(() => rs.every((r) => r.status().peers.length === 5), 20_000, 'the failed-over peers to rejoin through the other processes')
    await until(() => rs.every((r) => digest(r) === digest(rs[0]!)), 20_000, 'convergence after the failover')
    for (const r of rs) for (const id of acked) expect(r.collection('items').get(id), id).toBeDefined()
    expect(acked.length).toBe(300)

    // A newcomer, alone on server 2 after everyone left, still gets it all from the shared Redis store.
    await Promise.all(rs.map((r) => r.close()))
    replicas.splice(0)
    const late = await createReplica({ app: 'scale', room: 'shared', peerId: 'late', storeSync: storeSync(), transports: [relayTransport({ url: servers[2]!.url, store: true })] })
    replicas.push(late)
    await until(() => late.collection('items').all().length === 300, 15_000, 'the newcomer to catch up from the store')
  }, 150_000)
})
