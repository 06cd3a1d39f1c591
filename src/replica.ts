import { sha256 } from '@noble/hashes/sha2.js'
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js'
import { InvalidArgumentError, InvalidValueError, asError } from '../crdt/errors.js'
import { HLC } from '../crdt/hlc.js'
import type { StoredRecord } from '../crdt/record-store.js'
import { type RecordStore } from '../crdt/record-store.js'
import type { Timestamp } from '../crdt/timestamp.js'
import { MAX_VALUE_DEPTH, type Value } from '../crdt/value.js'
import { AuthError } from '../transports/errors.js'
import type { PeerId, RoomCipher, RoomContext, Transport } from '../transports/types.js'
import { AuthErrorThrottle, type RoomSecret, roomCipher } from './crypto/room-key.js'
import { MessageTooLargeError, ReplicaClosedError, TextUnavailableError } from './errors.js'
import { Persistence } from './persistence.js'
import { type ConflictRecord, type InspectEvent, type ReplicaInspection, Ring, sumTraffic, vectorSnapshot } from './inspect.js'
import { MemoryStorage } from './storage/memory.js'
import type { Storage } from './storage/types.js'
import { type PeerStatus, SyncEngine, slotWriterId, writerIdFor } from './sync/engine.js'
import type { StoreSync, StoreSyncSupport } from './sync/store-sync.js'
import { GatedTransport } from './sync/gate.js'
import { decodeGcState, encodeGcState } from './sync/gc-state.js'
import { sealedTransport } from './crypto/sealed.js'
import { TabGroup, claimSlot, sharedContext } from './tabs/group.js'
import { DEFAULT_MAX_MESSAGE_BYTES } from './sync/protocol.js'
import type { RecordTextChange, TextDelta, TextState, TextSupport } from './text/types.js'

/** Options of {@link createReplica}; `X` is the type of text fields (`Y.Text` with `yjsText()`). */
export interface ReplicaInit<X = unknown> {
  /**
   * This replica's id, unique among its peers. Persisted in storage on first use.
   * @default the stored id, else a random 128-bit hex id
   */
  peerId?: string
  /**
   * Where the replica keeps its state; resolved writes are durable there. The replica owns it: `close()` closes it.
   * @default an in-memory store (nothing survives the process)
   */
  storage?: Storage
  /**
   * How the replica reaches its peers, in order of preference.
   * @default none (offline)
   */
  transports?: Transport[]
  /**
   * Which peers to sync with. Transports see only a hash of `app` and `room`, never the name itself.
   * @default 'default'
   */
  room?: string
  /**
   * Application namespace mixed into the room hash, so unrelated apps that pick the same room name never meet.
   * @default 'syncmesh'
   */
  app?: string
  /**
   * Encrypts the room: every sync frame on every transport, signaling payloads and discovery announcements are
   * sealed (AES-256-GCM) with a key derived from this secret, the app and the room (PBKDF2-SHA256, 600 000
   * iterations through WebCrypto, a few hundred ms the first time in a process). Peers with another secret meet the
   * room but cannot read or write it: each side gets an `AuthError` on `'error'`. A non-empty string or non-empty bytes.
   * @default none (frames travel as they are; transports may still encrypt their links)
   */
  secret?: RoomSecret
  /** The hybrid logical clock's physical clock and drift bound (see {@link HLCInit}). */
  clock?: { now?: () => number; maxDriftMs?: number }
  /**
   * Where new ids (a random peer id, a new storage history's origin id) get their randomness: a function returning
   * numbers in [0, 1), as `Math.random` does. Inject a seeded one for deterministic tests.
   * @default the platform's cryptographic random source
   */
  random?: () => number
  /**
   * Largest sync message accepted from a peer or produced for one, after reassembly.
   * @default 1_048_576 (1 MiB)
   */
  maxMessageBytes?: number
  /**
   * Interval (ms) of anti-entropy rounds, which repair anything a lossy transport dropped; 0 disables them.
   * @default 5_000
   */
  antiEntropyMs?: number
  /**
   * Compact the storage log once this many entries accumulate (it is also compacted once it outgrows the snapshot).
   * @default 10_000
   */
  compactAfterEntries?: number
  /**
   * Tombstone collection: a delete or field removal is dropped once every peer this replica knows has acknowledged
   * it. A known peer silent for longer than this (ms) no longer holds collection back; if it returns, it rebases
   * (see "Tombstones" in the README for what it then loses). `Infinity` waits for every known peer forever.
   * Replicas on a shared store (tabs on one IndexedDB database) do not collect yet.
   * @default 2_592_000_000 (30 days)
   */
  tombstoneHorizonMs?: number
  /**
   * Store-and-forward with a server's store: `storeSync()` (from `syncmesh`; options: `storeSync({ compactMinBytes })`).
   * Needed when a transport reaches a store (`relayTransport({ url, store: true })`): createReplica refuses such a
   * transport without it (InvalidArgumentError). A separate option so that apps without a store do not bundle the
   * store client. See src/sync/store-sync.ts.
   * @default none
   */
  storeSync?: StoreSyncSupport
  /**
   * Collaborative text fields: `yjsText()` from `syncmesh/text` (which loads yjs). Without it, `collection.text()`
   * throws TextUnavailableError, and text sent by peers is neither kept nor forwarded (see the README, "Text fields").
   * @default none
   */
  text?: TextSupport<X>
  /** How much {@link Replica.inspect} and {@link Replica.conflicts} remember. */
  inspect?: {
    /**
     * Events kept for `inspect().events`.
     * @default 100
     */
    events?: number
    /**
     * Lost values kept for `conflicts()`.
     * @default 100
     */
    conflicts?: number
  }
}

