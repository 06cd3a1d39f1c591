/**
 * How replicas that open one Redis namespace at once — in one process or in many — coordinate: the
 * {@link StorageSharing} of a {@link RedisStorage}. What the replicas do with it (a writer slot each, one leader
 * that runs the network, a link between them) is in src/tabs/group.ts; this module gives them locks and a channel
 * that live on the Redis server itself, so every process that reaches the server shares them.
 *
 * ## Names
 * The sharing key is `syncmesh/redis/<db>/<namespace>`. It names no host: the locks and channels below live on
 * the server, so they are scoped to it already, and two processes that reach one server under different names
 * (`localhost`, `127.0.0.1`) must still meet. The database number is in it because pub/sub ignores `SELECT`.
 * A name the group asks for, `<key>/<rest>`, becomes
 *
 *   `<namespace>:lock:<rest>`           string key holding a lock's token (e.g. `notes:lock:slot/0`, `notes:lock:leader`)
 *   `<namespace>:chan:<db>:<rest>`      pub/sub channel (e.g. `notes:chan:0:link`)
 *
 * ## Locks: leases with a local deadline
 * `tryAcquire` is `SET <lock> <random token> NX PX <ttl>`. A held lock is renewed every ttl/3 by a script that
 * extends it only while it still holds our token; `release()` deletes it by a script that deletes only our token.
 * `acquire` polls `tryAcquire` with a jittered backoff from 10 to 250 ms and rejects with an `AbortError`
 * DOMException when its signal aborts. A lease is *lost* (`Lease.lost` settles, renewals stop) when a renewal finds
 * the key gone or holding another token, or when no renewal has succeeded within 2/3·ttl of *sending* the last
 * successful SET or renewal, measured on this process's monotonic clock. The server starts the TTL only when it runs
 * the command, after we sent it, so we give the lock up locally at least ttl/3 before the server can expire it: no
 * other process can hold it while we still think we do.
 *
 * Caveat (leases without fencing): that holds for a process that keeps running. One that is paused (a long GC
 * stall, SIGSTOP, a suspended VM) for longer than the TTL between deciding that it holds the lock and its command
 * reaching Redis may act once more after another process took the lock over — Redis does not check the token on
 * the storage writes themselves. Keep pauses well below the TTL (default 10 s). A Redis outage longer than 2/3 of
 * the TTL also loses every lease: replicas then report LeaseLostError and close (see tabs/group.ts).
 *
 * ## Channel
 * A {@link SharedChannel} over pub/sub. Messages are `node:v8` serialized (structured clone, so Uint8Arrays travel
 * as they are) in an envelope `['sm1', senderId, message]`; a channel never delivers its own messages back to
 * itself (BroadcastChannel semantics), and drops anything else published on the channel name that does not decode
 * to such an envelope. Messages posted before the subscription is confirmed wait and go out right after, in order,
 * so a first message's answers are not missed. Delivery is at most once: while a connection is down, messages are
 * lost (the replicas' anti-entropy repairs what the link missed). Only processes trusted to write the namespace
 * should reach the server: the channel deserializes whatever is published on it.
 *
 * ## Connections
 * Two connections of its own, duplicates of the storage's client: one for lock commands and PUBLISH (so renewals
 * do not queue behind large writes, and lock releases still go out after the storage closed its own client), one in
 * subscriber mode. Each opens on first use, is unref'd (it never keeps a process alive by itself), and closes once
 * the storage is closed and every lease and channel it handed out is released or closed. Renewal and polling timers
 * are unref'd too.
 */
import { randomBytes } from 'node:crypto'
import { deserialize, serialize } from 'node:v8'
import { InvalidArgumentError } from '../../crdt/errors.js'
import { abortError } from '../tabs/locks.js'
import type { Lease, Locks, SharedChannel, StorageSharing } from './types.js'

/** The node-redis v5 client methods the sharing uses. */
interface CoordinationClient {
  sendCommand(args: (string | Buffer)[]): Promise<unknown>
  subscribe(channel: string, listener: (message: Buffer) => void, bufferMode: true): Promise<void>
  unsubscribe(channel: string, listener: (message: Buffer) => void, bufferMode: true): Promise<void>
  on(event: 'error', fn: (err: unknown) => void): unknown
  connect(): Promise<unknown>
  ref(): void
  unref(): void
  close(): Promise<void>
  destroy(): void
}

/** A client the sharing connections are duplicated from. */
export interface DuplicableClient {
  duplicate(): unknown
}

/** Options of {@link redisSharing}. */
export interface RedisSharingInit {
  /** The storage's namespace. */
  readonly namespace: string
  /** The database number the storage's client uses. */
  readonly db: number
  /** Lease time to live, ms. */
  readonly ttlMs: number
  /** The storage's client, duplicated for the sharing's own connections. */
  readonly client: DuplicableClient
  /** Receives connection errors. */
  readonly onError?: (err: unknown) => void
}

/** Renews a lock only while it holds our token: KEYS[1] lock, ARGV[1] token, ARGV[2] ttl (ms). */
const RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"
/** Deletes a lock only while it holds our token. */
const RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"
const ENVELOPE = 'sm1'
const POLL_MIN_MS = 10
const POLL_MAX_MS = 250

