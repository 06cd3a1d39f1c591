/**
 * Store-and-forward (`syncmesh serve --store`): devices that are never online together still sync, through a server
 * that keeps what members upload — blind in encrypted rooms, bounded by compaction, refusing bad uploads per
 * connection, and behind an access check.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { InvalidArgumentError, createReplica, roomTopic, storeSync, type Replica, type ReplicaInit } from '../../src/index.js'
import { type BlobStore, levelBlobStore, memoryBlobStore, redisBlobStore, startServer, type ServerInit, type SyncmeshServer } from '../../src/server/index.js'
import { padme } from '../../src/sync/store-sync.js'
import type { ReplicaImpl } from '../../src/replica.js'
import { levelStorage } from '../../src/storage/level.js'
import {
  AccessDeniedError,
  RELAY_MIN_PROTOCOL_VERSION,
  RelayErrorCode,
  StoreRefusedError,
  decodeServerMessage,
  encodeClientOp,
  encodeRelayMessage,
  relayTransport,
  type RelayTransport,
  type RelayTransportInit,
} from '../../transports/relay/index.js'
import { mulberry32 } from '../prng.js'
import { available as redisAvailable, redisFixture } from '../storage/redis-server.js'
import { RawClient, sleep, until } from './helpers.js'

const SEED = Number(process.env.SEED ?? 20261208)
const dirs: string[] = []
const servers: SyncmeshServer[] = []
const replicas: Replica[] = []
const stores: BlobStore[] = []
afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail') console.error(`store.test.ts failed with SEED=${SEED} (rerun: SEED=${SEED} npx vitest run test/server/store.test.ts)`)
  for (const r of replicas.splice(0)) await r.close().catch(() => {})
  for (const s of servers.splice(0)) await s.close()
  for (const s of stores.splice(0)) await s.close().catch(() => {})
})
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'syncmesh-store-'))
  dirs.push(d)
  return d
}

async function server(init: ServerInit = {}): Promise<SyncmeshServer> {
  const s = await startServer({ port: 0, log: process.env.DEBUG_STORE ? (l) => console.log(l) : false, ...init })
  servers.push(s)
  return s
}

const APP = 'store-test'
async function replica(url: string | string[], init: ReplicaInit & { relay?: Partial<RelayTransportInit> } = {}): Promise<Replica> {
  const { relay, ...rest } = init
  const r = await createReplica({
    app: APP,
    room: 'notes',
    antiEntropyMs: 200,
    storeSync: storeSync(),
    ...rest,
    transports: [relayTransport({ url, store: true, minReconnectDelayMs: 50, maxReconnectDelayMs: 400, ...relay })],
  })
  if (process.env.DEBUG_STORE) r.on('error', (e) => console.log(rest.peerId, e))
  replicas.push(r)
  return r
}

type Note = { id: string; text: string; n: number }

/** Writes `n` seeded notes, one awaited write at a time (each its own upload). */
async function writeNotes(r: Replica, n: number, rnd: () => number, prefix = 'a'): Promise<void> {
  for (let i = 0; i < n; i++) {
    await r.collection<Note>('notes').put({ id: `${prefix}${i}`, text: `note ${i} ${Math.floor(rnd() * 1e9)}`, n: i })
    await turn()
  }
}

/**
 * Lets the event loop run: a loop of writes to in-memory storage resolves in microtasks only, and would otherwise
 * starve every socket of this process — the in-process server's included — until it ends.
 */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r))

/** Uploads not yet acknowledged (0 also before the first join: pair it with `uploadedAll` where that matters). */
function uploadsPending(r: Replica): number {
  return (r as ReplicaImpl).storeSyncs.reduce((n, s) => n + s.pending, 0)
}

function digest(r: Replica): string {
  return (r as ReplicaImpl).store.digest()
}

/** A writes and goes offline; B, which never met A, joins later and must receive everything from the store alone. */
async function offlineHandOver(url: string, secret?: string, room = 'notes'): Promise<void> {
  const rnd = mulberry32(SEED)
  const a = await replica(url, { peerId: 'phone', secret, room })
  await writeNotes(a, 40, rnd)
  await a.collection<Note>('notes').delete('a7')
  await a.collection<Note>('notes').update('a8', { text: 'edited' })
  const want = a.collection('notes').all()
  const wantDigest = digest(a)
  // close() waits for the store's acknowledgements for 2 s at most: on a loaded machine, wait for them here.
  await until(() => (a as ReplicaImpl).storeSyncs[0]!.uploadedAll, 10_000, 'every write acknowledged by the store')
  await a.close()
  replicas.splice(replicas.indexOf(a), 1)

  const b = await replica(url, { peerId: 'laptop', secret, room })
  // Wait on the digest, not the record count: a partial catch-up (a39 not yet in, a7 not yet deleted) has the same count.
  await until(() => digest(b) === wantDigest, 10_000, 'B to catch up from the store')
  expect(b.collection('notes').all()).toEqual(want)
  expect(digest(b)).toBe(wantDigest)
  expect(b.collection('notes').get('a7')).toBeUndefined()
  expect(b.status().peers).toEqual([]) // nobody else was online: it all came from the store
}