/** A record as stored in a collection: a plain object with a string `id`. */
export type RecordShape = { id: string }

/** One changed record, as `subscribe` and the `change` event report it. */
export interface RecordChangeEvent<T = StoredRecord> {
  readonly type: 'added' | 'updated' | 'deleted'
  readonly collection: string
  readonly id: string
  /** The record now (undefined when deleted). */
  readonly record: T | undefined
  /** Whether this replica made the change or received it from a peer. */
  readonly origin: 'local' | 'remote'
  /**
   * Changes of the record's text fields (replicas with `text`): per field, the Yjs delta of its content (an empty
   * delta when only the field's liveness changed). Absent when no text field changed.
   */
  readonly text?: { readonly [field: string]: TextDelta }
}

/** A write that lost to a different value written by another peer, as the `conflict` event reports it. */
export interface ConflictEvent {
  readonly collection: string
  readonly id: string
  readonly field: string
  readonly winner: { readonly value: Value | undefined; readonly timestamp: Timestamp }
  readonly loser: { readonly value: Value | undefined; readonly timestamp: Timestamp }
}

/** Handlers of {@link Replica.on}. */
export interface ReplicaEvents {
  change: (changes: readonly RecordChangeEvent[]) => void
  'peer:join': (peer: string) => void
  'peer:leave': (peer: string) => void
  /** A peer now holds exactly what this replica holds. */
  sync: (peer: string) => void
  conflict: (conflict: ConflictEvent) => void
  /** Bad input from a peer, a clock far ahead, a storage failure: typed errors, never thrown at the caller. */
  error: (error: Error, context: { peer?: string }) => void
}

/** What {@link Replica.status} returns. */
export interface ReplicaStatus {
  readonly peerId: string
  /** The network peers (on a shared store: the leader's, as it last reported them). */
  readonly peers: readonly PeerStatus[]
  /** Local writes not yet durable in storage. */
  readonly pending: number
  /** Whether the transports are meant to run (see {@link Replica.setOnline}). */
  readonly online: boolean
  /** Whether this replica runs the transports: always on a store of its own; on a shared store, the leader tab. */
  readonly leader: boolean
}

/** A named set of records inside a replica; `X` is the type of its text fields (`Y.Text` with `yjsText()`). */
export interface Collection<T extends RecordShape, X = unknown> {
  readonly name: string
  /** Replaces the record (fields absent from `record` are removed); resolves once durable. */
  put(record: T): Promise<void>
  /** Sets the given fields (`undefined` removes one); creates the record if needed; resolves once durable. */
  update(id: string, patch: Partial<Omit<T, 'id'>>): Promise<void>
  /** Deletes the record; a later write from any peer makes it visible again with only the later fields. */
  delete(id: string): Promise<void>
  /** The record, synchronously (a fresh object; nested values are frozen). */
  get(id: string): T | undefined
  /** Every visible record, synchronously. */
  all(): T[]
  /** Calls `fn` with this collection's changed records, local and remote; returns the unsubscribe function. */
  subscribe(fn: (changes: readonly RecordChangeEvent<T>[]) => void): () => void
  /**
   * The collaborative text field `field` of record `id` (a `Y.Text` with `yjsText()`), the same object on every call.
   * Edits to it merge character by character with every replica's; typing in it writes the record (it becomes
   * visible); a later put or delete of the record erases it. Throws TextUnavailableError without `text` support.
   */
  text(id: string, field: string): X
  /** The text fields of a record that hold text written after its last put or delete (with `text` support). */
  textFields(id: string): string[]
}

