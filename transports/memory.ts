/**
 * An in-memory network for tests, simulations and benchmarks: every {@link MemoryNetwork.transport} is a
 * {@link Transport} whose frames travel through one shared, seeded, fault-injecting network object.
 *
 * ```ts
 * const net = new MemoryNetwork({ seed: 42, dropRate: 0.1, duplicateRate: 0.05, reorder: true, mode: 'manual' })
 * const a = net.transport(), b = net.transport()
 * await a.start({ room: 'r', peerId: 'a' }); await b.start({ room: 'r', peerId: 'b' })
 * net.deliverAll()                          // peer:up on both sides
 * a.send('b', new Uint8Array([1, 2, 3]))
 * net.deliverAll()                          // b's 'frame' listeners run (unless the frame was dropped)
 * ```
 *
 * Model
 * - Two transports are *connected* when both are started in the same room string and the link between their peer
 *   ids is up. Every change of that relation (start, stop, {@link MemoryNetwork.partition}, {@link MemoryNetwork.heal},
 *   {@link MemoryNetwork.link}) queues `peer:up` / `peer:down` events for the started side(s). Each connection has an
 *   id; a frame still in flight when its connection goes away (link cut, either side stopped) is discarded at delivery
 *   and counted as dropped, so a receiver never gets a frame from a peer it has been told is down.
 * - Peer events are always delivered before queued frames, in FIFO order, and are never dropped, duplicated or
 *   reordered. Frames are subject to `dropRate`, `duplicateRate` and `reorder`; the decisions are drawn from a seeded
 *   PRNG at `send` time, so the same seed and the same sequence of calls give the same behaviour.
 * - `mode: 'manual'` queues everything; only {@link MemoryNetwork.deliverNext} / {@link MemoryNetwork.deliverAll} /
 *   {@link MemoryNetwork.settle} deliver, which makes runs fully deterministic. `latencyMs` is ignored in manual mode.
 * - `mode: 'auto'` (the default) delivers asynchronously: peer events on a microtask, frames after their sampled
 *   latency (a microtask when it is 0, else `setTimeout`). A reordered frame is held back by an extra random delay
 *   (1 ms to twice the maximum latency, at least 2 ms) so that later frames overtake it. Fault decisions are seeded;
 *   the interleaving of timers with different delays is up to the event loop.
 * - Listener errors never break the network: each listener runs in its own try/catch; the error goes to
 *   `MemoryNetworkInit.onError` when given, otherwise it is rethrown from a fresh macrotask (`setTimeout`), which
 *   surfaces it as an uncaught exception (and fails a vitest run) without unwinding the network's delivery loop.
 */
import { FrameTooLargeError, PeerIdInUseError, TransportArgumentError, TransportStateError } from './errors.js'
import { TransportListeners } from './listeners.js'
import type { FrameListener, PeerId, PeerListener, RoomContext, Transport } from './types.js'

export { FrameTooLargeError, PeerIdInUseError, TransportArgumentError, TransportError, TransportStateError } from './errors.js'

// ---------------------------------------------------------------------------------------------------------------------
// Public types

/** Where a listener error came from, as passed to {@link MemoryNetworkInit.onError}. */
export interface ListenerErrorContext {
  /** The event being delivered. */
  readonly event: 'peer:up' | 'peer:down' | 'frame'
  /** The peer id of the receiving transport. */
  readonly receiver: PeerId
  /** The remote peer the event is about (the sender, for frames). */
  readonly peer: PeerId
}

/** Fault knobs that can be changed while the network runs (see {@link MemoryNetwork.setFaults}). */
export interface MemoryFaults {
  /**
   * Probability in [0, 1] that a frame is lost.
   * @default 0
   */
  dropRate?: number
  /**
   * Probability in [0, 1] that a frame that was not dropped is delivered twice.
   * @default 0
   */
  duplicateRate?: number
  /**
   * Reordering of frames: `false`/`0` keeps FIFO order, `true` is `1`, and a number in [0, 1] is the probability that a
   * delivery step picks a random queued frame (manual mode) or that a frame is held back (auto mode).
   * @default false
   */
  reorder?: boolean | number
  /**
   * One-way latency in ms (auto mode only): a fixed value or a uniform `[min, max]` range.
   * @default 0
   */
  latencyMs?: number | readonly [number, number]
}

