/**
 * One peer of the `npm start` demo, in a process of its own: `examples/demo.ts` forks these and drives them over
 * Node's IPC channel. Each peer keeps its replica in LevelDB under the directory it is given, joins an encrypted
 * room with the passphrase it is given, reaches the others over real WebRTC (relay as fallback) through the demo's
 * local `syncmesh serve`, and prints, as they happen, the changes it receives, the conflicts it loses and the first
 * error of each kind (a peer with the wrong passphrase sees AuthError).
 *
 * Commands (one object per IPC message, answered with `{ id, ok, result | error }`):
 *   { op: 'put' | 'update' | 'delete', ... } · { op: 'online' | 'offline' } · { op: 'meet', peers } · { op: 'state' }
 */
import { createReplica, type ConflictEvent, type RecordChangeEvent, type Replica } from 'syncmesh'
import { levelStorage } from 'syncmesh/storage/level'
import { relayTransport } from 'syncmesh/transports/relay'
import { webrtcTransport } from 'syncmesh/transports/webrtc'

/** A todo of the demo's shared list. */
export interface Todo {
  id: string
  title?: string
  done?: boolean
  owner?: string
}

/** What the demo asks a peer to do. */
export type DemoCommand =
  | { op: 'put'; todo: Todo }
  | { op: 'update'; id: string; patch: Omit<Todo, 'id'> }
  | { op: 'delete'; id: string }
  | { op: 'online' | 'offline' | 'state' }
  | { op: 'meet'; peers: number }

/** A peer's answer to `state`: its todos and the path each connected peer uses. */
export interface PeerState {
  todos: Todo[]
  via: string[]
}

const [name, url, dir, secret] = process.argv.slice(2) as [string, string, string, string]
const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const show = (v: unknown): string => JSON.stringify(v)

/** Opens the replica from its LevelDB directory; offline means no transports (writes stay local and durable). */
async function open(online: boolean): Promise<Replica> {
  const r = await createReplica({
    peerId: name,
    room: 'demo-todos',
    secret, // every frame and signaling payload sealed with a key derived from it (the server sees ciphertext)
    storage: levelStorage(dir),
    // Preference order: a direct WebRTC channel when one opens, the relay otherwise (or until then).
    transports: online ? [webrtcTransport({ signaling: [url] }), relayTransport({ url })] : [],
    antiEntropyMs: 500,
  })
  r.collection<Todo>('todos').subscribe((changes: readonly RecordChangeEvent<Todo>[]) => {
    for (const c of changes) {
      if (c.origin === 'remote') console.log(`  ${name.padEnd(5)} ← ${c.type} ${c.id} ${c.record ? show(c.record) : ''}`)
    }
  })
  r.on('conflict', (c: ConflictEvent) =>
    console.log(`  ${name.padEnd(5)} ✗ conflict on ${c.id}.${c.field}: ${show(c.loser.value)} lost to ${show(c.winner.value)}`),
  )
  r.on('error', (e: Error) => {
    if (reported.has(e.name)) return
    reported.add(e.name)
    console.log(`  ${name.padEnd(5)} ! ${e.name}: ${e.message}`)
  })
  return r
}
const reported = new Set<string>()

let replica = await open(true)
const todos = () => replica.collection<Todo>('todos')

async function run(cmd: DemoCommand): Promise<unknown> {
  switch (cmd.op) {
    case 'put':
      return todos().put(cmd.todo)
    case 'update':
      return todos().update(cmd.id, cmd.patch)
    case 'delete':
      return todos().delete(cmd.id)
    case 'online':
    case 'offline':
      await replica.close()
      replica = await open(cmd.op === 'online')
      return
    case 'meet':
      // sync() covers the peers connected now: first wait until this replica sees the others.
      while (replica.status().peers.filter((p) => p.connected).length < cmd.peers) await tick(10)
      return replica.sync({ timeoutMs: 20_000 })
    case 'state':
      return {
        todos: todos().all().sort((a, b) => a.id.localeCompare(b.id)),
        via: replica.status().peers.map((p) => `${p.id} via ${p.via === 0 ? 'webrtc' : p.via === 1 ? 'relay' : '?'}`),
      } satisfies PeerState
  }
}

process.on('message', (msg: { id: number; cmd: DemoCommand }) => {
  run(msg.cmd).then(
    (result) => process.send!({ id: msg.id, ok: true, result }),
    (error: unknown) => process.send!({ id: msg.id, ok: false, error: String(error) }),
  )
})
process.on('disconnect', () => void replica.close().finally(() => process.exit(0)))
process.send!({ ready: true })