/** A local-first replica: instant local reads and writes, durable storage, sync with peers over transports. */
export interface Replica<X = unknown> {
  readonly peerId: string
  /** The collection of that name (created on first use). */
  collection<T extends RecordShape = StoredRecord & RecordShape>(name: string): Collection<T, X>
  /** Subscribes to an event; returns the unsubscribe function. */
  on<E extends keyof ReplicaEvents>(event: E, fn: ReplicaEvents[E]): () => void
  /** Peers, how far behind each is, and writes not yet durable. */
  status(): ReplicaStatus
  /** A snapshot for debugging: identity, vector, record counts, peers with vectors, lag and traffic, recent events. */
  inspect(): ReplicaInspection
  /** The most recent values this replica saw lose to another writer's write (bounded: `init.inspect.conflicts`), oldest first. */
  conflicts(): ConflictRecord[]
  /** Resolves when every connected peer holds what this replica holds and vice versa; rejects on timeout. */
  sync(options?: { timeoutMs?: number }): Promise<void>
  /**
   * Stops (false) or restarts (true) every transport; writes go on locally and sync when back online. On a shared
   * store this takes the whole store (every tab) offline or online.
   */
  setOnline(online: boolean): Promise<void>
  /** Flushes pending writes, leaves the room and closes the storage. Later calls reject with ReplicaClosedError. */
  close(): Promise<void>
}

/** Creates a replica: loads its state from storage (readable at once), then joins its room on every transport. */
export async function createReplica<X = unknown>(init: ReplicaInit<X> = {}): Promise<Replica<X>> {
  checkStoreSync(init)
  const storage = init.storage ?? new MemoryStorage()
  let replica: ReplicaImpl<X>
  let cipher: Promise<RoomCipher> | undefined
  try {
    // The slow key derivation runs while storage opens; a bad secret fails before anything is opened.
    cipher = init.secret === undefined ? undefined : roomCipher(init.app ?? 'syncmesh', init.room ?? 'default', init.secret)
    cipher?.catch(() => {}) // awaited below; this only keeps an early storage failure from leaving it unhandled
    const opened = await openState(storage, init)
    replica = new ReplicaImpl<X>(opened.peerId, opened.writerId, opened.store, opened.persistence, storage, init, await cipher, opened.tabs, opened.gc, opened.text)
  } catch (err) {
    await storage.close?.().catch(() => {}) // the replica owns its storage, even when it fails to open
    throw err
  }
  try {
    await replica.start()
  } catch (err) {
    await replica.close().catch(() => {})
    throw err
  }
  return replica
}

/** Refuses a transport that reaches a server's store without `storeSync` (it would silently not use the store). */
function checkStoreSync(init: ReplicaInit<unknown>): void {
  const s = init.storeSync
  if (s !== undefined && typeof (s as Partial<StoreSyncSupport>).create !== 'function') {
    throw new InvalidArgumentError('storeSync takes storeSync() or storeSync({ compactMinBytes }) (from syncmesh), not an options object')
  }
  if (s === undefined && init.transports?.some((t) => t.store !== undefined)) {
    throw new InvalidArgumentError('a transport reaches a server\'s store (store: true): pass `storeSync: storeSync()` (from syncmesh) to createReplica')
  }
}

/**
 * Loads the state and identity from storage, creating the identity on first use. On a shared store (see
 * tabs/group.ts) this takes a slot first, and writes under the slot's own origin id.
 */
async function openState(
  storage: Storage,
  init: ReplicaInit<unknown>,
): Promise<{ persistence: Persistence; store: RecordStore; peerId: string; writerId: string; gc: string | undefined; tabs?: TabGroup; text: Uint8Array[] }> {
  const load = async (slot?: number) => {
    const opened = await Persistence.open(storage, { compactAfterEntries: init.compactAfterEntries, slot, text: init.text !== undefined })
    const peerId = init.peerId ?? opened.peerId ?? randomDigits(init, 32, 16)
    const writerId = opened.writerId ?? newWriterId(peerId, init)
    if (peerId !== opened.peerId || writerId !== opened.writerId) await opened.persistence.saveIdentity(peerId, writerId)
    return { ...opened, peerId, writerId }
  }
  if (!storage.sharing) return load()
  const ctx = sharedContext(storage.sharing)
  const { slot, lease, opened } = await claimSlot(ctx, load, (dead, o) => o.persistence.absorb(dead.flatMap((k) => o.others.get(k) ?? []), o.store))
  const writerId = slotWriterId(opened.writerId, slot)
  return { ...opened, writerId, tabs: new TabGroup(ctx, writerId, lease) }
}

/** The hash peers meet under: transports and servers never see the room name. */
export function roomTopic(app: string, room: string): string {
  return bytesToHex(sha256(utf8ToBytes(`syncmesh/room/v1\u0000${app}\u0000${room}`)))
}

/** A new storage history's origin id (see {@link writerIdFor}), from the injected randomness. */
function newWriterId(peerId: string, init: ReplicaInit<unknown>): string {
  return init.peerId === undefined ? writerIdFor(peerId) : writerIdFor(peerId, randomDigits(init, 8, 36))
}

/** `n` random digits in base `base` (≤ 36) from `init.random`, else from the platform's cryptographic source. */
function randomDigits(init: ReplicaInit<unknown>, n: number, base: number): string {
  const bytes = new Uint8Array(n)
  if (!init.random) globalThis.crypto.getRandomValues(bytes)
  let out = ''
  // 256 is not a multiple of 36: a byte's digit is biased by at most 1/256, which costs a uniqueness nonce nothing.
  for (let i = 0; i < n; i++) out += Math.floor(init.random ? init.random() * base : (bytes[i]! * base) / 256).toString(base)
  return out
}

