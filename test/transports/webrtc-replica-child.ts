/**
 * One replica in its own process, for the multi-process WebRTC tests: @roamhq/wrtc, LevelDB storage.
 *
 *   node --import tsx test/transports/webrtc-replica-child.ts <peer id> <level dir> <room> <signaling url | -> [relay url]
 *
 * `-` as the signaling URL starts the replica offline (no transports). Line protocol: reads one command per stdin
 * line, answers with one stdout line (anything else on stdout starts with `#`):
 *   put <json record>       → `ok`  once the write is durable
 *   update <id> <json>      → `ok`
 *   peers                   → `peers <json ids of connected peers, sorted>`
 *   direct                  → `peers <json ids of the connected peers reached over WebRTC (transport 0), sorted>`
 *   sync                    → `ok` when every connected peer holds what we hold, else `err <message>`
 *   state                   → `state <json: every record of collection "notes", sorted by id>`
 *   close                   → `ok`, then the process exits 0
 * Prints `ready` once the replica is open. Any failure prints `err <message>`.
 */
import { createInterface } from 'node:readline'
import { createReplica } from '../../src/index.js'
import { levelStorage } from '../../src/storage/level.js'
import { relayTransport } from '../../transports/relay/index.js'
import type { Transport } from '../../transports/types.js'
import { webrtcTransport } from '../../transports/webrtc/index.js'

const [peerId, dir, room, signaling, relay] = process.argv.slice(2)
if (!peerId || !dir || !room || !signaling) throw new Error('usage: webrtc-replica-child.ts <peer id> <level dir> <room> <signaling url | -> [relay url]')
const transports: Transport[] = []
if (signaling !== '-') {
  transports.push(webrtcTransport({ signaling: [signaling], connectTimeoutMs: 3000, reconnect: { initialMs: 200, maxMs: 2000 } }))
  if (relay) transports.push(relayTransport({ url: relay }))
}
const replica = await createReplica({ peerId, room, storage: levelStorage(dir), transports, antiEntropyMs: 1000 })
const notes = replica.collection<{ id: string; [k: string]: unknown }>('notes')
replica.on('error', (e) => console.log(`# error ${e.message}`))
console.log('ready')

for await (const line of createInterface({ input: process.stdin })) {
  const space = line.indexOf(' ')
  const cmd = space < 0 ? line : line.slice(0, space)
  const arg = space < 0 ? '' : line.slice(space + 1)
  try {
    switch (cmd) {
      case 'put':
        await notes.put(JSON.parse(arg) as { id: string })
        console.log('ok')
        break
      case 'update': {
        const at = arg.indexOf(' ')
        await notes.update(arg.slice(0, at), JSON.parse(arg.slice(at + 1)) as Record<string, unknown>)
        console.log('ok')
        break
      }
      case 'peers':
      case 'direct':
        console.log(`peers ${JSON.stringify(replica.status().peers.filter((p) => p.connected && (cmd === 'peers' || p.via === 0)).map((p) => p.id).sort())}`)
        break
      case 'sync':
        await replica.sync({ timeoutMs: 8000 })
        console.log('ok')
        break
      case 'state':
        console.log(`state ${JSON.stringify(notes.all().sort((a, b) => (a.id < b.id ? -1 : 1)))}`)
        break
      case 'close':
        await replica.close()
        console.log('ok')
        process.exit(0)
        break
      default:
        console.log(`err unknown command ${JSON.stringify(cmd)}`)
    }
  } catch (e) {
    console.log(`err ${(e as Error).message.replace(/\n/g, ' ')}`)
  }
}
