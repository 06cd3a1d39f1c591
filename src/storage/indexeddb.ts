/**
 * `syncmesh/storage/indexeddb` — a {@link Storage} for browsers, on IndexedDB directly (no wrapper library).
 *
 * y-indexeddb does not fit: it persists the update stream of one Yjs `Y.Doc` (and merges it with Yjs), whereas a
 * replica stores its own binary snapshot + log under string-array keys, so a plain object store is all it needs.
 *
 * Layout: one database per storage name (version {@link INDEXEDDB_VERSION}) holding one object store, `entries`, whose
 * keys are the storage keys themselves (arrays of strings) and whose values are `Uint8Array` copies. IndexedDB orders
 * array keys element-wise and strings by UTF-16 code unit, a shorter array before its extensions — exactly
 * {@link compareKeys} — and every array sorts after every string, so the entries starting with `prefix` are the key
 * range `[prefix, [...prefix, []])` (for `prefix = []` that is every string-array key).
 *
 * Promises:
 * - `save`/`remove` run in their own `readwrite` transaction opened with `durability: 'strict'` (ignored where the
 *   browser does not know the option) and resolve only on the transaction's `complete` event: resolved ⇒ on disk.
 * - Calls take effect in call order, also when not awaited (IndexedDB runs overlapping transactions in creation order,
 *   and every call creates its transaction in call order).
 * - A value that is not bytes, or a key that is not an array of strings, is reported as {@link StorageCorruptError}
 *   naming the key (checksums of the bytes themselves are the replica's job, see `persistence.ts`).
 * - After `close()` every method rejects with {@link StorageClosedError}; calls made before `close()` still complete.
 *   Failed transactions reject with IndexedDB's own `DOMException` (e.g. `QuotaExceededError`).
 *
 * Tabs: every tab of an origin that opens the database name opens the same store, so this storage declares it
 * shared ({@link IndexedDBStorage.sharing}): replicas on it then take a writer slot each, by Web Lock, and link up
 * over BroadcastChannel (see src/tabs/group.ts). In a page without Web Locks (`navigator.locks` is only there in
 * secure contexts) opening a replica fails with SharingUnavailableError. With an injected `indexedDB` (e.g.
 * fake-indexeddb in Node) the locks are this realm's and the sharing key names that factory.
 *
 * Version changes: when another connection asks for a version change (a newer build of the app upgrading the database in
 * another tab, or `indexedDB.deleteDatabase`), this storage closes its connection at once so that the other side is not
 * blocked, calls `onVersionChange`, and rejects every later call with StorageClosedError — the page should reload.
 * The same happens when the browser closes the connection itself (site data cleared). Opening never upgrades past
 * version 1, so this storage never blocks other tabs nor is blocked by tabs running the same build.
 */
import { InvalidArgumentError, SyncmeshError } from '../../crdt/errors.js'
import { SharingUnavailableError, StorageClosedError, StorageCorruptError, StorageProtocolError } from '../errors.js'
import { realmLocks, webLockManager, webLocks } from '../tabs/locks.js'
import type { Locks, Storage, StorageOp, StorageSharing } from './types.js'

/** The IndexedDB database version this adapter creates and expects. */
export const INDEXEDDB_VERSION = 1
/** The object store holding the entries. */
const STORE = 'entries'

/** Options of {@link indexedDBStorage}. */
export interface IndexedDBStorageInit {
  /**
   * The IndexedDB implementation (e.g. `new IDBFactory()` from fake-indexeddb in Node tests).
   * @default globalThis.indexedDB
   */
  indexedDB?: IDBFactory
  /**
   * The `IDBKeyRange` class of the same implementation (range queries need it).
   * @default globalThis.IDBKeyRange
   */
  IDBKeyRange?: typeof IDBKeyRange
  /**
   * Called after the storage closed itself because another connection requested a version change (an upgrade or a
   * deletion of the database, usually from another tab). Later calls reject with StorageClosedError; reload the page.
   */
  onVersionChange?: (event: IDBVersionChangeEvent) => void
}

/** IndexedDB cannot be used: none in this environment, or the database cannot be opened (`cause` says why). */
export class IndexedDBUnavailableError extends SyncmeshError {
  override readonly code = 'INDEXEDDB_UNAVAILABLE'
}

