import { mkdir, mkdtemp, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import fc from 'fast-check'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import type { RecordStore } from '../../crdt/record-store.js'
import { MemoryNetwork } from '../../transports/memory.js'
import { StorageClosedError, StorageCorruptError } from '../../src/errors.js'
import { wrap } from '../../src/persistence.js'
import { V1_FIXTURES } from '../crdt/fixtures/delta-v1.js'
import { type Replica, createReplica } from '../../src/replica.js'
import { LevelStorage, decodeLevelKey, encodeLevelKey, levelStorage } from '../../src/storage/level.js'
import { type Storage, compareKeys } from '../../src/storage/types.js'
import { storageConformanceCases } from '../../src/testkit/storage-suite.js'
import { mulberry32 } from '../prng.js'

const root = await mkdtemp(join(tmpdir(), 'syncmesh-level-'))
afterAll(() => rm(root, { recursive: true, force: true }))
let counter = 0
const freshDir = (name = 'db'): string => join(root, `${name}-${++counter}`)

const open: { close(): Promise<void> }[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close().catch(() => {})))
})

function digest(r: Replica): string {
  return (r as unknown as { store: RecordStore }).store.digest()
}

/** Sum of the sizes of the files in a directory (LevelDB keeps no subdirectories). */
async function dirBytes(dir: string): Promise<number> {
  let n = 0
  for (const name of await readdir(dir)) n += (await stat(join(dir, name))).size
  return n
}

/** Sum of the stored value bytes (what the persistence layer keeps). */
async function storedBytes(dir: string): Promise<{ bytes: number; entries: number; kinds: Record<string, number> }> {
  const s = await LevelStorage.open(dir)
  try {
    const all = await s.loadRange([])
    const kinds: Record<string, number> = {}
    for (const e of all) kinds[e.key[0]!] = (kinds[e.key[0]!] ?? 0) + 1
    return { bytes: all.reduce((n, e) => n + e.data.length, 0), entries: all.length, kinds }
  } finally {
    await s.close()
  }
}


const MiB = 1024 * 1024
const fmt = (n: number): string => (n >= MiB ? `${(n / MiB).toFixed(2)} MiB` : `${(n / 1024).toFixed(1)} KiB`)

// ---------------------------------------------------------------------------------------------------------------------

describe('LevelStorage conformance (real LevelDB files, with reopen)', () => {
  const made: string[] = []
  const harness = {
    async create(): Promise<Storage> {
      const dir = freshDir('conf')
      made.push(dir)
      return levelStorage(dir)
    },
    async reopen(s: Storage): Promise<Storage> {
      await s.close?.()
      return levelStorage((s as LevelStorage).location)
    },
    async cleanup(): Promise<void> {
      for (const dir of made.splice(0)) await rm(dir, { recursive: true, force: true })
    },
  }
  for (const c of storageConformanceCases(harness)) it(c.name, c.run)
})

describe('LevelDB key encoding', () => {
  const element = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 6 }),
    fc.string({ unit: fc.constantFrom('\u0000', '\u0001', '/', 'a', '\u007e', '\u007f', '\u407e', '\u407f', '\ud83d', '\ude00', '\ue000', '\uffff'), maxLength: 4 }),
  )
  const key = fc.array(element, { maxLength: 4 })
  const bytesCompare = (a: Uint8Array, b: Uint8Array): number => Buffer.compare(a, b)

  it('LevelDB byte order equals compareKeys order, for any two keys', () => {
    fc.assert(
      fc.property(key, key, (a, b) => {
        expect(Math.sign(bytesCompare(encodeLevelKey(a), encodeLevelKey(b)))).toBe(Math.sign(compareKeys(a, b)))
      }),
      { numRuns: 5000 },
    )
  })

  it('decoding inverts encoding exactly (the encoding is injective)', () => {
    fc.assert(
      fc.property(key, (k) => {
        expect(decodeLevelKey(encodeLevelKey(k))).toEqual(k)
      }),
      { numRuns: 3000 },
    )
  })

  it('a key is byte-prefixed by enc(p) exactly when p is an element-wise prefix of it', () => {
    fc.assert(
      fc.property(key, key, (p, k) => {
        const ep = encodeLevelKey(p)
        const ek = encodeLevelKey(k)
        const bytePrefix = ek.length >= ep.length && ep.every((b, i) => ek[i] === b)
        expect(bytePrefix).toBe(p.length <= k.length && p.every((e, i) => k[i] === e))
      }),
      { numRuns: 5000 },
    )
  })

  it('refuses non-canonical or unterminated bytes', () => {
    expect(decodeLevelKey(Uint8Array.of(1, 0x62))).toBeUndefined() // unterminated
    expect(decodeLevelKey(Uint8Array.of(1, 0xc0, 0x00, 0x41, 0))).toBeUndefined() // 3-byte form of a 1-byte unit
    expect(decodeLevelKey(Uint8Array.of(1, 0xc1, 0, 0, 0))).toBeUndefined()
    expect(decodeLevelKey(Uint8Array.of(0, 0x66))).toBeUndefined() // metadata namespace
    expect(decodeLevelKey(Uint8Array.of(1))).toEqual([])
    expect(encodeLevelKey(['log', '0000000000000001']).length).toBe(1 + 4 + 17) // ASCII: one byte per character
  })
})

