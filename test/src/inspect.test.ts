/**
 * replica.inspect() and replica.conflicts(): what someone debugging a sync sees — peers with their vectors, lag,
 * transport and traffic, pending writes, recent events, and the values lost to other writers, bounded.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createReplica, type Replica } from '../../src/index.js'
import { MemoryNetwork } from '../../transports/memory.js'
import { type Todo, replicas, until } from './helpers.js'

const open: Replica[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()))
})

describe('replica.inspect()', () => {
  it('lists identity, vector, record counts, and each peer with its vector, lag, transport and traffic', async () => {
    const { rs } = await replicas(2)
    open.push(...rs)
    const [a, b] = rs as [Replica, Replica]
    const todos = a.collection<Todo>('todos')
    await todos.put({ id: '1', title: 'milk' })
    await todos.put({ id: '2', title: 'eggs' })
    await todos.delete('2')
    await a.sync()
    const i = a.inspect()
    expect(i.peerId).toBe('r0')
    expect(i.writerId).toMatch(/^r0/)
    expect(Object.keys(i.vector)).toEqual([i.writerId])
    expect(i.collections).toEqual({ todos: { visible: 1, deleted: 1 } })
    expect(i.pending).toBe(0)
    expect(i.online).toBe(true)
    expect(i.leader).toBe(true)
    expect(i.peers).toHaveLength(1)
    const peer = i.peers[0]!
    expect(peer).toMatchObject({ id: 'r1', connected: true, behind: 0, via: 0 })
    expect(peer.vector).toEqual(i.vector) // in agreement after sync
    expect(peer.traffic.framesOut).toBeGreaterThan(0)
    expect(peer.traffic.bytesOut).toBeGreaterThan(peer.traffic.framesOut)
    expect(peer.traffic.framesIn).toBeGreaterThan(0)
    expect(peer.traffic.lastHeard).toBeGreaterThan(0)
    // b's view mirrors it: what a sent, b received.
    const fromA = b.inspect().peers.find((p) => p.id === 'r0')!
    expect(fromA.traffic.bytesIn).toBe(peer.traffic.bytesOut)
    expect(JSON.parse(JSON.stringify(i))).toEqual(i) // plain data: loggable as JSON
  })

  it('lists the events of a session in order: a peer leaving and coming back, going offline and online', async () => {
    const net = new MemoryNetwork({ seed: 3 })
    const a = await createReplica({ peerId: 'a', transports: [net.transport()], antiEntropyMs: 0 })
    const b = await createReplica({ peerId: 'b', transports: [net.transport()], antiEntropyMs: 0 })
    open.push(a, b)
    await until(() => a.status().peers.length === 1, 2000, 'a to meet b')
    await a.sync()
    await b.setOnline(false)
    await until(() => a.inspect().peers.length === 0, 2000, 'b to leave')
    const todos = a.collection<Todo>('todos')
    for (let i = 0; i < 5; i++) await todos.put({ id: `t${i}`, title: 'x' })
    await b.setOnline(true)
    await until(() => a.inspect().peers.length === 1, 2000, 'b to come back')
    await a.sync()
    expect(a.inspect().peers[0]!.behind).toBe(0)
    const types = a.inspect().events.map((e) => `${e.type}${e.peer ? ' ' + e.peer : ''}`)
    expect(types.filter((t) => t !== 'sync b')).toEqual(['peer:join b', 'peer:leave b', 'peer:join b'])
    expect(types).toContain('sync b')
    expect(b.inspect().events.map((e) => e.type).filter((t) => t === 'online' || t === 'offline')).toEqual(['offline', 'online'])
  })

  it('keeps only the last `inspect.events` events, oldest first', async () => {
    const r = await createReplica({ inspect: { events: 3 } })
    open.push(r)
    for (let i = 0; i < 4; i++) await r.setOnline(i % 2 === 1)
    expect(r.inspect().events.map((e) => e.type)).toEqual(['online', 'offline', 'online'])
  })
})

describe('replica.conflicts()', () => {
  it('records each lost value with both sides, bounded to the most recent `inspect.conflicts`', async () => {
    let now = 1_700_000_000_000
    const clock = { now: () => now }
    const { rs } = await replicas(2, { clock, inspect: { conflicts: 2 } })
    open.push(...rs)
    const [a, b] = rs as [Replica, Replica]
    const ta = a.collection<Todo>('todos')
    const tb = b.collection<Todo>('todos')
    await a.setOnline(false) // concurrent: neither sees the other's writes until both are written
    for (let i = 0; i < 3; i++) {
      now += 10
      await ta.update(`t${i}`, { title: `a${i}` }) // earlier: loses on b's side
      now += 10
      await tb.update(`t${i}`, { title: `b${i}` })
    }
    await a.setOnline(true)
    await until(() => a.status().peers.length === 1, 2000, 'a to meet b again')
    await Promise.all([a.sync(), b.sync()])
    const lost = a.conflicts()
    expect(lost).toHaveLength(2)
    expect(lost.map((c) => [c.id, c.loser.value, c.winner.value])).toEqual([
      ['t1', 'a1', 'b1'],
      ['t2', 'a2', 'b2'],
    ])
    expect(lost[0]!.winner.timestamp.wall).toBeGreaterThan(lost[0]!.loser.timestamp.wall)
    expect(a.inspect().events.filter((e) => e.type === 'conflict').map((e) => e.detail)).toEqual(['todos/t0.title', 'todos/t1.title', 'todos/t2.title'])
  })
})
