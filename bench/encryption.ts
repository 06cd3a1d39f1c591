/**
 * What an encrypted room costs (`tsx bench/encryption.ts`): the room-key derivation, sealing and opening frames, and
 * the time two replicas take to sync the same records over an in-memory network with and without a secret.
 *   env: BENCH_RECORDS (default 5000), BENCH_SEED (default 1)
 */
import { pbkdf2Async } from '@noble/hashes/pbkdf2.js'
import { sha256 } from '@noble/hashes/sha2.js'
import { createReplica } from '../src/index.js'
import { ROOM_KEY_ITERATIONS, cipherFromKey, deriveRoomKey, roomKeySalt } from '../src/crypto/room-key.js'
import { SEALED_FRAME_OVERHEAD } from '../src/crypto/sealed.js'
import { MemoryNetwork } from '../transports/memory.js'
import { mulberry32 } from '../test/prng.js'

const RECORDS = Number(process.env.BENCH_RECORDS ?? 5000)
const SEED = Number(process.env.BENCH_SEED ?? 1)
const enc = new TextEncoder()

async function time<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now()
  const out = await fn()
  return [out, performance.now() - t0]
}

async function kdf(): Promise<void> {
  const salt = roomKeySalt('bench', 'room')
  const [, web] = await time(() => deriveRoomKey('bench', 'room', 'password'))
  const [, noble] = await time(() => pbkdf2Async(sha256, 'password', salt, { c: ROOM_KEY_ITERATIONS, dkLen: 32 }))
  console.log(`room key, PBKDF2-SHA256 × ${ROOM_KEY_ITERATIONS}: WebCrypto (what deriveRoomKey uses) ${web.toFixed(0)} ms; @noble/hashes async (used before) for comparison ${noble.toFixed(0)} ms`)
}

async function cipher(): Promise<void> {
  const rand = mulberry32(SEED)
  const c = await cipherFromKey(Uint8Array.from({ length: 32 }, () => Math.floor(rand() * 256)))
  const aad = enc.encode('syncmesh/frame/v1\u0000topic\u0000peer\u0000')
  for (const size of [64, 1024, 16 * 1024]) {
    const plain = Uint8Array.from({ length: size }, () => Math.floor(rand() * 256))
    const n = size > 4096 ? 2000 : 5000
    // Sequential (one at a time) and in flight together (as the sealed transport does for a burst).
    const [sealed, seq] = await time(async () => {
      let last: Uint8Array = new Uint8Array(0)
      for (let i = 0; i < n; i++) last = await c.seal(plain, aad)
      return last
    })
    const [, par] = await time(() => Promise.all(Array.from({ length: n }, () => c.seal(plain, aad))))
    const [, open] = await time(() => Promise.all(Array.from({ length: n }, () => c.open(sealed, aad))))
    console.log(
      `seal ${size} B: ${((seq / n) * 1000).toFixed(1)} µs sequential, ${((par / n) * 1000).toFixed(1)} µs in flight together; ` +
        `open ${((open / n) * 1000).toFixed(1)} µs; ${((size * n) / (par / 1000) / 1e6).toFixed(0)} MB/s sealed`,
    )
  }
  console.log(`overhead per sealed frame: ${SEALED_FRAME_OVERHEAD} bytes (version, kind, 12-byte nonce, 16-byte tag)`)
}

async function sync(secret: string | undefined): Promise<number> {
  const rand = mulberry32(SEED)
  const net = new MemoryNetwork({ seed: SEED })
  const init = { app: 'bench', room: 'room', secret, antiEntropyMs: 0 }
  const a = await createReplica({ ...init, peerId: 'a', transports: [net.transport()] })
  const c = a.collection<{ id: string; title: string; n: number; done: boolean }>('todos')
  const writes: Promise<void>[] = []
  for (let i = 0; i < RECORDS; i++) writes.push(c.put({ id: `t${i}`, title: `todo ${Math.floor(rand() * 1e9).toString(36)}`, n: i, done: rand() < 0.5 }))
  await Promise.all(writes)
  const t0 = performance.now()
  const b = await createReplica({ ...init, peerId: 'b', transports: [net.transport()] })
  await b.sync({ timeoutMs: 120_000 })
  while (b.collection('todos').all().length < RECORDS) await new Promise((r) => setTimeout(r, 1))
  const ms = performance.now() - t0
  await Promise.all([a.close(), b.close()])
  return ms
}

/** Write → visible on the other replica, one write at a time (memory network, no added latency); p50 and p99 in ms. */
async function live(secret: string | undefined, n = 500): Promise<[number, number]> {
  const net = new MemoryNetwork({ seed: SEED })
  const init = { app: 'bench', room: 'room', secret, antiEntropyMs: 0 }
  const a = await createReplica({ ...init, peerId: 'a', transports: [net.transport()] })
  const b = await createReplica({ ...init, peerId: 'b', transports: [net.transport()] })
  while (a.status().peers.length === 0 || b.status().peers.length === 0) await new Promise((r) => setTimeout(r, 1))
  const seen = new Map<string, () => void>()
  b.on('change', (changes) => {
    for (const c of changes) seen.get(c.id)?.()
  })
  const lat: number[] = []
  for (let i = 0; i < n; i++) {
    const arrived = new Promise<void>((resolve) => seen.set(`x${i}`, resolve))
    const t0 = performance.now()
    void a.collection('live').put({ id: `x${i}`, n: i })
    await arrived
    lat.push(performance.now() - t0)
  }
  await Promise.all([a.close(), b.close()])
  lat.sort((x, y) => x - y)
  return [lat[Math.floor(n / 2)]!, lat[Math.floor(n * 0.99)]!]
}

await kdf()
await cipher()
await sync('warm-up') // derives and caches the key, warms the JIT
await sync(undefined)
const plain: number[] = []
const sealed: number[] = []
for (let round = 0; round < 5; round++) {
  plain.push(await sync(undefined))
  sealed.push(await sync('warm-up'))
}
const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!
console.log(
  `initial sync of ${RECORDS} records to a new replica (memory network, key cached), median of 5: ` +
    `plain ${median(plain).toFixed(0)} ms, encrypted ${median(sealed).toFixed(0)} ms ` +
    `(all: plain ${plain.map((x) => x.toFixed(0)).join(' ')}; encrypted ${sealed.map((x) => x.toFixed(0)).join(' ')})`,
)
await live(undefined, 100) // warm-up
const [p50, p99] = await live(undefined)
const [s50, s99] = await live('warm-up')
console.log(`live write → visible on the other replica (memory network): plain p50 ${p50.toFixed(2)} ms p99 ${p99.toFixed(2)} ms; encrypted p50 ${s50.toFixed(2)} ms p99 ${s99.toFixed(2)} ms`)