/**
 * A {@link Storage} on the IndexedDB database `name` (created on first use). Throws {@link IndexedDBUnavailableError}
 * when there is no IndexedDB.
 *
 * ```ts
 * import { createReplica } from 'syncmesh'
 * import { indexedDBStorage } from 'syncmesh/storage/indexeddb'
 * const replica = await createReplica({ storage: indexedDBStorage('my-app') })
 * ```
 */
export function indexedDBStorage(name: string, options: IndexedDBStorageInit = {}): IndexedDBStorage {
  return new IndexedDBStorage(name, options)
}

type Entry = { key: string[]; data: Uint8Array }

/** The {@link Storage} returned by {@link indexedDBStorage}. */
export class IndexedDBStorage implements Storage {
  /** The database name. */
  readonly name: string
  /** Tabs of one origin open the same database: replicas on it coordinate (see the module comment). */
  readonly sharing: StorageSharing
  private readonly factory: IDBFactory
  private readonly keyRange: typeof IDBKeyRange
  private readonly onVersionChange: ((event: IDBVersionChangeEvent) => void) | undefined
  private opening: Promise<IDBDatabase> | undefined
  private db: IDBDatabase | undefined
  /** Set once no new call is accepted: the message of the StorageClosedError later calls reject with. */
  private closedReason: string | undefined
  /** Set when the connection was lost (version change, closed by the browser): even accepted calls fail. */
  private lostReason: string | undefined
  private readonly inflight = new Set<Promise<unknown>>()

  constructor(name: string, options: IndexedDBStorageInit = {}) {
    if (typeof name !== 'string' || name === '') throw new InvalidArgumentError('indexedDBStorage: name must be a non-empty string')
    const g = globalThis as { indexedDB?: IDBFactory; IDBKeyRange?: typeof IDBKeyRange }
    const factory = options.indexedDB ?? g.indexedDB
    if (!factory) {
      throw new IndexedDBUnavailableError(
        'indexedDBStorage: no IndexedDB in this environment (globalThis.indexedDB is undefined); in Node pass { indexedDB, IDBKeyRange } from fake-indexeddb, or use another storage',
      )
    }
    const keyRange = options.IDBKeyRange ?? g.IDBKeyRange
    if (!keyRange) {
      throw new IndexedDBUnavailableError('indexedDBStorage: no IDBKeyRange (globalThis.IDBKeyRange is undefined); pass options.IDBKeyRange from the same implementation as options.indexedDB')
    }
    this.name = name
    this.factory = factory
    this.keyRange = keyRange
    this.sharing = factory === g.indexedDB ? { key: `syncmesh/idb/${name}`, locks: browserLocks() } : { key: `syncmesh/idb/${factoryId(factory)}/${name}`, locks: realmLocks }
    this.onVersionChange = options.onVersionChange
  }

  /** {@inheritDoc Storage.load} */
  load(key: string[]): Promise<Uint8Array | undefined> {
    return this.op('readonly', copyKey(key, 'load'), (store, k) => {
      const req = store.get(k)
      return () => (req.result === undefined ? undefined : toBytes(k, req.result))
    })
  }

  /** {@inheritDoc Storage.save} */
  save(key: string[], data: Uint8Array): Promise<void> {
    // Copied now: the caller may reuse its buffer before the transaction starts. A compact copy also keeps a view's
    // whole underlying buffer out of the database (structured clone copies the buffer, not just the view).
    const copy = data instanceof Uint8Array ? data.slice() : undefined
    const k = copy ? copyKey(key, 'save') : new InvalidArgumentError('save: data must be a Uint8Array')
    return this.op('readwrite', k, (store, k) => {
      store.put(copy, k)
      return () => undefined
    })
  }

  /** {@inheritDoc Storage.remove} */
  remove(key: string[]): Promise<void> {
    return this.op('readwrite', copyKey(key, 'remove'), (store, k) => {
      store.delete(k)
      return () => undefined
    })
  }

