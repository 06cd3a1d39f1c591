import { describe, expect, it, vi } from 'vitest'
import {
  DecodeError,
  InvalidValueError,
  LWWMap,
  LWWRegister,
  RecordStore,
  type Timestamp,
  decodeDelta,
  decodeVersionVector,
  encodeDelta,
  encodeVersionVector,
} from '../../crdt/index.js'
import { Table } from '../../crdt/record-table.js'
import { covers } from '../../crdt/version-vector.js'

const ts = (wall: number, peer = 'a', counter = 0): Timestamp => ({ wall, counter, peer })

/** Brings `to` up to date with `from` through the wire codecs; returns the bytes exchanged. */
function pull(from: RecordStore, to: RecordStore): number {
  const req = encodeVersionVector(to.versionVector())
  const msg = encodeDelta(from.changesSince(decodeVersionVector(req)))
  to.apply(decodeDelta(msg))
  return req.length + msg.length
}

describe('LWWRegister / LWWMap', () => {
  it('keep the greatest timestamp; an exact tie goes to the greater value bytes, deterministically', () => {
    const r = new LWWRegister<string>()
    expect(r.set('x', ts(2))).toBe(true)
    expect(r.set('old', ts(1))).toBe(false)
    expect(r.value).toBe('x')
    const a = new LWWRegister('apple', ts(5))
    const b = new LWWRegister('banana', ts(5))
    a.merge(b)
    b.merge(new LWWRegister('apple', ts(5)))
    expect(a.value).toBe('banana')
    expect(b.value).toBe('banana')
    expect(LWWRegister.from(a.state()).state()).toEqual(a.state())
  })

  it('resolves each key independently and reports exactly the keys whose visible value changed', () => {
    const m1 = new LWWMap<number>()
    const m2 = new LWWMap<number>()
    m1.set('x', 1, ts(1))
    m1.set('y', 1, ts(1))
    m2.set('x', 2, ts(2))
    m2.delete('y', ts(2))
    m2.set('z', 3, ts(1, 'b'))
    expect(m1.merge(m2).sort()).toEqual(['x', 'y', 'z'])
    expect(m1.toObject()).toEqual({ x: 2, z: 3 })
    expect(m1.has('y')).toBe(false)
    expect(m1.timestampOf('y')).toEqual(ts(2))
    expect(m1.merge(m2)).toEqual([])
    expect(LWWMap.from(m1.state()).toObject()).toEqual(m1.toObject())
  })

  it('stays correct past the size where it switches to an index', () => {
    const m = new LWWMap<number>()
    for (let i = 0; i < 100; i++) m.set(`k${i}`, i, ts(1))
    for (let i = 0; i < 100; i += 2) m.delete(`k${i}`, ts(2))
    expect(m.keys().length).toBe(50)
    expect(m.get('k51')).toBe(51)
    expect(m.get('k50')).toBeUndefined()
  })
})

