import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket as WsWebSocket, WebSocketServer } from 'ws'
import { createReplica, roomTopic, type Replica } from '../../src/index.js'
import { startServer, type ServerInit, type SyncmeshServer } from '../../src/server/index.js'
import { transportConformanceCases, type TransportHarness } from '../../src/testkit/transport-suite.js'
import {
  FrameTooLargeError,
  PeerIdInUseError,
  RELAY_PROTOCOL_VERSION,
  RelayProtocolError,
  TransportArgumentError,
  TransportStateError,
  decodeClientMessage,
  decodeServerMessage,
  encodeClientOp,
  encodeRelayMessage,
  encodeServerOp,
  relayIdBytes,
  relayTransport,
  type RelayClientOp,
  type RelayServerOp,
  type RelayTransport,
  type RelayTransportInit,
  type WebSocketLike,
} from '../../transports/relay/index.js'
import { RawClient, RecordingProxy, sleep, until } from '../server/helpers.js'

const servers: SyncmeshServer[] = []
const transports: RelayTransport[] = []
const replicas: Replica[] = []
afterEach(async () => {
  for (const r of replicas.splice(0)) await r.close().catch(() => {})
  for (const t of transports.splice(0)) await t.stop()
  for (const s of servers.splice(0)) await s.close()
})

async function server(init: ServerInit = {}): Promise<SyncmeshServer> {
  const s = await startServer({ port: 0, log: false, ...init })
  servers.push(s)
  return s
}

function transport(init: RelayTransportInit): RelayTransport {
  const t = relayTransport({ minReconnectDelayMs: 50, maxReconnectDelayMs: 400, ...init })
  transports.push(t)
  return t
}

// ---------------------------------------------------------------------------------------------------------------------

