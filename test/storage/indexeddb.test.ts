import { IDBDatabase as FakeIDBDatabase, IDBFactory, IDBKeyRange, forceCloseDatabase } from 'fake-indexeddb'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { InvalidArgumentError, StorageClosedError, StorageCorruptError, createReplica, type Replica } from '../../src/index.js'
import { IndexedDBStorage, IndexedDBUnavailableError, INDEXEDDB_VERSION, indexedDBStorage } from '../../src/storage/indexeddb.js'
import { compareKeys, type Storage } from '../../src/storage/types.js'
import { storageConformanceCases, type StorageHarness } from '../../src/testkit/storage-suite.js'

// Every storage a test opens, closed afterwards (closing twice is fine).
const opened: Storage[] = []
const replicas: Replica[] = []
afterEach(async () => {
  await Promise.allSettled(replicas.splice(0).map((r) => r.close()))
  await Promise.allSettled(opened.splice(0).map((s) => s.close?.()))
  vi.restoreAllMocks()
})

let counter = 0
/** A storage on a fresh fake IndexedDB (or on `factory`, under `name`). */
function fresh(factory = new IDBFactory(), name = `db-${++counter}`, extra: Parameters<typeof indexedDBStorage>[1] = {}): IndexedDBStorage {
  const s = indexedDBStorage(name, { indexedDB: factory, IDBKeyRange, ...extra })
  opened.push(s)
  return s
}

// ---------------------------------------------------------------------------------------------------------------------
// Raw IndexedDB helpers (to plant bad data and to play "the other tab")

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result)
    req.onerror = () => reject(req.error)
  })
}

function rawOpen(factory: IDBFactory, name: string, version?: number, upgrade?: (db: IDBDatabase) => void): Promise<IDBDatabase> {
  const req = version === undefined ? factory.open(name) : factory.open(name, version)
  req.onupgradeneeded = () => upgrade?.(req.result)
  return request(req)
}

async function rawPut(factory: IDBFactory, name: string, key: IDBValidKey, value: unknown): Promise<void> {
  const db = await rawOpen(factory, name)
  const tx = db.transaction('entries', 'readwrite')
  tx.objectStore('entries').put(value, key)
  await new Promise<void>((resolve, reject) => {
    tx.oncomplete = () => resolve()
    tx.onabort = () => reject(tx.error)
  })
  db.close()
}

async function rawGet(factory: IDBFactory, name: string, key: IDBValidKey): Promise<unknown> {
  const db = await rawOpen(factory, name)
  const value = await request(db.transaction('entries').objectStore('entries').get(key))
  db.close()
  return value
}

// ---------------------------------------------------------------------------------------------------------------------

describe('IndexedDB storage: conformance suite (fake-indexeddb)', () => {
  // One fresh factory per create(); reopen closes the storage and opens the same name on the same factory.
  const where = new WeakMap<Storage, { factory: IDBFactory; name: string }>()
  const harness: StorageHarness = {
    async create() {
      const factory = new IDBFactory()
      const name = `conformance-${++counter}`
      const s = fresh(factory, name)
      where.set(s, { factory, name })
      return s
    },
    async reopen(s) {
      const w = where.get(s)
      if (!w) throw new Error('reopen: not a storage of this harness')
      await s.close?.()
      const again = fresh(w.factory, w.name)
      where.set(again, w)
      return again
    },
  }
  for (const c of storageConformanceCases(harness)) it(c.name, c.run)
})