/** Options of {@link MemoryNetwork}. */
export interface MemoryNetworkInit extends MemoryFaults {
  /**
   * Seed of the PRNG behind every fault decision (any number; used as a 32-bit unsigned integer).
   * @default 0
   */
  seed?: number
  /**
   * Largest frame, in bytes, that `send` accepts; larger frames throw {@link FrameTooLargeError}.
   * @default 65536
   */
  maxFrameSize?: number
  /**
   * `'auto'` delivers on its own (microtasks / timers); `'manual'` only when told by `deliverNext` / `deliverAll` / `settle`.
   * @default 'auto'
   */
  mode?: 'auto' | 'manual'
  /** Receives errors thrown by listeners; when absent they are rethrown asynchronously. */
  onError?: (error: unknown, context: ListenerErrorContext) => void
}

/** Counters of a {@link MemoryNetwork}; once nothing is pending, `sent + duplicated === delivered + dropped`. */
export interface MemoryNetworkStats {
  /** Frames accepted by `send` / `broadcast` (one per recipient). */
  readonly sent: number
  /** Frames handed to a receiving transport. */
  readonly delivered: number
  /** Frames lost: by `dropRate`, or in flight when their connection went away. */
  readonly dropped: number
  /** Extra copies created by `duplicateRate`. */
  readonly duplicated: number
  /** Payload bytes of the frames counted in `sent`. */
  readonly bytes: number
}

/** A {@link Transport} of a {@link MemoryNetwork}; `broadcast` is always present. */
export interface MemoryTransport extends Transport {
  /** Sends one frame to every connected peer. */
  broadcast(frame: Uint8Array): void
  /** The peer id given to the current or last `start()`, `undefined` before the first start. */
  readonly peerId: PeerId | undefined
  /** Whether the transport is started (and not stopped since). */
  readonly started: boolean
}

/** Default {@link MemoryNetworkInit.maxFrameSize}: 64 KiB. */
export const DEFAULT_MAX_FRAME_SIZE = 64 * 1024

// ---------------------------------------------------------------------------------------------------------------------
// Internals

/** sfc32 seeded through splitmix32: small, fast, good enough statistically for fault injection. */
function seededRandom(seed: number): () => number {
  let s = seed >>> 0
  const splitmix = (): number => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return (z ^ (z >>> 16)) >>> 0
  }
  let a = splitmix()
  let b = splitmix()
  let c = splitmix()
  let d = splitmix()
  const next = (): number => {
    const t = (((a + b) >>> 0) + d) >>> 0
    d = (d + 1) >>> 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) >>> 0
    c = ((c << 21) | (c >>> 11)) >>> 0
    c = (c + t) >>> 0
    return t / 4294967296
  }
  for (let i = 0; i < 12; i++) next()
  return next
}

/** FIFO over an array with a moving head index; compacts when the dead prefix dominates (amortised O(1)). */
class Queue<T> {
  private items: (T | undefined)[] = []
  private head = 0

  get length(): number {
    return this.items.length - this.head
  }

  push(item: T): void {
    this.items.push(item)
  }

  /** Removes and returns the item at `index` positions from the head; the head item takes its place (O(1)). */
  take(index = 0): T | undefined {
    if (this.head >= this.items.length) return undefined
    const h = this.head
    if (index > 0) {
      const j = h + index
      const picked = this.items[j]
      this.items[j] = this.items[h]
      this.items[h] = picked
    }
    const item = this.items[h]
    this.items[h] = undefined
    this.head = h + 1
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return item
  }
}

interface Connection {
  readonly id: number
  readonly remote: MemoryTransportImpl
}

interface FrameItem {
  readonly kind: 'frame'
  readonly from: PeerId
  readonly to: MemoryTransportImpl
  readonly conn: number
  readonly bytes: Uint8Array
}

interface PeerEventItem {
  readonly kind: 'peer:up' | 'peer:down'
  readonly peer: PeerId
  readonly to: MemoryTransportImpl
  readonly session: number
}

/** What the network exposes to its transports (kept off the public class surface). */
interface NetworkInternals {
  readonly maxFrameSize: number
  join(t: MemoryTransportImpl, room: string, peerId: PeerId): void
  leave(t: MemoryTransportImpl): void
  sendFrame(from: MemoryTransportImpl, conn: Connection, frame: Uint8Array): void
  reportError(error: unknown, context: ListenerErrorContext): void
}