describe('store-and-forward: A writes and goes offline, B joins later and receives everything', () => {
  it('plain room, LevelDB store', async () => {
    const s = await server({ store: tempDir() })
    await offlineHandOver(s.url)
    expect(s.stats().stored).toBeGreaterThanOrEqual(1) // uploads that queue up while one is in flight go as one
  })

  it('encrypted room, LevelDB store: the store holds sealed, padded bytes only', async () => {
    const dir = tempDir()
    const s = await server({ store: dir })
    await offlineHandOver(s.url, 'correct horse battery staple')
    await s.close()
    // Nothing readable on disk: no record text, id, field name or peer id (LevelDB may compress; check raw + values).
    const store = await levelBlobStore(dir)
    stores.push(store)
    const page = await store.range(roomTopic(APP, 'notes'), 0, 1 << 30)
    expect(page.blobs.length).toBeGreaterThan(0)
    for (const { blob } of page.blobs) {
      expect(blob[0]).toBe(0xb1)
      const text = Buffer.from(blob).toString('latin1')
      for (const secret of ['note', 'edited', 'phone', 'laptop', 'text']) expect(text).not.toContain(secret)
      // PADMÉ: the sealed length is 1 + 28 + padme(plaintext): only padded lengths occur.
      expect(padme(blob.byteLength - 29)).toBe(blob.byteLength - 29)
    }
    for (const f of readdirSync(dir)) {
      const raw = readFileSync(join(dir, f)).toString('latin1')
      for (const secret of ['note 1', 'edited', 'laptop']) expect(raw.includes(secret), `${secret} in ${f}`).toBe(false)
    }
  })

  it('the joiner then delta-syncs as usual with a live peer; a reconnect fetches only what is new', async () => {
    const s = await server({ store: memoryBlobStore() })
    const rnd = mulberry32(SEED + 1)
    const a = await replica(s.url, { peerId: 'a' })
    await writeNotes(a, 20, rnd)
    await until(() => uploadsPending(a) === 0, 5000, 'uploads acknowledged')
    const b = await replica(s.url, { peerId: 'b' })
    await until(() => b.collection('notes').all().length === 20, 5000, 'catch-up')
    await a.collection<Note>('notes').put({ id: 'live', text: 'both online', n: 0 })
    await until(() => b.collection('notes').get('live') !== undefined, 5000, 'live write')
    const fetched = (b as ReplicaImpl).storeSyncs[0]!.stats.fetched
    await b.setOnline(false)
    await a.collection<Note>('notes').put({ id: 'while-away', text: 'x', n: 1 })
    await until(() => uploadsPending(a) === 0, 5000, 'uploads acknowledged')
    await b.setOnline(true)
    await until(() => b.collection('notes').get('while-away') !== undefined, 5000, 'catch-up after reconnect')
    // It fetched what followed its cursor (the two writes since), not the 20 it already had.
    expect((b as ReplicaImpl).storeSyncs[0]!.stats.fetched - fetched).toBeLessThanOrEqual(3)
    await b.sync({ timeoutMs: 5000 })
    expect(digest(b)).toBe(digest(a))
  })

  it('writes made offline are uploaded on the next join', async () => {
    const s = await server({ store: memoryBlobStore() })
    const a = await replica(s.url, { peerId: 'a' })
    await a.setOnline(false)
    await writeNotes(a, 10, mulberry32(SEED + 2), 'off')
    await a.setOnline(true)
    await until(() => (a as ReplicaImpl).storeSyncs[0]!.stats.uploaded > 0 && uploadsPending(a) === 0, 5000, 'offline writes uploaded')
    await a.close()
    const b = await replica(s.url, { peerId: 'b' })
    await until(() => b.collection('notes').all().length === 10, 5000, 'catch-up')
  })
})

