/**
 * The server's store for store-and-forward (`syncmesh serve --store <dir | redis://…>`): per room topic, an
 * append-only sequence of opaque blobs that members upload and later joiners fetch (see the Store section of the
 * relay spec in transports/relay/wire.ts). The server never reads a blob: in an encrypted room it holds sealed bytes only.
 *
 * A room is keyed by SHA-256 of its topic (hex), so no topic string, however crafted, can name another room's keys.
 * Each blob has a key `(seq, part)`: uploads take `(seq, 0)`; a compaction up to `upto` deletes every key with
 * `seq ≤ upto` and writes its snapshot parts as `(upto, 0..k−1)` in one atomic step.
 *
 * - {@link levelBlobStore}: a LevelDB directory (classic-level). Writes are group-committed: every operation waiting
 *   when a batch starts goes into that one `sync: true` batch, so an acknowledged upload is on disk (fsynced), and
 *   acknowledgements leave in upload order. One process owns the directory (LevelDB's lock).
 * - {@link redisBlobStore}: a Redis namespace, shared by any number of server processes (each operation is one Lua
 *   script, so sequence numbers and quotas stay exact across processes). An acknowledged upload is one the Redis
 *   server replied to: run it with `appendonly yes`, `appendfsync always` for per-write durability.
 * - {@link memoryBlobStore}: for tests; nothing survives the process.
 *
 * Layout (Level keys are UTF-8 strings; `h` = hex SHA-256 of the topic, `seq` 13 and `part` 4 hex digits):
 *
 *   Level                         Redis (namespace `ns`)
 *   `id`         the store id     `ns:id`                 string
 *   `total`      bytes, decimal   `ns:total`              integer
 *   `m/h`        room meta JSON   `ns:r:h:m`              hash {head, bytes, compacted}
 *   `b/h/seqpart`  blob           `ns:r:h:b` + `ns:r:h:i` hash key → blob, sorted set of keys (lex)
 */
import { createHash, randomBytes } from 'node:crypto'
import { MissingDependencyError, StoreLimitError } from './errors.js'

/** Limits a store enforces on one operation. */
export interface StoreLimits {
  /** Most bytes of blobs one room may hold (a compaction that shrinks a room is always allowed). */
  readonly maxRoomBytes: number
  /** Most bytes of blobs the whole store may hold. */
  readonly maxStoreBytes: number
}

/** One page of blobs, as {@link BlobStore.range} returns it. */
export interface BlobPage {
  readonly blobs: { readonly seq: number; readonly blob: Uint8Array }[]
  readonly upto: number
  readonly more: boolean
  readonly bytes: number
}

/** Where `syncmesh serve` keeps the rooms' blobs. Every method may reject (I/O); limits reject with StoreLimitError. */
export interface BlobStore {
  /** Identifies this store's data (clients key their cursors by it); set once opened. */
  readonly id: string
  /** The room's newest sequence number and stored bytes. */
  info(topic: string): Promise<{ head: number; bytes: number }>
  /** Appends a blob; resolves once durable, with its sequence number and the room's bytes. In call order per room. */
  put(topic: string, blob: Uint8Array, limits: StoreLimits): Promise<{ seq: number; bytes: number }>
  /** Blobs with `seq > after`, about `maxBytes` of them, never ending inside one `seq`. */
  range(topic: string, after: number, maxBytes: number): Promise<BlobPage>
  /** Replaces every blob with `seq ≤ upto` by `blobs`; `applied: false` when a compaction up to `upto` or later was done. */
  compact(topic: string, upto: number, blobs: readonly Uint8Array[], limits: StoreLimits): Promise<{ applied: boolean; bytes: number }>
  /** Total bytes of blobs held. */
  totalBytes(): Promise<number>
  close(): Promise<void>
}

/** The room key of a topic: hex SHA-256, so a crafted topic cannot reach another room's keys. */
export function roomKey(topic: string): string {
  return createHash('sha256').update(topic, 'utf8').digest('hex')
}

/** The sort key of a blob: 13 + 4 hex digits, so string order is (seq, part) order. */
export function blobKey(seq: number, part: number): string {
  return seq.toString(16).padStart(13, '0') + part.toString(16).padStart(4, '0')
}

function seqOf(key: string): number {
  return parseInt(key.slice(-17, -4), 16)
}

function newStoreId(): string {
  return randomBytes(12).toString('base64url')
}

interface RoomMeta {
  head: number
  /** The newest seq whose blob is durable (range() never reports a cursor past it). */
  durable: number
  bytes: number
  compacted: number
}