describe('relay wire codec', () => {
  const clientOps: RelayClientOp[] = [
    { op: 'join', topic: 'a'.repeat(64), peer: 'peer-ü-✓', token: new Uint8Array(0) },
    { op: 'join', topic: 't', peer: 'p', token: Uint8Array.of(1, 2, 3) },
    { op: 'leave' },
    { op: 'put', id: 7, blob: Uint8Array.of(0xb0, 1) },
    { op: 'fetch', id: 0xffffffff, after: 2 ** 53 - 1 },
    { op: 'compact', id: 1, upto: 2 ** 40, part: 1, count: 3, blob: Uint8Array.of(0xb1, 2, 3) },
    { op: 'send', to: 'x', payload: Uint8Array.of(0, 1, 255) },
    { op: 'send', to: 'y'.repeat(255), payload: new Uint8Array(0) },
    { op: 'broadcast', payload: Uint8Array.from(randomBytes(1000)) },
    { op: 'ping', nonce: 0xffffffff },
  ]
  const serverOps: RelayServerOp[] = [
    { op: 'welcome', limits: { maxMessageBytes: 131072, opsPerSecond: 1000, opsBurst: 2000, bytesPerSecond: 4 << 20, bytesBurst: 4 << 20, maxOps: 1024 } },
    { op: 'peers', peers: [] },
    { op: 'peers', peers: ['a', 'b', 'ç'] },
    { op: 'up', peer: 'p' },
    { op: 'down', peer: 'p' },
    { op: 'from', from: 'p', payload: Uint8Array.of(7) },
    { op: 'pong', nonce: 3 },
    { op: 'error', code: 1, message: '' },
    { op: 'error', code: 2, message: 'room full' },
    { op: 'store', storeId: 'abc', head: 5, bytes: 2 ** 33 },
    { op: 'stored', id: 1, seq: 9, bytes: 100 },
    { op: 'blob', id: 1, seq: 2 ** 52, blob: Uint8Array.of(0xb0, 9) },
    { op: 'fetched', id: 1, upto: 9, more: true, bytes: 0 },
    { op: 'compacted', id: 1, applied: false, bytes: 3 },
  ]
  const norm = (ops: unknown[]): unknown => JSON.parse(JSON.stringify(ops, (_k, v: unknown) => (v instanceof Uint8Array ? Array.from(v) : v)))

  it('round-trips every op, many per message, behind the version byte', () => {
    const c = encodeRelayMessage(clientOps.map(encodeClientOp))
    expect(c[0]).toBe(RELAY_PROTOCOL_VERSION)
    expect(norm(decodeClientMessage(c))).toEqual(norm(clientOps))
    const s = encodeRelayMessage(serverOps.map(encodeServerOp))
    expect(norm(decodeServerMessage(s))).toEqual(norm(serverOps))
  })

  it('every truncation of a valid message is refused with RelayProtocolError (or ends on an op boundary)', () => {
    const cases: [Uint8Array, (m: Uint8Array) => unknown[], number[]][] = [
      [encodeRelayMessage(clientOps.map(encodeClientOp)), decodeClientMessage, clientOps.map((o) => encodeClientOp(o).length)],
      [encodeRelayMessage(serverOps.map(encodeServerOp)), decodeServerMessage, serverOps.map((o) => encodeServerOp(o).length)],
    ]
    for (const [msg, decode, lengths] of cases) {
      const boundaries = new Set<number>()
      let at = 1
      for (const l of lengths) boundaries.add((at += l))
      for (let cut = 0; cut < msg.length; cut++) {
        if (boundaries.has(cut)) {
          expect(decode(msg.subarray(0, cut)).length).toBeGreaterThan(0)
        } else {
          expect(() => decode(msg.subarray(0, cut))).toThrow(RelayProtocolError)
        }
      }
    }
  })

  it('fuzz: random and mutated messages decode or throw RelayProtocolError, never anything else', () => {
    const valid = [encodeRelayMessage(clientOps.map(encodeClientOp)), encodeRelayMessage(serverOps.map(encodeServerOp))]
    let decoded = 0
    let refused = 0
    const attempt = (bytes: Uint8Array): void => {
      for (const decode of [decodeClientMessage, decodeServerMessage]) {
        try {
          decode(bytes)
          decoded++
        } catch (e) {
          expect(e).toBeInstanceOf(RelayProtocolError)
          refused++
        }
      }
    }
    for (let i = 0; i < 10_000; i++) {
      const b = Uint8Array.from(randomBytes(1 + (i % 40)))
      if (i % 2 === 0) b[0] = RELAY_PROTOCOL_VERSION
      attempt(b)
      const m = Uint8Array.from(valid[i % 2]!)
      for (let k = 0; k <= i % 3; k++) m[1 + ((i * 7919 + k * 104729) % (m.length - 1))] = (i * 31 + k) & 255
      attempt(m)
    }
    expect(decoded).toBeGreaterThan(100)
    expect(refused).toBeGreaterThan(100)
  })

  it('refuses ids that are empty, longer than 255 UTF-8 bytes or not well-formed Unicode', () => {
    expect(() => relayIdBytes('')).toThrow(RelayProtocolError)
    expect(() => relayIdBytes('é'.repeat(128))).toThrow(/256 UTF-8 bytes/)
    expect(relayIdBytes('é'.repeat(127)).length).toBe(254)
    expect(() => relayIdBytes('a\uD800b')).toThrow(/well-formed/)
    expect(relayIdBytes('😀').length).toBe(4)
  })
})

// ---------------------------------------------------------------------------------------------------------------------

describe('relay transport conformance (against the syncmesh server on 127.0.0.1)', () => {
  let shared: SyncmeshServer
  beforeAll(async () => {
    shared = await startServer({ port: 0, log: false })
  })
  afterAll(async () => {
    await shared.close()
  })
  const harness: TransportHarness = {
    async create(n) {
      const ts = Array.from({ length: n }, () => relayTransport({ url: shared.url }))
      return {
        transports: ts,
        settle: () => sleep(20),
        close: async () => {
          for (const t of ts) await t.stop()
        },
      }
    },
  }
  for (const c of transportConformanceCases(harness)) it(c.name, c.run)
})

// ---------------------------------------------------------------------------------------------------------------------

/** Three replicas in one room, each through its own relay transport. */
async function threeReplicas(url: string, room = 'the secret room name', app = 'relay-test-app'): Promise<Replica[]> {
  const rs: Replica[] = []
  for (let i = 0; i < 3; i++) {
    const r = await createReplica({ peerId: `replica-${i}`, room, app, antiEntropyMs: 500, transports: [transport({ url })] })
    replicas.push(r)
    rs.push(r)
  }
  return rs
}

type Todo = { id: string; title?: string; by?: string; n?: number }

function snapshot(r: Replica): string {
  return JSON.stringify(r.collection<Todo>('todos').all().sort((a, b) => (a.id < b.id ? -1 : 1)))
}