describe.runIf(redisAvailable)('store-and-forward on a Redis store', () => {
  const redis = redisFixture()

  it('plain and encrypted rooms hand over through Redis', async () => {
    const s = await server({ store: redis.server.url })
    await offlineHandOver(s.url, undefined, 'plain')
    await offlineHandOver(s.url, 'another secret for redis', 'sealed')
  })
})

describe('store-and-forward is opt-in on the replica (storeSync), so apps without a store do not bundle it', () => {
  it('a transport with a store and no storeSync, or an options object for storeSync: InvalidArgumentError, nothing opened', async () => {
    const relay = (): RelayTransport => relayTransport({ url: 'ws://127.0.0.1:9', store: true })
    await expect(createReplica({ transports: [relay()] })).rejects.toThrow(InvalidArgumentError)
    const options = { compactMinBytes: 1024 } as unknown as ReturnType<typeof storeSync>
    await expect(createReplica({ transports: [relay()], storeSync: options })).rejects.toThrow(InvalidArgumentError)
  })
})

describe('compaction keeps the store bounded by the state, not the history', () => {
  it('2 000 overwrites of 40 records: stored bytes stay ≤ ~2× state, ≤ 1.5× right after a compaction', async () => {
    const s = await server({ store: memoryBlobStore() })
    const secret = 'compaction secret'
    const a = await replica(s.url, { peerId: 'a', secret, storeSync: storeSync({ compactMinBytes: 1024 }) })
    const rnd = mulberry32(SEED + 3)
    const sync = (a as ReplicaImpl).storeSyncs[0]!
    let maxRatio = 0
    for (let i = 0; i < 2000; i++) {
      await a.collection<Note>('notes').put({ id: `r${i % 40}`, text: `v${i} ${Math.floor(rnd() * 1e9)}`, n: i })
      await turn()
      if (i % 100 === 99) {
        await sync.idle()
        const state = (a as ReplicaImpl).store.encodeState().byteLength
        maxRatio = Math.max(maxRatio, sync.stats.roomBytes / state)
        if (process.env.DEBUG_STORE) console.log(i, state, JSON.stringify(sync.stats), JSON.stringify((sync as unknown as { state: unknown }).state))
      }
    }
    await sync.idle()
    expect(sync.stats.compactions).toBeGreaterThan(3)
    const state = (a as ReplicaImpl).store.encodeState().byteLength
    // Without compaction the room would hold every one of the 2 000 uploads.
    expect(sync.stats.uploadedBytes / state).toBeGreaterThan(10)
    expect(maxRatio).toBeLessThan(2.5)
    // Force a compaction now and check the bound right after it.
    await sync.compact()
    expect(sync.stats.roomBytes).toBeLessThanOrEqual(1.5 * state)
    await a.close()
    // A newcomer still gets everything from the compacted store.
    const b = await replica(s.url, { peerId: 'b', secret })
    await until(() => b.collection('notes').all().length === 40, 10_000, 'catch-up from the snapshot')
    expect(b.collection<Note>('notes').get('r39')!.n).toBe(1999)
  })
})