/** Collects up to about `maxBytes` of entries, never stopping inside one seq; the caller feeds entries in key order. */
class PageBuilder {
  readonly blobs: { seq: number; blob: Uint8Array }[] = []
  private size = 0
  constructor(private readonly maxBytes: number) {}
  /** Adds an entry; false when the page is full and `seq` starts a new sequence number (the entry is not added). */
  add(seq: number, blob: Uint8Array): boolean {
    const last = this.blobs[this.blobs.length - 1]
    if (last !== undefined && this.size >= this.maxBytes && seq !== last.seq) return false
    this.blobs.push({ seq, blob })
    this.size += blob.byteLength
    return true
  }
  /** The page, `more` when it stopped early; `head` is the cursor when every entry was seen. */
  finish(more: boolean, head: number, bytes: number): BlobPage {
    const lastSeq = this.blobs[this.blobs.length - 1]?.seq ?? 0
    return { blobs: this.blobs, upto: more ? lastSeq : Math.max(head, lastSeq), more, bytes }
  }
}

function checkPut(meta: { bytes: number }, total: number, size: number, limits: StoreLimits): void {
  if (total + size > limits.maxStoreBytes) throw new StoreLimitError(`the store holds ${total} bytes; its limit is ${limits.maxStoreBytes}`, 'STORE_FULL')
  if (meta.bytes + size > limits.maxRoomBytes) throw new StoreLimitError(`the room holds ${meta.bytes} bytes; its limit is ${limits.maxRoomBytes}`, 'QUOTA_EXCEEDED')
}

function checkCompact(before: number, after: number, total: number, limits: StoreLimits): void {
  if (after <= before) return
  if (total + after - before > limits.maxStoreBytes) throw new StoreLimitError('the store is full', 'STORE_FULL')
  if (after > limits.maxRoomBytes) throw new StoreLimitError(`a compaction to ${after} bytes exceeds the room limit ${limits.maxRoomBytes}`, 'QUOTA_EXCEEDED')
}

function sum(blobs: readonly Uint8Array[]): number {
  let n = 0
  for (const b of blobs) n += b.byteLength
  return n
}

// =====================================================================================================================
// Memory

/** A store in memory (tests; nothing survives the process). */
export function memoryBlobStore(): BlobStore {
  const rooms = new Map<string, { meta: RoomMeta; blobs: Map<string, Uint8Array> }>()
  let total = 0
  const room = (topic: string) => {
    const k = roomKey(topic)
    let r = rooms.get(k)
    if (!r) rooms.set(k, (r = { meta: { head: 0, durable: 0, bytes: 0, compacted: 0 }, blobs: new Map() }))
    return r
  }
  return {
    id: newStoreId(),
    info: async (topic) => ({ head: room(topic).meta.head, bytes: room(topic).meta.bytes }),
    async put(topic, blob, limits) {
      const r = room(topic)
      checkPut(r.meta, total, blob.byteLength, limits)
      const seq = ++r.meta.head
      r.meta.durable = seq
      r.blobs.set(blobKey(seq, 0), blob.slice())
      r.meta.bytes += blob.byteLength
      total += blob.byteLength
      return { seq, bytes: r.meta.bytes }
    },
    async range(topic, after, maxBytes) {
      const r = room(topic)
      const page = new PageBuilder(maxBytes)
      const from = blobKey(after, 0xffff)
      const keys = [...r.blobs.keys()].filter((k) => k > from).sort()
      for (const k of keys) if (!page.add(seqOf(k), r.blobs.get(k)!)) return page.finish(true, r.meta.durable, r.meta.bytes)
      return page.finish(false, r.meta.durable, r.meta.bytes)
    },
    async compact(topic, upto, blobs, limits) {
      const r = room(topic)
      if (upto <= r.meta.compacted) return { applied: false, bytes: r.meta.bytes }
      if (upto > r.meta.durable) throw new StoreLimitError(`compaction up to ${upto} past the room's head ${r.meta.durable}`, 'MALFORMED_UPLOAD')
      const hi = blobKey(upto, 0xffff)
      const old = [...r.blobs.entries()].filter(([k]) => k <= hi)
      const removed = sum(old.map(([, v]) => v))
      const added = sum(blobs)
      checkCompact(r.meta.bytes, r.meta.bytes - removed + added, total, limits)
      for (const [k] of old) r.blobs.delete(k)
      blobs.forEach((b, i) => r.blobs.set(blobKey(upto, i), b.slice()))
      r.meta.bytes += added - removed
      r.meta.compacted = upto
      total += added - removed
      return { applied: true, bytes: r.meta.bytes }
    },
    totalBytes: async () => total,
    close: async () => {},
  }
}

