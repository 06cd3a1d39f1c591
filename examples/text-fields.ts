// Collaborative text inside a record: a Y.Text field beside the record's LWW fields, merged character by character.
import assert from 'node:assert/strict'
import { createReplica, type RecordChangeEvent } from 'syncmesh'
import { yjsText } from 'syncmesh/text' // loads yjs (an optional peer dependency): only apps with text import it
import { MemoryNetwork } from 'syncmesh/transports/memory'

let now = 1_700_000_000_000
const clock = { now: () => now }
const net = new MemoryNetwork({ seed: 1 })
const init = { room: 'groceries', clock, text: yjsText() }
const phone = await createReplica({ ...init, peerId: 'phone', transports: [net.transport()] })
const laptop = await createReplica({ ...init, peerId: 'laptop', transports: [net.transport()] })
const tick = (): Promise<unknown> => new Promise((r) => setTimeout(r, 1))
const meet = async (): Promise<void> => {
  // Connected (the memory network reports links going up and down a moment later), and nobody behind.
  do {
    await tick()
    await Promise.all([phone.sync(), laptop.sync()])
  } while (![phone, laptop].every((r) => r.status().peers.length === 1 && r.status().peers[0]!.behind === 0))
}
await meet()

const onPhone = phone.collection<{ id: string; title?: string }>('todos')
const onLaptop = laptop.collection<{ id: string; title?: string }>('todos')
await onPhone.put({ id: 'milk', title: 'Buy milk' })
onPhone.text('milk', 'notes').insert(0, 'oat milk') // a Y.Text bound to the record: give it to an editor binding
await meet()
assert.equal(onLaptop.text('milk', 'notes').toString(), 'oat milk')

// Both type at once while apart: both edits survive, merged the same way everywhere, and no 'conflict' fires.
const heard: RecordChangeEvent[] = []
laptop.on('change', (changes) => heard.push(...changes))
laptop.on('conflict', () => assert.fail('merged text is not a conflict'))
net.partition(['phone'])
while (phone.status().peers.length > 0) await tick()
now += 1
onPhone.text('milk', 'notes').insert(8, ', 2 cartons')
onLaptop.text('milk', 'notes').insert(0, 'barista ')
net.heal()
await meet()
assert.equal(onPhone.text('milk', 'notes').toString(), 'barista oat milk, 2 cartons')
assert.equal(onLaptop.text('milk', 'notes').toString(), 'barista oat milk, 2 cartons')
assert.deepEqual(heard.at(-1)?.text, { notes: [{ retain: 16 }, { insert: ', 2 cartons' }] }) // the Yjs delta

// A delete at D erases the text written at or before D; typing after D brings the record back with only that text.
now += 1
await onLaptop.delete('milk')
await meet()
assert.equal(onPhone.get('milk'), undefined)
now += 1
onPhone.text('milk', 'notes').insert(0, 'got it')
await meet()
assert.deepEqual(onLaptop.get('milk'), { id: 'milk' }) // visible again, with none of the erased fields
assert.equal(onLaptop.text('milk', 'notes').toString(), 'got it')

await Promise.all([phone.close(), laptop.close()])
