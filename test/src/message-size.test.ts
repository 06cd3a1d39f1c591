/**
 * The per-link message-size hint (`Transport.maxMessageSize`): a link that says it carries at most N bytes per
 * message (a relayed libp2p connection with a data allowance) gets every delta in parts no larger — on the sync
 * answer, on live changes, and on changes forwarded from another peer — and the replicas still converge.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { MemoryStorage, createReplica, type Replica } from '../../src/index.js'
import { decodeMessage } from '../../src/sync/protocol.js'
import { MemoryNetwork, type MemoryTransport } from '../../transports/memory.js'
import { until } from '../transports/libp2p-room.js'

const HINT = 4096
const open: Replica[] = []
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((r) => r.close()))
})

/** Whether a frame is a DELTA / LIVE message, or a CHUNK of a message too large for one frame. */
function isDeltaOrChunk(frame: Uint8Array): boolean {
  try {
    return decodeMessage(frame)?.type === 'delta'
  } catch {
    return true // a CHUNK (decodeMessage refuses those): part of a message larger than a frame
  }
}

/** Makes `t` report HINT for peers in `limited`, and records the size of every DELTA message it sends them. */
function hinted(t: MemoryTransport, limited: Set<string>, sizes: number[]): MemoryTransport {
  const send = t.send.bind(t)
  t.send = (peer, frame) => {
    if (limited.has(peer) && isDeltaOrChunk(frame)) sizes.push(frame.byteLength)
    send(peer, frame)
  }
  ;(t as { maxMessageSize?: (peer: string) => number | undefined }).maxMessageSize = (peer) => (limited.has(peer) ? HINT : undefined)
  return t
}

async function replica(peerId: string, t: MemoryTransport): Promise<Replica> {
  const r = await createReplica({ peerId, room: 'hint', transports: [t], antiEntropyMs: 0 })
  open.push(r)
  return r
}

const blob = 'y'.repeat(900)

describe('Transport.maxMessageSize', () => {
  it('cuts the sync answer, live batches and forwarded changes for a limited link into parts that fit', async () => {
    const net = new MemoryNetwork({ seed: 7 })
    net.link('a', 'c', false) // a line: a – b – c, and only b – c is limited
    const sizesA: number[] = []
    const sizesB: number[] = []
    const ta = hinted(net.transport(), new Set(['b']), sizesA)
    const tb = hinted(net.transport(), new Set(['c']), sizesB)
    const a = await replica('a', ta)
    // ~90 KB already held by a: b's first sync answer is cut for the limited a → b link.
    for (let i = 0; i < 100; i++) await a.collection('t').put({ id: `old-${i}`, blob } as never)
    const b = await replica('b', tb)
    const c = await replica('c', net.transport())
    await until(() => b.collection('t').all().length === 100 && c.collection('t').all().length === 100, 10_000, 'the initial sync')
    // A live batch of ~90 KB (one tick): cut for a → b; b forwards it to c, cut again for b → c.
    await Promise.all(Array.from({ length: 100 }, (_, i) => a.collection('t').put({ id: `live-${i}`, blob } as never)))
    await until(() => c.collection('t').all().length === 200, 10_000, 'the live batch to cross the line')
    expect(sizesA.length).toBeGreaterThan(20)
    expect(sizesB.length).toBeGreaterThan(20)
    expect(Math.max(...sizesA)).toBeLessThanOrEqual(HINT)
    expect(Math.max(...sizesB)).toBeLessThanOrEqual(HINT)
  })

  it('commits a batch larger than maxMessageBytes in parts: each logged and sent, all of it durable', async () => {
    const net = new MemoryNetwork({ seed: 9 })
    const storage = new (class extends MemoryStorage {
      override async close(): Promise<void> {} // kept for the reopen below
    })()
    const a = await createReplica({ peerId: 'a', room: 'hint', storage, transports: [net.transport()], antiEntropyMs: 0, maxMessageBytes: 16_384 })
    open.push(a)
    const b = await replica('b', net.transport())
    await until(() => b.status().peers.length === 1, 5000, 'the pair')
    // ~90 KB written in one tick: one commit, over five times the message limit.
    await Promise.all(Array.from({ length: 100 }, (_, i) => a.collection('t').put({ id: `r-${i}`, blob } as never)))
    await until(() => b.collection('t').all().length === 100, 10_000, 'the batch to arrive')
    const logged = (await storage.loadRange(['log'])).map((e) => e.data.length)
    expect(logged.length).toBeGreaterThan(5)
    expect(Math.max(...logged)).toBeLessThanOrEqual(16_384)
    await a.close()
    const again = await createReplica({ storage, antiEntropyMs: 0 })
    open.push(again)
    expect(again.collection('t').all()).toHaveLength(100)
  })

  it('sends a single write larger than the hint whole rather than never', async () => {
    const net = new MemoryNetwork({ seed: 8 })
    const sizes: number[] = []
    const a = await replica('a', hinted(net.transport(), new Set(['b']), sizes))
    const b = await replica('b', net.transport())
    await until(() => b.status().peers.length === 1, 5000, 'the pair')
    await a.collection('t').put({ id: 'big', blob: 'z'.repeat(3 * HINT) } as never)
    await until(() => b.collection('t').get('big') !== undefined, 5000, 'the big write')
    expect(Math.max(...sizes)).toBeGreaterThan(HINT)
  })
})
