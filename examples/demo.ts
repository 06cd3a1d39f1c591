/**
 * `npm start` — three peers share a todo list on this machine, on embedded defaults: a local `syncmesh serve`
 * (signaling + relay on 127.0.0.1, ephemeral port), real WebRTC between the peers with the relay as fallback, and
 * LevelDB storage in a temporary directory.
 *
 * Alice goes offline and keeps editing (her writes are durable on disk); bob and carol edit the same todos
 * meanwhile, including a same-field conflict and a delete racing an update. Alice comes back and every peer
 * converges; each conflict is reported on the replica whose value lost.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createReplica, type ConflictEvent, type Replica } from 'syncmesh'
import { startServer } from 'syncmesh/server'
import { levelStorage } from 'syncmesh/storage/level'
import { relayTransport } from 'syncmesh/transports/relay'
import { webrtcTransport } from 'syncmesh/transports/webrtc'

interface Todo {
  id: string
  title?: string
  done?: boolean
  owner?: string
}

const server = await startServer({ host: '127.0.0.1', port: 0, log: false })
const dir = await mkdtemp(join(tmpdir(), 'syncmesh-demo-'))
console.log(`syncmesh serve on ${server.url} (signaling + relay); LevelDB stores in ${dir}`)

const conflicts: string[] = []
const open = async (name: string, online = true): Promise<Replica> => {
  const replica = await createReplica({
    peerId: name,
    room: 'demo-todos',
    storage: levelStorage(join(dir, name)),
    // Preference order: a direct WebRTC channel when one opens, the relay otherwise (or until then).
    transports: online ? [webrtcTransport({ signaling: [server.url] }), relayTransport({ url: server.url })] : [],
    antiEntropyMs: 500,
  })
  replica.on('conflict', (c: ConflictEvent) =>
    conflicts.push(`  ${name} lost ${c.id}.${c.field} = ${JSON.stringify(c.loser.value)}; kept ${JSON.stringify(c.winner.value)}`),
  )
  return replica
}
const tick = (ms: number) => new Promise((r) => setTimeout(r, ms))
const list = (r: Replica) => r.collection<Todo>('todos')
const show = (title: string, replicas: Replica[]): void => {
  console.log(`\n${title}`)
  for (const r of replicas) {
    const rows = list(r).all().sort((a, b) => a.id.localeCompare(b.id)).map((t) => `${t.id}:${t.title ?? '—'}${t.done ? ' ✔' : ''}${t.owner ? ` @${t.owner}` : ''}`)
    const via = r.status().peers.map((p) => `${p.id} via ${p.via === 0 ? 'webrtc' : p.via === 1 ? 'relay' : '?'}`)
    console.log(`  ${r.peerId.padEnd(6)} ${rows.join(' | ') || '(empty)'}${via.length ? `   [${via.join(', ')}]` : ''}`)
  }
}
/** sync() covers the peers connected now: first wait until each replica sees the others. */
const meet = async (replicas: Replica[]): Promise<void> => {
  while (replicas.some((r) => r.status().peers.filter((p) => p.connected).length < replicas.length - 1)) await tick(10)
  await Promise.all(replicas.map((r) => r.sync({ timeoutMs: 20_000 })))
}

let alice = await open('alice')
const bob = await open('bob')
const carol = await open('carol')
await meet([alice, bob, carol])
await list(alice).put({ id: 'milk', title: 'Buy milk' })
await list(alice).put({ id: 'tax', title: 'File taxes' })
await list(bob).put({ id: 'bike', title: 'Fix bike' })
await meet([alice, bob, carol])
await tick(300) // let the direct WebRTC channels open: the relay carried traffic until then
show('1. three peers online, synced:', [alice, bob, carol])

await alice.close()
alice = await open('alice', false)
console.log('\n2. alice goes offline and keeps editing (durable on disk); bob and carol edit too:')
await list(alice).update('milk', { title: 'Buy oat milk' })
await tick(5)
await list(bob).update('milk', { title: 'Buy soy milk' }) // same field, later: wins everywhere
await list(carol).update('milk', { owner: 'carol' }) // another field: both survive
await list(bob).update('tax', { done: true })
await tick(5)
await list(alice).delete('tax') // a delete after bob's update: the record goes, everywhere
await list(carol).update('bike', { owner: 'carol' })
await tick(5)
await list(alice).delete('bike') // erases carol's earlier edit…
await tick(5)
await list(bob).update('bike', { done: true }) // …but this later write brings the record back with only its field
await meet([bob, carol])
show('   while apart:', [alice, bob, carol])

await alice.close()
alice = await open('alice') // back online: reopens from disk, then exchanges only what changed
await meet([alice, bob, carol])
show('3. alice is back; all converged:', [alice, bob, carol])
console.log('\nConflicts, as each replica reported them:')
console.log(conflicts.length ? conflicts.join('\n') : '  (none)')
const states = new Set([alice, bob, carol].map((r) => JSON.stringify(list(r).all().sort((a, b) => a.id.localeCompare(b.id)))))
console.log(`\nAll replicas identical: ${states.size === 1 ? 'yes' : 'NO'}`)
await Promise.all([alice, bob, carol].map((r) => r.close()))
await server.close()
await rm(dir, { recursive: true, force: true })
process.exit(states.size === 1 ? 0 : 1)
