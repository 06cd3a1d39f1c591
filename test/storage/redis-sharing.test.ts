/**
 * Several replicas on one Redis namespace at once — in one process and in several — against a real `redis-server`
 * on 127.0.0.1 that this file starts (see redis-server.ts): no acknowledged write is lost, no two open replicas share
 * a writer origin, they see each other's writes with no network transport, one of them leads; a SIGKILLed process's
 * slot is taken over once its lock expires; a lost lease stops a replica from acknowledging writes.
 *
 * Seeded: REDIS_SHARING_SEED=<n> replays a run (a failure prints its seed).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { serialize } from 'node:v8'
import { afterEach, beforeAll, describe, expect, it, onTestFailed } from 'vitest'
import { LeaseLostError, ReplicaClosedError, createReplica, type Replica, type ReplicaInit } from '../../src/index.js'
import { type AnyRedisClient, redisStorage } from '../../src/storage/redis.js'
import type { Lease } from '../../src/storage/types.js'
import { MemoryNetwork } from '../../transports/memory.js'
import { mulberry32 } from '../prng.js'
import { until } from '../src/helpers.js'
import { available, redisFixture, sleep } from './redis-server.js'
import { SHARING_COLLECTION, sharingRecord } from './redis-sharing-child.js'

const SEED = Number(process.env.REDIS_SHARING_SEED ?? Math.floor(Math.random() * 2 ** 31))
const CHILD = fileURLToPath(new URL('./redis-sharing-child.ts', import.meta.url))
const REPO = fileURLToPath(new URL('../..', import.meta.url))
const LOCK_EXIT_CHILD = fileURLToPath(new URL('./redis-lock-exit-child.ts', import.meta.url))

const writerOf = (r: Replica): string => (r as unknown as { writerId: string }).writerId
const slotOf = (r: Replica): number => Number(writerOf(r).split('~').pop())

/** A child process of redis-sharing-child.ts, its stdout read line by line. */
class Child {
  readonly proc: ChildProcess
  readonly lines: string[] = []
  stderr = ''
  readonly exited: Promise<string>

  constructor(args: string[]) {
    this.proc = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } })
    let partial = ''
    this.proc.stdout!.setEncoding('utf8')
    this.proc.stdout!.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n')
      partial = parts.pop()!
      this.lines.push(...parts)
    })
    this.proc.stderr!.setEncoding('utf8')
    this.proc.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk
    })
    // 'close': the process is gone and its stdout drained, so every line it wrote is in `lines`.
    this.exited = new Promise((resolve) => this.proc.on('close', (code, signal) => resolve(signal ?? `exit ${code}`)))
  }

  /** Waits for a line starting with `prefix` and returns it. */
  async line(prefix: string, ms = 30_000): Promise<string> {
    let found: string | undefined
    await until(() => (found = this.lines.find((l) => l.startsWith(prefix))) !== undefined || this.proc.exitCode !== null, ms, `a child to print "${prefix}" (stderr: ${this.stderr})`)
    if (found === undefined) throw new Error(`the child exited (${this.proc.exitCode}) before printing "${prefix}": ${this.stderr}`)
    return found
  }

  /** The indexes of the writes the child reported acknowledged. */
  acked(): number[] {
    return this.lines.filter((l) => l.startsWith('ack ')).map((l) => Number(l.slice(4)))
  }

  send(line: string): void {
    this.proc.stdin!.write(`${line}\n`)
  }
}

