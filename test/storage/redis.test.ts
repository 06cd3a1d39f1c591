/**
 * The Redis storage adapter against a real `redis-server` (Debian package `redis-server`) that this file starts on
 * 127.0.0.1 with an append-only file fsynced on every write, and stops in afterAll. Without the binary the file is
 * skipped with a warning — except under CI (`CI` set), where that is a failure.
 */
import fc from 'fast-check'
import { createClient, RESP_TYPES } from 'redis'
import { beforeAll, describe, expect, it } from 'vitest'
import { InvalidArgumentError, StorageClosedError, StorageCorruptError, createReplica } from '../../src/index.js'
import { type AnyRedisClient, type RedisStorage, decodeKey, encodeKey, redisStorage } from '../../src/storage/redis.js'
import { MemoryStorage } from '../../src/storage/memory.js'
import { type Storage, compareKeys } from '../../src/storage/types.js'
import { type StorageHarness, storageConformanceCases } from '../../src/testkit/storage-suite.js'
import { REDIS_SERVER, available, redisFixture } from './redis-server.js'

// ---------------------------------------------------------------------------------------------------------------------

if (!available && process.env.CI) {
  describe('redis storage', () => {
    it('needs redis-server (apt-get install redis-server)', () => {
      throw new Error(`${REDIS_SERVER} is missing on CI: apt-get install redis-server`)
    })
  })
}

