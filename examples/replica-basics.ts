// Two replicas in one process, syncing over the in-memory network.
import assert from 'node:assert/strict'
import { createReplica } from 'syncmesh'
import { MemoryNetwork } from 'syncmesh/transports/memory'

interface Todo {
  id: string
  title?: string
  done?: boolean
}

let now = 1_700_000_000_000
const clock = { now: () => now } // injected so the example is deterministic; the default is Date.now
const net = new MemoryNetwork({ seed: 1 })
const phone = await createReplica({ peerId: 'phone', transports: [net.transport()], room: 'groceries', clock })
const laptop = await createReplica({ peerId: 'laptop', transports: [net.transport()], room: 'groceries', clock })
while (phone.status().peers.length === 0) await new Promise((r) => setTimeout(r, 1)) // wait until they meet

const onPhone = phone.collection<Todo>('todos')
const onLaptop = laptop.collection<Todo>('todos')
const lost: string[] = []
phone.on('conflict', (c) => lost.push(`${c.field}: ${String(c.loser.value)} lost to ${String(c.winner.value)}`))

await onPhone.put({ id: 'milk', title: 'Buy milk' }) // resolves once stored; readable at once
await phone.sync() // resolves when every connected peer holds what we hold
assert.deepEqual(onLaptop.get('milk'), { id: 'milk', title: 'Buy milk' })

// Concurrent edits (neither has seen the other's): different fields both survive; on the same field the
// later write wins everywhere, and the replica whose value lost hears a 'conflict' event.
now += 1
const edit1 = onPhone.update('milk', { title: 'Buy oat milk' })
now += 1
const edit2 = onLaptop.update('milk', { title: 'Buy soy milk', done: true })
await Promise.all([edit1, edit2, phone.sync(), laptop.sync()])
assert.deepEqual(onPhone.get('milk'), { id: 'milk', title: 'Buy soy milk', done: true })
assert.deepEqual(onLaptop.get('milk'), onPhone.get('milk'))
assert.deepEqual(lost, ['title: Buy oat milk lost to Buy soy milk'])

// A delete at D erases every field written at or before D; a later write brings the record back
// with only the fields written after the delete.
now += 1
await onLaptop.delete('milk')
now += 1
await onPhone.update('milk', { done: false })
await Promise.all([phone.sync(), laptop.sync()])
assert.deepEqual(onLaptop.get('milk'), { id: 'milk', done: false })

await Promise.all([phone.close(), laptop.close()])
