/**
 * A WebRTC transport in its own process, for tests that need a peer to die without a word (SIGKILL).
 *
 *   node --import tsx test/transports/webrtc-child.ts <signaling url> <room> <peer id>
 *
 * Prints `STARTED`, then `UP <peer>` / `DOWN <peer>` / `FRAME <peer> <bytes>` lines; echoes every frame back.
 */
import { webrtcTransport } from '../../transports/webrtc/index.js'

const [url, room, peerId] = process.argv.slice(2)
if (!url || !room || !peerId) throw new Error('usage: webrtc-child.ts <url> <room> <peer id>')
const t = webrtcTransport({ signaling: [url], connectTimeoutMs: 2000, reconnect: { initialMs: 100, maxMs: 1000 } })
t.on('peer:up', (p) => console.log(`UP ${p}`))
t.on('peer:down', (p) => console.log(`DOWN ${p}`))
t.on('frame', (p, f) => {
  console.log(`FRAME ${p} ${f.byteLength}`)
  t.send(p, f)
})
await t.start({ room, peerId })
console.log('STARTED')
process.on('SIGTERM', () => void t.stop().then(() => process.exit(0)))