// ---------------------------------------------------------------------------------------------------------------------

describe('a replica on LevelDB', () => {
  it('keeps every write, of every kind of value, across close + reopen (same peer id, readable at once)', async () => {
    const dir = freshDir()
    const r1 = await createReplica({ storage: levelStorage(dir) })
    const c = r1.collection('c')
    const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 255)
    await c.put({ id: 'a', n: -0, nan: NaN, inf: -Infinity, s: 'lone \ud800 and 😀', bin: bytes, nested: { x: [1, 'y', null] } })
    await c.put({ id: 'b', v: 1 })
    await c.update('b', { w: 2 })
    await c.put({ id: 'c', v: 1 })
    await c.delete('c')
    await c.put({ id: 'd', v: 1 })
    await c.delete('d')
    await c.update('d', { later: true })
    for (let i = 0; i < 200; i++) await r1.collection('many').update(`m${i % 40}`, { i })
    const d = digest(r1)
    const peerId = r1.peerId
    await r1.close()

    const t0 = performance.now()
    const r2 = await createReplica({ storage: levelStorage(dir) })
    const readyMs = performance.now() - t0
    open.push(r2)
    expect(r2.peerId).toBe(peerId)
    const c2 = r2.collection('c')
    const a = c2.get('a')!
    expect(Object.is(a.n, -0)).toBe(true)
    expect(Number.isNaN(a.nan)).toBe(true)
    expect(a).toEqual({ id: 'a', n: -0, nan: NaN, inf: -Infinity, s: 'lone \ud800 and 😀', bin: bytes, nested: { x: [1, 'y', null] } })
    expect(c2.get('b')).toEqual({ id: 'b', v: 1, w: 2 })
    expect(c2.get('c')).toBeUndefined()
    expect(c2.get('d')).toEqual({ id: 'd', later: true })
    expect(r2.collection('many').get('m7')).toEqual({ id: 'm7', i: 167 })
    expect(digest(r2)).toBe(d)
    expect(readyMs).toBeLessThan(2000)
    // …and it keeps writing where it left off.
    await c2.update('b', { w: 3 })
    await r2.close()
    const r3 = await createReplica({ storage: levelStorage(dir) })
    open.push(r3)
    expect(r3.collection('c').get('b')).toEqual({ id: 'b', v: 1, w: 3 })
  })

  it('writes snapshots and log entries in delta format 2, and loads them beside format-1 entries of earlier builds', async () => {
    const dir = freshDir()
    const r1 = await createReplica({ storage: levelStorage(dir), compactAfterEntries: 5 })
    for (let i = 0; i < 12; i++) await r1.collection('c').put({ id: `x${i}`, v: i })
    await r1.collection('c').update('x3', { w: 'later' })
    // The payload of a stored value (after the entry version and checksum) starts with its delta format version.
    const storedFormats = async (): Promise<Set<string>> => {
      const s = await LevelStorage.open(dir)
      try {
        const entries = (await s.loadRange([])).filter((e) => e.key[0] === 'snapshot' || e.key[0] === 'log')
        return new Set(entries.map((e) => `${e.key[0]} ${e.data[17]}`))
      } finally {
        await s.close()
      }
    }
    await r1.close()
    expect(await storedFormats()).toEqual(new Set(['snapshot 2']))
    const s = await LevelStorage.open(dir)
    const entries = (await s.loadRange([])).filter((e) => e.key[0] === 'snapshot' || e.key[0] === 'log')
    // Format-1 deltas, as a build before format 2 logged them (received from peers alice, bob, carol and dave).
    const last = Math.max(...entries.map((e) => Number(e.key[1])))
    const v1 = [V1_FIXTURES.state, V1_FIXTURES.own].map((f) => Uint8Array.from(Buffer.from(f.hex, 'hex')))
    for (const [i, payload] of v1.entries()) await s.save(['log', String(last + 1 + i).padStart(16, '0')], wrap(payload))
    await s.close()
    const r2 = await createReplica({ storage: levelStorage(dir), compactAfterEntries: 5 })
    open.push(r2)
    expect(r2.collection('c').get('x3')).toEqual({ id: 'x3', v: 3, w: 'later' })
    expect(r2.collection('c').get('x11')).toEqual({ id: 'x11', v: 11 })
    expect(r2.collection('users').get('u1')).toEqual({ id: 'u1', name: 'Ann', age: 31 })
    expect(r2.collection('users').get('u2')).toEqual({ id: 'u2', ok: false })
    expect(r2.collection('users').get('u10')).toBeUndefined()
    expect(r2.collection('posts').get('p1')).toEqual({ id: 'p1', title: 'héllo', score: 1.5 })
    // Compaction rewrites everything in format 2, which the next start loads.
    for (let i = 0; i < 6; i++) await r2.collection('c').update('x0', { i })
    const d = digest(r2)
    await r2.close()
    expect(await storedFormats()).toEqual(new Set(['snapshot 2']))
    const r3 = await createReplica({ storage: levelStorage(dir) })
    open.push(r3)
    expect(digest(r3)).toBe(d)
    expect(r3.collection('users').get('u1')).toEqual({ id: 'u1', name: 'Ann', age: 31 })
  })

  it('a restarted replica resumes by exchanging only the delta of what both wrote while apart (bytes measured)', async () => {
    const net = new MemoryNetwork({ seed: 11 })
    const dir = freshDir()
    const a = await createReplica({ peerId: 'A', transports: [net.transport()], antiEntropyMs: 0, storage: levelStorage(dir) })
    const b = await createReplica({ peerId: 'B', transports: [net.transport()], antiEntropyMs: 0 })
    open.push(b)
    const ca = a.collection('c')
    const cb = b.collection('c')
    const N = 2000
    const beforeInitial = net.stats().bytes
    const puts: Promise<void>[] = []
    for (let i = 0; i < N; i++) puts.push(ca.put({ id: `r${i}`, v: i, s: `some text ${i}`, ok: i % 2 === 0 }))
    await Promise.all(puts)
    await a.sync()
    await b.sync()
    const initialBytes = net.stats().bytes - beforeInitial
    expect(cb.get('r1999')).toEqual({ id: 'r1999', v: 1999, s: 'some text 1999', ok: false })

    // Apart: the link is cut, both write; then A shuts down (its writes are in LevelDB) and B writes more.
    net.partition(['A'])
    const W = 25
    for (let i = 0; i < W; i++) await ca.update(`r${i}`, { v: -i })
    for (let i = 0; i < W; i++) await cb.update(`r${1000 + i}`, { s: `b wrote ${i}` })
    await ca.put({ id: 'new-from-a', v: 1 })
    await a.close()
    for (let i = 0; i < W; i++) await cb.update(`r${1500 + i}`, { ok: 'changed' })
    await cb.delete('r1999')

    net.heal()
    const before = net.stats().bytes
    const a2 = await createReplica({ peerId: 'A', transports: [net.transport()], antiEntropyMs: 0, storage: levelStorage(dir) })
    open.push(a2)
    await a2.sync()
    await b.sync()
    const deltaBytes = net.stats().bytes - before

    expect(digest(a2)).toBe(digest(b))
    const ca2 = a2.collection('c')
    expect(ca2.get('r3')).toEqual({ id: 'r3', v: -3, s: 'some text 3', ok: false })
    expect(ca2.get('r1003')).toEqual({ id: 'r1003', v: 1003, s: 'b wrote 3', ok: false })
    expect(ca2.get('r1503')).toEqual({ id: 'r1503', v: 1503, s: 'some text 1503', ok: 'changed' })
    expect(ca2.get('r1999')).toBeUndefined()
    expect(cb.get('new-from-a')).toEqual({ id: 'new-from-a', v: 1 })
    const writesApart = 3 * W + 2
    console.log(`[restart] first sync of ${N} records: ${initialBytes} B; after reopen, ${writesApart} writes made apart → ${deltaBytes} B (${(deltaBytes / writesApart).toFixed(1)} B/write)`)
    // Proportional to the writes made apart (each field write ~30–60 B on the wire, plus two vector exchanges),
    // nowhere near a re-download of the state.
    expect(deltaBytes).toBeLessThan(120 * writesApart + 600)
    expect(deltaBytes).toBeLessThan(initialBytes / 10)
  })

  it('compaction keeps stored bytes ≤ 1.1× the inserts-only size after 100 000 overwrites of 50 000 fields, losing no write', async () => {
    const dir = freshDir('compaction')
    const rand = mulberry32(20240601)
    const RECORDS = 10_000
    const FIELDS = ['a', 'b', 'c', 'd', 'e'] as const
    const value = (f: (typeof FIELDS)[number]): number | string | boolean =>
      f === 'a' || f === 'd' ? Math.floor(rand() * 1e6) : f === 'c' ? rand() < 0.5 : `v${Math.floor(rand() * 1e9).toString(36)}`
    const model = new Map<string, Record<string, number | string | boolean>>()
    // compactAfterEntries: 1 compacts after every batch, so both measurements are taken right after a compaction.
    let r = await createReplica({ storage: levelStorage(dir), compactAfterEntries: 1 })
    let c = r.collection('c')
    const GROUP = 1000
    for (let g = 0; g < RECORDS; g += GROUP) {
      const batch: Promise<void>[] = []
      for (let i = g; i < g + GROUP; i++) {
        const rec: Record<string, number | string | boolean> = {}
        for (const f of FIELDS) rec[f] = value(f)
        model.set(`r${i}`, rec)
        batch.push(c.put({ id: `r${i}`, ...rec }))
      }
      await Promise.all(batch)
    }
    await r.close()
    const inserts = await storedBytes(dir)
    const insertsDisk = await compactedDiskBytes(dir)

    r = await createReplica({ storage: levelStorage(dir), compactAfterEntries: 1 })
    c = r.collection('c')
    const OVERWRITES = 100_000
    const t0 = performance.now()
    for (let g = 0; g < OVERWRITES; g += GROUP) {
      const batch: Promise<void>[] = []
      for (let i = g; i < g + GROUP; i++) {
        const id = `r${Math.floor(rand() * RECORDS)}`
        const f = FIELDS[Math.floor(rand() * FIELDS.length)]!
        const v = value(f)
        model.get(id)![f] = v
        batch.push(c.update(id, { [f]: v }))
      }
      await Promise.all(batch)
    }
    const overwriteMs = performance.now() - t0
    await r.close()
    const after = await storedBytes(dir)
    const diskBeforeCompact = await dirBytes(dir)
    const afterDisk = await compactedDiskBytes(dir)
    console.log(
      `[compaction] stored value bytes: inserts-only ${fmt(inserts.bytes)} (${inserts.entries} entries), after 100 000 overwrites ${fmt(after.bytes)} ` +
        `(${after.entries} entries: ${JSON.stringify(after.kinds)}) = ${(after.bytes / inserts.bytes).toFixed(3)}×; ` +
        `on disk after LevelDB compaction: inserts-only ${fmt(insertsDisk)}, after overwrites ${fmt(afterDisk)} (${fmt(diskBeforeCompact)} before compactRange); ` +
        `overwrites took ${(overwriteMs / 1000).toFixed(1)} s`,
    )
    expect(after.bytes).toBeLessThanOrEqual(1.1 * inserts.bytes)
    expect(afterDisk).toBeLessThanOrEqual(1.5 * insertsDisk + MiB)

    // No write lost: every field of every record holds its last value.
    const r2 = await createReplica({ storage: levelStorage(dir) })
    open.push(r2)
    const c2 = r2.collection('c')
    let mismatches = 0
    for (const [id, rec] of model) if (canonical(c2.get(id)) !== canonical({ id, ...rec })) mismatches++
    expect(mismatches).toBe(0)
    expect(c2.all().length).toBe(RECORDS)
  })

  it('runs LevelDB compaction by itself once enough bytes were written (space of overwritten values is reclaimed)', async () => {
    const dir = freshDir()
    const s = levelStorage(dir, { compactAfterBytes: 2 * MiB, writeBufferSize: 256 * 1024 })
    const big = new Uint8Array(64 * 1024).fill(7)
    for (let i = 0; i < 200; i++) await s.save(['k', String(i % 4)], big) // 12.5 MiB written, 256 KiB live
    await s.close()
    const disk = await dirBytes(dir)
    console.log(`[auto-compaction] 12.5 MiB written over 4 keys of 64 KiB → ${fmt(disk)} on disk`)
    expect(disk).toBeLessThan(4 * MiB)
  })
})

