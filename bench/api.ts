/**
 * Workload API: local writes through syncmesh's public replica API (`createReplica` → `collection.put`/`update`) with
 * the in-memory storage and no transports, on W1's records and updates (same seed, so W1's expected final snapshot
 * applies). Two ways of issuing the same 100 000 updates, each on its own fresh replica:
 * - pipelined: issued without awaiting each, awaited in groups of {@link API_GROUP} with `Promise.all` (a burst of
 *   edits); the writes of one tick are flushed as one delta, and each promise still resolves only once stored;
 * - awaited: `await c.update(…)` one at a time, so every write is durable in storage before the next starts.
 * Both replicas first put W1's records, pipelined: the first replica's puts are the first writes of the process (JIT
 * warm-up included); the second's, on a new replica, store and storage after the first replica's writes and the heap
 * measurement's two full collections, are the rate a running app sees ("warm").
 * The floor runs the same loops over an async, validation-free `Map.set` collection: the cost of the API's shape alone.
 */
import type { Storage } from '../src/index.js'
import { makeRecords, makeUpdates, rng, type Rec, type Update } from './data.js'
import { STREAM, expectedW1Snapshot, heapAfterGcMB, snapshot, type Metrics, type WorkloadContext } from './workloads.js'

/** Pipelined mode (puts and updates) awaits its writes in groups of this many. */
export const API_GROUP = 1000

/** How the updates are issued. */
type Mode = 'pipelined' | 'awaited'

/** A benchmark record as the collection stores it. */
type ApiRecord = Rec & { id: string }

/** The part of a `Collection<ApiRecord>` the workload uses. */
interface ApiCollection {
  put(record: ApiRecord): Promise<void>
  update(id: string, patch: Partial<Rec>): Promise<void>
  get(id: string): ApiRecord | undefined
}

/** One fresh collection under test, with what is checked and measured around it. */
interface ApiTarget {
  readonly collection: ApiCollection
  /** Writes not yet durable (must be 0 once every write promise has resolved). */
  pending(): number
  /** Closes the replica (flushing its storage queue). */
  close(): Promise<void>
  /** After {@link close}: the bytes held by its storage. */
  storageBytes?(): number
  /** After {@link close}: a second replica opened from the same storage, for checking what was made durable. */
  reopen?(): Promise<{ collection: ApiCollection; close(): Promise<void> }>
}

/** The floor: async put/update over a plain `Map`, no validation, stamps, events or storage. */
class FloorCollection implements ApiCollection {
  private readonly records = new Map<string, ApiRecord>()

  async put(record: ApiRecord): Promise<void> {
    this.records.set(record.id, { ...record })
  }

  async update(id: string, patch: Partial<Rec>): Promise<void> {
    const current = this.records.get(id)
    if (current) this.records.set(id, { ...current, ...patch })
  }

  get(id: string): ApiRecord | undefined {
    return this.records.get(id)
  }
}

/** Makes fresh syncmesh replicas; imported lazily so the floor's worker never loads the replica layer. */
async function syncmeshOpener(): Promise<() => Promise<ApiTarget>> {
  const { createReplica, MemoryStorage } = await import('../src/index.js')
  /** MemoryStorage that survives the replica's `close()`, so its content can be measured and reopened after it. */
  class KeptStorage extends MemoryStorage {
    override async close(): Promise<void> {}
  }
  return async () => {
    const storage = new KeptStorage()
    const replica = await createReplica({ peerId: 'bench-a', storage })
    return {
      collection: replica.collection<ApiRecord>('records'),
      pending: () => replica.status().pending,
      close: () => replica.close(),
      storageBytes: () => storage.byteSize,
      reopen: async () => {
        // A read-only view: the check must not write to the storage it checks.
        const view: Storage = {
          load: (key) => storage.load(key),
          loadRange: (prefix) => storage.loadRange(prefix),
          save: () => Promise.reject(new Error('the durability check must not write')),
          remove: () => Promise.reject(new Error('the durability check must not write')),
        }
        const again = await createReplica({ storage: view, antiEntropyMs: 0 })
        return { collection: again.collection<ApiRecord>('records'), close: () => again.close() }
      },
    }
  }
}

/** Opens fresh floor collections. */
function floorOpener(): () => Promise<ApiTarget> {
  return async () => ({ collection: new FloorCollection(), pending: () => 0, close: async () => {} })
}

/** Ops per second of `count` ops in `ms`. */
const rate = (count: number, ms: number): number => (count / ms) * 1000

/** Puts every record, pipelined in groups; returns the ms taken. */
async function putAll(c: ApiCollection, rows: readonly ApiRecord[]): Promise<number> {
  const start = performance.now()
  for (let i = 0; i < rows.length; i += API_GROUP) {
    const group: Promise<void>[] = []
    for (let j = i; j < Math.min(i + API_GROUP, rows.length); j++) group.push(c.put(rows[j] as ApiRecord))
    await Promise.all(group)
  }
  return performance.now() - start
}