  /** {@inheritDoc Storage.batch} */
  batch(ops: readonly StorageOp[]): Promise<void> {
    // Keys and bytes copied now, as for save(); one strict transaction makes the batch atomic.
    const prepared: { key: string[]; data: Uint8Array | undefined }[] = []
    let problem: Error | undefined
    for (const op of ops) {
      const key = copyKey(op.key, 'batch')
      if (key instanceof Error) problem ??= key
      else if (op.type === 'del') prepared.push({ key, data: undefined })
      else if (!(op.data instanceof Uint8Array)) problem ??= new InvalidArgumentError('batch: data must be a Uint8Array')
      else prepared.push({ key, data: op.data.slice() })
    }
    return this.op('readwrite', problem ?? prepared, (store, list) => {
      for (const { key, data } of list) {
        if (data === undefined) store.delete(key)
        else store.put(data, key)
      }
      return () => undefined
    })
  }

  /** {@inheritDoc Storage.loadRange} */
  loadRange(prefix: string[]): Promise<Entry[]> {
    return this.op('readonly', copyKey(prefix, 'loadRange'), (store, p) => {
      // Every array sorts after every string, and [] before every other array: the upper bound is just past the
      // last key extending `prefix` by string elements.
      const range = this.keyRange.bound(p, [...p, []], false, true)
      const keys = store.getAllKeys(range)
      const values = store.getAll(range)
      return () => {
        const ks = keys.result
        const vs: unknown[] = values.result
        if (ks.length !== vs.length) throw new StorageProtocolError(`IndexedDB returned ${ks.length} keys but ${vs.length} values`)
        const out: Entry[] = new Array(ks.length)
        for (let i = 0; i < ks.length; i++) {
          const key = ks[i]
          if (!isStringArray(key)) {
            const shown = Array.isArray(key) ? key.map(String) : [String(key)]
            throw new StorageCorruptError(`IndexedDB entry ${JSON.stringify(shown)} has a key that is not an array of strings`, shown)
          }
          out[i] = { key, data: toBytes(key, vs[i]) }
        }
        return out
      }
    })
  }

  /**
   * {@inheritDoc Storage.close}
   * Waits for the calls already made, then closes the connection; later calls reject with StorageClosedError.
   */
  async close(): Promise<void> {
    this.closedReason ??= `IndexedDB storage "${this.name}" is closed`
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight])
    this.db?.close()
    this.db = undefined
  }

  // -------------------------------------------------------------------------------------------------------------------

  /**
   * Runs one call in its own transaction. `body` issues the requests and returns how to read the result once the
   * transaction has completed. No `await` precedes `this.connect().then`, so transactions are created in call order.
   */
  private op<K, T>(mode: IDBTransactionMode, key: K | Error, body: (store: IDBObjectStore, key: K) => () => T): Promise<T> {
    if (this.closedReason !== undefined) return Promise.reject(new StorageClosedError(this.closedReason))
    if (key instanceof Error) return Promise.reject(key)
    const run = this.connect().then((db) => this.transact(db, mode, (store) => body(store, key)))
    const settle = (): void => void this.inflight.delete(tracked)
    const tracked: Promise<void> = run.then(settle, settle)
    this.inflight.add(tracked)
    return run
  }

  private transact<T>(db: IDBDatabase, mode: IDBTransactionMode, body: (store: IDBObjectStore) => () => T): Promise<T> {
    if (this.lostReason !== undefined) return Promise.reject(new StorageClosedError(this.lostReason))
    return new Promise<T>((resolve, reject) => {
      let tx: IDBTransaction
      let read: () => T
      try {
        tx = mode === 'readwrite' ? db.transaction(STORE, mode, { durability: 'strict' }) : db.transaction(STORE, mode)
        read = body(tx.objectStore(STORE))
      } catch (err) {
        reject(this.lostReason !== undefined ? new StorageClosedError(this.lostReason, { cause: err }) : err)
        return
      }
      tx.oncomplete = () => {
        try {
          resolve(read())
        } catch (err) {
          reject(err)
        }
      }
      // A failed request aborts the transaction (we never preventDefault), so `abort` always follows `error`.
      tx.onabort = () => {
        const err = tx.error ?? new DOMException('IndexedDB transaction aborted', 'AbortError')
        reject(this.lostReason !== undefined ? new StorageClosedError(this.lostReason, { cause: err }) : err)
      }
    })
  }

  /** Opens the database once; a failed open is retried by the next call. */
  private connect(): Promise<IDBDatabase> {
    if (this.opening) return this.opening
    const opening = new Promise<IDBDatabase>((resolve, reject) => {
      const fail = (cause: unknown): void => {
        const why = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause)
        reject(new IndexedDBUnavailableError(`cannot open IndexedDB database "${this.name}": ${why}`, { cause }))
      }
      let req: IDBOpenDBRequest
      try {
        req = this.factory.open(this.name, INDEXEDDB_VERSION)
      } catch (err) {
        fail(err)
        return
      }
      req.onupgradeneeded = () => {
        const db = req.result
        if (!db.objectStoreNames.contains(STORE)) db.createObjectStore(STORE)
      }
      req.onerror = (event) => {
        event.preventDefault()
        fail(req.error)
      }
      req.onsuccess = () => {
        const db = req.result
        if (!db.objectStoreNames.contains(STORE)) {
          db.close()
          fail(new StorageCorruptError(`database "${this.name}" (version ${db.version}) has no object store "${STORE}": it was not created by syncmesh`, []))
          return
        }
        db.onversionchange = (event) => {
          this.lose(
            `IndexedDB storage "${this.name}" was closed because another connection requested a version change (an upgrade by a newer build in another tab, or a deletion); reload the page`,
          )
          this.onVersionChange?.(event)
        }
        db.onclose = () => this.lose(`IndexedDB storage "${this.name}" was closed by the browser (site data cleared, or a storage failure)`)
        this.db = db
        resolve(db)
      }
    })
    this.opening = opening
    // Registered before any caller's handler, so the next call (even one made from such a handler) opens afresh.
    opening.catch(() => {
      if (this.opening === opening) this.opening = undefined
    })
    return opening
  }

  private lose(reason: string): void {
    this.lostReason ??= reason
    this.closedReason ??= reason
    this.db?.close() // running transactions still complete
    this.db = undefined
  }
}

