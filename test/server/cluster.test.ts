/**
 * The cluster layer (src/server/cluster.ts) against a real redis-server. One node's command connection is slow (its
 * replies come through a proxy that holds them back), its subscriber connection is not: another node's UP or DOWN
 * reaches it while its own join is still waiting for the claim's answer. Whatever the interleaving, a joining node
 * must end up with the room's true members — from what `join` returns or from an UP/DOWN after it.
 */
import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Cluster, type ClusterEvents, startCluster } from '../../src/server/cluster.js'
import { available as redisAvailable, RedisServer, sleep } from '../storage/redis-server.js'
import { lagProxy, until } from './helpers.js'

/** One node as the relay uses it: members known per room, from `join`'s answer and the UP/DOWN after it. */
class Node {
  cluster!: Cluster
  readonly known = new Map<string, Map<string, string>>()
  readonly errors: string[] = []

  async start(url: string): Promise<void> {
    const events: ClusterEvents = {
      // Like the relay, a node with no room yet has nowhere to note an UP/DOWN.
      up: (topic, peer, node) => void this.known.get(topic)?.set(peer, node),
      down: (topic, peer, node) => {
        if (this.known.get(topic)?.get(peer) === node) this.known.get(topic)!.delete(peer)
      },
      frame: () => {},
      error: (m) => this.errors.push(m),
    }
    this.cluster = await startCluster({ url, namespace: 'test:cluster' }, events)
  }

  /** Joins as the relay does: the answer becomes the room's remote members, then UP is announced. */
  async join(topic: string, peer: string): Promise<void> {
    const remote = await this.cluster.join(topic, peer)
    if (remote === undefined) throw new Error(`${peer}: id refused`)
    this.known.set(topic, remote)
    this.cluster.announce(topic, peer)
  }

  members(topic: string): string {
    return [...(this.known.get(topic)?.keys() ?? [])].sort().join(',')
  }
}


const LAG_MS = 150

describe.runIf(redisAvailable)('cluster membership over Redis', () => {
  const redis = new RedisServer()
  const slow = new Node()
  const b = new Node()
  let proxy: net.Server
  beforeAll(async () => {
    await redis.start()
    // Only the node's command connection (the first through the proxy, opened before its subscriber) is slow.
    proxy = await lagProxy(redis.port, LAG_MS, 'replies', (n) => n === 0)
    await slow.start(`redis://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`)
    await b.start(redis.url)
  }, 30_000)
  afterAll(async () => {
    for (const n of [slow, b]) await n.cluster?.close()
    proxy?.close()
    await redis.dispose()
  })

  it('a node learns of a peer whose UP arrives while its own claim is still on the way back', async () => {
    for (let round = 0; round < 3; round++) {
      const topic = `up-${round}`
      // b claims after the slow node's claim ran (so it is not in that snapshot) and announces long before the
      // slow node hears its claim's answer.
      const joining = slow.join(topic, 'pa')
      await sleep(LAG_MS / 3)
      await b.join(topic, 'pb')
      await joining
      await until(() => slow.members(topic) === 'pb' && b.members(topic) === 'pa', 2000, () => `round ${round}: slow knows [${slow.members(topic)}], b knows [${b.members(topic)}]`)
    }
  }, 30_000)

  it('a peer that leaves while a node is joining is not returned as present', async () => {
    for (let round = 0; round < 3; round++) {
      const topic = `down-${round}`
      await b.join(topic, 'pb')
      const joining = slow.join(topic, 'pa')
      await sleep(LAG_MS / 3)
      b.cluster.leave(topic, 'pb', true)
      await joining
      await until(() => slow.members(topic) === '', 2000, () => `round ${round}: slow still lists [${slow.members(topic)}], which left`)
    }
  }, 30_000)

  it('reports no errors', () => {
    expect(slow.errors.concat(b.errors)).toEqual([])
  })
})
