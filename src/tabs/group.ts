/**
 * Replicas that share one store: tabs of one origin on one IndexedDB database, or replicas of one process on one
 * Redis namespace ({@link StorageSharing}). Without this, two tabs load the same identity, stamp writes with the
 * same origin id and write the same log keys, so each overwrites the other's acknowledged writes.
 *
 * The design (README, "Tabs and shared storage"):
 * - **A slot per open replica.** Opening takes the lowest free slot `k` (lock `<key>/slot/<k>`, held until close),
 *   stamps writes as origin `<writer>~<k>` and writes only slot k's keys (persistence.ts). So acknowledged writes
 *   are never overwritten, and no two open replicas share an origin. Slots are reused, so the version vector grows
 *   with the most tabs ever open at once, not with every page load. Opening runs under `<key>/open`, so two tabs
 *   opening at once take different slots and create the identity once; the opener also takes over (absorbs) the
 *   keys of slots with data that nobody holds any more, so storage does not grow with closed tabs.
 * - **One peer per store.** All tabs share the stored peer id. Only the holder of `<key>/leader` runs the
 *   replica's transports; the others keep them closed (see gate.ts). A leader that closes or crashes releases the
 *   lock and the next tab takes over, compacting first when it holds anything the store lacks.
 * - **A tab link.** Tabs sync with each other over a {@link broadcastTransport} on channel `<key>/link`, with the
 *   ordinary protocol: a write in one tab is visible in the others within milliseconds, offline too, and the
 *   leader forwards it to the network like any change it receives (and network changes to the tabs). A tab does
 *   not store what it receives over the link: the sender (or, for network changes, the leader) stored it.
 * - **A control channel** (`<key>/control`, JSON): the leader posts its network status (peers, `via`, `behind`,
 *   online) so every tab can show it, and answers `sync()` and `setOnline()` requests from the other tabs.
 * - **Leases that can be lost.** Web Locks are held until released or until their tab goes; other {@link Locks}
 *   (Redis, shared by processes) hand out leases that expire unless renewed, and say so through `Lease.lost`. A
 *   leader that loses its lease steps down at once (closes its transports, reports a LeaseLostError with lock
 *   'leader') and competes again. A replica that loses its slot can no longer be sure that nobody else writes the
 *   slot's keys, so it stops acknowledging writes: it reports a LeaseLostError with lock 'slot' and closes without
 *   writing anything more (writes not yet durable reject; later ones reject with ReplicaClosedError). Caveat: a
 *   lease gives these guarantees only to a process that keeps running — one paused for longer than the lease's time
 *   to live (a long GC stall, SIGSTOP, a suspended VM) may still write once after another replica took its slot
 *   over, before it notices. Keep such pauses well below the TTL.
 */
import { asError } from '../../crdt/errors.js'
import { broadcastTransport } from '../../transports/broadcast.js'
import type { Transport } from '../../transports/types.js'
import { LeaseLostError, SharingUnavailableError, SyncTimeoutError } from '../errors.js'
import type { Lease, Locks, SharedChannel, StorageSharing } from '../storage/types.js'
import type { PeerStatus } from '../sync/engine.js'
import type { GatedTransport } from '../sync/gate.js'
import { realmLocks } from './locks.js'

/** How often the leader repeats its status to the other tabs, ms. */
const STATUS_INTERVAL_MS = 1000

/** The locks and channels of one shared store. */
export interface SharedContext {
  readonly key: string
  readonly locks: Locks
  readonly channel: (name: string) => SharedChannel
}

/** The locks and channels of a shared store, with their defaults. */
export function sharedContext(sharing: StorageSharing): SharedContext {
  const locks = sharing.locks ?? realmLocks
  const channel =
    sharing.channel ??
    ((name: string): SharedChannel => {
      const Ctor = (globalThis as { BroadcastChannel?: new (name: string) => SharedChannel }).BroadcastChannel
      if (!Ctor) throw new SharingUnavailableError('a shared store needs BroadcastChannel to link the replicas open on it; this environment has none (pass storage.sharing.channel)')
      return new Ctor(name)
    })
  return { key: sharing.key, locks, channel }
}

/**
 * Takes the lowest free slot of the store (kept until the returned lease is released) and calls `open` with it,
 * then `absorb` with the other slots that hold data but have no holder — both under the store's open lock, so that
 * no other replica opens meanwhile.
 */