describe('IndexedDB storage: key order and ranges', () => {
  it('orders keys exactly like compareKeys and returns exactly the keys under each prefix (also [] and "")', async () => {
    const s = fresh()
    // Awkward elements: '', NUL, lone surrogates of both kinds, a pair, U+FFFF, keys that are prefixes of each other.
    const alphabet = ['', 'a', 'b', 'ab', 'a\0', '\0', '\uD800', '\uDC00', '\uD83D\uDE00', '\uFFFF', 'é', 'Z']
    let x = 12345
    const rand = (n: number): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 8) % n
    const keys = new Map<string, string[]>()
    keys.set('[]', [])
    for (let i = 0; i < 300; i++) {
      const k = Array.from({ length: rand(4) + 1 }, () => alphabet[rand(alphabet.length)]!)
      keys.set(JSON.stringify(k), k)
    }
    const all = [...keys.values()]
    await Promise.all(all.map((k, i) => s.save(k, new Uint8Array([i & 255, i >> 8]))))
    const sorted = [...all].sort(compareKeys)
    const got = await s.loadRange([])
    expect(got.map((e) => e.key)).toEqual(sorted)
    // Each value is where its key is.
    for (const e of got) {
      const i = all.findIndex((k) => compareKeys(k, e.key) === 0)
      expect([...e.data]).toEqual([i & 255, i >> 8])
    }
    const prefixes: string[][] = [[], [''], ['', ''], ['a'], ['a', ''], ['a\0'], ['\uD800'], ['\uD83D\uDE00'], ['\uFFFF', 'a', 'b', 'ab', 'Z'], ['nope']]
    for (const k of all.slice(0, 40)) prefixes.push(k, k.slice(0, -1))
    for (const p of prefixes) {
      const expected = sorted.filter((k) => k.length >= p.length && p.every((e, i) => k[i] === e))
      expect((await s.loadRange(p)).map((e) => e.key), JSON.stringify(p)).toEqual(expected)
    }
  })

  it('takes un-awaited calls in call order', async () => {
    const s = fresh()
    const k = ['log', '1']
    const calls = [
      s.save(k, new Uint8Array([1])),
      s.save(k, new Uint8Array([2])),
      s.load(k),
      s.remove(k),
      s.load(k),
      s.save(k, new Uint8Array([3])),
      s.loadRange(['log']),
    ] as const
    const [, , a, , b, , c] = await Promise.all(calls)
    expect(a && [...a]).toEqual([2])
    expect(b).toBeUndefined()
    expect(c.map((e) => [e.key, [...e.data]])).toEqual([[k, [3]]])
  })

  it('stores a compact copy of the bytes, taken at call time', async () => {
    const factory = new IDBFactory()
    const s = fresh(factory, 'copy')
    const buffer = new Uint8Array([9, 9, 1, 2, 3, 9, 9])
    const view = buffer.subarray(2, 5)
    const key = ['k']
    const keyCopy = [...key]
    const saved = s.save(key, view)
    view[0] = 7 // the caller reuses its buffer before the transaction even started
    key[0] = 'changed'
    await saved
    expect([...(await s.load(keyCopy))!]).toEqual([1, 2, 3])
    expect(await s.load(['changed'])).toBeUndefined()
    await s.close()
    const raw = (await rawGet(factory, 'copy', keyCopy)) as Uint8Array
    expect(raw).toBeInstanceOf(Uint8Array)
    expect(raw.buffer.byteLength).toBe(3) // not the whole 7-byte buffer of the view
  })

  it('opens every write transaction with durability "strict" and resolves on complete', async () => {
    const spy = vi.spyOn(FakeIDBDatabase.prototype, 'transaction')
    const s = fresh()
    await s.save(['a'], new Uint8Array([1]))
    await s.remove(['a'])
    await s.load(['a'])
    const writes = spy.mock.calls.filter((c) => c[1] === 'readwrite')
    expect(writes).toHaveLength(2)
    for (const c of writes) expect(c[2]).toEqual({ durability: 'strict' })
  })

  it('reads back values stored as ArrayBuffer, and rejects non-string-array keys or data with InvalidArgumentError', async () => {
    const factory = new IDBFactory()
    const s = fresh(factory, 'ab')
    await s.save(['x'], new Uint8Array([0]))
    await rawPut(factory, 'ab', ['x'], new Uint8Array([4, 5]).buffer)
    expect([...(await s.load(['x']))!]).toEqual([4, 5])
    await expect(s.save([1] as unknown as string[], new Uint8Array())).rejects.toThrow(InvalidArgumentError)
    await expect(s.save(['x'], [1, 2] as unknown as Uint8Array)).rejects.toThrow(InvalidArgumentError)
    await expect(s.loadRange('x' as unknown as string[])).rejects.toThrow(InvalidArgumentError)
  })
})

