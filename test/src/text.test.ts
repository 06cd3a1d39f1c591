/**
 * Collaborative text fields (syncmesh/text, on Yjs): the API, character-level merging across replicas, delta sync by
 * derived state vector, storage and compaction, the record floor rule, events, old / text-less peers, hostile input,
 * and the bundle split (the core entry point never pulls yjs in).
 */
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import {
  DecodeError,
  MemoryStorage,
  TextUnavailableError,
  createReplica,
  type RecordChangeEvent,
  type Replica,
  type ReplicaInit,
} from '../../src/index.js'
import { yjsText } from '../../src/text/index.js'
import { type TextDelta as WireTextDelta, decodeTextDelta, decodeTextDeltaOn, encodeTextDelta, encodeTextDeltaOn, tablesOf } from '../../src/text/codec.js'
import { decodeMessage, encodeTextAckToMessage, encodeTextMessage, textFingerprint } from '../../src/sync/protocol.js'
import type { ReplicaImpl } from '../../src/replica.js'
import { MemoryNetwork } from '../../transports/memory.js'
import { bundleDetails } from '../../examples/web/bundle.js'
import { IDBFactory, IDBKeyRange } from 'fake-indexeddb'
import { indexedDBStorage } from '../../src/storage/indexeddb.js'
import { record, reopen, settle, until } from './helpers.js'

const open: Replica[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()))
})

type TextReplica = Replica<Y.Text>

/** A replica with text support on `net`, closed after the test. */
async function textReplica(net: MemoryNetwork, peerId: string, init: Partial<ReplicaInit<Y.Text>> = {}): Promise<TextReplica> {
  const r = await createReplica<Y.Text>({ peerId, transports: [net.transport()], antiEntropyMs: 0, text: yjsText(), ...init })
  open.push(r)
  return r
}

