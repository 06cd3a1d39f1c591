/**
 * The record store's fast paths answer exactly what the plain ones do:
 * - `changesSince(vv, ceiling)` through the index by origin and timestamp (here from the first record on) (built on the first incremental request, kept
 *   up to date by later writes and merges) lists the same registers and floors as filtering the whole state;
 * - `encodeChangesSince(vv)` (and so `encodeState`) writes the bytes of `encodeDelta(changesSince(vv))`;
 * - `applyEncoded(bytes)` merges like `apply(decodeDelta(bytes))`: same registers, vector, changes and overwrites;
 * - `encodeChangesSinceParts(vv, ceiling, max)` carries exactly the registers of `changesSince(vv, ceiling)` in parts
 *   of at most `max` bytes, and any of its parts applied in any order never make the receiver's vector claim a write
 *   it does not hold (a plain sync on that vector then converges it).
 */
import fc from 'fast-check'
import { describe } from 'vitest'
import { type Delta, type RecordDelta, RecordStore, type Timestamp, decodeDelta, encodeDelta } from '../crdt/index.js'
import { isNewer } from '../crdt/version-vector.js'
import { type StampedOp, opsArb } from './arbitraries.js'
import { check, propTest } from './helpers.js'
import { applyOp, assertSame, normalizeDelta, registerState } from './state.js'

const RUNS = 2_000

/** What `changesSince(vv, ceiling)` must list, computed from the whole state by filtering (no index involved). */
function reference(store: RecordStore, vv: ReadonlyMap<string, Timestamp>, ceiling: Timestamp | undefined): Delta {
  const whole = store.changesSince(new Map())
  const held = (ts: Timestamp): boolean =>
    ceiling !== undefined && ts.peer === ceiling.peer && (ts.wall > ceiling.wall || (ts.wall === ceiling.wall && ts.counter > ceiling.counter))
  const records: RecordDelta[] = []
  for (const rd of whole.records) {
    const fields = rd.fields.filter((f) => isNewer(vv, f.ts) && !held(f.ts))
    let floor = rd.floor && isNewer(vv, rd.floor) ? rd.floor : undefined
    if (floor && held(floor)) floor = undefined
    if (!floor && fields.length === 0) continue
    records.push(floor ? { collection: rd.collection, id: rd.id, floor, deleted: rd.deleted, fields } : { collection: rd.collection, id: rd.id, fields })
  }
  return { from: new Map(), to: new Map(), records }
}

const recordsOnly = (d: Delta): string => normalizeDelta({ from: new Map(), to: new Map(), records: d.records }, true)

/** Ops split in rounds: `local` ops written to the store, `remote` ones written elsewhere and merged in. */
const roundsArb = fc.array(fc.record({ local: opsArb(8), remote: opsArb(8), ceilingOf: fc.nat() }), { minLength: 1, maxLength: 5 })

