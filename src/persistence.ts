/**
 * How a replica keeps its state in a {@link Storage}: a snapshot plus an ordered log of deltas.
 *
 *   ['meta', 'peer']            the replica's peer id (how transports know it)
 *   ['meta', 'writer']          the origin id its timestamps carry: one per storage history (see replica.ts)
 *   ['snapshot', S]             the whole state, covering log entries ≤ S (S: 16-digit zero-padded sequence)
 *   ['log', N]                  one delta (a batch of local writes, or one received from a peer), N > S
 *
 * Every value is `u8 version=1 | 16-byte MurmurHash3 of the payload | payload`, so a corrupt or truncated value is
 * detected and reported as StorageCorruptError naming its key — never silently skipped. Compaction writes the new
 * snapshot before it removes the log entries and the snapshot it replaces, so a crash at any point loses nothing:
 * replaying a log entry the snapshot already holds is harmless (deltas are idempotent).
 */
import { DecodeError } from '../crdt/errors.js'
import { decodeDelta } from '../crdt/delta.js'
import { murmur3x128 } from '../crdt/hash.js'
import { RecordStore } from '../crdt/record-store.js'
import { StorageCorruptError } from './errors.js'
import type { Storage } from './storage/types.js'

const ENTRY_VERSION = 1
const PEER_KEY = ['meta', 'peer']
const WRITER_KEY = ['meta', 'writer']

/** Options of the persistence layer. */
export interface PersistenceInit {
  /**
   * Compact once this many log entries accumulate (compaction also runs once the log outgrows the last snapshot,
   * which keeps its cost amortised: each byte of state is rewritten a bounded number of times).
   * @default 10_000
   */
  compactAfterEntries?: number
}

/** The log may grow to this many bytes before it is compacted, however small the snapshot. */
const MIN_COMPACT_BYTES = 256 * 1024

const seqKey = (kind: 'log' | 'snapshot', seq: number): string[] => [kind, seq.toString().padStart(16, '0')]

function wrap(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(payload.length + 17)
  out[0] = ENTRY_VERSION
  const h = murmur3x128(payload)
  const view = new DataView(out.buffer)
  for (let i = 0; i < 4; i++) view.setUint32(1 + 4 * i, h[i]!, true)
  out.set(payload, 17)
  return out
}

function unwrap(key: string[], data: Uint8Array): Uint8Array {
  if (data.length < 17 || data[0] !== ENTRY_VERSION) {
    throw new StorageCorruptError(`storage entry ${key.join('/')} is truncated or has an unknown version`, key)
  }
  const payload = data.subarray(17)
  const h = murmur3x128(payload)
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  for (let i = 0; i < 4; i++) {
    if (view.getUint32(1 + 4 * i, true) !== h[i]) throw new StorageCorruptError(`storage entry ${key.join('/')} fails its checksum`, key)
  }
  return payload
}

async function loadText(storage: Storage, key: string[]): Promise<string | undefined> {
  const raw = await storage.load(key)
  return raw && new TextDecoder().decode(unwrap(key, raw))
}

function parseSeq(key: string[]): number {
  const seq = Number(key[1])
  if (key.length !== 2 || !Number.isSafeInteger(seq) || seq < 0) throw new StorageCorruptError(`unexpected storage key ${key.join('/')}`, key)
  return seq
}

/** Loads and appends a replica's state; every write goes through one queue so the log keeps apply order. */
export class Persistence {
  private seq: number
  /** Log entries written since the current snapshot (they hold what it lacks). */
  private logCount: number
  private logBytes = 0
  private snapshotBytes: number
  /** Keys that a snapshot has made redundant: removed after the next snapshot is durable. */
  private obsolete: string[][]
  private readonly compactAfter: number
  private queue: Promise<void> = Promise.resolve()
  private failed: unknown

  private constructor(
    private readonly storage: Storage,
    state: { seq: number; logCount: number; snapshotBytes: number; obsolete: string[][] },
    init: PersistenceInit,
  ) {
    this.seq = state.seq
    this.logCount = state.logCount
    this.snapshotBytes = state.snapshotBytes
    this.obsolete = state.obsolete
    this.compactAfter = init.compactAfterEntries ?? 10_000
  }