type Listeners = { [E in keyof ReplicaEvents]: Set<ReplicaEvents[E]> }

interface Batch {
  readonly promise: Promise<void>
  resolve(): void
  reject(err: unknown): void
  writes: number
}

/** The replica behind {@link createReplica}; exported for the test kit, not part of the public API. */
export class ReplicaImpl<X = unknown> implements Replica<X> {
  readonly engine: SyncEngine
  /** The text half of the state, when the replica keeps text (exposed for the test kit). */
  readonly text: TextState<X> | undefined
  private readonly hlc: HLC
  private readonly listeners: Listeners = { change: new Set(), 'peer:join': new Set(), 'peer:leave': new Set(), sync: new Set(), conflict: new Set(), error: new Set() }
  private readonly collections = new Map<string, CollectionImpl<RecordShape, X>>()
  private readonly maxMessageBytes: number
  /** Ids of the records written since the last flush, per collection (repeats included). */
  private dirty = new Map<string, string[]>()
  private batch: Batch | undefined
  private pendingWrites = 0
  /** Settles when the latest flushed batch is durable and sent. */
  private settled: Promise<void> = Promise.resolve()
  private closed = false
  /** Why the replica closed itself (see abandon). */
  private abandoned: Error | undefined
  /** The transports, each behind a gate (setOnline, and tabs that are not their store's leader). */
  private readonly gates: GatedTransport[]
  /** Recent events and lost values, for inspect() and conflicts(). */
  private readonly journal: Ring<InspectEvent>
  private readonly lost: Ring<ConflictRecord>
  /** The tombstone-collection state last stored. */
  private savedGc: string | undefined
  /** Changes received over the tab link since the last compaction: the store may not hold them (see tabs/group.ts). */
  private unstored = false
  /** One per transport that reaches a server-side store (store-and-forward). */
  readonly storeSyncs: StoreSync[] = []

  constructor(
    readonly peerId: string,
    /** The origin id this replica's timestamps carry (see newWriterId). */
    readonly writerId: string,
    /** The CRDT state (exposed for the test kit). */
    readonly store: RecordStore,
    private readonly persistence: Persistence,
    private readonly storage: Storage,
    init: ReplicaInit<X>,
    /** The room key when the room is encrypted: every transport is then wrapped in a sealed transport. */
    cipher?: RoomCipher,
    /** The group of replicas sharing the store, when it is shared. */
    private readonly tabs?: TabGroup,
    /** The stored tombstone-collection state (see sync/gc-state.ts). */
    gcText?: string,
    /** The stored text deltas to load (with `init.text`). */
    storedText: readonly Uint8Array[] = [],
  ) {
    this.maxMessageBytes = init.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES
    this.journal = new Ring(init.inspect?.events ?? 100)
    this.lost = new Ring(init.inspect?.conflicts ?? 100)
    this.hlc = new HLC(writerId, init.clock)
    this.text = init.text ? this.openText(init.text, storedText) : undefined
    const report = (err: Error): void => this.emit('error', err, {})
    this.gates = (init.transports ?? []).map((t) => new GatedTransport(cipher ? sealedTransport(t) : t, !tabs, report))
    const gc = gcText === undefined ? undefined : decodeGcState(gcText)
    if (gc) store.restoreFrontier(gc.frontier, gc.newest)
    const now = init.clock?.now ?? Date.now
    const topic = roomTopic(init.app ?? 'syncmesh', init.room ?? 'default')
    // Store-and-forward: each transport that reaches a server's store. Not on a shared store (tabs): only its
    // leader runs transports, and the others' writes would have to be uploaded by it (not done yet).
    for (const t of tabs ? [] : (init.transports ?? [])) {
      if (t.store === undefined || !init.storeSync) continue
      const host = {
        topic,
        writerId,
        cipher,
        store,
        durable: () => this.engine.durable(),
        apply: (bytes: Uint8Array) => this.engine.applyStored(bytes),
        changed: () => this.engine.antiEntropy(),
        load: (key: string[]) => storage.load(key),
        save: (key: string[], data: Uint8Array) => storage.save(key, data),
        error: report,
      }
      this.storeSyncs.push(init.storeSync.create(t.store, host))
    }
    this.engine = new SyncEngine({
      store,
      hlc: this.hlc,
      transports: tabs ? [...this.gates, tabs.link] : this.gates,
      tabLink: tabs?.link,
      room: this.roomContext(topic, peerId, cipher),
      writerId,
      log: { append: (delta) => persistence.append(delta, store), appendText: (delta) => persistence.appendText(delta, store) },
      uploads: this.storeSyncs,
      maxMessageBytes: this.maxMessageBytes,
      antiEntropyMs: init.antiEntropyMs ?? 5_000,
      gc: tabs ? undefined : { horizonMs: init.tombstoneHorizonMs ?? 30 * 24 * 3_600_000, now, known: gc?.known ?? new Map() },
      text: this.text,
      hooks: {
        applied: (changes, fromTab) => {
          if (fromTab) this.unstored = true
          if (this.listeners.change.size === 0) return
          this.emitChanges(changes.map((c) => this.changeEvent(c.collection, c.id, c.existed, 'remote', c.text)).filter((e): e is RecordChangeEvent => e !== undefined))
        },
        wantsChanges: () => this.listeners.change.size > 0,
        textApplied: (changes, fromTab) => {
          if (fromTab) this.unstored = true
          if (this.listeners.change.size === 0) return
          this.emitChanges(changes.map((c) => this.textEvent(c, 'remote')).filter((e): e is RecordChangeEvent => e !== undefined))
        },
        conflict: (o) => this.emit('conflict', { collection: o.collection, id: o.id, field: o.field, winner: o.winner, loser: o.loser }),
        peerJoin: (peer) => {
          this.tabs?.postStatus()
          this.emit('peer:join', peer)
        },
        peerLeave: (peer) => {
          this.tabs?.postStatus()
          this.emit('peer:leave', peer)
          this.saveGc()
        },
        gc: ({ collected, rebased, visibleBefore }) => {
          if (collected > 0 || rebased > 0) {
            // The store dropped what storage still holds: the next snapshot replaces it.
            this.persistence.compact(this.store).catch((err) => this.emit('error', asError(err), {}))
            this.journal.push({ at: Date.now(), type: collected > 0 ? 'collect' : 'rebase', detail: String(collected || rebased) })
          }
          this.saveGc()
          if (visibleBefore && this.listeners.change.size > 0) {
            const gone: RecordChangeEvent[] = []
            for (const key of visibleBefore) {
              const [collection, id] = key.split('\u0000') as [string, string]
              if (!this.store.has(collection, id)) gone.push({ type: 'deleted', collection, id, record: undefined, origin: 'remote' })
            }
            this.emitChanges(gone)
          }
        },
        peerSynced: (peer) => {
          this.tabs?.postStatus()
          this.emit('sync', peer)
        },
        // A storage failure that closed the replica (see abandon) was reported once already.
        error: (err, peer) => err !== this.abandoned && this.emit('error', err, { peer }),
      },
    })
  }

