/**
 * `syncmesh/storage/level` — a durable {@link Storage} for Node on LevelDB (`classic-level`).
 *
 * ```ts
 * import { createReplica } from 'syncmesh'
 * import { levelStorage } from 'syncmesh/storage/level'
 * const replica = await createReplica({ storage: levelStorage('./data/replica') })
 * ```
 *
 * ## Durability and ordering
 * Every `save` / `remove` resolves only once LevelDB has written it with `sync: true` (fsync of its write-ahead log),
 * so a resolved write survives `kill -9` (and a power loss, as far as the disk honours fsync). Calls are applied strictly in call order: writes issued
 * while a write is in flight are grouped into ONE atomic LevelDB batch (group commit: one fsync for all of them), and
 * a read sees exactly the writes issued before it (LevelDB reads run on a snapshot taken when the read is started,
 * which happens once every earlier write has been committed).
 *
 * ## Key encoding (LevelDB byte order = {@link compareKeys})
 * LevelDB orders keys by unsigned bytes; syncmesh orders keys element-wise by JavaScript string order (UTF-16 code
 * units), a key sorting before its extensions. A key `[e1, …, en]` is stored as
 *
 *   0x01 | unit(e1[0]) unit(e1[1]) … 0x00 | … | unit(en[0]) … 0x00
 *
 * where each UTF-16 code unit `u` becomes, by range,
 *
 *   u ≤ 0x007E            1 byte   u + 1                                   (0x01–0x7F)
 *   0x007F ≤ u ≤ 0x407E   2 bytes  0x80 | (v >> 8), v & 0xFF, v = u − 0x7F   (first byte 0x80–0xBF)
 *   0x407F ≤ u ≤ 0xFFFF   3 bytes  0xC0, u >> 8, u & 0xFF                    (first byte 0xC0)
 *
 * and 0x00 ends each element. Why this is correct:
 * - each unit's encoding is increasing in `u` and self-delimiting (its first byte gives its length, and the first
 *   bytes of the three ranges are ordered like the ranges), so two elements compare at their first differing unit
 *   exactly as JavaScript compares them — code units, not code points: '\uD83D\uDE00' < '\uE000' as in JS; lone
 *   surrogates are just units;
 * - the terminator 0x00 is below every unit's first byte, so an element sorts before its extensions ('a' < 'a\0')
 *   and the comparison of keys moves to the next element only when the elements are equal;
 * - a key's encoding is a byte prefix of another's exactly when the key is an element-wise prefix, so a shorter key
 *   sorts first, and `loadRange(prefix)` is the byte range [enc(prefix), enc(prefix) with its last 0x00 → 0x01):
 *   whole elements only — `['log']` never matches `['logs']` or `['lo']`;
 * - the encoding is injective and canonical (decoding checks it), and ASCII keys cost one byte per character.
 * The leading 0x01 is a namespace byte: 0x00-prefixed keys hold the adapter's own metadata (the format marker
 * `0x00 "format"` → `"syncmesh-level/1"`), which lets an open refuse a LevelDB written by something else.
 *
 * ## Space
 * Overwritten and removed values are reclaimed by LevelDB's background compaction; on a small store that may sit in
 * level-0/1 files for a while, so the adapter also runs `compactRange` over the whole store once the bytes written
 * since the last one exceed `max(compactAfterBytes, size after the last one)` — amortised O(1) per byte written.
 *
 * ## Errors
 * - a location that is a file, a non-empty directory holding no LevelDB, a LevelDB whose CURRENT / MANIFEST is
 *   garbage or missing, a write-ahead log with a damaged record (checked before LevelDB's lenient recovery would drop
 *   it, see "Write-ahead log check" below), a LevelDB that is not a syncmesh store, and a corrupt block or key found while reading:
 *   {@link StorageCorruptError} (message names the path; `key` is the storage key being read, or `[]` for the store);
 * - a store already open (in this process or another): a `StorageOpenError` with `code: 'STORAGE_LOCKED'`;
 * - any call after `close()`: {@link StorageClosedError}.
 * Opening is lazy (the first call waits for it, and every call rejects with the open error when it fails); use
 * {@link LevelStorage.open} to open eagerly.
 */
