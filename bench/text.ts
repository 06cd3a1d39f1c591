/**
 * Text fields over WebRTC (part of `npm run bench`), on loopback against one `syncmesh serve` (127.0.0.1) in this
 * process, WebRTC through `@roamhq/wrtc`:
 *
 * 1. syncmesh: two replicas with `text: yjsText()`; one types into a record's text field (`collection.text(id,
 *    'notes')`, one character appended per keystroke, a keystroke every `--cadence` ms), the other observes it.
 *    Measured: keystroke → visible in the other replica's Y.Text (p50 / p99), and the bytes handed to the data channels
 *    per keystroke (both directions: the change one way, the protocol's ACK back), from the first keystroke on.
 * 2. beside it, in the same run: y-webrtc + yjs doing the same (Y.Text in two child processes, same signaling server),
 *    measured the same way (bytes at RTCDataChannel.send; latency from process.hrtime, one clock for all processes).
 *
 *   npx tsx bench/text.ts [--keystrokes 500] [--cadence 20]
 *
 * Prints a markdown table and writes `.bench-results/text.json`. Exits non-zero only when something fails to run.
 */
import { loadavg } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type * as Y from 'yjs'
import { createReplica, type Replica } from '../src/index.js'
import { startServer, type SyncmeshServer } from '../src/server/index.js'
import { yjsText } from '../src/text/index.js'
import type { Transport } from '../transports/types.js'
import { type RTCImplementation, webrtcTransport } from '../transports/webrtc/index.js'
import { waitFor } from '../test/transports/webrtc-helpers.js'
import { type Latency, arg, printAndSave, runBench, runChild, summary } from './stats.js'
import { formatMs, markdownTable } from './table.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const RESULTS_FILE = path.join(ROOT, '.bench-results', 'text.json')
const KEYSTROKES = Number(arg('keystrokes', '500'))
const CADENCE = Number(arg('cadence', '20'))
const WARMUP = 20

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** What one system measured. */
interface TextResult {
  lat: Latency
  /** Bytes handed to RTCDataChannel.send per keystroke: writer → reader, reader → writer. */
  bytesOut: number
  bytesBack: number
  framesOut: number
  framesBack: number
}

/** Counts what each replica's transport sends (the sync frames, before the data channel). */
function counted<T extends Transport>(t: T, c: { frames: number; bytes: number; on: boolean }): T {
  const send = t.send.bind(t)
  t.send = (peer, frame) => {
    if (c.on) {
      c.frames++
      c.bytes += frame.byteLength
    }
    send(peer, frame)
  }
  return t
}

async function syncmesh(server: SyncmeshServer, wrtc: RTCImplementation): Promise<TextResult & { frameBytesOut: number; frameBytesBack: number }> {
  const room = `bench-text-${process.pid}`
  // Bytes at the data channel, per direction: RTCDataChannel.send of either replica, told apart by the channel.
  const channels = new Map<unknown, 'a' | 'b'>()
  const wire = { a: { frames: 0, bytes: 0 }, b: { frames: 0, bytes: 0 }, on: false }
  const proto = (wrtc as unknown as { RTCDataChannel: { prototype: { send(d: ArrayBufferView): void } } }).RTCDataChannel.prototype
  const rawSend = proto.send
  let unattributed = 0
  proto.send = function (this: unknown, d: ArrayBufferView) {
    if (wire.on) {
      const side = channels.get(this)
      if (side) {
        wire[side].frames++
        wire[side].bytes += d.byteLength
      } else unattributed += d.byteLength
    }
    rawSend.call(this, d)
  }
  // Which replica a channel belongs to: the one whose RTCPeerConnection created or received it.
  const tag = (side: 'a' | 'b'): RTCImplementation => {
    const Base = wrtc.RTCPeerConnection as unknown as new (...args: unknown[]) => {
      createDataChannel(...args: unknown[]): unknown
      addEventListener(type: string, fn: (e: { channel: unknown }) => void): void
    }
    class Tagged extends Base {
      constructor(...args: unknown[]) {
        super(...args)
        this.addEventListener('datachannel', (e) => channels.set(e.channel, side))
      }
      override createDataChannel(...args: unknown[]): unknown {
        const ch = super.createDataChannel(...args)
        channels.set(ch, side)
        return ch
      }
    }
    return { ...wrtc, RTCPeerConnection: Tagged as unknown as RTCImplementation['RTCPeerConnection'] }
  }
  const frames = { a: { frames: 0, bytes: 0, on: false }, b: { frames: 0, bytes: 0, on: false } }
  const open = (peerId: 'a' | 'b'): Promise<Replica<Y.Text>> =>
    createReplica({
      peerId: `text-${peerId}`,
      room,
      text: yjsText(),
      antiEntropyMs: 0, // every byte counted is caused by the keystrokes
      transports: [counted(webrtcTransport({ signaling: [server.url], rtc: tag(peerId) }), frames[peerId])],
    })
  const [a, b] = await Promise.all([open('a'), open('b')])
  try {
    await waitFor(() => a.status().peers.some((p) => p.connected) && b.status().peers.some((p) => p.connected), 20_000, 'two replicas to connect over WebRTC')
    await Promise.all([a.sync({ timeoutMs: 10_000 }), b.sync({ timeoutMs: 10_000 })])
    const typed = a.collection('todos').text('milk', 'notes')
    const seen = b.collection('todos').text('milk', 'notes')
    const sent: number[] = []
    const recv: number[] = []
    seen.observe(() => {
      const t = performance.now()
      while (recv.length < seen.length) recv.push(t)
    })
    const total = WARMUP + KEYSTROKES
    for (let i = 0; i < total; i++) {
      if (i === WARMUP) {
        await sleep(200)
        wire.on = frames.a.on = frames.b.on = true
      }
      sent.push(performance.now())
      typed.insert(typed.length, 'x')
      await sleep(CADENCE)
    }
    await waitFor(() => recv.length >= total, 10_000, 'every keystroke at the reader')
    await sleep(300) // the last ACKs
    wire.on = false
    if (unattributed > 0) throw new Error(`${unattributed} bytes went through a data channel of neither replica`)
    const lat = recv.slice(WARMUP).map((t, i) => t - sent[WARMUP + i]!)
    return {
      lat: summary(lat),
      bytesOut: wire.a.bytes / KEYSTROKES,
      bytesBack: wire.b.bytes / KEYSTROKES,
      framesOut: wire.a.frames / KEYSTROKES,
      framesBack: wire.b.frames / KEYSTROKES,
      frameBytesOut: frames.a.bytes / KEYSTROKES,
      frameBytesBack: frames.b.bytes / KEYSTROKES,
    }
  } finally {
    proto.send = rawSend
    await Promise.allSettled([a.close(), b.close()])
  }
}

