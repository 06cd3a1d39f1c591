/**
 * Store-and-forward, the replica's side: keeps a server's store of the room (a {@link RoomStoreLink}, e.g.
 * `relayTransport({ url, store: true })` against `syncmesh serve --store …`) holding this replica's writes, and
 * catches up from it on every join, so devices that are never online together still sync.
 *
 * The server is a blind member: it keeps numbered blobs and never reads them. A blob is one encoded delta (the
 * format of crdt/delta.ts, with its `from`/`to` vectors, so a receiver advances its version vector only over
 * contiguous ranges exactly as with a peer):
 *
 * ```
 * plain room:      0xB0  delta
 * encrypted room:  0xB1  AES-256-GCM( u32 len · delta · zero padding to PADMÉ(4 + len) )   (nonce and tag inside)
 *                  aad = "syncmesh/blob/v1" 0x00 topic
 * ```
 *
 * - **Upload.** Once a batch of local writes is durable locally (the same moment it is sent to peers), it is
 *   uploaded. An upload counts once the server acknowledged it (after storing it durably): the newest acknowledged own
 *   write is remembered per store (`uploaded`), and on every join the replica uploads its own writes newer than that
 *   in one delta. So writes made offline, or whose upload a crash or a lost connection interrupted, are uploaded
 *   later; nothing is lost, at worst something is uploaded twice (deltas are idempotent). Only a replica's own
 *   writes are uploaded: every member uploads its own, and compaction (below) folds in anything else it holds.
 * - **Catch-up.** The server numbers blobs 1, 2, 3…; the replica keeps a cursor per store (`storeId`), the last
 *   number it has applied, and on every join fetches what follows it. The cursor is saved only after what it
 *   covers is durable in the replica's storage. A replica's own acknowledged uploads that directly follow its cursor
 *   move the cursor too (it holds them already), so a lone writer never downloads its own writes.
 *   A cursor is all the server learns about what a member holds: no version vector, writer id or timestamp is in
 *   clear. The cost is that a member that was online while others wrote re-fetches, on its next join, what it got
 *   live since its cursor (bounded by compaction).
 * - **Compaction.** When the room's stored bytes pass `max(compactMinBytes, 2 × the last snapshot)`, a member that
 *   is caught up (cursor = head) uploads its whole state as a snapshot (sealed and padded like any blob, cut into
 *   parts) that replaces every blob up to its cursor. Its state holds everything those blobs hold, so nothing is
 *   lost, and the room's storage stays below about twice its state, whatever the history.
 */
import { type Delta, decodeDelta } from '../../crdt/delta.js'
import { SyncmeshError, asError } from '../../crdt/errors.js'
import type { RecordStore } from '../../crdt/record-store.js'
import { type Timestamp, compareTimestamps } from '../../crdt/timestamp.js'
import { AuthError } from '../../transports/errors.js'
import type { RoomCipher, RoomStoreInfo, RoomStoreLink } from '../../transports/types.js'
import { encodeDeltaParts } from './protocol.js'

/** First byte of a plain blob (the relay spec's Store section; the server refuses other first bytes). */
export const BLOB_PLAIN = 0xb0
/** First byte of a blob sealed with the room key. */
export const BLOB_SEALED = 0xb1

/** What the store sync needs from its replica. */
export interface StoreSyncHost {
  /** The room topic (bound into every sealed blob). */
  readonly topic: string
  /** The origin id of this replica's own writes. */
  readonly writerId: string
  /** The room key in an encrypted room. */
  readonly cipher: RoomCipher | undefined
  readonly store: RecordStore
  /** The newest own write that is durable locally. */
  durable(): Timestamp | undefined
  /** Applies a delta from the store; resolves once it is durable locally. Throws (e.g. ClockDriftError) to refuse it. */
  apply(bytes: Uint8Array): Promise<void>
  /** Tells the peers about new state (after a catch-up changed something). */
  changed(): void
  load(key: string[]): Promise<Uint8Array | undefined>
  save(key: string[], data: Uint8Array): Promise<void>
  error(err: Error): void
}

/** Options of {@link storeSync}. */
export interface StoreSyncInit {
  /**
   * A room's stored bytes below which no member compacts it.
   * @default 65536
   */
  compactMinBytes?: number
}

/**
 * Store-and-forward support for `createReplica({ storeSync })`, made by {@link storeSync}. Opaque: the replica
 * creates one store sync per transport that reaches a server's store.
 */
export interface StoreSyncSupport {
  /** Creates the store sync of one transport's store (called by the replica). */
  readonly create: (link: RoomStoreLink, host: StoreSyncHost) => StoreSync
}

