/**
 * Replicas that share one store (tabs of one origin on one IndexedDB database), in Node: fake-indexeddb stands for
 * the database, this process's locks for Web Locks and Node's BroadcastChannel for the browser's. The same checks
 * run in a real Chromium in test/browser/tabs.browser.test.ts.
 */
import { IDBFactory, IDBKeyRange } from 'fake-indexeddb'
import { afterEach, describe, expect, it } from 'vitest'
import { createReplica, type Replica } from '../../src/index.js'
import { indexedDBStorage } from '../../src/storage/indexeddb.js'
import { MemoryNetwork } from '../../transports/memory.js'
import { until } from './helpers.js'

const open: Replica[] = []
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((r) => r.close()))
})

let dbs = 0
/** A fresh fake "browser profile": one IndexedDB implementation and a database name in it. */
function profile(): { tab(init?: Parameters<typeof createReplica>[0]): Promise<Replica> } {
  const factory = new IDBFactory()
  const name = `app-${++dbs}`
  return {
    async tab(init = {}) {
      const r = await createReplica({ storage: indexedDBStorage(name, { indexedDB: factory, IDBKeyRange }), antiEntropyMs: 200, ...init })
      open.push(r)
      return r
    },
  }
}

const ids = (r: Replica): string[] => r.collection('todos').all().map((t) => t.id).sort()

