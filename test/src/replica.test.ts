import { afterEach, describe, expect, it } from 'vitest'
import {
  ClockDriftError,
  DecodeError,
  InvalidValueError,
  MemoryStorage,
  MessageTooLargeError,
  ReplicaClosedError,
  StorageCorruptError,
  SyncTimeoutError,
  UnsupportedVersionError,
  createReplica,
  type Replica,
  type ConflictEvent,
  type RecordChangeEvent,
  type Storage,
} from '../../src/index.js'
import { MemoryNetwork } from '../../transports/memory.js'
import { encodeDeltaMessage, encodeVectorMessage } from '../../src/sync/protocol.js'
import { peerOfWriter, writerIdFor } from '../../src/sync/engine.js'
import { RecordStore, encodeDelta } from '../../crdt/index.js'
import { type Todo, record, reopen, replicas, until } from './helpers.js'

const open: Replica[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()))
})
async function make(...args: Parameters<typeof replicas>) {
  const out = await replicas(...args)
  open.push(...out.rs)
  return out
}

describe('replica API', () => {
  it('writes are readable synchronously and resolve once stored', async () => {
    const storage = new MemoryStorage()
    const r = await createReplica({ storage })
    open.push(r)
    const todos = r.collection<Todo>('todos')
    const p = todos.put({ id: 'a', title: 'milk' })
    expect(todos.get('a')).toEqual({ id: 'a', title: 'milk' })
    expect(r.status().pending).toBe(1)
    await p
    expect(r.status().pending).toBe(0)
    expect(storage.byteSize).toBeGreaterThan(0)
    await todos.update('a', { done: true })
    expect(todos.get('a')).toEqual({ id: 'a', title: 'milk', done: true })
    await todos.put({ id: 'a', title: 'oat milk' })
    expect(todos.get('a')).toEqual({ id: 'a', title: 'oat milk' })
    await todos.update('a', { title: undefined })
    expect(todos.get('a')).toEqual({ id: 'a' })
    await todos.delete('a')
    expect(todos.get('a')).toBeUndefined()
    expect(todos.all()).toEqual([])
  })

  it('gives a random ≥128-bit peer id and keeps it across restarts of the same storage', async () => {
    const storage = new MemoryStorage()
    const r1 = await createReplica({ storage })
    expect(r1.peerId).toMatch(/^[0-9a-f]{32}$/)
    await r1.collection('c').put({ id: 'x', v: 1 })
    await r1.close()
    const r2 = await createReplica({ storage: reopen(storage) })
    open.push(r2)
    expect(r2.peerId).toBe(r1.peerId)
    expect(r2.collection('c').get('x')).toEqual({ id: 'x', v: 1 })
  })

  it('refuses bad records with typed errors and writes nothing', async () => {
    const { rs: [r] } = await make(1)
    const c = r!.collection<Todo>('todos')
    await c.put({ id: 'ok', n: 1 })
    const before = r!.status()
    await expect(c.put({ title: 'no id' } as unknown as Todo)).rejects.toThrow(InvalidValueError)
    await expect(c.put({ id: 5 } as unknown as Todo)).rejects.toThrow(InvalidValueError)
    await expect(c.put(null as unknown as Todo)).rejects.toThrow(InvalidValueError)
    await expect(c.update('ok', { n: (() => 1) as unknown as number })).rejects.toThrow(InvalidValueError)
    await expect(c.update('ok', { n: new Date() as unknown as number })).rejects.toThrow(InvalidValueError)
    await expect(c.update('', { n: 1 })).rejects.toThrow(InvalidValueError)
    // A cyclic value (wide, so that walking it naively would take forever) is refused as invalid, not as too large.
    const cyclic: Record<string, unknown> = {}
    for (const k of ['a', 'b', 'c', 'd']) cyclic[k] = cyclic
    await expect(c.update('ok', { n: cyclic as unknown as number })).rejects.toThrow(InvalidValueError)
    expect(c.get('ok')).toEqual({ id: 'ok', n: 1 })
    expect(r!.status()).toEqual(before)
    expect(() => r!.collection('')).toThrow(InvalidValueError)
  })

  it('refuses a write larger than the message limit before writing it', async () => {
    const { rs: [r] } = await make(1, { maxMessageBytes: 64 * 1024 })
    const c = r!.collection('blobs')
    await expect(c.put({ id: 'b', data: new Uint8Array(100_000) })).rejects.toThrow(MessageTooLargeError)
    await expect(c.put({ id: 'b', data: { nested: ['x'.repeat(30_000)] } })).rejects.toThrow(MessageTooLargeError)
    expect(c.get('b')).toBeUndefined()
  })

  it('rejects every call after close with ReplicaClosedError', async () => {
    const r = await createReplica()
    await r.close()
    await r.close() // idempotent
    await expect(r.collection('c').put({ id: 'x' })).rejects.toThrow(ReplicaClosedError)
    await expect(r.sync()).rejects.toThrow(ReplicaClosedError)
  })

  it('reports added / updated / deleted changes to subscribers, local and remote', async () => {
    const { rs: [a, b] } = await make(2)
    const seen = record<readonly RecordChangeEvent<Todo>[]>((fn) => b!.collection<Todo>('todos').subscribe(fn))
    const other = record<readonly RecordChangeEvent[]>((fn) => b!.collection('other').subscribe(fn))
    const ta = a!.collection<Todo>('todos')
    await ta.put({ id: '1', title: 'x' })
    await a!.sync()
    await ta.update('1', { done: true })
    await a!.sync()
    await ta.delete('1')
    await a!.sync()
    await b!.collection<Todo>('todos').put({ id: '2' })
    const flat = seen.flat().map((e) => `${e.type}:${e.id}:${e.origin}`)
    expect(flat).toEqual(['added:1:remote', 'updated:1:remote', 'deleted:1:remote', 'added:2:local'])
    expect(seen.flat()[1]!.record).toEqual({ id: '1', title: 'x', done: true })
    expect(other).toEqual([])
  })
})

