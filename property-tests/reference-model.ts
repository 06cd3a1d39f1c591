/**
 * A brute-force reference model of the record store's semantics, written straight from the spec and sharing no
 * code with `crdt/record-store.ts` (it only borrows the canonical value bytes, which the spec uses for tie-breaks):
 *
 * - a write of field f at T is *erased* by any delete at D with T ≤ D, and by any put at P with T < P;
 * - a field's visible value is the surviving write with the greatest (timestamp, canonical value bytes), where a
 *   removal sorts above every value (so it wins an exact tie); the field is absent when that write is a removal;
 * - a put at T writes each of its (defined) fields at T; an update at T writes each of its fields at T
 *   (`undefined` = a removal);
 * - a record is visible iff its latest floor (max over puts and deletes, a delete winning an exact tie) is a put,
 *   or one of its fields is visible.
 */
import { type Timestamp, type Value, encodeValue } from '../crdt/index.js'
import type { StampedOp } from './arbitraries.js'
import { type VisibleState, repr } from './state.js'

function cmpTs(a: Timestamp, b: Timestamp): number {
  if (a.wall !== b.wall) return a.wall < b.wall ? -1 : 1
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1
  if (a.peer !== b.peer) return a.peer < b.peer ? -1 : 1
  return 0
}

/** Canonical bytes of a write's value; a removal is the one-byte string [255], above every value's first byte. */
function valueBytes(v: Value | undefined): Uint8Array {
  return v === undefined ? Uint8Array.of(255) : encodeValue(v)
}

function cmpBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1
  return a.length - b.length
}

interface Write {
  readonly ts: Timestamp
  readonly value: Value | undefined
}

/** The visible state the spec prescribes for a set of operations (order irrelevant). */
export function referenceState(ops: readonly StampedOp[]): VisibleState {
  const byRecord = new Map<string, { collection: string; id: string; ops: StampedOp[] }>()
  for (const op of ops) {
    const key = JSON.stringify([op.collection, op.id])
    let g = byRecord.get(key)
    if (!g) byRecord.set(key, (g = { collection: op.collection, id: op.id, ops: [] }))
    g.ops.push(op)
  }
  const collections = new Map<string, Array<[string, Array<[string, string]>]>>()
  for (const { collection, id, ops: recOps } of byRecord.values()) {
    const puts = recOps.filter((o) => o.kind === 'put').map((o) => o.ts)
    const deletes = recOps.filter((o) => o.kind === 'delete').map((o) => o.ts)
    const writes = new Map<string, Write[]>()
    for (const op of recOps) {
      if (op.kind === 'delete') continue
      const fields = op.kind === 'put' ? op.fields : op.patch
      for (const name of Object.keys(fields)) {
        const value = fields[name]
        if (value === undefined && op.kind === 'put') continue
        let list = writes.get(name)
        if (!list) writes.set(name, (list = []))
        list.push({ ts: op.ts, value })
      }
    }
    const erased = (w: Write): boolean =>
      deletes.some((d) => cmpTs(w.ts, d) <= 0) || puts.some((p) => cmpTs(w.ts, p) < 0)
    const fields: Array<[string, string]> = []
    for (const [name, list] of writes) {
      let best: Write | undefined
      for (const w of list) {
        if (erased(w)) continue
        if (best === undefined) {
          best = w
          continue
        }
        const c = cmpTs(w.ts, best.ts)
        if (c > 0 || (c === 0 && cmpBytes(valueBytes(w.value), valueBytes(best.value)) > 0)) best = w
      }
      if (best !== undefined && best.value !== undefined) fields.push([name, repr(best.value)])
    }
    // Latest floor: the greatest put/delete timestamp, a delete winning an exact tie.
    let floor: { ts: Timestamp; deleted: boolean } | undefined
    for (const ts of puts) if (!floor || cmpTs(ts, floor.ts) > 0) floor = { ts, deleted: false }
    for (const ts of deletes) if (!floor || cmpTs(ts, floor.ts) >= 0) floor = { ts, deleted: true }
    const visible = (floor !== undefined && !floor.deleted) || fields.length > 0
    if (!visible) continue
    fields.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))
    let recs = collections.get(collection)
    if (!recs) collections.set(collection, (recs = []))
    recs.push([id, fields])
  }
  const out: VisibleState = []
  for (const c of [...collections.keys()].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))) {
    const recs = collections.get(c)!
    recs.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))
    out.push([c, recs])
  }
  return out
}