/** Web Locks, or locks that refuse with SharingUnavailableError (realm-local locks would not hold across tabs). */
function browserLocks(): Locks {
  const manager = webLockManager()
  if (manager) return webLocks(manager)
  const missing = (): Promise<never> =>
    Promise.reject(
      new SharingUnavailableError(
        'IndexedDB storage: tabs of this origin may open the same database, and this page has no Web Locks to coordinate them (navigator.locks exists only in secure contexts: serve the page over https or from localhost)',
      ),
    )
  return { tryAcquire: missing, acquire: missing }
}

const factoryIds = new WeakMap<IDBFactory, number>()
/** A number naming an injected IndexedDB implementation, so stores of two fake "browsers" never link up. */
function factoryId(factory: IDBFactory): number {
  let id = factoryIds.get(factory)
  if (id === undefined) factoryIds.set(factory, (id = ++factoryCount))
  return id
}
let factoryCount = 0

function isStringArray(key: unknown): key is string[] {
  return Array.isArray(key) && key.every((e) => typeof e === 'string')
}

/** A private copy of a key, or the InvalidArgumentError to reject with (the caller's array may change before we use it). */
function copyKey(key: string[], method: string): string[] | Error {
  if (!isStringArray(key)) return new InvalidArgumentError(`${method}: key must be an array of strings`)
  return [...key]
}

/** The bytes of a stored value; anything else is corruption. */
function toBytes(key: string[], value: unknown): Uint8Array {
  const tag = Object.prototype.toString.call(value)
  if (tag === '[object Uint8Array]') {
    const v = value as Uint8Array
    // Cross-realm (another window's Uint8Array) or a subclass: rewrap the same bytes as a plain Uint8Array.
    return v.constructor === Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
  }
  if (tag === '[object ArrayBuffer]') return new Uint8Array(value as ArrayBuffer)
  const what = value === null ? 'null' : Array.isArray(value) ? 'an array' : tag.slice(8, -1)
  throw new StorageCorruptError(`IndexedDB entry ${JSON.stringify(key)} holds ${what}, not bytes`, key)
}