export async function claimSlot<T extends { others: ReadonlyMap<number, unknown> }>(
  ctx: SharedContext,
  open: (slot: number) => Promise<T>,
  absorb: (dead: number[], opened: T) => Promise<void>,
): Promise<{ slot: number; lease: Lease; opened: T }> {
  const openLock = await ctx.locks.acquire(`${ctx.key}/open`)
  let openLost = false
  void openLock.lost?.then(() => {
    openLost = true
  })
  try {
    let slot = 0
    let lease: Lease | undefined
    while (!(lease = await ctx.locks.tryAcquire(`${ctx.key}/slot/${slot}`))) slot++
    try {
      const opened = await open(slot)
      const dead: number[] = []
      for (const other of opened.others.keys()) {
        // Nobody else is opening (we hold the open lock), so a free slot lock means its holder has gone.
        const probe = await ctx.locks.tryAcquire(`${ctx.key}/slot/${other}`)
        if (!probe) continue
        probe.release()
        dead.push(other)
      }
      // Absorbing removes keys: only while no one can be opening (and so taking one of those slots) meanwhile.
      if (openLost) throw new LeaseLostError(`lost the lock ${ctx.key}/open while opening`, 'slot')
      if (dead.length > 0) await absorb(dead, opened)
      return { slot, lease, opened }
    } catch (err) {
      lease.release()
      throw err
    }
  } finally {
    openLock.release()
  }
}

/** What a {@link TabGroup} needs from its replica. */
export interface TabHost {
  /** The transports the leader runs. */
  readonly gates: readonly GatedTransport[]
  /** The replica's network peers (its engine's status without the tabs). */
  peers(): PeerStatus[]
  /** Waits for every connected peer and tab to agree (the engine's sync). */
  syncEngine(timeoutMs: number): Promise<void>
  /** Makes the store hold everything in memory (called on becoming leader). */
  storeAll(): Promise<void>
  error(err: Error): void
  /** The slot's lease was lost: the replica must stop writing at once and close (see the module comment). */
  slotLost(err: LeaseLostError): void
}

type Control =
  | { t: 'status'; from: string; peers: PeerStatus[]; online: boolean }
  | { t: 'online'; from: string; online: boolean }
  | { t: 'sync'; from: string; id: number; timeoutMs: number }
  | { t: 'synced'; to: string; id: number; error?: string }

/** The replica's part in its store's group of tabs: the tab link, leadership and the control channel. */
export class TabGroup {
  /** The transport linking this replica to the other replicas on the store. */
  readonly link: Transport
  private host: TabHost | undefined
  private leaderLease: Lease | undefined
  private readonly abort = new AbortController()
  private readonly control: SharedChannel
  private online = true
  private leaderStatus: { from: string; peers: PeerStatus[]; online: boolean } | undefined
  private timer: ReturnType<typeof setInterval> | undefined
  private nextId = 1
  private readonly pending = new Map<number, (error?: string) => void>()
  private closed = false

  constructor(
    private readonly ctx: SharedContext,
    /** This replica's id on the tab link: its origin id, unique among the open replicas of the store. */
    readonly tabId: string,
    private readonly slotLease: Lease,
  ) {
    const Channel = function (this: unknown, name: string): SharedChannel {
      return ctx.channel(name)
    } as unknown as new (name: string) => SharedChannel
    this.link = broadcastTransport({ channel: `${ctx.key}/link`, peerId: tabId, BroadcastChannel: Channel })
    this.control = ctx.channel(`${ctx.key}/control`)
    this.control.onmessage = (event) => this.onControl(event.data)
    ;(this.control as { unref?: () => void }).unref?.()
  }

  /** Whether this replica runs the store's transports now. */
  get isLeader(): boolean {
    return this.leaderLease !== undefined
  }

  /** Starts competing for leadership, and watches the slot's lease. */
  start(host: TabHost): void {
    this.host = host
    void this.slotLease.lost?.then(() => {
      if (!this.closed) host.slotLost(new LeaseLostError(`lost the lock on writer slot ${this.tabId} of ${this.ctx.key}: this replica closes`, 'slot'))
    })
    this.compete()
  }

  private compete(): void {
    const host = this.host!
    this.ctx.locks.acquire(`${this.ctx.key}/leader`, this.abort.signal).then(
      (lease) => this.lead(lease),
      (err: unknown) => {
        if (!this.closed) host.error(asError(err))
      },
    )
  }

  /** The network status to report: our own as leader, else the leader's last report. */
  peers(): readonly PeerStatus[] {
    if (this.isLeader || !this.host) return this.host?.peers() ?? []
    return this.leaderStatus?.peers ?? []
  }

  /** Whether the store's transports are (to be) open. */
  isOnline(): boolean {
    return this.isLeader || !this.leaderStatus ? this.online : this.leaderStatus.online
  }

