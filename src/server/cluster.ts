/**
 * Scale-out: several `syncmesh serve --redis redis://…` processes share their relay rooms through Redis, so peers of
 * one room may connect to different processes. Each process is a node with a random id; per room it knows its own
 * members (connections) and the remote ones (peer → node).
 *
 * Redis (namespace `ns`, default `syncmesh:cluster`; `h` = hex SHA-256 of the topic):
 *
 *   `ns:node:<id>`   string with a TTL (`nodeTtlMs`), renewed every third of it: the node is alive
 *   `ns:m:h`         hash peer → node id: who is in the room, cluster-wide (a peer id is claimed atomically, so two
 *                    processes never admit the same id; the claim of a dead node is taken over)
 *   `ns:c:h`         pub/sub channel of the room, subscribed by every node with a member there
 *
 * Channel messages (binary): `kind:u8 node:str from:str [to:str] payload`, str = len:u8 + UTF-8 —
 * 1 UP(from), 2 DOWN(from), 3 FROM(from, to, payload) for one peer, 4 FROM(from, payload) for every member but the
 * sender. A node publishes UP after it has subscribed and claimed the id; pub/sub keeps one publisher's order, so a
 * frame never overtakes its sender's UP. A node that dies without a word (SIGKILL) is noticed by the others when its
 * `node` key expires (within about `nodeTtlMs` + a check interval): they send DOWN for its peers and drop its claims.
 * Delivery stays best-effort, as on one process.
 */
import { createHash, randomBytes } from 'node:crypto'
import { MissingDependencyError } from './errors.js'

/** What a node learns from the others about one room. */
export interface ClusterEvents {
  up(topic: string, peer: string, node: string): void
  down(topic: string, peer: string, node: string): void
  frame(topic: string, from: string, to: string | undefined, payload: Uint8Array): void
  error(message: string): void
}

/** Options of {@link startCluster}. */
export interface ClusterInit {
  /** `redis://host:port`. */
  url: string
  /**
   * Prefix of the keys and channels.
   * @default 'syncmesh:cluster'
   */
  namespace?: string
  /**
   * How long a node's liveness key lives without renewal; peers of a node silent that long are reported down.
   * @default 3000
   */
  nodeTtlMs?: number
}

/** This process's membership in the cluster. */
export interface Cluster {
  readonly node: string
  /**
   * Subscribes to the room (the first local member), claims `peer` cluster-wide and lists the members on other
   * nodes as of its return (the UP/DOWN heard meanwhile applied, as {@link ClusterEvents} may have reached a caller
   * with no room yet); `undefined` when another live node holds the id. Then call {@link Cluster.announce}.
   */
  join(topic: string, peer: string): Promise<Map<string, string> | undefined>
  /** Tells the other nodes that `peer` is here (after the local members were told). */
  announce(topic: string, peer: string): void
  /** `peer` left this node: release the claim, tell the others; unsubscribe when it was the last local member. */
  leave(topic: string, peer: string, lastLocal: boolean): void
  send(topic: string, from: string, to: string, payload: Uint8Array): void
  broadcast(topic: string, from: string, payload: Uint8Array): void
  /** Nodes that own `peers`: which of them are dead now (their liveness key expired). */
  dead(nodes: Iterable<string>): Promise<Set<string>>
  /** Drops a dead node's claims in a room. */
  forget(topic: string, peer: string, node: string): void
  close(): Promise<void>
}

interface RedisLike {
  sendCommand(args: (string | Buffer)[]): Promise<unknown>
  connect(): Promise<unknown>
  close(): Promise<void>
  duplicate(): RedisLike
  on(event: 'error', fn: (err: unknown) => void): unknown
  subscribe(channel: string, listener: (message: Buffer, channel: Buffer) => void, bufferMode: true): Promise<void>
  unsubscribe(channel: string): Promise<void>
}

const CLAIM = `
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner and owner ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. owner) == 1 then return nil end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGETALL', KEYS[1])`