async function ywebrtc(server: SyncmeshServer): Promise<TextResult> {
  const room = `bench-ytext-${process.pid}`
  const script = fileURLToPath(new URL('./ytext-peer.mjs', import.meta.url))
  const total = WARMUP + KEYSTROKES
  const run = (role: string): Promise<string> => runChild(script, [server.url, room, role, String(total), String(CADENCE)], ROOT, `y-webrtc ${role}`)
  const reader = run('reader')
  await sleep(300) // one peer arrives a moment after the other (simultaneous announces can stall y-webrtc)
  const [rOut, wOut] = await Promise.all([reader, run('writer')])
  const sent = (JSON.parse(/SENT (.*)/.exec(wOut)![1]!) as string[]).map(BigInt)
  const recv = (JSON.parse(/RECV (.*)/.exec(rOut)![1]!) as string[]).map(BigInt)
  const bytes = (out: string): [number, number] => {
    const m = /BYTES (\d+) (\d+)/.exec(out)!
    return [Number(m[1]), Number(m[2])]
  }
  const [wf, wb] = bytes(wOut)
  const [rf, rb] = bytes(rOut)
  // The children count from their first keystroke, warm-up included: per keystroke over all of them.
  const lat = recv.slice(WARMUP).map((t, i) => Number(t - sent[WARMUP + i]!) / 1e6)
  return { lat: summary(lat), bytesOut: wb / total, bytesBack: rb / total, framesOut: wf / total, framesBack: rf / total }
}

async function main(): Promise<void> {
  const loadBefore = loadavg()
  const started = new Date().toISOString()
  const { default: wrtc } = (await import('@roamhq/wrtc')) as unknown as { default: RTCImplementation }
  const server = await startServer({ port: 0, log: false })
  const results: Record<string, unknown> = {}
  try {
    results['syncmesh'] = await syncmesh(server, wrtc)
    try {
      results['ywebrtc'] = await ywebrtc(server)
    } catch (e) {
      results['ywebrtc'] = { error: (e as Error).message }
    }
  } finally {
    await server.close()
  }
  const loadAfter = loadavg()
  const s = results['syncmesh'] as Awaited<ReturnType<typeof syncmesh>>
  const y = results['ywebrtc'] as TextResult & { error?: string }
  const ms = (x: number): string => `${formatMs(x)} ms`
  const b = (x: number): string => `${x.toFixed(1)} B`
  const rows: string[][] = [
    [`keystroke → visible in the other replica's Y.Text over WebRTC, p50 / p99 (${s.lat.n} keystrokes, one per ${CADENCE} ms)`, `${ms(s.lat.p50)} / ${ms(s.lat.p99)}`, y.error ? `failed: ${y.error.slice(0, 60)}` : `${ms(y.lat.p50)} / ${ms(y.lat.p99)}`],
    ['data-channel bytes per keystroke, writer → reader', `${b(s.bytesOut)} (${s.framesOut.toFixed(2)} messages)`, y.error ? '—' : `${b(y.bytesOut)} (${y.framesOut.toFixed(2)} messages)`],
    ['data-channel bytes per keystroke, reader → writer', `${b(s.bytesBack)} (TEXT_ACK)`, y.error ? '—' : `${b(y.bytesBack)} (y-webrtc echoes every update it receives)`],
    ['… of which sync-protocol frames (before the WebRTC transport), writer → reader / back', `${b(s.frameBytesOut)} / ${b(s.frameBytesBack)}`, '—'],
  ]
  printAndSave(
    `## Text fields over WebRTC (bench/text.ts), loopback, Node ${process.versions.node}, load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')} → ${loadAfter.map((x) => x.toFixed(2)).join(' ')}`,
    markdownTable(['measure', 'syncmesh text field', 'yjs 13.6 + y-webrtc 10.3, same run'], rows),
    RESULTS_FILE,
    { started, node: process.versions.node, loadBefore, loadAfter, keystrokes: KEYSTROKES, cadenceMs: CADENCE, results },
  )
}

runBench(main)
