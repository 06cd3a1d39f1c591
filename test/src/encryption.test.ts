/**
 * Encrypted rooms (`createReplica({ secret })`): the room key and cipher, sealed frames, and what a server in the
 * middle gets to see. Named after the failures they prevent.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { AuthError, InvalidValueError, type Replica, type ReplicaInit, createReplica, roomTopic } from '../../src/index.js'
import {
  AuthErrorThrottle,
  ROOM_KEY_ITERATIONS,
  ROOM_KEY_SALT_PREFIX,
  SEAL_OVERHEAD,
  cipherFromKey,
  deriveRoomKey,
  roomCipher,
  roomKeySalt,
} from '../../src/crypto/room-key.js'
import { SEALED_FRAME_OVERHEAD, SEALED_FRAME_VERSION, sealedTransport } from '../../src/crypto/sealed.js'
import { MemoryNetwork } from '../../transports/memory.js'
import type { FrameListener, PeerId, PeerListener, RoomCipher, RoomContext, Transport } from '../../transports/types.js'
import { transportConformanceCases, type TransportHarness } from '../../src/testkit/transport-suite.js'
import { mulberry32 } from '../prng.js'
import { startServer, type SyncmeshServer } from '../../src/server/index.js'
import { decodeClientMessage, relayTransport } from '../../transports/relay/index.js'
import { webrtcTransport } from '../../transports/webrtc/index.js'
import { RawClient, RecordingProxy } from '../server/helpers.js'
import { until } from './helpers.js'

const SEED = Number(process.env.SEED ?? 20261122)
/** One room (and one wrong secret) for every replica test: each distinct (app, room, secret) costs a slow derivation. */
const ROOM = { app: 'enc-test', room: 'shared-room', secret: 'right horse battery' }
const WRONG = 'wrong horse battery'
const enc = new TextEncoder()

/** Random printable words from the seeded PRNG (record values and field names that must never leak). */
function words(rand: () => number, n: number, prefix: string): string[] {
  const out: string[] = []
  for (let i = 0; i < n; i++) {
    let w = prefix
    for (let j = 0; j < 12; j++) w += String.fromCharCode(97 + Math.floor(rand() * 26))
    out.push(w)
  }
  return out
}

function contains(haystack: Uint8Array, needle: string): boolean {
  return Buffer.from(haystack.buffer, haystack.byteOffset, haystack.byteLength).includes(Buffer.from(needle, 'utf8'))
}

let unhandled: unknown[] = []
const onUnhandled = (reason: unknown): void => {
  unhandled.push(reason)
}
beforeAll(() => {
  process.on('unhandledRejection', onUnhandled)
})
afterAll(() => {
  process.off('unhandledRejection', onUnhandled)
})

const open: Replica[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()))
  await new Promise((r) => setTimeout(r, 10))
  const seen = unhandled
  unhandled = []
  expect(seen, `unhandled rejections (seed ${SEED})`).toEqual([])
})

async function replica(init: ReplicaInit): Promise<Replica> {
  const r = await createReplica({ antiEntropyMs: 200, ...init })
  open.push(r)
  return r
}

function errorsOf(r: Replica): { error: Error; peer?: string }[] {
  const out: { error: Error; peer?: string }[] = []
  r.on('error', (error, ctx) => out.push({ error, peer: ctx.peer }))
  return out
}

// ---------------------------------------------------------------------------------------------------------------------