describe('text fields', () => {
  it('concurrent edits of one text on three replicas merge character by character everywhere', async () => {
    const net = new MemoryNetwork({ seed: 3 })
    const rs = [await textReplica(net, 'a'), await textReplica(net, 'b'), await textReplica(net, 'c')]
    await settle(...rs)
    const texts = rs.map((r) => r.collection('todos').text('milk', 'notes'))
    texts[0]!.insert(0, 'buy milk')
    await settle(...rs)
    net.partition(['a'])
    net.partition(['b'])
    texts[0]!.insert(3, ' oat') // in the middle
    texts[1]!.insert(0, 'please ') // prepended
    texts[2]!.insert(8, ' today') // appended
    texts[2]!.delete(0, 1) // and a deletion of a character the others keep editing around
    texts[2]!.insert(0, 'B')
    net.heal()
    await settle(...rs)
    const result = texts.map((t) => t.toString())
    expect(new Set(result).size).toBe(1)
    expect(result[0]).toBe('please Buy oat milk today')
    expect(rs[1]!.collection('todos').get('milk')).toEqual({ id: 'milk' })
  })

  it('one record holds LWW fields and text fields; a text field does not touch the LWW field of that name', async () => {
    const net = new MemoryNetwork({ seed: 4 })
    const [a, b] = [await textReplica(net, 'a'), await textReplica(net, 'b')]
    const todosA = a.collection<{ id: string; title?: string; notes?: string }>('todos')
    await todosA.put({ id: 't', title: 'Milk', notes: 'an LWW string' })
    todosA.text('t', 'notes').insert(0, 'oat, not soy')
    await settle(a, b)
    const todosB = b.collection<{ id: string; title?: string; notes?: string }>('todos')
    expect(todosB.get('t')).toEqual({ id: 't', title: 'Milk', notes: 'an LWW string' })
    expect(todosB.text('t', 'notes').toString()).toBe('oat, not soy')
    expect(todosB.textFields('t')).toEqual(['notes'])
    expect(todosB.text('t', 'notes')).toBe(todosB.text('t', 'notes'))
  })

  it('a replica without text support throws TextUnavailableError, ignores text, and still agrees on records', async () => {
    const net = new MemoryNetwork({ seed: 5 })
    const a = await textReplica(net, 'a')
    const plain = await createReplica({ peerId: 'p', transports: [net.transport()], antiEntropyMs: 0 })
    open.push(plain)
    expect(() => plain.collection('todos').text('x', 'notes')).toThrow(TextUnavailableError)
    a.collection('todos').text('x', 'notes').insert(0, 'only for text replicas')
    await a.collection('todos').update('y', { done: true })
    await settle(a, plain) // a's sync() does not wait for text agreement with a peer that keeps no text
    expect(plain.collection('todos').get('y')).toEqual({ id: 'y', done: true })
    expect(plain.collection('todos').get('x')).toBeUndefined()
    expect(a.status().peers[0]!.behind).toBe(0)
  })

  it('a peer that was offline gets only what it lacks (delta by derived state vector), in both directions', async () => {
    const net = new MemoryNetwork({ seed: 6 })
    const [a, b] = [await textReplica(net, 'a'), await textReplica(net, 'b')]
    const ta = a.collection('docs').text('d', 'body')
    ta.insert(0, 'x'.repeat(20_000))
    await settle(a, b)
    await b.setOnline(false)
    ta.insert(5, 'hello') // a few keystrokes while b is offline
    ta.delete(0, 2)
    b.collection('docs').text('d', 'body').insert(20_000, '!')
    const before = net.stats().bytes
    await b.setOnline(true)
    await until(() => a.status().peers.length === 1 && b.status().peers.length === 1, 5000, 'reconnect')
    await settle(a, b)
    expect(b.collection('docs').text('d', 'body').toString()).toBe(ta.toString())
    expect(ta.toString()).toBe('xxxhelloxx' + 'x'.repeat(19_993) + '!')
    expect(net.stats().bytes - before).toBeLessThan(2000) // the 20 kB body is not sent again
  })

  it('keeps text across restarts, and compaction folds the Yjs history into the snapshot', async () => {
    const net = new MemoryNetwork({ seed: 7 })
    const storage = new MemoryStorage()
    const a = await createReplica<Y.Text>({ peerId: 'a', storage, text: yjsText(), compactAfterEntries: 50 })
    const t = a.collection('notes').text('n1', 'body')
    for (let i = 0; i < 400; i++) {
      t.insert(t.length, `word${i} `)
      if (i % 3 === 0) t.delete(0, 3)
      await new Promise((r) => setImmediate(r)) // one flush per edit: a long log
    }
    const content = t.toString()
    await a.close()
    const keys = (await reopen(storage).loadRange([])).map((e) => e.key.join('/'))
    expect(keys.filter((k) => k.startsWith('text/0/log/')).length).toBeLessThan(50)
    expect(keys.some((k) => k.startsWith('text/0/snapshot/'))).toBe(true)
    const a2 = await createReplica<Y.Text>({ peerId: 'a', storage: reopen(storage), text: yjsText(), transports: [net.transport()], antiEntropyMs: 0 })
    open.push(a2)
    expect(a2.collection('notes').text('n1', 'body').toString()).toBe(content)
    // It keeps syncing (and writing) after the restart.
    const b = await textReplica(net, 'b')
    await settle(a2, b)
    expect(b.collection('notes').text('n1', 'body').toString()).toBe(content)
    a2.collection('notes').text('n1', 'body').insert(0, '>')
    await settle(a2, b)
    expect(b.collection('notes').text('n1', 'body').toString()).toBe('>' + content)
  })

  it('a replica opened without text leaves stored text alone; reopened with text, it is all there', async () => {
    const storage = new MemoryStorage()
    const a = await createReplica<Y.Text>({ peerId: 'a', storage, text: yjsText() })
    a.collection('n').text('x', 'f').insert(0, 'kept')
    await a.collection('n').put({ id: 'y', v: 1 })
    await a.close()
    const plain = await createReplica({ peerId: 'a', storage: reopen(storage), compactAfterEntries: 1 })
    await plain.collection('n').put({ id: 'z', v: 2 })
    await plain.close()
    const again = await createReplica<Y.Text>({ peerId: 'a', storage: reopen(storage), text: yjsText() })
    open.push(again)
    expect(again.collection('n').text('x', 'f').toString()).toBe('kept')
    expect(again.collection('n').get('z')).toEqual({ id: 'z', v: 2 })
  })

  it('syncs over an encrypted room', async () => {
    const net = new MemoryNetwork({ seed: 8 })
    const room = { room: 'secret-notes', secret: 'a long shared passphrase' }
    const [a, b] = [await textReplica(net, 'a', room), await textReplica(net, 'b', room)]
    await until(() => a.status().peers.length === 1, 10_000, 'peers')
    a.collection('n').text('x', 'f').insert(0, 'sealed')
    await settle(a, b)
    expect(b.collection('n').text('x', 'f').toString()).toBe('sealed')
  })

  it('a text backlog larger than one message travels as a multi-part session and the vectors still agree', async () => {
    const net = new MemoryNetwork({ seed: 9 })
    const a = await textReplica(net, 'a', { maxMessageBytes: 8192 })
    for (let i = 0; i < 60; i++) a.collection('n').text(`r${i}`, 'f').insert(0, `${i}:` + 'y'.repeat(500))
    await settle(a)
    const b = await textReplica(net, 'b', { maxMessageBytes: 8192 })
    await settle(a, b)
    for (let i = 0; i < 60; i++) expect(b.collection('n').text(`r${i}`, 'f').toString()).toBe(`${i}:` + 'y'.repeat(500))
    expect(b.status().peers[0]!.behind).toBe(0)
  })
})