describe('bad input: a typed error and only that connection closed; rooms never mix', () => {
  async function joined(url: string, topic: string, peer: string): Promise<RawClient> {
    const c = await RawClient.open(url)
    c.sendOps({ op: 'join', topic, peer, token: new Uint8Array(0) })
    await c.waitOp('store')
    return c
  }

  it('a malformed upload closes that connection with ERROR(MALFORMED_UPLOAD); a bystander keeps its session', async () => {
    const s = await server({ store: memoryBlobStore() })
    const bystander = await joined(s.url, 'room-1', 'ok')
    const bad = await joined(s.url, 'room-1', 'bad')
    bad.sendOps({ op: 'put', id: 1, blob: Uint8Array.of(0x00, 1, 2, 3) })
    const err = await bad.waitOp('error')
    expect(err.code).toBe(RelayErrorCode.MALFORMED_UPLOAD)
    await until(() => bad.closed !== undefined, 2000, 'close')
    expect(bad.closed!.code).toBe(1008)
    // Compaction parts out of order are malformed too.
    const bad2 = await joined(s.url, 'room-1', 'bad2')
    bad2.sendOps({ op: 'compact', id: 5, upto: 0, part: 1, count: 2, blob: Uint8Array.of(0xb0, 1) })
    expect((await bad2.waitOp('error')).code).toBe(RelayErrorCode.MALFORMED_UPLOAD)
    bystander.sendOps({ op: 'put', id: 9, blob: Uint8Array.of(0xb0, 1, 2) })
    expect((await bystander.waitOp('stored')).seq).toBe(1)
    expect(bystander.closed).toBeUndefined()
  })

  it('over the room quota or a full store: StoreRefusedError on the client, the server keeps serving', async () => {
    const s = await server({ store: memoryBlobStore(), maxRoomBytes: 4096, maxStoreBytes: 6144 })
    const errors: Error[] = []
    const a = await replica(s.url, { peerId: 'a', relay: { onError: (e) => errors.push(e) } })
    await writeNotes(a, 80, mulberry32(SEED + 4))
    await until(() => errors.some((e) => e instanceof StoreRefusedError), 5000, 'a refusal')
    const refused = errors.find((e) => e instanceof StoreRefusedError) as StoreRefusedError
    expect(refused.code).toBe('QUOTA_EXCEEDED')
    // Another room fills the rest of the store: STORE_FULL.
    const other = await RawClient.open(s.url)
    other.sendOps({ op: 'join', topic: 'other-room', peer: 'x', token: new Uint8Array(0) })
    await other.waitOp('store')
    for (let i = 0; i < 40; i++) other.sendOps({ op: 'put', id: i, blob: new Uint8Array(200).fill(0xb0) })
    expect((await other.waitOp('error')).code).toBe(RelayErrorCode.STORE_FULL)
    const health = await fetch(s.url.replace('ws', 'http') + '/health')
    expect(health.status).toBe(200)
  })

  it('never serves one room’s blobs to another topic', async () => {
    const s = await server({ store: memoryBlobStore() })
    const one = await joined(s.url, 'room-one', 'p')
    one.sendOps({ op: 'put', id: 1, blob: Uint8Array.of(0xb0, 0x11, 0x11) })
    await one.waitOp('stored')
    const two = await joined(s.url, 'room-two', 'p')
    two.sendOps({ op: 'fetch', id: 2, after: 0 })
    const fetched = await two.waitOp('fetched')
    expect(fetched.upto).toBe(0)
    expect(two.ops.filter((o) => o.op === 'blob')).toEqual([])
  })

  it('a version-1 client still relays (no store ops, no token field)', async () => {
    const s = await server({ store: memoryBlobStore() })
    const ws = new WebSocket(s.url)
    const got: Uint8Array[] = []
    ws.on('message', (d) => got.push(new Uint8Array(d as Buffer)))
    await new Promise((r) => ws.once('open', r))
    const join = encodeClientOp({ op: 'join', topic: 't', peer: 'old' })
    ws.send(encodeRelayMessage([join.subarray(0, join.byteLength - 2)], RELAY_MIN_PROTOCOL_VERSION)) // v1 JOIN: no token
    await until(() => got.length > 0, 2000, 'an answer')
    ws.close()
    expect(got[0]![0]).toBe(1)
    expect(decodeServerMessage(got[0]!).map((o) => o.op)).toEqual(['welcome'])
  })
})