describe('room key and cipher', () => {
  it('derives the key with PBKDF2-SHA256, ≥ 600 000 iterations, salted with app and room (known answer)', async () => {
    expect(ROOM_KEY_ITERATIONS).toBeGreaterThanOrEqual(600_000)
    // The salt, built here independently of roomKeySalt: prefix, NUL, u32be app length, app, room.
    const app = 'notes-app'
    const room = 'kitchen ☕'
    const a = enc.encode(app)
    const salt = Buffer.concat([Buffer.from(`${ROOM_KEY_SALT_PREFIX}\0`), Buffer.from([0, 0, 0, a.length]), Buffer.from(a), Buffer.from(room)])
    expect(Buffer.from(roomKeySalt(app, room))).toEqual(salt)
    // Computed once with @noble/hashes' pbkdf2Async (what derived room keys before WebCrypto's PBKDF2 did): keys of
    // existing encrypted rooms must not change.
    const expected = Buffer.from('543af13d62c71d13b6fd5cce783ab636c96ed43cde5076eb169c67f632c93cef', 'hex')
    const t0 = performance.now()
    const ours = await deriveRoomKey(app, room, 'correct horse')
    const ms = performance.now() - t0
    console.log(`room key derivation (PBKDF2-SHA256 × ${ROOM_KEY_ITERATIONS}, WebCrypto): ${ms.toFixed(0)} ms`)
    expect(Buffer.from(ours).toString('hex')).toBe(Buffer.from(expected).toString('hex'))
    // And the cipher of the room really uses that key: a WebCrypto key imported from the known answer opens its output.
    const cipher = await roomCipher(app, room, 'correct horse')
    const sealed = await cipher.seal(enc.encode('hello'), enc.encode('aad'))
    const key = await crypto.subtle.importKey('raw', expected, 'AES-GCM', false, ['decrypt'])
    const plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: sealed.slice(0, 12), additionalData: enc.encode('aad') }, key, sealed.slice(12))
    expect(new TextDecoder().decode(plain)).toBe('hello')
  })

  it('salts with the app and the room, never the room name alone (the known-answer test covers PBKDF2 itself)', () => {
    const hex = (app: string, room: string) => Buffer.from(roomKeySalt(app, room)).toString('hex')
    const salts = [hex('a', 'r'), hex('a', 'r2'), hex('b', 'r'), hex('ab', 'c'), hex('a', 'bc'), hex('', 'ar')]
    expect(new Set(salts).size).toBe(salts.length)
    for (const salt of salts) expect(Buffer.from(salt, 'hex').toString()).toMatch(/^syncmesh\/room-key\/v1\0/)
  })

  it('refuses a missing or empty secret with InvalidValueError (and closes nothing it did not open)', async () => {
    for (const bad of ['', new Uint8Array(0), 42, null, {}]) {
      await expect(createReplica({ secret: bad as never })).rejects.toBeInstanceOf(InvalidValueError)
    }
  })

  it('round-trips, adds exactly the overhead, and uses a fresh nonce per message', async () => {
    const rand = mulberry32(SEED)
    const cipher = await cipherFromKey(Uint8Array.from({ length: 32 }, () => Math.floor(rand() * 256)))
    expect(cipher.overhead).toBe(SEAL_OVERHEAD)
    expect(SEAL_OVERHEAD).toBe(28)
    for (const n of [0, 1, 100, 16_000]) {
      const plain = Uint8Array.from({ length: n }, () => Math.floor(rand() * 256))
      const aad = enc.encode(`aad-${n}`)
      const s1 = await cipher.seal(plain, aad)
      const s2 = await cipher.seal(plain, aad)
      expect(s1.length).toBe(n + SEAL_OVERHEAD)
      expect(Buffer.from(s1.subarray(0, 12))).not.toEqual(Buffer.from(s2.subarray(0, 12)))
      expect(Buffer.from(await cipher.open(s1, aad))).toEqual(Buffer.from(plain))
    }
  })

  it('rejects tampered, truncated, wrong-AAD and wrong-key messages with AuthError', async () => {
    const rand = mulberry32(SEED + 1)
    const key = () => Uint8Array.from({ length: 32 }, () => Math.floor(rand() * 256))
    const cipher = await cipherFromKey(key())
    const other = await cipherFromKey(key())
    const aad = enc.encode('topic/sender')
    const sealed = await cipher.seal(enc.encode('the secret plan'), aad)
    const cases: [string, () => Promise<Uint8Array>][] = []
    for (let i = 0; i < sealed.length; i += 7) {
      const t = sealed.slice()
      t[i]! ^= 1 << Math.floor(rand() * 8)
      cases.push([`bit flip at ${i}`, () => cipher.open(t, aad)])
    }
    cases.push(['truncated tag', () => cipher.open(sealed.subarray(0, sealed.length - 1), aad)])
    cases.push(['shorter than the overhead', () => cipher.open(sealed.subarray(0, 27), aad)])
    cases.push(['empty', () => cipher.open(new Uint8Array(0), aad)])
    cases.push(['wrong AAD', () => cipher.open(sealed, enc.encode('topic/someone-else'))])
    cases.push(['wrong key', () => other.open(sealed, aad)])
    for (const [what, run] of cases) await expect(run(), what).rejects.toBeInstanceOf(AuthError)
    expect(new TextDecoder().decode(await cipher.open(sealed, aad))).toBe('the secret plan')
  })

  it('caches a derived key per (app, room, secret): many replicas pay the derivation once', async () => {
    const first = roomCipher(ROOM.app, ROOM.room, ROOM.secret)
    expect(roomCipher(ROOM.app, ROOM.room, enc.encode(ROOM.secret))).toBe(first) // the same secret as bytes
    await first
    const t1 = performance.now()
    await roomCipher(ROOM.app, ROOM.room, ROOM.secret)
    expect(performance.now() - t1).toBeLessThan(200) // a derivation takes ~1–3 s here
    const other = roomCipher(ROOM.app, 'another room', ROOM.secret)
    expect(other).not.toBe(first)
    other.catch(() => {}) // not awaited: only its identity matters
  })

  it('reports a repeated AuthError once per peer per interval, then says how many it held back', () => {
    let now = 0
    const t = new AuthErrorThrottle(10_000, () => now)
    const e = new AuthError('nope')
    expect(t.pass(e, 'p')).toBe(e)
    expect(t.pass(e, 'p')).toBeUndefined()
    expect(t.pass(e, 'q')).toBe(e)
    expect(t.pass(new AuthError('x', 'signaling'), 'p')).toBeInstanceOf(AuthError)
    now = 9_999
    expect(t.pass(e, 'p')).toBeUndefined()
    now = 10_000
    const next = t.pass(e, 'p')
    expect(next).toBeInstanceOf(AuthError)
    expect(next!.message).toMatch(/2 more/)
  })
})

