/**
 * Runs a schedule over N real replicas on a manual, seeded {@link MemoryNetwork} with an injected clock — fully
 * deterministic — then drives the system to quiescence.
 */
import { InvalidArgumentError, SyncmeshError } from '../../crdt/errors.js'
import { type MemoryFaults, type MemoryTransport, MemoryNetwork } from '../../transports/memory.js'
import { StorageClosedError } from '../errors.js'
import { type Replica, type ReplicaImpl, type ReplicaInit, createReplica } from '../replica.js'
import { MemoryStorage } from '../storage/memory.js'
import type { Storage } from '../storage/types.js'
import { positiveInt } from './args.js'
import { describeStep } from './print.js'
import { DEFAULT_FAULTS, type Faults, type Op, type Step, type TextOp, type Topology, inTopology } from './schedule.js'

/** The simulated clock of a run. */
export interface SimClockOptions {
  /**
   * Physical time at the start of the run (ms since the epoch).
   * @default 1_700_000_000_000
   */
  startMs?: number
  /**
   * How far the clock advances per step.
   * @default 1
   */
  stepMs?: number
  /**
   * Per-replica offsets of the physical clock at the start (ms; `clock` steps move them; keep them well below the
   * replicas' `maxDriftMs`).
   * @default none
   */
  skewMs?: readonly number[]
}

/** Options of {@link runSchedule}. */
export interface RunScheduleOptions {
  /** Number of replicas (peer ids `r0` … `r{n-1}`). */
  replicas: number
  /**
   * Seed of the network's fault decisions.
   * @default 0
   */
  seed?: number
  /** Baseline faults while the schedule runs (all faults are off during quiescence); see {@link DEFAULT_FAULTS}. */
  faults?: Faults
  /**
   * Links that exist; the others are cut for the whole run.
   * @default 'mesh'
   */
  topology?: Topology
  /** The deterministic clock. */
  clock?: SimClockOptions
  /**
   * Largest frame of the simulated network (small values exercise chunking).
   * @default 65536
   */
  maxFrameSize?: number
  /** Extra replica options (e.g. `compactAfterEntries`, `maxMessageBytes`). */
  replica?: Pick<ReplicaInit, 'compactAfterEntries' | 'maxMessageBytes' | 'room' | 'app'> & { maxDriftMs?: number }
  /**
   * Most anti-entropy rounds to reach quiescence before {@link NotQuiescentError}.
   * @default 50
   */
  maxRounds?: number
  /**
   * Most deliveries one `deliverAll` may take before the run is declared a ping-pong ({@link NotQuiescentError}).
   * @default 1_000_000
   */
  maxDeliveries?: number
  /** Called with each replica as it opens (again after every restart), and the run's network: attach listeners, count events. */
  onReplica?: (replica: Replica, index: number, network: MemoryNetwork) => void
  /**
   * Open the replicas with text support (`yjsText()`, which loads yjs).
   * @default whether the schedule holds text ops
   */
  text?: boolean
}

/** An error a replica or the network reported during a run. */
export interface RunError {
  /** Index of the replica (-1 for network listener errors). */
  readonly replica: number
  /** Index of the step being run (the schedule length during quiescence). */
  readonly step: number
  readonly error: unknown
}

/** What {@link runSchedule} returns. */
export interface RunResult {
  /** The replicas, open and quiescent, index i = peer id `r{i}`. */
  readonly replicas: Replica[]
  /** The network (manual mode; faults off). */
  readonly network: MemoryNetwork
  /** One line per step and per quiescence round; equal for equal seeds and schedules. */
  readonly trace: string[]
  /** Errors reported by replicas (`error` events, failed writes) or by network listeners; empty in a healthy run. */
  readonly errors: RunError[]
  /** Anti-entropy rounds quiescence took. */
  readonly rounds: number
  /** Closes every replica. */
  close(): Promise<void>
}

/** The system did not become quiescent: a round still changed state after `maxRounds`, or frames ping-ponged forever. */
export class NotQuiescentError extends SyncmeshError {
  override readonly code = 'NOT_QUIESCENT'
}

/** What a text op needs of a text field (a Y.Text has it). */
interface EditableText {
  readonly length: number
  insert(index: number, text: string): void
  delete(index: number, length: number): void
}