function validateRate(name: string, value: number): number {
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) {
    throw new TransportArgumentError(`${name} must be a number in [0, 1], got ${String(value)}`)
  }
  return value
}

function validateReorder(value: boolean | number): number {
  if (value === true) return 1
  if (value === false) return 0
  return validateRate('reorder', value)
}

function validateLatency(value: number | readonly [number, number]): [number, number] {
  const ok = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x >= 0
  if (ok(value)) return [value, value]
  if (Array.isArray(value) && value.length === 2 && ok(value[0]) && ok(value[1]) && value[0] <= value[1]) {
    return [value[0], value[1]]
  }
  throw new TransportArgumentError(`latencyMs must be a finite number >= 0 or a [min, max] range, got ${String(value)}`)
}

/** Collision-free key of an unordered pair of peer ids. */
function pairKey(a: PeerId, b: PeerId): string {
  const [x, y] = a < b ? [a, b] : [b, a]
  return `${x.length}:${x}${y}`
}

class MemoryTransportImpl implements MemoryTransport {
  readonly maxFrameSize: number
  /** Connections to currently reachable peers, keyed by their peer id. */
  readonly peers = new Map<PeerId, Connection>()
  state: 'idle' | 'started' | 'stopped' = 'idle'
  /** Incremented on each start; peer events queued for an older session are discarded. */
  session = 0
  room: string | undefined
  private id: PeerId | undefined
  private readonly listeners = new TransportListeners()

  constructor(private readonly net: NetworkInternals) {
    this.maxFrameSize = net.maxFrameSize
  }

  get peerId(): PeerId | undefined {
    return this.id
  }

  get started(): boolean {
    return this.state === 'started'
  }

  async start(room: RoomContext): Promise<void> {
    if (this.state === 'started') {
      throw new TransportStateError(`transport already started as ${JSON.stringify(this.id)}; stop() it first`)
    }
    if (room === null || typeof room !== 'object') throw new TransportArgumentError('start() needs a RoomContext')
    if (typeof room.room !== 'string' || room.room === '') {
      throw new TransportArgumentError('room must be a non-empty string')
    }
    if (typeof room.peerId !== 'string' || room.peerId === '') {
      throw new TransportArgumentError('peerId must be a non-empty string')
    }
    this.net.join(this, room.room, room.peerId) // throws PeerIdInUseError before any state changes
  }

  /** Called by the network once the join is accepted, before connections are computed. */
  markStarted(room: string, peerId: PeerId): void {
    this.state = 'started'
    this.session++
    this.room = room
    this.id = peerId
  }

  async stop(): Promise<void> {
    if (this.state !== 'started') return
    this.state = 'stopped'
    this.net.leave(this)
  }

  send(peer: PeerId, frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkSize(frame)
    const conn = this.peers.get(peer)
    if (conn === undefined) return
    this.net.sendFrame(this, conn, frame)
  }

  broadcast(frame: Uint8Array): void {
    if (this.state !== 'started') return
    this.checkSize(frame)
    for (const conn of this.peers.values()) this.net.sendFrame(this, conn, frame)
  }

  on(event: 'peer:up' | 'peer:down', fn: PeerListener): () => void
  on(event: 'frame', fn: FrameListener): () => void
  on(event: 'peer:up' | 'peer:down' | 'frame', fn: PeerListener | FrameListener): () => void {
    return this.listeners.on(event, fn)
  }

  emitPeer(event: 'peer:up' | 'peer:down', peer: PeerId): void {
    this.listeners.emitPeer(event, peer, (error) => this.net.reportError(error, { event, receiver: this.id ?? '', peer }))
  }

  emitFrame(from: PeerId, bytes: Uint8Array): void {
    this.listeners.emitFrame(from, bytes, (error) => this.net.reportError(error, { event: 'frame', receiver: this.id ?? '', peer: from }))
  }