// ---------------------------------------------------------------------------------------------------------------------

/**
 * A transport wrapper that records every frame handed to the real transport (what the network carries); given a
 * cipher, it adds it to the RoomContext at start (for running a sealed transport outside a replica).
 */
class Tap implements Transport {
  readonly sent: Uint8Array[] = []
  constructor(
    readonly inner: Transport,
    private readonly cipher?: RoomCipher,
  ) {}
  get maxFrameSize(): number {
    return this.inner.maxFrameSize
  }
  start(room: RoomContext): Promise<void> {
    return this.inner.start(this.cipher ? { ...room, cipher: this.cipher, onError: () => {} } : room)
  }
  stop(): Promise<void> {
    return this.inner.stop()
  }
  send(peer: PeerId, frame: Uint8Array): void {
    this.sent.push(frame.slice())
    this.inner.send(peer, frame)
  }
  broadcast(frame: Uint8Array): void {
    this.sent.push(frame.slice())
    this.inner.broadcast!(frame)
  }
  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  on(event: 'frame', fn: FrameListener): () => void
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    return this.inner.on(event as 'frame', fn as FrameListener)
  }
}

describe('sealed transport: Transport conformance (over a manual memory network)', () => {
  const harness: TransportHarness = {
    async create(n) {
      const cipher = await cipherFromKey(Uint8Array.from({ length: 32 }, (_, i) => i * 7))
      const net = new MemoryNetwork({ seed: SEED + 8, mode: 'manual' })
      const transports = Array.from({ length: n }, () => new Tap(sealedTransport(net.transport()), cipher))
      // Sealing and opening are asynchronous: pump the network until a few rounds in a row deliver nothing.
      const settle = async (): Promise<void> => {
        for (let idle = 0; idle < 3; ) {
          idle = net.deliverAll() === 0 ? idle + 1 : 0
          await new Promise((r) => setTimeout(r, 2))
        }
      }
      return { transports, settle, close: async () => {} }
    },
  }
  for (const c of transportConformanceCases(harness)) it(c.name, c.run)

  it('passes on the inner transport’s message-size hint for limited links, less the sealing overhead', () => {
    const net = new MemoryNetwork({ seed: SEED + 9, maxFrameSize: 1000 })
    const inner = net.transport() as Transport & { maxMessageSize?(peer: PeerId): number | undefined }
    const sealed = sealedTransport(inner)
    expect(sealed.maxMessageSize('p')).toBeUndefined() // the memory transport gives no hint
    inner.maxMessageSize = (peer) => (peer === 'limited' ? 10_000 : undefined)
    expect(sealed.maxMessageSize('other')).toBeUndefined()
    // 10 000 bytes become ceil(10 000 / 970) = 11 frames of at most 970, each 30 bytes longer, plus room for a HELLO.
    expect(sealed.maxMessageSize('limited')).toBe(10_000 - 12 * 30)
  })
})

