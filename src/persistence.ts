/**
 * How a replica keeps its state in a {@link Storage}: per writer slot, a snapshot plus an ordered log of deltas.
 *
 *   ['meta', 'peer']                  the replica's peer id (how transports know it)
 *   ['meta', 'writer']                the origin id its timestamps carry: one per storage history (see replica.ts)
 *   ['meta', 'gc']                    tombstone collection: the frontier and the known peers (JSON, see replica.ts)
 *   ['snapshot', S]                   slot 0: the whole state, covering slot 0's log entries ≤ S (16-digit sequence)
 *   ['log', N]                        slot 0: one delta (a batch of local writes, or one received from a peer), N > S
 *   ['tabs', k, 'snapshot', S]        slot k ≥ 1 (k in decimal): the same, for the replica holding slot k
 *   ['tabs', k, 'log', N]
 *   ['text', k, 'snapshot', S]        slot k ≥ 0: the text half of the state (a text delta, src/text/codec.ts), when
 *   ['text', k, 'log', N]             the replica keeps text; N shares the slot's sequence with the record log
 *
 * Text entries live under their own top-level key, which builds without text support (and replicas opened without
 * it) ignore and never remove: they open such a store as if it held no text.
 *
 * A store with one user at a time (LevelDB, a MemoryStorage) only ever has slot 0. On a shared store (tabs of one
 * IndexedDB database, see tabs/group.ts) each open replica holds a slot of its own, by lock, and writes and removes
 * only that slot's keys, so replicas never overwrite or delete each other's entries. Opening loads every slot (the
 * union of CRDT states is the state); a replica may take over the keys of a slot nobody holds ({@link
 * Persistence.absorb}) by writing a snapshot of its own that covers them before removing them.
 *
 * A snapshot of a store holding `memoryLayoutFrom` records or more is the store as it lies in memory
 * (RecordStore.encodeSnapshot: copied back in, not decoded record by record); a smaller store's, and every snapshot
 * of earlier builds, is the whole-state delta, which is always read. Builds from before the memory layout cannot
 * open a snapshot written in it.
 *
 * Every value is `u8 version=1 | 16-byte MurmurHash3 of the payload | payload`, so a corrupt or truncated value is
 * detected and reported as StorageCorruptError naming its key — never silently skipped. Compaction writes the new
 * snapshot before it removes the log entries and the snapshot it replaces, so a crash at any point loses nothing:
 * replaying a log entry the snapshot already holds is harmless (deltas are idempotent).
 */
import { DecodeError, InvalidArgumentError } from '../crdt/errors.js'
import { murmur3x128 } from '../crdt/hash.js'
import { RecordStore } from '../crdt/record-store.js'
import { StorageCorruptError } from './errors.js'
import type { Storage } from './storage/types.js'

const ENTRY_VERSION = 1
const PEER_KEY = ['meta', 'peer']
const WRITER_KEY = ['meta', 'writer']
const GC_KEY = ['meta', 'gc']

/** Options of the persistence layer. */
export interface PersistenceInit {
  /**
   * Compact once this many log entries accumulate (compaction also runs once the log outgrows the last snapshot,
   * which keeps its cost amortised: each byte of state is rewritten a bounded number of times).
   * @default 10_000
   */
  compactAfterEntries?: number
  /** Whether the replica keeps text: load, log and snapshot the `['text', …]` entries (otherwise left alone). */
  text?: boolean
  /**
   * Snapshots of a store holding at least this many records keep its in-memory layout (RecordStore.encodeSnapshot):
   * they load ~5× faster than a delta, and take up to a third more bytes after many overwrites (a delta numbers
   * timestamps more tightly). Smaller stores, where loading is quick anyway, are snapshotted as deltas.
   * @default 65_536
   */
  memoryLayoutFrom?: number
}

/** Where the text half of the state comes from when a snapshot is written. */
export interface TextSnapshotSource {
  encodeState(): Uint8Array
}

/** The log may grow to this many bytes before it is compacted, however small the snapshot. */
const MIN_COMPACT_BYTES = 256 * 1024

/** The key of one entry of slot `slot`. */
function seqKey(slot: number, kind: 'log' | 'snapshot', seq: number, text = false): string[] {
  const tail = [kind, seq.toString().padStart(16, '0')]
  return text ? ['text', String(slot), ...tail] : slot === 0 ? tail : ['tabs', String(slot), ...tail]
}