/** Applies the updates, pipelined in groups or awaiting each; returns the ms taken. */
async function updateAll(c: ApiCollection, updates: readonly Update[], mode: Mode): Promise<number> {
  const start = performance.now()
  if (mode === 'awaited') {
    for (const { id, field, value } of updates) await c.update(id, { [field]: value })
  } else {
    for (let i = 0; i < updates.length; i += API_GROUP) {
      const group: Promise<void>[] = []
      for (let j = i; j < Math.min(i + API_GROUP, updates.length); j++) {
        const { id, field, value } = updates[j] as Update
        group.push(c.update(id, { [field]: value }))
      }
      await Promise.all(group)
    }
  }
  return performance.now() - start
}

/**
 * Puts W1's records (pipelined) then applies W1's updates in `mode`, timing both. The inputs are generated here,
 * untimed, and are garbage once this returns, so a heap measurement after it sees only what the collection holds.
 */
async function writeAll(c: ApiCollection, { sizes, seed }: WorkloadContext, mode: Mode) {
  const rows: ApiRecord[] = makeRecords(sizes.records, rng(seed, STREAM.records)).map(({ id, rec }) => ({ id, ...rec }))
  const updates = makeUpdates(sizes.w1Updates, sizes.records, rng(seed, STREAM.w1Updates))
  const insertMs = await putAll(c, rows)
  const updateMs = await updateAll(c, updates, mode)
  return { insertOpsPerSec: rate(rows.length, insertMs), updateOpsPerSec: rate(updates.length, updateMs) }
}

/** Lets the storage queue (compaction included) run dry: MemoryStorage works in promise callbacks only. */
const drain = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** Throws unless `target` holds W1's final records with no write pending. */
function checkLive(target: ApiTarget, ctx: WorkloadContext, mode: Mode): void {
  if (target.pending() !== 0) throw new Error(`${mode}: ${target.pending()} writes not durable after all resolved`)
  if (snapshot(target.collection, ctx.sizes.records) !== expectedW1Snapshot(ctx.sizes, ctx.seed)) {
    throw new Error(`${mode}: final API state differs from the expected records`)
  }
}

/** After close: throws unless a replica reopened from the target's storage holds W1's final records too. */
async function checkStored(target: ApiTarget, ctx: WorkloadContext, mode: Mode): Promise<void> {
  if (!target.reopen) return
  const again = await target.reopen()
  const same = snapshot(again.collection, ctx.sizes.records) === expectedW1Snapshot(ctx.sizes, ctx.seed)
  await again.close()
  if (!same) throw new Error(`${mode}: a replica reopened from the storage differs from the expected records`)
}

/** API: puts + updates through the collection API, pipelined, then awaited on a fresh replica; rates, heap, bytes. */
export async function runAPI(ctx: WorkloadContext): Promise<Metrics> {
  const open = ctx.system.name === 'syncmesh' ? await syncmeshOpener() : floorOpener()
  const baseline = heapAfterGcMB(ctx.system)

  // Pipelined first, in the fresh process: the rate with the target gets no warm-up from the other mode.
  const pipelined = await open()
  let rates: Awaited<ReturnType<typeof writeAll>>
  let heap: ReturnType<typeof heapAfterGcMB>
  try {
    rates = await writeAll(pipelined.collection, ctx, 'pipelined')
    await drain()
    heap = heapAfterGcMB(ctx.system)
    checkLive(pipelined, ctx, 'pipelined')
  } finally {
    await pipelined.close()
  }
  await checkStored(pipelined, ctx, 'pipelined')
  const storageBytes = pipelined.storageBytes?.()

  const awaited = await open()
  let awaitedRates: Awaited<ReturnType<typeof writeAll>>
  try {
    awaitedRates = await writeAll(awaited.collection, ctx, 'awaited')
    checkLive(awaited, ctx, 'awaited')
  } finally {
    await awaited.close()
  }
  await checkStored(awaited, ctx, 'awaited')

  return {
    insertOpsPerSec: rates.insertOpsPerSec,
    // The awaited replica's puts come after the pipelined replica's writes in this process: the write path is
    // compiled, the replica, store and storage are new.
    warmInsertOpsPerSec: awaitedRates.insertOpsPerSec,
    pipelinedOpsPerSec: rates.updateOpsPerSec,
    awaitedOpsPerSec: awaitedRates.updateOpsPerSec,
    groupSize: API_GROUP,
    heapMB: heap.heapMB,
    outsideHeapMB: heap.outsideHeapMB,
    baselineHeapMB: baseline.heapMB,
    ...(storageBytes !== undefined ? { storageBytes } : {}),
  }
}