describe('encrypted room on a memory network', () => {
  it('peers with the right secret converge; a wrong-secret peer gets AuthError and learns nothing', async () => {
    const rand = mulberry32(SEED + 2)
    const net = new MemoryNetwork({ seed: SEED, dropRate: 0.05, duplicateRate: 0.05, reorder: true })
    const room = ROOM
    const taps = [0, 1, 2, 3].map(() => new Tap(net.transport()))
    const [a, b, c] = (await Promise.all([0, 1, 2].map((i) => replica({ ...room, peerId: `p${i}`, transports: [taps[i]!] })))) as [Replica, Replica, Replica]
    const eve = await replica({ ...room, secret: WRONG, peerId: 'eve', transports: [taps[3]!] })
    const errs = [a, b, c, eve].map(errorsOf)
    const values = words(rand, 30, 'val')
    const fields = words(rand, 3, 'fld')
    for (let i = 0; i < values.length; i++) {
      const r = [a, b, c][i % 3]!
      await r.collection('notes').put({ id: `n${i}`, [fields[i % 3]!]: values[i]! })
    }
    await eve.collection('notes').put({ id: 'eve-note', evil: 'eve-value-xyz' })
    await Promise.all([a, b, c].map((r) => r.sync({ timeoutMs: 10_000 })))
    for (const r of [a, b, c]) expect(r.collection('notes').all().length).toBe(30)
    const sorted = (r: Replica) => r.collection('notes').all().sort((x, y) => x.id.localeCompare(y.id))
    expect(sorted(a)).toEqual(sorted(b))
    expect(sorted(a)).toEqual(sorted(c))
    expect(sorted(a).find((x) => x.id === 'n7')).toEqual({ id: 'n7', [fields[1]!]: values[7] })
    // Eve: AuthError, nothing of theirs; they: AuthError naming eve, nothing of hers, and eve is not a peer.
    await until(() => errs[3]!.some((e) => e.error instanceof AuthError), 5000, 'eve to get an AuthError')
    await until(() => errs[0]!.some((e) => e.error instanceof AuthError && e.peer === 'eve'), 5000, 'p0 to report eve')
    expect(eve.collection('notes').all()).toEqual([{ id: 'eve-note', evil: 'eve-value-xyz' }])
    expect(eve.status().peers).toEqual([])
    for (const r of [a, b, c]) {
      expect(r.collection('notes').get('eve-note')).toBeUndefined()
      expect(r.status().peers.map((p) => p.id)).not.toContain('eve')
    }
    // Only AuthErrors, and not a flood: at most a few per (receiver, sender) in this short run.
    for (const list of errs) for (const e of list) expect(e.error, String(e.error)).toBeInstanceOf(AuthError)
    expect(errs[0]!.filter((e) => e.peer === 'eve').length).toBeLessThanOrEqual(2)
    // What the network carried: no value, no field name, no record id in clear.
    const carried = taps.flatMap((t) => t.sent)
    expect(carried.length).toBeGreaterThan(10)
    for (const frame of carried) {
      for (const s of [...values, ...fields, 'eve-value-xyz', 'notes', 'evil']) expect(contains(frame, s), s).toBe(false)
    }
  })

  it('a replica without the secret in an encrypted room: no sync either way, the encrypted side reports it', async () => {
    const net = new MemoryNetwork({ seed: SEED + 3 })
    const sealed = await replica({ ...ROOM, peerId: 'sealed', transports: [net.transport()] })
    const sealedErrs = errorsOf(sealed)
    await sealed.collection('c').put({ id: 'y', v: 'sealed-only' })
    const plain = await replica({ app: ROOM.app, room: ROOM.room, peerId: 'plain', transports: [net.transport()] })
    await plain.collection('c').put({ id: 'x', v: 'plain-only' })
    await until(() => sealedErrs.some((e) => e.error instanceof AuthError && e.peer === 'plain'), 5000, 'the sealed side to report the plain peer')
    await new Promise((r) => setTimeout(r, 300))
    expect(sealed.collection('c').get('x')).toBeUndefined()
    expect(plain.collection('c').get('y')).toBeUndefined()
    expect(sealed.status().peers).toEqual([])
  })

  it('refuses a relay that lies about who sent a frame (the sender id is authenticated); stop() first flushes frames being sealed', async () => {
    // A network in manual mode lets us take a sealed frame from p0 and hand it to p1 as if p2 had sent it.
    const cipher = await roomCipher(ROOM.app, ROOM.room, ROOM.secret)
    const topic = roomTopic(ROOM.app, ROOM.room)
    const net = new MemoryNetwork({ seed: SEED + 4, mode: 'manual' })
    const t0 = sealedTransport(net.transport())
    const t1 = sealedTransport(net.transport())
    const t2 = sealedTransport(net.transport())
    const errors: { error: Error; peer?: string }[] = []
    const got: string[] = []
    const ctx = (peerId: string): RoomContext => ({ room: topic, peerId, cipher, onError: (error, peer) => errors.push({ error, peer }) })
    t1.on('frame', (peer, f) => got.push(`${peer}:${new TextDecoder().decode(f)}`))
    await Promise.all([t0.start(ctx('p0')), t1.start(ctx('p1')), t2.start(ctx('p2'))])
    const settle = async () => {
      for (let i = 0; i < 20; i++) {
        net.deliverAll()
        await new Promise((r) => setTimeout(r, 5))
      }
    }
    await settle()
    // Capture what p0's sealed transport hands its inner transport.
    const inner0 = t0.inner
    let captured: Uint8Array | undefined
    const realSend = inner0.send.bind(inner0)
    inner0.send = (peer, frame) => {
      if (frame[1] === 0) captured = frame.slice()
      realSend(peer, frame)
    }
    t0.send('p1', enc.encode('from p0'))
    await settle()
    expect(got).toEqual(['p0:from p0'])
    expect(captured).toBeDefined()
    // Replay the same bytes to p1, claiming p2 sent them: AuthError naming p2, nothing delivered.
    ;(t2.inner as unknown as { send(p: string, f: Uint8Array): void }).send('p1', captured!)
    await settle()
    expect(got).toEqual(['p0:from p0'])
    expect(errors.some((e) => e.error instanceof AuthError && e.peer === 'p2')).toBe(true)
    expect(SEALED_FRAME_OVERHEAD).toBe(30)
    expect(t0.maxFrameSize).toBe(net.maxFrameSize - 30)
    // broadcast: sealed once, to every authenticated peer; a linked peer that never proved the key gets nothing.
    const got2: string[] = []
    t2.on('frame', (peer, f) => got2.push(`${peer}:${new TextDecoder().decode(f)}`))
    const stranger = sealedTransport(net.transport())
    const strangerKey = await cipherFromKey(Uint8Array.from({ length: 32 }, (_, i) => i))
    const strangerGot: Uint8Array[] = []
    stranger.inner.on('frame', (_peer, f) => strangerGot.push(f))
    await stranger.start({ room: topic, peerId: 'p3', cipher: strangerKey, onError: () => {} })
    await settle()
    const before = strangerGot.length
    t0.broadcast(enc.encode('to all'))
    await settle()
    expect(got.at(-1)).toBe('p0:to all')
    expect(got2).toEqual(['p0:to all'])
    expect(strangerGot.slice(before).filter((f) => f[1] === 0)).toEqual([]) // no DATA frame reached the stranger
    expect(errors.some((e) => e.peer === 'p3')).toBe(true) // its HELLOs were refused
    await stranger.stop()
    // stop() lets frames still being sealed reach the inner transport first (a replica's last writes before close).
    const order: string[] = []
    const realStop = inner0.stop.bind(inner0)
    inner0.send = (peer, frame) => {
      order.push(`send ${frame[1]} to ${peer}`)
      realSend(peer, frame)
    }
    inner0.stop = () => {
      order.push('stop')
      return realStop()
    }
    t0.send('p1', enc.encode('last words'))
    await t0.stop()
    expect(order).toEqual(['send 0 to p1', 'stop'])
    await Promise.all([t1.stop(), t2.stop()])
  })
})

