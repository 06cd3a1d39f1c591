/**
 * ACK_CHANGES (protocol revision 4): the ACK that follows a live change carries only the entries of the receiver's
 * vector that changed since it last told the sender, not one entry per writer in the room — and a peer that has
 * heard only such partial vectors is never taken to agree with us.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { Replica } from '../../src/index.js'
import type { ReplicaImpl } from '../../src/replica.js'
import { decodeMessage } from '../../src/sync/protocol.js'
import { MemoryNetwork, type MemoryTransport } from '../../transports/memory.js'
import { createReplica } from '../../src/index.js'
import { until } from './helpers.js'

const open: Replica[] = []
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((r) => r.close()))
})

/** The vector messages `t` sends, decoded: type and number of entries. */
function vectorsSent(t: MemoryTransport): { type: string; entries: number }[] {
  const out: { type: string; entries: number }[] = []
  const send = t.send.bind(t)
  t.send = (peer, frame) => {
    try {
      const msg = decodeMessage(frame)
      if (msg && 'vv' in msg) out.push({ type: msg.type, entries: msg.vv.size })
    } catch {
      // a CHUNK: not a vector message
    }
    send(peer, frame)
  }
  return out
}

describe('ACK_CHANGES', () => {
  it('a live write is acknowledged with the one entry it changed, in a room of 12 writers', async () => {
    const net = new MemoryNetwork({ seed: 3 })
    const tb = net.transport()
    const sent = vectorsSent(tb)
    const rs: Replica[] = []
    for (let i = 0; i < 12; i++) rs.push(await createReplica({ peerId: `r${i}`, transports: [i === 1 ? tb : net.transport()], antiEntropyMs: 0 }))
    open.push(...rs)
    const [a, b] = rs as [Replica, Replica]
    await Promise.all(rs.map((r, i) => r.collection('c').put({ id: `w${i}`, v: i })))
    await until(() => rs.every((r) => r.collection('c').all().length === 12), 5000, 'every write everywhere')
    await Promise.all(rs.map((r) => r.sync()))
    sent.length = 0
    await a.collection('c').put({ id: 'w0', v: 'again' })
    await until(() => b.collection('c').get('w0')?.v === 'again', 5000, 'the write at b')
    await until(() => sent.some((m) => m.type === 'ack-changes'), 5000, "b's ACK")
    const acks = sent.filter((m) => m.type === 'ack' || m.type === 'ack-changes')
    expect(acks.length).toBeGreaterThan(0)
    for (const m of acks) expect(m).toEqual({ type: 'ack-changes', entries: 1 })
    // Every peer agrees again: sync() resolves on ACK_CHANGES alone (no anti-entropy runs here).
    await a.sync({ timeoutMs: 2000 })
  })

  it('a peer known only from ACK_CHANGES entries is not in agreement until it sends a whole vector', async () => {
    const net = new MemoryNetwork({ seed: 4 })
    const a = (await createReplica({ peerId: 'a', transports: [net.transport()], antiEntropyMs: 0 })) as ReplicaImpl
    open.push(a)
    const tb = net.transport()
    // b's whole vectors (its SYNC_REQUEST and ACKs) never leave it; only ACK_CHANGES do.
    const send = tb.send.bind(tb)
    tb.send = (peer, frame) => {
      try {
        const msg = decodeMessage(frame)
        if (msg?.type === 'sync-request' || msg?.type === 'ack') return
      } catch {
        // a CHUNK
      }
      send(peer, frame)
    }
    const b = await createReplica({ peerId: 'b', transports: [tb], antiEntropyMs: 0 })
    open.push(b)
    await a.collection('c').put({ id: 'x', v: 1 })
    await until(() => b.collection('c').get('x') !== undefined, 5000, 'x at b')
    await a.collection('c').put({ id: 'y', v: 2 })
    await until(() => a.engine.peerVector('b')?.size === 1, 5000, "b's ACK_CHANGES at a")
    // a knows b holds its writes, but not what else b holds: it must not call b in agreement.
    await expect(a.sync({ timeoutMs: 300 })).rejects.toMatchObject({ name: 'SyncTimeoutError' })
  })
})