describe('replicas on one IndexedDB database (tabs of one origin)', () => {
  it('two tabs writing at once lose no acknowledged write, and each sees the other’s writes without a network', async () => {
    const browser = profile()
    const a = await browser.tab()
    const b = await browser.tab()
    expect(a.peerId).toBe(b.peerId) // one profile, one peer
    const writes: Promise<void>[] = []
    for (let i = 0; i < 300; i++) {
      writes.push(a.collection('todos').put({ id: `a${i}`, n: i }))
      writes.push(b.collection('todos').put({ id: `b${i}`, n: i }))
    }
    await Promise.all(writes)
    await until(() => ids(a).length === 600 && ids(b).length === 600, 5000, 'each tab to see all 600 records')
    await Promise.all([a.close(), b.close()])
    const c = await browser.tab()
    expect(ids(c)).toHaveLength(600)
  })

  it('never gives two open tabs the same writer origin, and reuses slots of closed tabs', async () => {
    const browser = profile()
    const tabs = [await browser.tab(), await browser.tab(), await browser.tab()]
    await Promise.all(tabs.map((t, i) => t.collection('todos').put({ id: `t${i}` })))
    const writers = new Set(tabs.map((t) => t.collection('todos').get(`t${tabs.indexOf(t)}`) && (t as unknown as { writerId: string }).writerId))
    expect(writers.size).toBe(3)
    await tabs[1]!.close()
    await tabs[2]!.close()
    const again = await browser.tab()
    expect((again as unknown as { writerId: string }).writerId).toBe((tabs[1] as unknown as { writerId: string }).writerId)
    await until(() => ids(again).length === 3, 5000, 'the new tab to hold all three records')
    // The version vector names the slots ever open at once (3), not every tab ever opened.
    const vv = (again as unknown as { store: { versionVector(): Map<string, unknown> } }).store.versionVector()
    expect(vv.size).toBe(3)
  })

  it('a closed tab’s slot is taken over by the next opener: its keys go, its data stay', async () => {
    const browser = profile()
    const a = await browser.tab()
    const b = await browser.tab()
    await b.collection('todos').put({ id: 'from-b' })
    await b.close()
    await a.close()
    const c = await browser.tab() // takes slot 0 and absorbs slot 1 (nobody holds it)
    const d = await browser.tab() // takes slot 1: starts from the absorbed state, writes as slot 1 again
    expect(ids(c)).toEqual(['from-b'])
    expect(ids(d)).toEqual(['from-b'])
    await d.collection('todos').put({ id: 'from-d' })
    await until(() => ids(c).length === 2, 5000, 'c to see d’s write')
    await Promise.all([c.close(), d.close()])
    const e = await browser.tab()
    expect(ids(e)).toEqual(['from-b', 'from-d'])
  })

  it('appears in a room as one peer; writes in any tab reach the network and network writes reach every tab', async () => {
    const net = new MemoryNetwork({ seed: 3 })
    const browser = profile()
    const a = await browser.tab({ transports: [net.transport()], room: 'r' })
    const b = await browser.tab({ transports: [net.transport()], room: 'r' })
    const remote = await createReplica({ peerId: 'remote', transports: [net.transport()], room: 'r', antiEntropyMs: 200 })
    open.push(remote)
    await until(() => remote.status().peers.length === 1 && a.status().peers.length === 1, 5000, 'the profile and the remote to meet')
    expect(remote.status().peers.map((p) => p.id)).toEqual([a.peerId])
    expect([a.status().leader, b.status().leader].sort()).toEqual([false, true])
    await until(() => b.status().peers.length === 1, 5000, 'the follower tab to hear the leader’s status')
    const follower = a.status().leader ? b : a
    await follower.collection('todos').put({ id: 'typed-in-the-follower' })
    await follower.sync({ timeoutMs: 5000 })
    expect(ids(remote)).toEqual(['typed-in-the-follower'])
    await remote.collection('todos').put({ id: 'from-remote' })
    await until(() => ids(a).length === 2 && ids(b).length === 2, 5000, 'both tabs to get the remote write')
  })

  it('hands the network over when the leader tab closes, and nothing is lost', async () => {
    const net = new MemoryNetwork({ seed: 4 })
    const browser = profile()
    const a = await browser.tab({ transports: [net.transport()], room: 'r' })
    await until(() => a.status().leader, 5000, 'the first tab to lead')
    const b = await browser.tab({ transports: [net.transport()], room: 'r' })
    const remote = await createReplica({ peerId: 'remote', transports: [net.transport()], room: 'r', antiEntropyMs: 200 })
    open.push(remote)
    await until(() => a.status().peers.length === 1, 5000, 'the leader to meet the remote')
    expect(b.status().leader).toBe(false)
    await b.collection('todos').put({ id: 'b1' })
    await a.collection('todos').put({ id: 'a1' })
    await a.close()
    await until(() => b.status().leader && b.status().peers.length === 1, 5000, 'the second tab to take over the network')
    await b.collection('todos').put({ id: 'b2' })
    await remote.collection('todos').put({ id: 'r1' })
    await b.sync({ timeoutMs: 5000 })
    await until(() => ids(b).length === 4 && ids(remote).length === 4, 5000, 'both to hold all four')
    await b.close()
    const c = await browser.tab()
    expect(ids(c)).toEqual(['a1', 'b1', 'b2', 'r1'])
  })

  it('setOnline(false) in any tab takes the profile offline; edits made offline converge once back online', async () => {
    const net = new MemoryNetwork({ seed: 5 })
    const browser = profile()
    const a = await browser.tab({ transports: [net.transport()], room: 'r' })
    await until(() => a.status().leader, 5000, 'the first tab to lead')
    const b = await browser.tab({ transports: [net.transport()], room: 'r' })
    const remote = await createReplica({ peerId: 'remote', transports: [net.transport()], room: 'r', antiEntropyMs: 200 })
    open.push(remote)
    await until(() => remote.status().peers.length === 1, 5000, 'the profile to meet the remote')
    await b.setOnline(false) // the follower asks the leader
    await until(() => remote.status().peers.length === 0 && b.status().online === false, 5000, 'the profile to go offline')
    await b.collection('todos').put({ id: 'offline-edit' })
    await remote.collection('todos').put({ id: 'remote-edit' })
    await new Promise((r) => setTimeout(r, 100))
    expect(ids(remote)).toEqual(['remote-edit'])
    expect(ids(a)).toEqual(['offline-edit']) // tabs still sync with each other while offline
    await a.setOnline(true)
    await until(() => ids(remote).length === 2 && ids(b).length === 2, 5000, 'everyone to converge once online')
  })
})