// ---------------------------------------------------------------------------------------------------------------------

describe('encrypted room through a real server (what the server receives is captured)', () => {
  let server: SyncmeshServer
  let proxy: RecordingProxy
  beforeAll(async () => {
    server = await startServer({ port: 0, log: false })
    proxy = new RecordingProxy(() => server.port)
    await proxy.listen()
  })
  afterAll(async () => {
    await proxy?.close()
    await server?.close()
  })

  /** Asserts that nothing in what the server received reveals the room, a record, or a connection's SDP. */
  function assertServerSawOnlyHashesAndCiphertext(secrets: string[]): { texts: number; binary: number } {
    let texts = 0
    let binary = 0
    const hex64 = /^[0-9a-f]{64}$/
    const topic = roomTopic(ROOM.app, ROOM.room)
    for (const header of proxy.headers) for (const s of secrets) expect(header.includes(s), `upgrade request leaks ${s}`).toBe(false)
    for (const payload of proxy.payloads) {
      // Short SDP words are looked for as JSON strings ("sdp"): bare, three letters turn up in base64 ciphertext by chance.
      for (const s of [...secrets, ROOM.room, ROOM.secret, WRONG, 'v=0', 'a=candidate', 'ice-ufrag', '"sdp"', '"offer"', '"answer"', '"candidate"']) {
        expect(contains(payload, s), `the server received ${JSON.stringify(s)} in clear`).toBe(false)
      }
      let json: unknown
      try {
        json = JSON.parse(payload.toString('utf8'))
      } catch {
        json = undefined
      }
      if (json !== undefined && typeof json === 'object' && json !== null) {
        texts++
        const m = json as Record<string, unknown>
        if (m.type === 'subscribe' || m.type === 'unsubscribe') for (const t of m.topics as string[]) expect(t).toMatch(hex64)
        if (m.type === 'publish') {
          expect(m.topic).toBe(topic)
          expect(Object.keys(m.data as object).sort()).toEqual(['c', 'sm'])
        }
        continue
      }
      if (payload.length === 0) continue // a WebSocket close or pong frame
      let ops: ReturnType<typeof decodeClientMessage>
      try {
        ops = decodeClientMessage(new Uint8Array(payload))
      } catch {
        continue // control frames (close, ping/pong bodies) are not relay messages
      }
      binary++
      for (const op of ops) {
        if (op.op === 'join') expect(op.topic).toMatch(hex64)
        if (op.op === 'send' || op.op === 'broadcast') expect(op.payload[0], 'an unsealed frame reached the server').toBe(SEALED_FRAME_VERSION)
      }
    }
    return { texts, binary }
  }

  /** Forgets earlier captures; random record values and field names (that must not show up in them) from `seed`. */
  function freshCapture(seed: number, nValues: number, nFields: number): { values: string[]; fields: string[] } {
    proxy.headers.length = 0
    proxy.payloads.length = 0
    const rand = mulberry32(seed)
    return { values: words(rand, nValues, 'val'), fields: words(rand, nFields, 'fld') }
  }

  it('relay: replicas converge; the server receives hashed topics and sealed frames only', async () => {
    const { values, fields } = freshCapture(SEED + 5, 12, 3)
    const rs = await Promise.all(['ra', 'rb', 'rc'].map((peerId) => replica({ ...ROOM, peerId, transports: [relayTransport({ url: proxy.url })] })))
    const errs = rs.map(errorsOf)
    for (let i = 0; i < values.length; i++) await rs[i % 3]!.collection('secret-stuff').put({ id: `k${i}`, [fields[i % 3]!]: values[i]! })
    await until(() => rs.every((r) => r.collection('secret-stuff').all().length === values.length), 15_000, 'the relay replicas to converge')
    await Promise.all(rs.map((r) => r.sync({ timeoutMs: 10_000 })))
    expect(rs[1]!.collection('secret-stuff').get('k4')).toEqual({ id: 'k4', [fields[1]!]: values[4] })
    expect(errs.flat()).toEqual([])
    await Promise.all(open.splice(0).map((r) => r.close()))
    const seen = assertServerSawOnlyHashesAndCiphertext([...values, ...fields, 'secret-stuff'])
    expect(seen.binary).toBeGreaterThan(3)
  })

  it('WebRTC: replicas converge; signaling is sealed end to end; a wrong-secret peer gets AuthError and no data', async () => {
    const { values, fields } = freshCapture(SEED + 6, 8, 2)
    const rand = mulberry32(SEED + 7)
    const rtc = (): Transport => webrtcTransport({ signaling: [proxy.url], connectTimeoutMs: 4000, announceIntervalMs: 1000 })
    const eve = await replica({ ...ROOM, secret: WRONG, peerId: 'weve', transports: [rtc()] })
    const eveErrs = errorsOf(eve)
    await eve.collection('secret-stuff').put({ id: 'eve', note: 'eve-was-here' })
    const rs = await Promise.all(['wa', 'wb'].map((peerId) => replica({ ...ROOM, peerId, transports: [rtc()] })))
    const errs = rs.map(errorsOf)
    for (let i = 0; i < values.length; i++) await rs[i % 2]!.collection('secret-stuff').put({ id: `w${i}`, [fields[i % 2]!]: values[i]! })
    await until(() => rs.every((r) => r.collection('secret-stuff').all().length === values.length), 20_000, 'the WebRTC replicas to converge')
    await Promise.all(rs.map((r) => r.sync({ timeoutMs: 10_000 })))
    // A client on the topic (straight to the server, not captured) publishes plaintext, junk and a flood of
    // ciphertext that does not open: reported, ignored, and the room carries on.
    const topic = roomTopic(ROOM.app, ROOM.room)
    const raw = await RawClient.open(server.url)
    raw.sendJson({ type: 'subscribe', topics: [topic] })
    raw.sendJson({ type: 'publish', topic, data: { type: 'announce', from: 'mallory', session: 'abcdef' } })
    raw.sendJson({ type: 'publish', topic, data: { sm: 1, c: 'not base64 !!' } })
    for (let i = 0; i < 400; i++) {
      raw.sendJson({ type: 'publish', topic, data: { sm: 1, c: Buffer.from(Uint8Array.from({ length: 64 }, () => Math.floor(rand() * 256))).toString('base64') } })
    }
    await rs[0]!.collection('secret-stuff').put({ id: 'after-junk', [fields[0]!]: values[0]! })
    await until(() => rs[1]!.collection('secret-stuff').get('after-junk') !== undefined, 10_000, 'a write after the junk to arrive')
    raw.close()
    await until(() => eveErrs.some((e) => e.error instanceof AuthError && (e.error as AuthError).source === 'signaling'), 5000, 'eve to get an AuthError from signaling')
    await until(() => errs.every((list) => list.some((e) => e.error instanceof AuthError && (e.error as AuthError).source === 'signaling')), 5000, 'the others to report eve')
    for (const list of [...errs, eveErrs]) for (const e of list) expect(e.error).toBeInstanceOf(AuthError)
    expect(errs[0]!.length, 'AuthErrors are throttled, not one per bad payload').toBeLessThan(10)
    expect(eve.status().peers).toEqual([])
    expect(eve.collection('secret-stuff').all()).toEqual([{ id: 'eve', note: 'eve-was-here' }])
    for (const r of rs) {
      expect(r.collection('secret-stuff').get('eve')).toBeUndefined()
      expect(r.status().peers.map((p) => p.id)).toEqual([r.peerId === 'wa' ? 'wb' : 'wa']) // no eve, no mallory
      expect(r.collection('secret-stuff').get('after-junk')).toBeDefined()
    }
    await Promise.all(open.splice(0).map((r) => r.close()))
    const seen = assertServerSawOnlyHashesAndCiphertext([...values, ...fields, 'secret-stuff', 'eve-was-here'])
    expect(seen.texts).toBeGreaterThan(5)
    // The check itself can fail: one plaintext y-webrtc-style offer among the captures is caught.
    const offer = { type: 'publish', topic: roomTopic(ROOM.app, ROOM.room), data: { type: 'signal', from: 'wa', to: 'wb', signal: { type: 'offer', sdp: 'v=0\r\n' } } }
    proxy.payloads.push(Buffer.from(JSON.stringify(offer)))
    expect(() => assertServerSawOnlyHashesAndCiphertext([])).toThrow()
  })
})