import { readFile, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { InvalidArgumentError } from '../../crdt/errors.js'
import { StorageClosedError, StorageCorruptError, StorageOpenError } from '../errors.js'
import type { Storage, StorageOp } from './types.js'

/** Options of {@link levelStorage}. */
export interface LevelStorageInit {
  /**
   * Create the store when `location` does not exist (or is an empty directory).
   * @default true
   */
  createIfMissing?: boolean
  /**
   * Run LevelDB's `compactRange` over the whole store once this many bytes (or the store's size after the last
   * compaction, whichever is larger) have been written since the last one; 0 leaves space reclamation to LevelDB.
   * @default 4_194_304 (4 MiB)
   */
  compactAfterBytes?: number
  /**
   * LevelDB's block cache, in bytes.
   * @default 8_388_608 (8 MiB)
   */
  cacheSize?: number
  /**
   * LevelDB's write buffer (memtable and its log) before it is written out as a table file, in bytes.
   * @default 4_194_304 (4 MiB)
   */
  writeBufferSize?: number
  /**
   * Snappy-compress table blocks.
   * @default true
   */
  compression?: boolean
}

/** The format marker stored under {@link META_FORMAT}. */
const FORMAT = 'syncmesh-level/1'
const NS_META = 0x00
const NS_DATA = 0x01
const META_FORMAT = Uint8Array.from([NS_META, ...new TextEncoder().encode('format')])
const DATA_START = Uint8Array.of(NS_DATA)
const DATA_END = Uint8Array.of(NS_DATA + 1)
const DEFAULT_COMPACT_AFTER_BYTES = 4 * 1024 * 1024
/** Entries fetched per iterator step in loadRange. */
const RANGE_CHUNK = 1024

// ---------------------------------------------------------------------------------------------------------------------
// Key codec

/** Encodes a storage key into LevelDB key bytes (see the file header); throws TypeError when it is not a string array. */
export function encodeLevelKey(key: readonly string[]): Uint8Array {
  if (!Array.isArray(key)) throw new InvalidArgumentError(`a storage key must be an array of strings, got ${typeof key}`)
  let max = 1
  for (const e of key) {
    if (typeof e !== 'string') throw new InvalidArgumentError(`a storage key must be an array of strings, got an element of type ${typeof e}`)
    max += 3 * e.length + 1
  }
  const out = new Uint8Array(max)
  out[0] = NS_DATA
  let p = 1
  for (const e of key) {
    for (let i = 0; i < e.length; i++) {
      const u = e.charCodeAt(i)
      if (u < 0x7f) {
        out[p++] = u + 1
      } else if (u < 0x407f) {
        const v = u - 0x7f
        out[p++] = 0x80 | (v >> 8)
        out[p++] = v & 0xff
      } else {
        out[p++] = 0xc0
        out[p++] = u >> 8
        out[p++] = u & 0xff
      }
    }
    out[p++] = 0
  }
  return p === max ? out : out.slice(0, p)
}

/** Decodes LevelDB key bytes made by {@link encodeLevelKey}; undefined when they are not a canonical encoding. */
export function decodeLevelKey(bytes: Uint8Array): string[] | undefined {
  if (bytes.length === 0 || bytes[0] !== NS_DATA) return undefined
  const key: string[] = []
  let units: number[] = []
  let p = 1
  while (p < bytes.length) {
    const b = bytes[p++]!
    if (b === 0) {
      key.push(unitsToString(units))
      units = []
    } else if (b < 0x80) {
      units.push(b - 1)
    } else if (b < 0xc0) {
      if (p >= bytes.length) return undefined
      units.push((((b & 0x3f) << 8) | bytes[p++]!) + 0x7f)
    } else if (b === 0xc0) {
      if (p + 1 >= bytes.length) return undefined
      const u = (bytes[p]! << 8) | bytes[p + 1]!
      p += 2
      if (u < 0x407f) return undefined // not canonical
      units.push(u)
    } else {
      return undefined
    }
  }
  return units.length === 0 ? key : undefined // the last element must be terminated
}

function unitsToString(units: number[]): string {
  let s = ''
  for (let i = 0; i < units.length; i += 4096) s += String.fromCharCode(...units.slice(i, i + 4096))
  return s
}

/** The byte range holding every key that starts with `prefix` (whole elements). */
function prefixRange(prefix: readonly string[]): { gte: Uint8Array; lt: Uint8Array } {
  if (prefix.length === 0) return { gte: DATA_START, lt: DATA_END }
  const gte = encodeLevelKey(prefix)
  const lt = gte.slice()
  lt[lt.length - 1] = 0x01 // the last element's terminator 0x00 → 0x01: just past every extension of the prefix
  return { gte, lt }
}

// ---------------------------------------------------------------------------------------------------------------------
// Errors

function levelCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | null
  if (typeof e !== 'object' || e === null) return undefined
  const own = typeof e.code === 'string' ? e.code : undefined
  const cause = typeof e.cause?.code === 'string' ? e.cause.code : undefined
  // abstract-level wraps native open errors as LEVEL_DATABASE_NOT_OPEN with the real code in `cause`.
  return own === 'LEVEL_DATABASE_NOT_OPEN' && cause ? cause : (own ?? cause)
}

