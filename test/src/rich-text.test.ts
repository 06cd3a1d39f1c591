/**
 * Rich-text fields (`yjsRichText()` from syncmesh/text): a text field is a Y.XmlFragment, the type y-prosemirror binds
 * ProseMirror and Tiptap to. The same stamps, sync, storage and record floor rule as plain text fields, on
 * paragraphs and nested text nodes.
 */
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { MemoryStorage, createReplica, type RecordChangeEvent, type Replica, type ReplicaInit } from '../../src/index.js'
import { yjsRichText } from '../../src/text/index.js'
import type { ReplicaImpl } from '../../src/replica.js'
import { MemoryNetwork } from '../../transports/memory.js'
import { record, reopen, settle } from './helpers.js'

const open: Replica[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()))
})

type RichReplica = Replica<Y.XmlFragment>

async function richReplica(net: MemoryNetwork, peerId: string, init: Partial<ReplicaInit<Y.XmlFragment>> = {}): Promise<RichReplica> {
  const r = await createReplica<Y.XmlFragment>({ peerId, transports: [net.transport()], antiEntropyMs: 0, text: yjsRichText(), ...init })
  open.push(r)
  return r
}

/** Appends a paragraph holding `text` (what a ProseMirror schema with `paragraph` nodes stores through y-prosemirror). */
function paragraph(doc: Y.XmlFragment, text: string): Y.XmlText {
  const p = new Y.XmlElement('paragraph')
  const t = new Y.XmlText(text)
  p.insert(0, [t])
  doc.insert(doc.length, [p])
  return t
}

describe('rich-text fields', () => {
  it('concurrent paragraphs and typing inside one paragraph merge on every replica', async () => {
    const net = new MemoryNetwork({ seed: 21 })
    const rs = [await richReplica(net, 'a'), await richReplica(net, 'b'), await richReplica(net, 'c')]
    const docs = rs.map((r) => r.collection('pages').text('home', 'body'))
    paragraph(docs[0]!, 'Hello world')
    await settle(...rs)
    net.partition(['a'])
    net.partition(['b'])
    const inner = (d: Y.XmlFragment): Y.XmlText => (d.get(0) as Y.XmlElement).get(0) as Y.XmlText
    inner(docs[0]!).insert(5, ',')
    inner(docs[1]!).insert(11, '!')
    paragraph(docs[2]!, 'Second')
    net.heal()
    await settle(...rs)
    const want = '<paragraph>Hello, world!</paragraph><paragraph>Second</paragraph>'
    for (const d of docs) expect(d.toString()).toBe(want)
    expect(new Set(rs.map((r) => (r as unknown as ReplicaImpl).text!.digest())).size).toBe(1)
  })

  it('a delete erases the rich text everywhere; typing after it revives the record with only the later content', async () => {
    let now = 1_700_000_000_000
    const clock = { now: () => now }
    const net = new MemoryNetwork({ seed: 22 })
    const [a, b] = [await richReplica(net, 'a', { clock }), await richReplica(net, 'b', { clock })]
    const da = a.collection('pages').text('p', 'body')
    const db = b.collection('pages').text('p', 'body')
    paragraph(da, 'before')
    await settle(a, b)
    net.partition(['a'])
    now += 10
    await a.collection('pages').delete('p')
    now += 10
    paragraph(db, 'after') // concurrent with the delete, stamped after it
    net.heal()
    await settle(a, b)
    expect(da.toString()).toBe('<paragraph>after</paragraph>')
    expect(db.toString()).toBe('<paragraph>after</paragraph>')
    expect(a.collection('pages').get('p')).toEqual({ id: 'p' })
  })

  it('survives a restart from storage, and a replica that was offline gets it by delta sync', async () => {
    const net = new MemoryNetwork({ seed: 23 })
    const storage = new MemoryStorage()
    const a = await createReplica<Y.XmlFragment>({ peerId: 'a', storage, text: yjsRichText(), compactAfterEntries: 20 })
    const d = a.collection('pages').text('p', 'body')
    for (let i = 0; i < 60; i++) {
      paragraph(d, `line ${i}`)
      await new Promise((r) => setImmediate(r))
    }
    const content = d.toString()
    await a.close()
    const a2 = await createReplica<Y.XmlFragment>({ peerId: 'a', storage: reopen(storage), text: yjsRichText(), transports: [net.transport()], antiEntropyMs: 0 })
    open.push(a2)
    expect(a2.collection('pages').text('p', 'body').toString()).toBe(content)
    const b = await richReplica(net, 'b')
    await settle(a2, b)
    expect(b.collection('pages').text('p', 'body').toString()).toBe(content)
  })

  it('subscribers get the fragment change (its delta of child nodes, empty for a nested edit) and no conflict', async () => {
    const net = new MemoryNetwork({ seed: 24 })
    const [a, b] = [await richReplica(net, 'a'), await richReplica(net, 'b')]
    const seen = record<RecordChangeEvent>((fn) => b.collection('pages').subscribe((cs) => cs.forEach(fn)))
    const conflicts = record<unknown>((fn) => b.on('conflict', fn))
    const t = paragraph(a.collection('pages').text('p', 'body'), 'hi')
    await settle(a, b)
    const added = seen.find((e) => e.type === 'added')
    expect(added?.text?.body).toHaveLength(1)
    expect(added?.text?.body?.[0]?.insert).toBeInstanceOf(Array)
    seen.length = 0
    t.insert(2, ' there')
    await settle(a, b)
    expect(seen).toMatchObject([{ type: 'updated', id: 'p', origin: 'remote', text: { body: [] } }])
    expect(conflicts).toEqual([])
  })
})