/** The sharing of a Redis namespace, and `close()` for the storage to call when it closes. */
export function redisSharing(init: RedisSharingInit): { sharing: StorageSharing; close(): void } {
  if (!(Number.isFinite(init.ttlMs) && init.ttlMs >= 30)) throw new InvalidArgumentError('redisStorage: `lockTtlMs` must be a number ≥ 30')
  const key = `syncmesh/redis/${init.db}/${init.namespace}`
  const rest = (name: string): string => (name.startsWith(`${key}/`) ? name.slice(key.length + 1) : name)
  const conns = new Connections(init.client, init.onError)
  const locks = new RedisLocks(conns, (name) => `${init.namespace}:lock:${rest(name)}`, init.ttlMs)
  const channel = (name: string): SharedChannel => new RedisChannel(conns, `${init.namespace}:chan:${init.db}:${rest(name)}`, init.onError)
  return { sharing: { key, locks, channel }, close: () => conns.drop() }
}

/**
 * The two connections, opened on first use and closed when nobody uses them: the storage (until it closes), each
 * lease until released or lost, each channel until closed.
 */
class Connections {
  private users = 1 // the storage
  private command: CoordinationClient | undefined
  private subscriber: CoordinationClient | undefined

  constructor(
    private readonly base: DuplicableClient,
    private readonly onError: ((err: unknown) => void) | undefined,
  ) {}

  /** The connection for commands. */
  get cmd(): CoordinationClient {
    return (this.command ??= this.open())
  }

  /** The connection in subscriber mode. */
  get sub(): CoordinationClient {
    return (this.subscriber ??= this.open())
  }

  hold(): void {
    this.users++
  }

  /** Lock commands in flight (the command connection is referenced while there are any). */
  private locking = 0

  /**
   * Sends a command that takes or gives back a lock, keeping the process alive until its reply or for `ttlMs` at
   * most (the lock is gone by then anyway, and an unreachable server must not hold the process forever). The
   * connections are otherwise unreferenced, so that an open replica never holds its process; but a process that ends
   * with such a command in flight leaves Redis holding a lock that nobody releases until its TTL runs out: the one
   * a SET took, or the one the release was for.
   */
  async lockCommand(args: (string | Buffer)[], ttlMs: number): Promise<unknown> {
    const c = this.cmd
    let held = true
    const letGo = (): void => {
      if (!held) return
      held = false
      if (--this.locking === 0) c.unref()
    }
    if (this.locking++ === 0) c.ref()
    const limit = setTimeout(letGo, ttlMs)
    limit.unref?.()
    try {
      return await c.sendCommand(args)
    } finally {
      clearTimeout(limit)
      letGo()
    }
  }

  drop(): void {
    if (--this.users > 0) return
    const open = [this.command, this.subscriber]
    this.command = this.subscriber = undefined
    for (const c of open) {
      if (!c) continue
      // close() waits for the replies still due (a lock release); a client that never connected is just dropped.
      Promise.resolve()
        .then(() => c.close())
        .catch(() => {
          try {
            c.destroy()
          } catch {
            // already gone
          }
        })
    }
  }

  private open(): CoordinationClient {
    const c = this.base.duplicate() as CoordinationClient
    c.on('error', (err) => this.onError?.(err))
    c.unref()
    c.connect().catch((err: unknown) => this.onError?.(err))
    return c
  }
}

/** {@link Locks} on Redis keys with leases (see the module comment). */
class RedisLocks implements Locks {
  constructor(
    readonly conns: Connections,
    private readonly lockKey: (name: string) => string,
    readonly ttlMs: number,
  ) {}

  /** {@inheritDoc Locks.tryAcquire} */
  async tryAcquire(name: string): Promise<Lease | undefined> {
    const key = this.lockKey(name)
    const token = randomBytes(16).toString('hex')
    this.conns.hold()
    const sentAt = performance.now()
    let reply: unknown
    try {
      reply = await this.conns.lockCommand(['SET', key, token, 'NX', 'PX', String(this.ttlMs)], this.ttlMs)
    } catch (err) {
      this.conns.drop()
      throw err
    }
    if (reply == null || String(reply) !== 'OK') {
      this.conns.drop()
      return undefined
    }
    return new RedisLease(this, key, token, sentAt)
  }

  /** {@inheritDoc Locks.acquire} */
  async acquire(name: string, signal?: AbortSignal): Promise<Lease> {
    for (let wait = POLL_MIN_MS; ; wait = Math.min(POLL_MAX_MS, wait * 2)) {
      if (signal?.aborted) throw abortError()
      const lease = await this.tryAcquire(name)
      if (lease && signal?.aborted) {
        lease.release()
        throw abortError()
      }
      if (lease) return lease
      await pause(wait / 2 + Math.random() * wait, signal)
    }
  }
}

/** A held Redis lock: renewed every ttl/3, lost on a failed check or at its local deadline. */
class RedisLease implements Lease {
  readonly lost: Promise<void>
  private settleLost!: () => void
  private done = false
  private renewing = false
  private readonly renewTimer: ReturnType<typeof setInterval>
  private deadline: ReturnType<typeof setTimeout> | undefined