function levelMessage(err: unknown): string {
  const e = err as { message?: unknown; cause?: { message?: unknown } } | null
  const cause = typeof e?.cause?.message === 'string' ? e.cause.message : undefined
  return cause ?? (err instanceof Error ? err.message : String(err))
}

/**
 * Whether a LevelDB error means damaged files rather than a failing system: corruption, or an I/O error about a file
 * of the store that is missing or cut short (LevelDB reports a truncated table as EINVAL, a vanished one as ENOENT).
 */
function isDamage(err: unknown): boolean {
  const code = levelCode(err)
  return code === 'LEVEL_CORRUPTION' || (code === 'LEVEL_IO_ERROR' && /No such file or directory|Invalid argument|NotFound/i.test(levelMessage(err)))
}

/** Reading `key` failed: damage becomes StorageCorruptError naming the key; anything else is passed on. */
function readError(location: string, key: string[], err: unknown): unknown {
  if (isDamage(err)) {
    return new StorageCorruptError(`LevelDB store at ${location} is corrupt (reading ${JSON.stringify(key)}): ${levelMessage(err)}`, key, { cause: err })
  }
  return err
}

function hasCode(err: unknown, code: string): boolean {
  return (err as { code?: unknown } | null)?.code === code
}

/** Names LevelDB writes in its directory before CURRENT exists (a crash while creating a store may leave them). */
const CREATION_LEFTOVERS = /^(LOCK|LOG|LOG\.old|MANIFEST-\d+|\d+\.dbtmp)$/
const DATA_FILES = /^\d+\.(log|ldb|sst)$/

/** Refuses a location LevelDB would happily (and destructively) turn into a new, empty database. */
async function checkLocation(location: string, createIfMissing: boolean): Promise<void> {
  let info
  try {
    info = await stat(location)
  } catch (err) {
    if (hasCode(err, 'ENOENT')) {
      if (createIfMissing) return
      throw new StorageOpenError(`no LevelDB store at ${location} (and createIfMissing is false)`, 'STORAGE_NOT_FOUND', { cause: err })
    }
    throw err
  }
  if (!info.isDirectory()) throw new StorageCorruptError(`${location} is not a LevelDB store: it is a file, not a directory`, [])
  const names = await readdir(location)
  if (names.includes('CURRENT')) return
  const data = names.filter((n) => DATA_FILES.test(n))
  if (data.length > 0) {
    throw new StorageCorruptError(`LevelDB store at ${location} is corrupt: its CURRENT file is missing but it holds data files (${data.slice(0, 3).join(', ')}${data.length > 3 ? ', …' : ''})`, [])
  }
  const foreign = names.filter((n) => !CREATION_LEFTOVERS.test(n))
  if (foreign.length > 0) {
    throw new StorageCorruptError(
      `${location} is not a LevelDB store: the directory holds other files (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', …' : ''}) and no CURRENT file`,
      [],
    )
  }
  if (names.length > 0 && !createIfMissing) throw new StorageOpenError(`no LevelDB store at ${location} (and createIfMissing is false)`, 'STORAGE_NOT_FOUND')
}

