import { describe, expect, it, vi } from 'vitest'
import { SyncmeshError } from '../../crdt/errors.js'
import { transportConformanceCases, type TransportHarness } from '../../src/testkit/transport-suite.js'
import {
  DEFAULT_MAX_FRAME_SIZE,
  FrameTooLargeError,
  MemoryNetwork,
  PeerIdInUseError,
  TransportArgumentError,
  TransportError,
  TransportStateError,
  type ListenerErrorContext,
  type MemoryNetworkInit,
  type MemoryTransport,
} from '../../transports/memory.js'
import type { PeerId, Transport } from '../../transports/types.js'

function harness(mode: 'auto' | 'manual', extra: MemoryNetworkInit = {}): TransportHarness {
  return {
    async create(n) {
      const net = new MemoryNetwork({ mode, seed: 7, ...extra })
      const transports = Array.from({ length: n }, () => net.transport())
      return {
        transports,
        settle: () => net.settle(),
        close: async () => {
          for (const t of transports) await t.stop()
        },
      }
    },
  }
}

describe('MemoryNetwork conformance (auto mode)', () => {
  for (const c of transportConformanceCases(harness('auto'))) it(c.name, c.run)
})

describe('MemoryNetwork conformance (auto mode, 0–3 ms latency)', () => {
  for (const c of transportConformanceCases(harness('auto', { latencyMs: [0, 3] }))) it(c.name, c.run)
})

describe('MemoryNetwork conformance (manual mode)', () => {
  for (const c of transportConformanceCases(harness('manual'))) it(c.name, c.run)
})

describe('MemoryNetwork conformance (manual mode, reordering, small maxFrameSize)', () => {
  for (const c of transportConformanceCases(harness('manual', { reorder: true, maxFrameSize: 100 }))) it(c.name, c.run)
})

describe('the conformance suite itself', () => {
  it('fails a transport that truncates oversized frames instead of throwing', async () => {
    // A deliberately broken transport: accepts oversized frames and truncates them.
    const base = harness('manual')
    const broken: TransportHarness = {
      async create(n) {
        const made = await base.create(n)
        const transports = made.transports.map((t): Transport => ({
          start: (room) => t.start(room),
          stop: () => t.stop(),
          on: ((event: 'frame', fn: (p: PeerId, f: Uint8Array) => void) => t.on(event, fn)) as Transport['on'],
          maxFrameSize: t.maxFrameSize,
          send: (p, f) => t.send(p, f.subarray(0, t.maxFrameSize)),
          broadcast: (f) => t.broadcast!(f.subarray(0, t.maxFrameSize)),
        }))
        return { ...made, transports }
      },
    }
    const c = transportConformanceCases(broken).find((x) => x.name.startsWith('frames larger than maxFrameSize'))!
    await expect(c.run()).rejects.toThrow(/did not throw/)
  })

  it('fails a transport that echoes frames to the sender, with a clear message', async () => {
    const base = harness('manual')
    const echoing: TransportHarness = {
      async create(n) {
        const made = await base.create(n)
        for (const t of made.transports) {
          const send = t.send.bind(t)
          t.send = (p, f) => {
            send(p, f)
            // echo to self through a listener call
            setTimeout(() => (t as unknown as { emitFrame(p: PeerId, f: Uint8Array): void }).emitFrame(p, f), 0)
          }
        }
        return made
      },
    }
    const c = transportConformanceCases(echoing).find((x) => x.name === 'no frame is delivered to its sender')!
    await expect(c.run()).rejects.toThrow(/sender received/)
  })

  it('times out with a message instead of hanging when peers never come up', async () => {
    const silent: TransportHarness = {
      async create(n) {
        // Every transport in its own network: they never see each other.
        const transports = Array.from({ length: n }, () => new MemoryNetwork({ mode: 'manual' }).transport())
        return { transports, settle: async () => {}, close: async () => {} }
      },
    }
    const c = transportConformanceCases(silent, { timeoutMs: 200 }).find((x) => x.name.startsWith('peer:up'))!
    const started = Date.now()
    await expect(c.run()).rejects.toThrow(/timed out after 200 ms waiting until .* sees peer:up/)
    expect(Date.now() - started).toBeLessThan(2000)
  })
})

// ---------------------------------------------------------------------------------------------------------------------

type Trace = string[]