describe('IndexedDB storage: bad data', () => {
  it.each([
    ['a string', 'not bytes'],
    ['a number', 42],
    ['null', null],
    ['an object', { data: [1, 2] }],
    ['an Int8Array', new Int8Array([1])],
  ])('reports a value that is %s as StorageCorruptError naming the key', async (_what, value) => {
    const factory = new IDBFactory()
    const s = fresh(factory, 'bad')
    await s.save(['log', '1'], new Uint8Array([1]))
    await rawPut(factory, 'bad', ['log', '2'], value)
    const err = await s.load(['log', '2']).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StorageCorruptError)
    expect((err as StorageCorruptError).key).toEqual(['log', '2'])
    await expect(s.loadRange(['log'])).rejects.toThrow(StorageCorruptError)
    expect([...(await s.load(['log', '1']))!]).toEqual([1]) // the good entry is still readable
  })

  it('reports a key that is not an array of strings as StorageCorruptError', async () => {
    const factory = new IDBFactory()
    const s = fresh(factory, 'badkey')
    await s.save(['log', '1'], new Uint8Array([1]))
    await rawPut(factory, 'badkey', ['log', 7], new Uint8Array([2]))
    const err = await s.loadRange(['log']).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StorageCorruptError)
    expect((err as StorageCorruptError).key).toEqual(['log', '7'])
  })

  it('a replica refuses a truncated or bit-flipped entry with StorageCorruptError naming it', async () => {
    for (const damage of ['truncate', 'flip'] as const) {
      const factory = new IDBFactory()
      const r1 = await createReplica({ storage: fresh(factory, 'replica') })
      await r1.collection('c').put({ id: 'a', v: 'x'.repeat(50) })
      await r1.close()
      const s = fresh(factory, 'replica')
      const [log] = await s.loadRange(['snapshot']) // close() compacted the log into it
      expect(log).toBeDefined()
      const bad = damage === 'truncate' ? log!.data.subarray(0, log!.data.length - 5) : log!.data.slice()
      if (damage === 'flip') bad[bad.length - 1]! ^= 1
      await s.save(log!.key, bad)
      const err = await createReplica({ storage: s }).catch((e: unknown) => e)
      expect(err, damage).toBeInstanceOf(StorageCorruptError)
      expect((err as StorageCorruptError).key).toEqual(log!.key)
    }
  })
})