describe('RecordStore semantics', () => {
  it('put replaces the record: fields absent from it are removed', () => {
    const s = new RecordStore()
    s.put('c', 'r', { a: 1, b: 2 }, ts(1))
    s.put('c', 'r', { a: 3 }, ts(2))
    expect(s.get('c', 'r')).toEqual({ id: 'r', a: 3 })
  })

  it('put also erases older concurrent fields it never saw (replica-independent)', () => {
    const a = new RecordStore()
    const b = new RecordStore()
    a.put('c', 'r', { x: 1 }, ts(5, 'a'))
    b.update('c', 'r', { y: 1 }, ts(4, 'b')) // older than the put: erased by it
    b.update('c', 'r', { z: 1 }, ts(6, 'b')) // newer: survives
    pull(a, b)
    pull(b, a)
    expect(a.get('c', 'r')).toEqual({ id: 'r', x: 1, z: 1 })
    expect(b.get('c', 'r')).toEqual(a.get('c', 'r'))
  })

  it('update patches; undefined removes a field; an unknown record is created', () => {
    const s = new RecordStore()
    s.update('c', 'r', { a: 1, b: 2 }, ts(1))
    s.update('c', 'r', { b: undefined, c: 3 }, ts(2))
    expect(s.get('c', 'r')).toEqual({ id: 'r', a: 1, c: 3 })
  })

  it('delete at D erases fields written ≤ D; a later write resurrects with only its own fields', () => {
    const s = new RecordStore()
    s.put('c', 'r', { a: 1, b: 2 }, ts(1))
    s.delete('c', 'r', ts(3))
    expect(s.get('c', 'r')).toBeUndefined()
    s.update('c', 'r', { b: 9 }, ts(2)) // concurrent, older than the delete: stays erased
    expect(s.get('c', 'r')).toBeUndefined()
    s.update('c', 'r', { c: 4 }, ts(4))
    expect(s.get('c', 'r')).toEqual({ id: 'r', c: 4 })
  })

  it('a concurrent update and delete resolve by timestamp, the same on every replica, in any order', () => {
    for (const [dWall, uWall, visible] of [[5, 4, false], [4, 5, true]] as const) {
      const a = new RecordStore()
      const b = new RecordStore()
      a.put('c', 'r', { x: 1, y: 1 }, ts(1))
      pull(a, b)
      a.delete('c', 'r', ts(dWall, 'a'))
      b.update('c', 'r', { y: 2 }, ts(uWall, 'b'))
      pull(a, b)
      pull(b, a)
      expect(a.get('c', 'r')).toEqual(visible ? { id: 'r', y: 2 } : undefined)
      expect(b.get('c', 'r')).toEqual(a.get('c', 'r'))
      expect(a.digest()).toBe(b.digest())
    }
  })

  it('an exact-timestamp tie between different values (duplicate peer id) resolves the same everywhere', () => {
    const a = new RecordStore()
    const b = new RecordStore()
    a.update('c', 'r', { f: 'from-a' }, ts(7, 'dup'))
    b.update('c', 'r', { f: 'from-b' }, ts(7, 'dup'))
    a.apply(b.changesSince(new Map()))
    b.apply(a.changesSince(new Map()))
    expect(a.get('c', 'r')).toEqual(b.get('c', 'r'))
    // a delete beats a put at the same timestamp; a removal beats a value
    const x = new RecordStore()
    x.put('c', 'r', { f: 1 }, ts(9, 'dup'))
    x.delete('c', 'r', ts(9, 'dup'))
    const y = new RecordStore()
    y.delete('c', 'r', ts(9, 'dup'))
    y.put('c', 'r', { f: 1 }, ts(9, 'dup'))
    expect(x.get('c', 'r')).toBeUndefined()
    expect(y.get('c', 'r')).toBeUndefined()
  })

  it('refuses bad input before writing anything', () => {
    const s = new RecordStore()
    s.put('c', 'r', { a: 1 }, ts(1))
    const digest = s.digest()
    expect(() => s.put('c', 'r', { a: 2, b: () => 1 }, ts(2))).toThrow(InvalidValueError)
    expect(() => s.update('c', 'r', { id: 'other' }, ts(2))).toThrow(/id field/)
    expect(() => s.put('c', '', {}, ts(2))).toThrow(InvalidValueError)
    expect(() => s.put('', 'r', {}, ts(2))).toThrow(InvalidValueError)
    expect(() => s.update('c', 'r', null as unknown as object, ts(2))).toThrow(InvalidValueError)
    expect(s.digest()).toBe(digest)
    expect(s.get('c', 'r')).toEqual({ id: 'r', a: 1 })
  })

  it('a record put with only its id is visible', () => {
    const s = new RecordStore()
    s.put('c', 'r', { id: 'r' }, ts(1))
    expect(s.get('c', 'r')).toEqual({ id: 'r' })
    expect(s.ids('c')).toEqual(['r'])
  })
})