/** Starts `ids` in one room and records every event as a line of a trace (receiver, event, peer, bytes). */
async function startAll(net: MemoryNetwork, ids: PeerId[], trace?: Trace, room = 'room'): Promise<Map<PeerId, MemoryTransport>> {
  const ts = new Map<PeerId, MemoryTransport>()
  for (const id of ids) {
    const t = net.transport()
    if (trace) {
      t.on('peer:up', (p) => trace.push(`${id} up ${p}`))
      t.on('peer:down', (p) => trace.push(`${id} down ${p}`))
      t.on('frame', (p, f) => trace.push(`${id} frame ${p} ${Array.from(f).join(',')}`))
    }
    await t.start({ room, peerId: id })
    ts.set(id, t)
  }
  return ts
}

async function faultyRun(init: MemoryNetworkInit): Promise<{ trace: Trace; stats: ReturnType<MemoryNetwork['stats']> }> {
  const net = new MemoryNetwork(init)
  const trace: Trace = []
  const ids = ['a', 'b', 'c']
  const ts = await startAll(net, ids, trace)
  await net.settle()
  for (let i = 0; i < 300; i++) {
    const from = ids[i % 3]!
    ts.get(from)!.send(ids[(i + 1) % 3]!, new Uint8Array([i & 0xff, i >> 8]))
    if (i % 50 === 0) ts.get(from)!.broadcast(new Uint8Array([0xbb, i & 0xff]))
    if (init.mode === 'manual' && i % 7 === 0) net.deliverNext()
  }
  await net.settle()
  return { trace, stats: net.stats() }
}

const peerEvents = (trace: Trace) => trace.filter((l) => !l.includes(' frame '))

describe('MemoryNetwork determinism', () => {
  const faults = { dropRate: 0.2, duplicateRate: 0.2, reorder: true } as const

  it('same seed ⇒ identical delivery trace (manual mode, drops + duplicates + reordering)', async () => {
    const one = await faultyRun({ mode: 'manual', seed: 1234, ...faults })
    const two = await faultyRun({ mode: 'manual', seed: 1234, ...faults })
    expect(one.trace.length).toBeGreaterThan(100)
    expect(two.trace).toEqual(one.trace)
    expect(two.stats).toEqual(one.stats)
  })

  it('same seed ⇒ identical delivery trace (auto mode, zero latency, drops + duplicates)', async () => {
    const init = { mode: 'auto', seed: 99, dropRate: 0.3, duplicateRate: 0.3 } as const
    const one = await faultyRun(init)
    const two = await faultyRun(init)
    expect(one.trace.length).toBeGreaterThan(100)
    expect(two.trace).toEqual(one.trace)
  })

  it('different seeds give different traces', async () => {
    const one = await faultyRun({ mode: 'manual', seed: 1, ...faults })
    const two = await faultyRun({ mode: 'manual', seed: 2, ...faults })
    expect(two.trace).not.toEqual(one.trace)
  })

  it('reordering permutes frames but without faults delivers each exactly once', async () => {
    const net = new MemoryNetwork({ mode: 'manual', seed: 5, reorder: true })
    const trace: Trace = []
    const ts = await startAll(net, ['a', 'b'], trace)
    net.deliverAll()
    for (let i = 0; i < 200; i++) ts.get('a')!.send('b', new Uint8Array([i]))
    net.deliverAll()
    const got = trace.filter((l) => l.startsWith('b frame')).map((l) => Number(l.split(' ')[3]))
    expect(got).toHaveLength(200)
    expect([...got].sort((x, y) => x - y)).toEqual(Array.from({ length: 200 }, (_, i) => i))
    expect(got).not.toEqual(Array.from({ length: 200 }, (_, i) => i))
  })

  it('without reordering, manual delivery is FIFO', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    const trace: Trace = []
    const ts = await startAll(net, ['a', 'b'], trace)
    net.deliverAll()
    for (let i = 0; i < 50; i++) ts.get('a')!.send('b', new Uint8Array([i]))
    net.deliverAll()
    const got = trace.filter((l) => l.startsWith('b frame')).map((l) => Number(l.split(' ')[3]))
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => i))
  })
})