/** Applies a {@link TextOp} to a text field. */
function editText(t: EditableText, op: TextOp): void {
  const at = op.index % (t.length + 1)
  const remove = Math.min(op.remove, t.length - at)
  if (remove > 0) t.delete(at, remove)
  if (op.insert.length > 0) t.insert(at, op.insert)
}

/** Resolves on the next macrotask (setImmediate in Node, setTimeout elsewhere). */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => (typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0)))
}

/** A durable disk: outlives the replica that uses it; each incarnation gets its own handle. */
class SimDisk {
  readonly backing = new MemoryStorage()

  /** A storage handle for one incarnation; `cut()` makes every later call fail (a crash). */
  open(): Storage & { cut(): void } {
    const backing = this.backing
    let closed = false
    const check = (): void => {
      if (closed) throw new StorageClosedError('storage handle is closed (the replica crashed or closed)')
    }
    return {
      async load(key) {
        check()
        return backing.load(key)
      },
      async save(key, data) {
        check()
        return backing.save(key, data)
      },
      async remove(key) {
        check()
        return backing.remove(key)
      },
      async loadRange(prefix) {
        check()
        return backing.loadRange(prefix)
      },
      async close() {
        closed = true
      },
      cut() {
        closed = true
      },
    }
  }
}

interface Slot {
  replica: ReplicaImpl
  transport: MemoryTransport
  handle: Storage & { cut(): void }
  off: () => void
}

function vvString(replica: ReplicaImpl, text = false): string {
  return [...(text ? replica.text!.versionVector() : replica.store.versionVector()).values()]
    .map((ts) => `${ts.peer}@${ts.wall}.${ts.counter}`)
    .sort()
    .join(',')
}

/**
 * Runs a schedule over `replicas` fresh replicas (peer ids `r0`…) on a manual, seeded {@link MemoryNetwork} with an
 * injected clock that advances `stepMs` per step, then runs to quiescence: heals every partition and cut link
 * (the topology stays), turns every fault off, and repeats {anti-entropy on every replica; deliver everything} until
 * a whole round changes no replica's state (digest and version vector). Deterministic: the same seed and schedule
 * give the same trace. Throws {@link NotQuiescentError} when quiescence is not reached within `maxRounds`.
 */