describe('RecordStore sync and codec', () => {
  it('sends only what the other lacks, and nothing once in sync', () => {
    const a = new RecordStore()
    const b = new RecordStore()
    for (let i = 0; i < 1000; i++) a.put('c', `r${i}`, { n: i, s: 'text' }, ts(1, 'a', i))
    pull(a, b)
    for (let i = 0; i < 10; i++) a.update('c', `r${i}`, { n: -i }, ts(2, 'a', i))
    const delta = a.changesSince(b.versionVector())
    expect(delta.records.length).toBe(10)
    expect(delta.records.every((r) => r.fields.length === 1 && !r.floor)).toBe(true)
    pull(a, b)
    const idle = a.changesSince(b.versionVector())
    expect(idle.records).toEqual([])
    expect(idle.to.size).toBe(0)
    expect(a.digest()).toBe(b.digest())
  })

  it('apply is idempotent and order-independent', () => {
    const a = new RecordStore()
    a.put('c', 'r', { x: 1 }, ts(1))
    a.delete('c', 'q', ts(2))
    a.update('c', 'r', { y: 2 }, ts(3))
    const d = a.changesSince(new Map())
    const b = new RecordStore()
    b.apply(d)
    b.apply(d)
    const c = new RecordStore()
    c.apply({ ...d, records: [...d.records].reverse() })
    expect(b.digest()).toBe(a.digest())
    expect(c.digest()).toBe(a.digest())
    expect(b.apply(d).changed).toEqual([])
  })

  it('digest is equal exactly when visible state is equal', () => {
    const a = new RecordStore()
    const b = new RecordStore()
    a.put('c', 'r', { x: 0 }, ts(1))
    b.put('c', 'r', { x: -0 }, ts(1))
    expect(a.digest()).not.toBe(b.digest())
    b.put('c', 'r', { x: 0 }, ts(2, 'b')) // same visible state, different timestamps
    expect(a.digest()).toBe(b.digest())
    expect(new RecordStore().digest()).toBe(new RecordStore().digest())
  })

  it('state round-trips through the binary codec, tombstones and floors included', () => {
    const a = new RecordStore()
    a.put('c', 'r1', { s: 'héllo\ud800', b: new Uint8Array([1, 2]), n: -0, f: NaN, o: { k: [1] } }, ts(1))
    a.delete('c', 'r2', ts(2))
    a.update('d', 'r3', { gone: undefined, kept: 1.25 }, ts(3, 'b'))
    const b = RecordStore.decodeState(a.encodeState())
    expect(b.digest()).toBe(a.digest())
    expect(b.versionVector()).toEqual(a.versionVector())
    expect(Object.is(b.get('c', 'r1')!.n, -0)).toBe(true)
    // the delete floor survives: an older concurrent write stays erased after the round trip
    b.update('c', 'r2', { late: true }, ts(1, 'z'))
    expect(b.get('c', 'r2')).toBeUndefined()
  })

  it('live deltas that arrive out of order still count as received once the gap closes', () => {
    const a = new RecordStore()
    const b = new RecordStore()
    a.put('c', 'r1', { n: 1 }, ts(1))
    const first = a.changesOf('a', undefined, [{ collection: 'c', id: 'r1' }])
    a.put('c', 'r2', { n: 2 }, ts(2))
    const second = a.changesOf('a', ts(1), [{ collection: 'c', id: 'r2' }])
    a.put('c', 'r3', { n: 3 }, ts(3))
    const third = a.changesOf('a', ts(2), [{ collection: 'c', id: 'r3' }])
    // The third and second arrive first: applied, but not counted (b lacks a's write at 1).
    expect(b.apply(third).advanced).toBe(false)
    expect(b.apply(second).advanced).toBe(false)
    expect(b.versionVector().get('a')).toBeUndefined()
    expect(b.get('c', 'r3')).toEqual({ id: 'r3', n: 3 })
    // The first closes the gap: the vector moves over all three at once.
    expect(b.apply(first).advanced).toBe(true)
    expect(b.versionVector().get('a')).toEqual(ts(3))
    expect(a.changesSince(b.versionVector()).records).toHaveLength(0)
  })

  it('writes held ahead of the vector still go to a peer whose vector covers it (encodeChangesSince skips only what it may)', () => {
    const a = new RecordStore()
    a.put('c', 'r1', { n: 1 }, ts(1))
    a.put('c', 'r2', { n: 2 }, ts(2))
    const second = a.changesOf('a', ts(1), [{ collection: 'c', id: 'r2' }])
    for (const encoded of [false, true]) {
      const b = new RecordStore()
      // Ahead of a gap: held, not counted. A peer with an empty vector for `a` lacks it all the same.
      if (encoded) b.applyEncoded(encodeDelta(second))
      else b.apply(second)
      expect(b.versionVector().size).toBe(0)
      const fresh = new RecordStore()
      fresh.put('c', 'x', { n: 0 }, ts(1, 'z'))
      const answer = decodeDelta(b.encodeChangesSince(fresh.versionVector()))
      expect(answer.records.map((r) => r.id)).toEqual(['r2'])
      // Once b's vector covers it, a peer covering b's vector lacks nothing, and the answer says so.
      b.apply(a.changesSince(new Map()))
      expect(decodeDelta(b.encodeChangesSince(a.versionVector())).records).toHaveLength(0)
      expect(b.encodeChangesSince(a.versionVector())).toEqual(encodeDelta(b.changesSince(a.versionVector())))
    }
    // After a rebase the own writes kept are outside the cleared vector: they still go out.
    const c = new RecordStore()
    c.put('c', 'mine', { n: 1 }, ts(5, 'c'))
    c.rebase(new Map(), undefined, 'c')
    const peer = new Map([['z', ts(1, 'z')]])
    expect(decodeDelta(c.encodeChangesSince(peer)).records.map((r) => r.id)).toEqual(['mine'])
  })

  it('a corrupt or truncated state is a DecodeError, never a partial store', () => {
    const a = new RecordStore()
    for (let i = 0; i < 50; i++) a.put('c', `r${i}`, { n: i, s: `s${i}` }, ts(i + 1))
    const bytes = a.encodeState()
    expect(() => RecordStore.decodeState(bytes.subarray(0, bytes.length - 3))).toThrow(DecodeError)
    expect(bytes[0]).toBe(2)
    expect(() => RecordStore.decodeState(new Uint8Array([3, ...bytes.subarray(1)]))).toThrow(/version 3/)
    expect(() => RecordStore.decodeState(new Uint8Array([0, ...bytes.subarray(1)]))).toThrow(/version 0/)
    expect(() => RecordStore.decodeState(new Uint8Array([...bytes, 0]))).toThrow(/trailing/)
  })
})