describe.skipIf(!available)('replicas sharing one Redis namespace (real redis-server on 127.0.0.1)', () => {
  const redis = redisFixture()
  const server = redis.server
  let admin: AnyRedisClient
  let nsCounter = 0
  const freshNamespace = (tag: string): string => `share${process.pid}-${++nsCounter}-${tag}`
  const open: Replica[] = []
  const children: Child[] = []

  beforeAll(() => {
    admin = redis.admin
  })

  afterEach(async () => {
    for (const c of children.splice(0)) c.proc.kill('SIGKILL')
    await Promise.allSettled(open.splice(0).map((r) => r.close()))
  })

  const replayLine = (): void => {
    onTestFailed(() => console.error(`replay: REDIS_SHARING_SEED=${SEED} npx vitest run test/storage/redis-sharing.test.ts`))
  }

  async function openReplica(namespace: string, init: Partial<ReplicaInit> & { lockTtlMs?: number; shareAdmin?: boolean } = {}): Promise<Replica> {
    const { lockTtlMs, shareAdmin, ...rest } = init
    const storage = shareAdmin ? redisStorage({ client: admin, namespace, lockTtlMs }) : redisStorage({ url: server.url, namespace, lockTtlMs })
    const r = await createReplica({ storage, antiEntropyMs: 300, ...rest })
    open.push(r)
    return r
  }

  const lockKeys = (namespace: string): Promise<string[]> => admin.keys(`${namespace}:lock:*`)
  const storedKeys = async (namespace: string, prefix: string[]): Promise<string[][]> => {
    const raw = redisStorage({ client: admin, namespace })
    try {
      return (await raw.loadRange(prefix)).map((e) => e.key)
    } finally {
      await raw.close()
    }
  }

  /** Every write `i` of the seed in `acked` is in `r` with its exact value. */
  function expectHolds(r: Replica, seed: number, acked: number[]): void {
    const c = r.collection(SHARING_COLLECTION)
    const missing = acked.filter((i) => c.get(`s${seed}-${i}`) === undefined)
    expect(missing, `acknowledged writes of seed ${seed} missing`).toEqual([])
    for (const i of acked) expect(c.get(`s${seed}-${i}`)).toEqual(sharingRecord(seed, i))
  }

  it('three replicas in one process, opened and writing at once, lose no write, never share an origin, and see each other’s writes with no transport', async () => {
    replayLine()
    const namespace = freshNamespace('one-process')
    const rs = await Promise.all([openReplica(namespace), openReplica(namespace, { shareAdmin: true }), openReplica(namespace)])
    expect(new Set(rs.map(writerOf)).size).toBe(3)
    expect(rs.map(slotOf).sort()).toEqual([0, 1, 2])
    expect(new Set(rs.map((r) => r.peerId)).size).toBe(1) // one store, one peer
    const rand = mulberry32(SEED)
    const per = 200
    const next = [0, 0, 0]
    const writes: Promise<void>[] = []
    while (next.some((n) => n < per)) {
      const k = Math.floor(rand() * 3)
      if (next[k]! >= per) continue
      writes.push(rs[k]!.collection(SHARING_COLLECTION).put(sharingRecord(SEED + k, next[k]!++)))
      if (rand() < 0.05) await sleep(0)
    }
    await Promise.all(writes)
    const all = Array.from({ length: per }, (_, i) => i)
    await until(() => rs.every((r) => r.collection(SHARING_COLLECTION).all().length === 3 * per), 10_000, 'every replica to hold all 600 records')
    for (const r of rs) for (let k = 0; k < 3; k++) expectHolds(r, SEED + k, all)
    await until(() => rs.filter((r) => r.status().leader).length === 1, 5000, 'one leader')
    for (const r of [...rs].sort(() => rand() - 0.5)) await r.close()
    await expect.poll(() => lockKeys(namespace)).toEqual([]) // every lock released on close
    const again = await openReplica(namespace)
    for (let k = 0; k < 3; k++) expectHolds(again, SEED + k, all)
  })

  it('two processes on one namespace: distinct origins, one peer id, one leader, each sees the other’s writes, nothing acknowledged is lost', async () => {
    replayLine()
    const namespace = freshNamespace('processes')
    const n = 150
    const seeds = [SEED + 10, SEED + 11]
    const kids = seeds.map((s) => new Child([server.url, namespace, String(s), String(n), '10000', String(2 * n)]))
    children.push(...kids)
    const opened = await Promise.all(kids.map((c) => c.line('open ')))
    const [w1, p1] = opened[0]!.split(' ').slice(1)
    const [w2, p2] = opened[1]!.split(' ').slice(1)
    expect(w1).not.toBe(w2)
    expect(p1).toBe(p2)
    await Promise.all(kids.map((c) => c.line('seen'))) // each holds the other's writes: the pub/sub link works
    for (const c of kids) c.send('status')
    const leaders = await Promise.all(kids.map((c) => c.line('leader ')))
    expect(leaders.sort()).toEqual(['leader false', 'leader true'])
    for (const c of kids) c.send('close')
    // Each process ends by itself after close(): no connection or timer of the replica keeps it alive.
    expect(await Promise.all(kids.map((c) => c.exited))).toEqual(['exit 0', 'exit 0'])
    expect(kids.map((c) => c.acked().length)).toEqual([n, n])
    expect(await lockKeys(namespace)).toEqual([])
    const again = await openReplica(namespace)
    kids.forEach((c, i) => expectHolds(again, seeds[i]!, c.acked()))
  })

  it('a process that gives back a lock and ends at once does not leave the lock behind (its release is slow to arrive)', async () => {
    // The child's release takes 300 ms to reach Redis; it closes and returns right after giving the lock back.
    const namespace = freshNamespace('exit')
    const child = spawn(process.execPath, ['--import', 'tsx', LOCK_EXIT_CHILD, String(server.port), namespace], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } })
    let out = ''
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()))
    const code = await new Promise((resolve) => child.on('close', resolve))
    expect(code, out).toBe(0)
    expect(out).toContain('acquired')
    expect(out).toContain('closed')
    expect(await lockKeys(namespace)).toEqual([])
  })

  it('a process SIGKILLed mid-write: its acknowledged writes survive; its slot stays untouched until its lock expires, then the next opener absorbs it', async () => {
    replayLine()
    const namespace = freshNamespace('kill')
    const ttl = 3000
    const a = await openReplica(namespace, { lockTtlMs: ttl }) // slot 0
    const seed = SEED + 20
    const child = new Child([server.url, namespace, String(seed), 'inf', String(ttl)])
    children.push(child)
    expect((await child.line('open ')).split(' ')[1]).toMatch(/~1$/)
    const target = 20 + Math.floor(mulberry32(SEED)() * 60)
    await until(() => child.acked().length >= target, 30_000, `${target} acknowledged writes`)
    child.proc.kill('SIGKILL')
    expect(await child.exited).toBe('SIGKILL')
    const acked = child.acked()
    // The dead process's lock has not expired yet: a new opener must not take slot 1 nor remove its keys.
    const d = await openReplica(namespace, { lockTtlMs: ttl })
    expect(slotOf(d)).toBe(2)
    expect((await storedKeys(namespace, ['tabs', '1'])).length).toBeGreaterThan(0)
    expectHolds(d, seed, acked)
    await until(() => a.collection(SHARING_COLLECTION).all().length >= acked.length, 5000, 'the live replica to hold the dead one’s writes')
    // Once the lock expired (renewals stopped with the process), the next opener takes the slot's keys over.
    await expect.poll(() => admin.exists(`${namespace}:lock:slot/1`), { timeout: ttl + 2000, interval: 50 }).toBe(0)
    await a.close()
    await d.close()
    const c = await openReplica(namespace)
    expect(slotOf(c)).toBe(0)
    expect(await storedKeys(namespace, ['tabs'])).toEqual([]) // slots 1 (dead) and 2 (closed) absorbed into slot 0
    expectHolds(c, seed, acked)
    await c.close()
    expectHolds(await openReplica(namespace), seed, acked)
  })

  it('a lost slot lease (its lock deleted in Redis) is reported as LeaseLostError; the replica stops acknowledging writes and closes', async () => {
    replayLine()
    const namespace = freshNamespace('lost-slot')
    const r = await openReplica(namespace, { lockTtlMs: 900 })
    const errors: Error[] = []
    r.on('error', (e) => errors.push(e))
    const c = r.collection(SHARING_COLLECTION)
    const acked: number[] = []
    const refused: unknown[] = []
    const writer = (async () => {
      for (let i = 0; ; i++) {
        try {
          await c.put(sharingRecord(SEED, i))
          acked.push(i)
        } catch (err) {
          refused.push(err)
          return
        }
        await sleep(2)
      }
    })()
    await until(() => acked.length >= 20, 10_000, '20 acknowledged writes')
    await admin.del(`${namespace}:lock:slot/0`)
    const lostAt = acked.length
    await until(() => errors.some((e) => e instanceof LeaseLostError), 5000, 'a LeaseLostError')
    await writer // it ends at its first refused write
    const lost = errors.find((e) => e instanceof LeaseLostError) as LeaseLostError
    expect(lost.code).toBe('LEASE_LOST')
    expect(lost.lock).toBe('slot')
    expect(refused.length).toBe(1) // LeaseLostError if it was pending at the loss, else ReplicaClosedError
    expect(refused[0] instanceof LeaseLostError || refused[0] instanceof ReplicaClosedError).toBe(true)
    await expect(c.put({ id: 'after' })).rejects.toThrow(ReplicaClosedError)
    expect(acked.length).toBeGreaterThanOrEqual(lostAt)
    expect(errors.filter((e) => !(e instanceof LeaseLostError))).toEqual([])
    const again = await openReplica(namespace)
    expectHolds(again, SEED, acked) // everything acknowledged before the loss is there
    expect(again.collection(SHARING_COLLECTION).get('after')).toBeUndefined()
  })

  it('a leader whose lease is lost (its lock taken in Redis) steps down — transports closed — and leads again once the lock is free', async () => {
    replayLine()
    const namespace = freshNamespace('lost-leader')
    const net = new MemoryNetwork({ seed: SEED })
    const room = { room: 'r', antiEntropyMs: 200 }
    const a = await openReplica(namespace, { lockTtlMs: 900, transports: [net.transport()], ...room })
    await until(() => a.status().leader, 5000, 'the first replica to lead')
    const b = await openReplica(namespace, { lockTtlMs: 900, transports: [net.transport()], ...room })
    const remote = await createReplica({ peerId: 'remote', transports: [net.transport()], ...room })
    open.push(remote)
    await until(() => remote.status().peers.length === 1, 5000, 'the remote to meet the store')
    const errors: Error[] = []
    a.on('error', (e) => errors.push(e))
    b.on('error', (e) => errors.push(e))
    await admin.set(`${namespace}:lock:leader`, 'someone-else', { PX: 2000 })
    await until(() => errors.some((e) => e instanceof LeaseLostError && e.lock === 'leader'), 5000, 'the leader to report its lost lease')
    await until(() => !a.status().leader && !b.status().leader && remote.status().peers.length === 0, 5000, 'no leader and no transport open')
    await b.collection(SHARING_COLLECTION).put({ id: 'while-nobody-leads' })
    await until(() => (a.status().leader || b.status().leader) && remote.status().peers.length === 1, 10_000, 'a leader again once the lock expired')
    await until(() => remote.collection(SHARING_COLLECTION).get('while-nobody-leads') !== undefined, 5000, 'the remote to get the write')
    expect([a, b].filter((r) => r.status().leader)).toHaveLength(1)
    expect(errors.filter((e) => !(e instanceof LeaseLostError && e.lock === 'leader'))).toEqual([])
    await a.collection(SHARING_COLLECTION).put({ id: 'after' }) // the slots were never at stake
  })

  describe('locks and channel of the sharing', () => {
    it('locks are exclusive across storages; acquire waits for a release and honours its AbortSignal', async () => {
      const namespace = freshNamespace('locks')
      const s1 = redisStorage({ url: server.url, namespace })
      const s2 = redisStorage({ url: server.url, namespace })
      const l1 = s1.sharing.locks!
      const l2 = s2.sharing.locks!
      const held = (await l1.tryAcquire('x'))!
      expect(held).toBeDefined()
      expect(await l2.tryAcquire('x')).toBeUndefined()
      const ctl = new AbortController()
      const aborted = l2.acquire('x', ctl.signal)
      setTimeout(() => ctl.abort(), 50)
      await expect(aborted).rejects.toMatchObject({ name: 'AbortError' })
      const waiting = l2.acquire('x')
      await sleep(100)
      held.release()
      held.release() // idempotent
      const next = await waiting
      expect(await l1.tryAcquire('x')).toBeUndefined()
      next.release()
      await expect.poll(() => admin.exists(`${namespace}:lock:x`)).toBe(0)
      await Promise.all([s1.close(), s2.close()])
    })

    it('a lease that cannot be renewed is given up locally before its TTL could run out on the server', async () => {
      const namespace = freshNamespace('deadline')
      const ttl = 1500
      const s = redisStorage({ url: server.url, namespace, lockTtlMs: ttl })
      const lease: Lease = (await s.sharing.locks!.tryAcquire('x'))!
      let lostAt = 0
      void lease.lost!.then(() => (lostAt = performance.now()))
      await sleep(700) // a renewal or two went through
      expect(lostAt).toBe(0)
      const pausedAt = performance.now()
      await admin.sendCommand(['CLIENT', 'PAUSE', '2500', 'ALL']) // no renewal gets through
      await until(() => lostAt > 0, 3000, 'the lease to be lost')
      expect(lostAt - pausedAt).toBeLessThan(ttl) // the key was still ours on the server: nobody else could hold it
      await sleep(2500 - (performance.now() - pausedAt) + 50)
      await s.close()
    })

    it('the channel reaches every other end (same storage or another), never itself; Uint8Arrays travel; junk is ignored', async () => {
      const namespace = freshNamespace('channel')
      const s1 = redisStorage({ url: server.url, namespace })
      const s2 = redisStorage({ url: server.url, namespace })
      const other = redisStorage({ url: server.url, namespace: freshNamespace('elsewhere') })
      const key = s1.sharing.key
      expect(s2.sharing.key).toBe(key)
      expect(other.sharing.key).not.toBe(key)
      const ends = [s1.sharing.channel!(`${key}/c`), s1.sharing.channel!(`${key}/c`), s2.sharing.channel!(`${key}/c`), other.sharing.channel!(`${other.sharing.key}/c`)]
      const got: unknown[][] = ends.map(() => [])
      ends.forEach((e, i) => (e.onmessage = (ev) => got[i]!.push(ev.data)))
      // Posted before the subscription is confirmed: still delivered, in order.
      ends[0]!.postMessage({ n: 1, bytes: new Uint8Array([0, 255, 7]) })
      ends[0]!.postMessage({ n: 2 })
      await until(() => got[1]!.length === 2 && got[2]!.length === 2, 5000, 'both other ends to get both messages')
      expect(got[1]).toEqual([{ n: 1, bytes: new Uint8Array([0, 255, 7]) }, { n: 2 }])
      expect((got[2]![0] as { bytes: unknown }).bytes).toBeInstanceOf(Uint8Array)
      await admin.publish(`${namespace}:chan:0:c`, 'not v8 at all')
      await admin.publish(`${namespace}:chan:0:c`, serialize({ not: 'an envelope' }))
      ends[2]!.postMessage('last')
      await until(() => got[1]!.length === 3, 5000, 'the last message')
      expect(got[1]![2]).toBe('last')
      expect(got[0]).toEqual(['last']) // nothing of its own, no junk
      expect(got[3]).toEqual([]) // another namespace hears nothing
      for (const e of ends) e.close()
      expect(() => ends[0]!.postMessage('x')).toThrow()
      await Promise.all([s1.close(), s2.close(), other.close()])
    })

    it('closing the storage and every lease and channel closes the sharing’s connections', async () => {
      const clients = async (): Promise<number> => String(await admin.sendCommand(['CLIENT', 'LIST'])).trim().split('\n').length
      // Every replica and storage of the earlier tests is closed: only the tests' own client is left.
      await expect.poll(clients, { timeout: 5000 }).toBe(1)
      const before = 1
      const namespace = freshNamespace('connections')
      const s = redisStorage({ url: server.url, namespace })
      const ch = s.sharing.channel!(`${s.sharing.key}/c`)
      const lease = (await s.sharing.locks!.tryAcquire('x'))!
      ch.postMessage('hello')
      await expect.poll(clients).toBe(before + 3) // the storage's client, the command and the subscriber connections
      await s.close()
      await expect.poll(clients).toBe(before + 2) // the lease and the channel still need theirs
      lease.release()
      ch.close()
      await expect.poll(clients).toBe(before)
      expect(await admin.exists(`${namespace}:lock:x`)).toBe(0)
    })
  })
})