// =====================================================================================================================
// LevelDB

interface LevelDb {
  open(): Promise<void>
  close(): Promise<void>
  get(key: string): Promise<Uint8Array | undefined>
  batch(ops: ({ type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string })[], options: { sync: boolean }): Promise<void>
  iterator(options: { gt?: string; lte?: string; lt?: string }): AsyncIterable<[string, Uint8Array]> & { close(): Promise<void> }
}

type LevelOp = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string }

const utf8 = new TextEncoder()
const utf8Decoder = new TextDecoder()

/** A store in a LevelDB directory (needs the optional peer dependency classic-level). */
export async function levelBlobStore(location: string): Promise<BlobStore> {
  let ClassicLevel: new (location: string, options: object) => LevelDb
  try {
    ;({ ClassicLevel } = (await import('classic-level')) as unknown as { ClassicLevel: typeof ClassicLevel })
  } catch (err) {
    throw new MissingDependencyError('--store <dir> needs the optional dependency classic-level: npm install classic-level', { cause: err })
  }
  const db = new ClassicLevel(location, { keyEncoding: 'utf8', valueEncoding: 'view' })
  await db.open()
  let id = await db.get('id').then((v) => (v ? utf8Decoder.decode(v) : undefined))
  if (id === undefined) {
    id = newStoreId()
    await db.batch([{ type: 'put', key: 'id', value: utf8.encode(id) }], { sync: true })
  }
  let total = Number(utf8Decoder.decode((await db.get('total')) ?? utf8.encode('0')))
  const metas = new Map<string, Promise<RoomMeta>>()
  const locks = new Map<string, Promise<unknown>>()

  // Group commit: every operation waiting when a batch starts is written in that one fsynced batch.
  let queue: { ops: LevelOp[]; done: () => void; fail: (err: unknown) => void }[] = []
  let writing = false
  const write = (ops: LevelOp[]): Promise<void> =>
    new Promise<void>((done, fail) => {
      queue.push({ ops, done, fail })
      if (!writing) void drain()
    })
  const drain = async (): Promise<void> => {
    writing = true
    while (queue.length > 0) {
      const items = queue
      queue = []
      try {
        await db.batch(items.flatMap((i) => i.ops), { sync: true })
        for (const i of items) i.done()
      } catch (err) {
        metas.clear() // the cached metas may be ahead of the disk now: reload them
        total = Number(utf8Decoder.decode((await db.get('total').catch(() => undefined)) ?? utf8.encode('0')))
        for (const i of items) i.fail(err)
      }
    }
    writing = false
  }
  const metaOf = (h: string): Promise<RoomMeta> => {
    let m = metas.get(h)
    if (!m) {
      m = db.get(`m/${h}`).then((v) => {
        const meta = v ? (JSON.parse(utf8Decoder.decode(v)) as RoomMeta) : { head: 0, durable: 0, bytes: 0, compacted: 0 }
        meta.durable = meta.head
        return meta
      })
      metas.set(h, m)
      m.catch(() => metas.delete(h))
    }
    return m
  }
  const metaOps = (h: string, meta: RoomMeta): LevelOp[] => [
    { type: 'put', key: `m/${h}`, value: utf8.encode(JSON.stringify({ head: meta.head, bytes: meta.bytes, compacted: meta.compacted })) },
    { type: 'put', key: 'total', value: utf8.encode(String(total)) },
  ]
  /** Runs `fn` after the room's previous compaction (compactions of one room never overlap). */
  const serial = <T>(h: string, fn: () => Promise<T>): Promise<T> => {
    const run = (locks.get(h) ?? Promise.resolve()).then(fn, fn)
    locks.set(h, run.catch(() => {}))
    return run
  }

  return {
    id,
    async info(topic) {
      const meta = await metaOf(roomKey(topic))
      return { head: meta.durable, bytes: meta.bytes }
    },
    async put(topic, blob, limits) {
      const h = roomKey(topic)
      const meta = await metaOf(h)
      checkPut(meta, total, blob.byteLength, limits)
      const seq = ++meta.head
      meta.bytes += blob.byteLength
      total += blob.byteLength
      await write([{ type: 'put', key: `b/${h}/${blobKey(seq, 0)}`, value: blob }, ...metaOps(h, meta)])
      meta.durable = Math.max(meta.durable, seq)
      return { seq, bytes: meta.bytes }
    },
    async range(topic, after, maxBytes) {
      const h = roomKey(topic)
      const meta = await metaOf(h)
      const head = meta.durable
      const page = new PageBuilder(maxBytes)
      const it = db.iterator({ gt: `b/${h}/${blobKey(after, 0xffff)}`, lte: `b/${h}/${blobKey(head, 0xffff)}` })
      try {
        for await (const [k, v] of it) if (!page.add(seqOf(k), v)) return page.finish(true, head, meta.bytes)
      } finally {
        await it.close()
      }
      return page.finish(false, head, meta.bytes)
    },
    compact(topic, upto, blobs, limits) {
      const h = roomKey(topic)
      return serial(h, async () => {
        const meta = await metaOf(h)
        if (upto <= meta.compacted) return { applied: false, bytes: meta.bytes }
        if (upto > meta.durable) throw new StoreLimitError(`compaction up to ${upto} past the room's head ${meta.durable}`, 'MALFORMED_UPLOAD')
        const ops: LevelOp[] = []
        let removed = 0
        const it = db.iterator({ gt: `b/${h}/`, lte: `b/${h}/${blobKey(upto, 0xffff)}` })
        try {
          for await (const [k, v] of it) {
            ops.push({ type: 'del', key: k })
            removed += v.byteLength
          }
        } finally {
          await it.close()
        }
        const added = sum(blobs)
        checkCompact(meta.bytes, meta.bytes - removed + added, total, limits)
        blobs.forEach((b, i) => ops.push({ type: 'put', key: `b/${h}/${blobKey(upto, i)}`, value: b }))
        meta.bytes += added - removed
        meta.compacted = upto
        total += added - removed
        await write([...ops, ...metaOps(h, meta)])
        return { applied: true, bytes: meta.bytes }
      })
    },
    totalBytes: async () => total,
    async close() {
      while (writing) await new Promise((r) => setTimeout(r, 5))
      await db.close()
    },
  }
}