  /** Opens or closes the store's transports, wherever the leader is. */
  async setOnline(online: boolean): Promise<void> {
    this.online = online
    if (this.isLeader) {
      await Promise.all(this.host!.gates.map((g) => g.setOpen(online)))
      this.postStatus()
    } else {
      if (this.leaderStatus) this.leaderStatus = { ...this.leaderStatus, online }
      this.post({ t: 'online', from: this.tabId, online })
    }
  }

  /** Waits until the tabs agree and, through the leader, the network peers too. */
  async sync(timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs
    await this.host!.syncEngine(timeoutMs)
    if (this.isLeader) return
    const id = this.nextId++
    const answer = new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        resolve('no leader tab answered')
      }, Math.max(0, end - Date.now()))
      this.pending.set(id, (error) => {
        clearTimeout(timer)
        this.pending.delete(id)
        resolve(error)
      })
    })
    this.post({ t: 'sync', from: this.tabId, id, timeoutMs: Math.max(0, end - Date.now()) })
    const error = await answer
    if (error !== undefined) throw new SyncTimeoutError(`sync through the leader tab did not complete within ${timeoutMs} ms: ${error}`, [])
  }

  /** Gives up leadership and the slot (after the replica has stopped its transports and closed its storage). */
  close(): void {
    this.closed = true
    this.abort.abort()
    clearInterval(this.timer)
    this.control.onmessage = null
    this.control.close()
    this.leaderLease?.release()
    this.leaderLease = undefined
    this.slotLease.release()
    for (const resolve of [...this.pending.values()]) resolve('the replica closed')
  }

  private async lead(lease: Lease): Promise<void> {
    if (this.closed) return lease.release()
    this.leaderLease = lease
    void lease.lost?.then(() => this.stepDown(lease))
    const host = this.host!
    try {
      await host.storeAll()
    } catch (err) {
      host.error(asError(err))
    }
    if (this.leaderLease !== lease) return // closed, or the lease was lost meanwhile
    if (this.leaderStatus) this.online = this.leaderStatus.online
    this.leaderStatus = undefined
    await Promise.all(host.gates.map((g) => g.setOpen(this.online)))
    if (this.leaderLease !== lease) return
    this.postStatus()
    this.timer = setInterval(() => this.postStatus(), STATUS_INTERVAL_MS)
    ;(this.timer as { unref?: () => void }).unref?.()
  }

  /** The leader lease was lost: another replica may lead now, so close the transports and compete again. */
  private async stepDown(lease: Lease): Promise<void> {
    if (this.closed || this.leaderLease !== lease) return
    this.leaderLease = undefined
    clearInterval(this.timer)
    const host = this.host!
    host.error(new LeaseLostError(`lost the leader lock of ${this.ctx.key}: stepping down (transports closed) and competing again`, 'leader'))
    // Gate changes run in order, so this closes them even if lead() is still opening them.
    await Promise.all(host.gates.map((g) => g.setOpen(false)))
    if (!this.closed) this.compete()
  }

  /** Tells the other tabs the network status (the leader does, on changes and every second). */
  postStatus(): void {
    if (this.isLeader && !this.closed) this.post({ t: 'status', from: this.tabId, peers: this.host!.peers(), online: this.online })
  }

  private post(message: Control): void {
    try {
      this.control.postMessage(message)
    } catch (err) {
      this.host?.error(asError(err))
    }
  }

  private onControl(data: unknown): void {
    if (this.closed || typeof data !== 'object' || data === null) return
    const m = data as Partial<Control> & Record<string, unknown>
    if (m.t === 'status' && typeof m.from === 'string' && Array.isArray(m.peers) && typeof m.online === 'boolean') {
      if (!this.isLeader) this.leaderStatus = { from: m.from, peers: m.peers as PeerStatus[], online: m.online }
    } else if (m.t === 'online' && typeof m.online === 'boolean') {
      if (this.isLeader) void this.setOnline(m.online)
      else this.online = m.online
    } else if (m.t === 'sync' && typeof m.from === 'string' && typeof m.id === 'number' && typeof m.timeoutMs === 'number') {
      if (!this.isLeader) return
      const reply = (error?: string): void => this.post({ t: 'synced', to: m.from as string, id: m.id as number, ...(error === undefined ? {} : { error }) })
      this.host!.syncEngine(Math.min(m.timeoutMs, 60_000)).then(() => reply(), (err: unknown) => reply(err instanceof Error ? err.message : String(err)))
    } else if (m.t === 'synced' && m.to === this.tabId && typeof m.id === 'number') {
      this.pending.get(m.id)?.(typeof m.error === 'string' ? m.error : undefined)
    }
  }
}
