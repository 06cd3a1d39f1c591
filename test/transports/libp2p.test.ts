/**
 * The libp2p transport against real libp2p nodes on 127.0.0.1 (no mocks): the Transport conformance suite, replicas
 * converging over TCP, WebSockets and a circuit relay, attaching to a user's node, and hostile input.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import type { Libp2p } from '@libp2p/interface'
import { createReplica, roomTopic, type Replica, type ReplicaInit } from '../../src/index.js'
import { transportConformanceCases, type TransportHarness } from '../../src/testkit/transport-suite.js'
import {
  FrameTooLargeError,
  Libp2pProtocolError,
  SYNC_PROTOCOL,
  type Libp2pTransport,
  type Libp2pTransportInit,
  libp2pTransport,
  roomTopicOf,
} from '../../transports/libp2p/index.js'
import { installPromiseWithResolvers } from '../../transports/libp2p/node.js'
import { encodeFrame, encodeHello } from '../../transports/libp2p/wire.js'
import { freePorts, until } from './libp2p-room.js'

// ---------------------------------------------------------------------------------------------------------------------
// Helpers

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** A plain libp2p node (no syncmesh), as a user would run it: TCP, noise, yamux, identify, and gossipsub or a relay. */
async function userNode(opts: { relayDataLimit?: bigint; relayDurationMs?: number } = {}): Promise<Libp2p> {
  installPromiseWithResolvers() // Node 20: a user's node needs the polyfill before it accepts connections
  const [{ createLibp2p }, { tcp }, { noise }, { yamux }, { identify }, { gossipsub }, { circuitRelayServer }] = await Promise.all([
    import('libp2p'),
    import('@libp2p/tcp'),
    import('@chainsafe/libp2p-noise'),
    import('@chainsafe/libp2p-yamux'),
    import('@libp2p/identify'),
    import('@libp2p/gossipsub'),
    import('@libp2p/circuit-relay-v2'),
  ])
  const services: Record<string, unknown> = { identify: identify() }
  if (opts.relayDataLimit !== undefined) {
    services.relay = circuitRelayServer({ reservations: { defaultDataLimit: opts.relayDataLimit, defaultDurationLimit: opts.relayDurationMs } })
  }
  else services.pubsub = gossipsub({ allowPublishToZeroTopicPeers: true })
  const node = (await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: services as never,
  })) as unknown as Libp2p
  nodes.push(node)
  return node
}

const nodes: Libp2p[] = []
const replicas: Replica[] = []
const transports: Libp2pTransport[] = []

function track(init: Libp2pTransportInit): Libp2pTransport {
  const t = libp2pTransport(init)
  transports.push(t)
  return t
}

async function replica(peerId: string, t: Libp2pTransport, init: Partial<ReplicaInit> = {}): Promise<Replica> {
  const r = await createReplica({ peerId, room: 'libp2p-test', transports: [t], antiEntropyMs: 1000, ...init })
  replicas.push(r)
  return r
}

async function cleanup(): Promise<void> {
  await Promise.allSettled(replicas.splice(0).map((r) => r.close()))
  await Promise.allSettled(transports.splice(0).map((t) => t.stop()))
  await Promise.allSettled(nodes.splice(0).map((n) => n.stop()))
}

afterEach(cleanup)
afterAll(cleanup)

/** The visible todos, canonical (records by id, fields by name). */
function snapshot(r: Replica): string {
  const all = r.collection<{ id: string }>('todos').all()
  const canon = all.sort((a, b) => (a.id < b.id ? -1 : 1)).map((rec) => Object.entries(rec).sort(([x], [y]) => (x < y ? -1 : 1)))
  return JSON.stringify(canon)
}

/** Each replica writes concurrently; waits until all hold the same 3 × n records. */
async function concurrentWritesConverge(rs: Replica[], n = 10): Promise<void> {
  await until(() => rs.every((r) => r.status().peers.length === rs.length - 1), 10_000, 'full mesh of peers')
  await Promise.all(
    rs.map(async (r, i) => {
      const c = r.collection<{ id: string; by?: string; n?: number }>('todos')
      for (let k = 0; k < n; k++) {
        await c.put({ id: `r${i}-${k}`, by: r.peerId, n: k })
        await c.update('shared', { [`f${i}`]: k, by: r.peerId } as never)
      }
    }),
  )
  await until(
    () => rs.every((r) => r.collection('todos').all().length === rs.length * n + 1) && new Set(rs.map(snapshot)).size === 1,
    15_000,
    'convergence',
  ).catch((err: Error) => {
    throw new Error(`${err.message}: ${rs.map((r) => `${r.peerId} holds ${r.collection('todos').all().length} ${snapshot(r).slice(-200)}`).join('\n')}`)
  })
}