// ---------------------------------------------------------------------------------------------------------------------

describe('encrypted room over libp2p (gossipsub discovery is sealed too)', () => {
  it('members found only through sealed announcements connect and converge; a wrong-secret node gets AuthError', async () => {
    const { libp2pTransport } = await import('../../transports/libp2p/index.js')
    const ts: { stop(): Promise<void> }[] = []
    const node = (bootstrap: string[] = []) => {
      const t = libp2pTransport({ listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap, announceIntervalMs: 300 })
      ts.push(t)
      return t
    }
    try {
      const t0 = node()
      const r0 = await replica({ ...ROOM, peerId: 'l0', transports: [t0] })
      const seed = t0.multiaddrs.filter((a) => a.includes('/tcp/') && !a.includes('/ws'))
      const t1 = node(seed)
      const t2 = node(seed)
      const [r1, r2] = await Promise.all([replica({ ...ROOM, peerId: 'l1', transports: [t1] }), replica({ ...ROOM, peerId: 'l2', transports: [t2] })])
      const eve = await replica({ ...ROOM, secret: WRONG, peerId: 'leve', transports: [node(seed)] })
      const eveErrs = errorsOf(eve)
      const errs = [r0, r1, r2].map(errorsOf)
      await Promise.all([r0, r1, r2].map((r, i) => r.collection('secret-stuff').put({ id: `l${i}`, v: `libp2p-value-${i}` })))
      await eve.collection('secret-stuff').put({ id: 'eve', v: 'eve-was-here' })
      const rs = [r0, r1, r2]
      await until(() => rs.every((r) => r.collection('secret-stuff').all().length === 3), 20_000, 'the libp2p replicas to converge')
      // l1 and l2 only knew l0: their direct session came from sealed room announcements.
      await until(() => t1.connection('l2') !== undefined, 10_000, 'l1 to meet l2 through a sealed announcement')
      // Eve cannot read the members' announcements (source 'discovery'), nor their frames.
      await until(() => eveErrs.some((e) => e.error instanceof AuthError && e.error.source === 'discovery'), 10_000, 'eve to fail to open an announcement')
      await until(() => errs.some((list) => list.some((e) => e.error instanceof AuthError)), 10_000, 'a member to report eve')
      for (const list of [...errs, eveErrs]) for (const e of list) expect(e.error, String(e.error)).toBeInstanceOf(AuthError)
      expect(eve.collection('secret-stuff').all()).toEqual([{ id: 'eve', v: 'eve-was-here' }])
      expect(eve.status().peers).toEqual([])
      for (const r of rs) {
        expect(r.collection('secret-stuff').get('eve')).toBeUndefined()
        expect(r.status().peers.map((p) => p.id)).not.toContain('leve')
      }
    } finally {
      await Promise.all(open.splice(0).map((r) => r.close()))
      await Promise.allSettled(ts.map((t) => t.stop()))
    }
  })
})