// ---------------------------------------------------------------------------------------------------------------------
// Write-ahead log check
//
// LevelDB (as built by classic-level, without `paranoid_checks`) recovers its write-ahead log leniently: a record with
// a bad checksum is skipped together with the rest of its 32 KiB block, and then the recovered data are rewritten and
// the damaged log deleted — acknowledged writes vanish without an error, and the evidence with them. So before LevelDB
// opens the store, every `NNNNNN.log` is checked here, record by record (format: 32 KiB blocks of records
// `masked crc32c (4, LE) | length (2, LE) | type (1) | payload`, crc over type and payload; FULL, or FIRST MIDDLE* LAST
// fragments; a block tail shorter than a header is padding; zero records are preallocation). A checksum mismatch or an
// impossible record sequence is corruption. A record cut off by the end of the file is what a crash during a write
// leaves behind (that write was never acknowledged): accepted, as LevelDB does — so a log truncated at a record
// boundary cannot be told from a crash and is not reported.

const LOG_BLOCK = 32768
const LOG_HEADER = 7
const WAL_FILE = /^\d+\.log$/

let crcTable: Uint32Array | undefined

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of `bytes[start, end)`. */
function crc32c(bytes: Uint8Array, start: number, end: number): number {
  let table = crcTable
  if (!table) {
    table = new Uint32Array(256)
    for (let n = 0; n < 256; n++) {
      let c = n
      for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1
      table[n] = c >>> 0
    }
    crcTable = table
  }
  let crc = 0xffffffff
  for (let i = start; i < end; i++) crc = table[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8)
  return (crc ^ 0xffffffff) >>> 0
}

/** Returns why the log is corrupt, or undefined when every record is intact (a torn tail is fine). */
export function checkLevelLog(log: Uint8Array): string | undefined {
  const view = new DataView(log.buffer, log.byteOffset, log.byteLength)
  let inFragment = false
  for (let block = 0; block < log.length; block += LOG_BLOCK) {
    const blockEnd = Math.min(block + LOG_BLOCK, log.length)
    let p = block
    while (blockEnd - p >= LOG_HEADER) {
      const masked = view.getUint32(p, true)
      const length = view.getUint16(p + 4, true)
      const type = log[p + 6]!
      if (type === 0 && length === 0) break // preallocated (zero) space: LevelDB skips the rest of the block
      if (p + LOG_HEADER + length > blockEnd) {
        if (blockEnd === log.length) return undefined // cut off by the end of the file: a torn, unacknowledged write
        return `record at offset ${p} claims ${length} bytes, past the end of its block`
      }
      const rot = (masked - 0xa282ead8) >>> 0
      const expected = ((rot >>> 17) | (rot << 15)) >>> 0
      if (crc32c(log, p + 6, p + LOG_HEADER + length) !== expected) return `record at offset ${p} fails its checksum`
      if (type === 1 || type === 2) {
        if (inFragment) return `record at offset ${p} starts a new record inside a fragmented one`
        inFragment = type === 2
      } else if (type === 3 || type === 4) {
        if (!inFragment) return `record at offset ${p} continues a fragmented record that was never started`
        inFragment = type === 3
      } else {
        return `record at offset ${p} has unknown type ${type}`
      }
      p += LOG_HEADER + length
    }
  }
  return undefined
}