const RELEASE = `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1`

/** An UP or DOWN heard on a room's channel. */
interface Membership {
  up: boolean
  peer: string
  node: string
}

const UP = 1
const DOWN = 2
const TO_ONE = 3
const TO_ALL = 4
const utf8 = new TextEncoder()
const utf8Decoder = new TextDecoder()

function encode(kind: number, node: string, from: string, to: string | undefined, payload?: Uint8Array): Buffer {
  const ids = [node, from, ...(to === undefined ? [] : [to])].map((s) => utf8.encode(s))
  const out = Buffer.alloc(1 + ids.reduce((n, b) => n + 1 + b.byteLength, 0) + (payload?.byteLength ?? 0))
  out[0] = kind
  let pos = 1
  for (const b of ids) {
    out[pos++] = b.byteLength
    out.set(b, pos)
    pos += b.byteLength
  }
  if (payload) out.set(payload, pos)
  return out
}

function decode(buf: Buffer): { kind: number; node: string; from: string; to: string | undefined; payload: Uint8Array } | undefined {
  let pos = 1
  const str = (): string | undefined => {
    const len = buf[pos]
    if (len === undefined || pos + 1 + len > buf.byteLength) return undefined
    const s = utf8Decoder.decode(buf.subarray(pos + 1, pos + 1 + len))
    pos += 1 + len
    return s
  }
  const kind = buf[0]
  const node = str()
  const from = str()
  if (kind === undefined || node === undefined || from === undefined) return undefined
  const to = kind === TO_ONE ? str() : undefined
  if (kind === TO_ONE && to === undefined) return undefined
  return { kind, node, from, to, payload: new Uint8Array(buf.buffer, buf.byteOffset + pos, buf.byteLength - pos) }
}

