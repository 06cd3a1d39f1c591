/**
 * Delta sync under faults: two or three stores, each with its own peer id and hybrid logical clock, take random local
 * writes and sync through `changesSince(receiver.versionVector())` → `encodeDelta` → `decodeDelta` → `apply`, over a
 * network that loses, duplicates and reorders messages. A final anti-entropy round (every ordered pair syncs once)
 * must converge every store to the same digest and to the reference model, after which no pair has anything left
 * to send. A sync delivered at once must leave nothing for an immediate second `changesSince` (nothing resent).
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import { HLC, RecordStore, type Timestamp, decodeDelta, encodeDelta } from '../crdt/index.js'
import type { RecordOp } from '../src/testkit/index.js'
import { COLLECTIONS, type StampedOp, opBodyArb } from './arbitraries.js'
import { check, propTest } from './helpers.js'
import { referenceState } from './reference-model.js'
import { applyOp, assertSame, normalizeDelta, registerState, visibleState } from './state.js'

const RUNS = 10_000

/**
 * A live delta as a replica's commit encodes it (`encodeChangesOf`, straight from the blocks, given the ids written
 * per collection), checked against the delta object (`changesOf(…)`) it stands for: the same records and vectors (its
 * collections may come in another order), and byte for byte its encoding when the refs list each collection in one run.
 */
function liveDelta(store: RecordStore, origin: string, since: Timestamp | undefined, refs: readonly { collection: string; id: string }[]): Uint8Array {
  const written = new Map<string, string[]>()
  for (const { collection, id } of refs) written.set(collection, [...(written.get(collection) ?? []), id])
  const bytes = store.encodeChangesOf(origin, since, written)
  const delta = store.changesOf(origin, since, refs)
  assertSame('encodeChangesOf vs changesOf', normalizeDelta(decodeDelta(bytes), true), normalizeDelta(delta, true))
  const grouped = refs.every((r, i) => i === 0 || r.collection === refs[i - 1]!.collection || !refs.slice(0, i).some((q) => q.collection === r.collection))
  if (grouped) assertSame('encodeChangesOf vs encodeDelta(changesOf)', Buffer.from(bytes).toString('hex'), Buffer.from(encodeDelta(delta)).toString('hex'))
  return bytes
}

type Event =
  | { readonly t: 'write'; readonly at: number; readonly body: RecordOp; readonly tick: number }
  | { readonly t: 'sync'; readonly from: number; readonly to: number; readonly now: boolean }
  | { readonly t: 'deliver'; readonly pick: number; readonly keep: boolean }
  | { readonly t: 'drop'; readonly pick: number }

const eventArb: fc.Arbitrary<Event> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({ t: fc.constant('write' as const), at: fc.nat(), body: opBodyArb(), tick: fc.integer({ min: 0, max: 2 }) }),
  },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('sync' as const), from: fc.nat(), to: fc.nat(), now: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('deliver' as const), pick: fc.nat(), keep: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('drop' as const), pick: fc.nat() }) },
)

const PEER_SETS: readonly (readonly string[])[] = [
  ['a', 'b', 'c'],
  ['\u{1F600}', '\uD800', 'é'],
  ['b', 'a', 'ab'],
]

const scenarioArb = fc.record({
  n: fc.integer({ min: 2, max: 3 }),
  peers: fc.constantFrom(...PEER_SETS),
  skew: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 3, maxLength: 3 }),
  events: fc.array(eventArb, { maxLength: 40 }),
})

interface Node {
  readonly store: RecordStore
  readonly clock: HLC
}

/** One sync from `a` to `b` over the wire; returns the encoded message. */
function message(a: Node, b: Node): Uint8Array {
  return encodeDelta(a.store.changesSince(b.store.versionVector()))
}

function deliver(b: Node, bytes: Uint8Array): void {
  const delta = decodeDelta(bytes)
  b.store.apply(delta)
  // Like a replica, fold the newest remote timestamp into the local clock.
  for (const ts of delta.to.values()) if (ts.peer !== b.clock.peer) b.clock.receive(ts)
}

/** Syncs a → b at once and checks that an immediate second round has nothing to send. */
function syncNow(a: Node, b: Node, label: string): void {
  deliver(b, message(a, b))
  const again = a.store.changesSince(b.store.versionVector())
  check(again.records.length === 0, () => `${label}: resent after a completed sync:\n${normalizeDelta(again, true)}`)
}