describe('MemoryNetwork faults', () => {
  it('dropRate 1.0 delivers nothing', async () => {
    const net = new MemoryNetwork({ mode: 'manual', dropRate: 1 })
    const trace: Trace = []
    const ts = await startAll(net, ['a', 'b', 'c'], trace)
    net.deliverAll()
    const upsOnly = trace.length
    expect(upsOnly).toBe(6) // peer events are never dropped
    for (let i = 0; i < 100; i++) ts.get('a')!.send('b', new Uint8Array([i]))
    ts.get('c')!.broadcast(new Uint8Array([1]))
    expect(net.pending()).toBe(0)
    net.deliverAll()
    expect(trace.length).toBe(upsOnly)
    expect(net.stats()).toEqual({ sent: 102, delivered: 0, dropped: 102, duplicated: 0, bytes: 102 })
  })

  it('duplicateRate 1.0 delivers each frame twice', async () => {
    const net = new MemoryNetwork({ mode: 'auto', duplicateRate: 1 })
    const got: number[] = []
    const ts = await startAll(net, ['a', 'b'])
    ts.get('b')!.on('frame', (_p, f) => got.push(f[0]!))
    await net.settle()
    for (let i = 0; i < 20; i++) ts.get('a')!.send('b', new Uint8Array([i]))
    await net.settle()
    expect([...got].sort((x, y) => x - y)).toEqual(Array.from({ length: 40 }, (_, i) => i >> 1))
    expect(net.stats()).toMatchObject({ sent: 20, delivered: 40, duplicated: 20, dropped: 0 })
  })

  it('duplicates are independent buffers: a receiver mutating one does not corrupt the other', async () => {
    const net = new MemoryNetwork({ mode: 'manual', duplicateRate: 1 })
    const ts = await startAll(net, ['a', 'b'])
    const got: Uint8Array[] = []
    ts.get('b')!.on('frame', (_p, f) => {
      got.push(f.slice())
      f.fill(0)
    })
    net.deliverAll()
    ts.get('a')!.send('b', new Uint8Array([5, 6]))
    net.deliverAll()
    expect(got).toEqual([new Uint8Array([5, 6]), new Uint8Array([5, 6])])
  })

  it('dropRate 0.5 drops about half, and stats stay consistent', async () => {
    const net = new MemoryNetwork({ mode: 'manual', seed: 3, dropRate: 0.5, duplicateRate: 0.25 })
    let received = 0
    const ts = await startAll(net, ['a', 'b'])
    ts.get('b')!.on('frame', () => received++)
    net.deliverAll()
    for (let i = 0; i < 4000; i++) ts.get('a')!.send('b', new Uint8Array(i % 17))
    net.deliverAll()
    const s = net.stats()
    expect(s.sent).toBe(4000)
    expect(s.dropped).toBeGreaterThan(1800)
    expect(s.dropped).toBeLessThan(2200)
    expect(s.duplicated).toBeGreaterThan(0.2 * (s.sent - s.dropped))
    expect(s.duplicated).toBeLessThan(0.3 * (s.sent - s.dropped))
    expect(s.delivered).toBe(received)
    expect(s.sent + s.duplicated).toBe(s.delivered + s.dropped)
    let bytes = 0
    for (let i = 0; i < 4000; i++) bytes += i % 17
    expect(s.bytes).toBe(bytes)
  })

  it('setFaults changes knobs at run time', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    let received = 0
    const ts = await startAll(net, ['a', 'b'])
    ts.get('b')!.on('frame', () => received++)
    net.deliverAll()
    ts.get('a')!.send('b', new Uint8Array([1]))
    net.setFaults({ dropRate: 1 })
    ts.get('a')!.send('b', new Uint8Array([2]))
    net.setFaults({ dropRate: 0, duplicateRate: 1 })
    ts.get('a')!.send('b', new Uint8Array([3]))
    net.deliverAll()
    expect(received).toBe(3)
    expect(net.stats()).toMatchObject({ sent: 3, dropped: 1, duplicated: 1, delivered: 3 })
    expect(() => net.setFaults({ dropRate: 1.5 })).toThrow(TransportArgumentError)
    expect(() => net.setFaults({ reorder: -1 })).toThrow(TransportArgumentError)
  })

  it('latency delays auto-mode delivery', async () => {
    const net = new MemoryNetwork({ latencyMs: 40 })
    const ts = await startAll(net, ['a', 'b'])
    let at = 0
    ts.get('b')!.on('frame', () => (at = Date.now()))
    await net.settle()
    const sentAt = Date.now()
    ts.get('a')!.send('b', new Uint8Array([1]))
    await new Promise((r) => setTimeout(r, 5))
    expect(at).toBe(0)
    expect(net.pending()).toBe(1)
    await net.settle()
    expect(at - sentAt).toBeGreaterThanOrEqual(35)
  })

  it('auto-mode reordering with latency still delivers everything', async () => {
    const net = new MemoryNetwork({ seed: 11, latencyMs: [0, 4], reorder: 0.5 })
    const ts = await startAll(net, ['a', 'b'])
    const got: number[] = []
    ts.get('b')!.on('frame', (_p, f) => got.push(f[0]!))
    await net.settle()
    for (let i = 0; i < 100; i++) ts.get('a')!.send('b', new Uint8Array([i]))
    await net.settle()
    expect([...got].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i))
    expect(got).not.toEqual(Array.from({ length: 100 }, (_, i) => i))
  })

  it('handles 1e6 frames across 10 transports quickly (manual, reordering)', async () => {
    const net = new MemoryNetwork({ mode: 'manual', seed: 8, reorder: 0.5, dropRate: 0.01 })
    const ids = Array.from({ length: 10 }, (_, i) => `p${i}`)
    const ts = await startAll(net, ids)
    let received = 0
    for (const t of ts.values()) t.on('frame', () => received++)
    net.deliverAll()
    const frame = new Uint8Array(16)
    const started = Date.now()
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 100_000; i++) ts.get(ids[i % 10]!)!.send(ids[(i + round + 1) % 10]!, frame)
      net.deliverAll(50_000) // leave a backlog so the queue stays large
    }
    net.deliverAll()
    const elapsed = Date.now() - started
    const s = net.stats()
    // Sends to self (when (i + round + 1) % 10 === i % 10) are no-ops and are not counted.
    expect(s.sent).toBe(900_000)
    expect(received).toBe(s.delivered)
    expect(s.sent).toBe(s.delivered + s.dropped)
    expect(net.pending()).toBe(0)
    expect(elapsed).toBeLessThan(15_000)
  })
})