  /** What the transports are told: the topic, our id, and for an encrypted room the cipher and an error sink. */
  private roomContext(room: string, peerId: string, cipher: RoomCipher | undefined): RoomContext {
    if (!cipher) return { room, peerId }
    const throttle = new AuthErrorThrottle()
    const onError = (error: Error, peer?: PeerId): void => {
      const e = error instanceof AuthError ? throttle.pass(error, peer) : error
      if (e && !this.closed) this.emit('error', e, { peer })
    }
    return { room, peerId, cipher, onError }
  }

  /** Joins the room (on a shared store, the transports open once this replica leads). */
  async start(): Promise<void> {
    for (const s of this.storeSyncs) s.start()
    await this.engine.start()
    this.tabs?.start({
      gates: this.gates,
      peers: () => this.engine.status(),
      syncEngine: (ms) => this.engine.sync(ms),
      storeAll: async () => {
        if (!this.unstored) return
        this.unstored = false
        await this.persistence.compact(this.store)
      },
      error: (err) => this.emit('error', err, {}),
      slotLost: (err) => void this.abandon(err),
    })
  }

  collection<T extends RecordShape = StoredRecord & RecordShape>(name: string): Collection<T, X> {
    if (typeof name !== 'string' || name.length === 0) throw new InvalidValueError('collection name must be a non-empty string')
    let c = this.collections.get(name)
    if (!c) this.collections.set(name, (c = new CollectionImpl<RecordShape, X>(this, name)))
    return c as unknown as Collection<T, X>
  }

  on<E extends keyof ReplicaEvents>(event: E, fn: ReplicaEvents[E]): () => void {
    const set = this.listeners[event] as Set<ReplicaEvents[E]> | undefined
    if (!set) throw new InvalidArgumentError(`unknown replica event ${JSON.stringify(event)}`)
    set.add(fn)
    return () => set.delete(fn)
  }

  status(): ReplicaStatus {
    const tabs = this.tabs
    return {
      peerId: this.peerId,
      peers: tabs ? tabs.peers() : this.engine.status(),
      pending: this.pendingWrites,
      online: tabs ? tabs.isOnline() : this.gates.every((g) => g.isOpen),
      leader: tabs ? tabs.isLeader : true,
    }
  }

  inspect(): ReplicaInspection {
    const status = this.status()
    const collections: Record<string, { visible: number; deleted: number }> = {}
    for (const name of this.store.collections()) collections[name] = this.store.count(name)
    const peers = status.peers.map((p) => {
      const vector = this.engine.peerVector(p.id)
      return { ...p, vector: vector && vectorSnapshot(vector), traffic: sumTraffic(this.gates.map((g) => g.traffic.get(p.id))) }
    })
    const { peerId, pending, online, leader } = status
    return { peerId, writerId: this.writerId, vector: vectorSnapshot(this.store.versionVector()), collections, pending, online, leader, peers, events: this.journal.toArray() }
  }