// =====================================================================================================================
// Redis

/** The node-redis client methods the store uses. */
interface RedisLike {
  sendCommand(args: (string | Buffer)[], options?: { typeMapping?: Record<number, unknown> }): Promise<unknown>
  connect(): Promise<unknown>
  close(): Promise<void>
  on(event: 'error', fn: (err: unknown) => void): unknown
}

const PUT_SCRIPT = `
local len = string.len(ARGV[1])
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
if total + len > tonumber(ARGV[3]) then return {-2, bytes} end
if bytes + len > tonumber(ARGV[2]) then return {-1, bytes} end
local seq = redis.call('HINCRBY', KEYS[1], 'head', 1)
local key = string.format('%013x%04x', seq, 0)
redis.call('HSET', KEYS[2], key, ARGV[1])
redis.call('ZADD', KEYS[3], 0, key)
redis.call('HINCRBY', KEYS[1], 'bytes', len)
redis.call('INCRBY', KEYS[4], len)
return {seq, bytes + len}`

const COMPACT_SCRIPT = `
local upto = tonumber(ARGV[1])
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local head = tonumber(redis.call('HGET', KEYS[1], 'head') or '0')
local compacted = tonumber(redis.call('HGET', KEYS[1], 'compacted') or '0')
if upto <= compacted then return {0, bytes} end
if upto > head then return {-3, bytes} end
local hi = string.format('%013x%04x', upto, 65535)
local old = redis.call('ZRANGEBYLEX', KEYS[3], '-', '[' .. hi)
local removed = 0
for _, k in ipairs(old) do removed = removed + redis.call('HSTRLEN', KEYS[2], k) end
local added = 0
for i = 3, #ARGV do added = added + string.len(ARGV[i]) end
local after = bytes - removed + added
if after > bytes then
  local total = tonumber(redis.call('GET', KEYS[4]) or '0')
  if total + after - bytes > tonumber(ARGV[3]) then return {-2, bytes} end
  if after > tonumber(ARGV[2]) then return {-1, bytes} end
end
for _, k in ipairs(old) do redis.call('HDEL', KEYS[2], k) end
redis.call('ZREMRANGEBYLEX', KEYS[3], '-', '[' .. hi)
for i = 3, #ARGV do
  local key = string.format('%013x%04x', upto, i - 3)
  redis.call('HSET', KEYS[2], key, ARGV[i])
  redis.call('ZADD', KEYS[3], 0, key)
end
redis.call('HSET', KEYS[1], 'bytes', after, 'compacted', upto)
redis.call('INCRBY', KEYS[4], added - removed)
return {1, after}`

/** Options of {@link redisBlobStore}. */
export interface RedisBlobStoreInit {
  /** `redis://host:port[/db]`. */
  url: string
  /**
   * Prefix of every key the store writes.
   * @default 'syncmesh:store'
   */
  namespace?: string
}

