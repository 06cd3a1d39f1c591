// An encrypted room: the same secret syncs; another secret gets AuthError and nothing else.
import assert from 'node:assert/strict'
import { AuthError, createReplica } from 'syncmesh'
import { MemoryNetwork } from 'syncmesh/transports/memory'

const net = new MemoryNetwork({ seed: 1 }) // any transport works the same: every frame is sealed above it
const room = { app: 'groceries-app', room: 'family', secret: 'correct horse battery staple' }
const alice = await createReplica({ ...room, peerId: 'alice', transports: [net.transport()] })
const bob = await createReplica({ ...room, peerId: 'bob', transports: [net.transport()] })
const eve = await createReplica({ ...room, secret: 'a wrong guess', peerId: 'eve', transports: [net.transport()] })
const told: AuthError[] = []
eve.on('error', (err) => {
  if (err instanceof AuthError) told.push(err) // a wrong password is reported, never silent
})

await alice.collection('list').put({ id: 'milk', qty: 2 })
while (bob.collection('list').get('milk') === undefined) await new Promise((r) => setTimeout(r, 1))
while (told.length === 0) await new Promise((r) => setTimeout(r, 1))

assert.deepEqual(bob.collection('list').get('milk'), { id: 'milk', qty: 2 })
assert.equal(eve.collection('list').get('milk'), undefined) // eve learns nothing…
assert.deepEqual(alice.status().peers.map((p) => p.id), ['bob']) // …and is nobody's peer
await Promise.all([alice.close(), bob.close(), eve.close()])