async function converged(rs: Replica[], expectIds: number, ms = 10_000): Promise<void> {
  await until(
    () => {
      const s = rs.map(snapshot)
      return s.every((x) => x === s[0]) && rs[0]!.collection('todos').all().length === expectIds
    },
    ms,
    `replicas to converge on ${expectIds} records`,
  )
}

describe('replicas through the relay', () => {
  it('three replicas converge on concurrent writes, and the room name never reaches the server', async () => {
    const logs: string[] = []
    const s = await server({ log: (l) => logs.push(l) })
    const proxy = new RecordingProxy(() => s.port)
    await proxy.listen()
    try {
      const rs = await threeReplicas(proxy.url)
      await until(() => rs.every((r) => r.status().peers.filter((p) => p.connected).length === 2), 5000, 'full mesh')
      // Concurrent writes: disjoint records and the same record from every replica.
      await Promise.all(
        rs.flatMap((r, i) => [
          ...Array.from({ length: 20 }, (_, k) => r.collection<Todo>('todos').put({ id: `r${i}-${k}`, title: `from ${i}`, n: k })),
          r.collection<Todo>('todos').update('shared', { by: `replica-${i}`, n: i }),
        ]),
      )
      await converged(rs, 61)
      await Promise.all(rs.map((r) => r.sync({ timeoutMs: 5000 })))
      const shared = rs.map((r) => r.collection<Todo>('todos').get('shared'))
      expect(shared[1]).toEqual(shared[0])
      expect(shared[2]).toEqual(shared[0])

      // What the server received: the HTTP upgrades and every (unmasked) WebSocket payload.
      const wire = proxy.all()
      expect(proxy.headers).toHaveLength(3)
      expect(proxy.payloads.length).toBeGreaterThan(3)
      const topic = roomTopic('relay-test-app', 'the secret room name')
      expect(wire.includes(Buffer.from(topic))).toBe(true) // the hash is what peers meet under
      for (const secret of ['the secret room name', 'secret room', 'relay-test-app']) {
        expect(wire.includes(Buffer.from(secret)), `"${secret}" crossed the wire`).toBe(false)
      }
      const logText = logs.join('\n')
      expect(logText).not.toContain('secret')
      expect(logText).not.toContain(topic)
      expect(logText).not.toContain('replica-0')
    } finally {
      await proxy.close()
    }
  })

  it('after a server restart the transports reconnect with backoff, peers reappear and replicas converge', async () => {
    const s1 = await server()
    const port = s1.port
    const rs = await threeReplicas(s1.url, 'restart-room')
    const ups = rs.map((r) => {
      const seen: string[] = []
      r.on('peer:join', (p) => seen.push(p))
      return seen
    })
    await until(() => rs.every((r) => r.status().peers.length === 2), 5000, 'full mesh')
    await rs[0]!.collection<Todo>('todos').put({ id: 'before', title: 'before restart' })
    await converged(rs, 1)

    await s1.close()
    servers.splice(servers.indexOf(s1), 1)
    const joinsBefore = ups.map((u) => u.length)
    await until(() => rs.every((r) => r.status().peers.length === 0), 3000, 'every peer to go down')
    // Writes while the relay is down stay local...
    await Promise.all(rs.map((r, i) => r.collection<Todo>('todos').put({ id: `offline-${i}`, title: `written while down by ${i}` })))
    await sleep(300)
    const s2 = await server({ port })
    // ...and spread once the transports are back.
    await until(() => rs.every((r) => r.status().peers.length === 2), 8000, 'peers to reappear')
    await converged(rs, 4)
    ups.forEach((u, i) => {
      const others = [0, 1, 2].filter((j) => j !== i).map((j) => `replica-${j}`)
      expect(u.slice(joinsBefore[i]).sort()).toEqual(others) // each saw both peers come back
    })
    const st = transports.slice(-3).map((t) => t.stats())
    expect(st.every((x) => x.joins === 2 && x.connectAttempts >= 2)).toBe(true)
    expect(s2.stats().clients).toBe(3)
  })
})

// ---------------------------------------------------------------------------------------------------------------------

