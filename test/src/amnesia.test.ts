import { describe, expect, it } from 'vitest'
import { createReplica } from '../../src/index.js'
import { MemoryNetwork } from '../../transports/memory.js'
import { until } from './helpers.js'

describe('a replica that lost its storage and rejoins with the same peer id', () => {
  it('gets its old writes back, and its new writes reach everyone, without manual steps', async () => {
    let t = 1_000_000
    const clock = { now: () => t }
    const net = new MemoryNetwork({ seed: 4 })
    const a = await createReplica({ peerId: 'A', transports: [net.transport()], clock, antiEntropyMs: 0 })
    const b = await createReplica({ peerId: 'B', transports: [net.transport()], clock, antiEntropyMs: 0 })
    for (let i = 0; i < 20; i++) await a.collection('c').put({ id: `r${i}`, v: i })
    await a.sync()
    await a.close() // its storage (in-memory) is gone with it
    t -= 500 // and its wall clock even went backwards meanwhile
    const a2 = await createReplica({ peerId: 'A', transports: [net.transport()], clock, antiEntropyMs: 0 })
    await until(() => a2.collection('c').all().length === 20, 5000, 'old writes to come back')
    await a2.collection('c').update('r3', { v: 'new' })
    await Promise.all([a2.sync(), b.sync()])
    expect(b.collection('c').get('r3')).toEqual({ id: 'r3', v: 'new' })
    expect(a2.collection('c').get('r3')).toEqual({ id: 'r3', v: 'new' })
    await Promise.all([a2.close(), b.close()])
  })
})