describe('replication', () => {
  it('converges on concurrent writes and reports each lost value as a conflict', async () => {
    const { rs: [a, b] } = await make(2)
    const conflicts = record<unknown>((fn) => a!.on('conflict', fn))
    const ta = a!.collection<Todo>('todos')
    const tb = b!.collection<Todo>('todos')
    await ta.put({ id: '1', title: 'milk' })
    await a!.sync()
    await Promise.all([ta.update('1', { title: 'oat' }), tb.update('1', { title: 'soy', done: true })])
    await Promise.all([a!.sync(), b!.sync()])
    expect(ta.get('1')).toEqual(tb.get('1'))
    expect(ta.get('1')!.done).toBe(true)
    expect(conflicts.length).toBe(1)
    expect(conflicts[0]).toMatchObject({ collection: 'todos', id: '1', field: 'title' })
  })

  it('an overwrite of a value the writer had seen is not a conflict, on any replica (app-chosen peer ids)', async () => {
    const { rs } = await make(3)
    const [a, b, c] = rs as [Replica, Replica, Replica]
    const conflicts = rs.map((r) => record<ConflictEvent>((fn) => r.on('conflict', fn)))
    await a.collection<Todo>('todos').put({ id: '1', title: 'milk' })
    await Promise.all(rs.map((r) => r.sync()))
    await b.collection<Todo>('todos').update('1', { title: 'soy' }) // b held 'milk' and said so: a plain edit
    await Promise.all(rs.map((r) => r.sync()))
    expect(c.collection<Todo>('todos').get('1')!.title).toBe('soy')
    expect(conflicts.flat()).toEqual([])
    // The control: the same edit made concurrently with another one is reported where a value lost.
    await Promise.all([a.collection<Todo>('todos').update('1', { title: 'oat' }), c.collection<Todo>('todos').update('1', { title: 'rice' })])
    await Promise.all(rs.map((r) => r.sync()))
    expect(conflicts.flat().length).toBeGreaterThan(0)
    expect(conflicts.flat().every((x) => x.field === 'title')).toBe(true)
  })

  it('writer ids map back to the peer that writes them, whatever characters the peer id holds', () => {
    for (const id of ['r0', 'a@b', '@', 'x@@y', 'ü@😀', 'x.y']) expect(peerOfWriter(writerIdFor(id, 'k3j9x0qz'))).toBe(id)
    expect(peerOfWriter(writerIdFor('0123abcd'))).toBe('0123abcd')
  })

  it('a delete racing an update resolves by timestamp on every replica', async () => {
    let t = 1_000
    const { rs: [a, b] } = await make(2, { clock: { now: () => t } })
    const ta = a!.collection<Todo>('todos')
    const tb = b!.collection<Todo>('todos')
    await ta.put({ id: '1', title: 'milk', n: 1 })
    await a!.sync()
    t = 2_000
    await tb.update('1', { n: 2 }) // older
    t = 3_000
    await ta.delete('1') // newer: wins, the update is erased with it
    await Promise.all([a!.sync(), b!.sync()])
    expect(ta.get('1')).toBeUndefined()
    expect(tb.get('1')).toBeUndefined()
    t = 4_000
    await tb.update('1', { title: 'again' }) // a later write resurrects with only its field
    await b!.sync()
    expect(ta.get('1')).toEqual({ id: '1', title: 'again' })
  })

  it('changes cross a line A–B–C where A and C are never linked', async () => {
    const net = new MemoryNetwork({ seed: 3 })
    net.link('r0', 'r2', false)
    const { rs: [a, b, c] } = await make(3, {}, net)
    await a!.collection('c').put({ id: 'x', from: 'a' })
    await c!.collection('c').put({ id: 'y', from: 'c' })
    await until(() => a!.collection('c').get('y') !== undefined && c!.collection('c').get('x') !== undefined, 5000, 'line propagation')
    expect(a!.status().peers.map((p) => p.id)).toEqual(['r1'])
    await Promise.all([a!.sync(), b!.sync(), c!.sync()])
  })

  it('repairs a lossy, duplicating network by anti-entropy', async () => {
    const net = new MemoryNetwork({ seed: 11, dropRate: 0.3, duplicateRate: 0.2, reorder: true, latencyMs: [0, 3] })
    const { rs } = await make(3, { antiEntropyMs: 20 }, net)
    for (let i = 0; i < 60; i++) await rs[i % 3]!.collection('c').update(`r${i % 7}`, { [`f${i % 4}`]: i })
    net.setFaults({ dropRate: 0, duplicateRate: 0 })
    await until(() => new Set(rs.map((r) => digest(r))).size === 1 && rs.every((r) => r.status().peers.every((p) => p.behind === 0)), 10_000, 'convergence')
  })

  it('syncs a delta larger than the message limit in parts, even when parts are lost', async () => {
    const net = new MemoryNetwork({ seed: 5, maxFrameSize: 4096 })
    const { rs: [a] } = await make(1, { maxMessageBytes: 16 * 1024 }, net)
    const c = a!.collection('big')
    for (let i = 0; i < 400; i++) await c.put({ id: `r${i}`, text: `${i}`.repeat(60) })
    net.setFaults({ dropRate: 0.05 })
    const b = await createReplica({ peerId: 'late', transports: [net.transport()], antiEntropyMs: 25, maxMessageBytes: 16 * 1024 })
    open.push(b)
    await until(() => b.collection('big').all().length === 400, 15_000, 'parts to arrive')
    net.setFaults({ dropRate: 0 })
    await until(() => digest(b) === digest(a!), 5000, 'digests')
  })

  it('a new replica that nobody listens to stores its whole catch-up: reopened offline, it holds every record', async () => {
    const net = new MemoryNetwork({ seed: 6 })
    const { rs: [a] } = await make(1, { maxMessageBytes: 16 * 1024 }, net)
    const c = a!.collection('big')
    for (let i = 0; i < 2000; i++) void c.put({ id: `r${i}`, n: i, s: `${i}`.repeat(8) })
    await a!.sync()
    const storage = new MemoryStorage()
    const b = await createReplica({ peerId: 'late', transports: [net.transport()], antiEntropyMs: 0, maxMessageBytes: 16 * 1024, storage })
    await b.sync()
    expect(b.collection('big').all()).toHaveLength(2000)
    await b.close()
    const again = await createReplica({ peerId: 'late', storage: reopen(storage) })
    open.push(again)
    expect(digest(again)).toBe(digest(a!))
    expect(again.collection('big').get('r1999')).toEqual({ id: 'r1999', n: 1999, s: '1999'.repeat(8) })
  })

  it('sync() rejects with SyncTimeoutError when a peer never answers', async () => {
    const net = new MemoryNetwork({ seed: 1 })
    const { rs: [a] } = await make(1, {}, net)
    const mute = net.transport()
    await mute.start({ room: roomOf(a!), peerId: 'mute' })
    await until(() => a!.status().peers.length === 1)
    await a!.collection('c').put({ id: 'x' })
    await expect(a!.sync({ timeoutMs: 100 })).rejects.toThrow(SyncTimeoutError)
    await mute.stop()
  })

  it('a live write sends only the changed field, whatever the history', async () => {
    const { net, rs: [a, b] } = await make(2)
    const c = a!.collection('c')
    for (let i = 0; i < 300; i++) await c.put({ id: `r${i}`, v: i, s: 'some text' })
    for (let i = 0; i < 300; i++) await c.update(`r${i}`, { v: -i })
    await a!.sync()
    const before = net.stats().bytes
    await c.update('r7', { v: 7 })
    await a!.sync()
    expect(b!.collection('c').get('r7')).toEqual({ id: 'r7', v: 7, s: 'some text' })
    expect(net.stats().bytes - before).toBeLessThan(120) // one DELTA (~35 B) and its ACK
  })

  it('a restarted replica resumes by exchanging only the delta', async () => {
    const net = new MemoryNetwork({ seed: 9 })
    const storage = new MemoryStorage()
    const a = await createReplica({ peerId: 'A', transports: [net.transport()], antiEntropyMs: 0, storage })
    const b = await createReplica({ peerId: 'B', transports: [net.transport()], antiEntropyMs: 0 })
    open.push(b)
    for (let i = 0; i < 500; i++) await a.collection('c').put({ id: `r${i}`, v: i, s: 'some text' })
    await a.sync()
    await a.close()
    await b.collection('c').update('r1', { v: -1 })
    const a2 = await createReplica({ peerId: 'A', transports: [net.transport()], antiEntropyMs: 0, storage: reopen(storage) })
    open.push(a2)
    const before = net.stats().bytes
    await a2.sync()
    await b.sync()
    expect(a2.collection('c').get('r1')).toEqual({ id: 'r1', v: -1, s: 'some text' })
    expect(net.stats().bytes - before).toBeLessThan(400)
  })
})