describe('delta sync over a lossy, duplicating, reordering network', () => {
  propTest('stores converge to the reference model after anti-entropy; nothing is resent', RUNS, () =>
    fc.property(scenarioArb, ({ n, peers, skew, events }) => {
      let time = 1
      const nodes: Node[] = Array.from({ length: n }, (_, i) => ({
        store: new RecordStore(),
        clock: new HLC(peers[i]!, { now: () => time + skew[i]!, maxDriftMs: 1_000 }),
      }))
      const ops: StampedOp[] = []
      const queue: Array<{ to: number; bytes: Uint8Array }> = []
      for (const ev of events) {
        if (ev.t === 'write') {
          time += ev.tick
          const node = nodes[ev.at % n]!
          const op = { ...ev.body, ts: node.clock.now() } as StampedOp
          applyOp(node.store, op)
          ops.push(op)
        } else if (ev.t === 'sync') {
          const from = ev.from % n
          const to = (from + 1 + (ev.to % (n - 1))) % n
          if (ev.now) syncNow(nodes[from]!, nodes[to]!, `sync ${from}→${to}`)
          else queue.push({ to, bytes: message(nodes[from]!, nodes[to]!) })
        } else if (queue.length > 0) {
          const i = ev.pick % queue.length
          const m = queue[i]!
          if (ev.t === 'drop' || !ev.keep) queue.splice(i, 1)
          if (ev.t === 'deliver') deliver(nodes[m.to]!, m.bytes)
        }
      }
      // Whatever is still in flight is lost. Anti-entropy: every ordered pair syncs once.
      for (let a = 0; a < n; a++) for (let b = 0; b < n; b++) if (a !== b) deliver(nodes[b]!, message(nodes[a]!, nodes[b]!))
      const expected = JSON.stringify(referenceState(ops))
      const digest = nodes[0]!.store.digest()
      const registers = registerState(nodes[0]!.store)
      nodes.forEach((node, i) => {
        assertSame(`store ${i} vs model`, JSON.stringify(visibleState(node.store, COLLECTIONS)), expected)
        assertSame(`store ${i} digest`, node.store.digest(), digest)
        assertSame(`store ${i} registers`, registerState(node.store), registers)
      })
      for (let a = 0; a < n; a++) {
        for (let b = 0; b < n; b++) {
          if (a === b) continue
          const left = nodes[a]!.store.changesSince(nodes[b]!.store.versionVector())
          check(left.records.length === 0, () => `after anti-entropy ${a}→${b} still sends:\n${normalizeDelta(left, true)}`)
        }
      }
      // A clean sync between converged stores is also empty both ways.
      if (n > 1) syncNow(nodes[0]!, nodes[1]!, 'final 0→1')
    }),
  )

  // Live changes: a replica streams just the records it wrote (`changesOf(origin, since, refs)`), the cheap path the
  // store offers for this. Anti-entropy afterwards must still repair whatever the live stream missed.
  propTest('live deltas (changesOf) followed by anti-entropy converge', RUNS, () =>
    fc.property(
      fc.array(fc.record({ body: opBodyArb(), live: fc.boolean(), tick: fc.integer({ min: 0, max: 2 }) }), { minLength: 1, maxLength: 12 }),
      (writes) => {
        let time = 1
        const a: Node = { store: new RecordStore(), clock: new HLC('a', { now: () => time }) }
        const b: Node = { store: new RecordStore(), clock: new HLC('b', { now: () => time }) }
        const ops: StampedOp[] = []
        // A live delta covers every record written since the previous one (the caller's side of changesOf's contract).
        let since: Timestamp | undefined
        let refs: { collection: string; id: string }[] = []
        for (const w of writes) {
          time += w.tick
          const op = { ...w.body, ts: a.clock.now() } as StampedOp
          applyOp(a.store, op)
          ops.push(op)
          refs.push({ collection: op.collection, id: op.id })
          if (w.live) {
            deliver(b, liveDelta(a.store, 'a', since, refs))
            since = a.store.versionVector().get('a')
            refs = []
          }
        }
        deliver(b, message(a, b))
        deliver(a, message(b, a))
        const expected = JSON.stringify(referenceState(ops))
        assertSame('writer vs model', JSON.stringify(visibleState(a.store, COLLECTIONS)), expected)
        assertSame('receiver vs model', JSON.stringify(visibleState(b.store, COLLECTIONS)), expected)
      },
    ),
  )

  // Both replicas write (often the same records, so one's writes supersede the other's) and stream their own writes
  // as live deltas (`changesOf`) over a network that drops, duplicates and reorders them; anti-entropy then repairs.
  propTest('two writers streaming live deltas over a lossy network converge after anti-entropy', RUNS, () =>
    fc.property(
      fc.array(
        fc.oneof(
          { weight: 3, arbitrary: fc.record({ t: fc.constant('write' as const), at: fc.nat({ max: 1 }), body: opBodyArb(), tick: fc.integer({ min: 0, max: 2 }) }) },
          { weight: 2, arbitrary: fc.record({ t: fc.constant('flush' as const), at: fc.nat({ max: 1 }) }) },
          { weight: 2, arbitrary: fc.record({ t: fc.constant('deliver' as const), pick: fc.nat(), keep: fc.boolean() }) },
          { weight: 1, arbitrary: fc.record({ t: fc.constant('drop' as const), pick: fc.nat() }) },
        ),
        { maxLength: 30 },
      ),
      (events) => {
        let time = 1
        const peers = ['a', 'b'] as const
        const nodes: Node[] = peers.map((p) => ({ store: new RecordStore(), clock: new HLC(p, { now: () => time }) }))
        const since: Array<Timestamp | undefined> = [undefined, undefined]
        const dirty: Array<Array<{ collection: string; id: string }>> = [[], []]
        const queue: Array<{ to: number; bytes: Uint8Array }> = []
        const ops: StampedOp[] = []
        for (const ev of events) {
          if (ev.t === 'write') {
            time += ev.tick
            const op = { ...ev.body, ts: nodes[ev.at]!.clock.now() } as StampedOp
            applyOp(nodes[ev.at]!.store, op)
            ops.push(op)
            dirty[ev.at]!.push({ collection: op.collection, id: op.id })
          } else if (ev.t === 'flush') {
            const i = ev.at
            queue.push({ to: 1 - i, bytes: liveDelta(nodes[i]!.store, peers[i]!, since[i], dirty[i]!) })
            since[i] = nodes[i]!.store.versionVector().get(peers[i]!)
            dirty[i] = []
          } else if (queue.length > 0) {
            const k = ev.pick % queue.length
            const m = queue[k]!
            if (ev.t === 'drop' || !ev.keep) queue.splice(k, 1)
            if (ev.t === 'deliver') deliver(nodes[m.to]!, m.bytes)
          }
        }
        deliver(nodes[1]!, message(nodes[0]!, nodes[1]!))
        deliver(nodes[0]!, message(nodes[1]!, nodes[0]!))
        const expected = JSON.stringify(referenceState(ops))
        nodes.forEach((node, i) => assertSame(`replica ${peers[i]} vs model`, JSON.stringify(visibleState(node.store, COLLECTIONS)), expected))
        assertSame('digests', nodes[0]!.store.digest(), nodes[1]!.store.digest())
        const left = nodes[0]!.store.changesSince(nodes[1]!.store.versionVector())
        check(left.records.length === 0, () => `after anti-entropy a→b still sends:\n${normalizeDelta(left, true)}`)
      },
    ),
  )

  // Durable-first sync: a sync answer holds back the sender's own writes newer than its durable watermark
  // (`changesSince(vv, ceiling)`). If the sender then crashes, it restarts with only its durable writes (plus what it
  // had durably received); anti-entropy among all replicas must still converge — the receiver's version vector must
  // not claim a write it never got, of the sender or of a third replica whose write the sender's held-back write
  // overwrote or erased in memory.
  propTest('a ceiling-limited answer, then a crash of the sender, still converges', RUNS, () =>
    fc.property(
      fc.array(fc.record({ body: opBodyArb(), at: fc.nat({ max: 2 }), tick: fc.integer({ min: 0, max: 2 }) }), { minLength: 1, maxLength: 12 }),
      fc.nat({ max: 12 }),
      fc.boolean(),
      fc.boolean(),
      (writes, k, crash, pre) => {
        let time = 1
        const peers = ['a', 'b', 'c'] as const
        const nodes: Node[] = peers.map((p) => ({ store: new RecordStore(), clock: new HLC(p, { now: () => time }) }))
        const opsOf: StampedOp[][] = [[], [], []]
        for (const w of writes) {
          time += w.tick
          const op = { ...w.body, ts: nodes[w.at]!.clock.now() } as StampedOp
          applyOp(nodes[w.at]!.store, op)
          opsOf[w.at]!.push(op)
        }
        const [s, r, c] = nodes as [Node, Node, Node]
        const [sOps, rOps, cOps] = opsOf as [StampedOp[], StampedOp[], StampedOp[]]
        // Optionally the sender had received (and stored) the others' writes before its answer; its own
        // non-durable writes may have overwritten or erased them in memory since.
        const received = pre ? [encodeDelta(r.store.changesSince(new Map())), encodeDelta(c.store.changesSince(new Map()))] : []
        for (const m of received) deliver(s, m)
        const durable = Math.min(k, sOps.length) // the first `durable` writes of the sender are durable
        const ceiling = durable > 0 ? sOps[durable - 1]!.ts : { wall: -1, counter: 0, peer: 'a' }
        deliver(r, encodeDelta(s.store.changesSince(r.store.versionVector(), ceiling)))
        let expectedOps = [...sOps, ...rOps, ...cOps]
        if (crash) {
          // Restart from durable storage: only the durable writes and what had been received survive.
          nodes[0] = { store: new RecordStore(), clock: s.clock }
          for (const op of sOps.slice(0, durable)) applyOp(nodes[0].store, op)
          for (const m of received) nodes[0].store.apply(decodeDelta(m))
          expectedOps = [...sOps.slice(0, durable), ...rOps, ...cOps]
        }
        for (let x = 0; x < 3; x++) for (let y = 0; y < 3; y++) if (x !== y) deliver(nodes[y]!, message(nodes[x]!, nodes[y]!))
        const expected = JSON.stringify(referenceState(expectedOps))
        nodes.forEach((node, i) => assertSame(`replica ${peers[i]} vs model`, JSON.stringify(visibleState(node.store, COLLECTIONS)), expected))
      },
    ),
  )
})
