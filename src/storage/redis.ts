/**
 * `syncmesh/storage/redis` — a {@link Storage} on a Redis server, for an always-on (server-side) peer.
 *
 * ```ts
 * import { createReplica } from 'syncmesh'
 * import { redisStorage } from 'syncmesh/storage/redis'
 * const replica = await createReplica({ storage: redisStorage({ url: 'redis://127.0.0.1:6379', namespace: 'notes' }) })
 * ```
 *
 * ## Layout
 * One namespace (default `'syncmesh'`) is two Redis keys, plus the locks of the replicas that have it open:
 *
 *   `<namespace>:values`   hash        field = encoded storage key, value = the stored bytes (binary-safe)
 *   `<namespace>:index`    sorted set  member = encoded storage key, score 0 (queried with ZRANGEBYLEX)
 *   `<namespace>:lock:*`   strings     lock tokens with a TTL (see Sharing)
 *
 * `save` is `MULTI HSET values k v; ZADD index 0 k EXEC` and `remove` is `MULTI HDEL; ZREM EXEC`, so value and index
 * always change together (Redis does not roll a transaction back, but the only runtime failure possible here is
 * WRONGTYPE — a namespace key holding something else — which the call rejects with). `load` is one HGET.
 * `loadRange(prefix)` pages through the index with `ZRANGEBYLEX index [P (P' LIMIT 0 500` and reads each page's
 * values with one HMGET. It is not a snapshot across writes made concurrently by other callers: an entry removed
 * between the two reads is left out (the replica never does this: its writes go through one queue). An indexed key
 * that still has no value once re-checked atomically, or an index member that does not decode, is reported as
 * StorageCorruptError. For Redis Cluster, put a hash tag in the namespace (`'{notes}'`) so both keys live in one
 * slot — though this adapter talks to a single node (one node-redis client: its one connection keeps call order).
 *
 * ## Key encoding (order-preserving, injective, prefix-matchable)
 * ZRANGEBYLEX compares members as bytes (memcmp, shorter first on a tie), while {@link compareKeys} compares the key
 * elements as JS strings, i.e. by UTF-16 code unit. Plain UTF-8 would not do: it orders astral characters (stored as
 * surrogates U+D800–U+DFFF) after U+E000–U+FFFF, whereas code-unit order puts them before; it also cannot carry lone
 * surrogates. So each element is encoded code unit by code unit, and terminated:
 *
 *   code unit 0x0000           → 01 01
 *   code unit 0x0001           → 01 02
 *   code unit 0x0002–0x007F    → the unit itself (one byte: ASCII stays readable in redis-cli)
 *   code unit 0x0080–0x07FF    → two bytes, the UTF-8 bit pattern
 *   code unit 0x0800–0xFFFF    → three bytes, the UTF-8 bit pattern — surrogates included, each unit on its own
 *   end of element             → 00
 *
 * The unit codes form a prefix-free code whose byte order is the numeric order of the units, and the terminator 00 is
 * below the first byte of every unit code. Hence: the encoding is injective; memcmp order of two encoded keys is
 * `compareKeys` order (a shorter element sorts before its extensions because 00 is smallest; a key that is a
 * whole-element prefix of another is a byte prefix of it, and shorter sorts first); and the keys that start with the
 * whole elements of `prefix` are exactly the members that start with the bytes P = enc(prefix) — the half-open range
 * [P, P') where P' is P with its final 00 raised to 01 (the empty prefix is the whole index, `-` to `+`).
 * A member that does not decode (written by someone else) is reported as StorageCorruptError.
 *
 * ## Durability
 * A resolved `save`/`remove` means the Redis server acknowledged the transaction (EXEC replied). Whether that write
 * survives a crash of the server (or of its machine) depends on the server's persistence: run it with
 * `appendonly yes` and `appendfsync always` for per-write durability (the default `appendfsync everysec` may lose up
 * to about one second of acknowledged writes on a machine crash; RDB snapshots alone lose everything since the last
 * one). A crash of *this* process never loses an acknowledged write. The tests run `redis-server --appendonly yes
 * --appendfsync always --save ''` and check that acknowledged data survive a SIGTERM and a SIGKILL of the server and
 * its restart on the same directory (a SIGKILL proves the write was in the AOF before the reply; only a machine crash
 * could prove the fsync — that part is Redis' promise). On Redis ≥ 7.2 with `appendfsync everysec`, `WAITAOF` could
 * give the same per-write guarantee; this adapter does not issue it (the tested server, Debian 12's, is 7.0).
 * Values are checksummed one level up (src/persistence.ts), so a value altered inside Redis is reported as
 * StorageCorruptError by the replica, never silently used.
 *
 * ## Sharing
 * Any number of replicas — in one process or in many, on one machine or several — may open the same namespace at
 * once ({@link RedisStorage.sharing}). Each takes a writer slot of its own (own origin id, own keys), so none
 * overwrites another's acknowledged writes; they share one peer id, see each other's writes at once over Redis
 * pub/sub with no network transport, and one of them (the leader) runs the transports (src/tabs/group.ts). The locks
 * are leases on the server with a time to live (`lockTtlMs`, default 10 s) and the channel is pub/sub: see
 * redis-sharing.ts, including the caveat — a process paused for longer than the TTL may write once more after
 * another replica took its slot over. A replica that cannot renew its slot's lease (a Redis outage longer than
 * 2/3 of the TTL, a long pause) reports LeaseLostError and closes; a crashed one's slot is taken over by the next
 * opener once its lease expired. The sharing uses two more connections (duplicates of the client), opened when a
 * replica opens the storage.
 *
 * ## Client
 * Pass `client` — an already-connected node-redis v5 client that you own (it is never closed by this adapter; it may
 * be shared, but not with code that uses WATCH on it, which would interfere with this adapter's MULTI) — or `url`, in
 * which case the adapter creates, connects and, on `close()`, closes its own client. Values travel as Buffers
 * (a per-command RESP type mapping), whatever the client's own type mapping or RESP version.
 */