// ---------------------------------------------------------------------------------------------------------------------
// Conformance

/** Transports that create their own nodes, on pre-picked loopback ports, bootstrapping to each other. */
const ownNodes: TransportHarness = {
  async create(n) {
    const ports = await freePorts(n)
    const addrs = ports.map((p) => `/ip4/127.0.0.1/tcp/${p}`)
    const ts = addrs.map((listen, i) => libp2pTransport({ listen: [listen], bootstrap: addrs.filter((_, j) => j !== i), redialMs: 100, announceIntervalMs: 1000 }))
    return {
      transports: ts,
      settle: () => sleep(20),
      close: async () => {
        await Promise.all(ts.map((t) => t.stop()))
      },
    }
  },
}

/** Transports attached to user nodes that are already connected to each other (discovery by gossipsub topic). */
const attached: TransportHarness = {
  async create(n) {
    const ns = await Promise.all(Array.from({ length: n }, () => userNode()))
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) await ns[i]!.dial(ns[j]!.getMultiaddrs()[0]!)
    const ts = ns.map((node) => libp2pTransport({ node }))
    return {
      transports: ts,
      settle: () => sleep(20),
      close: async () => {
        await Promise.all(ts.map((t) => t.stop()))
        await Promise.all(ns.map((node) => node.stop()))
      },
    }
  },
}

describe('libp2p transport conformance (own nodes over TCP, bootstrap)', () => {
  for (const c of transportConformanceCases(ownNodes)) it(c.name, c.run)
})

describe('libp2p transport conformance (attached to connected user nodes, gossipsub discovery)', () => {
  for (const c of transportConformanceCases(attached)) it(c.name, c.run)
})

// ---------------------------------------------------------------------------------------------------------------------
// Replicas

describe('replicas over libp2p', () => {
  it('three replicas over TCP converge on concurrent writes (the third found through gossipsub)', async () => {
    const t0 = track({ listen: ['/ip4/127.0.0.1/tcp/0'], announceIntervalMs: 500 })
    const r0 = await replica('tcp-0', t0)
    const seed = t0.multiaddrs.filter((a) => a.includes('/tcp/') && !a.includes('/ws'))
    const t1 = track({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: seed, announceIntervalMs: 500 })
    const t2 = track({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: seed, announceIntervalMs: 500 })
    const r1 = await replica('tcp-1', t1)
    const r2 = await replica('tcp-2', t2)
    await concurrentWritesConverge([r0, r1, r2])
    // t1 and t2 only knew t0: their direct session came from the room announcements.
    expect(t1.connection('tcp-2')).toBeDefined()
    expect(t1.connection('tcp-2')!.limited).toBe(false)
  })
})