describe('record store fast paths', () => {
  propTest('changesSince through the index equals a filter of the whole state; encodeChangesSince equals encodeDelta', RUNS, () =>
    fc.property(roundsArb, (rounds) => {
      const store = new RecordStore({ indexFromRecords: 0 })
      const other = new RecordStore()
      const vectors: Map<string, Timestamp>[] = [new Map()]
      const stamps: Timestamp[] = []
      for (const { local, remote, ceilingOf } of rounds) {
        for (const op of local) applyOp(store, op)
        const before = other.versionVector()
        for (const op of remote) applyOp(other, op)
        store.apply(other.changesSince(before)) // merged writes arrive out of timestamp order
        stamps.push(...[...local, ...remote].map((op: StampedOp) => op.ts))
        vectors.push(store.versionVector())
        for (const vv of vectors) {
          const ceiling = ceilingOf % 3 === 0 ? undefined : stamps[ceilingOf % stamps.length]
          const got = store.changesSince(vv, ceiling)
          assertSame('records', recordsOnly(got), recordsOnly(reference(store, vv, ceiling)))
          if (ceiling === undefined) {
            const bytes = store.encodeChangesSince(vv)
            check(Buffer.from(bytes).equals(Buffer.from(encodeDelta(store.changesSince(vv)))), () => 'encodeChangesSince differs from encodeDelta(changesSince)')
          }
        }
      }
      check(Buffer.from(store.encodeState()).equals(Buffer.from(encodeDelta(store.changesSince(new Map())))), () => 'encodeState differs')
    }),
  )

  propTest('applyEncoded(bytes) merges like apply(decodeDelta(bytes))', RUNS, () =>
    fc.property(opsArb(12), opsArb(12), fc.nat(), (mine, theirs, cut) => {
      const a = new RecordStore()
      const b = new RecordStore()
      for (const op of mine) applyOp(a, op)
      for (const op of mine.slice(0, cut % (mine.length + 1))) applyOp(b, op)
      const c = RecordStore.decodeState(b.encodeState())
      for (const op of theirs) applyOp(b, op)
      for (const op of theirs) applyOp(c, op)
      const bytes = a.encodeChangesSince(b.versionVector())
      const seenB: string[] = []
      const seenC: string[] = []
      const rb = b.apply(decodeDelta(bytes), (o) => seenB.push(JSON.stringify(o)))
      const rc = c.applyEncoded(bytes, (o) => seenC.push(JSON.stringify(o)))
      assertSame('registers', registerState(c), registerState(b))
      assertSame('changes', JSON.stringify(rc), JSON.stringify(rb))
      assertSame('overwrites', seenC.join('\n'), seenB.join('\n'))
    }),
  )

  propTest('encodeChangesSinceParts carries changesSince in parts; any parts in any order claim only what they carry', RUNS / 4, () =>
    fc.property(roundsArb, fc.integer({ min: 40, max: 600 }), fc.boolean(), fc.array(fc.nat(), { maxLength: 12 }), (rounds, max, indexed, picks) => {
      const store = new RecordStore(indexed ? { indexFromRecords: 0 } : {})
      const other = new RecordStore()
      const states: Uint8Array[] = [new RecordStore().encodeState()]
      const stamps: Timestamp[] = []
      // Two records written at one time (the ops here may reuse timestamps; a clock never does): never cut apart.
      const writers = new Map<string, string>()
      let sharedTimes = false
      for (const [r, { local, remote, ceilingOf }] of rounds.entries()) {
        for (const op of local) applyOp(store, op)
        const before = other.versionVector()
        for (const op of remote) applyOp(other, op)
        store.apply(other.changesSince(before))
        stamps.push(...[...local, ...remote].map((op: StampedOp) => op.ts))
        for (const op of [...local, ...remote]) {
          const key = JSON.stringify(op.ts)
          const at = `${op.collection}/${op.id}`
          if ((writers.get(key) ?? at) !== at) sharedTimes = true
          writers.set(key, at)
        }
        states.push(store.encodeState())
        for (const [i, state] of states.entries()) {
          const vv = RecordStore.decodeState(state).versionVector()
          const ceiling = ceilingOf % 3 === 0 ? undefined : stamps[(ceilingOf + i) % stamps.length]
          const { parts, to } = store.encodeChangesSinceParts(vv, ceiling, max)
          const want = store.changesSince(vv, ceiling)
          const label = `round ${r}, vector ${i}, max ${max}, ceiling ${JSON.stringify(ceiling)}`
          const decoded = parts.map((p) => decodeDelta(p))
          assertSame(`${label}: registers`, registers(decoded.flatMap((d) => d.records)), registers(want.records))
          assertSame(`${label}: claim`, JSON.stringify([...to]), JSON.stringify([...want.to]))
          for (const [k, d] of decoded.entries()) {
            // Larger only when it cannot be cut.
            check(parts[k]!.length <= max || d.records.length <= 1 || sharedTimes, () => `${label}: part ${k} of ${parts[k]!.length} bytes holds ${d.records.length} records`)
          }
          // Any subset of the parts, in any order, then a plain sync on the vector they left, holds what a plain sync
          // alone gives (a part that claimed more than it carried would make that sync leave something out).
          const receiver = RecordStore.decodeState(state)
          const order = picks.map((x) => x % Math.max(1, parts.length)).filter((k) => k < parts.length)
          for (const k of order) receiver.applyEncoded(parts[k]!)
          receiver.apply(store.changesSince(receiver.versionVector()))
          const plain = RecordStore.decodeState(state)
          plain.apply(store.changesSince(vv))
          assertSame(`${label}: after parts ${order.join(',')} and a sync`, registerState(receiver), registerState(plain))
        }
      }
    }),
  )
})

/** The registers and floors of deltas' records, one line each, sorted (records may be split across parts). */
function registers(records: readonly RecordDelta[]): string {
  const lines: string[] = []
  for (const rd of records) {
    const at = `${JSON.stringify(rd.collection)} ${JSON.stringify(rd.id)}`
    if (rd.floor) lines.push(`${at} floor ${JSON.stringify(rd.floor)} ${rd.deleted === true}`)
    for (const f of rd.fields) lines.push(`${at} ${JSON.stringify(f.name)} ${JSON.stringify(f.ts)} ${encodeDelta({ from: new Map(), to: new Map(), records: [{ collection: 'c', id: 'i', fields: [f] }] }).join('.')}`)
  }
  return lines.sort().join('\n')
}
