/**
 * The child process of the crash test (`crash.test.ts`): writes through a replica on LevelDB as fast as it can until it
 * is killed with SIGKILL.
 *
 *   node --import tsx test/storage/crash-child.ts <dir> <seed> [compactAfterEntries]
 *
 * The writes are a deterministic function of the seed ({@link crashUnits}), grouped in units: a unit is one write, or
 * a burst of writes issued in the same tick (they become one delta, one atomic storage write). The child issues unit
 * u only after unit u−1 resolved, and prints the line `u` to stdout only AFTER the promises of all its writes
 * resolved — so every number the parent reads is an acknowledged, supposedly durable unit, and at most the one unit
 * after the last acknowledged one can be in flight when the kill lands. (Writes to a pipe are synchronous on Linux:
 * once `write` returns, the line is in the kernel's pipe buffer and survives the child's death.)
 *
 * Importing this module (as the parent does) only exposes the generator; the loop runs when it is the entry point.
 */
import { pathToFileURL } from 'node:url'
import { mulberry32 } from '../prng.js'

/** A field value the crash test writes. */
export type CrashValue = number | string | boolean | Uint8Array
/** One write of the crash test. */
export type CrashOp =
  | { readonly kind: 'put'; readonly id: string; readonly fields: Readonly<Record<string, CrashValue>> }
  | { readonly kind: 'update'; readonly id: string; readonly fields: Readonly<Record<string, CrashValue>> }
  | { readonly kind: 'delete'; readonly id: string }

/** The crash test's collection. */
export const CRASH_COLLECTION = 'crash'


const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789 éü€😀\u0000\ud800'

function text(rand: () => number, length: number): string {
  let s = ''
  for (let i = 0; i < length; i++) s += ALPHABET[Math.floor(rand() * ALPHABET.length)]
  return s
}

function payload(rand: () => number, big: boolean): Record<string, CrashValue> {
  const fields: Record<string, CrashValue> = {}
  const r = rand()
  if (big) fields.payload = text(rand, 20_000 + Math.floor(rand() * 40_000)) // spans LevelDB log blocks
  else if (r < 0.8) fields.payload = text(rand, Math.floor(rand() * 400))
  else fields.bin = Uint8Array.from({ length: Math.floor(rand() * 200) }, () => Math.floor(rand() * 256))
  if (rand() < 0.5) fields.flag = rand() < 0.5
  return fields
}

/**
 * The units of writes for a seed, endlessly: mostly single writes, sometimes bursts of 2–16 writes issued together.
 * Writes create new records (`k<n>`), replace, update or delete recent ones.
 */
export function* crashUnits(seed: number): Generator<CrashOp[]> {
  const rand = mulberry32(seed)
  const ids: string[] = []
  let created = 0
  for (let u = 0; ; u++) {
    const burst = rand() < 0.1 ? 2 + Math.floor(rand() * 15) : 1
    const unit: CrashOp[] = []
    for (let j = 0; j < burst; j++) {
      const big = burst === 1 && rand() < 0.01
      const r = rand()
      if (ids.length === 0 || r < 0.45) {
        const id = `k${created++}`
        ids.push(id)
        unit.push({ kind: 'put', id, fields: { u, j, ...payload(rand, big) } })
        continue
      }
      const id = ids[ids.length - 1 - Math.floor(rand() * Math.min(ids.length, 200))]!
      if (r < 0.7) unit.push({ kind: 'update', id, fields: { u, j, ...payload(rand, big) } })
      else if (r < 0.85) unit.push({ kind: 'put', id, fields: { u, j, ...payload(rand, big) } })
      else unit.push({ kind: 'delete', id })
    }
    yield unit
  }
}

/** Applies a unit to a model of the visible records (what the replica's collection must hold afterwards). */
export function applyUnit(model: Map<string, Record<string, CrashValue>>, unit: readonly CrashOp[]): void {
  for (const op of unit) {
    if (op.kind === 'delete') model.delete(op.id)
    else if (op.kind === 'put') model.set(op.id, { ...op.fields })
    else model.set(op.id, { ...model.get(op.id), ...op.fields }) // an update of a deleted record keeps only its own fields
  }
}

async function main(): Promise<void> {
  const [dir, seedArg, compactArg] = process.argv.slice(2)
  if (!dir || seedArg === undefined) throw new Error('usage: crash-child.ts <dir> <seed> [compactAfterEntries]')
  const { createReplica } = await import('../../src/replica.js')
  const { levelStorage } = await import('../../src/storage/level.js')
  const replica = await createReplica({ storage: levelStorage(dir), compactAfterEntries: Number(compactArg ?? 50), antiEntropyMs: 0 })
  replica.on('error', (err) => {
    process.stderr.write(`replica error: ${err.stack ?? err.message}\n`)
    process.exit(3)
  })
  const c = replica.collection(CRASH_COLLECTION)
  let u = 0
  for (const unit of crashUnits(Number(seedArg))) {
    await Promise.all(unit.map((op) => (op.kind === 'delete' ? c.delete(op.id) : op.kind === 'put' ? c.put({ id: op.id, ...op.fields }) : c.update(op.id, op.fields))))
    process.stdout.write(`${u++}\n`) // acknowledged: every write of the unit resolved
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`crash child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(2)
  })
}