describe('replicas over libp2p (more)', () => {
  it('three replicas over WebSockets converge on concurrent writes', async () => {
    const ws = ['/ip4/127.0.0.1/tcp/0/ws']
    const t0 = track({ listen: ws, announceIntervalMs: 500 })
    const r0 = await replica('ws-0', t0)
    const seed = t0.multiaddrs
    expect(seed.length).toBeGreaterThan(0)
    expect(seed.every((a) => a.includes('/ws'))).toBe(true)
    const t1 = track({ listen: ws, bootstrap: seed, announceIntervalMs: 500 })
    const t2 = track({ listen: ws, bootstrap: seed, announceIntervalMs: 500 })
    const r1 = await replica('ws-1', t1)
    const r2 = await replica('ws-2', t2)
    await concurrentWritesConverge([r0, r1, r2])
    for (const [t, peers] of [[t0, ['ws-1', 'ws-2']], [t1, ['ws-0', 'ws-2']], [t2, ['ws-0', 'ws-1']]] as const) {
      for (const p of peers) expect(t.connection(p)?.remoteAddr, `${p} over WebSockets`).toMatch(/\/ws/)
    }
  })

  it('a node listening only on a relay address syncs through a circuit relay, across relay limit resets', async () => {
    // The relay cuts each relayed connection after 48 KiB (both directions, all protocols): well below the ~240 KiB
    // of records the relay-only node holds, so the sync can only complete by resuming from version vectors.
    const relay = await userNode({ relayDataLimit: 48n * 1024n })
    const relayAddr = relay.getMultiaddrs()[0]!.toString()
    const relayPort = /\/tcp\/(\d+)/.exec(relayAddr)![1]!
    const behindNat = track({
      listen: [],
      relay: [relayAddr],
      redialMs: 200,
      // Simulates a node nobody can dial and that cannot reach the others directly either: only the relay is dialable.
      libp2p: { connectionGater: { denyDialMultiaddr: (ma) => !ma.toString().includes(`/tcp/${relayPort}`) } },
    })
    const small = { maxMessageBytes: 8 * 1024 }
    const rB = await replica('behind-nat', behindNat, small)
    await until(() => behindNat.multiaddrs.some((a) => a.includes('/p2p-circuit')), 5000, 'a relay reservation')
    const circuit = behindNat.multiaddrs.filter((a) => a.includes('/p2p-circuit'))
    expect(behindNat.multiaddrs.every((a) => a.includes('/p2p-circuit'))).toBe(true)
    const blob = 'x'.repeat(1000)
    for (let k = 0; k < 240; k++) await rB.collection('todos').put({ id: `nat-${k}`, blob, k } as never)

    const tA = track({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: circuit, redialMs: 200 })
    const rA = await replica('direct-a', tA, small)
    await until(() => rA.collection('todos').all().length === 240, 30_000, 'the 240 records to cross the relay')
    const stats = tA.stats()
    // Each relayed connection carries at most 48 KiB: the transport renewed it at least 4 times on the way.
    expect(stats.limitedSessions, JSON.stringify(stats)).toBeGreaterThanOrEqual(5)
    // Resumed, never restarted: what crossed is the data plus a little, not the data again on every connection.
    expect(stats.bytesReceived, JSON.stringify(stats)).toBeLessThan(240 * 1100 * 1.5)

    // A third node joins (it can dial A directly, and B through the relay); writes from everyone converge.
    const tC = track({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [...tA.multiaddrs.filter((a) => !a.includes('/ws')), ...circuit], redialMs: 200 })
    const rC = await replica('direct-c', tC, small)
    await until(() => rC.collection('todos').all().length === 240, 30_000, 'C to catch up')
    await Promise.all([rA, rB, rC].map((r, i) => r.collection('todos').put({ id: `late-${i}`, by: r.peerId } as never)))
    await until(() => [rA, rB, rC].every((r) => r.collection('todos').all().length === 243) && new Set([rA, rB, rC].map(snapshot)).size === 1, 15_000, 'convergence through the relay')
    // (a relayed session is renewed now and then: wait for one to be up to look at it)
    await until(() => tA.connection('behind-nat') !== undefined && tA.connection('direct-c') !== undefined, 10_000, 'both sessions up')
    expect(tA.connection('behind-nat')!.limited).toBe(true)
    expect(tA.connection('direct-c')!.limited).toBe(false)
  })

  it('keeps syncing a stream of writes through a relay that cuts every connection after one second', async () => {
    const relay = await userNode({ relayDataLimit: 1n << 24n, relayDurationMs: 1000 })
    const relayAddr = relay.getMultiaddrs()[0]!.toString()
    const relayPort = /\/tcp\/(\d+)/.exec(relayAddr)![1]!
    const behindNat = track({
      listen: [],
      relay: [relayAddr],
      libp2p: { connectionGater: { denyDialMultiaddr: (ma) => !ma.toString().includes(`/tcp/${relayPort}`) } },
    })
    const rB = await replica('nat-writer', behindNat, { antiEntropyMs: 300 })
    await until(() => behindNat.multiaddrs.some((a) => a.includes('/p2p-circuit')), 5000, 'a relay reservation')
    const tA = track({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: behindNat.multiaddrs, redialMs: 100 })
    const rA = await replica('direct-reader', tA, { antiEntropyMs: 300 })
    await until(() => rA.status().peers.length === 1, 5000, 'the relayed session')
    const end = Date.now() + 3500
    let n = 0
    while (Date.now() < end) {
      await rB.collection('todos').put({ id: `tick-${n++}` })
      await sleep(15)
    }
    await until(() => rA.collection('todos').all().length === n, 10_000, `all ${n} writes to arrive`)
    expect(tA.stats().limitedSessions).toBeGreaterThanOrEqual(3) // cut at least twice while the writes went on
  })
})