describe('MemoryNetwork topology', () => {
  it('partition + heal fire peer events and cut frames', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    const trace: Trace = []
    const ts = await startAll(net, ['a', 'b', 'c'], trace)
    net.deliverAll()
    trace.length = 0
    net.partition(['a'])
    net.deliverAll()
    expect(peerEvents(trace).sort()).toEqual(['a down b', 'a down c', 'b down a', 'c down a'])
    trace.length = 0
    ts.get('a')!.broadcast(new Uint8Array([1]))
    ts.get('b')!.send('a', new Uint8Array([2]))
    ts.get('b')!.send('c', new Uint8Array([3]))
    net.deliverAll()
    expect(trace).toEqual(['c frame b 3'])
    trace.length = 0
    net.heal()
    net.deliverAll()
    expect(trace.sort()).toEqual(['a up b', 'a up c', 'b up a', 'c up a'])
    trace.length = 0
    ts.get('a')!.broadcast(new Uint8Array([4]))
    net.deliverAll()
    expect(trace.sort()).toEqual(['b frame a 4', 'c frame a 4'])
  })

  it('partition(groupA, groupB) cuts only links across the two groups', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    const trace: Trace = []
    await startAll(net, ['a', 'b', 'c', 'd'], trace)
    net.deliverAll()
    trace.length = 0
    net.partition(['a', 'b'], ['c'])
    net.deliverAll()
    expect(trace.sort()).toEqual(['a down c', 'b down c', 'c down a', 'c down b'])
    expect(net.linked('a', 'd')).toBe(true)
    expect(net.linked('c', 'd')).toBe(true)
    expect(net.linked('a', 'b')).toBe(true)
  })

  it('an isolated peer stays isolated from peers that start later', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    const trace: Trace = []
    await startAll(net, ['a'], trace)
    net.partition(['a'])
    await startAll(net, ['b', 'c'], trace)
    net.deliverAll()
    expect(trace.sort()).toEqual(['b up c', 'c up b'])
  })

  it('link() builds a line A–B–C where A cannot reach C', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    net.link('a', 'c', false) // before anyone starts: applies when they do
    const trace: Trace = []
    const ts = await startAll(net, ['a', 'b', 'c'], trace)
    net.deliverAll()
    expect(trace.sort()).toEqual(['a up b', 'b up a', 'b up c', 'c up b'])
    trace.length = 0
    ts.get('a')!.send('c', new Uint8Array([1]))
    ts.get('a')!.broadcast(new Uint8Array([2]))
    ts.get('c')!.broadcast(new Uint8Array([3]))
    net.deliverAll()
    expect(trace.sort()).toEqual(['b frame a 2', 'b frame c 3'])
    trace.length = 0
    net.link('a', 'c', true)
    net.deliverAll()
    expect(trace.sort()).toEqual(['a up c', 'c up a'])
  })

  it('frames in flight when a link is cut are discarded and counted as dropped', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    const trace: Trace = []
    const ts = await startAll(net, ['a', 'b'], trace)
    net.deliverAll()
    ts.get('a')!.send('b', new Uint8Array([1]))
    net.link('a', 'b', false)
    net.link('a', 'b', true) // a new connection: the old frame must not leak into it
    expect(net.pending()).toBe(5)
    net.deliverAll()
    expect(trace.slice(2)).toEqual(['a down b', 'b down a', 'a up b', 'b up a'])
    expect(net.stats()).toMatchObject({ sent: 1, delivered: 0, dropped: 1 })
  })

  it('rooms are separate, and the same peer id may be used in two rooms', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    const trace: Trace = []
    await startAll(net, ['a', 'b'], trace, 'r1')
    await startAll(net, ['a', 'c'], trace, 'r2')
    net.deliverAll()
    expect(trace).toHaveLength(4)
    expect(trace.sort()).toEqual(['a up b', 'a up c', 'b up a', 'c up a'])
  })

  it('a stopped transport can start again and reconnects', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    const trace: Trace = []
    const ts = await startAll(net, ['a', 'b'], trace)
    net.deliverAll()
    const b = ts.get('b')!
    await b.stop()
    expect(b.started).toBe(false)
    await b.start({ room: 'room', peerId: 'b' })
    net.deliverAll()
    expect(trace).toEqual(['a up b', 'b up a', 'a down b', 'a up b', 'b up a'])
  })
})