function canonical(o: object | undefined): string {
  return o === undefined ? 'undefined' : JSON.stringify(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)))
}

/** Opens the store, runs LevelDB's compactRange, closes, and measures the directory. */
async function compactedDiskBytes(dir: string): Promise<number> {
  const s = await LevelStorage.open(dir)
  await s.compact()
  await s.close()
  return dirBytes(dir)
}

// ---------------------------------------------------------------------------------------------------------------------

describe('bad data and misuse on LevelDB', () => {
  /** A closed store holding a replica's state (one log entry per write, plus the peer id). */
  async function storeWithData(writes = 3): Promise<string> {
    const dir = freshDir()
    const r = await createReplica({ storage: levelStorage(dir) })
    for (let i = 0; i < writes; i++) await r.collection('c').put({ id: `x${i}`, v: i, s: 'some text' })
    await r.close()
    return dir
  }

  async function rawDb(dir: string): Promise<ClassicLevel<Uint8Array, Uint8Array>> {
    const db = new ClassicLevel<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' })
    await db.open()
    return db
  }

  async function openFails(dir: string): Promise<StorageCorruptError> {
    const storage = levelStorage(dir)
    const err = await createReplica({ storage }).catch((e: unknown) => e)
    await storage.close() // createReplica closes it when it fails; a second close is a no-op
    expect(err).toBeInstanceOf(StorageCorruptError)
    return err as StorageCorruptError
  }

  it('a flipped byte in a stored value fails createReplica with StorageCorruptError naming the key', async () => {
    const dir = await storeWithData()
    const db = await rawDb(dir)
    // close() compacted the three log entries into one snapshot covering them (sequence 2)
    const logKey = encodeLevelKey(['snapshot', '0000000000000002'])
    const value = (await db.get(logKey))!
    expect(value).toBeDefined()
    const bad = Uint8Array.from(value)
    bad[bad.length - 2]! ^= 0x10
    await db.put(logKey, bad)
    await db.close()
    const err = await openFails(dir)
    expect(err.key).toEqual(['snapshot', '0000000000000002'])
    expect(err.message).toMatch(/snapshot\/0000000000000002.*checksum/)

    const db2 = await rawDb(dir)
    await db2.put(logKey, bad.subarray(0, 9)) // truncated
    await db2.close()
    const err2 = await openFails(dir)
    expect(err2.key).toEqual(['snapshot', '0000000000000002'])
    expect(err2.message).toMatch(/truncated/)
  })

  it('a corrupt snapshot fails createReplica with StorageCorruptError naming the snapshot key', async () => {
    const dir = freshDir()
    const r = await createReplica({ storage: levelStorage(dir), compactAfterEntries: 5 })
    for (let i = 0; i < 12; i++) await r.collection('c').put({ id: `x${i}`, v: i })
    await r.close()
    const db = await rawDb(dir)
    let snapshotKey: string[] | undefined
    for await (const [k, v] of db.iterator()) {
      const key = decodeLevelKey(k)
      if (key?.[0] !== 'snapshot') continue
      snapshotKey = key
      const bad = Uint8Array.from(v)
      bad[20]! ^= 0xff
      await db.put(k, bad)
    }
    await db.close()
    expect(snapshotKey).toBeDefined()
    const err = await openFails(dir)
    expect(err.key).toEqual(snapshotKey)
  })

  it('garbage in CURRENT or MANIFEST, or a missing CURRENT, is StorageCorruptError naming the directory', async () => {
    const currentGarbage = await storeWithData()
    await writeFile(join(currentGarbage, 'CURRENT'), 'garbage\n')
    expect((await openFails(currentGarbage)).message).toContain(currentGarbage)

    const currentNoNewline = await storeWithData()
    await writeFile(join(currentNoNewline, 'CURRENT'), '\u0000\u0001\u0002')
    expect((await openFails(currentNoNewline)).message).toMatch(/corrupt/)

    const manifestGarbage = await storeWithData()
    const manifest = (await readdir(manifestGarbage)).find((n) => n.startsWith('MANIFEST-'))!
    await writeFile(join(manifestGarbage, manifest), Buffer.from('this is not a LevelDB manifest at all, just garbage bytes'))
    expect((await openFails(manifestGarbage)).message).toContain(manifestGarbage)

    const manifestTruncated = await storeWithData()
    const m2 = (await readdir(manifestTruncated)).find((n) => n.startsWith('MANIFEST-'))!
    await truncate(join(manifestTruncated, m2), 10)
    await openFails(manifestTruncated)

    const noCurrent = await storeWithData()
    await rm(join(noCurrent, 'CURRENT'))
    expect((await openFails(noCurrent)).message).toMatch(/CURRENT file is missing/)
  })

  it('a damaged write-ahead log record is StorageCorruptError (LevelDB alone would silently drop the writes after it)', async () => {
    const dir = await storeWithData(40)
    const wal = (await readdir(dir)).find((n) => /^\d+\.log$/.test(n))!
    const bytes = await readFile(join(dir, wal))
    expect(bytes.length).toBeGreaterThan(1000)
    bytes[Math.floor(bytes.length / 2) + 3]! ^= 0x01
    await writeFile(join(dir, wal), bytes)
    const err = await openFails(dir)
    expect(err.message).toContain(wal)
    // The evidence is still there: LevelDB never got to rewrite the log, so every later open fails the same way.
    await openFails(dir)
  })

  it('a truncated or damaged table file is StorageCorruptError when read', async () => {
    const dir = await storeWithData(20)
    const s = await LevelStorage.open(dir)
    await s.compact() // moves everything into a table file
    await s.close()
    const table = (await readdir(dir)).find((n) => /^\d+\.(ldb|sst)$/.test(n))!
    expect(table).toBeDefined()
    await truncate(join(dir, table), Math.floor((await stat(join(dir, table))).size / 2))
    const err = await openFails(dir)
    expect(err.message).toContain(dir)
  })

  it('a directory or file that is not a syncmesh LevelDB store is StorageCorruptError', async () => {
    const foreign = freshDir()
    await mkdir(foreign)
    await writeFile(join(foreign, 'notes.txt'), 'hello')
    expect((await openFails(foreign)).message).toMatch(/not a LevelDB store/)

    const file = join(root, `plain-file-${++counter}`)
    await writeFile(file, 'hello')
    expect((await openFails(file)).message).toMatch(/not a directory/)

    const otherApp = freshDir()
    const db = new ClassicLevel(otherApp)
    await db.put('some', 'data')
    await db.close()
    expect((await openFails(otherApp)).message).toMatch(/not a syncmesh store/)
    // …and it was left untouched.
    const again = new ClassicLevel(otherApp)
    expect(await again.get('some')).toBe('data')
    await again.close()

    // An empty directory, or one left by a crash while LevelDB was creating it, is a new store.
    const empty = freshDir()
    await mkdir(empty)
    await writeFile(join(empty, 'LOCK'), '')
    const r = await createReplica({ storage: levelStorage(empty) })
    await r.close()
  })

  it('a store opened twice fails with a STORAGE_LOCKED error; after close, every call is StorageClosedError', async () => {
    const dir = freshDir()
    const first = await LevelStorage.open(dir)
    open.push(first)
    const err = await LevelStorage.open(dir).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(Error)
    expect((err as { code?: string }).code).toBe('STORAGE_LOCKED')
    expect((err as Error).message).toContain(dir)
    // Through a replica too, lazily.
    await expect(createReplica({ storage: levelStorage(dir) })).rejects.toMatchObject({ code: 'STORAGE_LOCKED' })

    await first.save(['k'], new Uint8Array([1]))
    await first.close()
    await expect(first.save(['k'], new Uint8Array([2]))).rejects.toThrow(StorageClosedError)
    await expect(first.remove(['k'])).rejects.toThrow(StorageClosedError)
    await expect(first.load(['k'])).rejects.toThrow(StorageClosedError)
    await expect(first.loadRange([])).rejects.toThrow(StorageClosedError)
    await expect(first.compact()).rejects.toThrow(StorageClosedError)
    // The lock is released: the store opens again, with the write intact.
    const second = await LevelStorage.open(dir)
    open.push(second)
    expect(await second.load(['k'])).toEqual(new Uint8Array([1]))
  })

  it('createIfMissing: false refuses a missing store', async () => {
    const err = await LevelStorage.open(freshDir(), { createIfMissing: false }).catch((e: unknown) => e)
    expect((err as { code?: string }).code).toBe('STORAGE_NOT_FOUND')
  })
})