async function checkWriteAheadLogs(location: string): Promise<void> {
  let names: string[]
  try {
    names = await readdir(location)
  } catch {
    return // missing: a new store
  }
  for (const name of names.filter((n) => WAL_FILE.test(n))) {
    const file = join(location, name)
    const problem = checkLevelLog(await readFile(file))
    if (problem) {
      throw new StorageCorruptError(`LevelDB store at ${location} is corrupt: its write-ahead log ${name}: ${problem} (LevelDB would silently drop the writes after it)`, [])
    }
  }
}

/** Turns an error of `db.open()` into a typed one naming the location. */
function openError(location: string, err: unknown): unknown {
  const code = levelCode(err)
  const message = levelMessage(err)
  if (code === 'LEVEL_LOCKED') {
    return new StorageOpenError(`LevelDB store at ${location} is locked: it is already open (in this or another process): ${message}`, 'STORAGE_LOCKED', { cause: err })
  }
  // Includes CURRENT naming a MANIFEST that does not exist, and a truncated table file (both I/O errors to LevelDB).
  if (isDamage(err)) return new StorageCorruptError(`LevelDB store at ${location} is corrupt: ${message}`, [], { cause: err })
  return new StorageOpenError(`could not open LevelDB store at ${location}: ${message}`, 'STORAGE_OPEN_FAILED', { cause: err })
}

// ---------------------------------------------------------------------------------------------------------------------
// The adapter

type Db = ClassicLevel<Uint8Array, Uint8Array>
type WriteOp = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array }

/** Queued calls, run strictly in call order: consecutive writes form one batch, reads start once earlier writes are in. */
type Item =
  | { readonly kind: 'write'; readonly ops: WriteOp[]; bytes: number; readonly done: Deferred }
  | { readonly kind: 'read'; start(db: Db): void; fail(err: unknown): void }

interface Deferred {
  readonly promise: Promise<void>
  resolve(): void
  reject(err: unknown): void
}

