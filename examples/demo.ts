/**
 * `npm start` — three replicas of a shared todo list edit concurrently while partitioned, then heal and converge.
 * Shows field-level merging, a same-field conflict (latest hybrid-logical-clock timestamp wins, reported as a
 * `conflict` event) and a delete racing an update. Runs on the in-memory network with 10 % message loss.
 */
import { createReplica, type ConflictEvent, type Replica } from 'syncmesh'
import { MemoryNetwork } from 'syncmesh/transports/memory'

interface Todo {
  id: string
  title?: string
  done?: boolean
  owner?: string
}

const net = new MemoryNetwork({ seed: 2026, dropRate: 0.1, duplicateRate: 0.05, reorder: true, latencyMs: [1, 15] })
const names = ['alice', 'bob', 'carol'] as const
const replicas: Replica[] = []
for (const name of names) replicas.push(await createReplica({ peerId: name, transports: [net.transport()], room: 'demo', antiEntropyMs: 200 }))
const [alice, bob, carol] = replicas as [Replica, Replica, Replica]
const list = (r: Replica) => r.collection<Todo>('todos')
const conflicts: string[] = []
for (const r of replicas) {
  r.on('conflict', (c: ConflictEvent) =>
    conflicts.push(`  ${r.peerId} saw ${c.id}.${c.field}: ${JSON.stringify(c.winner.value)} (by ${c.winner.timestamp.peer}) beat ${JSON.stringify(c.loser.value)} (by ${c.loser.timestamp.peer})`),
  )
}

const show = (title: string): void => {
  console.log(`\n${title}`)
  for (const r of replicas) {
    const rows = list(r).all().sort((a, b) => a.id.localeCompare(b.id)).map((t) => `${t.id}:${t.title ?? '—'}${t.done ? ' ✔' : ''}${t.owner ? ` @${t.owner}` : ''}`)
    console.log(`  ${r.peerId.padEnd(6)} ${rows.join(' | ') || '(empty)'}`)
  }
}
const tick = (ms: number) => new Promise((r) => setTimeout(r, ms))
/** sync() covers the peers connected now, so first wait until every replica sees the others. */
const allConnected = async (): Promise<void> => {
  while (replicas.some((r) => r.status().peers.length < replicas.length - 1)) await tick(5)
}

await allConnected()
await list(alice).put({ id: 'milk', title: 'Buy milk' })
await list(alice).put({ id: 'tax', title: 'File taxes' })
await list(bob).put({ id: 'bike', title: 'Fix bike' })
await Promise.all(replicas.map((r) => r.sync()))
show('1. everyone online, synced:')

net.partition(['alice'], ['bob', 'carol'])
console.log('\n2. network split: alice | bob + carol. Concurrent edits:')
await list(alice).update('milk', { title: 'Buy oat milk' })
await tick(2)
await list(bob).update('milk', { title: 'Buy soy milk' }) // same field, later: wins everywhere
await list(carol).update('milk', { owner: 'carol' }) // other field: both survive
await list(bob).update('tax', { done: true })
await tick(2)
await list(alice).delete('tax') // delete after bob's update: the record goes, everywhere
await list(carol).update('bike', { owner: 'carol' })
await tick(2)
await list(alice).delete('bike') // delete before carol's later edit? no: after it — carol's owner is erased
await tick(2)
await list(bob).update('bike', { done: true }) // written after the delete: the record returns with only this field
await Promise.all([bob.sync(), carol.sync()])
show('   while apart (bob and carol still reach each other):')

net.heal()
await allConnected()
await Promise.all(replicas.map((r) => r.sync({ timeoutMs: 20_000 })))
show('3. healed and converged (10 % loss repaired by anti-entropy):')
console.log('\nConflicts, as each replica reported them:')
console.log(conflicts.length ? conflicts.join('\n') : '  (none)')
const digests = new Set(replicas.map((r) => JSON.stringify(list(r).all().sort((a, b) => a.id.localeCompare(b.id)))))
console.log(`\nAll replicas identical: ${digests.size === 1 ? 'yes' : 'NO'}`)
await Promise.all(replicas.map((r) => r.close()))
if (digests.size !== 1) process.exit(1)
