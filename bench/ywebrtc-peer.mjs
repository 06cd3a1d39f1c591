// One y-webrtc + yjs peer for bench/webrtc.ts (its own process: y-webrtc keeps rooms in a module-global map).
//   node bench/ywebrtc-peer.mjs <signaling url> <room> writer|reader <writes>
// The reader sets `ready`; the writer, once it sees it, sets keys w0, w1, … one at a time, each holding the writer's
// process.hrtime (CLOCK_MONOTONIC, shared by every process of the machine); the reader answers each with `ack`, and
// prints `LAT <json ms[]>` (write → remote observe, one way) when done. Both print `CONNECTED <ms>` (start → the
// other's first update seen) and exit.
import wrtc from '@roamhq/wrtc'
import WebSocket from 'ws'

globalThis.WebSocket ??= WebSocket // lib0's websocket client uses the global (Node 20 has none)
const Y = await import('yjs')
const { WebrtcProvider } = await import('y-webrtc')

const [url, room, role, writesArg] = process.argv.slice(2)
const writes = Number(writesArg)
const t0 = performance.now()
const doc = new Y.Doc()
const provider = new WebrtcProvider(room, doc, { signaling: [url], peerOpts: { wrtc } })
const map = doc.getMap('m')
const now = () => process.hrtime.bigint()
let connected = false
const connectedOnce = () => {
  if (connected) return
  connected = true
  process.stdout.write(`CONNECTED ${(performance.now() - t0).toFixed(1)}\n`)
}
const finish = (code) => {
  setTimeout(() => {
    provider.destroy()
    process.exit(code)
  }, 300)
}
setTimeout(() => {
  process.stdout.write('TIMEOUT\n')
  process.exit(1)
}, 120_000)

if (role === 'reader') {
  const lat = []
  map.observe((event, tx) => {
    if (tx.local) return
    for (const key of event.keysChanged) {
      if (key === 'ready' || key === 'ack') continue
      connectedOnce()
      const v = map.get(key)
      lat.push(Number(now() - BigInt(v.t)) / 1e6)
      map.set('ack', v.i)
      if (lat.length === writes) {
        process.stdout.write(`LAT ${JSON.stringify(lat)}\n`)
        finish(0)
      }
    }
  })
  map.set('ready', true)
} else {
  let i = 0
  const next = () => {
    if (i === writes) return finish(0)
    map.set(`w${i}`, { i, t: String(now()) })
    i++
  }
  map.observe((event, tx) => {
    if (tx.local) return
    if (event.keysChanged.has('ready') && !connected) {
      connectedOnce()
      next()
    } else if (event.keysChanged.has('ack') && map.get('ack') === i - 1) next()
  })
}