describe('an older server', () => {
  it('a client meeting a version-1-only relay falls back to version-1 messages and syncs (no store)', async () => {
    // A stand-in for a server of the previous build: v1 only, refusing v2 as that build did.
    const { WebSocketServer } = await import('ws')
    const { decodeClientMessage, encodeServerOp } = await import('../../transports/relay/index.js')
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    await new Promise((r) => wss.once('listening', r))
    const members = new Map<string, import('ws').WebSocket>()
    wss.on('connection', (ws) => {
      let me: string | undefined
      ws.on('message', (data: Buffer) => {
        const msg = new Uint8Array(data)
        if (msg[0] !== 1) return ws.close(1008, `malformed relay message: unsupported relay protocol version ${msg[0]} (this build speaks 1)`)
        const send = (ops: Uint8Array[]): void => ws.send(encodeRelayMessage(ops, 1))
        for (const op of decodeClientMessage(msg)) {
          if (op.op === 'join') {
            me = op.peer
            send([encodeServerOp({ op: 'welcome', limits: { maxMessageBytes: 131072, opsPerSecond: 1000, opsBurst: 2000, bytesPerSecond: 4 << 20, bytesBurst: 4 << 20, maxOps: 1024 } }), encodeServerOp({ op: 'peers', peers: [...members.keys()] })])
            for (const m of members.values()) m.send(encodeRelayMessage([encodeServerOp({ op: 'up', peer: op.peer })], 1))
            members.set(op.peer, ws)
          } else if (op.op === 'send') members.get(op.to)?.send(encodeRelayMessage([encodeServerOp({ op: 'from', from: me!, payload: op.payload })], 1))
          else if (op.op === 'broadcast') for (const [p, m] of members) if (p !== me) m.send(encodeRelayMessage([encodeServerOp({ op: 'from', from: me!, payload: op.payload })], 1))
        }
      })
    })
    const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}`
    try {
      const a = await replica(url, { peerId: 'a' })
      const b = await replica(url, { peerId: 'b' })
      await a.collection<Note>('notes').put({ id: 'old', text: 'server', n: 1 })
      await until(() => b.collection('notes').get('old') !== undefined, 10_000, 'sync through a v1 relay')
    } finally {
      for (const r of replicas.splice(0)) await r.close()
      wss.close()
    }
  })
})

describe('access control', () => {
  it('--token: a replica without the token gets AccessDeniedError; with it, it joins and syncs', async () => {
    const s = await server({ tokens: ['s3cret-token'], store: memoryBlobStore() })
    const errors: Error[] = []
    const eve = await replica(s.url, { peerId: 'eve', relay: { onError: (e) => errors.push(e) } })
    await until(() => errors.some((e) => e instanceof AccessDeniedError), 5000, 'AccessDeniedError')
    expect((errors.find((e) => e instanceof AccessDeniedError) as AccessDeniedError).code).toBe('ACCESS_DENIED')
    const a = await replica(s.url, { peerId: 'a', relay: { token: 's3cret-token' } })
    const b = await replica(s.url, { peerId: 'b', relay: { token: async () => 's3cret-token' } })
    await a.collection<Note>('notes').put({ id: 'x', text: 'hi', n: 1 })
    await until(() => b.collection('notes').get('x') !== undefined, 5000, 'sync')
    expect(eve.collection('notes').get('x')).toBeUndefined()
    expect(eve.status().peers).toEqual([])
    expect(s.stats().denied).toBeGreaterThan(0)
  })

  it('authenticate() decides per topic and user; messages sent during the check wait for it', async () => {
    const allowed = roomTopic(APP, 'notes')
    const s = await server({
      authenticate: async ({ tokenText, topic }) => {
        await sleep(20)
        return topic === allowed && tokenText.startsWith('user:')
      },
    })
    const errors: Error[] = []
    const wrongRoom = await createReplica({ app: APP, room: 'other', transports: [relayTransport({ url: s.url, token: 'user:ann', onError: (e) => errors.push(e) })] })
    replicas.push(wrongRoom)
    await until(() => errors.some((e) => e instanceof AccessDeniedError), 5000, 'denied for another room')
    const a = await replica(s.url, { peerId: 'a', relay: { token: 'user:ann' } })
    const b = await replica(s.url, { peerId: 'b', relay: { token: 'user:bob' } })
    await a.collection<Note>('notes').put({ id: 'y', text: 'hi', n: 2 })
    await until(() => b.collection('notes').get('y') !== undefined, 5000, 'sync')
  })
})

describe('a replica on LevelDB keeps its cursor across restarts', () => {
  it('a restarted replica fetches only what was stored after its cursor', async () => {
    const s = await server({ store: memoryBlobStore() })
    const a = await replica(s.url, { peerId: 'a' })
    await writeNotes(a, 30, mulberry32(SEED + 5))
    await until(() => uploadsPending(a) === 0, 5000, 'uploads')
    const dir = tempDir()
    const b1 = await replica(s.url, { peerId: 'b', storage: levelStorage(dir) })
    await until(() => b1.collection('notes').all().length === 30, 5000, 'first catch-up')
    await b1.close()
    await a.collection<Note>('notes').put({ id: 'later', text: 'x', n: 0 })
    await until(() => uploadsPending(a) === 0, 5000, 'uploads')
    await a.close()
    const b2 = await replica(s.url, { peerId: 'b', storage: levelStorage(dir) })
    await until(() => b2.collection('notes').get('later') !== undefined, 5000, 'second catch-up')
    expect((b2 as ReplicaImpl).storeSyncs[0]!.stats.fetched).toBe(1)
  })
})

describe('syncmesh serve options', () => {
  it('parses --store, --token (repeatable), --redis, --max-room-bytes and --max-store-bytes', async () => {
    const { parseCli } = await import('../../src/server/cli.js')
    const cmd = parseCli(['serve', '--store', '/tmp/x', '--token', 'a', '--token=b', '--redis', 'redis://127.0.0.1:1', '--max-room-bytes', '2048', '--max-store-bytes', '4096'])
    expect(cmd).toEqual({ kind: 'serve', quiet: false, options: { store: '/tmp/x', tokens: ['a', 'b'], redis: 'redis://127.0.0.1:1', maxRoomBytes: 2048, maxStoreBytes: 4096 } })
    expect(parseCli(['serve', '--store']).kind).toBe('error')
  })
})