  conflicts(): ConflictRecord[] {
    return this.lost.toArray()
  }

  async sync(options: { timeoutMs?: number } = {}): Promise<void> {
    this.checkOpen()
    this.flush()
    const timeoutMs = options.timeoutMs ?? 10_000
    await (this.tabs ? this.tabs.sync(timeoutMs) : this.engine.sync(timeoutMs))
  }

  async setOnline(online: boolean): Promise<void> {
    this.checkOpen()
    if (typeof online !== 'boolean') throw new InvalidValueError('setOnline takes a boolean')
    this.journal.push({ at: Date.now(), type: online ? 'online' : 'offline' })
    await (this.tabs ? this.tabs.setOnline(online) : Promise.all(this.gates.map((g) => g.setOpen(online))))
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.flush()
    this.closed = true
    await this.settled.catch(() => {}) // the last writes reach connected peers before we leave
    this.saveGc()
    await Promise.all(this.storeSyncs.map((s) => s.stop())) // and the store acknowledges its uploads (2 s at most)
    await this.engine.stop()
    try {
      await (this.unstored ? this.persistence.compact(this.store) : this.persistence.compactIfLogged(this.store))
    } finally {
      try {
        await this.storage.close?.()
      } finally {
        this.text?.close()
        this.tabs?.close() // the slot and the leadership go only once everything is stored
      }
    }
  }

  /**
   * Closes at once without writing anything more (the slot's lease was lost: another replica may write its keys
   * now). Writes not yet durable reject with `reason`, which is also reported on 'error'; later calls reject with
   * ReplicaClosedError.
   */
  private async abandon(reason: Error): Promise<void> {
    // Nothing more is written, whatever else is under way (a close() in progress then fails with `reason`).
    this.persistence.stop(reason)
    this.abandoned ??= reason
    const closing = this.closed
    this.closed = true
    const batch = this.batch
    this.batch = undefined
    this.dirty = new Map()
    if (batch) {
      this.pendingWrites -= batch.writes
      batch.reject(reason)
    }
    this.emit('error', reason, {})
    if (closing) return
    try {
      await this.engine.stop()
      await this.storage.close?.()
    } catch (err) {
      this.emit('error', asError(err), {})
    } finally {
      this.tabs?.close()
    }
  }

  /** Runs one local write: validates, stamps, applies, schedules the flush; resolves once durable. */
  write(collection: string, id: string, kind: 'put' | 'update' | 'delete', fields?: object): Promise<void> {
    this.checkOpen()
    if (typeof id !== 'string' || id.length === 0) throw new InvalidValueError('a record needs a non-empty string id')
    if (fields !== undefined) this.checkSize(id, fields)
    const observed = this.listeners.change.size > 0 // change events cost a materialised record: only when heard
    const existed = observed && this.has(collection, id)
    const ts = this.hlc.now()
    if (kind === 'put') this.store.put(collection, id, fields!, ts)
    else if (kind === 'update') this.store.update(collection, id, fields!, ts)
    else this.store.delete(collection, id, ts)
    const text = kind === 'update' ? undefined : this.text?.floorChanged(collection, id, true)?.text
    if (observed) {
      const event = this.changeEvent(collection, id, existed, 'local', text)
      if (event) this.emitChanges([event])
    }
    return this.markDirty(collection, id)
  }

  /** Resolves once every write made so far (text edits included) is durable; rejects like those writes. */
  whenFlushed(): Promise<void> {
    return this.batch?.promise ?? this.settled
  }

  /** Builds a change event, or undefined when the record was and is invisible (and no text changed). */
  changeEvent(collection: string, id: string, existed: boolean, origin: 'local' | 'remote', text?: RecordChangeEvent['text']): RecordChangeEvent | undefined {
    const record = this.get(collection, id)
    if (!existed && !record) return undefined
    const withText = text && Object.keys(text).length > 0 ? text : undefined
    const type = !existed ? 'added' : record ? 'updated' : 'deleted'
    return withText ? { type, collection, id, record, origin, text: withText } : { type, collection, id, record, origin }
  }

  /** The visible record: its fields, or just `{ id }` for a record visible only through its text. */
  get(collection: string, id: string): StoredRecord | undefined {
    return this.store.get(collection, id) ?? (this.text?.alive(collection, id) ? ({ id } as StoredRecord) : undefined)
  }

  /** Whether the record is visible (a field or a text field written after its last delete). */
  has(collection: string, id: string): boolean {
    return this.store.has(collection, id) || (this.text?.alive(collection, id) ?? false)
  }

  /** Every visible record of a collection. */
  all(collection: string): StoredRecord[] {
    const out = this.store.all(collection)
    if (!this.text) return out
    for (const id of this.text.ids(collection)) if (!this.store.has(collection, id)) out.push({ id } as StoredRecord)
    return out
  }

