// One y-webrtc + yjs peer typing into (or reading) a Y.Text, for bench/text.ts (its own process: y-webrtc keeps rooms
// in a module-global map).
//   node bench/ytext-peer.mjs <signaling url> <room> writer|reader <keystrokes> <cadence ms>
// The reader sets `ready` in a Y.Map; the writer, once it sees it, appends one character to the Y.Text every
// <cadence> ms and prints `SENT <json of process.hrtime ns per keystroke>`; the reader prints `RECV <json>` (when
// each keystroke became visible, by the text's length). Both count what they hand to their RTCDataChannels from the
// first keystroke on and print `BYTES <frames> <bytes>`. process.hrtime is CLOCK_MONOTONIC, shared by the machine's
// processes, so RECV − SENT is the one-way latency.
import wrtc from '@roamhq/wrtc'
import WebSocket from 'ws'

globalThis.WebSocket ??= WebSocket // lib0's websocket client uses the global (Node 20 has none)
const Y = await import('yjs')
const { WebrtcProvider } = await import('y-webrtc')

const [url, room, role, countArg, cadenceArg] = process.argv.slice(2)
const count = Number(countArg)
const cadence = Number(cadenceArg)
let counting = false
let frames = 0
let bytes = 0
const send = wrtc.RTCDataChannel.prototype.send
wrtc.RTCDataChannel.prototype.send = function (data) {
  if (counting) {
    frames++
    bytes += data.byteLength ?? data.length
  }
  return send.call(this, data)
}
const doc = new Y.Doc()
const provider = new WebrtcProvider(room, doc, { signaling: [url], peerOpts: { wrtc } })
const text = doc.getText('t')
const map = doc.getMap('m')
const now = () => process.hrtime.bigint()
const finish = (line) => {
  setTimeout(() => {
    process.stdout.write(`${line}\nBYTES ${frames} ${bytes}\n`)
    provider.destroy()
    process.exit(0)
  }, 500)
}
setTimeout(() => {
  process.stdout.write('TIMEOUT\n')
  process.exit(1)
}, 120_000)

if (role === 'reader') {
  const recv = []
  text.observe((event, tr) => {
    if (tr.local) return
    counting = true
    const t = String(now())
    while (recv.length < text.length) recv.push(t)
    if (recv.length >= count) finish(`RECV ${JSON.stringify(recv)}`)
  })
  map.set('ready', true)
} else {
  const sent = []
  let started = false
  map.observe((event, tr) => {
    if (tr.local || started || !event.keysChanged.has('ready')) return
    started = true
    counting = true
    const type = () => {
      sent.push(String(now()))
      text.insert(text.length, 'x')
      if (sent.length === count) finish(`SENT ${JSON.stringify(sent)}`)
      else setTimeout(type, cadence)
    }
    setTimeout(type, 200)
  })
}