describe('IndexedDB storage: lifecycle', () => {
  it('a replica keeps its records and peer id across close and reopen', async () => {
    const factory = new IDBFactory()
    const r1 = await createReplica({ storage: fresh(factory, 'app'), compactAfterEntries: 5 })
    const c1 = r1.collection('todos')
    for (let i = 0; i < 22; i++) await c1.put({ id: `t${i}`, n: i, bytes: new Uint8Array([i]), nested: { deep: [i, -0, Number.NaN] } })
    await c1.update('t1', { n: 100 })
    await c1.delete('t2')
    const before = c1.all()
    await r1.close()
    // 24 log entries, compacted every 5, and once more by close(): exactly one snapshot, no log left to replay.
    const peek = fresh(factory, 'app')
    expect((await peek.loadRange(['snapshot'])).length).toBe(1)
    expect((await peek.loadRange(['log'])).length).toBe(0)
    await peek.close()

    const r2 = await createReplica({ storage: fresh(factory, 'app') })
    replicas.push(r2)
    expect(r2.peerId).toBe(r1.peerId)
    const c2 = r2.collection('todos')
    expect(c2.all()).toEqual(before)
    expect(c2.all()).toHaveLength(21) // 22 puts, one delete
    expect(c2.get('t1')).toMatchObject({ n: 100 })
    expect(c2.get('t2')).toBeUndefined()
    expect(Object.is((c2.get('t5')!.nested as { deep: number[] }).deep[1], -0)).toBe(true)
  })

  it('rejects every call after close with StorageClosedError, and finishes the calls made before close', async () => {
    const factory = new IDBFactory()
    const s = fresh(factory, 'closing')
    const pending = s.save(['a'], new Uint8Array([1])) // not awaited
    const closing = s.close()
    await expect(pending).resolves.toBeUndefined()
    await closing
    await s.close() // idempotent
    await expect(s.save(['b'], new Uint8Array([2]))).rejects.toThrow(StorageClosedError)
    await expect(s.load(['a'])).rejects.toThrow(StorageClosedError)
    await expect(s.remove(['a'])).rejects.toThrow(StorageClosedError)
    await expect(s.loadRange([])).rejects.toThrow(StorageClosedError)
    const again = fresh(factory, 'closing')
    expect([...(await again.load(['a']))!]).toEqual([1])
    expect(await again.load(['b'])).toBeUndefined()
  })

  it('steps aside when another connection upgrades the database: not blocked, later calls rejected', async () => {
    const factory = new IDBFactory()
    const onVersionChange = vi.fn()
    const s = fresh(factory, 'tabs', { onVersionChange })
    await s.save(['a'], new Uint8Array([1]))
    const blocked = vi.fn()
    const req = factory.open('tabs', INDEXEDDB_VERSION + 1)
    req.onblocked = blocked
    req.onupgradeneeded = () => req.result.createObjectStore('v2')
    const other = await request(req)
    expect(blocked).not.toHaveBeenCalled()
    expect(onVersionChange).toHaveBeenCalledTimes(1)
    const err = await s.save(['b'], new Uint8Array([2])).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StorageClosedError)
    expect((err as Error).message).toMatch(/version change/)
    other.close()
    // This build cannot open the upgraded database: a clear typed error, with the VersionError as cause.
    const old = fresh(factory, 'tabs')
    const openErr = await old.load(['a']).catch((e: unknown) => e)
    expect(openErr).toBeInstanceOf(IndexedDBUnavailableError)
    expect(((openErr as Error).cause as Error).name).toBe('VersionError')
  })

  it('steps aside when another tab deletes the database', async () => {
    const factory = new IDBFactory()
    const s = fresh(factory, 'gone')
    await s.save(['a'], new Uint8Array([1]))
    const req = factory.deleteDatabase('gone')
    const blocked = vi.fn()
    req.onblocked = blocked
    await request(req)
    expect(blocked).not.toHaveBeenCalled()
    await expect(s.load(['a'])).rejects.toThrow(StorageClosedError)
  })

  it('reports a connection closed by the browser as StorageClosedError', async () => {
    const s = fresh()
    await s.save(['a'], new Uint8Array([1]))
    forceCloseDatabase((s as unknown as { db: IDBDatabase }).db as never) // its .d.ts types the parameter as the class
    await expect(s.load(['a'])).rejects.toThrow(StorageClosedError)
  })

  it('reports a failed open as IndexedDBUnavailableError (cause kept) and tries again on the next call', async () => {
    const real = new IDBFactory()
    let refuse = true
    const factory = {
      open: (name: string, version?: number) => {
        if (refuse) throw new DOMException('IndexedDB is not allowed here', 'SecurityError') // opaque origins throw at once
        return real.open(name, version)
      },
    } as unknown as IDBFactory
    const s = fresh(factory, 'flaky')
    const err = await s.save(['a'], new Uint8Array([1])).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(IndexedDBUnavailableError)
    expect(((err as Error).cause as DOMException).name).toBe('SecurityError')
    refuse = false
    await s.save(['a'], new Uint8Array([1]))
    expect([...(await s.load(['a']))!]).toEqual([1])
  })

  it('throws IndexedDBUnavailableError without IndexedDB, and for a database it did not create', async () => {
    expect(globalThis.indexedDB).toBeUndefined()
    expect(() => indexedDBStorage('x')).toThrow(IndexedDBUnavailableError)
    expect(() => indexedDBStorage('x', { indexedDB: new IDBFactory() })).toThrow(/IDBKeyRange/)
    const factory = new IDBFactory()
    ;(await rawOpen(factory, 'foreign', 1, (db) => db.createObjectStore('something-else'))).close()
    const err = await fresh(factory, 'foreign').load(['a']).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(IndexedDBUnavailableError)
    expect((err as Error).message).toMatch(/not created by syncmesh/)
  })
})