function deferred(): Deferred {
  let resolve!: () => void
  let reject!: (err: unknown) => void
  const promise = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

/** A {@link Storage} on a LevelDB directory; see the module documentation. */
export class LevelStorage implements Storage {
  /** The directory holding the store. */
  readonly location: string
  private readonly init: LevelStorageInit
  private readonly compactAfterBytes: number
  private readonly opening: Promise<Db>
  private readonly queue: Item[] = []
  private draining = false
  private drained: Deferred | undefined
  private readonly reads = new Set<Promise<void>>()
  private closed = false
  private closing: Promise<void> | undefined
  private written = 0
  private compactThreshold: number
  private compacting: Promise<void> | undefined

  constructor(location: string, init: LevelStorageInit = {}) {
    if (typeof location !== 'string' || location.length === 0) throw new InvalidArgumentError('levelStorage: location must be a non-empty path')
    this.location = location
    this.init = init
    this.compactAfterBytes = init.compactAfterBytes ?? DEFAULT_COMPACT_AFTER_BYTES
    this.compactThreshold = this.compactAfterBytes
    this.opening = this.openDb()
    this.opening.catch(() => {}) // reported by the first call (or by LevelStorage.open)
  }

  /** Opens the store at `location` now, throwing StorageCorruptError / a STORAGE_LOCKED error at once. */
  static async open(location: string, init: LevelStorageInit = {}): Promise<LevelStorage> {
    const s = new LevelStorage(location, init)
    await s.opening
    return s
  }

  /** {@inheritDoc Storage.load} */
  load(key: string[]): Promise<Uint8Array | undefined> {
    return this.read(key, async (db, k) => {
      const value = await db.get(k)
      return value === undefined ? undefined : plain(value)
    })
  }

  /** {@inheritDoc Storage.loadRange} */
  loadRange(prefix: string[]): Promise<{ key: string[]; data: Uint8Array }[]> {
    return this.read(prefix, async (db) => {
      const it = db.iterator(prefixRange(prefix)) // the snapshot is taken here, synchronously
      const out: { key: string[]; data: Uint8Array }[] = []
      try {
        for (;;) {
          const chunk = await it.nextv(RANGE_CHUNK)
          if (chunk.length === 0) break
          for (const [k, v] of chunk) {
            const key = decodeLevelKey(k)
            if (key === undefined) {
              const hex = Array.from(k.subarray(0, 32), (b) => b.toString(16).padStart(2, '0')).join('')
              throw new StorageCorruptError(`LevelDB store at ${this.location} holds a key that is not a syncmesh key (0x${hex}${k.length > 32 ? '…' : ''})`, prefix)
            }
            out.push({ key, data: plain(v) })
          }
        }
      } finally {
        await it.close()
      }
      return out
    })
  }

  /** {@inheritDoc Storage.save} */
  save(key: string[], data: Uint8Array): Promise<void> {
    return this.batch([{ type: 'put', key, data }])
  }

  /** {@inheritDoc Storage.remove} */
  remove(key: string[]): Promise<void> {
    return this.batch([{ type: 'del', key }])
  }

  /** {@inheritDoc Storage.batch} */
  batch(ops: readonly StorageOp[]): Promise<void> {
    if (this.closed) return Promise.reject(new StorageClosedError('storage is closed'))
    const encoded: WriteOp[] = []
    let bytes = 0
    try {
      for (const op of ops) {
        const key = encodeLevelKey(op.key)
        bytes += key.length
        if (op.type === 'del') {
          encoded.push({ type: 'del', key })
          continue
        }
        if (!(op.data instanceof Uint8Array)) throw new InvalidArgumentError('save: data must be a Uint8Array')
        // Copied now: the caller may reuse its buffer as soon as the call returns.
        encoded.push({ type: 'put', key, value: op.data.slice() })
        bytes += op.data.byteLength
      }
    } catch (err) {
      return Promise.reject(err)
    }
    return this.write(encoded, bytes)
  }

  /**
   * Runs LevelDB's compaction over the whole store now, reclaiming the space of overwritten and removed values
   * (it also runs by itself, see {@link LevelStorageInit.compactAfterBytes}).
   */
  async compact(): Promise<void> {
    if (this.closed) throw new StorageClosedError('storage is closed')
    const db = await this.opening
    await this.runCompaction(db)
  }

  /** {@inheritDoc Storage.close} Waits for calls made before it, then releases the LevelDB lock. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true
      this.closing = (async () => {
        if (this.draining) await this.drained!.promise
        await Promise.allSettled([...this.reads])
        await this.compacting?.catch(() => {})
        const db = await this.opening.catch(() => undefined)
        await db?.close()
      })()
    }
    return this.closing
  }

  // -------------------------------------------------------------------------------------------------------------------

  private async openDb(): Promise<Db> {
    const createIfMissing = this.init.createIfMissing ?? true
    await checkLocation(this.location, createIfMissing)
    await checkWriteAheadLogs(this.location)
    const db: Db = new ClassicLevel<Uint8Array, Uint8Array>(this.location, {
      keyEncoding: 'view',
      valueEncoding: 'view',
      createIfMissing,
      ...(this.init.cacheSize !== undefined ? { cacheSize: this.init.cacheSize } : {}),
      ...(this.init.writeBufferSize !== undefined ? { writeBufferSize: this.init.writeBufferSize } : {}),
      ...(this.init.compression !== undefined ? { compression: this.init.compression } : {}),
    })
    try {
      await db.open()
    } catch (err) {
      throw openError(this.location, err)
    }
    try {
      const marker = await db.get(META_FORMAT)
      if (marker === undefined) {
        const it = db.keys({ limit: 1 })
        const any = await it.next().finally(() => it.close())
        if (any !== undefined) {
          throw new StorageCorruptError(`${this.location} is a LevelDB database but not a syncmesh store (it has no "${FORMAT}" format marker)`, [])
        }
        await db.put(META_FORMAT, new TextEncoder().encode(FORMAT), { sync: true })
      } else if (new TextDecoder().decode(marker) !== FORMAT) {
        throw new StorageCorruptError(`${this.location} holds a store of an unknown format ${JSON.stringify(new TextDecoder().decode(marker).slice(0, 64))} (expected "${FORMAT}")`, [])
      }
    } catch (err) {
      await db.close().catch(() => {})
      throw err instanceof StorageCorruptError ? err : openError(this.location, err)
    }
    return db
  }

  private read<T>(key: string[], fn: (db: Db, encoded: Uint8Array) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new StorageClosedError('storage is closed'))
    let encoded: Uint8Array
    try {
      encoded = encodeLevelKey(key)
    } catch (err) {
      return Promise.reject(err)
    }
    return new Promise<T>((resolve, reject) => {
      this.enqueue({
        kind: 'read',
        start: (db) => {
          const run = fn(db, encoded).then(resolve, (err: unknown) => reject(readError(this.location, key, err)))
          this.reads.add(run)
          void run.finally(() => this.reads.delete(run))
        },
        fail: reject,
      })
    })
  }

  /** Queues writes; they join the batch at the tail of the queue (one atomic LevelDB batch, one fsync). */
  private write(ops: WriteOp[], bytes: number): Promise<void> {
    const last = this.queue.at(-1)
    if (last?.kind === 'write') {
      last.ops.push(...ops)
      last.bytes += bytes
      return last.done.promise
    }
    const item = { kind: 'write' as const, ops, bytes, done: deferred() }
    this.enqueue(item)
    return item.done.promise
  }

  private enqueue(item: Item): void {
    this.queue.push(item)
    if (!this.draining) {
      this.draining = true
      this.drained = deferred()
      void this.drain()
    }
  }

  /** Runs queued calls in order until the queue is empty. */
  private async drain(): Promise<void> {
    let db: Db | undefined
    let openFailure: unknown
    try {
      db = await this.opening
    } catch (err) {
      openFailure = err
    }
    for (;;) {
      const item = this.queue.shift()
      if (!item) break
      if (db === undefined) {
        if (item.kind === 'write') item.done.reject(openFailure)
        else item.fail(openFailure)
        continue
      }
      if (item.kind === 'read') {
        // Started synchronously: LevelDB takes its snapshot now, after every earlier write and before any later one.
        item.start(db)
        continue
      }
      try {
        await db.batch(item.ops, { sync: true })
        item.done.resolve()
      } catch (err) {
        item.done.reject(isDamage(err) ? new StorageCorruptError(`LevelDB store at ${this.location} is corrupt (writing): ${levelMessage(err)}`, [], { cause: err }) : err)
      }
      this.written += item.bytes
      if (this.compactAfterBytes > 0 && this.written >= this.compactThreshold && !this.compacting && !this.closed) {
        void this.runCompaction(db).catch(() => {}) // best effort: space only, never data
      }
    }
    this.draining = false
    this.drained!.resolve()
  }

  private runCompaction(db: Db): Promise<void> {
    if (this.compacting) return this.compacting
    this.written = 0
    const run = (async () => {
      await db.compactRange(DATA_START, DATA_END)
      const size = await db.approximateSize(DATA_START, DATA_END)
      this.compactThreshold = Math.max(this.compactAfterBytes, size)
    })()
    this.compacting = run.finally(() => {
      this.compacting = undefined
    })
    return this.compacting
  }
}

/** Buffers from classic-level → plain Uint8Array views (each value has its own memory; `.slice()` must copy). */
function plain(v: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(v) === Uint8Array.prototype ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
}

/** A durable {@link Storage} on the LevelDB directory `location` (created if missing). */
export function levelStorage(location: string, options?: LevelStorageInit): LevelStorage {
  return new LevelStorage(location, options)
}