  private checkSize(frame: Uint8Array): void {
    if (!(frame instanceof Uint8Array)) throw new TransportArgumentError('frame must be a Uint8Array')
    if (frame.byteLength > this.maxFrameSize) throw new FrameTooLargeError(frame.byteLength, this.maxFrameSize)
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// The network

/** A simulated network connecting any number of in-memory transports, with seeded fault injection. */
export class MemoryNetwork {
  /** Largest frame the transports of this network accept. */
  readonly maxFrameSize: number
  /** Delivery mode chosen at construction. */
  readonly mode: 'auto' | 'manual'

  private readonly random: () => number
  private readonly onError: MemoryNetworkInit['onError']
  private dropRate = 0
  private duplicateRate = 0
  private reorderRate = 0
  private latency: [number, number] = [0, 0]

  private readonly rooms = new Map<string, Map<PeerId, MemoryTransportImpl>>()
  /** Explicit per-pair link state set by `link()` / `partition(a, b)`; wins over isolation groups. */
  private readonly links = new Map<string, { readonly a: PeerId; readonly b: PeerId; readonly up: boolean }>()
  /** Isolation group per peer id set by `partition(a)`; absent = group 0. Peers in different groups are cut. */
  private readonly groups = new Map<PeerId, number>()
  private nextGroup = 1
  private nextConn = 1

  private readonly events = new Queue<PeerEventItem>()
  private readonly frames = new Queue<FrameItem>()
  private inFlight = 0
  private idleWaiters: (() => void)[] = []

  private sent = 0
  private delivered = 0
  private dropped = 0
  private duplicated = 0
  private bytes = 0

  private readonly internals: NetworkInternals

  constructor(init: MemoryNetworkInit = {}) {
    const mode = init.mode ?? 'auto'
    if (mode !== 'auto' && mode !== 'manual') {
      throw new TransportArgumentError(`mode must be 'auto' or 'manual', got ${String(mode)}`)
    }
    this.mode = mode
    const maxFrameSize = init.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE
    if (!Number.isSafeInteger(maxFrameSize) || maxFrameSize < 1) {
      throw new TransportArgumentError(`maxFrameSize must be a positive integer, got ${String(maxFrameSize)}`)
    }
    this.maxFrameSize = maxFrameSize
    const seed = init.seed ?? 0
    if (typeof seed !== 'number' || !Number.isFinite(seed)) {
      throw new TransportArgumentError(`seed must be a finite number, got ${String(seed)}`)
    }
    this.random = seededRandom(seed)
    this.onError = init.onError
    this.setFaults(init)
    this.internals = {
      maxFrameSize,
      join: (t, room, peerId) => this.join(t, room, peerId),
      leave: (t) => this.leave(t),
      sendFrame: (from, conn, frame) => this.sendFrame(from, conn, frame),
      reportError: (error, context) => this.reportError(error, context),
    }
  }

  /** Creates a new, unstarted transport attached to this network (one per replica). */
  transport(): MemoryTransport {
    return new MemoryTransportImpl(this.internals)
  }

  /** Changes fault knobs at run time; omitted knobs keep their value. Applies to frames sent from now on. */
  setFaults(faults: MemoryFaults): void {
    // Validate everything before changing anything.
    const drop = faults.dropRate === undefined ? this.dropRate : validateRate('dropRate', faults.dropRate)
    const dup = faults.duplicateRate === undefined ? this.duplicateRate : validateRate('duplicateRate', faults.duplicateRate)
    const reorder = faults.reorder === undefined ? this.reorderRate : validateReorder(faults.reorder)
    const latency = faults.latencyMs === undefined ? this.latency : validateLatency(faults.latencyMs)
    this.dropRate = drop
    this.duplicateRate = dup
    this.reorderRate = reorder
    this.latency = latency
  }

  /**
   * Cuts every link between `groupA` and `groupB`; without `groupB`, isolates `groupA` from every peer outside it
   * (including peers that start later). Connected peers on both sides see `peer:down`.
   */
  partition(groupA: readonly PeerId[], groupB?: readonly PeerId[]): void {
    if (groupB === undefined) {
      const inA = new Set(groupA)
      const group = this.nextGroup++
      for (const p of inA) this.groups.set(p, group)
      // An isolation overrides earlier explicit links that crossed the new boundary.
      for (const [key, l] of this.links) if (inA.has(l.a) !== inA.has(l.b)) this.links.delete(key)
    } else {
      for (const a of groupA) for (const b of groupB) if (a !== b) this.links.set(pairKey(a, b), { a, b, up: false })
    }
    this.refresh()
  }

  /** Restores every link cut by `partition` or `link`; reconnected peers see `peer:up` again. */
  heal(): void {
    this.links.clear()
    this.groups.clear()
    this.refresh()
  }

  /** Cuts (`up = false`) or restores (`up = true`) the link between two peer ids; builds arbitrary topologies. */
  link(a: PeerId, b: PeerId, up: boolean): void {
    if (a === b) return
    this.links.set(pairKey(a, b), { a, b, up })
    this.refresh()
  }

  /** Whether two peer ids are linked (ignores whether they are started). */
  linked(a: PeerId, b: PeerId): boolean {
    if (a === b) return true
    const explicit = this.links.get(pairKey(a, b))
    if (explicit !== undefined) return explicit.up
    return (this.groups.get(a) ?? 0) === (this.groups.get(b) ?? 0)
  }

  /** Number of frames and peer events queued (manual mode) or in flight (auto mode). */
  pending(): number {
    return this.mode === 'manual' ? this.events.length + this.frames.length : this.inFlight
  }

  /**
   * Manual mode: delivers one queued item (peer events first, FIFO; then a frame, chosen by the seeded PRNG when
   * reordering, FIFO otherwise). Returns false when nothing was queued. An item whose connection is gone is
   * discarded (counted as dropped for frames) and still counts as a step.
   */
  deliverNext(): boolean {
    this.requireManual('deliverNext')
    const event = this.events.take()
    if (event !== undefined) {
      this.deliverEvent(event)
      return true
    }
    const n = this.frames.length
    if (n === 0) return false
    let index = 0
    if (this.reorderRate > 0 && n > 1 && this.random() < this.reorderRate) index = Math.floor(this.random() * n)
    const frame = this.frames.take(index)
    if (frame !== undefined) this.deliverFrame(frame)
    return true
  }

  /** Manual mode: calls {@link MemoryNetwork.deliverNext} until nothing is queued or `maxSteps` is reached; returns the steps taken. */
  deliverAll(maxSteps = 10_000_000): number {
    this.requireManual('deliverAll')
    let steps = 0
    while (steps < maxSteps && this.deliverNext()) steps++
    return steps
  }

  /**
   * Lets the network reach quiescence: in manual mode delivers everything (repeating after a macrotask in case
   * listeners sent asynchronously); in auto mode waits until nothing is in flight. Rejects with
   * {@link TransportStateError} if that does not happen within `timeoutMs` (e.g. listeners that ping-pong forever).
   */
  async settle(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (this.mode === 'manual') {
        // In bounded chunks, so that listeners that ping-pong forever hit the deadline instead of hanging.
        let steps: number
        do steps = this.deliverAll(10_000)
        while (steps === 10_000 && Date.now() < deadline)
      } else if (this.inFlight > 0) {
        const remaining = deadline - Date.now()
        if (remaining <= 0) break
        await this.whenIdle(remaining)
      }
      await new Promise<void>((resolve) => setTimeout(resolve, 0))
      if (this.pending() === 0) return
      if (Date.now() >= deadline) break
    }
    throw new TransportStateError(`network did not settle within ${timeoutMs} ms (${this.pending()} items pending)`)
  }

  /** A snapshot of the counters. */
  stats(): MemoryNetworkStats {
    return {
      sent: this.sent,
      delivered: this.delivered,
      dropped: this.dropped,
      duplicated: this.duplicated,
      bytes: this.bytes,
    }
  }

  // -- internals --------------------------------------------------------------------------------------------------

  private requireManual(what: string): void {
    if (this.mode !== 'manual') throw new TransportStateError(`${what}() is only available in manual mode`)
  }

  private join(t: MemoryTransportImpl, room: string, peerId: PeerId): void {
    let members = this.rooms.get(room)
    if (members?.has(peerId)) {
      throw new PeerIdInUseError(`peer id ${JSON.stringify(peerId)} is already started in this room`)
    }
    if (members === undefined) {
      members = new Map()
      this.rooms.set(room, members)
    }
    t.markStarted(room, peerId)
    members.set(peerId, t)
    this.refreshRoom(members)
  }

  private leave(t: MemoryTransportImpl): void {
    const room = t.room
    const id = t.peerId
    if (room === undefined || id === undefined) return
    const members = this.rooms.get(room)
    if (members?.get(id) === t) {
      members.delete(id)
      if (members.size === 0) this.rooms.delete(room)
    }
    for (const conn of t.peers.values()) {
      conn.remote.peers.delete(id)
      this.queueEvent({ kind: 'peer:down', peer: id, to: conn.remote, session: conn.remote.session })
    }
    t.peers.clear() // the stopped side hears nothing more, not even peer:down
  }

  /** Recomputes connections in every room after a topology change. */
  private refresh(): void {
    for (const members of this.rooms.values()) this.refreshRoom(members)
  }

  private refreshRoom(members: Map<PeerId, MemoryTransportImpl>): void {
    const list = [...members.values()]
    for (let i = 0; i < list.length; i++) {
      const a = list[i]!
      const aId = a.peerId!
      for (let j = i + 1; j < list.length; j++) {
        const b = list[j]!
        const bId = b.peerId!
        const want = this.linked(aId, bId)
        const have = a.peers.has(bId)
        if (want && !have) {
          const id = this.nextConn++
          a.peers.set(bId, { id, remote: b })
          b.peers.set(aId, { id, remote: a })
          this.queueEvent({ kind: 'peer:up', peer: bId, to: a, session: a.session })
          this.queueEvent({ kind: 'peer:up', peer: aId, to: b, session: b.session })
        } else if (!want && have) {
          a.peers.delete(bId)
          b.peers.delete(aId)
          this.queueEvent({ kind: 'peer:down', peer: bId, to: a, session: a.session })
          this.queueEvent({ kind: 'peer:down', peer: aId, to: b, session: b.session })
        }
      }
    }
  }

  private queueEvent(item: PeerEventItem): void {
    if (this.mode === 'manual') {
      this.events.push(item)
      return
    }
    this.inFlight++
    queueMicrotask(() => {
      this.inFlight--
      this.deliverEvent(item)
      this.checkIdle()
    })
  }

  private sendFrame(from: MemoryTransportImpl, conn: Connection, frame: Uint8Array): void {
    this.sent++
    this.bytes += frame.byteLength
    if (this.dropRate > 0 && this.random() < this.dropRate) {
      this.dropped++
      return
    }
    const copies = this.duplicateRate > 0 && this.random() < this.duplicateRate ? 2 : 1
    if (copies === 2) this.duplicated++
    const fromId = from.peerId!
    for (let i = 0; i < copies; i++) {
      // Each copy is its own buffer: the caller may reuse `frame`, and a receiver may mutate what it was given.
      this.queueFrame({ kind: 'frame', from: fromId, to: conn.remote, conn: conn.id, bytes: frame.slice() })
    }
  }

  private queueFrame(item: FrameItem): void {
    if (this.mode === 'manual') {
      this.frames.push(item)
      return
    }
    const [min, max] = this.latency
    let delay = min === max ? min : min + this.random() * (max - min)
    if (this.reorderRate > 0 && this.random() < this.reorderRate) {
      delay += 1 + this.random() * (Math.max(2, 2 * max) - 1)
    }
    this.inFlight++
    const run = (): void => {
      this.inFlight--
      this.deliverFrame(item)
      this.checkIdle()
    }
    if (delay === 0) queueMicrotask(run)
    else setTimeout(run, delay)
  }

  private deliverEvent(item: PeerEventItem): void {
    const to = item.to
    if (to.state !== 'started' || to.session !== item.session) return
    to.emitPeer(item.kind, item.peer)
  }

  private deliverFrame(item: FrameItem): void {
    const to = item.to
    if (to.state !== 'started' || to.peers.get(item.from)?.id !== item.conn) {
      this.dropped++
      return
    }
    this.delivered++
    to.emitFrame(item.from, item.bytes)
  }

  private whenIdle(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs)
      function done(): void {
        clearTimeout(timer)
        resolve()
      }
      this.idleWaiters.push(done)
    })
  }

  private checkIdle(): void {
    if (this.inFlight !== 0 || this.idleWaiters.length === 0) return
    const waiters = this.idleWaiters
    this.idleWaiters = []
    for (const w of waiters) w()
  }

  private reportError(error: unknown, context: ListenerErrorContext): void {
    if (this.onError !== undefined) {
      try {
        this.onError(error, context)
        return
      } catch (secondary) {
        error = secondary
      }
    }
    setTimeout(() => {
      throw error
    }, 0)
  }
}
