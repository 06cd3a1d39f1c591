/**
 * Two relay servers (in this process) sharing rooms through a real redis-server: every member of a room must hear of
 * every remote peer, whichever way its server learned of it. Server B talks to Redis through a proxy that holds back
 * what B sends, so a peer's claim on B is in Redis well before B's UP for it: a peer joining server A in that window
 * finds the remote peer in its claim's snapshot, and the members already on A must be told of it then — the UP that
 * comes later is one A already knows.
 */
import net from 'node:net'
import { createClient } from 'redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type SyncmeshServer } from '../../src/server/index.js'
import { relayTransport, type RelayTransport } from '../../transports/relay/index.js'
import { available as redisAvailable, RedisServer, sleep } from '../storage/redis-server.js'
import { lagProxy, until } from './helpers.js'

const LAG_MS = 200

/** A relay member of `room` on `url`, with the peers it has heard of. */
async function member(url: string, room: string, peerId: string): Promise<{ t: RelayTransport; peers: Set<string> }> {
  const t = relayTransport({ url })
  const peers = new Set<string>()
  t.on('peer:up', (p) => peers.add(p))
  t.on('peer:down', (p) => peers.delete(p))
  await t.start({ room, peerId })
  return { t, peers }
}

describe.runIf(redisAvailable)('relay servers sharing rooms through Redis', () => {
  const redis = new RedisServer()
  /** Waits until `peer` holds a claim in Redis (peer ids are unique across the test's rooms). */
  const claimed = async (peer: string): Promise<void> => {
    const client = createClient({ url: redis.url })
    await client.connect()
    try {
      const end = Date.now() + 5000
      for (;;) {
        const keys = await client.keys('syncmesh:cluster:m:*')
        for (const key of keys) if ((await client.hGet(key, peer)) != null) return
        if (Date.now() > end) throw new Error(`${peer} never claimed`)
        await sleep(2)
      }
    } finally {
      await client.close()
    }
  }
  let proxy: net.Server
  let a: SyncmeshServer
  let b: SyncmeshServer
  const transports: RelayTransport[] = []
  beforeAll(async () => {
    await redis.start()
    proxy = await lagProxy(redis.port, LAG_MS, 'requests')
    a = await startServer({ port: 0, redis: redis.url, log: () => {} })
    b = await startServer({ port: 0, redis: `redis://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`, log: () => {} })
  }, 30_000)
  afterAll(async () => {
    for (const t of transports) await t.stop()
    await Promise.all([a?.close(), b?.close()])
    proxy?.close()
    await redis.dispose()
  })

  it('a member already in the room hears of a remote peer that a later member found in its claim snapshot', async () => {
    for (let round = 0; round < 3; round++) {
      const room = `late-up-${round}`
      const a1 = await member(a.url, room, `a1-${round}`)
      transports.push(a1.t)
      // r joins B: its claim reaches Redis after one lag, B's UP for it after another.
      const joining = member(b.url, room, `r-${round}`)
      await claimed(`r-${round}`)
      // In the window between r's claim and B's UP: a2's claim on A sees r.
      const a2 = await member(a.url, room, `a2-${round}`)
      transports.push(a2.t, (await joining).t)
      const heard = (): string => `round ${round}: a1 heard of [${[...a1.peers]}], a2 of [${[...a2.peers]}]`
      await until(() => a2.peers.has(`r-${round}`) && a1.peers.has(`r-${round}`), 3000, heard)
      expect(a1.peers, heard()).toEqual(new Set([`a2-${round}`, `r-${round}`]))
    }
  }, 60_000)
})