import { type RedisClientType, type RedisFunctions, type RedisModules, type RedisScripts, type RespVersions, type TypeMapping, RESP_TYPES, createClient } from 'redis'
import { InvalidArgumentError } from '../../crdt/errors.js'
import { StorageClosedError, StorageCorruptError, StorageProtocolError } from '../errors.js'
import { type DuplicableClient, redisSharing } from './redis-sharing.js'
import type { Storage, StorageOp, StorageSharing } from './types.js'

/** Any node-redis v5 client (`createClient(...)`), whatever its modules, RESP version or type mapping. */
export type AnyRedisClient = RedisClientType<RedisModules, RedisFunctions, RedisScripts, RespVersions, TypeMapping>

/** Options of {@link redisStorage}. */
export interface RedisStorageInit {
  /**
   * An already-connected node-redis v5 client. The caller owns it: `close()` leaves it open.
   * Give either `client` or `url`, not both.
   */
  client?: AnyRedisClient
  /**
   * Where to connect (`redis[s]://[[user][:password]@]host[:port][/db]`) when no `client` is given; the adapter owns
   * that client and `close()` closes it.
   * @default node-redis' default, redis://localhost:6379
   */
  url?: string
  /**
   * Prefix of the Redis keys that hold this store (`<namespace>:values`, `<namespace>:index`, and the locks
   * `<namespace>:lock:*` while replicas have it open). Several replicas, in one process or many, may open the same
   * namespace at once (see "Sharing" in the module comment).
   * @default 'syncmesh'
   */
  namespace?: string
  /**
   * Time to live of the locks replicas sharing the namespace hold (their writer slot, the leadership), in ms. They are
   * renewed every third of it; a replica that cannot renew for two thirds of it gives its slot up (LeaseLostError,
   * the replica closes), and a crashed replica's slot is free for the others after at most this long.
   * @default 10_000
   */
  lockTtlMs?: number
  /**
   * Receives the errors of a client the adapter created (connection lost, reconnect failures): node-redis reconnects
   * by itself, and commands issued meanwhile wait in its offline queue. Without it such errors are dropped (an
   * unlistened 'error' event would crash the process).
   */
  onError?: (err: unknown) => void
}