describe('live text on the wire', () => {
  it('keystrokes go with an empty reached set between two peers, written against the last delta the reader ACKed, and are ACKed by 6-byte TEXT_ACK_TOs that keep the writer informed', async () => {
    const net = new MemoryNetwork({ seed: 21 })
    const sent: { from: string; frame: Uint8Array }[] = []
    const counted = (peer: string): ReturnType<MemoryNetwork['transport']> => {
      const t = net.transport()
      const send = t.send.bind(t)
      t.send = (to, frame) => {
        sent.push({ from: peer, frame })
        send(to, frame)
      }
      return t
    }
    const a = await textReplica(net, 'a', { transports: [counted('a')] })
    const b = await textReplica(net, 'b', { transports: [counted('b')] })
    await until(() => a.status().peers.length === 1 && b.status().peers.length === 1, 2000, 'connect')
    await settle(a, b)
    sent.length = 0
    const typed = a.collection('todos').text('milk', 'notes')
    for (let i = 0; i < 10; i++) {
      typed.insert(typed.length, 'x')
      await new Promise((r) => setTimeout(r, 3))
    }
    await until(() => b.collection('todos').text('milk', 'notes').toString() === 'x'.repeat(10), 2000, 'the keystrokes at b')
    await until(() => a.status().peers[0]!.behind === 0, 2000, 'a to learn that b holds them (no anti-entropy runs)')
    const texts = sent.filter((s) => s.from === 'a' && s.frame[1] === 8)
    expect(texts.length).toBeGreaterThan(0)
    for (const { frame } of texts) expect([frame[2], frame[3]]).toEqual([1, 0]) // live, nobody named in `reached`
    // After the first, each is written against the tables of a delta b ACKed (text delta format 2): no peer id, no names.
    expect(texts.slice(1).every(({ frame }) => frame[4] === 2 && frame.length < 60)).toBe(true)
    const back = sent.filter((s) => s.from === 'b')
    expect(back.length).toBe(texts.length)
    for (const { frame } of back) expect([frame.length, frame[1]]).toEqual([6, 12])
    await Promise.all([a.sync({ timeoutMs: 2000 }), b.sync({ timeoutMs: 2000 })])
  })

  it('a reader that no longer holds the base a keystroke is written against asks with a TEXT_REQUEST and gets the text in full (no error, no drop)', async () => {
    const net = new MemoryNetwork({ seed: 22 })
    const a = await textReplica(net, 'a')
    const link = net.transport()
    const requests: number[] = []
    const send = link.send.bind(link)
    link.send = (to, frame) => {
      if (frame[1] === 7) requests.push(frame.length)
      send(to, frame)
    }
    const b = await textReplica(net, 'b', { transports: [link] })
    const errors = record<Error>((fn) => b.on('error', (e) => fn(e)))
    await until(() => a.status().peers.length === 1 && b.status().peers.length === 1, 2000, 'connect')
    await settle(a, b)
    const typed = a.collection('n').text('1', 'body')
    typed.insert(0, 'a')
    await until(() => b.collection('n').text('1', 'body').toString() === 'a', 2000, 'the first keystroke')
    await until(() => (a as unknown as { engine: { peers: Map<string, { textBase?: unknown }> } }).engine.peers.get('b')!.textBase !== undefined, 2000, 'a base')
    ;(b as unknown as { engine: { peers: Map<string, { textBases: { clear(): void } }> } }).engine.peers.get('a')!.textBases.clear() // as if b forgot it
    const asked = requests.length
    typed.insert(1, 'b')
    typed.insert(2, 'c')
    await until(() => b.collection('n').text('1', 'body').toString() === 'abc', 2000, 'the keystrokes after the lost base (no anti-entropy runs)')
    expect(requests.length).toBeGreaterThan(asked)
    typed.insert(3, 'd')
    await until(() => b.collection('n').text('1', 'body').toString() === 'abcd', 2000, 'live text again')
    expect(errors).toEqual([])
    expect(b.status().peers[0]!.connected).toBe(true)
    await Promise.all([a.sync({ timeoutMs: 2000 }), b.sync({ timeoutMs: 2000 })])
  })

  it('text delta format 2 round-trips against its base, appends new peers, fields and clients, and is unreadable without the base', () => {
    const ts = (wall: number, counter = 0, peer = 'writer@x1'): { wall: number; counter: number; peer: string } => ({ wall, counter, peer })
    const base: WireTextDelta = { session: 0, index: 0, count: 1, from: new Map([['writer@x1', ts(1_796_648_169_116)]]), to: new Map([['writer@x1', ts(1_796_648_169_154)]]), docs: [{ collection: 'todos', id: 'milk', field: 'notes', runs: [{ client: 3_352_628_897, clock: 299, len: 1, ts: ts(1_796_648_169_154) }], dels: [], update: Uint8Array.of(1, 2, 3) }] }
    const tables = tablesOf(decodeTextDelta(encodeTextDelta(base)))
    const next: WireTextDelta = {
      session: 9,
      index: 1,
      count: 2,
      from: base.to,
      to: new Map([['writer@x1', ts(1_796_648_169_175, 1)]]),
      docs: [
        { ...base.docs[0]!, runs: [{ client: 3_352_628_897, clock: 300, len: 1, ts: ts(1_796_648_169_175, 1) }] },
        { collection: 'c', id: 'i', field: 'f', runs: [{ client: 7, clock: 0, len: 3, ts: ts(1_796_648_169_100, 2, 'other') }], dels: [ts(1_796_648_169_090, 0, 'other')], update: Uint8Array.of(4) },
      ],
    }
    const on = encodeTextDeltaOn(next, 0xfeedf00d, tables)!
    expect(on.bytes[0]).toBe(2)
    expect(on.bytes.length).toBeLessThan(encodeTextDelta(next).length)
    const back = decodeTextDeltaOn(on.bytes, (fp) => (fp === 0xfeedf00d ? tables : undefined))!
    expect(encodeTextDelta(back.delta)).toEqual(encodeTextDelta(next))
    expect(back.tables).toEqual(on.tables)
    expect(back.tables.peers).toEqual(['writer@x1', 'other'])
    expect(back.tables.clients).toEqual([3_352_628_897, 7])
    expect(back.delta.from).toEqual(base.to)
    expect(decodeTextDeltaOn(on.bytes, () => undefined)).toBeUndefined()
    expect(() => decodeTextDelta(on.bytes)).toThrow(DecodeError) // never read as a stored (format 1) delta
    // A keystroke against its base: no peer id, no names, no absolute wall time.
    const key: WireTextDelta = { ...base, from: base.to, to: new Map([['writer@x1', ts(1_796_648_169_175)]]), docs: [{ ...base.docs[0]!, runs: [{ client: 3_352_628_897, clock: 300, len: 1, ts: ts(1_796_648_169_175) }] }] }
    const keyOn = encodeTextDeltaOn(key, 1, tables)!
    expect(keyOn.bytes.length).toBeLessThanOrEqual(encodeTextDelta(key).length - 36)
    expect(keyOn.bytes[5]).toBe(2 | 4) // `from` is the base's `to`, `to` the newest stamp it carries: both left out
    expect(encodeTextDelta(decodeTextDeltaOn(keyOn.bytes, () => tables)!.delta)).toEqual(encodeTextDelta(key))
    expect(on.bytes[5]).toBe(1 | 2) // a part; its `to` is not the newest stamp of the runs it carries
    // Random and mutated format-2 bytes: DecodeError or "base unknown", nothing else.
    let seed = 3
    const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32)
    for (let i = 0; i < 3000; i++) {
      const bytes = on.bytes.slice()
      for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) bytes[1 + Math.floor(rand() * (bytes.length - 1))] = Math.floor(rand() * 256)
      if (i % 3 === 0) bytes[1] = 0xfe
      try {
        decodeTextDeltaOn(i % 5 === 0 ? bytes.subarray(0, Math.floor(rand() * bytes.length)) : bytes, () => tables)
      } catch (err) {
        expect(err).toBeInstanceOf(DecodeError)
      }
    }
  })

  it('a TEXT_ACK_TO decodes to its fingerprint; one of another length is refused with DecodeError', () => {
    const fp = textFingerprint(Uint8Array.of(1, 2, 3))
    expect(decodeMessage(encodeTextAckToMessage(fp))).toEqual({ type: 'text-ack-to', fingerprint: fp })
    expect(decodeMessage(encodeTextAckToMessage(0xffffffff))).toEqual({ type: 'text-ack-to', fingerprint: 0xffffffff })
    const long = Uint8Array.of(...encodeTextAckToMessage(fp), 0)
    expect(() => decodeMessage(long)).toThrow(DecodeError)
    expect(() => decodeMessage(long.subarray(0, 5))).toThrow(DecodeError)
  })
})