/** A store in a Redis namespace, shareable by several server processes (needs the optional peer dependency redis). */
export async function redisBlobStore(init: RedisBlobStoreInit): Promise<BlobStore> {
  let redis: { createClient(options: { url: string }): RedisLike; RESP_TYPES: { BLOB_STRING: number } }
  try {
    redis = (await import('redis')) as unknown as typeof redis
  } catch (err) {
    throw new MissingDependencyError('--store redis://… needs the optional dependency redis: npm install redis', { cause: err })
  }
  const BUFFERS = { typeMapping: { [redis.RESP_TYPES.BLOB_STRING]: Buffer } }
  const ns = init.namespace ?? 'syncmesh:store'
  const client = redis.createClient({ url: init.url })
  client.on('error', () => {}) // a lost connection rejects the calls in flight; node-redis reconnects by itself
  await client.connect()
  await client.sendCommand(['SET', `${ns}:id`, newStoreId(), 'NX'])
  const id = String(await client.sendCommand(['GET', `${ns}:id`]))
  const keys = (topic: string): string[] => {
    const h = roomKey(topic)
    return [`${ns}:r:${h}:m`, `${ns}:r:${h}:b`, `${ns}:r:${h}:i`, `${ns}:total`]
  }
  const num = (v: unknown): number => Number(v ?? 0)
  const refusal = (code: number, bytes: number): StoreLimitError =>
    code === -2
      ? new StoreLimitError('the store is full', 'STORE_FULL')
      : code === -1
        ? new StoreLimitError(`the room holds ${bytes} bytes and is at its limit`, 'QUOTA_EXCEEDED')
        : new StoreLimitError('compaction past the room head', 'MALFORMED_UPLOAD')

  return {
    id,
    async info(topic) {
      const [m] = keys(topic)
      const [head, bytes] = (await client.sendCommand(['HMGET', m!, 'head', 'bytes'])) as (string | null)[]
      return { head: num(head), bytes: num(bytes) }
    },
    async put(topic, blob, limits) {
      const k = keys(topic)
      const reply = (await client.sendCommand(['EVAL', PUT_SCRIPT, '4', ...k, Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength), String(limits.maxRoomBytes), String(limits.maxStoreBytes)])) as number[]
      const [seq, bytes] = reply.map(Number) as [number, number]
      if (seq < 0) throw refusal(seq, bytes)
      return { seq, bytes }
    },
    async range(topic, after, maxBytes) {
      const [m, b, i] = keys(topic) as [string, string, string]
      const [head, bytes] = ((await client.sendCommand(['HMGET', m, 'head', 'bytes'])) as (string | null)[]).map(num) as [number, number]
      const page = new PageBuilder(maxBytes)
      let from = `(${blobKey(after, 0xffff)}`
      const to = `[${blobKey(head, 0xffff)}`
      for (;;) {
        const members = ((await client.sendCommand(['ZRANGEBYLEX', i, from, to, 'LIMIT', '0', '256'])) as string[]).map(String)
        if (members.length === 0) return page.finish(false, head, bytes)
        const values = (await client.sendCommand(['HMGET', b, ...members], BUFFERS)) as (Buffer | null)[]
        for (let j = 0; j < members.length; j++) {
          const v = values[j]
          if (v === null || v === undefined) continue // compacted away between the two reads: its snapshot follows
          if (!page.add(seqOf(members[j]!), new Uint8Array(v.buffer, v.byteOffset, v.byteLength))) return page.finish(true, head, bytes)
        }
        from = `(${members[members.length - 1]!}`
      }
    },
    async compact(topic, upto, blobs, limits) {
      const k = keys(topic)
      const args = blobs.map((x) => Buffer.from(x.buffer, x.byteOffset, x.byteLength))
      const reply = (await client.sendCommand(['EVAL', COMPACT_SCRIPT, '4', ...k, String(upto), String(limits.maxRoomBytes), String(limits.maxStoreBytes), ...args])) as number[]
      const [applied, bytes] = reply.map(Number) as [number, number]
      if (applied < 0) throw refusal(applied, bytes)
      return { applied: applied === 1, bytes }
    },
    totalBytes: async () => num(await client.sendCommand(['GET', `${ns}:total`])),
    close: () => client.close(),
  }
}

/** Opens the store `--store` names: a `redis://` / `rediss://` URL, else a LevelDB directory. */
export function openBlobStore(spec: string): Promise<BlobStore> {
  return /^rediss?:\/\//i.test(spec) ? redisBlobStore({ url: spec }) : levelBlobStore(spec)
}