/** The slice of a node-redis v5 client this adapter uses. */
interface RawMulti {
  addCommand(args: (string | Buffer)[]): RawMulti
  exec(): Promise<unknown>
}
interface RawClient {
  sendCommand(args: (string | Buffer)[], options?: { typeMapping?: Record<number, unknown> }): Promise<unknown>
  multi(): RawMulti
}

/** Replies as Buffers (bulk strings) instead of strings: values are bytes, and encoded keys are not UTF-8. */
const BUFFERS = { typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } }
/** Index entries per ZRANGEBYLEX page (and values per HMGET). */
const PAGE = 500

/** A {@link Storage} on Redis; see the module comment for the layout, the key encoding and durability. */
export class RedisStorage implements Storage {
  private readonly client: RawClient
  private readonly owned: { close(): Promise<void> } | undefined
  private readonly valuesKey: string
  private readonly indexKey: string
  private readonly pending = new Set<Promise<unknown>>()
  private connectError: unknown
  private closing: Promise<void> | undefined
  private readonly closeSharing: () => void
  /** Several replicas may open one namespace at once: Redis locks and pub/sub coordinate them (see the module comment). */
  readonly sharing: StorageSharing

  constructor(init: RedisStorageInit = {}) {
    if (init.client !== undefined && init.url !== undefined) throw new InvalidArgumentError('redisStorage: give either `client` or `url`, not both')
    const namespace = init.namespace ?? 'syncmesh'
    if (typeof namespace !== 'string' || namespace === '') throw new InvalidArgumentError('redisStorage: `namespace` must be a non-empty string')
    this.valuesKey = `${namespace}:values`
    this.indexKey = `${namespace}:index`
    if (init.client !== undefined) {
      this.client = init.client as unknown as RawClient
      this.owned = undefined
    } else {
      const client = createClient(init.url !== undefined ? { url: init.url } : {})
      const onError = init.onError
      client.on('error', (err: unknown) => onError?.(err))
      // connect() marks the client open at once; commands issued before it is ready wait in its offline queue, in order.
      client.connect().catch((err: unknown) => {
        this.connectError = err
      })
      this.client = client as unknown as RawClient
      this.owned = client
    }
    const base = (init.client ?? this.owned) as unknown as DuplicableClient & { options?: { database?: number } }
    const shared = redisSharing({ namespace, db: base.options?.database ?? 0, ttlMs: init.lockTtlMs ?? 10_000, client: base, onError: init.onError })
    this.sharing = shared.sharing
    this.closeSharing = shared.close
  }

  /** {@inheritDoc Storage.load} */
  load(key: string[]): Promise<Uint8Array | undefined> {
    return this.run(async () => {
      const reply = await this.client.sendCommand(['HGET', this.valuesKey, encodeKey(checkKey(key))], BUFFERS)
      return reply == null ? undefined : copyBytes(reply)
    })
  }

  /** {@inheritDoc Storage.save} */
  save(key: string[], data: Uint8Array): Promise<void> {
    return this.run(async () => {
      if (!(data instanceof Uint8Array)) throw new InvalidArgumentError('RedisStorage.save: data must be a Uint8Array')
      const k = encodeKey(checkKey(key))
      // Buffer.from(bytes) copies, so a caller that reuses its array after save() returns cannot change what is sent.
      await transaction(this.client.multi().addCommand(['HSET', this.valuesKey, k, Buffer.from(data)]).addCommand(['ZADD', this.indexKey, '0', k]))
    })
  }

  /** {@inheritDoc Storage.remove} */
  remove(key: string[]): Promise<void> {
    return this.run(async () => {
      const k = encodeKey(checkKey(key))
      await transaction(this.client.multi().addCommand(['HDEL', this.valuesKey, k]).addCommand(['ZREM', this.indexKey, k]))
    })
  }

