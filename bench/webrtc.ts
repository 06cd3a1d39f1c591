/**
 * WebRTC and relay benchmarks (the last-but-one part of `npm run bench`), all on loopback against one `syncmesh serve`
 * (`startServer`, 127.0.0.1) in this process:
 *
 * 1. write → remote-visible latency over real WebRTC (@roamhq/wrtc), 2 replicas, sequential writes after a warm-up;
 *    beside it, in the same run: y-webrtc + yjs (Y.Map set → remote observe, two child processes, same signaling
 *    server), and a raw data-channel round trip (the floor: one way = RTT / 2);
 * 2. connection setup through signaling (start → connected and synced);
 * 3. fallback on forced ICE failure: three replicas with [WebRTC, relay], ICE made to fail for one pair
 *    (default connect timeout): time until that pair's writes flow through the relay, then the upgrade to WebRTC
 *    once ICE works;
 * 4. 20 replicas in one room through the relay, and 20 over WebRTC with maxPeers 6 (a bounded overlay): time until
 *    every other replica sees a write, and frames / bytes sent per write (every replica's transport counted).
 *
 *   npx tsx bench/webrtc.ts [--writes 1000] [--fanout-writes 100] [--only latency,ywebrtc,floor,fallback,relay20,webrtc20]
 *
 * Prints a markdown table (PASS / MISS per target) and writes `.bench-results/webrtc.json`. Exits 0 when targets
 * are missed; non-zero only when something fails to run.
 */
import { loadavg } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createReplica, type Replica } from '../src/index.js'
import { startServer, type SyncmeshServer } from '../src/server/index.js'
import { relayTransport } from '../transports/relay/index.js'
import type { Transport } from '../transports/types.js'
import { type RTCImplementation, webrtcTransport } from '../transports/webrtc/index.js'
import { blockableRtc, waitFor } from '../test/transports/webrtc-helpers.js'
import { type Latency, arg, printAndSave, runBench, runChild, summary } from './stats.js'
import { formatMs, markdownTable } from './table.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const RESULTS_FILE = path.join(ROOT, '.bench-results', 'webrtc.json')
const WRITES = Number(arg('writes', '1000'))
const FANOUT_WRITES = Number(arg('fanout-writes', '100'))
const WARMUP = 50
const ONLY = new Set(arg('only', 'latency,ywebrtc,floor,fallback,relay20,webrtc20').split(','))

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

let wrtc: RTCImplementation
let roomSeq = 0
const freshRoom = (what: string): string => `bench-${what}-${process.pid}-${++roomSeq}`

/** Counts the frames and bytes a transport sends (patched `send` and `broadcast`: every frame of the engine goes through them). */
interface Counter {
  frames: number
  bytes: number
}
function counted<T extends Transport>(t: T, c: Counter): T {
  const send = t.send.bind(t)
  t.send = (peer, frame) => {
    c.frames++
    c.bytes += frame.byteLength
    send(peer, frame)
  }
  const broadcast = t.broadcast?.bind(t)
  if (broadcast) {
    // One frame from this peer (the relay server fans it out).
    t.broadcast = (frame) => {
      c.frames++
      c.bytes += frame.byteLength
      broadcast(frame)
    }
  }
  return t
}

// ---------------------------------------------------------------------------------------------------------------------
// 1 + 2. Two replicas over WebRTC: setup, then latency

