/**
 * Exact, implementation-independent renderings of values, timestamps and store states, for comparisons in
 * properties. `repr` is injective: NaN equals NaN, -0 differs from 0, a Uint8Array differs from an array of numbers,
 * strings compare code unit by code unit (lone surrogates included), object keys keep their order.
 */
import type { StampedOp } from './arbitraries.js'
import {
  type Delta,
  type RecordStore,
  type Timestamp,
  type Value,
  compareTimestamps,
  encodeValue,
} from '../crdt/index.js'

/** An exact textual form of a value (`undefined` = a removed field). */
export function repr(v: Value | undefined): string {
  if (v === undefined) return '∅'
  if (v === null) return 'null'
  switch (typeof v) {
    case 'boolean':
      return v ? 'true' : 'false'
    case 'number':
      return Object.is(v, -0) ? '-0' : Number.isNaN(v) ? 'NaN' : String(v)
    case 'string':
      return JSON.stringify(v) // escapes lone surrogates, so distinct strings stay distinct
  }
  if (v instanceof Uint8Array) {
    if (v.constructor !== Uint8Array) return `<${v.constructor.name}>`
    return `u8[${v.join(',')}]`
  }
  if (Array.isArray(v)) return `[${(v as readonly Value[]).map(repr).join(',')}]`
  const proto = Object.getPrototypeOf(v)
  if (proto !== Object.prototype && proto !== null) return `<non-plain ${String(proto?.constructor?.name)}>`
  const obj = v as { readonly [k: string]: Value }
  const parts: string[] = []
  for (const k of Object.keys(obj)) {
    const d = Object.getOwnPropertyDescriptor(obj, k)
    parts.push(`${JSON.stringify(k)}:${d && 'value' in d ? repr(d.value as Value) : '<accessor>'}`)
  }
  return `{${parts.join(',')}}`
}

/** Hex of the canonical value bytes (`encodeValue`). */
export function bytesHex(v: Value | undefined): string {
  return Buffer.from(encodeValue(v)).toString('hex')
}

/** Value identity as the register laws need it: canonical bytes, plus the exact repr. */
export function valueKey(v: Value | undefined): string {
  return `${bytesHex(v)}|${repr(v)}`
}

export function tsRepr(ts: Timestamp | undefined): string {
  return ts === undefined ? '-' : `${ts.wall}.${ts.counter}.${JSON.stringify(ts.peer)}`
}

function cmpStr(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** Visible records of a store: `[collection, [[id, [[field, repr]…]]…]]…`, everything sorted; `id` excluded. */
export type VisibleState = Array<[string, Array<[string, Array<[string, string]>]>]>

/** The visible state of a store, over its collections plus `extraCollections`. */
export function visibleState(store: RecordStore, extraCollections: readonly string[] = []): VisibleState {
  const names = [...new Set([...store.collections(), ...extraCollections])].sort(cmpStr)
  const out: VisibleState = []
  for (const c of names) {
    const recs: Array<[string, Array<[string, string]>]> = []
    const all = store.all(c)
    const ids = store.ids(c)
    if (ids.length !== all.length) throw new Error(`ids(${JSON.stringify(c)}) and all() disagree`)
    for (const rec of all) {
      const fields: Array<[string, string]> = []
      for (const k of Object.keys(rec)) {
        if (k === 'id') continue
        const d = Object.getOwnPropertyDescriptor(rec, k)
        fields.push([k, repr(d?.value as Value)])
      }
      fields.sort((x, y) => cmpStr(x[0], y[0]))
      recs.push([rec.id, fields])
      // get()/has() must agree with all()
      const got = store.get(c, rec.id)
      if (!got || !store.has(c, rec.id)) throw new Error(`get/has(${JSON.stringify(c)}, ${JSON.stringify(rec.id)}) miss a visible record`)
    }
    recs.sort((x, y) => cmpStr(x[0], y[0]))
    if (recs.length > 0) out.push([c, recs])
  }
  return out
}

/** Every register and floor of a store (its full delta), normalised and sorted, plus its version vector. */
export function registerState(store: RecordStore): string {
  return normalizeDelta(store.changesSince(new Map()), true)
}

/**
 * A canonical text of a delta. With `asSet`, records are sorted (a delta is a set of changes); otherwise record
 * order is kept. Version vectors are sorted by peer either way (they are maps).
 */
export function normalizeDelta(delta: Delta, asSet: boolean): string {
  const vv = (m: ReadonlyMap<string, Timestamp>): string[] =>
    [...m.entries()].map(([k, t]) => `${JSON.stringify(k)}=${tsRepr(t)}`).sort(cmpStr)
  const recs = delta.records.map((rd) => {
    const fields = rd.fields.map((f) => `${JSON.stringify(f.name)}:${repr(f.value)}@${tsRepr(f.ts)}`)
    if (asSet) fields.sort(cmpStr)
    const floor = rd.floor ? `${rd.deleted ? 'delete' : 'put'}@${tsRepr(rd.floor)}` : 'nofloor'
    return `${JSON.stringify(rd.collection)}/${JSON.stringify(rd.id)} ${floor} {${fields.join(', ')}}`
  })
  if (asSet) recs.sort(cmpStr)
  return `from ${vv(delta.from).join(' ')}\nto ${vv(delta.to).join(' ')}\n${recs.join('\n')}`
}

/** Throws a readable error when two renderings differ. */
export function assertSame<T>(label: string, actual: T, expected: T): void {
  const a = typeof actual === 'string' ? actual : JSON.stringify(actual)
  const e = typeof expected === 'string' ? expected : JSON.stringify(expected)
  if (a !== e) throw new Error(`${label} differ:\n  actual:   ${a}\n  expected: ${e}`)
}

/** Sign of a number as -1 | 0 | 1. */
export function sign(n: number): -1 | 0 | 1 {
  return n < 0 ? -1 : n > 0 ? 1 : 0
}

/** Largest of some timestamps (undefined for none). */
export function maxTs(tss: Iterable<Timestamp>): Timestamp | undefined {
  let best: Timestamp | undefined
  for (const t of tss) if (best === undefined || compareTimestamps(t, best) > 0) best = t
  return best
}

/** Applies one generated operation to a store as a local write. */
export function applyOp(store: RecordStore, op: StampedOp): void {
  if (op.kind === 'put') store.put(op.collection, op.id, op.fields, op.ts)
  else if (op.kind === 'update') store.update(op.collection, op.id, op.patch, op.ts)
  else store.delete(op.collection, op.id, op.ts)
}