  /** {@inheritDoc Storage.batch} */
  batch(ops: readonly StorageOp[]): Promise<void> {
    return this.run(async () => {
      // Everything is encoded and copied before the first await, then sent as one MULTI/EXEC: atomic.
      const multi = this.client.multi()
      for (const op of ops) {
        const k = encodeKey(checkKey(op.key))
        if (op.type === 'del') {
          multi.addCommand(['HDEL', this.valuesKey, k]).addCommand(['ZREM', this.indexKey, k])
          continue
        }
        if (!(op.data instanceof Uint8Array)) throw new InvalidArgumentError('RedisStorage.batch: data must be a Uint8Array')
        multi.addCommand(['HSET', this.valuesKey, k, Buffer.from(op.data)]).addCommand(['ZADD', this.indexKey, '0', k])
      }
      if (ops.length > 0) await transaction(multi)
    })
  }

  /** {@inheritDoc Storage.loadRange} */
  loadRange(prefix: string[]): Promise<{ key: string[]; data: Uint8Array }[]> {
    return this.run(async () => {
      checkKey(prefix)
      const p = encodeKey(prefix)
      let lo: Buffer = p.length === 0 ? Buffer.from('-') : Buffer.concat([LEX_INCLUSIVE, p])
      // P' = P with its final terminator 00 raised to 01: the first byte string above every extension of P.
      const hi: Buffer = p.length === 0 ? Buffer.from('+') : Buffer.concat([LEX_EXCLUSIVE, p.subarray(0, -1), ONE])
      const out: { key: string[]; data: Uint8Array }[] = []
      for (;;) {
        const members = asBufferArray(await this.client.sendCommand(['ZRANGEBYLEX', this.indexKey, lo, hi, 'LIMIT', '0', String(PAGE)], BUFFERS), 'ZRANGEBYLEX')
        if (members.length === 0) break
        const keys = members.map((m) => decodeKey(m, this.indexKey))
        const values = asArray(await this.client.sendCommand(['HMGET', this.valuesKey, ...members], BUFFERS), 'HMGET')
        for (let i = 0; i < members.length; i++) {
          const v = values[i]
          if (v == null) {
            await this.checkRemoved(members[i]!, keys[i]!)
            continue
          }
          out.push({ key: keys[i]!, data: copyBytes(v) })
        }
        if (members.length < PAGE) break
        lo = Buffer.concat([LEX_EXCLUSIVE, members[members.length - 1]!])
      }
      return out
    })
  }

  /**
   * Waits for the operations in flight, then releases the store: later calls reject with StorageClosedError.
   * Closes the Redis client only if the adapter created it (from `url`).
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([...this.pending])
      this.closeSharing() // its connections stay until the leases and channels handed out are released
      if (this.owned && this.connectError === undefined) await this.owned.close()
    })()
    return this.closing
  }

  /**
   * An indexed key whose value was missing: normally removed between the two reads of `loadRange`. If the index still
   * holds it and the value is still absent (checked atomically), the namespace is inconsistent — tampered with, or a
   * transaction half-failed on a key of the wrong type — and that is reported, not skipped.
   */
  private async checkRemoved(member: Buffer, key: string[]): Promise<void> {
    const [score, exists] = await transaction(this.client.multi().addCommand(['ZSCORE', this.indexKey, member]).addCommand(['HEXISTS', this.valuesKey, member]))
    if (score != null && Number(exists) === 0) {
      throw new StorageCorruptError(`storage entry ${key.join('/')} is in ${this.indexKey} but has no value in ${this.valuesKey}`, key)
    }
  }

  private run<T>(op: () => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(new StorageClosedError('storage is closed'))
    if (this.connectError !== undefined) return Promise.reject(this.connectError)
    const p = op()
    this.pending.add(p)
    const forget = (): void => {
      this.pending.delete(p)
    }
    p.then(forget, forget)
    return p
  }
}

/** Creates a {@link RedisStorage}: a Storage on Redis (see the module comment). */
export function redisStorage(init: RedisStorageInit = {}): RedisStorage {
  return new RedisStorage(init)
}

// ---------------------------------------------------------------------------------------------------------------------
// Replies

/** Runs a MULTI/EXEC; a command that failed inside it (e.g. WRONGTYPE: the key holds something else) is rethrown as itself. */
async function transaction(multi: RawMulti): Promise<unknown[]> {
  try {
    return asArray(await multi.exec(), 'EXEC')
  } catch (err) {
    const e = err as { replies?: unknown[]; errorIndexes?: number[] }
    const first = Array.isArray(e.replies) && Array.isArray(e.errorIndexes) ? e.replies[e.errorIndexes[0] ?? -1] : undefined
    throw first instanceof Error ? first : err
  }
}

