// Node peers over libp2p. Run one per terminal (all on this machine, loopback only):
//   npx tsx examples/libp2p-peers.ts                 → starts a peer and prints its address
//   npx tsx examples/libp2p-peers.ts <that address>  → joins the room through it (peers then find each other by gossipsub)
// Or meet at a relay: `npx syncmesh serve --libp2p` prints its addresses; pass its /tcp/ one to every peer.
// Type a line to add a todo; every peer prints every change. Ctrl-C leaves.
import { createInterface } from 'node:readline'
import { createReplica } from 'syncmesh'
import { libp2pTransport } from 'syncmesh/transports/libp2p'

const transport = libp2pTransport({
  listen: ['/ip4/127.0.0.1/tcp/0'],
  bootstrap: process.argv.slice(2),
  onError: (err) => console.error(`[libp2p] ${err.name}: ${err.message}`),
})
const replica = await createReplica({ room: 'libp2p-example', transports: [transport] })
console.log(`peer ${replica.peerId} listening on\n  ${transport.multiaddrs.join('\n  ')}`)

replica.on('peer:join', (peer) => console.log(`+ ${peer}${transport.connection(peer)?.limited ? ' (relayed)' : ''}`))
replica.on('peer:leave', (peer) => console.log(`- ${peer}`))
const todos = replica.collection<{ id: string; title: string; by: string }>('todos')
todos.subscribe((changes) => {
  for (const c of changes) console.log(`${c.origin === 'local' ? '>' : '<'} ${c.type} ${c.id}: ${c.record?.title ?? ''}`)
})
for (const t of todos.all()) console.log(`  ${t.id}: ${t.title}`)

const lines = createInterface({ input: process.stdin })
lines.on('line', (title) => void todos.put({ id: `${Date.now().toString(36)}-${replica.peerId.slice(0, 4)}`, title, by: replica.peerId }))
const leave = async (): Promise<void> => {
  lines.close()
  await replica.close()
  process.exit(0)
}
process.once('SIGINT', () => void leave())
lines.once('close', () => void leave())
