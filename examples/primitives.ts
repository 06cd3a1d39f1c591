// The CRDT primitives on their own: a hybrid logical clock, LWW registers and maps.
import assert from 'node:assert/strict'
import { HLC, LWWMap, LWWRegister, compareTimestamps, decodeTimestamp, encodeTimestamp } from 'syncmesh/crdt'

// Clocks are injected: here two peers share a manual clock that stands still.
let now = 1_700_000_000_000
const alice = new HLC('alice', { now: () => now })
const bob = new HLC('bob', { now: () => now })

const t1 = alice.now()
const t2 = alice.now() // same millisecond: the counter orders them
assert.equal(compareTimestamps(t1, t2), -1)
assert.equal(encodeTimestamp(t1) < encodeTimestamp(t2), true) // string order = timestamp order
assert.deepEqual(decodeTimestamp(encodeTimestamp(t2)), t2)

// A register keeps the write with the greatest timestamp, whatever order writes arrive in.
const title = new LWWRegister<string>()
const fromBob = bob.receive(t2) // bob has seen alice's t2, so his next write is later
title.set('Buy soy milk', fromBob)
title.set('Buy oat milk', t1) // older: loses
assert.equal(title.value, 'Buy soy milk')

// A map resolves each key on its own: concurrent edits of different keys both survive.
const a = new LWWMap<string | boolean>()
const b = new LWWMap<string | boolean>()
now += 10
a.set('title', 'Buy milk', alice.now())
b.set('done', true, bob.now())
b.delete('note', bob.now()) // a removal is a timestamped write too
assert.deepEqual(a.merge(b).sort(), ['done'])
assert.deepEqual(b.merge(a.state()), ['title']) // state() is plain, structured-clone-safe data
assert.deepEqual(a.toObject(), b.toObject())