describe('text on a shared store (tabs of one origin)', () => {
  it('an edit in one tab shows in the other at once, reaches the network through the leader, and survives both closing', async () => {
    const factory = new IDBFactory()
    const net = new MemoryNetwork({ seed: 16 })
    const tab = async (): Promise<TextReplica> => {
      const r = await createReplica<Y.Text>({ storage: indexedDBStorage('text-tabs', { indexedDB: factory, IDBKeyRange }), transports: [net.transport()], antiEntropyMs: 200, text: yjsText() })
      open.push(r)
      return r
    }
    const [t1, t2] = [await tab(), await tab()]
    const remote = await textReplica(net, 'remote', { antiEntropyMs: 200 })
    t2.collection('n').text('x', 'f').insert(0, 'from a follower tab')
    await until(() => t1.collection('n').text('x', 'f').toString() === 'from a follower tab', 5000, 'the other tab')
    await until(() => remote.collection('n').text('x', 'f').toString() === 'from a follower tab', 10_000, 'the network peer')
    remote.collection('n').text('x', 'f').insert(0, '> ')
    await until(() => t2.collection('n').text('x', 'f').toString() === '> from a follower tab', 10_000, 'the remote edit in both tabs')
    await Promise.all([t1.close(), t2.close()])
    const again = await tab()
    expect(again.collection('n').text('x', 'f').toString()).toBe('> from a follower tab')
  })
})