/**
 * Store-and-forward with a server's store: pass it as `createReplica({ storeSync: storeSync() })` beside a transport
 * that reaches one (`relayTransport({ url, store: true })` against `syncmesh serve --store …`). The replica then
 * uploads its writes to the store and catches up from it on every join (see the module comment). A separate option
 * so that apps without a store do not bundle this module.
 *
 * ```ts
 * import { createReplica, storeSync } from 'syncmesh'
 * const replica = await createReplica({ transports: [relayTransport({ url, store: true })], storeSync: storeSync() })
 * ```
 */
export function storeSync(init: StoreSyncInit = {}): StoreSyncSupport {
  return { create: (link, host) => new StoreSync(link, host, init) }
}

/** The padded length of a `len`-byte plaintext: PADMÉ (Nikitin et al., 2019), at most ~12 % more, leaking O(log log len) bits. */
export function padme(len: number): number {
  if (len < 2) return len
  const e = Math.floor(Math.log2(len))
  const s = Math.floor(Math.log2(e)) + 1
  const mask = 2 ** (e - s) - 1
  return Math.ceil(len / (mask + 1)) * (mask + 1)
}

const encoder = new TextEncoder()

function blobAad(topic: string): Uint8Array {
  return encoder.encode(`syncmesh/blob/v1\u0000${topic}`)
}

/** Wraps an encoded delta as a blob: plain, or padded and sealed with the room key. */
export async function sealBlob(delta: Uint8Array, topic: string, cipher: RoomCipher | undefined): Promise<Uint8Array> {
  if (!cipher) {
    const out = new Uint8Array(delta.byteLength + 1)
    out[0] = BLOB_PLAIN
    out.set(delta, 1)
    return out
  }
  const plain = new Uint8Array(padme(4 + delta.byteLength))
  new DataView(plain.buffer).setUint32(0, delta.byteLength)
  plain.set(delta, 4)
  const sealed = await cipher.seal(plain, blobAad(topic))
  const out = new Uint8Array(sealed.byteLength + 1)
  out[0] = BLOB_SEALED
  out.set(sealed, 1)
  return out
}

/** The encoded delta inside a blob; rejects with AuthError when it does not open (or is plain in an encrypted room). */
export async function openBlob(blob: Uint8Array, topic: string, cipher: RoomCipher | undefined): Promise<Uint8Array> {
  if (blob[0] === BLOB_PLAIN && !cipher) return blob.subarray(1)
  if (blob[0] !== BLOB_SEALED || !cipher) {
    throw new AuthError(cipher ? 'a stored blob is not sealed in an encrypted room' : 'a stored blob is sealed: this room has no secret')
  }
  const plain = await cipher.open(blob.subarray(1), blobAad(topic))
  const len = plain.byteLength >= 4 ? new DataView(plain.buffer, plain.byteOffset).getUint32(0) : -1
  if (len < 0 || 4 + len > plain.byteLength) throw new AuthError('a stored blob opened but its length is wrong')
  return plain.subarray(4, 4 + len)
}

/** The largest encoded delta whose blob fits `maxBlobBytes` (after padding and sealing). */
export function deltaBudget(maxBlobBytes: number, sealed: boolean): number {
  return sealed ? Math.floor((maxBlobBytes - 1 - 28) / 1.13) - 4 : maxBlobBytes - 1
}

interface SavedState {
  cursor: number
  writer: string
  uploaded: Timestamp | undefined
  snapshotBytes: number
}

/** Keeps one store in step with one replica; see the module comment. */
export class StoreSync {
  private state: SavedState | undefined
  private storeId: string | undefined
  private session = 0
  /** Work of a session runs one step at a time (sealing and sending keep the order of local flushes). */
  private chain: Promise<void> = Promise.resolve()
  /** Acknowledgements still awaited. */
  private readonly inflight = new Set<Promise<unknown>>()
  private compacting = false
  /** Flushes of local writes waiting to be uploaded. */
  private queued: { parts: readonly Uint8Array[]; upto: Timestamp }[] = []
  private draining = false
  /** The newest own write handed to the store in this session (acknowledged or not). */
  private queuedUpto: Timestamp | undefined
  private off: (() => void) | undefined
  private saveTimer: ReturnType<typeof setTimeout> | undefined
  private readonly compactMinBytes: number
  /** Counters, for tests and benchmarks. */
  readonly stats = { uploaded: 0, uploadedBytes: 0, fetched: 0, fetchedBytes: 0, compactions: 0, roomBytes: 0, cursor: 0 }

  constructor(
    private readonly link: RoomStoreLink,
    private readonly host: StoreSyncHost,
    init: StoreSyncInit = {},
  ) {
    this.compactMinBytes = init.compactMinBytes ?? 64 * 1024
  }

  /** Listens for joins (call before the transport starts). */
  start(): void {
    this.off = this.link.onReady((info) => this.ready(info))
  }