describe('RecordStore tombstone collection', () => {
  it('drops stable delete floors and removals, keeps visible state, and refuses the older writes they erased', () => {
    const a = new RecordStore()
    const b = new RecordStore()
    a.put('c', 'gone', { n: 1, s: 'x' }, ts(1))
    a.put('c', 'kept', { n: 2, s: 'y' }, ts(2))
    pull(a, b) // b holds both records, as a peer in flight might still send them
    const old = b.changesSince(new Map())
    a.delete('c', 'gone', ts(3))
    a.update('c', 'kept', { s: undefined }, ts(4))
    pull(a, b)
    const digest = a.digest()
    expect(a.collect(b.versionVector())).toEqual({ tombstones: 2, records: 1 })
    expect(a.digest()).toBe(digest)
    expect(a.encodeState().length).toBeLessThan(b.encodeState().length)
    // The writes the tombstones erased arrive again (a duplicate in flight): they stay out.
    a.apply(old)
    expect(a.get('c', 'gone')).toBeUndefined()
    expect(a.get('c', 'kept')).toEqual({ id: 'kept', n: 2 })
    expect(a.digest()).toBe(digest)
    // A later write still revives the record, with only its own fields.
    b.update('c', 'gone', { late: true }, ts(5, 'b'))
    pull(b, a)
    expect(a.get('c', 'gone')).toEqual({ id: 'gone', late: true })
    expect(a.gcFrontier().newest).toEqual(ts(4))
  })

  it('collects nothing the stable vector or its own vector does not cover', () => {
    const a = new RecordStore()
    a.delete('c', 'r', ts(5))
    expect(a.collect(new Map([['a', ts(4)]]))).toEqual({ tombstones: 0, records: 0 })
    expect(a.collect(new Map([['a', ts(9)]]))).toEqual({ tombstones: 1, records: 1 })
    const b = new RecordStore()
    b.delete('c', 'r', ts(5))
    expect(b.collect(new Map([['z', ts(9)]]))).toEqual({ tombstones: 0, records: 0 })
  })

  it('reads no record and keeps the delta index when no table holds a tombstone', () => {
    const a = new RecordStore({ indexFromRecords: 1 })
    for (let i = 0; i < 50; i++) a.put('c', `r${i}`, { n: i }, ts(i + 1))
    const since = a.versionVector()
    a.update('c', 'r7', { n: -1 }, ts(100))
    expect(a.changesSince(since).records.map((r) => r.id)).toEqual(['r7']) // through the index, built here
    const index = (a as unknown as { index: unknown }).index
    expect(index).toBeDefined()
    // The same store loaded from a snapshot in its memory layout (the load's block check notes tombstones too).
    const loaded = RecordStore.decodeSnapshot(a.encodeSnapshot())
    const read = vi.spyOn(Table.prototype, 'read')
    try {
      expect(a.collect(a.versionVector())).toEqual({ tombstones: 0, records: 0 })
      expect(loaded.collect(loaded.versionVector())).toEqual({ tombstones: 0, records: 0 })
      expect(read).not.toHaveBeenCalled()
    } finally {
      read.mockRestore()
    }
    expect((a as unknown as { index: unknown }).index).toBe(index)
  })

  it('collects a tombstone however it was stored after a collection that found none', () => {
    /** Another replica's state holding one write, for the remote cases. */
    const remote = (write: (b: RecordStore) => void): Uint8Array => {
      const b = new RecordStore()
      write(b)
      return b.encodeState()
    }
    const cases: Record<string, (s: RecordStore) => RecordStore> = {
      'local delete': (s) => (s.delete('c', 'x', ts(10)), s),
      'local removal of a field': (s) => (s.update('c', 'x', { s: undefined }, ts(10)), s),
      'local delete of a record never held': (s) => (s.delete('c', 'new', ts(10)), s),
      'remote delete merged into a record held': (s) => (s.applyEncoded(remote((b) => b.delete('c', 'x', ts(10, 'b')))), s),
      'remote delete of a record not held (copied as it came)': (s) => (s.applyEncoded(remote((b) => b.delete('c', 'z', ts(10, 'b')))), s),
      'remote removal in a record not held (copied as it came)': (s) => (s.applyEncoded(remote((b) => b.update('c', 'z', { s: undefined }, ts(10, 'b')))), s),
      'snapshot in the memory layout': (s) => (s.delete('c', 'x', ts(10)), RecordStore.decodeSnapshot(s.encodeSnapshot())),
      'snapshot in the memory layout, a removed field': (s) => (s.update('c', 'x', { s: undefined }, ts(10)), RecordStore.decodeSnapshot(s.encodeSnapshot())),
      'snapshot as a delta': (s) => (s.delete('c', 'x', ts(10)), RecordStore.decodeState(s.encodeState())),
    }
    for (const [name, store] of Object.entries(cases)) {
      const s = new RecordStore()
      s.put('c', 'x', { n: 1, s: 'a' }, ts(1))
      s.put('c', 'y', { n: 2 }, ts(2))
      expect(s.collect(s.versionVector()), name).toEqual({ tombstones: 0, records: 0 })
      const after = store(s)
      expect(after.collect(after.versionVector()).tombstones, name).toBe(1)
      expect(after.collect(after.versionVector()).tombstones, name).toBe(0)
    }
  })

  it('rebase keeps only its own writes newer than the frontier, or on records the frontier never saw', () => {
    const room = new RecordStore()
    const p = new RecordStore()
    room.put('c', 'deleted', { n: 1 }, ts(1))
    room.put('c', 'alive', { n: 1 }, ts(2))
    pull(room, p)
    // p goes away; meanwhile the room deletes a record and collects the tombstone.
    room.delete('c', 'deleted', ts(10))
    room.collect(room.versionVector())
    // p, offline: an edit older than the collected delete, one newer, and a record of its own.
    p.update('c', 'deleted', { early: true }, ts(5, 'p'))
    p.update('c', 'alive', { late: true }, ts(11, 'p'))
    p.put('c', 'mine', { n: 3 }, ts(6, 'p'))
    const { vector, newest } = room.gcFrontier()
    expect(covers(p.versionVector(), vector)).toBe(false) // p missed a collected tombstone
    p.rebase(room.versionVector(), newest, 'p')
    expect(p.versionVector().size).toBe(0)
    pull(room, p)
    pull(p, room)
    expect(p.digest()).toBe(room.digest())
    expect(room.get('c', 'deleted')).toBeUndefined() // not resurrected by the early offline edit (lost)
    expect(room.get('c', 'alive')).toEqual({ id: 'alive', n: 1, late: true }) // the later edit is kept
    expect(room.get('c', 'mine')).toEqual({ id: 'mine', n: 3 }) // a record the frontier never saw is kept
  })
})