/** A fake WebSocket that never connects: every attempt fails at once. Records when each attempt was made. */
function failingWebSocket(): { Ctor: new (url: string) => WebSocketLike; attempts: number[] } {
  const attempts: number[] = []
  class Failing implements WebSocketLike {
    binaryType = 'arraybuffer'
    readyState = 0
    bufferedAmount = 0
    onopen: ((e: unknown) => void) | null = null
    onmessage: ((e: unknown) => void) | null = null
    onclose: ((e: { code: number; reason: string }) => void) | null = null
    onerror: ((e: unknown) => void) | null = null
    constructor(_url: string) {
      attempts.push(Date.now())
      setTimeout(() => {
        this.readyState = 3
        this.onerror?.({})
        this.onclose?.({ code: 1006, reason: '' })
      }, 0)
    }
    send(): void {
      throw new Error('not open')
    }
    close(): void {
      this.readyState = 3
    }
  }
  return { Ctor: Failing, attempts }
}

describe('relay transport behaviour', () => {
  it('reconnect delays grow exponentially with jitter in [d/2, d] and are capped', async () => {
    const { Ctor, attempts } = failingWebSocket()
    let r = 0
    const randoms = [0, 1, 0.5, 0, 1, 0.5, 1, 0, 1, 1, 1]
    const t = transport({ url: 'ws://127.0.0.1:9', WebSocket: Ctor, minReconnectDelayMs: 40, maxReconnectDelayMs: 320, random: () => randoms[r++ % randoms.length]! })
    await t.start({ room: 'r', peerId: 'p' }) // resolves although the server is unreachable
    expect(t.connected).toBe(false)
    await until(() => attempts.length >= 8, 5000, '8 attempts')
    await t.stop()
    const gaps = attempts.slice(1).map((a, i) => a - attempts[i]!)
    // nominal d: 40, 80, 160, 320, 320, 320, 320 — delays: d/2 + random * d/2
    const expected = [20, 80, 120, 160, 320, 240, 320]
    gaps.forEach((g, i) => {
      expect(g).toBeGreaterThanOrEqual(expected[i]! - 2)
      expect(g).toBeLessThan(expected[i]! + 60)
    })
    const n = attempts.length
    await sleep(400)
    expect(attempts.length).toBe(n) // stop() never reconnects
  })

  it('start() resolves while the server is down; the transport joins once it comes up', async () => {
    const probe = await server()
    const port = probe.port
    await probe.close()
    servers.splice(0)
    const url = `ws://127.0.0.1:${port}`
    const a = transport({ url })
    const b = transport({ url })
    const ups: string[] = []
    a.on('peer:up', (p) => ups.push(p))
    await a.start({ room: 'late', peerId: 'a' })
    await b.start({ room: 'late', peerId: 'b' })
    expect(a.connected).toBe(false)
    await server({ port })
    await until(() => ups.includes('b'), 5000, 'a sees b')
    expect(a.connected && b.connected).toBe(true)
  })

  it('stop() closes the socket and never reconnects, even when the server restarts', async () => {
    const s = await server()
    const port = s.port
    const t = transport({ url: s.url })
    await t.start({ room: 'r', peerId: 'p' })
    expect(t.connected).toBe(true)
    await t.stop()
    await until(() => s.stats().clients === 0, 2000, 'the server to see the close')
    await s.close()
    servers.splice(0)
    const s2 = await server({ port })
    await sleep(600)
    expect(s2.stats().connections).toBe(0)
    expect(t.stats().connectAttempts).toBe(1)
    // And it can be started again.
    await t.start({ room: 'r', peerId: 'p' })
    expect(t.connected).toBe(true)
  })

  it('stop() right after start() wins: nothing connects', async () => {
    const s = await server()
    const t = transport({ url: s.url })
    const starting = t.start({ room: 'r', peerId: 'p' })
    await t.stop()
    await starting
    await sleep(200)
    expect(t.connected).toBe(false)
    expect(s.stats().connections).toBe(0)
  })

  it('validates its options and arguments', async () => {
    expect(() => relayTransport({ url: 'http://x' })).toThrow(TransportArgumentError)
    expect(() => relayTransport({ url: 'ws://x', maxFrameSize: 0 })).toThrow(TransportArgumentError)
    const s = await server()
    const t = transport({ url: s.url })
    await expect(t.start({ room: '', peerId: 'p' })).rejects.toThrow(TransportArgumentError)
    await expect(t.start({ room: 'r', peerId: 'x'.repeat(256) })).rejects.toThrow(TransportArgumentError)
    await expect(t.start({ room: 'r', peerId: 'bad\uDC00' })).rejects.toThrow(TransportArgumentError)
    await t.start({ room: 'r', peerId: 'p' })
    await expect(t.start({ room: 'r', peerId: 'p' })).rejects.toThrow(TransportStateError)
    expect(() => t.send('q', new Uint8Array(t.maxFrameSize + 1))).toThrow(FrameTooLargeError)
    expect(t.maxFrameSize).toBe(64 * 1024)
    // Both the `ws` class and the browser's WebSocket fit the option's type.
    const withWs: RelayTransportInit = { url: s.url, WebSocket: WsWebSocket }
    const withDom: RelayTransportInit = { url: s.url, WebSocket: undefined as unknown as typeof globalThis.WebSocket }
    const explicit = transport(withWs)
    await explicit.start({ room: 'r', peerId: 'explicit-ws' })
    expect(explicit.connected).toBe(true)
    expect(withDom.url).toBe(s.url)
  })

  it('paces itself within the limits the server announces: a burst of 600 frames arrives without a violation', async () => {
    const s = await server({ ratePerSecond: 600, rateBurst: 100 })
    const a = transport({ url: s.url })
    const b = transport({ url: s.url })
    let got = 0
    b.on('frame', () => got++)
    await a.start({ room: 'paced', peerId: 'a' })
    await b.start({ room: 'paced', peerId: 'b' })
    await until(() => a.connected && b.connected, 2000, 'both joined')
    await sleep(50)
    for (let i = 0; i < 600; i++) a.send('b', Uint8Array.of(i & 255))
    await until(() => got === 600, 8000, 'all 600 frames')
    expect(s.stats().violations).toBe(0)
    expect(a.stats().messagesOut).toBeGreaterThan(5) // the burst had to be spread over several messages
    expect(a.stats().connectAttempts).toBe(1)
  })

  it('the send queue is bounded: frames beyond maxQueuedBytes are dropped, never thrown', async () => {
    const s = await server({ ratePerSecond: 100, rateBurst: 10 })
    const a = transport({ url: s.url, maxQueuedBytes: 2000 })
    const b = transport({ url: s.url })
    let got = 0
    b.on('frame', () => got++)
    await a.start({ room: 'q', peerId: 'a' })
    await b.start({ room: 'q', peerId: 'b' })
    await until(() => a.connected && b.connected, 2000, 'both joined')
    await sleep(30)
    for (let i = 0; i < 500; i++) a.send('b', new Uint8Array(50))
    expect(a.stats().dropped).toBeGreaterThan(400)
    await until(() => got === 500 - a.stats().dropped, 5000, 'the queued frames')
    expect(s.stats().violations).toBe(0)
  })

  it('a frame larger than the server accepts is dropped and reported; the connection survives', async () => {
    const s = await server({ maxMessageBytes: 2048 })
    const errors: Error[] = []
    const a = transport({ url: s.url, onError: (e) => errors.push(e) })
    const b = transport({ url: s.url })
    const got: number[] = []
    b.on('frame', (_p, f) => got.push(f.length))
    await a.start({ room: 'big', peerId: 'a' })
    await b.start({ room: 'big', peerId: 'b' })
    await until(() => a.connected && b.connected, 2000, 'both joined')
    await sleep(30)
    a.send('b', new Uint8Array(4000))
    a.send('b', new Uint8Array(100))
    await until(() => got.length === 1, 2000, 'the small frame')
    expect(got).toEqual([100])
    expect(errors.some((e) => e instanceof FrameTooLargeError)).toBe(true)
    expect(a.stats().connectAttempts).toBe(1)
  })

  it('a duplicate peer id is reported and retried until the id is free', async () => {
    const s = await server()
    const errors: Error[] = []
    const first = transport({ url: s.url })
    const second = transport({ url: s.url, onError: (e) => errors.push(e) })
    const watcher = transport({ url: s.url })
    const ups: string[] = []
    watcher.on('peer:up', (p) => ups.push(p))
    await watcher.start({ room: 'dup', peerId: 'w' })
    await first.start({ room: 'dup', peerId: 'same' })
    await second.start({ room: 'dup', peerId: 'same' }) // resolves: refused, retrying
    expect(second.connected).toBe(false)
    expect(errors.some((e) => e instanceof PeerIdInUseError)).toBe(true)
    await first.stop()
    await until(() => second.connected, 5000, 'the second to join once the id is free')
    await until(() => ups.filter((p) => p === 'same').length === 2, 2000, 'watcher sees the id come back')
  })

  it('a server that sends garbage never crashes the client: it reports, reconnects and recovers', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    await new Promise((r) => wss.once('listening', r))
    const port = (wss.address() as { port: number }).port
    const welcome = encodeServerOp({ op: 'welcome', limits: { maxMessageBytes: 65536, opsPerSecond: 1000, opsBurst: 2000, bytesPerSecond: 1 << 22, bytesBurst: 1 << 22, maxOps: 1024 } })
    const garbage: (Uint8Array | string)[] = [
      'text is not the relay protocol',
      Uint8Array.of(9, 9, 9),
      Uint8Array.of(RELAY_PROTOCOL_VERSION),
      Uint8Array.of(RELAY_PROTOCOL_VERSION, 0x85, 5, 65),
      encodeRelayMessage([encodeServerOp({ op: 'up', peer: 'before-welcome' })]),
      encodeRelayMessage([welcome, welcome]),
      encodeRelayMessage([encodeServerOp({ op: 'welcome', limits: { maxMessageBytes: 0, opsPerSecond: 0, opsBurst: 0, bytesPerSecond: 0, bytesBurst: 0, maxOps: 1 } })]),
      randomBytes(100),
    ]
    let connections = 0
    wss.on('connection', (ws) => {
      const i = connections++
      ws.on('message', () => {
        if (i < garbage.length) ws.send(garbage[i]!)
        else {
          // Finally a well-behaved server: WELCOME, a peer, a frame from it.
          ws.send(encodeRelayMessage([welcome, encodeServerOp({ op: 'peers', peers: ['srv'] }), encodeServerOp({ op: 'from', from: 'srv', payload: Uint8Array.of(42) })]))
        }
      })
    })
    try {
      const errors: Error[] = []
      const t = transport({ url: `ws://127.0.0.1:${port}`, onError: (e) => errors.push(e), minReconnectDelayMs: 10, maxReconnectDelayMs: 40 })
      const frames: number[] = []
      const downs: string[] = []
      t.on('frame', (_p, f) => frames.push(f[0]!))
      t.on('peer:down', (p) => downs.push(p))
      await t.start({ room: 'r', peerId: 'p' })
      await until(() => frames.length === 1, 5000, 'the frame from the finally sane server')
      expect(frames).toEqual([42])
      expect(connections).toBe(garbage.length + 1)
      expect(errors.filter((e) => e instanceof RelayProtocolError)).toHaveLength(garbage.length)
      expect(t.connected).toBe(true)
      await t.stop()
    } finally {
      for (const c of wss.clients) c.terminate()
      await new Promise((r) => wss.close(r))
    }
  })

  it('listener errors go to onError and do not break delivery to other listeners', async () => {
    const s = await server()
    const errors: Error[] = []
    const a = transport({ url: s.url })
    const b = transport({ url: s.url, onError: (e) => errors.push(e) })
    const got: number[] = []
    b.on('frame', () => {
      throw new Error('listener bug')
    })
    b.on('frame', (_p, f) => got.push(f[0]!))
    await a.start({ room: 'l', peerId: 'a' })
    await b.start({ room: 'l', peerId: 'b' })
    await until(() => a.connected && b.connected, 2000, 'both joined')
    await sleep(30)
    a.send('b', Uint8Array.of(1))
    a.broadcast(Uint8Array.of(2))
    await until(() => got.length === 2, 2000, 'both frames')
    expect(errors.map((e) => e.message)).toEqual(['listener bug', 'listener bug'])
  })

  it('a relay peer and a raw protocol client interoperate (the spec is all a client needs)', async () => {
    const s = await server()
    const t = transport({ url: s.url })
    const got: string[] = []
    t.on('frame', (p, f) => got.push(`${p}:${Buffer.from(f).toString()}`))
    await t.start({ room: 'mixed', peerId: 'transport' })
    const raw = await RawClient.open(s.url)
    try {
      raw.sendOps({ op: 'join', topic: 'mixed', peer: 'raw' })
      expect((await raw.waitOp('peers')).peers).toEqual(['transport'])
      raw.sendOps({ op: 'send', to: 'transport', payload: Buffer.from('hello') })
      await until(() => got.length === 1, 2000, 'the frame')
      expect(got).toEqual(['raw:hello'])
      t.send('raw', Buffer.from('back'))
      expect(Buffer.from((await raw.waitOp('from')).payload).toString()).toBe('back')
    } finally {
      raw.close()
    }
  })
})