export async function runSchedule(schedule: readonly Step[], options: RunScheduleOptions): Promise<RunResult> {
  const n = positiveInt('runSchedule: replicas', options.replicas)
  const topology = options.topology ?? 'mesh'
  if (!['mesh', 'line', 'ring', 'star'].includes(topology)) throw new InvalidArgumentError(`runSchedule: unknown topology ${JSON.stringify(topology)}`)
  const baseline: MemoryFaults = { ...DEFAULT_FAULTS, ...options.faults }
  const maxRounds = options.maxRounds ?? 50
  const maxDeliveries = options.maxDeliveries ?? 1_000_000
  const stepMs = options.clock?.stepMs ?? 1
  const skew = Array.from({ length: n }, (_, i) => options.clock?.skewMs?.[i] ?? 0)
  let now = options.clock?.startMs ?? 1_700_000_000_000
  let stepIndex = 0
  const trace: string[] = []
  const errors: RunError[] = []
  const network = new MemoryNetwork({
    seed: options.seed ?? 0,
    mode: 'manual',
    ...baseline,
    ...(options.maxFrameSize !== undefined ? { maxFrameSize: options.maxFrameSize } : {}),
    onError: (error) => errors.push({ replica: -1, step: stepIndex, error }),
  })
  const ids = Array.from({ length: n }, (_, i) => `r${i}`)
  const disks = Array.from({ length: n }, () => new SimDisk())
  const withText = options.text ?? schedule.some((s) => s.kind === 'text')
  const text = withText ? (await import('../text/index.js')).yjsText() : undefined
  const slots: Slot[] = []
  // Randomness for new origin ids (an amnesiac replica's new history), drawn from the seed so runs replay exactly.
  let idDraws = 0
  const idRandom = (): number => (Math.imul((options.seed ?? 0) + 0x632be5ab * ++idDraws, 0x9e3779b1) >>> 0) / 2 ** 32

  // Link state: topology ∧ ¬cut ∧ same partition group. Only pairs whose state changes are touched.
  const linkUp = new Map<string, boolean>()
  const cut = new Set<string>()
  let groups: readonly number[] | undefined
  const pair = (i: number, j: number): string => (i < j ? `${i}-${j}` : `${j}-${i}`)
  const applyLinks = (): void => {
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const key = pair(i, j)
        const want =
          inTopology(topology, n, i, j) && !cut.has(key) && (groups === undefined || groups[i % groups.length] === groups[j % groups.length])
        if ((linkUp.get(key) ?? true) !== want) {
          linkUp.set(key, want)
          network.link(ids[i]!, ids[j]!, want)
        }
      }
    }
  }
  applyLinks()

  const open = async (i: number): Promise<void> => {
    const transport = network.transport()
    const handle = disks[i]!.open()
    // createReplica always makes a ReplicaImpl; the kit reaches into it (engine, store, text) to drive and fingerprint runs.
    const replica = (await createReplica({
      peerId: ids[i]!,
      storage: handle,
      transports: [transport],
      antiEntropyMs: 0,
      random: idRandom,
      clock: { now: () => now + skew[i]!, ...(options.replica?.maxDriftMs !== undefined ? { maxDriftMs: options.replica.maxDriftMs } : {}) },
      ...(options.replica?.compactAfterEntries !== undefined ? { compactAfterEntries: options.replica.compactAfterEntries } : {}),
      ...(options.replica?.maxMessageBytes !== undefined ? { maxMessageBytes: options.replica.maxMessageBytes } : {}),
      ...(options.replica?.room !== undefined ? { room: options.replica.room } : {}),
      ...(options.replica?.app !== undefined ? { app: options.replica.app } : {}),
      ...(text ? { text } : {}),
    })) as ReplicaImpl
    const off = replica.on('error', (error) => errors.push({ replica: i, step: stepIndex, error }))
    slots[i] = { replica, transport, handle, off }
    options.onReplica?.(replica, i, network)
  }
  for (let i = 0; i < n; i++) await open(i)

  const drain = (what: string): number => {
    const steps = network.deliverAll(maxDeliveries)
    if (network.pending() > 0) {
      throw new NotQuiescentError(`${what}: the network still had ${network.pending()} items queued after ${maxDeliveries} deliveries (frames ping-pong forever?)`)
    }
    return steps
  }

  let writes: { replica: number; lost: boolean; done: Promise<void> }[] = []
  const settleWrites = async (): Promise<void> => {
    if (writes.length === 0) return
    const batch = writes
    writes = []
    await Promise.all(batch.map((w) => w.done))
  }
  const issue = (op: Op, i: number): void => {
    const replica = slots[op.replica]!.replica
    let p: Promise<void>
    try {
      const c = replica.collection(op.collection)
      if (op.kind === 'text') {
        editText(c.text(op.id, op.field) as EditableText, op)
        p = replica.whenFlushed()
      } else p = op.kind === 'put' ? c.put({ ...op.fields, id: op.id }) : op.kind === 'update' ? c.update(op.id, op.patch) : c.delete(op.id)
    } catch (error) {
      p = Promise.reject(error)
    }
    const w = { replica: op.replica, lost: false, done: p }
    w.done = p.catch((error: unknown) => {
      if (!w.lost) errors.push({ replica: op.replica, step: i, error })
    })
    writes.push(w)
  }
  const checkReplica = (r: number, step: Step): number => {
    if (!Number.isSafeInteger(r) || r < 0 || r >= n) throw new InvalidArgumentError(`runSchedule: step ${describeStep(step)} names replica ${r}, but the run has ${n}`)
    return r
  }

  let burstLeft = 0
  const pad = String(schedule.length + maxRounds).length
  const line = (i: number | string, text: string): void => {
    trace.push(`${typeof i === 'number' ? String(i).padStart(pad, '0') : i.padStart(pad, ' ')} ${text} q=${network.pending()}`)
  }

  for (let i = 0; i < schedule.length; i++) {
    const step = schedule[i]!
    // Storage and delivery resolve through microtasks only: yield to the event loop now and then, so the test
    // runner (timers, worker messages) is not starved during long properties.
    if (i % 64 === 63) await yieldToEventLoop()
    stepIndex = i
    now += stepMs
    if (step.kind === 'put' || step.kind === 'update' || step.kind === 'delete' || step.kind === 'text') {
      checkReplica(step.replica, step)
      issue(step, i)
      line(i, describeStep(step))
    } else {
      let note = ''
      if (step.kind === 'restart' && step.crash) {
        // kill -9 while the writes just issued are in flight: they never become durable, but their frames leave first.
        const r = checkReplica(step.replica, step)
        slots[r]!.off() // the dying incarnation's complaints (its storage is gone) are expected
        slots[r]!.handle.cut()
        const lost = writes.filter((w) => w.replica === r)
        for (const w of lost) w.lost = true
        if (lost.length > 0) note = ` (${lost.length} writes in flight lost)`
      }
      await settleWrites()
      switch (step.kind) {
        case 'deliver': {
          let k = 0
          while (k < step.count && network.deliverNext()) k++
          note = ` → ${k}`
          break
        }
        case 'deliverAll':
          note = ` → ${drain(`step ${i}`)}`
          break
        case 'antiEntropy':
          if (step.replica === undefined) for (const s of slots) s.replica.engine.antiEntropy()
          else slots[checkReplica(step.replica, step)]!.replica.engine.antiEntropy()
          break
        case 'burst':
          network.setFaults({ dropRate: step.dropRate, duplicateRate: step.duplicateRate })
          burstLeft = step.steps + 1
          break
        case 'partition':
          if (step.groups.length === 0) throw new InvalidArgumentError('runSchedule: a partition needs at least one group entry')
          groups = step.groups
          applyLinks()
          break
        case 'heal':
          groups = undefined
          cut.clear()
          applyLinks()
          break
        case 'link': {
          const a = checkReplica(step.a, step)
          const b = checkReplica(step.b, step)
          if (a === b || !inTopology(topology, n, a, b)) {
            note = ' (not a link of the topology: ignored)'
            break
          }
          if (step.up) cut.delete(pair(a, b))
          else cut.add(pair(a, b))
          applyLinks()
          break
        }
        case 'restart': {
          const r = checkReplica(step.replica, step)
          const slot = slots[r]!
          if (step.crash) {
            // No flush, no goodbye: what was sent before the crash arrives, received deltas not yet durable are lost.
            note += ` → ${drain(`crash of r${r}`)} delivered first`
            await slot.transport.stop()
          } else {
            await slot.replica.close()
            slot.off()
          }
          await open(r)
          break
        }
        case 'amnesia': {
          const r = checkReplica(step.replica, step)
          const slot = slots[r]!
          await slot.replica.close()
          slot.off()
          disks[r] = new SimDisk()
          await open(r)
          break
        }
        case 'clock':
          skew[checkReplica(step.replica, step)]! += step.ms
          break
        default: {
          const never: never = step
          throw new InvalidArgumentError(`runSchedule: unknown step ${JSON.stringify(never)}`)
        }
      }
      line(i, describeStep(step) + note)
    }
    if (burstLeft > 0 && --burstLeft === 0) network.setFaults({ dropRate: baseline.dropRate, duplicateRate: baseline.duplicateRate })
  }
  await settleWrites()

  // Quiescence: everything healed (the topology stays), faults off, anti-entropy until a whole round changes nothing.
  stepIndex = schedule.length
  network.setFaults({ dropRate: 0, duplicateRate: 0, reorder: false })
  groups = undefined
  cut.clear()
  applyLinks()
  drain('quiescence')
  const fingerprint = (): string[] =>
    slots.map((s) => `${s.replica.store.digest()} ${vvString(s.replica)}${s.replica.text ? ` text ${s.replica.text.digest()} ${vvString(s.replica, true)}` : ''}`)
  let before = fingerprint()
  let rounds = 0
  for (;;) {
    if (rounds >= maxRounds) {
      throw new NotQuiescentError(
        `not quiescent after ${maxRounds} anti-entropy rounds (${n} replicas, topology ${topology}, seed ${options.seed ?? 0}); last states:\n` +
          before.map((f, i) => `  r${i}: ${f}`).join('\n'),
      )
    }
    rounds++
    now += stepMs
    for (const s of slots) s.replica.engine.antiEntropy()
    const delivered = drain(`quiescence round ${rounds}`)
    await Promise.resolve()
    const after = fingerprint()
    const changed = after.filter((f, i) => f !== before[i]).length
    line(`Q${rounds}`, `anti-entropy round → ${delivered} delivered, ${changed} replicas changed`)
    if (changed === 0) break
    before = after
  }
  for (let i = 0; i < n; i++) trace.push(`final r${i} ${before[i]}`)

  return {
    replicas: slots.map((s) => s.replica),
    network,
    trace,
    errors,
    rounds,
    close: async () => {
      for (const s of slots) await s.replica.close()
    },
  }
}