async function latency(server: SyncmeshServer): Promise<{ setupMs: number; lat: Latency }> {
  const room = freshRoom('latency')
  const t0 = performance.now()
  const [a, b] = await Promise.all(
    ['lat-a', 'lat-b'].map((peerId) => createReplica({ peerId, room, transports: [webrtcTransport({ signaling: [server.url], rtc: wrtc })], antiEntropyMs: 0 })),
  )
  try {
    await waitFor(() => a!.status().peers.some((p) => p.connected) && b!.status().peers.some((p) => p.connected), 20_000, 'two replicas to connect over WebRTC')
    await Promise.all([a!.sync({ timeoutMs: 10_000 }), b!.sync({ timeoutMs: 10_000 })])
    const setupMs = performance.now() - t0
    const items = a!.collection<{ id: string; n: number; text: string }>('items')
    let waiting: { id: string; resolve: () => void } | undefined
    b!.collection('items').subscribe((changes) => {
      if (waiting && changes.some((c) => c.id === waiting!.id)) waiting.resolve()
    })
    const one = async (i: number): Promise<number> => {
      const id = `w${i}`
      const seen = new Promise<void>((resolve) => (waiting = { id, resolve }))
      const start = performance.now()
      void items.put({ id, n: i, text: `write number ${i}` })
      await seen
      return performance.now() - start
    }
    for (let i = 0; i < WARMUP; i++) await one(-1 - i)
    const lat: number[] = []
    for (let i = 0; i < WRITES; i++) lat.push(await one(i))
    return { setupMs, lat: summary(lat) }
  } finally {
    await Promise.allSettled([a!.close(), b!.close()])
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// y-webrtc + yjs, two child processes, same signaling server

async function ywebrtc(server: SyncmeshServer): Promise<{ setupMs: number; lat: Latency }> {
  const room = freshRoom('ywebrtc')
  const script = fileURLToPath(new URL('./ywebrtc-peer.mjs', import.meta.url))
  const run = (role: string): Promise<string> => runChild(script, [server.url, room, role, String(WRITES + WARMUP)], ROOT, `y-webrtc ${role}`)
  const t0 = performance.now()
  const reader = run('reader')
  await sleep(300) // as peers do: one arrives a moment after the other (simultaneous announces can stall y-webrtc)
  const [rOut, wOut] = await Promise.all([reader, run('writer')])
  const setupMs = Number(/CONNECTED (\S+)/.exec(wOut)?.[1] ?? NaN)
  void t0
  const lat = JSON.parse(/LAT (.*)/.exec(rOut)![1]!) as number[]
  return { setupMs, lat: summary(lat.slice(WARMUP)) }
}

// ---------------------------------------------------------------------------------------------------------------------
// Raw data-channel round trip: two RTCPeerConnections in this process, no signaling server, no sync layer

async function floor(): Promise<{ rtt: Latency; oneWay: Latency }> {
  type Pc = {
    createDataChannel(l: string, o: object): Dc
    createOffer(): Promise<{ type: string; sdp: string }>
    createAnswer(): Promise<{ type: string; sdp: string }>
    setLocalDescription(d: object): Promise<void>
    setRemoteDescription(d: object): Promise<void>
    addIceCandidate(c: object): Promise<void>
    onicecandidate: ((e: { candidate: object | null }) => void) | null
    close(): void
  }
  type Dc = { send(d: Uint8Array): void; onopen: (() => void) | null; onmessage: ((e: { data: ArrayBuffer }) => void) | null; binaryType: string; close(): void }
  const Ctor = wrtc.RTCPeerConnection as unknown as new (c: object) => Pc
  const a = new Ctor({ iceServers: [] })
  const b = new Ctor({ iceServers: [] })
  a.onicecandidate = (e) => void (e.candidate && b.addIceCandidate(e.candidate).catch(() => {}))
  b.onicecandidate = (e) => void (e.candidate && a.addIceCandidate(e.candidate).catch(() => {}))
  const da = a.createDataChannel('floor', { negotiated: true, id: 0, ordered: true })
  const db = b.createDataChannel('floor', { negotiated: true, id: 0, ordered: true })
  da.binaryType = db.binaryType = 'arraybuffer'
  const open = Promise.all([new Promise<void>((r) => (da.onopen = r)), new Promise<void>((r) => (db.onopen = r))])
  const offer = await a.createOffer()
  await a.setLocalDescription(offer)
  await b.setRemoteDescription(offer)
  const answer = await b.createAnswer()
  await b.setLocalDescription(answer)
  await a.setRemoteDescription(answer)
  await open
  db.onmessage = (e) => db.send(new Uint8Array(e.data))
  let pong: (() => void) | undefined
  da.onmessage = () => pong?.()
  const payload = new Uint8Array(100)
  const rtts: number[] = []
  for (let i = 0; i < WRITES + WARMUP; i++) {
    const got = new Promise<void>((r) => (pong = r))
    const start = performance.now()
    da.send(payload)
    await got
    if (i >= WARMUP) rtts.push(performance.now() - start)
  }
  da.close()
  db.close()
  a.close()
  b.close()
  return { rtt: summary(rtts), oneWay: summary(rtts.map((x) => x / 2)) }
}

// ---------------------------------------------------------------------------------------------------------------------
// 3. Fallback on forced ICE failure, then the upgrade

async function fallback(server: SyncmeshServer): Promise<{ fallbackMs: number; upgradeMs: number; peerLeaves: number }> {
  const room = freshRoom('fallback')
  const rtc = blockableRtc(wrtc)
  rtc.block('fb-a', 'fb-c')
  let leaves = 0
  const t0 = performance.now()
  const rs = await Promise.all(
    ['fb-a', 'fb-b', 'fb-c'].map(async (peerId) => {
      // The transports' defaults: connect timeout 5 s, backoff from 0.5 s.
      const r = await createReplica({ peerId, room, transports: [webrtcTransport({ signaling: [server.url], rtc: rtc.for(peerId) }), relayTransport({ url: server.url })] })
      r.on('peer:leave', () => leaves++)
      return r
    }),
  )
  const [a, , c] = rs as [Replica, Replica, Replica]
  try {
    const via = (r: Replica, p: string): number | undefined => r.status().peers.find((x) => x.id === p)?.via
    await a.collection('fb').put({ id: 'x', v: 1 })
    await waitFor(() => c.collection('fb').get('x') !== undefined, 30_000, "a's write at c")
    const fallbackMs = performance.now() - t0
    if (via(a, 'fb-c') !== 1) throw new Error(`the blocked pair is not on the relay (via ${via(a, 'fb-c')})`)
    await waitFor(() => rtc.failedAttempts('fb-a', 'fb-c') >= 1, 30_000, 'a failed ICE attempt')
    rtc.unblock('fb-a', 'fb-c')
    const t1 = performance.now()
    await waitFor(() => via(a, 'fb-c') === 0 && via(c, 'fb-a') === 0, 60_000, 'the upgrade to WebRTC')
    return { fallbackMs, upgradeMs: performance.now() - t1, peerLeaves: leaves }
  } finally {
    await Promise.allSettled(rs.map((r) => r.close()))
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// 4. 20 replicas: through the relay, and over a WebRTC overlay with maxPeers 6

interface FanoutResult {
  peers: number
  meshMs: number
  lat: Latency
  framesPerWrite: number
  bytesPerWrite: number
  /** Writes not seen everywhere within 10 s. */
  missing: number
}

async function fanout(server: SyncmeshServer, kind: 'relay' | 'webrtc', n = 20): Promise<FanoutResult> {
  const room = freshRoom(`fanout-${kind}`)
  const counter: Counter = { frames: 0, bytes: 0 }
  const seen = new Map<string, number>()
  const waiters = new Map<string, () => void>()
  const rs: Replica[] = []
  const t0 = performance.now()
  try {
    for (let i = 0; i < n; i++) {
      const t =
        kind === 'relay'
          ? relayTransport({ url: server.url })
          : webrtcTransport({ signaling: [server.url], rtc: wrtc, maxPeers: 6, reconnect: { initialMs: 200, maxMs: 2000 } })
      // Anti-entropy off: every frame counted below is caused by the writes.
      const r = await createReplica({ peerId: `${kind}-${String(i).padStart(2, '0')}`, room, transports: [counted(t, counter)], antiEntropyMs: 0 })
      r.on('change', (changes) => {
        for (const ch of changes) {
          if (ch.origin !== 'remote') continue
          const k = (seen.get(ch.id) ?? 0) + 1
          seen.set(ch.id, k)
          if (k === n - 1) waiters.get(ch.id)?.()
        }
      })
      rs.push(r)
    }
    // Relay: everyone sees everyone. Overlay: every replica holds its ring-lattice neighbours (degree 6).
    const want = kind === 'relay' ? n - 1 : 6
    await waitFor(() => rs.every((r) => r.status().peers.filter((p) => p.connected).length >= want), 90_000, () =>
      `${kind} peers to connect (${rs.map((r) => r.status().peers.length).join(',')})`,
    )
    const meshMs = performance.now() - t0
    await Promise.all(rs.map((r) => r.sync({ timeoutMs: 30_000 })))
    // Warm-up: one write per replica, which also passes on every replica's current neighbour list (NEIGHBOURS).
    for (let i = 0; i < n; i++) await rs[i]!.collection('bench').put({ id: `warm-${i}` })
    await sleep(500)
    counter.frames = 0
    counter.bytes = 0
    const lat: number[] = []
    let missing = 0
    for (let w = 0; w < FANOUT_WRITES; w++) {
      const id = `w${w}`
      let timer: ReturnType<typeof setTimeout> | undefined
      const done = new Promise<boolean>((resolve) => {
        waiters.set(id, () => resolve(true))
        timer = setTimeout(() => resolve(false), 10_000)
      })
      const start = performance.now()
      void rs[w % n]!.collection('bench').put({ id, w, payload: 'x'.repeat(100) })
      if (await done) lat.push(performance.now() - start)
      else missing++
      clearTimeout(timer)
    }
    await sleep(200) // let the last ACKs go out before counting
    return { peers: n, meshMs, lat: summary(lat), framesPerWrite: counter.frames / FANOUT_WRITES, bytesPerWrite: counter.bytes / FANOUT_WRITES, missing }
  } finally {
    await Promise.allSettled(rs.map((r) => r.close()))
  }
}

// ---------------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const loadBefore = loadavg()
  const started = new Date().toISOString()
  const { default: impl } = (await import('@roamhq/wrtc')) as unknown as { default: RTCImplementation }
  wrtc = impl
  const server = await startServer({ port: 0, log: false })
  const results: Record<string, unknown> = {}
  try {
    if (ONLY.has('floor')) results['floor'] = await floor()
    if (ONLY.has('latency')) results['latency'] = await latency(server)
    if (ONLY.has('ywebrtc')) {
      try {
        results['ywebrtc'] = await ywebrtc(server)
      } catch (e) {
        results['ywebrtc'] = { error: (e as Error).message }
      }
    }
    if (ONLY.has('fallback')) results['fallback'] = await fallback(server)
    if (ONLY.has('relay20')) results['relay20'] = await fanout(server, 'relay')
    if (ONLY.has('webrtc20')) results['webrtc20'] = await fanout(server, 'webrtc')
  } finally {
    await server.close()
  }
  const loadAfter = loadavg()

  const rows: string[][] = []
  const mark = (ok: boolean): string => (ok ? 'PASS' : '**MISS**')
  const ms = (x: number): string => `${formatMs(x)} ms`
  const floorR = results['floor'] as Awaited<ReturnType<typeof floor>> | undefined
  const lat = results['latency'] as Awaited<ReturnType<typeof latency>> | undefined
  const y = results['ywebrtc'] as (Awaited<ReturnType<typeof ywebrtc>> & { error?: string }) | undefined
  if (lat) {
    rows.push([`WebRTC write → remote visible, ${lat.lat.n} writes, p50`, ms(lat.lat.p50), '≤ 5 ms', mark(lat.lat.p50 <= 5)])
    rows.push([`WebRTC write → remote visible, ${lat.lat.n} writes, p99`, ms(lat.lat.p99), '≤ 25 ms', mark(lat.lat.p99 <= 25)])
    rows.push(['WebRTC connection setup through signaling (start → synced)', ms(lat.setupMs), '—', ''])
  }
  if (y && !y.error) {
    rows.push([`y-webrtc + yjs, Y.Map set → remote observe, ${y.lat.n} writes, p50 / p99`, `${ms(y.lat.p50)} / ${ms(y.lat.p99)}`, 'comparison', ''])
    rows.push(['y-webrtc connection setup (start → first remote update)', ms(y.setupMs), 'comparison', ''])
  } else if (y?.error) rows.push(['y-webrtc + yjs comparison', `failed: ${y.error.slice(0, 80)}`, 'comparison', ''])
  if (floorR) rows.push([`raw data channel, 100 B ping-pong, one way (RTT/2) p50 / p99`, `${ms(floorR.oneWay.p50)} / ${ms(floorR.oneWay.p99)}`, 'floor', ''])
  const fb = results['fallback'] as Awaited<ReturnType<typeof fallback>> | undefined
  if (fb) {
    rows.push(['fallback: ICE blocked for one pair → its write visible through the relay', ms(fb.fallbackMs), '≤ 5 000 ms', mark(fb.fallbackMs <= 5000)])
    rows.push(['upgrade to WebRTC after ICE is unblocked (default timeout and backoff)', ms(fb.upgradeMs), '—', fb.peerLeaves === 0 ? 'no peer:leave' : `${fb.peerLeaves} peer:leave`])
  }
  for (const key of ['relay20', 'webrtc20'] as const) {
    const f = results[key] as FanoutResult | undefined
    if (!f) continue
    const name = key === 'relay20' ? `${f.peers} peers through the relay` : `${f.peers} peers over WebRTC, maxPeers 6`
    rows.push([`${name}: write → all ${f.peers - 1} others, p50 / p99 (${f.lat.n} writes${f.missing ? `, ${f.missing} missing` : ''})`, `${ms(f.lat.p50)} / ${ms(f.lat.p99)}`, 'p99 ≤ 100 ms', mark(f.lat.p99 <= 100 && f.missing === 0)])
    rows.push([`${name}: frames / bytes sent per write (all peers, ACKs included)`, `${f.framesPerWrite.toFixed(1)} / ${Math.round(f.bytesPerWrite)} B`, '—', ''])
    rows.push([`${name}: connected (start → everyone has its peers)`, ms(f.meshMs), '—', ''])
  }
  printAndSave(`## WebRTC and relay (bench/webrtc.ts), loopback, Node ${process.versions.node}, load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')} → ${loadAfter.map((x) => x.toFixed(2)).join(' ')}`, markdownTable(['measure', 'syncmesh', 'target', ''], rows), RESULTS_FILE, { started, node: process.versions.node, loadBefore, loadAfter, writes: WRITES, fanoutWrites: FANOUT_WRITES, results })
}

runBench(main)