  /** Waits (at most `timeoutMs`) for uploads in flight to be acknowledged, then stops and saves the cursor. */
  async stop(timeoutMs = 2000): Promise<void> {
    const deadline = new Promise((r) => setTimeout(r, timeoutMs).unref?.())
    await Promise.race([this.chain.then(() => Promise.allSettled([...this.inflight])), deadline])
    this.off?.()
    this.session++
    clearTimeout(this.saveTimer)
    await this.save().catch((err: unknown) => this.host.error(asError(err)))
  }

  /** Resolves once nothing is queued, running or awaiting an answer (for tests and benchmarks). */
  async idle(): Promise<void> {
    while (this.pending > 0 || this.compacting) {
      await this.chain
      await Promise.allSettled([...this.inflight])
      await new Promise((r) => setTimeout(r, 1))
    }
    await this.chain
  }

  /** Whether the store has acknowledged every own write that is durable here (and nothing is in flight). */
  get uploadedAll(): boolean {
    const durable = this.host.durable()
    const uploaded = this.state?.uploaded
    if (this.link.info === undefined || this.state === undefined || this.pending > 0) return false
    return durable === undefined || (uploaded !== undefined && compareTimestamps(uploaded, durable) >= 0)
  }

  /** Uploads queued, being sealed or waiting for their acknowledgement. */
  get pending(): number {
    return this.inflight.size + this.queued.length + (this.draining ? 1 : 0)
  }

  /** A batch of local writes is durable locally: upload it (when joined to the store). */
  pushLocal(parts: readonly Uint8Array[], upto: Timestamp | undefined): void {
    if (this.link.info === undefined || this.state === undefined || upto === undefined) return
    this.queued.push({ parts, upto })
    if (this.draining) return
    this.draining = true
    const s = this.session
    this.step(s, () => this.drain(s))
  }

  /**
   * Uploads the queued flushes. A backlog (writes faster than the store answers, or than the relay's rate limit
   * lets uploads through) goes as one delta of every own write since the last upload: one blob instead of many.
   */
  private async drain(s: number): Promise<void> {
    try {
      while (this.queued.length > 0 && s === this.session) {
        const batch = this.queued.splice(0)
        if (batch.length <= 4) {
          await this.upload(s, batch.flatMap((b) => b.parts), batch[batch.length - 1]!.upto)
        } else {
          const durable = this.host.durable()
          if (durable) await this.uploadSince(s, this.queuedUpto, durable)
        }
      }
    } finally {
      this.draining = false
    }
  }

  /** Uploads every own write newer than `from`, up to the durable `to`, as one delta (cut to fit blobs). */
  private async uploadSince(s: number, from: Timestamp | undefined, to: Timestamp): Promise<void> {
    if (from && compareTimestamps(to, from) <= 0) return
    const base = this.host.store.versionVector()
    if (from) base.set(this.host.writerId, from)
    else base.delete(this.host.writerId)
    const delta = this.host.store.changesSince(base, to)
    if (delta.records.length > 0) await this.upload(s, this.cut(delta), to)
  }

  private ready(info: RoomStoreInfo): void {
    const s = ++this.session
    this.stats.roomBytes = info.bytes
    // Work of the previous session that never ran is covered by this one's catch-up upload.
    this.queued = []
    this.draining = false
    this.compacting = false
    this.step(s, async () => {
      await this.load(info.storeId)
      await this.catchUp(s)
      this.queuedUpto = this.state!.uploaded
      const durable = this.host.durable()
      if (durable) await this.uploadSince(s, this.state!.uploaded, durable)
    })
  }

  private step(s: number, fn: () => Promise<void>): void {
    this.chain = this.chain.then(async () => {
      if (s !== this.session) return
      try {
        await fn()
      } catch (err) {
        if (s === this.session) this.report(err)
      }
    })
  }

  private report(err: unknown): void {
    const e = asError(err)
    // A lost connection is not news (the transport reports it); the next join resumes.
    if (e instanceof SyncmeshError && (e.code === 'TRANSPORT' || e.code === 'TRANSPORT_STATE')) return
    this.host.error(e)
  }

  private async load(storeId: string): Promise<void> {
    if (this.storeId === storeId && this.state) return
    await this.save() // the previous store's cursor
    const raw = await this.host.load(['store', storeId])
    let state: SavedState | undefined
    try {
      state = raw ? (JSON.parse(new TextDecoder().decode(raw)) as SavedState) : undefined
    } catch {
      state = undefined // unreadable: start over (costs a full fetch and upload, loses nothing)
    }
    if (!state || state.writer !== this.host.writerId) state = { cursor: 0, writer: this.host.writerId, uploaded: undefined, snapshotBytes: 0 }
    this.storeId = storeId
    this.state = state
    this.stats.cursor = state.cursor
  }

  private async save(): Promise<void> {
    if (!this.state || !this.storeId) return
    await this.host.save(['store', this.storeId], encoder.encode(JSON.stringify(this.state)))
  }