  /** A text field (see Collection.text). */
  textOf(collection: string, id: string, field: string): X {
    this.checkOpen()
    if (!this.text) throw new TextUnavailableError('this replica has no text support: pass `text: yjsText()` (from syncmesh/text) to createReplica')
    if (typeof id !== 'string' || id.length === 0) throw new InvalidValueError('a record needs a non-empty string id')
    if (typeof field !== 'string') throw new InvalidValueError('a text field name must be a string')
    return this.text.text(collection, id, field)
  }

  /** Builds the stored text state and applies the record floors to it. */
  private openText(support: TextSupport<X>, stored: readonly Uint8Array[]): TextState<X> {
    const text = support.create({
      writerId: this.writerId,
      now: (after) => {
        try {
          if (after) this.hlc.receive(after)
        } catch {
          // A floor beyond the drift bound: the edit is stamped below it and erased (TextState handles that).
        }
        return this.hlc.now()
      },
      floor: (collection, id) => this.store.floorOf(collection, id),
      localEdit: (change) => {
        if (this.closed) return
        if (this.listeners.change.size > 0) {
          const event = this.textEvent(change, 'local')
          if (event) this.emitChanges([event])
        }
        void this.markDirty(undefined, undefined).catch(() => {}) // failures reach 'error' from flush
      },
      error: (err) => this.emit('error', err, {}),
    })
    text.load(stored)
    this.persistence.attachText(text)
    return text
  }

  /** The change event of a text change (local edit or remote text delta). */
  private textEvent(change: RecordTextChange, origin: 'local' | 'remote'): RecordChangeEvent | undefined {
    const existed = change.aliveBefore || this.store.has(change.collection, change.id)
    return this.changeEvent(change.collection, change.id, existed, origin, change.text)
  }

  /** Subscribes to changes of one collection. */
  subscribeCollection(name: string, fn: (changes: readonly RecordChangeEvent[]) => void): () => void {
    return this.on('change', (changes) => {
      const mine = changes.filter((c) => c.collection === name)
      if (mine.length > 0) fn(mine)
    })
  }

  /** Schedules the flush of a write (of record `id`, or of text when both are undefined); resolves once durable. */
  private markDirty(collection: string | undefined, id: string | undefined): Promise<void> {
    if (collection !== undefined && id !== undefined) {
      // Listed as written, repeats included (the commit reads each record once): no set to keep per write.
      let ids = this.dirty.get(collection)
      if (!ids) this.dirty.set(collection, (ids = []))
      ids.push(id)
    }
    this.pendingWrites++
    if (!this.batch) {
      let resolve!: () => void
      let reject!: (err: unknown) => void
      const promise = new Promise<void>((res, rej) => {
        resolve = res
        reject = rej
      })
      this.batch = { promise, resolve, reject, writes: 0 }
      queueMicrotask(() => this.flush())
    }
    this.batch.writes++
    return this.batch.promise
  }

  /** Commits the writes made since the last flush (see SyncEngine.commit: durable, then sent, as one delta). */
  private flush(): void {
    const batch = this.batch
    if (!batch) return
    this.batch = undefined
    const written = this.dirty
    this.dirty = new Map()
    try {
      this.settled = this.engine.commit(written).then(
        () => {
          this.pendingWrites -= batch.writes
          batch.resolve()
        },
        (err: unknown) => {
          this.pendingWrites -= batch.writes
          batch.reject(err)
          if (err !== this.abandoned) this.emit('error', asError(err), {}) // abandon() reported it once already
        },
      )
    } catch (err) {
      this.pendingWrites -= batch.writes
      batch.reject(err)
    }
  }

  /** Refuses a write whose values would not fit a sync message (estimated from above, without encoding them). */
  private checkSize(id: string, fields: object): void {
    const limit = this.maxMessageBytes - 4096
    const size = sizeBound(fields, limit)
    if (size > limit) {
      throw new MessageTooLargeError(`record ${JSON.stringify(id)}: a write of ~${size} bytes exceeds the ${limit}-byte limit (maxMessageBytes)`, size, limit)
    }
  }

  private emitChanges(events: RecordChangeEvent[]): void {
    if (events.length > 0) this.emit('change', events)
  }

  private emit<E extends keyof ReplicaEvents>(event: E, ...args: Parameters<ReplicaEvents[E]>): void {
    if (event !== 'change') this.record(event, args[0])
    for (const fn of this.listeners[event]) {
      try {
        ;(fn as (...a: Parameters<ReplicaEvents[E]>) => void)(...args)
      } catch (err) {
        // A throwing listener must not break replication; report it unless it is an error listener itself.
        if (event !== 'error') this.emit('error', asError(err), {})
      }
    }
  }