describe('hostile or broken peers', () => {
  async function rogueSetup() {
    const net = new MemoryNetwork({ seed: 2 })
    const { rs: [victim] } = await make(1, {}, net)
    await victim!.collection('c').put({ id: 'keep', v: 1 })
    const errors = record<Error>((fn) => victim!.on('error', (e) => fn(e)))
    const rogue = net.transport()
    await rogue.start({ room: roomOf(victim!), peerId: 'rogue' })
    await until(() => victim!.status().peers.length === 1)
    const send = async (frame: Uint8Array) => {
      rogue.send(victim!.peerId, frame)
      await new Promise((r) => setTimeout(r, 5))
    }
    return { net, victim: victim!, errors, rogue, send }
  }

  it('a malformed frame surfaces DecodeError, drops the peer and leaves data untouched', async () => {
    const { victim, errors, send, rogue } = await rogueSetup()
    const digestBefore = digest(victim)
    await send(new Uint8Array([1, 2, 0, 1, 200, 200, 200]))
    expect(errors[0]).toBeInstanceOf(DecodeError)
    expect(victim.status().peers.find((p) => p.id === 'rogue')!.connected).toBe(false)
    await send(encodeDeltaMessage(encodeDelta(fakeDelta()), true)) // ignored once dropped
    expect(digest(victim)).toBe(digestBefore)
    await rogue.stop()
  })

  it('an unknown protocol version is refused with UnsupportedVersionError; unknown types are ignored', async () => {
    const { victim, errors, send, rogue } = await rogueSetup()
    await send(new Uint8Array([1, 99, 1, 2, 3]))
    expect(errors).toEqual([])
    await send(new Uint8Array([2, 1, 0]))
    expect(errors[0]).toBeInstanceOf(UnsupportedVersionError)
    await rogue.stop()
    expect(victim.collection('c').get('keep')).toEqual({ id: 'keep', v: 1 })
  })

  it('an oversized chunked message is refused with MessageTooLargeError', async () => {
    const { errors, send, rogue } = await rogueSetup()
    await send(new Uint8Array([1, 4, 1, 0, 0xff, 0xff, 0x7f, 1, 0])) // 2 M chunks announced
    expect(errors[0]).toBeInstanceOf(MessageTooLargeError)
    await rogue.stop()
  })

  it('a delta from a clock far in the future is refused with ClockDriftError; the peer is kept', async () => {
    const { victim, errors, send, rogue } = await rogueSetup()
    const future = { wall: Date.now() + 3_600_000, counter: 0, peer: 'rogue' }
    await send(encodeDeltaMessage(encodeDelta({ from: new Map(), to: new Map([['rogue', future]]), records: [{ collection: 'c', id: 'keep', fields: [{ name: 'v', value: 666, ts: future }] }] }), true))
    expect(errors[0]).toBeInstanceOf(ClockDriftError)
    expect(victim.collection('c').get('keep')).toEqual({ id: 'keep', v: 1 })
    expect(victim.status().peers.find((p) => p.id === 'rogue')!.connected).toBe(true)
    await send(encodeVectorMessage('sync-request', new Map()))
    await rogue.stop()
  })
})

