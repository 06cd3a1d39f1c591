/**
 * Live forwarding with `reached` sets (LIVE messages) and neighbour lists (NEIGHBOURS), see src/sync/protocol.ts: a
 * full mesh spends one frame per peer per write instead of about n², sparser topologies still carry every write
 * across hops without anti-entropy (with or without neighbour lists), and the wire format refuses what it must.
 */
import { describe, expect, it } from 'vitest'
import { encodeDelta } from '../../crdt/delta.js'
import { DecodeError } from '../../crdt/errors.js'
import { createReplica, type Replica } from '../../src/index.js'
import { MAX_NEIGHBOURS, MAX_REACHED, decodeMessage, encodeDeltaMessage, encodeLiveMessage, encodeNeighboursMessage, peerHash } from '../../src/sync/protocol.js'
import { MemoryNetwork } from '../../transports/memory.js'
import { mulberry32 } from '../prng.js'

const LIVE = 5
const DELTA = 2
const NEIGHBOURS = 6

/**
 * n replicas on a manual memory network; counts the frames of each message type that every replica sends.
 * `oldPeers` lists replicas that never send NEIGHBOURS (as a build before that message would).
 */
async function room(n: number, cut: (i: number, j: number) => boolean = () => false, oldPeers: ReadonlySet<number> = new Set(), seed = 7) {
  const net = new MemoryNetwork({ seed, mode: 'manual' })
  const sent = new Map<number, number>()
  const replicas: Replica[] = []
  const ids = Array.from({ length: n }, (_, i) => `p${i}`)
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) if (cut(i, j)) net.link(ids[i]!, ids[j]!, false)
  for (const [i, id] of ids.entries()) {
    const t = net.transport()
    const send = t.send.bind(t)
    t.send = (peer, frame) => {
      if (frame[1] === NEIGHBOURS && oldPeers.has(i)) return
      sent.set(frame[1]!, (sent.get(frame[1]!) ?? 0) + 1)
      send(peer, frame)
    }
    // A broadcast is one frame per peer on the wire: counted as such.
    const up = new Set<string>()
    t.on('peer:up', (peer) => up.add(peer))
    t.on('peer:down', (peer) => up.delete(peer))
    const broadcast = t.broadcast.bind(t)
    t.broadcast = (frame) => {
      sent.set(frame[1]!, (sent.get(frame[1]!) ?? 0) + up.size)
      broadcast(frame)
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

  it('neighbour lists cut duplicate LIVE frames in an overlay, and peers without them are still served', async () => {
    const ring = (i: number, j: number): boolean => Math.min(j - i, 12 - (j - i)) > 2
    const live = async (old: ReadonlySet<number>): Promise<number> => {
      const r = await room(12, ring, old)
      // Peers pass on changed neighbour lists with the next change they send or forward: one write warms them up.
      for (let w = 0; w < 12; w++) await r.replicas[w]!.collection('c').put({ id: `warm${w}`, v: w })
      await r.settle()
      r.sent.clear()
      for (let w = 0; w < 12; w += 3) await r.replicas[w]!.collection('c').put({ id: `w${w}`, v: w })
      await r.settle()
      for (const x of r.replicas) expect(x.collection('c').all(), x.peerId).toHaveLength(16)
      await r.close()
      return r.sent.get(LIVE) ?? 0
    }
    const all = Array.from({ length: 12 }, (_, i) => i)
    const withLists = await live(new Set())
    const withoutLists = await live(new Set(all))
    const mixed = await live(new Set([1, 4, 5, 9]))
    console.log(`LIVE frames for 4 writes in a 12-ring of degree 4: ${withLists} with lists, ${withoutLists} without, ${mixed} mixed`)
    expect(withLists).toBeLessThan(withoutLists)
    expect(withLists).toBeGreaterThanOrEqual(4 * 11)
    expect(mixed).toBeLessThanOrEqual(withoutLists)
  })

  it('random connected graphs: a live write reaches every replica by forwarding alone (no anti-entropy)', async () => {
    const seed = Number(process.env['SEED'] ?? 20261122)
    const rand = mulberry32(seed)
    for (let g = 0; g < 25; g++) {
      const n = 4 + Math.floor(rand() * 7)
      // A random spanning tree (so the graph is connected) plus random extra links.
      const edges = new Set<string>()
      for (let i = 1; i < n; i++) edges.add(`${Math.floor(rand() * i)}-${i}`)
      for (let k = 0; k < n; k++) {
        const i = Math.floor(rand() * n)
        const j = Math.floor(rand() * n)
        if (i < j) edges.add(`${i}-${j}`)
      }
      const r = await room(n, (i, j) => !edges.has(`${i}-${j}`), new Set(), seed + g)
      const writer = Math.floor(rand() * n)
      await r.replicas[writer]!.collection('c').put({ id: 'x', g })
      await r.settle()
      for (const x of r.replicas) {
        expect(x.collection('c').get('x'), `seed ${seed} graph ${g}: ${n} replicas, links ${[...edges].join(' ')}, writer p${writer}, missing at ${x.peerId}`).toBeDefined()
      }
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
    expect(decodeMessage(encodeNeighboursMessage(set))).toEqual({ type: 'neighbours', peers: set })
    expect(decodeMessage(encodeNeighboursMessage(Array.from({ length: MAX_NEIGHBOURS + 1 }, (_, i) => i)))).toEqual({ type: 'neighbours', peers: [] })
    const trailing = new Uint8Array([...encodeNeighboursMessage([1]), 0])
    expect(() => decodeMessage(trailing)).toThrow(DecodeError)
  })
})
