/**
 * Fallback and upgrade between transports: three replicas, each with [WebRTC, relay] through one `startServer`, where
 * ICE is made to fail for exactly one pair. That pair must sync through the relay at once, the other pairs over
 * WebRTC; when ICE works again the pair moves to WebRTC, and the application never sees the peer leave.
 */
import { afterAll, describe, expect, it } from 'vitest'
import { createReplica, type Replica } from '../../src/index.js'
import { type SyncmeshServer, startServer } from '../../src/server/index.js'
import { relayTransport } from '../../transports/relay/index.js'
import { type RTCImplementation, webrtcTransport } from '../../transports/webrtc/index.js'
import { blockableRtc, waitFor } from './webrtc-helpers.js'

const replicas: Replica[] = []
let server: SyncmeshServer | undefined
afterAll(async () => {
  await Promise.allSettled(replicas.map((r) => r.close()))
  await server?.close()
})

describe('WebRTC → relay fallback on ICE failure, and the upgrade back', () => {
  it('the pair whose ICE fails syncs through the relay at once; the others use WebRTC; the pair upgrades when ICE works', async () => {
    server = await startServer({ port: 0, log: false })
    const { default: wrtc } = (await import('@roamhq/wrtc')) as unknown as { default: RTCImplementation }
    const rtc = blockableRtc(wrtc)
    rtc.block('a', 'c')
    const leaves: string[] = []
    const open = async (id: string): Promise<Replica> => {
      const r = await createReplica({
        peerId: id,
        room: `fallback-${process.pid}`,
        antiEntropyMs: 1000,
        transports: [
          // A short attempt timeout keeps the test quick; the default (5 s) is checked below and in bench/webrtc.ts.
          webrtcTransport({ signaling: [server!.url], rtc: rtc.for(id), connectTimeoutMs: 1500, reconnect: { initialMs: 200, maxMs: 1000 } }),
          relayTransport({ url: server!.url }),
        ],
      })
      r.on('peer:leave', (p) => leaves.push(`${id} lost ${p}`))
      replicas.push(r)
      return r
    }
    const via = (r: Replica, peer: string): number | undefined => r.status().peers.find((p) => p.id === peer)?.via
    const paths = (): string =>
      replicas.map((r) => `${r.peerId}: ${r.status().peers.map((p) => `${p.id} via ${p.via}`).join(', ')}`).join('; ')

    const t0 = performance.now()
    const [a, b, c] = [await open('a'), await open('b'), await open('c')]
    // a's write reaches c: through the relay, since no direct path between them can work.
    await a.collection('notes').put({ id: 'first', from: 'a' })
    await waitFor(() => c.collection('notes').get('first') !== undefined, 5000, () => `a's write at c (${paths()})`)
    const fallbackMs = performance.now() - t0
    expect(fallbackMs).toBeLessThanOrEqual(5000)
    expect(via(a, 'c')).toBe(1)
    expect(via(c, 'a')).toBe(1)
    // The other pairs open their direct channels, while the blocked pair's attempts keep failing.
    await waitFor(() => via(a, 'b') === 0 && via(b, 'a') === 0 && via(b, 'c') === 0 && via(c, 'b') === 0, 15_000, () => `WebRTC between a-b and b-c (${paths()})`)
    await waitFor(() => rtc.failedAttempts('a', 'c') >= 2, 15_000, () => `two failed ICE attempts between a and c (${rtc.failedAttempts('a', 'c')})`)
    expect(via(a, 'c')).toBe(1)
    expect(via(c, 'a')).toBe(1)
    await c.collection('notes').put({ id: 'second', from: 'c' })
    await waitFor(() => a.collection('notes').get('second') !== undefined && b.collection('notes').get('second') !== undefined, 5000, "c's write everywhere")

    // ICE works again: the next retry opens a direct channel, and traffic moves to it.
    rtc.unblock('a', 'c')
    const t1 = performance.now()
    await waitFor(() => via(a, 'c') === 0 && via(c, 'a') === 0, 15_000, () => `the upgrade of a-c to WebRTC (${paths()})`)
    const upgradeMs = performance.now() - t1
    await a.collection('notes').put({ id: 'third', from: 'a' })
    await waitFor(() => c.collection('notes').get('third') !== undefined, 5000, "a's write at c over WebRTC")
    await Promise.all([a.sync({ timeoutMs: 5000 }), b.sync({ timeoutMs: 5000 }), c.sync({ timeoutMs: 5000 })])
    for (const r of [b, c]) expect(r.collection('notes').all()).toEqual(a.collection('notes').all())
    expect(leaves).toEqual([]) // one peer either way: the path changed under the application, nothing else
    console.log(`fallback: a's write visible at c through the relay ${fallbackMs.toFixed(0)} ms after start; upgrade to WebRTC ${upgradeMs.toFixed(0)} ms after ICE was unblocked`)
  }, 60_000)

  it('the connect timeout defaults to at most 5 s, so a failing pair gives up and retries with backoff', () => {
    // Read from the instance's private settings: the documented defaults are what a transport built without options uses.
    const t = webrtcTransport({ signaling: ['ws://127.0.0.1:9'] }) as unknown as { connectTimeoutMs: number; backoff: { initialMs: number; maxMs: number } }
    expect(t.connectTimeoutMs).toBeLessThanOrEqual(5000)
    expect(t.backoff.initialMs).toBeLessThanOrEqual(1000)
  })
})
