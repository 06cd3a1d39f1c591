/**
 * Snapshots in the store's in-memory layout (RecordStore.encodeSnapshot): what they load back to, how they merge with
 * another slot's, what damaged ones do, and the default threshold on real LevelDB files.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { DecodeError, HLC, RecordStore, type Timestamp } from '../../crdt/index.js'
import { MAX_COUNTER, MAX_WALL } from '../../crdt/timestamp.js'
import { SNAPSHOT_FORMAT } from '../../crdt/record-store.js'
import { StorageCorruptError } from '../../src/errors.js'
import { Persistence, wrap } from '../../src/persistence.js'
import { createReplica } from '../../src/replica.js'
import { levelStorage } from '../../src/storage/level.js'
import { MemoryStorage } from '../../src/storage/memory.js'
import type { ReplicaImpl } from '../../src/replica.js'
import { mulberry32 } from '../prng.js'

const SEED = Number(process.env.SEED ?? 20261207)
const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

/**
 * A store written by three peers through deltas, in a seeded order: puts, updates, field removals, deletes, ids and
 * values that are not ASCII, two collections, and writes of one peer received ahead of a gap (held beyond its vector).
 */
function randomStore(seed: number, ops = 400): RecordStore {
  const rnd = mulberry32(seed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!
  const peers = ['ann', 'bob', 'çé'].map((p) => ({ store: new RecordStore(), clock: new HLC(p, { now: () => 1_700_000_000_000 + Math.floor(rnd() * 5000) }) }))
  const ids = Array.from({ length: 60 }, (_, i) => (i % 7 === 0 ? `ü-${i}-\u{1F600}` : `r${i}`))
  const values = [0, -1, 2 ** 40, 1.5, 19.99, 'x', 'héllo', '', true, false, null, [1, 'a'], { n: { m: 'deep' } }]
  for (let k = 0; k < ops; k++) {
    const p = pick(peers)
    const collection = rnd() < 0.8 ? 'items' : 'other'
    const id = pick(ids)
    const ts = p.clock.now()
    const roll = rnd()
    if (roll < 0.4) p.store.put(collection, id, { a: pick(values), b: pick(values) }, ts)
    else if (roll < 0.8) p.store.update(collection, id, { [pick(['a', 'b', 'c'])]: rnd() < 0.15 ? undefined : pick(values) }, ts)
    else p.store.delete(collection, id, ts)
    if (rnd() < 0.2) {
      // Now and then one peer's writes reach another.
      const to = pick(peers)
      if (to !== p) to.store.applyEncoded(p.store.encodeChangesSince(to.store.versionVector()))
    }
  }
  const [a, b] = peers.map((p) => p.store) as [RecordStore, RecordStore]
  a.applyEncoded(b.encodeChangesSince(a.versionVector()))
  // A fourth peer's later writes without its first ones: held ahead of a's vector, for a while or for good.
  const d = new RecordStore()
  const dc = new HLC('dan', { now: () => 1_700_000_000_000 + Math.floor(rnd() * 5000) })
  let gap = new Map<string, Timestamp>()
  for (let i = 0; i < 10; i++) {
    d.put('items', pick(ids), { d: i }, dc.now())
    if (i === 4) gap = d.versionVector()
  }
  a.applyEncoded(d.encodeChangesSince(gap))
  if (rnd() < 0.3) a.applyEncoded(d.encodeChangesSince(a.versionVector()))
  return a
}

const roundTrip = (s: RecordStore): RecordStore => RecordStore.decodeSnapshot(s.encodeSnapshot())

describe('snapshots in the in-memory layout', () => {
  it('load back to the same store: every record, floor and removal, the version vector, byte for byte the same state', () => {
    for (let i = 0; i < 40; i++) {
      const seed = SEED + i
      const s = randomStore(seed)
      const back = roundTrip(s)
      const msg = `SEED=${seed}`
      expect(Buffer.from(back.encodeState()).equals(Buffer.from(s.encodeState())), msg).toBe(true)
      expect(back.digest(), msg).toBe(s.digest())
      expect(back.versionVector(), msg).toEqual(s.versionVector())
      for (const c of s.collections()) for (const id of s.ids(c)) expect(back.get(c, id), msg).toEqual(s.get(c, id))
      // The loaded store goes on as the first would: the same writes give the same state, and so does the delta
      // another store needs from each.
      const ts = { wall: 1_800_000_000_000, counter: 0, peer: 'ann' }
      for (const x of [s, back]) {
        x.update('items', 'r1', { a: 'after' }, ts)
        x.put('items', 'brand-new', { z: 1 }, { ...ts, counter: 1 })
        x.delete('other', 'r2', { ...ts, counter: 2 })
      }
      expect(back.digest(), msg).toBe(s.digest())
      const empty = new Map<string, Timestamp>()
      expect(Buffer.from(back.encodeChangesSince(empty)).equals(Buffer.from(s.encodeChangesSince(empty))), msg).toBe(true)
    }
  })

  it('the stores above include writes held beyond the vector (so that bound is carried over too)', () => {
    let held = 0
    for (let i = 0; i < 40; i++) if ((randomStore(SEED + i) as unknown as { beyond: Map<string, Timestamp> }).beyond.size > 0) held++
    expect(held).toBeGreaterThan(5)
  })

  it('seeded byte mutations: a DecodeError, or a store every reader of which works', () => {
    const bytes = randomStore(SEED).encodeSnapshot()
    const rnd = mulberry32(SEED)
    let refused = 0
    for (let i = 0; i < 600; i++) {
      const m = bytes.slice()
      for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) m[Math.floor(rnd() * m.length)] = Math.floor(rnd() * 256)
      let s: RecordStore
      try {
        s = RecordStore.decodeSnapshot(m)
      } catch (err) {
        expect(err, `mutation ${i} (SEED=${SEED})`).toBeInstanceOf(DecodeError)
        refused++
        continue
      }
      try {
        s.digest()
        for (const c of s.collections()) s.all(c)
        RecordStore.decodeState(s.encodeState())
      } catch (err) {
        // A value whose bytes are no longer text or a number is refused where it is read, as a DecodeError.
        expect(err, `mutation ${i} (SEED=${SEED})`).toBeInstanceOf(DecodeError)
      }
    }
    expect(refused).toBeGreaterThan(300)
  })

  it('timestamps at the ends of their ranges load back (the widest varints a block holds)', () => {
    const s = new RecordStore()
    const far = { wall: MAX_WALL, counter: MAX_COUNTER, peer: 'p'.repeat(256) }
    s.put('c', 'x', { a: 1 }, { wall: 0, counter: 0, peer: 'q' })
    s.update('c', 'x', { b: 2 }, far)
    s.update('c', 'x', { c: 3 }, { wall: 1, counter: MAX_COUNTER, peer: 'q' })
    s.delete('c', 'gone', far)
    const back = roundTrip(s)
    expect(Buffer.from(back.encodeState()).equals(Buffer.from(s.encodeState()))).toBe(true)
    expect(back.get('c', 'x')).toEqual({ id: 'x', a: 1, b: 2, c: 3 })
  })

  it('an empty store, and one whose records were all removed, load back', () => {
    const s = new RecordStore()
    expect(roundTrip(s).digest()).toBe(s.digest())
    s.put('c', 'x', { a: 1 }, { wall: 5, counter: 0, peer: 'p' })
    s.delete('c', 'x', { wall: 6, counter: 0, peer: 'p' })
    const back = roundTrip(s)
    expect(back.floorOf('c', 'x')).toEqual({ ts: { wall: 6, counter: 0, peer: 'p' }, deleted: true })
    expect(back.versionVector()).toEqual(s.versionVector())
  })

  it('damaged bytes are a DecodeError: every truncation, the other byte order, lengths that do not add up, a repeated id', () => {
    const s = randomStore(SEED)
    const bytes = s.encodeSnapshot()
    expect(bytes[0]).toBe(SNAPSHOT_FORMAT)
    for (let n = 0; n < bytes.length; n += Math.max(1, Math.floor(bytes.length / 500))) {
      expect(() => RecordStore.decodeSnapshot(bytes.subarray(0, n)), `truncated at ${n}`).toThrow(DecodeError)
    }
    const swapped = bytes.slice()
    swapped.set([0, 0, 0, 1], 1)
    expect(() => RecordStore.decodeSnapshot(swapped)).toThrow(/byte order/)
    expect(() => RecordStore.decodeSnapshot(Uint8Array.of(...bytes, 0))).toThrow(/after the snapshot/)
    // Two records with the same id, and block lengths moved from one row to the next.
    const twin = new RecordStore()
    twin.put('c', 'aa', { v: 1 }, { wall: 1, counter: 0, peer: 'p' })
    twin.put('c', 'ab', { v: 2 }, { wall: 2, counter: 0, peer: 'p' })
    const t = twin.encodeSnapshot()
    const ids = Buffer.from(t).indexOf(Buffer.from('aaab'))
    const repeated = t.slice()
    repeated[ids + 3] = 'a'.charCodeAt(0) // 'aaab' → 'aaaa': the second id is the first
    expect(() => RecordStore.decodeSnapshot(repeated)).toThrow(/repeats the id/)
    const rows = ids - 4 // u8 len0, u8 id0, u8 len1, u8 id1 just before the ids (all short)
    const shifted = t.slice()
    shifted[rows] = t[rows]! + 1
    shifted[rows + 2] = t[rows + 2]! - 1
    expect(() => RecordStore.decodeSnapshot(shifted)).toThrow(DecodeError)
  })

  it('through Persistence: a slot snapshotted in this layout reopens the same, and two slots’ snapshots merge', async () => {
    const storage = new MemoryStorage()
    const a = randomStore(SEED + 100)
    const b = randomStore(SEED + 200)
    const p0 = (await Persistence.open(storage, { slot: 0, memoryLayoutFrom: 0 })).persistence
    await p0.compact(a)
    const p1 = (await Persistence.open(storage, { slot: 1, memoryLayoutFrom: 0 })).persistence
    await p1.compact(b)
    const snapshots = (await storage.loadRange([])).filter((e) => e.key.includes('snapshot'))
    expect(snapshots.map((e) => e.data[17])).toEqual([SNAPSHOT_FORMAT, SNAPSHOT_FORMAT])
    const union = RecordStore.decodeState(a.encodeState())
    union.applyEncoded(b.encodeState())
    const { store } = await Persistence.open(storage, { slot: 0 })
    expect(store.digest()).toBe(union.digest())
    expect(store.versionVector()).toEqual(union.versionVector())
  })

  it('a damaged snapshot whose checksum was made to match is StorageCorruptError naming its key', async () => {
    const storage = new MemoryStorage()
    const p = (await Persistence.open(storage, { memoryLayoutFrom: 0 })).persistence
    await p.compact(randomStore(SEED + 300))
    const [entry] = (await storage.loadRange([])).filter((e) => e.key[0] === 'snapshot')
    const payload = entry!.data.subarray(17)
    await storage.save(entry!.key, wrap(payload.subarray(0, payload.length - 3)))
    const err = await Persistence.open(storage).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StorageCorruptError)
    expect((err as StorageCorruptError).message).toContain(entry!.key.join('/'))
  })

  it('on LevelDB with the default threshold: a large store is snapshotted in this layout, a small one as a delta', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'syncmesh-layout-'))
    dirs.push(dir)
    const big = new RecordStore()
    const clock = new HLC('writer', { now: () => 1_700_000_000_000 })
    for (let i = 0; i < 70_000; i++) big.put('records', `r${i}`, { n: i, s: `v${i % 13}` }, clock.now())
    const storage = levelStorage(dir)
    await (await Persistence.open(storage)).persistence.compact(big)
    await storage.close()
    const r = await createReplica({ storage: levelStorage(dir) })
    expect((r as ReplicaImpl).store.digest()).toBe(big.digest())
    expect(r.collection('records').get('r69999')).toEqual({ id: 'r69999', n: 69999, s: `v${69999 % 13}` })
    await r.collection('records').put({ id: 'after', n: -1 })
    const d = (r as ReplicaImpl).store.digest()
    await r.close()
    const again = await createReplica({ storage: levelStorage(dir) })
    expect((again as ReplicaImpl).store.digest()).toBe(d)
    await again.close()
    const check = levelStorage(dir)
    const snap = (await check.loadRange(['snapshot']))[0]!
    expect(snap.data[17]).toBe(SNAPSHOT_FORMAT)
    await check.close()

    const small = new MemoryStorage()
    const p = (await Persistence.open(small)).persistence
    await p.compact(randomStore(SEED))
    expect((await small.loadRange(['snapshot']))[0]!.data[17]).toBe(2) // a format-2 delta
  }, 60_000)
})