describe('storage', () => {
  it('keeps exactly one snapshot however compactions overlap, on a slow storage too', async () => {
    const mem = new MemoryStorage()
    const s: Storage = {
      // slow saves and no batch(): the compaction path with separate removals, where overlaps can happen
      save: async (k, d) => {
        await new Promise((r) => setTimeout(r, 1))
        return mem.save(k, d)
      },
      load: (k) => mem.load(k),
      remove: (k) => mem.remove(k),
      loadRange: (p) => mem.loadRange(p),
      close: () => mem.close(),
    }
    const r = await createReplica({ storage: s, compactAfterEntries: 1 })
    const c = r.collection('c')
    for (let g = 0; g < 3; g++) await Promise.all(Array.from({ length: 300 }, (_, i) => c.put({ id: `r${g * 300 + i}`, a: i })))
    await r.close()
    const left = await reopen(mem).loadRange([])
    expect(left.filter((e) => e.key[0] === 'snapshot').length).toBe(1)
    expect(left.filter((e) => e.key[0] === 'log').length).toBe(0)
    const r2 = await createReplica({ storage: reopen(mem) })
    open.push(r2)
    expect(r2.collection('c').all().length).toBe(900)
  })

  it('compacts the log into a snapshot and reopens to the same state', async () => {
    const storage = new MemoryStorage()
    const r = await createReplica({ storage, compactAfterEntries: 10 })
    const c = r.collection('c')
    for (let i = 0; i < 95; i++) await c.update(`r${i % 5}`, { v: i })
    await r.sync()
    const d = digest(r)
    await r.close()
    const keys = (await reopen(storage).loadRange([])).map((e) => e.key[0])
    expect(keys.filter((k) => k === 'snapshot').length).toBe(1)
    expect(keys.filter((k) => k === 'log').length).toBeLessThan(10)
    const r2 = await createReplica({ storage: reopen(storage) })
    open.push(r2)
    expect(digest(r2)).toBe(d)
  })

  it('a corrupt stored entry fails createReplica with StorageCorruptError naming the key', async () => {
    const storage = new MemoryStorage()
    const r = await createReplica({ storage })
    await r.collection('c').put({ id: 'x', v: 1 })
    await r.close()
    const s2 = reopen(storage)
    const [log] = (await s2.loadRange([])).filter((e) => e.key[0] !== 'meta') // the snapshot close() wrote
    const bad = log!.data.slice()
    bad[bad.length - 1]! ^= 0xff
    await s2.save(log!.key, bad)
    const err = await createReplica({ storage: s2 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StorageCorruptError)
    expect((err as StorageCorruptError).key).toEqual(log!.key)
    await reopen(s2).save(log!.key, bad.subarray(0, 5))
    await expect(createReplica({ storage: reopen(s2) })).rejects.toThrow(/truncated/)
  })

  it('closes its storage when it fails to open (no leaked connections)', async () => {
    const s = new MemoryStorage()
    await s.save(['meta', 'peer'], new Uint8Array([9, 9]))
    await expect(createReplica({ storage: s })).rejects.toThrow(StorageCorruptError)
    await expect(s.load(['meta', 'peer'])).rejects.toThrow(/closed/)
  })
})

/** A MemoryStorage that can be reopened after close (a stand-in for a restart on the same files). */
function digest(r: Replica): string {
  return (r as unknown as { store: RecordStore }).store.digest()
}

function roomOf(r: Replica): string {
  return (r as unknown as { engine: { init: { room: { room: string } } } }).engine.init.room.room
}

function fakeDelta() {
  const ts = { wall: Date.now(), counter: 0, peer: 'rogue' }
  return { from: new Map(), to: new Map([['rogue', ts]]), records: [{ collection: 'c', id: 'keep', fields: [{ name: 'v', value: 2, ts }] }] }
}