describe('living with other libp2p users', () => {
  it("attaches to a user's node and detaches, leaving the node and its own protocols working", async () => {
    const ECHO = '/user-app/echo/1.0.0'
    const [u1, u2] = [await userNode(), await userNode()]
    for (const u of [u1, u2]) {
      await u.handle(ECHO, (stream) => {
        stream.addEventListener('message', (e) => stream.send(e.data))
        stream.addEventListener('remoteCloseWrite', () => void stream.close().catch(() => undefined))
      })
    }
    const echo = async (from: Libp2p, to: Libp2p): Promise<number[]> => {
      const stream = await from.dialProtocol(to.peerId, ECHO)
      const got = new Promise<number[]>((resolve) => stream.addEventListener('message', (e) => resolve([...e.data.subarray()]), { once: true }))
      stream.send(new Uint8Array([1, 2, 3]))
      const bytes = await got
      await stream.close()
      return bytes
    }
    await u1.dial(u2.getMultiaddrs()[0]!)
    expect(await echo(u1, u2)).toEqual([1, 2, 3])

    const r1 = await replica('user-1', track({ node: u1 }))
    const r2 = await replica('user-2', track({ node: u2 }))
    expect(u1.getProtocols()).toContain(SYNC_PROTOCOL)
    await until(() => r1.status().peers.length === 1 && r2.status().peers.length === 1, 10_000, 'the two attached replicas to meet')
    await r1.collection('todos').put({ id: 'from-1' })
    await r2.collection('todos').put({ id: 'from-2' })
    await until(() => snapshot(r1) === snapshot(r2) && r1.collection('todos').all().length === 2, 5000, 'sync over the user nodes')
    expect(await echo(u2, u1)).toEqual([1, 2, 3])

    await r1.close()
    await r2.close()
    for (const u of [u1, u2]) {
      expect(u.status).toBe('started')
      expect(u.getProtocols()).toContain(ECHO)
      expect(u.getProtocols()).not.toContain(SYNC_PROTOCOL)
      expect((u.services as { pubsub: { getTopics(): string[] } }).pubsub.getTopics()).toEqual([])
    }
    expect(u1.getConnections(u2.peerId).length).toBeGreaterThan(0) // we never hung up on the user's peers
    expect(await echo(u1, u2)).toEqual([1, 2, 3])
    expect(await echo(u2, u1)).toEqual([1, 2, 3])

    // Attaching again later works as the first time.
    const r1b = await replica('user-1b', track({ node: u1 }))
    const r2b = await replica('user-2b', track({ node: u2 }))
    await until(() => r1b.status().peers.length === 1 && r2b.status().peers.length === 1, 10_000, 'a second attachment')
  })

  it('serves several rooms on one user node, each seeing only its own peers', async () => {
    const [n1, n2] = [await userNode(), await userNode()]
    await n1.dial(n2.getMultiaddrs()[0]!)
    const [a1, a2, b1, b2] = [track({ node: n1 }), track({ node: n2 }), track({ node: n1 }), track({ node: n2 })]
    const got: string[] = []
    a2.on('frame', (p, f) => got.push(`a:${p}:${f[0]}`))
    b2.on('frame', (p, f) => got.push(`b:${p}:${f[0]}`))
    const ups: string[] = []
    for (const t of [a2, b2]) t.on('peer:up', (p) => ups.push(p))
    await Promise.all([a1.start({ room: 'A', peerId: 'a1' }), a2.start({ room: 'A', peerId: 'a2' }), b1.start({ room: 'B', peerId: 'b1' }), b2.start({ room: 'B', peerId: 'b2' })])
    await expect(track({ node: n1 }).start({ room: 'A', peerId: 'a3' })).rejects.toThrow(/already serves this room/)
    await until(() => ups.length === 2, 5000, 'each room to connect')
    expect(ups.sort()).toEqual(['a1', 'b1'])
    a1.send('a2', new Uint8Array([1]))
    b1.send('b2', new Uint8Array([2]))
    a1.send('b2', new Uint8Array([3])) // not a peer of room A
    await until(() => got.length === 2, 5000, 'the two frames')
    await a1.stop()
    b1.send('b2', new Uint8Array([4]))
    await until(() => got.length === 3, 5000, 'room B to keep working after room A left')
    expect(got.sort()).toEqual(['a:a1:1', 'b:b1:2', 'b:b1:4'])
    expect(n1.getProtocols()).toContain(SYNC_PROTOCOL)
    await b1.stop()
    expect(n1.getProtocols()).not.toContain(SYNC_PROTOCOL)
  })

  it('resets streams carrying garbage with typed errors; peers that do not speak the protocol are no members', async () => {
    const errors: Error[] = []
    const tA = track({ listen: ['/ip4/127.0.0.1/tcp/0'], onError: (e) => errors.push(e) })
    const rA = await replica('victim', tA)
    const tB = track({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: tA.multiaddrs.filter((a) => !a.includes('/ws')) })
    const rB = await replica('friend', tB)
    const rogue = await userNode() // a libp2p node without syncmesh
    await rogue.dial(tA.node!.getMultiaddrs()[0]!)
    const topic = await roomTopicOf(roomTopic('syncmesh', 'libp2p-test'))

    const attack = async (bytes: Uint8Array[]): Promise<string> => {
      const stream = await rogue.dialProtocol(tA.node!.peerId, SYNC_PROTOCOL)
      for (const b of bytes) stream.send(b)
      await until(() => stream.status !== 'open', 5000, 'the rogue stream to be reset')
      return stream.status
    }
    const hello = (over: Partial<{ topic: string; peerId: string; maxFrameSize: number }> = {}) =>
      encodeFrame(encodeHello({ topic, peerId: 'rogue', maxFrameSize: 64 * 1024, ...over }))
    const before = errors.length
    expect(await attack([new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff])])).toBe('reset') // length prefix too long
    expect(await attack([new Uint8Array([0xa0, 0x8d, 0x06])])).toBe('reset') // a 100 000-byte HELLO
    expect(await attack([encodeFrame(new Uint8Array([9, 1, 2, 3]))])).toBe('reset') // HELLO of version 9
    expect(await attack([hello({ maxFrameSize: 1024 })])).toBe('reset') // disagrees on the frame limit
    expect(await attack([hello(), new Uint8Array([0x81, 0x80, 0x04])])).toBe('reset') // a 65 537-byte data frame
    expect(await attack([hello({ topic: `${topic}-elsewhere` })])).toBe('reset') // another room: quietly refused
    expect(await attack([hello({ peerId: 'victim' })])).toBe('reset') // our own peer id
    const typed = errors.slice(before)
    expect(typed.map((e) => e.constructor.name)).toEqual([
      'Libp2pProtocolError',
      'FrameTooLargeError',
      'Libp2pProtocolError',
      'Libp2pProtocolError',
      'FrameTooLargeError',
      'PeerIdInUseError',
    ])
    expect(typed[1]).toBeInstanceOf(FrameTooLargeError)
    expect(typed[0]).toBeInstanceOf(Libp2pProtocolError)
    expect(tA.stats().protocolErrors).toBe(6)

    // The rogue's valid HELLO made it a peer for a moment; it is gone, and the real peers still sync.
    await until(() => rA.status().peers.map((p) => p.id).join() === 'friend', 5000, 'only the real peer to remain')
    await rB.collection('todos').put({ id: 'still-fine' })
    await until(() => rA.collection('todos').get('still-fine') !== undefined, 5000, 'sync after the attacks')
    // A libp2p peer that does not speak the protocol at all: connected, but never a member.
    expect(tA.node!.getConnections(rogue.peerId).length).toBeGreaterThan(0)
    expect(rA.status().peers.map((p) => p.id)).toEqual(['friend'])
  })
})