  /** Stores the tombstone-collection state when it changed (the frontier, the known peers); errors go to 'error'. */
  private saveGc(): void {
    const { vector, newest } = this.store.gcFrontier()
    const known = this.engine.knownPeers()
    if (vector.size === 0 && known.size === 0 && this.savedGc === undefined) return
    const text = encodeGcState(vector, newest, known)
    if (text === this.savedGc) return
    this.savedGc = text
    this.persistence.saveGc(text).catch((err) => this.emit('error', asError(err), {}))
  }

  /** Keeps an event for inspect() (and a conflict for conflicts()). */
  private record(event: Exclude<keyof ReplicaEvents, 'change'>, arg: unknown): void {
    const at = Date.now()
    if (event === 'conflict') {
      const c = arg as ConflictEvent
      this.lost.push({ at, ...c })
      this.journal.push({ at, type: event, detail: `${c.collection}/${c.id}.${c.field}` })
    } else if (event === 'error') {
      const e = arg as Error
      this.journal.push({ at, type: event, detail: `${e.name}: ${e.message}` })
    } else {
      this.journal.push({ at, type: event, peer: arg as string })
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new ReplicaClosedError('the replica is closed')
  }
}

/**
 * An upper bound of the encoded size of a record's values (crdt/value.ts), or a number above `limit` as soon as it
 * exceeds it: 3 bytes per UTF-16 unit, 9 per number, 5 of tag and length per string, byte array, array, object and
 * key. 0 for a value nested too deep (or cyclic: depth first, a cycle gets there fast), which the store refuses.
 */
function sizeBound(fields: object, limit: number): number {
  let size = 0
  // Only arrays and objects are stacked, and the stack is made for the first: a flat record (the common write)
  // allocates nothing at all.
  let stack: unknown[] | undefined
  for (const key in fields) {
    const v = (fields as Record<string, unknown>)[key]
    const leaf = leafBound(v)
    size += key.length * 3
    if (leaf >= 0) size += leaf
    else (stack ??= []).push(v, 0)
  }
  while (stack !== undefined && stack.length > 0 && size <= limit) {
    const depth = stack.pop() as number
    const v = stack.pop()
    if (depth > MAX_VALUE_DEPTH) return 0 // too deep or cyclic: the store's validation refuses it precisely
    size += 5
    if (Array.isArray(v)) {
      for (const item of v) {
        const leaf = leafBound(item)
        if (leaf >= 0) size += leaf
        else stack.push(item, depth + 1)
      }
    } else {
      for (const key in v as object) {
        const item = (v as Record<string, unknown>)[key]
        const leaf = leafBound(item)
        size += 5 + key.length * 3
        if (leaf >= 0) size += leaf
        else stack.push(item, depth + 1)
      }
    }
  }
  return size
}

/** {@link sizeBound} of a string, number, boolean, null, undefined or byte array; −1 for an array or object. */
function leafBound(v: unknown): number {
  if (typeof v === 'string') return 5 + v.length * 3
  if (typeof v !== 'object' || v === null) return 9
  return v instanceof Uint8Array ? 5 + v.length : -1
}

/** A write refused before it started: rejects, as an `async` method's throw would. */
function rejected(err: unknown): Promise<never> {
  return Promise.reject(err)
}

class CollectionImpl<T extends RecordShape, X> implements Collection<T, X> {
  constructor(
    private readonly replica: ReplicaImpl<X>,
    readonly name: string,
  ) {}

  // Not `async`: the write's promise is its batch's, shared by every write of the tick (an async wrapper would add a
  // promise and three microtask hops per write). Bad input still rejects, never throws (see {@link rejected}).
  put(record: T): Promise<void> {
    if (typeof record !== 'object' || record === null || Array.isArray(record)) {
      return rejected(new InvalidValueError(`${this.name}.put: a record must be a plain object with a string id`))
    }
    try {
      return this.replica.write(this.name, record.id, 'put', record)
    } catch (err) {
      return rejected(err)
    }
  }

  update(id: string, patch: Partial<Omit<T, 'id'>>): Promise<void> {
    if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) {
      return rejected(new InvalidValueError(`${this.name}.update: the patch must be a plain object`))
    }
    try {
      return this.replica.write(this.name, id, 'update', patch)
    } catch (err) {
      return rejected(err)
    }
  }

  delete(id: string): Promise<void> {
    try {
      return this.replica.write(this.name, id, 'delete')
    } catch (err) {
      return rejected(err)
    }
  }

  get(id: string): T | undefined {
    return this.replica.get(this.name, id) as T | undefined
  }

  all(): T[] {
    return this.replica.all(this.name) as unknown as T[]
  }

  text(id: string, field: string): X {
    return this.replica.textOf(this.name, id, field)
  }

  textFields(id: string): string[] {
    return this.replica.text?.fields(this.name, id) ?? []
  }

  subscribe(fn: (changes: readonly RecordChangeEvent<T>[]) => void): () => void {
    return this.replica.subscribeCollection(this.name, fn as (changes: readonly RecordChangeEvent[]) => void)
  }
}