describe('text and the record floor (put, delete)', () => {
  it('a delete at D erases text written at or before D, even text the deleter never saw; later typing revives the record with only the later text', async () => {
    let now = 1_700_000_000_000
    const clock = { now: () => now }
    const net = new MemoryNetwork({ seed: 10 })
    const [a, b] = [await textReplica(net, 'a', { clock }), await textReplica(net, 'b', { clock })]
    const ta = a.collection('todos').text('t', 'notes')
    const tb = b.collection('todos').text('t', 'notes')
    ta.insert(0, 'shared ')
    await settle(a, b)
    net.partition(['a'])
    now += 10
    tb.insert(7, 'b-before ') // at D − 5, unseen by the deleter
    now += 5
    await a.collection('todos').delete('t') // D
    now += 5
    tb.insert(0, 'b-after ') // after D, concurrent with the delete
    net.heal()
    await settle(a, b)
    expect(ta.toString()).toBe('b-after ')
    expect(tb.toString()).toBe('b-after ')
    expect(a.collection('todos').get('t')).toEqual({ id: 't' })
    // And with nothing after D, the record stays deleted.
    now += 5
    await b.collection('todos').delete('t')
    await settle(a, b)
    expect(ta.toString()).toBe('')
    expect(a.collection('todos').get('t')).toBeUndefined()
    expect(a.collection('todos').textFields('t')).toEqual([])
  })

  it('a put replaces the record: text written before it is erased; text arriving later but stamped before it is erased on arrival', async () => {
    let now = 1_700_000_000_000
    const clock = { now: () => now }
    const net = new MemoryNetwork({ seed: 11 })
    const [a, b] = [await textReplica(net, 'a', { clock }), await textReplica(net, 'b', { clock })]
    net.partition(['a'])
    b.collection('todos').text('t', 'notes').insert(0, 'old notes')
    now += 10
    await a.collection('todos').put({ id: 't', title: 'fresh' })
    net.heal()
    await settle(a, b)
    expect(b.collection('todos').get('t')).toEqual({ id: 't', title: 'fresh' })
    expect(a.collection('todos').text('t', 'notes').toString()).toBe('')
    expect(b.collection('todos').text('t', 'notes').toString()).toBe('')
    now += 10
    b.collection('todos').text('t', 'notes').insert(0, 'new notes')
    await settle(a, b)
    expect(a.collection('todos').text('t', 'notes').toString()).toBe('new notes')
    expect(a.collection('todos').get('t')).toEqual({ id: 't', title: 'fresh' })
  })
})