describe('MemoryNetwork API contract', () => {
  it('manual mode delivers nothing until told to', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    const trace: Trace = []
    const ts = await startAll(net, ['a', 'b'], trace)
    await new Promise((r) => setTimeout(r, 10))
    expect(trace).toEqual([])
    expect(net.pending()).toBe(2)
    expect(net.deliverNext()).toBe(true)
    expect(trace).toHaveLength(1)
    expect(net.deliverAll()).toBe(1)
    ts.get('a')!.send('b', new Uint8Array([1]))
    ts.get('a')!.send('b', new Uint8Array([2]))
    expect(net.pending()).toBe(2)
    expect(net.deliverAll(1)).toBe(1)
    expect(net.pending()).toBe(1)
    expect(net.deliverAll()).toBe(1)
    expect(net.deliverNext()).toBe(false)
    expect(trace.slice(2)).toEqual(['b frame a 1', 'b frame a 2'])
  })

  it('deliverNext/deliverAll are refused in auto mode', () => {
    const net = new MemoryNetwork()
    expect(() => net.deliverNext()).toThrow(TransportStateError)
    expect(() => net.deliverAll()).toThrow(TransportStateError)
  })

  it('oversized frames throw a typed FrameTooLargeError that is a SyncmeshError', async () => {
    const net = new MemoryNetwork({ maxFrameSize: 10 })
    const ts = await startAll(net, ['a', 'b'])
    expect(ts.get('a')!.maxFrameSize).toBe(10)
    expect(new MemoryNetwork().transport().maxFrameSize).toBe(DEFAULT_MAX_FRAME_SIZE)
    let error: unknown
    try {
      ts.get('a')!.send('b', new Uint8Array(11))
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(FrameTooLargeError)
    expect(error).toBeInstanceOf(TransportError)
    expect(error).toBeInstanceOf(SyncmeshError)
    expect(error).toMatchObject({ name: 'FrameTooLargeError', code: 'FRAME_TOO_LARGE', size: 11, maxFrameSize: 10 })
    expect(() => ts.get('a')!.broadcast(new Uint8Array(11))).toThrow(FrameTooLargeError)
    // Oversized frames are refused even towards unknown peers.
    expect(() => ts.get('a')!.send('nobody', new Uint8Array(11))).toThrow(FrameTooLargeError)
    expect(() => ts.get('a')!.send('b', new Uint8Array(10))).not.toThrow()
  })

  it('start() twice throws TransportStateError; a duplicate peer id in a room throws PeerIdInUseError', async () => {
    const net = new MemoryNetwork()
    const a = net.transport()
    await a.start({ room: 'r', peerId: 'a' })
    await expect(a.start({ room: 'r', peerId: 'a' })).rejects.toMatchObject({
      name: 'TransportStateError',
      code: 'TRANSPORT_STATE',
    })
    const a2 = net.transport()
    await expect(a2.start({ room: 'r', peerId: 'a' })).rejects.toBeInstanceOf(PeerIdInUseError)
    expect(a2.started).toBe(false)
    await expect(a2.start({ room: '', peerId: 'x' })).rejects.toBeInstanceOf(TransportArgumentError)
    await expect(a2.start({ room: 'r', peerId: '' })).rejects.toBeInstanceOf(TransportArgumentError)
    await a.stop()
    await a2.start({ room: 'r', peerId: 'a' }) // the id is free again
    expect(a2.peerId).toBe('a')
  })

  it('rejects invalid options with TransportArgumentError', () => {
    const bad: MemoryNetworkInit[] = [
      { dropRate: -0.1 },
      { duplicateRate: 2 },
      { dropRate: Number.NaN },
      { reorder: 3 },
      { latencyMs: -1 },
      { latencyMs: [5, 1] },
      { maxFrameSize: 0 },
      { maxFrameSize: 1.5 },
      { mode: 'fast' as 'auto' },
      { seed: Number.POSITIVE_INFINITY },
    ]
    for (const init of bad) expect(() => new MemoryNetwork(init), JSON.stringify(init)).toThrow(TransportArgumentError)
  })

  it('listener errors go to onError and do not stop other listeners or the network', async () => {
    const errors: [unknown, ListenerErrorContext][] = []
    const net = new MemoryNetwork({ mode: 'manual', onError: (e, ctx) => errors.push([e, ctx]) })
    const ts = await startAll(net, ['a', 'b'])
    const got: number[] = []
    ts.get('b')!.on('frame', () => {
      throw new Error('boom')
    })
    ts.get('b')!.on('frame', (_p, f) => got.push(f[0]!))
    ts.get('a')!.on('peer:up', () => {
      throw new Error('up boom')
    })
    net.deliverAll()
    ts.get('a')!.send('b', new Uint8Array([1]))
    ts.get('a')!.send('b', new Uint8Array([2]))
    net.deliverAll()
    expect(got).toEqual([1, 2])
    expect(errors.map(([e, c]) => [(e as Error).message, c])).toEqual([
      ['up boom', { event: 'peer:up', receiver: 'a', peer: 'b' }],
      ['boom', { event: 'frame', receiver: 'b', peer: 'a' }],
      ['boom', { event: 'frame', receiver: 'b', peer: 'a' }],
    ])
  })

  it('without onError, a listener error is rethrown from a later macrotask, after delivery finished', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    const ts = await startAll(net, ['a', 'b'])
    net.deliverAll()
    const got: number[] = []
    ts.get('b')!.on('frame', () => {
      throw new Error('late boom')
    })
    ts.get('b')!.on('frame', (_p, f) => got.push(f[0]!))
    vi.useFakeTimers({ toFake: ['setTimeout'] })
    try {
      ts.get('a')!.send('b', new Uint8Array([1]))
      expect(() => net.deliverAll()).not.toThrow()
      expect(got).toEqual([1])
      expect(() => vi.runOnlyPendingTimers()).toThrow('late boom')
    } finally {
      vi.useRealTimers()
    }
  })

  it('a listener may unsubscribe another listener during delivery', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    const ts = await startAll(net, ['a', 'b'])
    net.deliverAll()
    let secondCalls = 0
    ts.get('b')!.on('frame', () => off())
    const off = ts.get('b')!.on('frame', () => secondCalls++)
    ts.get('a')!.send('b', new Uint8Array([1]))
    net.deliverAll()
    expect(secondCalls).toBe(0)
  })

  it('settle() rejects instead of hanging when listeners ping-pong forever', async () => {
    const net = new MemoryNetwork({ mode: 'manual' })
    const ts = await startAll(net, ['a', 'b'])
    for (const [id, t] of ts) t.on('frame', (p, f) => ts.get(id)!.send(p, f))
    net.deliverAll()
    ts.get('a')!.send('b', new Uint8Array([1]))
    expect(net.deliverAll(1000)).toBe(1000)
    expect(net.pending()).toBe(1)
    await expect(net.settle(100)).rejects.toBeInstanceOf(TransportStateError)
    const auto = new MemoryNetwork({ latencyMs: 1 })
    const ats = await startAll(auto, ['a', 'b'])
    for (const [id, t] of ats) t.on('frame', (p, f) => ats.get(id)!.send(p, f))
    await auto.settle()
    ats.get('a')!.send('b', new Uint8Array([1]))
    await expect(auto.settle(100)).rejects.toBeInstanceOf(TransportStateError)
    for (const t of ats.values()) await t.stop()
    await auto.settle()
  })
})