  constructor(
    private readonly locks: RedisLocks,
    private readonly key: string,
    private readonly token: string,
    sentAt: number,
  ) {
    this.lost = new Promise<void>((resolve) => {
      this.settleLost = resolve
    })
    this.renewTimer = setInterval(() => void this.renew(), locks.ttlMs / 3)
    this.renewTimer.unref?.()
    this.extend(sentAt)
  }

  /** {@inheritDoc Lease.release} */
  release(): void {
    this.finish()
  }

  /** Moves the local deadline to 2/3·ttl after `sentAt` (when the command that proved the lock ours was sent). */
  private extend(sentAt: number): void {
    clearTimeout(this.deadline)
    const left = sentAt + (this.locks.ttlMs * 2) / 3 - performance.now()
    if (left <= 0) return this.lose()
    this.deadline = setTimeout(() => this.lose(), left)
    this.deadline.unref?.()
  }

  private async renew(): Promise<void> {
    if (this.done || this.renewing) return
    this.renewing = true
    const sentAt = performance.now()
    try {
      const reply = await this.locks.conns.cmd.sendCommand(['EVAL', RENEW, '1', this.key, this.token, String(this.locks.ttlMs)])
      if (this.done) return
      if (Number(reply) === 1) this.extend(sentAt)
      else this.lose() // gone or someone else's: not ours any more
    } catch {
      // Connection trouble: the next renewal may get through; the local deadline decides otherwise.
    } finally {
      this.renewing = false
    }
  }

  private lose(): void {
    if (this.done) return
    this.finish()
    this.settleLost()
  }

  /** Stops renewing and deletes the lock if it still holds our token (it may not have expired on the server yet). */
  private finish(): void {
    if (this.done) return
    this.done = true
    clearInterval(this.renewTimer)
    clearTimeout(this.deadline)
    const conns = this.locks.conns
    conns
      .lockCommand(['EVAL', RELEASE, '1', this.key, this.token], this.locks.ttlMs)
      .catch(() => {}) // it expires by itself
      .finally(() => conns.drop())
  }
}

/** {@link SharedChannel} over Redis pub/sub (see the module comment). */
class RedisChannel implements SharedChannel {
  onmessage: ((event: { readonly data: unknown }) => void) | null = null
  private readonly id = randomBytes(12).toString('hex')
  /** Messages posted before the subscription was confirmed, in order; undefined once it is. */
  private waiting: Buffer[] | undefined = []
  private readonly inFlight = new Set<Promise<unknown>>()
  private closed = false
  private readonly listener = (message: Buffer): void => this.receive(message)

  constructor(
    private readonly conns: Connections,
    private readonly name: string,
    private readonly onError: ((err: unknown) => void) | undefined,
  ) {
    conns.hold()
    conns.sub.subscribe(name, this.listener, true).then(
      () => {
        const waiting = this.waiting ?? []
        this.waiting = undefined
        for (const m of waiting) this.publish(m)
      },
      (err: unknown) => {
        this.waiting = undefined
        onError?.(err)
      },
    )
  }

  /** {@inheritDoc SharedChannel.postMessage} */
  postMessage(message: unknown): void {
    if (this.closed) throw new DOMException('the channel is closed', 'InvalidStateError')
    const bytes = serialize([ENVELOPE, this.id, message]) // cloned now, as postMessage does
    if (this.waiting) this.waiting.push(bytes)
    else this.publish(bytes)
  }

  /** {@inheritDoc SharedChannel.close} */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.onmessage = null
    const sent = [...this.inFlight] // messages posted before close() still go out, like BroadcastChannel's
    const unsubscribed = this.conns.sub.unsubscribe(this.name, this.listener, true).catch(() => {})
    void Promise.allSettled([...sent, unsubscribed]).then(() => this.conns.drop())
  }

  private publish(bytes: Buffer): void {
    const p = this.conns.cmd.sendCommand(['PUBLISH', this.name, bytes]).catch((err: unknown) => this.onError?.(err))
    this.inFlight.add(p)
    void p.then(() => this.inFlight.delete(p))
  }

  private receive(message: Buffer): void {
    if (this.closed) return
    let decoded: unknown
    try {
      decoded = deserialize(message)
    } catch {
      return // not ours
    }
    if (!Array.isArray(decoded) || decoded.length !== 3 || decoded[0] !== ENVELOPE || typeof decoded[1] !== 'string' || decoded[1] === this.id) return
    try {
      this.onmessage?.({ data: decoded[2] })
    } catch (err) {
      this.onError?.(err) // a throwing handler must not break the subscriber connection
    }
  }
}

/** Waits `ms` (on an unref'd timer); rejects with an AbortError when `signal` aborts first. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (): void => {
      signal?.removeEventListener('abort', abort)
      resolve()
    }
    const abort = (): void => {
      clearTimeout(timer)
      reject(abortError())
    }
    const timer = setTimeout(done, ms)
    timer.unref?.()
    signal?.addEventListener('abort', abort, { once: true })
  })
}