describe('text events', () => {
  it('subscriptions get the Yjs delta beside the record; merged text never fires conflict', async () => {
    let now = 1_700_000_000_000
    const clock = { now: () => now }
    const net = new MemoryNetwork({ seed: 12 })
    const [a, b] = [await textReplica(net, 'a', { clock }), await textReplica(net, 'b', { clock })]
    const seen = record<RecordChangeEvent>((fn) => b.collection('todos').subscribe((cs) => cs.forEach(fn)))
    const conflicts = record<unknown>((fn) => a.on('conflict', fn))
    const bConflicts = record<unknown>((fn) => b.on('conflict', fn))
    await a.collection('todos').put({ id: 't', title: 'Milk' })
    await settle(a, b)
    net.partition(['a'])
    now += 1
    a.collection('todos').text('t', 'notes').insert(0, 'AAA')
    now += 1
    b.collection('todos').text('t', 'notes').insert(0, 'BBB')
    net.heal()
    await settle(a, b)
    expect(conflicts).toEqual([])
    expect(bConflicts).toEqual([])
    const local = seen.find((e) => e.origin === 'local' && e.text)
    expect(local).toMatchObject({ type: 'updated', id: 't', record: { id: 't', title: 'Milk' }, text: { notes: [{ insert: 'BBB' }] } })
    const remote = seen.find((e) => e.origin === 'remote' && e.text)
    expect(remote?.text?.notes).toBeDefined()
    const merged = b.collection('todos').text('t', 'notes').toString()
    expect(merged === 'AAABBB' || merged === 'BBBAAA').toBe(true)
    // A delete reports the erased text with the deletion.
    now += 1
    seen.length = 0
    await a.collection('todos').delete('t')
    await settle(a, b)
    expect(seen).toMatchObject([{ type: 'deleted', id: 't', origin: 'remote', text: { notes: [{ delete: 6 }] } }])
  })

  it('typing into a text field of an unknown record adds it (an "added" event with its delta)', async () => {
    const net = new MemoryNetwork({ seed: 13 })
    const [a, b] = [await textReplica(net, 'a'), await textReplica(net, 'b')]
    const seen = record<RecordChangeEvent>((fn) => b.on('change', (cs) => cs.forEach(fn)))
    a.collection('todos').text('new', 'notes').insert(0, 'hi')
    await settle(a, b)
    expect(seen).toEqual([{ type: 'added', collection: 'todos', id: 'new', record: { id: 'new' }, origin: 'remote', text: { notes: [{ insert: 'hi' }] } }])
  })
})