describe.skipIf(!available)('redis storage (real redis-server on 127.0.0.1)', () => {
  const redis = redisFixture()
  const server = redis.server
  /** A client of the tests' own: inspection, tampering, and the caller-owned client of the shared-client runs. */
  let admin: AnyRedisClient
  let nsCounter = 0
  const freshNamespace = (tag: string): string => `t${process.pid}-${++nsCounter}-${tag}`

  beforeAll(() => {
    admin = redis.admin
  })

  /** Conformance harness: each created storage gets a fresh namespace; reopen = close + a new storage on that namespace. */
  function harness(mode: 'url' | 'client'): StorageHarness {
    const namespaces = new WeakMap<Storage, string>()
    const open = new Set<Storage>()
    const created = new Set<string>()
    const make = (namespace: string): Storage => {
      created.add(namespace)
      const s = mode === 'url' ? redisStorage({ url: server.url, namespace }) : redisStorage({ client: admin, namespace })
      namespaces.set(s, namespace)
      open.add(s)
      return s
    }
    return {
      async create() {
        return make(freshNamespace(mode))
      },
      async reopen(s) {
        const namespace = namespaces.get(s)
        if (namespace === undefined) throw new Error('reopen: not a storage of this harness')
        await s.close?.()
        open.delete(s)
        return make(namespace)
      },
      async cleanup() {
        await Promise.all([...open].map((s) => s.close?.()))
        open.clear()
        const keys = [...created].flatMap((ns) => [`${ns}:values`, `${ns}:index`])
        created.clear()
        if (keys.length > 0) await admin.del(keys)
      },
    }
  }

  describe('conformance: adapter-owned client (url)', () => {
    for (const c of storageConformanceCases(harness('url'))) it(c.name, c.run)
  })

  describe('conformance: caller-owned shared client', () => {
    for (const c of storageConformanceCases(harness('client'))) it(c.name, c.run)
  })

  describe('key encoding', () => {
    const unit = fc.oneof(
      fc.constantFrom(0x0000, 0x0001, 0x0002, 0x007f, 0x0080, 0x07ff, 0x0800, 0xd7ff, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xe000, 0xfffe, 0xffff),
      fc.integer({ min: 0, max: 0xffff }),
    )
    const element = fc.oneof(fc.array(unit, { maxLength: 6 }).map((u) => String.fromCharCode(...u)), fc.string({ unit: 'binary', maxLength: 4 }))
    const key = fc.array(element, { maxLength: 4 })

    it('byte order of encoded keys is compareKeys order (astral vs U+E000–U+FFFF, U+0000, lone surrogates)', () => {
      fc.assert(
        fc.property(key, key, (a, b) => {
          expect(Math.sign(Buffer.compare(encodeKey(a), encodeKey(b)))).toBe(Math.sign(compareKeys(a, b)))
        }),
        { numRuns: 3000 },
      )
      // The case plain UTF-8 gets wrong: '\uFFFF' > '😀' in JS, but UTF-8 bytes EF BF BF < F0 9F 98 80.
      expect(compareKeys(['\uFFFF'], ['😀'])).toBe(1)
      expect(Buffer.compare(encodeKey(['\uFFFF']), encodeKey(['😀']))).toBe(1)
    })

    it('is injective and decodes back exactly; a whole-element prefix is exactly a byte prefix', () => {
      fc.assert(
        fc.property(key, key, (a, b) => {
          expect(decodeKey(encodeKey(a))).toEqual(a)
          const isPrefix = a.length <= b.length && a.every((e, i) => e === b[i])
          const ea = encodeKey(a)
          expect(encodeKey(b).subarray(0, ea.length).equals(ea)).toBe(isPrefix)
        }),
        { numRuns: 3000 },
      )
      expect(encodeKey([]).length).toBe(0)
      expect(encodeKey([''])).toEqual(Buffer.from([0]))
      expect(encodeKey(['log', '01']).toString('latin1')).toBe('log\u000001\u0000') // ASCII stays readable in redis-cli
    })

    it('rejects byte strings it could not have produced', () => {
      for (const bad of [[0x61], [0x01, 0x03, 0x00], [0xc0, 0x80, 0x00], [0xe0, 0x80, 0x80, 0x00], [0xf0, 0x9f, 0x98, 0x80, 0x00], [0x80, 0x00]]) {
        expect(() => decodeKey(Buffer.from(bad))).toThrow(StorageCorruptError)
      }
    })
  })

  describe('on the server', () => {
    it('loadRange returns compareKeys order and whole-element prefix matches, like MemoryStorage, for tricky keys', async () => {
      const s = redisStorage({ url: server.url, namespace: freshNamespace('order') })
      const m = new MemoryStorage()
      const elements = ['', 'a', 'a\u0000', 'a\u0001', 'ab', 'b', '\u0000', '\u0001', '\u007f', '\u0080', '\uD7FF', '\uD800', '\uDBFF\uDFFF', '\uD83D\uDE00', '\uDC00', '\uE000', '\uFFFF', 'log']
      let n = 0
      for (const x of elements) {
        for (const y of [undefined, ...elements.slice(0, 8)]) {
          const k = y === undefined ? [x] : [x, y]
          const v = new Uint8Array([n & 0xff, n >> 8])
          n++
          await s.save(k, v)
          await m.save(k, v)
        }
      }
      for (const prefix of [[], ['a'], ['a', ''], [''], ['\uD83D\uDE00'], ['\uFFFF'], ['a\u0000'], ['zzz'], ['a', 'ab', 'x']]) {
        expect(await s.loadRange(prefix), JSON.stringify(prefix)).toEqual(await m.loadRange(prefix))
      }
      const all = await s.loadRange([])
      expect(all.length).toBe(n)
      await s.close()
    })

    it('pages through long ranges (more entries than one ZRANGEBYLEX page)', async () => {
      const s = redisStorage({ url: server.url, namespace: freshNamespace('pages') })
      const keys = Array.from({ length: 1234 }, (_, i) => ['log', String(i).padStart(6, '0')])
      await Promise.all(keys.map((k, i) => s.save(k, new Uint8Array([i & 0xff]))))
      await s.save(['loh'], new Uint8Array([1]))
      const got = await s.loadRange(['log'])
      expect(got.map((e) => e.key)).toEqual(keys)
      expect(got.every((e, i) => e.data[0] === (i & 0xff))).toBe(true)
      await s.close()
    })

    it('values are binary-safe: every byte value, empty, 4 MiB, and copies independent of the caller', async () => {
      const s = redisStorage({ client: admin, namespace: freshNamespace('bytes') })
      const every = Uint8Array.from({ length: 512 }, (_, i) => (i * 7) & 0xff)
      const big = new Uint8Array(4 * 1024 * 1024)
      for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24
      await s.save(['every'], every)
      await s.save(['empty'], new Uint8Array(0))
      await s.save(['big'], big)
      const mine = new Uint8Array([1, 2, 3])
      const p = s.save(['mine'], mine)
      mine[0] = 99 // after save() returned: must not change what is stored
      await p
      expect(await s.load(['every'])).toEqual(every)
      expect(await s.load(['empty'])).toEqual(new Uint8Array(0))
      expect(Buffer.from((await s.load(['big']))!).equals(Buffer.from(big))).toBe(true)
      expect(await s.load(['mine'])).toEqual(new Uint8Array([1, 2, 3]))
      const loaded = (await s.load(['every']))!
      expect(loaded.constructor).toBe(Uint8Array)
      loaded[0] = 42
      expect((await s.load(['every']))![0]).toBe(every[0])
      await s.close()
    })

    it('stays binary-safe on a RESP3 client whose own type mapping turns bulk strings into strings', async () => {
      const c = createClient({ url: server.url, RESP: 3 }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: String })
      await c.connect()
      try {
        const s = redisStorage({ client: c, namespace: freshNamespace('resp3') })
        const v = new Uint8Array([0xff, 0xfe, 0x00, 0x80, 0xc3])
        await s.save(['k', '\uD800'], v)
        expect(await s.load(['k', '\uD800'])).toEqual(v)
        expect(await s.loadRange(['k'])).toEqual([{ key: ['k', '\uD800'], data: v }])
        await s.close()
      } finally {
        await c.close()
      }
    })

    it('namespaces do not see each other; the layout is <ns>:values + <ns>:index', async () => {
      const ns1 = freshNamespace('iso1')
      const a = redisStorage({ client: admin, namespace: ns1 })
      const b = redisStorage({ client: admin, namespace: freshNamespace('iso2') })
      await a.save(['x'], new Uint8Array([1]))
      expect(await b.load(['x'])).toBeUndefined()
      expect(await b.loadRange([])).toEqual([])
      expect(await admin.type(`${ns1}:values`)).toBe('hash')
      expect(await admin.type(`${ns1}:index`)).toBe('zset')
      await a.remove(['x'])
      expect(await admin.exists([`${ns1}:values`, `${ns1}:index`])).toBe(0) // nothing left behind
      await Promise.all([a.close(), b.close()])
    })

    it('close() leaves a caller-owned client open and closes an adapter-owned one; later calls reject with StorageClosedError', async () => {
      const clients = async (): Promise<number> => Number(/connected_clients:(\d+)/.exec(await admin.info('clients'))![1])
      const base = await clients()
      const shared = redisStorage({ client: admin, namespace: freshNamespace('own1') })
      await shared.save(['a'], new Uint8Array([1]))
      await shared.close()
      expect(admin.isOpen).toBe(true)
      expect(await admin.ping()).toBe('PONG')
      const owned = redisStorage({ url: server.url, namespace: freshNamespace('own2') })
      await owned.save(['a'], new Uint8Array([1]))
      expect(await clients()).toBe(base + 1)
      const inFlight = owned.save(['b'], new Uint8Array([2]))
      await owned.close()
      await expect(inFlight).resolves.toBeUndefined() // close() waits for operations in flight
      await expect.poll(clients).toBe(base)
      await owned.close() // idempotent
      for (const s of [shared, owned] as RedisStorage[]) {
        await expect(s.load(['a'])).rejects.toBeInstanceOf(StorageClosedError)
        await expect(s.save(['a'], new Uint8Array([1]))).rejects.toBeInstanceOf(StorageClosedError)
        await expect(s.remove(['a'])).rejects.toBeInstanceOf(StorageClosedError)
        await expect(s.loadRange([])).rejects.toBeInstanceOf(StorageClosedError)
      }
    })

    it('refuses `client` and `url` together; a namespace key of another type surfaces the Redis error', async () => {
      expect(() => redisStorage({ client: admin, url: server.url })).toThrow(InvalidArgumentError)
      const ns = freshNamespace('wrongtype')
      await admin.set(`${ns}:values`, 'not a hash')
      const s = redisStorage({ client: admin, namespace: ns })
      await expect(s.save(['k'], new Uint8Array([1]))).rejects.toThrow(/WRONGTYPE/)
      await expect(s.load(['k'])).rejects.toThrow(/WRONGTYPE/)
      await s.close()
    })

    it('an inconsistent namespace is reported as StorageCorruptError, not skipped: a foreign index member, an indexed key without value', async () => {
      const ns = freshNamespace('foreign')
      const s = redisStorage({ client: admin, namespace: ns })
      await s.save(['ok'], new Uint8Array([1]))
      await admin.zAdd(`${ns}:index`, { score: 0, value: 'garbage-without-terminator' })
      await expect(s.loadRange([])).rejects.toBeInstanceOf(StorageCorruptError)
      await admin.zRem(`${ns}:index`, 'garbage-without-terminator')
      await s.save(['log', '7'], new Uint8Array([1]))
      await admin.hDel(`${ns}:values`, encodeKey(['log', '7']))
      const err = await s.loadRange(['log']).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(StorageCorruptError)
      expect((err as StorageCorruptError).key).toEqual(['log', '7'])
      await s.remove(['log', '7'])
      expect(await s.loadRange([])).toEqual([{ key: ['ok'], data: new Uint8Array([1]) }])
      await s.close()
    })
  })

  describe('a replica on Redis', () => {
    const values = { s: 'héllo \uD800 😀 \uFFFF', n: -0, inf: -Infinity, nan: NaN, b: new Uint8Array([0, 255, 128]), o: { deep: [1, 'two', null] } }

    it('writes, closes, reopens: same records and peer id (with compaction: snapshot + log)', async () => {
      const namespace = freshNamespace('replica')
      const r1 = await createReplica({ storage: redisStorage({ url: server.url, namespace }), compactAfterEntries: 10 })
      const todos = r1.collection('todos')
      for (let i = 0; i < 25; i++) await todos.put({ id: `t${i}`, i, ...values })
      await todos.update('t3', { s: 'changed' })
      await todos.delete('t4')
      const before = todos.all()
      const peerId = r1.peerId
      await r1.close()
      const inspect = redisStorage({ client: admin, namespace })
      const kinds = new Set((await inspect.loadRange([])).map((e) => e.key[0]))
      expect(kinds.has('snapshot')).toBe(true)
      await inspect.close()
      const r2 = await createReplica({ storage: redisStorage({ url: server.url, namespace }) })
      expect(r2.peerId).toBe(peerId)
      expect(r2.collection('todos').all()).toEqual(before)
      expect(r2.collection('todos').get('t3')).toMatchObject({ s: 'changed' })
      expect(r2.collection('todos').get('t4')).toBeUndefined()
      expect(Object.is(r2.collection('todos').get('t0')!.n, -0)).toBe(true)
      await r2.close()
    })

    it('survives a restart of redis-server (SIGTERM, then the AOF is replayed on the same dir)', async () => {
      const namespace = freshNamespace('restart')
      const r1 = await createReplica({ storage: redisStorage({ url: server.url, namespace }) })
      for (let i = 0; i < 10; i++) await r1.collection('notes').put({ id: `n${i}`, text: `note ${i}`, ...values })
      const before = r1.collection('notes').all()
      const peerId = r1.peerId
      await r1.close()
      await server.stop('SIGTERM')
      await server.start()
      const r2 = await createReplica({ storage: redisStorage({ url: server.url, namespace }) })
      expect(r2.peerId).toBe(peerId)
      expect(r2.collection('notes').all()).toEqual(before)
      await r2.close()
    })

    it('a resolved write survives kill -9 of redis-server (appendfsync always); an open storage reconnects', async () => {
      const namespace = freshNamespace('kill9')
      const storage = redisStorage({ url: server.url, namespace })
      await storage.save(['meta', 'x'], new Uint8Array([7, 7, 7]))
      await server.stop('SIGKILL')
      await server.start()
      // The same storage (its client reconnects by itself) and a new one both see the acknowledged write.
      expect(await storage.load(['meta', 'x'])).toEqual(new Uint8Array([7, 7, 7]))
      const other = redisStorage({ url: server.url, namespace })
      expect(await other.loadRange(['meta'])).toEqual([{ key: ['meta', 'x'], data: new Uint8Array([7, 7, 7]) }])
      await Promise.all([storage.close(), other.close()])
    })

    it('a value tampered with inside Redis fails createReplica with StorageCorruptError naming the key', async () => {
      const namespace = freshNamespace('tamper')
      const r1 = await createReplica({ storage: redisStorage({ url: server.url, namespace }) })
      await r1.collection('c').put({ id: 'x', v: 1 })
      await r1.close()
      // Flip the last byte of the stored state (the snapshot close() wrote) directly in the Redis hash, as a stray
      // script or operator might.
      const inspect = redisStorage({ client: admin, namespace })
      const [log] = await inspect.loadRange(['snapshot'])
      await inspect.close()
      expect(log).toBeDefined()
      const field = encodeKey(log!.key)
      const tampered = Buffer.from(log!.data)
      tampered[tampered.length - 1]! ^= 0x01
      await admin.hSet(`${namespace}:values`, field, tampered)
      // createReplica closes a storage it failed to open (so the connection it made is not leaked).
      const s2 = redisStorage({ url: server.url, namespace })
      const err = await createReplica({ storage: s2 }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(StorageCorruptError)
      expect((err as StorageCorruptError).key).toEqual(log!.key)
      await expect(s2.load(['meta', 'peer'])).rejects.toThrow(StorageClosedError)
      // Truncated, too.
      await admin.hSet(`${namespace}:values`, field, tampered.subarray(0, 5))
      await expect(createReplica({ storage: redisStorage({ url: server.url, namespace }) })).rejects.toThrow(/truncated/)
    })
  })
})