  private saveSoon(): void {
    if (this.saveTimer !== undefined) return
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined
      this.save().catch((err: unknown) => this.host.error(asError(err)))
    }, 200)
    this.saveTimer.unref?.()
  }

  /** Fetches and applies everything after the cursor; the cursor moves once what it covers is durable. */
  private async catchUp(s: number): Promise<void> {
    let changed = false
    for (;;) {
      const page = await this.link.fetch(this.state!.cursor)
      if (s !== this.session) return
      const applied: Promise<void>[] = []
      for (const { blob } of page.blobs) {
        this.stats.fetched++
        this.stats.fetchedBytes += blob.byteLength
        try {
          const bytes = await openBlob(blob, this.host.topic, this.host.cipher)
          applied.push(this.host.apply(bytes))
          changed = true
        } catch (err) {
          this.host.error(asError(err)) // a blob that does not open or decode changes nothing; the others still apply
        }
      }
      await Promise.all(applied)
      if (s !== this.session) return
      this.state!.cursor = Math.max(this.state!.cursor, page.upto)
      this.stats.cursor = this.state!.cursor
      this.stats.roomBytes = page.bytes
      await this.save()
      if (!page.more) break
    }
    if (changed) this.host.changed()
    this.maybeCompact(s)
  }

  /** A delta cut into encoded parts that each fit one blob. */
  private cut(delta: Delta): Uint8Array[] {
    return encodeDeltaParts(delta, deltaBudget(this.link.maxBlobBytes, this.host.cipher !== undefined))
  }

  /** Seals and sends `parts` (own writes up to `upto`), in order; `uploaded` moves once all are acknowledged. */
  private async upload(s: number, parts: readonly Uint8Array[], upto: Timestamp): Promise<void> {
    const budget = deltaBudget(this.link.maxBlobBytes, this.host.cipher !== undefined)
    let fitted: Uint8Array[] = []
    for (const p of parts) {
      if (p.byteLength <= budget) fitted.push(p)
      else fitted = fitted.concat(this.cut(decodeDelta(p)))
    }
    const blobs = await Promise.all(fitted.map((p) => sealBlob(p, this.host.topic, this.host.cipher)))
    if (s !== this.session) return
    if (!this.queuedUpto || compareTimestamps(upto, this.queuedUpto) > 0) this.queuedUpto = upto
    const acks = Promise.all(blobs.map((b) => this.link.put(b)))
    this.inflight.add(acks)
    acks.then(
      (results) => {
        this.inflight.delete(acks)
        if (s !== this.session || !this.state) return
        const st = this.state
        if (!st.uploaded || compareTimestamps(upto, st.uploaded) > 0) st.uploaded = upto
        for (const r of results) {
          this.stats.uploaded++
          if (r.seq === st.cursor + 1) st.cursor = r.seq // right after our cursor: we hold it, nothing to fetch
        }
        this.stats.uploadedBytes += blobs.reduce((n, b) => n + b.byteLength, 0)
        this.stats.cursor = st.cursor
        this.stats.roomBytes = results[results.length - 1]?.bytes ?? this.stats.roomBytes
        this.saveSoon()
        this.maybeCompact(s)
      },
      (err: unknown) => {
        this.inflight.delete(acks)
        if (s === this.session) this.report(err)
      },
    )
  }

  /** Compacts the room now, whatever its size (benchmarks, tests, an app that knows better); resolves when done. */
  async compact(): Promise<void> {
    await this.idle()
    if (!this.state) return
    this.maybeCompact(this.session, true)
    await this.idle()
  }

  /** Compacts the room when its stored bytes have grown past twice the last snapshot (see the module comment). */
  private maybeCompact(s: number, force = false): void {
    const st = this.state
    if (!st || this.compacting || s !== this.session) return
    if (!force && this.stats.roomBytes < Math.max(this.compactMinBytes, 2 * st.snapshotBytes)) return
    this.compacting = true
    this.step(s, async () => {
      try {
        await this.catchUp(s) // its own compaction check returns at once: we are compacting
        if (s !== this.session) return
        const durable = this.host.durable() ?? { wall: -1, counter: 0, peer: this.host.writerId }
        const parts = this.cut(this.host.store.changesSince(new Map(), durable))
        const blobs = await Promise.all(parts.map((p) => sealBlob(p, this.host.topic, this.host.cipher)))
        const size = blobs.reduce((n, b) => n + b.byteLength, 0)
        st.snapshotBytes = size
        if (!force && this.stats.roomBytes <= 1.25 * size) return // not worth it yet: wait for twice this
        const res = await this.link.compact(st.cursor, blobs)
        if (res.applied) this.stats.compactions++
        this.stats.roomBytes = res.bytes
        this.saveSoon()
      } finally {
        this.compacting = false
      }
    })
  }
}
