/**
 * Live forwarding with `reached` sets (LIVE messages, see src/sync/protocol.ts): a full mesh spends one frame per
 * peer per write instead of about n², sparser topologies still carry every write across hops without anti-entropy,
 * and the wire format refuses what it must.
 */
import { describe, expect, it } from 'vitest'
import { encodeDelta } from '../../crdt/delta.js'
import { DecodeError } from '../../crdt/errors.js'
import { createReplica, type Replica } from '../../src/index.js'
import { MAX_REACHED, decodeMessage, encodeDeltaMessage, encodeLiveMessage, peerHash } from '../../src/sync/protocol.js'
import { MemoryNetwork } from '../../transports/memory.js'

const LIVE = 5
const DELTA = 2

/** n replicas on a manual memory network; counts the frames of each message type that every replica sends. */
async function room(n: number, cut: (i: number, j: number) => boolean = () => false) {
  const net = new MemoryNetwork({ seed: 7, mode: 'manual' })
  const sent = new Map<number, number>()
  const replicas: Replica[] = []
  const ids = Array.from({ length: n }, (_, i) => `p${i}`)
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) if (cut(i, j)) net.link(ids[i]!, ids[j]!, false)
  for (const id of ids) {
    const t = net.transport()
    const send = t.send.bind(t)
    t.send = (peer, frame) => {
      sent.set(frame[1]!, (sent.get(frame[1]!) ?? 0) + 1)
      send(peer, frame)
    }
    replicas.push(await createReplica({ peerId: id, room: 'fanout', transports: [t], antiEntropyMs: 0 }))
  }
  net.deliverAll()
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 0))
      if (net.deliverAll() === 0 && net.pending() === 0) await new Promise((r) => setTimeout(r, 0))
      if (net.pending() === 0) return
    }
  }
  await settle()
  return { net, replicas, sent, settle, close: () => Promise.all(replicas.map((r) => r.close())) }
}

describe('live forwarding with reached sets', () => {
  it('full mesh of 8: a write costs 7 LIVE frames (was 7 + 7 × 6 forwarded copies) and reaches everyone', async () => {
    const r = await room(8)
    r.sent.clear()
    for (let w = 0; w < 4; w++) {
      await r.replicas[w]!.collection('c').put({ id: `w${w}`, v: w })
      await r.settle()
    }
    expect(r.sent.get(LIVE)).toBe(4 * 7)
    expect(r.sent.get(DELTA) ?? 0).toBe(0)
    for (const x of r.replicas) expect(x.collection('c').all()).toHaveLength(4)
    await r.close()
  })

  it('line of 6 and ring overlay of 9 (degree 4): writes cross every hop without anti-entropy', async () => {
    for (const [n, cut] of [
      [6, (i: number, j: number) => j - i > 1],
      [9, (i: number, j: number) => Math.min(j - i, 9 - (j - i)) > 2],
    ] as const) {
      const r = await room(n, cut)
      for (let w = 0; w < n; w += 2) await r.replicas[w]!.collection('c').put({ id: `w${w}`, v: w })
      await r.settle()
      for (const x of r.replicas) expect(x.collection('c').all().map((rec) => rec['id']).sort(), x.peerId).toEqual(
        Array.from({ length: Math.ceil(n / 2) }, (_, k) => `w${2 * k}`).sort(),
      )
      await r.close()
    }
  })

  it('wire: LIVE round-trips its set; an old-style live DELTA still decodes as live; oversized sets are refused or cut', () => {
    const delta = encodeDelta({ from: new Map(), to: new Map(), records: [] })
    const set = [peerHash('a'), peerHash('b'), 0, 0xffffffff]
    const live = decodeMessage(encodeLiveMessage(delta, set))
    expect(live).toMatchObject({ type: 'delta', live: true, reached: set })
    expect(decodeMessage(encodeDeltaMessage(delta, true))).toMatchObject({ type: 'delta', live: true, reached: undefined })
    expect(peerHash('')).toBe(0x811c9dc5) // FNV-1a offset basis: the spec's hash
    expect(peerHash('a')).toBe(0xe40c292c)
    const many = Array.from({ length: MAX_REACHED + 10 }, (_, i) => i)
    expect((decodeMessage(encodeLiveMessage(delta, many)) as unknown as { reached: number[] }).reached).toHaveLength(MAX_REACHED)
    expect((decodeMessage(encodeLiveMessage(delta, many, delta.length + 5 + 4 * 3)) as unknown as { reached: number[] }).reached).toHaveLength(3)
    const forged = encodeLiveMessage(delta, [])
    const bad = new Uint8Array([forged[0]!, LIVE, 0x81, 0x02, ...new Uint8Array(4 * 257), ...delta]) // n = 257
    expect(() => decodeMessage(bad)).toThrow(DecodeError)
  })
})
