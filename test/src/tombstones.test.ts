/**
 * Tombstone collection between replicas: deletes and field removals go once every known peer has acknowledged
 * them; a peer silent past the horizon stops holding collection back, and when it returns it rebases instead of
 * bringing deleted records back; known peers and the frontier survive a restart.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createReplica, MemoryStorage, type Replica, type ReplicaInit } from '../../src/index.js'
import type { ReplicaImpl } from '../../src/replica.js'
import { MemoryNetwork } from '../../transports/memory.js'
import { reopen, until } from './helpers.js'

const DAY = 24 * 3_600_000
const open: Replica[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()))
})

let now = 1_700_000_000_000
const clock = { now: () => now }
const net = new MemoryNetwork({ seed: 11 })

async function replica(peerId: string, init: Partial<ReplicaInit> = {}): Promise<Replica> {
  const r = await createReplica({ peerId, clock, transports: [net.transport()], antiEntropyMs: 0, room: `gc-${expect.getState().currentTestName}`, ...init })
  open.push(r)
  return r
}
const engine = (r: Replica) => (r as ReplicaImpl).engine
const store = (r: Replica) => (r as ReplicaImpl).store
const floors = (r: Replica): number => store(r).count('todos').deleted
async function settle(...rs: Replica[]): Promise<void> {
  for (let i = 0; i < 3; i++) await Promise.all(rs.map((r) => r.sync({ timeoutMs: 5000 })))
}

describe('tombstone collection', () => {
  it('drops deletes once every peer acknowledged them; the visible state and digests stay equal', async () => {
    const [a, b, c] = [await replica('a'), await replica('b'), await replica('c')]
    await until(() => a.status().peers.length === 2 && b.status().peers.length === 2, 2000, 'the mesh')
    const todos = a.collection('todos')
    for (let i = 0; i < 50; i++) await todos.put({ id: `t${i}`, title: `todo ${i}` })
    now += 10
    for (let i = 0; i < 40; i++) await todos.delete(`t${i}`)
    await b.collection('todos').update('t45', { title: undefined }) // a field removal
    await settle(a, b, c)
    expect(floors(a)).toBe(40)
    for (const r of [a, b, c]) expect(engine(r).collect()).toBeGreaterThan(0)
    await settle(a, b, c)
    for (const r of [a, b, c]) expect(floors(r)).toBe(0)
    expect(new Set([a, b, c].map((r) => store(r).digest())).size).toBe(1)
    expect(b.collection('todos').all()).toHaveLength(10)
    expect(b.collection('todos').get('t45')).toEqual({ id: 't45' })
    // Writes go on as before, deletes included.
    await c.collection('todos').delete('t49')
    await settle(a, b, c)
    expect(a.collection('todos').get('t49')).toBeUndefined()
    expect(a.inspect().events.some((e) => e.type === 'collect')).toBe(true)
  })

  it('waits for a known peer that is away, until the horizon; the peer then rebases: nothing deleted comes back, its later writes stay', async () => {
    const storageC = new MemoryStorage()
    const a = await replica('a', { tombstoneHorizonMs: 30 * DAY })
    const b = await replica('b', { tombstoneHorizonMs: 30 * DAY })
    let c = await replica('c', { storage: storageC })
    await until(() => a.status().peers.length === 2, 2000, 'the mesh')
    const todos = a.collection('todos')
    for (let i = 0; i < 10; i++) await todos.put({ id: `t${i}`, title: `todo ${i}`, n: i })
    await settle(a, b, c)
    await c.close() // c goes away holding every record
    open.splice(open.indexOf(c), 1)
    now += DAY
    await todos.delete('t0')
    await todos.delete('t1')
    await settle(a, b)
    expect(engine(a).collect()).toBe(0) // c is known and has not acknowledged the deletes
    now += 31 * DAY // c is past the horizon
    expect(engine(a).collect()).toBe(2)
    expect(engine(b).collect()).toBe(2)
    expect(store(a).gcFrontier().vector.size).toBeGreaterThan(0)

    // c comes back with an edit to a deleted record made before it heard of the delete (clock skew: an older
    // stamp), and a record written after it.
    const cClock = { now: () => now - 40 * DAY }
    c = await createReplica({ peerId: 'c', storage: reopen(storageC), clock: cClock, transports: [], antiEntropyMs: 0 })
    await c.collection('todos').update('t1', { title: 'edited while away' })
    await c.close()
    c = await replica('c', { storage: reopen(storageC) }) // its clock is right again
    await c.collection('todos').put({ id: 'new', title: 'written on return' })
    await until(() => c.status().peers.length === 2, 2000, 'c to meet the others')
    await until(() => c.inspect().events.some((e) => e.type === 'rebase'), 5000, 'c to rebase')
    await settle(a, b, c)
    for (const r of [a, b, c]) {
      const ids = r.collection('todos').all().map((x) => x.id)
      expect(ids).not.toContain('t0')
      expect(ids).not.toContain('t1')
      expect(r.collection('todos').get('new')).toEqual({ id: 'new', title: 'written on return' })
    }
    expect(new Set([a, b, c].map((r) => store(r).digest())).size).toBe(1)
  })

  it('remembers known peers and the frontier across a restart', async () => {
    const storageA = new MemoryStorage()
    let a = await replica('a', { storage: storageA })
    const b = await replica('b')
    await until(() => a.status().peers.length === 1, 2000, 'a to meet b')
    await a.collection('todos').put({ id: 'x', v: 1 })
    await settle(a, b)
    await a.close()
    open.splice(open.indexOf(a), 1)
    await b.close()
    open.splice(open.indexOf(b), 1)
    a = await replica('a', { storage: reopen(storageA) })
    await a.collection('todos').delete('x')
    expect(engine(a).collect()).toBe(0) // b is remembered: it has not seen the delete
    expect([...engine(a).knownPeers().keys()]).toEqual(['b'])
    now += 31 * DAY
    expect(engine(a).collect()).toBe(1)
    await a.close()
    open.splice(open.indexOf(a), 1)
    a = await replica('a', { storage: reopen(storageA) })
    expect(store(a).gcFrontier().newest).toBeDefined()
    expect(floors(a)).toBe(0) // the collection reached storage
  })
})