  /** Opens the state held in `storage` (empty when new). Throws StorageCorruptError on bad data. */
  static async open(
    storage: Storage,
    init: PersistenceInit = {},
  ): Promise<{ persistence: Persistence; store: RecordStore; peerId: string | undefined; writerId: string | undefined }> {
    const peerId = await loadText(storage, PEER_KEY)
    const writerId = await loadText(storage, WRITER_KEY)
    let store = new RecordStore()
    let covered = -1
    const snapshots = await storage.loadRange(['snapshot'])
    const latest = snapshots.at(-1)
    const obsolete = snapshots.slice(0, -1).map((e) => e.key) // left behind by a crash during compaction
    if (latest) {
      covered = parseSeq(latest.key)
      store = decodeOrCorrupt(latest.key, () => RecordStore.decodeState(unwrap(latest.key, latest.data)))
    }
    let seq = covered
    let logCount = 0
    for (const { key, data } of await storage.loadRange(['log'])) {
      const n = parseSeq(key)
      if (n <= covered) {
        obsolete.push(key) // the snapshot already holds it (a crash during compaction)
        continue
      }
      decodeOrCorrupt(key, () => store.apply(decodeDelta(unwrap(key, data))))
      seq = n
      logCount++
      obsolete.push(key)
    }
    if (latest) obsolete.push(latest.key)
    const persistence = new Persistence(storage, { seq, logCount, snapshotBytes: latest?.data.length ?? 0, obsolete }, init)
    return { persistence, store, peerId, writerId }
  }

  /** Records the replica's peer id and writer id. */
  saveIdentity(peerId: string, writerId: string): Promise<void> {
    const text = (s: string): Uint8Array => wrap(new TextEncoder().encode(s))
    return this.enqueue(async () => {
      await this.storage.save(PEER_KEY, text(peerId))
      await this.storage.save(WRITER_KEY, text(writerId))
    })
  }

  /** Appends one encoded delta; resolves once it is durable. `store` is compacted when the log grows long. */
  append(delta: Uint8Array, store: RecordStore): Promise<void> {
    const key = seqKey('log', ++this.seq)
    const done = this.enqueue(() => this.storage.save(key, wrap(delta)))
    this.obsolete.push(key)
    this.logBytes += delta.length
    if (++this.logCount >= this.compactAfter || this.logBytes >= Math.max(MIN_COMPACT_BYTES, this.snapshotBytes)) {
      void this.scheduleCompaction(store).catch(() => {})
    }
    return done
  }

  /**
   * Compacts now if the log holds anything (a replica does this on close, so that the next open decodes one
   * snapshot instead of replaying a log).
   */
  compactIfLogged(store: RecordStore): Promise<void> {
    return this.logCount > 0 ? this.scheduleCompaction(store) : this.flush()
  }

  /** Resolves when every queued write is durable; rejects with the first storage failure. */
  flush(): Promise<void> {
    return this.enqueue(async () => {})
  }

  /**
   * Queues a snapshot covering every log entry written so far. The keys it makes redundant are taken now, and
   * its own key is registered now as redundant for the next snapshot: the queue runs in order, so no removal
   * can overtake the save it depends on, however compactions overlap.
   */
  private scheduleCompaction(store: RecordStore): Promise<void> {
    const key = seqKey('snapshot', this.seq)
    const redundant = this.obsolete
    this.obsolete = [key]
    this.logCount = 0
    this.logBytes = 0
    return this.enqueue(() => this.compact(store, key, redundant))
  }

  /** Writes the snapshot, then (only once it is durable) removes what it replaces — atomically where possible. */
  private async compact(store: RecordStore, key: string[], redundant: string[][]): Promise<void> {
    const snapshot = wrap(store.encodeState())
    this.snapshotBytes = snapshot.length
    const stale = redundant.filter((k) => k[0] !== key[0] || k[1] !== key[1])
    if (this.storage.batch) {
      await this.storage.batch([{ type: 'put', key, data: snapshot }, ...stale.map((k) => ({ type: 'del' as const, key: k }))])
      return
    }
    await this.storage.save(key, snapshot)
    for (const k of stale) await this.storage.remove(k)
  }

  private enqueue(task: () => Promise<void>): Promise<void> {
    const run = this.queue.then(() => {
      if (this.failed !== undefined) throw this.failed
      return task()
    })
    this.queue = run.catch((err: unknown) => {
      this.failed ??= err
    })
    return run
  }
}

function decodeOrCorrupt<T>(key: string[], fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    if (err instanceof DecodeError) throw new StorageCorruptError(`storage entry ${key.join('/')} is corrupt: ${err.message}`, key, { cause: err })
    throw err
  }
}

