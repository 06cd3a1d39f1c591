/**
 * The child process of the Redis sharing tests (`redis-sharing.test.ts`): opens a replica on a Redis namespace that
 * other processes open too, and writes records that are a function of its seed.
 *
 *   node --import tsx test/storage/redis-sharing-child.ts <url> <namespace> <seed> <count> <lockTtlMs> [<expectTotal>]
 *
 * stdout, one line each:
 *   `open <writerId> <peerId>`   the replica is open
 *   `ack <i>`                   write i resolved (printed only after its promise resolved: acknowledged, durable)
 *   `seen`                      the replica holds `expectTotal` records (the other processes' writes arrived)
 *   `leader <true|false>`       the answer to a `status` line on stdin
 *   `closed`                    the answer to a `close` line on stdin, once the replica is closed (the process
 *                               then ends by itself: nothing of the replica may keep it alive)
 * `count` may be `inf`: it writes until killed. Writes go in units of 1–8 issued together (one delta each).
 * Importing this module (as the parent does) only exposes the generator; the child runs when it is the entry point.
 */
import { createInterface } from 'node:readline'
import { pathToFileURL } from 'node:url'
import { mulberry32 } from '../prng.js'

/** The collection the children write. */
export const SHARING_COLLECTION = 'shared'

/** Write i of the child with this seed: a new record (ids never repeat across seeds). */
export function sharingRecord(seed: number, i: number): { id: string; i: number; text: string; bytes: Uint8Array } {
  const rand = mulberry32((seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0)
  const text = Array.from({ length: Math.floor(rand() * 60) }, () => 'abcxyz é😀'[Math.floor(rand() * 10)]).join('')
  const bytes = Uint8Array.from({ length: Math.floor(rand() * 40) }, () => Math.floor(rand() * 256))
  return { id: `s${seed}-${i}`, i, text, bytes }
}

async function main(): Promise<void> {
  const [url, namespace, seedArg, countArg, ttlArg, expectArg] = process.argv.slice(2)
  if (!url || !namespace || seedArg === undefined || countArg === undefined || ttlArg === undefined) throw new Error('usage: redis-sharing-child.ts <url> <ns> <seed> <count|inf> <lockTtlMs> [expectTotal]')
  const { createReplica } = await import('../../src/replica.js')
  const { redisStorage } = await import('../../src/storage/redis.js')
  const seed = Number(seedArg)
  const count = countArg === 'inf' ? Infinity : Number(countArg)
  const replica = await createReplica({ storage: redisStorage({ url, namespace, lockTtlMs: Number(ttlArg) }), antiEntropyMs: 500 })
  replica.on('error', (err) => {
    process.stderr.write(`replica error: ${err.stack ?? err.message}\n`)
    process.exit(3)
  })
  const out = (line: string): void => void process.stdout.write(`${line}\n`)
  out(`open ${(replica as unknown as { writerId: string }).writerId} ${replica.peerId}`)
  const c = replica.collection(SHARING_COLLECTION)
  const rand = mulberry32(seed)
  for (let i = 0; i < count; ) {
    const unit = Math.min(count - i, 1 + Math.floor(rand() * 8))
    const writes: Promise<void>[] = []
    for (let j = 0; j < unit; j++) writes.push(c.put(sharingRecord(seed, i + j)))
    for (let j = 0; j < unit; j++) {
      await writes[j]
      out(`ack ${i + j}`)
    }
    i += unit
  }
  const expectTotal = Number(expectArg ?? count)
  while (c.all().length < expectTotal) await new Promise((r) => setTimeout(r, 5))
  out('seen')
  const lines = createInterface({ input: process.stdin })
  for await (const line of lines) {
    if (line === 'status') out(`leader ${replica.status().leader}`)
    if (line !== 'close') continue
    await replica.close()
    out('closed')
    lines.close()
    // No process.exit: the process must end by itself once the replica has closed (nothing left keeps it alive).
    return
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(2)
  })
}