describe('RecordStore memory layout', () => {
  /** Every visible record with its fields, in listing order. */
  const listing = (s: RecordStore): string => JSON.stringify(s.collections().map((c) => [c, s.all(c)]))

  it('reclaims rows and arena space (renumbering, compaction) without changing state, order or the index', () => {
    const s = new RecordStore({ indexFromRecords: 0 })
    const model = new Map<string, Record<string, unknown>>()
    let t = 1
    for (let i = 0; i < 5000; i++) {
      s.put('c', `id-${i}`, { n: i, s: 'x'.repeat(i % 7) }, ts(t++))
      model.set(`id-${i}`, { n: i, s: 'x'.repeat(i % 7), id: `id-${i}` }) // a record lists its id last
    }
    const vv = s.versionVector()
    expect(s.changesSince(vv).records).toEqual([]) // builds the index
    // Growing values move blocks to the end of the arena, leaving garbage behind until it is compacted.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 5000; i += 3) {
        s.update('c', `id-${i}`, { s: 'y'.repeat(10 + round * 20) }, ts(t++))
        model.get(`id-${i}`)!.s = 'y'.repeat(10 + round * 20)
      }
    }
    // Deleting most records and collecting their tombstones empties most rows: they are renumbered.
    for (let i = 0; i < 5000; i++) {
      if (i % 5 === 0) continue
      s.delete('c', `id-${i}`, ts(t++))
      model.delete(`id-${i}`)
    }
    expect(s.collect(s.versionVector()).records).toBe(4000)
    // Records created again come after the older ones, as in a Map.
    s.put('c', 'id-1', { back: true }, ts(t++))
    model.set('id-1', { back: true, id: 'id-1' })
    expect(listing(s)).toBe(JSON.stringify([['c', [...model.values()]]]))
    for (const [id, rec] of model) expect(s.get('c', id)).toEqual(rec)
    expect(s.get('c', 'id-2')).toBeUndefined()
    // The index (dropped by collect, rebuilt) still finds exactly the newer writes.
    const before = s.versionVector()
    s.update('c', 'id-5', { late: 1 }, ts(t++, 'b'))
    expect(s.changesSince(before).records.map((r) => r.id)).toEqual(['id-5'])
    const copy = RecordStore.decodeState(s.encodeState())
    expect(listing(copy)).toBe(listing(s))
    expect(copy.digest()).toBe(s.digest())
  })

  it('ids that are not ASCII (or not well-formed UTF-16) are found, listed and encoded exactly', () => {
    const s = new RecordStore()
    const ids = ['é', 'éa', 'a', 'ab', '\ud800', '\ud800x', '😀', '😀😀', 'z'.repeat(300), 'z'.repeat(300) + 'é']
    ids.forEach((id, i) => s.put('c', id, { i }, ts(i + 1)))
    expect(s.ids('c')).toEqual(ids)
    for (const [i, id] of ids.entries()) expect(s.get('c', id)).toEqual({ id, i })
    const copy = RecordStore.decodeState(s.encodeState())
    expect(copy.ids('c')).toEqual(ids)
    expect(copy.digest()).toBe(s.digest())
    expect(Buffer.from(copy.encodeState()).equals(Buffer.from(encodeDelta(s.changesSince(new Map()))))).toBe(true)
  })

  it('a large snapshot loads into an empty store sized once, and loads again (or merges) into a full one unchanged', () => {
    const s = new RecordStore()
    for (let i = 0; i < 5000; i++) s.put('big', `id${i}`, { a: i, b: `v${i % 7}` }, ts(1000 + i, i % 3 === 0 ? 'a' : 'b'))
    for (let i = 0; i < 300; i++) s.put('small', `s${i}`, { c: true }, ts(9000 + i))
    const state = s.encodeState()
    const copy = RecordStore.decodeState(state)
    expect(copy.digest()).toBe(s.digest())
    expect(copy.count('big')).toEqual({ visible: 5000, deleted: 0 })
    // Loaded again into the full store: nothing changes, and the rows are not duplicated.
    copy.applyEncoded(state)
    expect(copy.digest()).toBe(s.digest())
    expect(copy.ids('big').length).toBe(5000)
    // A later write on top of the loaded records, then a reload of the old snapshot: the later write survives.
    copy.put('big', 'id42', { a: -1 }, ts(99_999))
    copy.applyEncoded(state)
    expect(copy.get('big', 'id42')).toEqual({ id: 'id42', a: -1 })
    expect(Buffer.from(copy.encodeState()).equals(Buffer.from(encodeDelta(copy.changesSince(new Map()))))).toBe(true)
  })

  it('received records of any size are written whole into the arena, which grows under them', () => {
    // Values from empty to 100 kB: blocks far larger than the room the arena keeps free, so it must grow while a block
    // is being written into it; records that need the general merge and ones with only a floor come in between.
    const s = new RecordStore()
    const sizes = [0, 1, 255, 256, 257, 4096, 100_000, 3, 70_000, 10]
    sizes.forEach((n, i) => s.put('c', `r${i}`, { text: 'x'.repeat(n), i }, ts(100 + i)))
    s.delete('c', 'gone', ts(50))
    const copy = new RecordStore()
    copy.put('c', 'r3', { text: 'older' }, ts(1))
    copy.applyEncoded(s.encodeState())
    expect(copy.digest()).toBe(s.digest())
    sizes.forEach((n, i) => expect(copy.get('c', `r${i}`)?.text).toBe('x'.repeat(n)))
    expect(copy.floorOf('c', 'gone')).toEqual({ ts: ts(50), deleted: true })
  })
})
