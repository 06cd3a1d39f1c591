// One y-webrtc peer (run as its own process: y-webrtc keeps rooms in a module-global map). Usage:
//   node test/server/y-webrtc-peer.mjs <signaling url> <room> <name>
// Joins <room> through the signaling server, writes <name> into a shared Y.Map over WebRTC and prints
// `SYNCED {...}` once it also holds the other peer's entry.
import wrtc from '@roamhq/wrtc'
import WebSocket from 'ws'

globalThis.WebSocket ??= WebSocket // lib0's websocket client uses the global (Node 20 has none)
const Y = await import('yjs')
const { WebrtcProvider } = await import('y-webrtc')

const [url, room, name] = process.argv.slice(2)
const doc = new Y.Doc()
const provider = new WebrtcProvider(room, doc, { signaling: [url], peerOpts: { wrtc } })
const map = doc.getMap('m')
map.set(name, true)
const check = () => {
  if (map.size < 2) return
  process.stdout.write(`SYNCED ${JSON.stringify(map.toJSON())}\n`)
  // Stay a moment so that the other side can finish too, then leave.
  setTimeout(() => {
    provider.destroy()
    process.exit(0)
  }, 1500)
}
doc.on('update', check)
setTimeout(() => {
  process.stdout.write('TIMEOUT\n')
  process.exit(1)
}, 20_000)