/** Joins the cluster behind `init.url` (needs the optional peer dependency redis). */
export async function startCluster(init: ClusterInit, events: ClusterEvents): Promise<Cluster> {
  let redis: { createClient(options: { url: string }): RedisLike }
  try {
    redis = (await import('redis')) as unknown as typeof redis
  } catch (err) {
    throw new MissingDependencyError('--redis needs the optional dependency redis: npm install redis', { cause: err })
  }
  const ns = init.namespace ?? 'syncmesh:cluster'
  const ttl = init.nodeTtlMs ?? 3000
  const node = randomBytes(9).toString('base64url')
  const nodePrefix = `${ns}:node:`
  const cmd = redis.createClient({ url: init.url })
  const sub = cmd.duplicate()
  const report = (err: unknown): void => events.error((err as Error)?.message ?? String(err))
  cmd.on('error', report)
  sub.on('error', report)
  await cmd.connect()
  await sub.connect()
  const beat = (): Promise<unknown> => cmd.sendCommand(['SET', nodePrefix + node, '1', 'PX', String(ttl)])
  await beat()
  const heartbeat = setInterval(() => void beat().catch(report), Math.max(100, Math.floor(ttl / 3)))
  heartbeat.unref()

  const hash = (topic: string): string => createHash('sha256').update(topic, 'utf8').digest('hex')
  /**
   * Rooms this node is subscribed to: channel → topic, how the subscription is going, and the UP/DOWN heard while
   * joins are under way (one list per join).
   */
  const channels = new Map<string, { topic: string; ready: Promise<void>; journals: Set<Membership[]> }>()
  /** Joins under way per channel: the last local member leaving must not unsubscribe under them. */
  const joining = new Map<string, number>()
  const publish = (topic: string, message: Buffer): void => {
    void cmd.sendCommand(['PUBLISH', `${ns}:c:${hash(topic)}`, message]).catch(report)
  }
  const onMessage = (message: Buffer, channel: Buffer): void => {
    const room = channels.get(channel.toString('utf8'))
    const m = decode(message)
    if (room === undefined || m === undefined || m.node === node) return
    if (m.kind === UP || m.kind === DOWN) for (const journal of room.journals) journal.push({ up: m.kind === UP, peer: m.from, node: m.node })
    if (m.kind === UP) events.up(room.topic, m.from, m.node)
    else if (m.kind === DOWN) events.down(room.topic, m.from, m.node)
    else if (m.kind === TO_ONE || m.kind === TO_ALL) events.frame(room.topic, m.from, m.to, m.payload)
  }

  const self: Cluster = {
    node,
    async join(topic, peer) {
      const h = hash(topic)
      const channel = `${ns}:c:${h}`
      let room = channels.get(channel)
      if (room === undefined) {
        room = { topic, ready: sub.subscribe(channel, onMessage, true), journals: new Set() }
        channels.set(channel, room)
        room.ready.catch(() => channels.delete(channel))
      }
      joining.set(channel, (joining.get(channel) ?? 0) + 1)
      // UP/DOWN heard until this join returns. The caller knows no room yet, so it cannot act on them; and the
      // claim's snapshot below may be older or newer than any of them (two connections, no common order).
      const journal: Membership[] = []
      room.journals.add(journal)
      try {
        await room.ready
        const all = (await cmd.sendCommand(['EVAL', CLAIM, '1', `${ns}:m:${h}`, peer, node, nodePrefix])) as string[] | null
        if (all === null) return undefined
        const remote = new Map<string, string>()
        for (let i = 0; i + 1 < all.length; i += 2) if (all[i + 1] !== node) remote.set(String(all[i]), String(all[i + 1]))
        const gone = await self.dead(new Set(remote.values()))
        for (const [p, n] of remote) {
          if (!gone.has(n)) continue
          remote.delete(p)
          self.forget(topic, p, n)
        }
        // Replayed in order over the snapshot. One UP/DOWN older than the snapshot changes nothing: a publisher
        // claims before its UP and releases before its DOWN, and a DOWN removes only the node that sent it.
        for (const e of journal) {
          if (e.peer === peer) continue
          if (e.up) remote.set(e.peer, e.node)
          else if (remote.get(e.peer) === e.node) remote.delete(e.peer)
        }
        return remote
      } finally {
        room.journals.delete(journal)
        const n = (joining.get(channel) ?? 1) - 1
        if (n > 0) joining.set(channel, n)
        else joining.delete(channel)
      }
    },
    announce(topic, peer) {
      publish(topic, encode(UP, node, peer, undefined))
    },
    leave(topic, peer, lastLocal) {
      const h = hash(topic)
      void cmd.sendCommand(['EVAL', RELEASE, '1', `${ns}:m:${h}`, peer, node]).catch(report)
      publish(topic, encode(DOWN, node, peer, undefined))
      if (lastLocal && !joining.has(`${ns}:c:${h}`)) {
        const channel = `${ns}:c:${h}`
        channels.delete(channel)
        void sub.unsubscribe(channel).catch(report)
      }
    },
    send(topic, from, to, payload) {
      publish(topic, encode(TO_ONE, node, from, to, payload))
    },
    broadcast(topic, from, payload) {
      publish(topic, encode(TO_ALL, node, from, undefined, payload))
    },
    async dead(nodes) {
      const list = [...nodes]
      if (list.length === 0) return new Set()
      const alive = (await cmd.sendCommand(['MGET', ...list.map((n) => nodePrefix + n)])) as (string | null)[]
      return new Set(list.filter((_, i) => alive[i] === null || alive[i] === undefined))
    },
    forget(topic, peer, owner) {
      void cmd.sendCommand(['EVAL', RELEASE, '1', `${ns}:m:${hash(topic)}`, peer, owner]).catch(report)
    },
    async close() {
      clearInterval(heartbeat)
      await cmd.sendCommand(['DEL', nodePrefix + node]).catch(report)
      await Promise.allSettled([sub.close(), cmd.close()])
    },
  }
  return self
}