const LEX_INCLUSIVE = Buffer.from('[')
const LEX_EXCLUSIVE = Buffer.from('(')
const ONE = Buffer.from([1])

function copyBytes(reply: unknown): Uint8Array {
  if (!(reply instanceof Uint8Array)) throw new StorageProtocolError(`unexpected Redis reply: ${typeof reply}`)
  return new Uint8Array(reply) // a fresh copy: the reply may be a view into a larger socket chunk
}

function asArray(reply: unknown, command: string): unknown[] {
  if (!Array.isArray(reply)) throw new StorageProtocolError(`unexpected Redis reply to ${command}: ${typeof reply}`)
  return reply
}

function asBufferArray(reply: unknown, command: string): Buffer[] {
  const arr = asArray(reply, command)
  for (const m of arr) if (!Buffer.isBuffer(m)) throw new StorageProtocolError(`unexpected Redis reply to ${command}: ${typeof m}`)
  return arr as Buffer[]
}

// ---------------------------------------------------------------------------------------------------------------------
// Key encoding (see the module comment)

function checkKey(key: string[]): string[] {
  if (!Array.isArray(key) || !key.every((e) => typeof e === 'string')) throw new InvalidArgumentError('a storage key must be an array of strings')
  return key
}

/** Encodes a key so that byte order is {@link compareKeys} order and whole-element prefixes are byte prefixes. */
export function encodeKey(key: readonly string[]): Buffer {
  let size = 0
  for (const e of key) size += e.length * 3 + 1
  const out = Buffer.allocUnsafe(size)
  let n = 0
  for (const e of key) {
    for (let i = 0; i < e.length; i++) {
      const u = e.charCodeAt(i)
      if (u < 0x02) {
        out[n++] = 0x01
        out[n++] = u + 1
      } else if (u < 0x80) {
        out[n++] = u
      } else if (u < 0x800) {
        out[n++] = 0xc0 | (u >> 6)
        out[n++] = 0x80 | (u & 0x3f)
      } else {
        out[n++] = 0xe0 | (u >> 12)
        out[n++] = 0x80 | ((u >> 6) & 0x3f)
        out[n++] = 0x80 | (u & 0x3f)
      }
    }
    out[n++] = 0x00
  }
  return out.subarray(0, n)
}

/** Inverse of {@link encodeKey}; a byte string it could not have produced is a StorageCorruptError. */
export function decodeKey(bytes: Uint8Array, where = 'redis index'): string[] {
  const key: string[] = []
  let units: number[] = []
  const bad = (): never => {
    const hex = Buffer.from(bytes).toString('hex')
    throw new StorageCorruptError(`${where}: member 0x${hex} is not a syncmesh storage key`, [where, hex])
  }
  const cont = (i: number): number => {
    const b = bytes[i]
    return b !== undefined && (b & 0xc0) === 0x80 ? b & 0x3f : bad()
  }
  let i = 0
  while (i < bytes.length) {
    const b = bytes[i]!
    if (b === 0x00) {
      key.push(unitsToString(units))
      units = []
      i += 1
    } else if (b === 0x01) {
      const next = bytes[i + 1]
      if (next !== 0x01 && next !== 0x02) bad()
      units.push(next! - 1)
      i += 2
    } else if (b < 0x80) {
      units.push(b)
      i += 1
    } else if (b >= 0xc2 && b < 0xe0) {
      units.push(((b & 0x1f) << 6) | cont(i + 1))
      i += 2
    } else if (b >= 0xe0 && b < 0xf0) {
      const u = ((b & 0x0f) << 12) | (cont(i + 1) << 6) | cont(i + 2)
      if (u < 0x800) bad() // overlong
      units.push(u)
      i += 3
    } else {
      bad()
    }
  }
  if (units.length > 0) bad() // the last element is not terminated
  return key
}

function unitsToString(units: number[]): string {
  let s = ''
  for (let i = 0; i < units.length; i += 4096) s += String.fromCharCode(...units.slice(i, i + 4096))
  return s
}