describe('hostile text input', () => {
  it('random and mutated text deltas fail with DecodeError only', () => {
    const doc = new Y.Doc()
    doc.getText('text').insert(0, 'hello')
    const good = encodeTextDelta({
      session: 0,
      index: 0,
      count: 1,
      from: new Map(),
      to: new Map([['p', { wall: 5, counter: 0, peer: 'p' }]]),
      docs: [{ collection: 'c', id: 'i', field: 'f', runs: [{ client: doc.clientID, clock: 0, len: 5, ts: { wall: 5, counter: 0, peer: 'p' } }], dels: [], update: Y.encodeStateAsUpdate(doc) }],
    })
    expect(decodeTextDelta(good).docs[0]!.runs[0]!.len).toBe(5)
    let seed = 1
    const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32)
    for (let i = 0; i < 3000; i++) {
      const bytes = i % 2 ? good.slice() : new Uint8Array(Math.floor(rand() * 64)).map(() => Math.floor(rand() * 256))
      if (i % 2) for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256)
      try {
        decodeTextDelta(bytes)
      } catch (err) {
        expect(err).toBeInstanceOf(DecodeError)
      }
    }
  })

  it('a peer sending structs outside the runs it declares is dropped and nothing changes', async () => {
    const net = new MemoryNetwork({ seed: 14 })
    const victim = await textReplica(net, 'v')
    victim.collection('c').text('i', 'f').insert(0, 'mine')
    const errors = record<Error>((fn) => victim.on('error', (e) => fn(e)))
    const rogue = net.transport()
    const room = (victim as unknown as { engine: { init: { room: { room: string } } } }).engine.init.room.room
    await rogue.start({ room, peerId: 'rogue' })
    await until(() => victim.status().peers.length === 1, 2000, 'rogue to connect')
    const doc = new Y.Doc()
    doc.getText('text').insert(0, 'unstamped')
    const delta = encodeTextDelta({ session: 0, index: 0, count: 1, from: new Map(), to: new Map(), docs: [{ collection: 'c', id: 'i', field: 'f', runs: [], dels: [], update: Y.encodeStateAsUpdate(doc) }] })
    rogue.send('v', encodeTextMessage(delta, false))
    await until(() => errors.length > 0, 2000, 'the error')
    expect(errors[0]).toBeInstanceOf(DecodeError)
    expect(victim.collection('c').text('i', 'f').toString()).toBe('mine')
    expect(victim.status().peers[0]!.connected).toBe(false)
    await rogue.stop()
  })
})

describe('bundles', () => {
  it('a bundle of createReplica alone takes in no yjs; one of syncmesh/text does', async () => {
    const core = await bundleDetails(`import { createReplica } from 'syncmesh'\nexport const x = createReplica`)
    expect(core.inputs.filter((f) => /yjs|lib0|src\/text\/store/.test(f))).toEqual([])
    const text = await bundleDetails(`import { createReplica } from 'syncmesh'\nimport { yjsText } from 'syncmesh/text'\nexport const x = [createReplica, yjsText]`)
    expect(text.inputs.some((f) => f.includes('node_modules/yjs/'))).toBe(true)
  })
})

describe('the test kit sees text (ReplicaImpl.text)', () => {
  it('exposes digests that agree once converged', async () => {
    const net = new MemoryNetwork({ seed: 15 })
    const [a, b] = [await textReplica(net, 'a'), await textReplica(net, 'b')]
    a.collection('c').text('i', 'f').insert(0, 'abc')
    await settle(a, b)
    const digest = (r: Replica): string => (r as unknown as ReplicaImpl).text!.digest()
    expect(digest(a)).toBe(digest(b))
    b.collection('c').text('i', 'f').insert(0, 'z')
    expect(digest(a)).not.toBe(digest(b))
  })
})

describe('text and tombstone collection', () => {
  it('a gated peer (not yet shown to cover our collection frontier) neither gets nor gives text until it does', async () => {
    const net = new MemoryNetwork({ seed: 5 })
    const a = await textReplica(net, 'a')
    const b = await textReplica(net, 'b')
    await a.collection('todos').put({ id: 'milk', title: 'Buy milk' })
    await settle(a, b)
    const impl = (r: Replica): ReplicaImpl => r as ReplicaImpl
    // As if a had collected tombstones that both hold: b is gated until it shows a FRONTIER covering a's.
    impl(a).store.restoreFrontier(impl(a).store.versionVector(), undefined)
    const notes = (r: TextReplica): Y.Text => r.collection('todos').text('milk', 'notes')
    notes(b).insert(0, 'from b')
    notes(a).insert(0, 'from a')
    await new Promise((r) => setTimeout(r, 50))
    expect(notes(a).toString()).toBe('from a') // b's live TEXT was not applied
    expect(notes(b).toString()).toBe('from b') // a's was not sent
    impl(a).engine.antiEntropy() // a's FRONTIER: b takes it and answers with its own, which opens a's gate
    await new Promise((r) => setTimeout(r, 50))
    impl(b).engine.antiEntropy()
    await until(() => notes(a).toString() === notes(b).toString() && notes(a).length === 12, 2000, 'text once the gate opened')
  })
})