/** A stored value: `payload` behind the entry version and its checksum (see above). */
export function wrap(payload: Uint8Array): Uint8Array {
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

/** What a stored key is: an entry of some slot, identity (`undefined`), or not ours (`null`, ignored). */
function classify(key: string[], text: boolean): { slot: number; kind: 'log' | 'snapshot'; seq: number; text: boolean } | undefined | null {
  const top = key[0]
  if (top === 'meta') return undefined
  if (top === 'text') {
    if (!text) return null
    const slot = Number(key[1])
    const seq = Number(key[3])
    const ok = key.length === 4 && (key[2] === 'log' || key[2] === 'snapshot') && Number.isSafeInteger(seq) && seq >= 0
    if (!ok || !Number.isSafeInteger(slot) || slot < 0 || key[1] !== String(slot)) throw new StorageCorruptError(`unexpected storage key ${key.join('/')}`, key)
    return { slot, kind: key[2] as 'log' | 'snapshot', seq, text: true }
  }
  if (top !== 'log' && top !== 'snapshot' && top !== 'tabs') return null
  const slot = top === 'tabs' ? Number(key[1]) : 0
  const tail = top === 'tabs' ? key.slice(2) : key
  const seq = Number(tail[1])
  const ok = tail.length === 2 && (tail[0] === 'log' || tail[0] === 'snapshot') && Number.isSafeInteger(seq) && seq >= 0
  if (!ok || !Number.isSafeInteger(slot) || slot < 0 || (top === 'tabs' && (slot === 0 || key[1] !== String(slot)))) {
    throw new StorageCorruptError(`unexpected storage key ${key.join('/')}`, key)
  }
  return { slot, kind: tail[0] as 'log' | 'snapshot', seq, text: false }
}

/** The entries of one slot, as loaded. */
interface SlotEntries {
  snapshots: { key: string[]; data: Uint8Array; seq: number }[]
  logs: { key: string[]; data: Uint8Array; seq: number }[]
  textSnapshots: { key: string[]; data: Uint8Array; seq: number }[]
  textLogs: { key: string[]; data: Uint8Array; seq: number }[]
}

/** Loads and appends a replica's state; every write goes through one queue so the log keeps apply order. */
export class Persistence {
  private seq: number
  /** Log entries written since the current snapshot (they hold what it lacks). */
  private logCount: number
  private logBytes = 0
  /** An automatic compaction is queued and has not started yet. */
  private compactionQueued = false
  /** An automatic compaction waits for the next turn of the event loop (cleared by any compaction queued first). */
  private compactionTimer: ReturnType<typeof setTimeout> | undefined
  private snapshotBytes: number
  /** Keys that a snapshot has made redundant: removed after the next snapshot is durable. */
  private obsolete: string[][]
  private readonly compactAfter: number
  private readonly memoryLayoutFrom: number
  private queue: Promise<void> = Promise.resolve()
  private failed: unknown
  private readonly text: boolean
  /** The text state, once the replica has one (see {@link Persistence.attachText}). */
  private textSource: TextSnapshotSource | undefined

  private constructor(
    private readonly storage: Storage,
    /** The slot this replica writes (see the layout above). */
    readonly slot: number,
    state: { seq: number; logCount: number; snapshotBytes: number; obsolete: string[][] },
    init: PersistenceInit,
  ) {
    this.seq = state.seq
    this.logCount = state.logCount
    this.snapshotBytes = state.snapshotBytes
    this.obsolete = state.obsolete
    this.compactAfter = init.compactAfterEntries ?? 10_000
    this.memoryLayoutFrom = init.memoryLayoutFrom ?? 65_536
    this.text = init.text === true
  }

  /** Gives compaction the text state to snapshot (a replica that keeps text does this once it has built it). */
  attachText(source: TextSnapshotSource): void {
    this.textSource = source
  }

  /**
   * Opens the state held in `storage` (empty when new), writing as `slot` from now on. Every slot is loaded;
   * `others` lists the keys of the other slots (for {@link Persistence.absorb}). Throws StorageCorruptError on bad data.
   */
  static async open(
    storage: Storage,
    init: PersistenceInit & { slot?: number } = {},
  ): Promise<{
    persistence: Persistence
    store: RecordStore
    peerId: string | undefined
    writerId: string | undefined
    gc: string | undefined
    others: Map<number, string[][]>
    /** With `text`: the stored text deltas (checksums verified), every slot's snapshot then its later log, to apply in order. */
    text: Uint8Array[]
  }> {
    const mine = init.slot ?? 0
    // One range read: on IndexedDB that is one transaction, a consistent view even while other tabs compact.
    const all = await storage.loadRange([])
    let peerId: string | undefined
    let writerId: string | undefined
    let gc: string | undefined
    const slots = new Map<number, SlotEntries>()
    const withText = init.text === true
    for (const { key, data } of all) {
      const c = classify(key, withText)
      if (c === null) continue
      if (c === undefined) {
        if (key.length === 2 && key[1] === 'peer') peerId = new TextDecoder().decode(unwrap(key, data))
        else if (key.length === 2 && key[1] === 'writer') writerId = new TextDecoder().decode(unwrap(key, data))
        else if (key.length === 2 && key[1] === 'gc') gc = new TextDecoder().decode(unwrap(key, data))
        continue
      }
      let entries = slots.get(c.slot)
      if (!entries) slots.set(c.slot, (entries = { snapshots: [], logs: [], textSnapshots: [], textLogs: [] }))
      const list = c.text ? (c.kind === 'log' ? entries.textLogs : entries.textSnapshots) : c.kind === 'log' ? entries.logs : entries.snapshots
      list.push({ key, data, seq: c.seq })
    }
    // Every slot's newest snapshot first, then each slot's later log entries in order: a slot's log continues its own
    // snapshot, so its version vector entries advance over contiguous ranges (see RecordStore.apply).
    let store = new RecordStore()
    const covered = new Map<number, number>()
    for (const [slot, { snapshots }] of slots) {
      const latest = snapshots.at(-1)
      if (!latest) continue
      const empty = covered.size === 0
      covered.set(slot, latest.seq)
      store = decodeOrCorrupt(latest.key, () => loadSnapshot(store, empty, unwrap(latest.key, latest.data)))
    }
    const others = new Map<number, string[][]>()
    let state = { seq: -1, logCount: 0, snapshotBytes: 0, obsolete: [] as string[][] }
    const text: Uint8Array[] = []
    for (const [slot, { snapshots, logs, textSnapshots, textLogs }] of slots) {
      const base = covered.get(slot) ?? -1
      const obsolete = snapshots.slice(0, -1).map((e) => e.key) // left behind by a crash during compaction
      let seq = base
      let logCount = 0
      // The text entries: the newest text snapshot, then the text log after it (sorted by key, so by sequence).
      const textLatest = textSnapshots.at(-1)
      const textBase = textLatest?.seq ?? -1
      if (textLatest) text.push(unwrap(textLatest.key, textLatest.data))
      obsolete.push(...textSnapshots.map((e) => e.key))
      for (const { key, data, seq: n } of textLogs) {
        obsolete.push(key)
        if (n <= textBase) continue
        text.push(unwrap(key, data))
        seq = Math.max(seq, n)
        logCount++
      }
      for (const { key, data, seq: n } of logs) {
        obsolete.push(key)
        if (n <= base) continue // the snapshot already holds it (a crash during compaction)
        decodeOrCorrupt(key, () => store.applyEncoded(unwrap(key, data), undefined, false))
        seq = Math.max(seq, n)
        logCount++
      }
      const latest = snapshots.at(-1)
      if (latest) obsolete.push(latest.key)
      if (slot === mine) state = { seq, logCount, snapshotBytes: latest?.data.length ?? 0, obsolete }
      else others.set(slot, [...snapshots, ...logs, ...textSnapshots, ...textLogs].map((e) => e.key))
    }
    const persistence = new Persistence(storage, mine, state, init)
    return { persistence, store, peerId, writerId, gc, others, text }
  }

  /**
   * Takes over the keys of slots nobody holds any more: compacts now, so that this slot's snapshot holds what they
   * held (the store was loaded with them), and removes them once that snapshot is durable.
   */
  absorb(keys: readonly string[][], store: RecordStore): Promise<void> {
    this.obsolete.push(...keys)
    return this.scheduleCompaction(store)
  }

  /** Records the replica's peer id and writer id. */
  saveIdentity(peerId: string, writerId: string): Promise<void> {
    const text = (s: string): Uint8Array => wrap(new TextEncoder().encode(s))
    return this.enqueue(async () => {
      await this.storage.save(PEER_KEY, text(peerId))
      await this.storage.save(WRITER_KEY, text(writerId))
    })
  }

  /** Records the tombstone-collection state (see replica.ts). */
  saveGc(text: string): Promise<void> {
    return this.enqueue(() => this.storage.save(GC_KEY, wrap(new TextEncoder().encode(text))))
  }

  /** Appends one encoded delta; resolves once it is durable. `store` is compacted when the log grows long. */
  append(delta: Uint8Array, store: RecordStore): Promise<void> {
    return this.appendEntry(delta, store, false)
  }

  /** Appends one encoded text delta (see src/text/codec.ts); resolves once it is durable. */
  appendText(delta: Uint8Array, store: RecordStore): Promise<void> {
    if (!this.text) throw new InvalidArgumentError('appendText: this persistence was opened without text')
    return this.appendEntry(delta, store, true)
  }

  private appendEntry(delta: Uint8Array, store: RecordStore, text: boolean): Promise<void> {
    const key = seqKey(this.slot, 'log', ++this.seq, text)
    const done = this.enqueue(() => this.storage.save(key, wrap(delta)))
    this.obsolete.push(key)
    this.logBytes += delta.length
    // One automatic compaction queued at a time: it snapshots the store as it is when it runs, so it covers every
    // entry appended meanwhile. (Scheduling one per entry while the queue lags made a burst of large entries — a new
    // replica's full sync — encode the whole state once per entry.)
    this.logCount++
    // It starts on a later turn of the event loop, so that a burst of entries delivered together is absorbed by one.
    if (!this.compactionQueued && this.compactionTimer === undefined && (this.logCount >= this.compactAfter || this.logBytes >= Math.max(MIN_COMPACT_BYTES, this.snapshotBytes))) {
      this.compactionTimer = setTimeout(() => {
        this.compactionTimer = undefined
        this.compactionQueued = true
        void this.scheduleCompaction(store).catch(() => {})
      }, 0)
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

  /** Compacts now, whatever the log holds (a replica that became its tabs' leader does this: see tabs/group.ts). */
  compact(store: RecordStore): Promise<void> {
    return this.scheduleCompaction(store)
  }

  /**
   * Stops writing: every queued write not yet started, and every later one, rejects with `reason` instead (a
   * replica that lost its slot must not write the slot's keys any more; see tabs/group.ts).
   */
  stop(reason: Error): void {
    this.failed ??= reason
    clearTimeout(this.compactionTimer)
    this.compactionTimer = undefined
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
    clearTimeout(this.compactionTimer)
    this.compactionTimer = undefined
    this.seq = Math.max(this.seq, 0) // a slot with nothing logged yet snapshots as 0; its log continues at 1
    const key = seqKey(this.slot, 'snapshot', this.seq)
    const redundant = this.obsolete
    this.obsolete = this.text && this.textSource ? [key, seqKey(this.slot, 'snapshot', this.seq, true)] : [key]
    // Until the snapshot is written its size is not known: at most the last one plus the log it absorbs, which keeps
    // the next threshold growing with the state while writes outpace the queue.
    this.snapshotBytes += this.logBytes
    this.logCount = 0
    this.logBytes = 0
    return this.enqueue(() => {
      this.compactionQueued = false
      return this.writeSnapshot(store, key, redundant)
    })
  }

  /** Writes the snapshot, then (only once it is durable) removes what it replaces — atomically where possible. */
  private async writeSnapshot(store: RecordStore, key: string[], redundant: string[][]): Promise<void> {
    const snapshot = wrap(store.size >= this.memoryLayoutFrom ? store.encodeSnapshot() : store.encodeState())
    const puts = [{ key, data: snapshot }]
    if (this.text && this.textSource) puts.push({ key: seqKey(this.slot, 'snapshot', Number(key.at(-1)), true), data: wrap(this.textSource.encodeState()) })
    this.snapshotBytes = puts.reduce((n, p) => n + p.data.length, 0)
    // A key sharing the new snapshot's first two parts stays (on a shared store, a slot k ≥ 1 keeps its own entries:
    // another process may be loading them); text keys follow the same rule for their slot.
    const text = puts[1]?.key
    const own = (k: string[]): boolean => (k[0] === 'text' ? k[1] === String(this.slot) && (this.slot > 0 || sameKey(k, text!)) : k[0] === key[0] && k[1] === key[1])
    const stale = redundant.filter((k) => {
      // A snapshot written before the text state exists (absorbing a dead slot at open) holds no text: its text keys
      // wait for the next snapshot that does.
      if (k[0] === 'text' && !text) {
        if (this.text) this.obsolete.push(k)
        return false
      }
      return !own(k)
    })
    if (this.storage.batch) {
      await this.storage.batch([...puts.map((p) => ({ type: 'put' as const, ...p })), ...stale.map((k) => ({ type: 'del' as const, key: k }))])
      return
    }
    for (const p of puts) await this.storage.save(p.key, p.data)
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

function sameKey(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

/**
 * Loads a snapshot: a store's own layout (RecordStore.encodeSnapshot, what compaction writes) is copied in as it is
 * when `store` is still `empty` and merged through a delta otherwise (another slot's, a second tab's); a delta (what
 * builds before that format wrote) is merged. Returns the store that holds it.
 */
function loadSnapshot(store: RecordStore, empty: boolean, payload: Uint8Array): RecordStore {
  if (!RecordStore.isSnapshot(payload)) {
    store.applyEncoded(payload, undefined, false)
    return store
  }
  const loaded = RecordStore.decodeSnapshot(payload)
  if (empty) return loaded
  store.applyEncoded(loaded.encodeState(), undefined, false)
  return store
}

function decodeOrCorrupt<T>(key: string[], fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    if (err instanceof DecodeError) throw new StorageCorruptError(`storage entry ${key.join('/')} is corrupt: ${err.message}`, key, { cause: err })
    throw err
  }
}

