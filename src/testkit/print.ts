/**
 * Readable and exact renderings: values and steps for traces and diffs, schedules as TypeScript to paste into a test.
 */
import type { Value } from '../../crdt/value.js'
import type { Step } from './schedule.js'

/** Short, exact, readable form of a value (NaN, -0, ±Infinity, Uint8Array and lone surrogates shown as such). */
export function formatValue(v: Value | undefined, maxString = 40): string {
  if (v === undefined) return '<absent>'
  const scalar = scalarToCode(v)
  if (scalar !== undefined) return scalar
  if (typeof v === 'string') {
    const s = JSON.stringify(v)
    if (s.length <= maxString + 2) return s
    // Cut without splitting an escape; the length and a hash keep different long strings apart.
    const head = s.slice(0, maxString + 1).replace(/\\(u[0-9a-fA-F]{0,3})?$/, '')
    return `${head}…" (${v.length} code units, #${fnv1a(v)})`
  }
  if (v instanceof Uint8Array) {
    const hex = Array.from(v.subarray(0, 16), (b) => b.toString(16).padStart(2, '0')).join(' ')
    return `Uint8Array(${v.length})[${hex}${v.length > 16 ? ' …' : ''}]`
  }
  if (Array.isArray(v)) return `[${(v as readonly Value[]).map((x) => formatValue(x, maxString)).join(', ')}]`
  const obj = v as { readonly [key: string]: Value }
  return `{${Object.keys(obj)
    .map((k) => `${/^[A-Za-z_$][\w$]*$/.test(k) && k !== '__proto__' ? k : JSON.stringify(k)}: ${formatValue(obj[k], maxString)}`)
    .join(', ')}}`
}

/** An error as `Name: message` (anything else thrown as its string). */
export function describeError(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err)
}

/** 32-bit FNV-1a over UTF-16 code units, as 8 hex digits. */
function fnv1a(s: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0
  return h.toString(16).padStart(8, '0')
}

/** One field set as `{"name": value, …}` with short values. */
function formatFields(fields: { readonly [k: string]: Value | undefined }): string {
  return `{${Object.keys(fields)
    .map((k) => `${JSON.stringify(k)}: ${formatValue(fields[k], 12)}`)
    .join(', ')}}`
}

/** One line of a run's trace for a step. */
export function describeStep(step: Step): string {
  switch (step.kind) {
    case 'put':
      return `r${step.replica} put ${step.collection}/${JSON.stringify(step.id)} ${formatFields(step.fields)}`
    case 'update':
      return `r${step.replica} update ${step.collection}/${JSON.stringify(step.id)} ${formatFields(step.patch)}`
    case 'delete':
      return `r${step.replica} delete ${step.collection}/${JSON.stringify(step.id)}`
    case 'text':
      return `r${step.replica} text ${step.collection}/${JSON.stringify(step.id)}.${JSON.stringify(step.field)} @${step.index} -${step.remove} +${formatValue(step.insert, 12)}`
    case 'deliver':
      return `deliver ${step.count}`
    case 'deliverAll':
      return 'deliverAll'
    case 'burst':
      return `burst drop=${step.dropRate} dup=${step.duplicateRate} for ${step.steps} steps`
    case 'partition':
      return `partition [${step.groups.join(',')}]`
    case 'heal':
      return 'heal'
    case 'link':
      return `link r${step.a}-r${step.b} ${step.up ? 'up' : 'cut'}`
    case 'restart':
      return `${step.crash ? 'crash' : 'restart'} r${step.replica}`
    case 'amnesia':
      return `amnesia r${step.replica}`
    case 'antiEntropy':
      return step.replica === undefined ? 'antiEntropy all' : `antiEntropy r${step.replica}`
    case 'clock':
      return `clock r${step.replica} ${step.ms >= 0 ? '+' : ''}${step.ms} ms`
  }
}

/** `null`, a boolean or a number as source text (`-0`, `NaN`, `-Infinity` included); undefined for other values. */
function scalarToCode(v: Value): string | undefined {
  if (v === null) return 'null'
  if (typeof v === 'boolean') return String(v)
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v)
  return undefined
}

function valueToCode(v: Value | undefined): string {
  if (v === undefined) return 'undefined'
  const scalar = scalarToCode(v)
  if (scalar !== undefined) return scalar
  if (typeof v === 'string') return stringToCode(v)
  if (v instanceof Uint8Array) return `new Uint8Array([${v.join(', ')}])`
  if (Array.isArray(v)) return `[${(v as readonly Value[]).map(valueToCode).join(', ')}]`
  return fieldsToCode(v as { readonly [key: string]: Value })
}

/** A string literal; long repetitions of a short unit as `"unit".repeat(k)`. */
function stringToCode(s: string): string {
  if (s.length > 40) {
    for (let p = 1; p <= 8 && p < s.length; p++) {
      if (s.length % p === 0 && s === s.slice(0, p).repeat(s.length / p)) return `${JSON.stringify(s.slice(0, p))}.repeat(${s.length / p})`
    }
  }
  return JSON.stringify(s)
}

function fieldsToCode(obj: { readonly [key: string]: Value | undefined }): string {
  const keys = Object.keys(obj)
  if (keys.length === 0) return '{}'
  // A computed key defines an own property even for `__proto__` (a plain `__proto__:` would set the prototype).
  const key = (k: string): string => (k === '__proto__' ? '["__proto__"]' : /^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k))
  return `{ ${keys.map((k) => `${key(k)}: ${valueToCode(obj[k])}`).join(', ')} }`
}

/** A schedule as TypeScript source (exact: NaN, -0, Uint8Array, lone surrogates, `__proto__` keys), to paste into a test. */
export function formatSchedule(steps: readonly Step[]): string {
  const lines = steps.map((s) => {
    switch (s.kind) {
      case 'put':
        return `{ kind: 'put', replica: ${s.replica}, collection: ${JSON.stringify(s.collection)}, id: ${JSON.stringify(s.id)}, fields: ${fieldsToCode(s.fields)} }`
      case 'update':
        return `{ kind: 'update', replica: ${s.replica}, collection: ${JSON.stringify(s.collection)}, id: ${JSON.stringify(s.id)}, patch: ${fieldsToCode(s.patch)} }`
      case 'delete':
        return `{ kind: 'delete', replica: ${s.replica}, collection: ${JSON.stringify(s.collection)}, id: ${JSON.stringify(s.id)} }`
      case 'text':
        return `{ kind: 'text', replica: ${s.replica}, collection: ${JSON.stringify(s.collection)}, id: ${JSON.stringify(s.id)}, field: ${JSON.stringify(s.field)}, index: ${s.index}, remove: ${s.remove}, insert: ${stringToCode(s.insert)} }`
      default:
        return `{ ${Object.entries(s)
          .map(([k, v]) => `${k}: ${typeof v === 'string' ? `'${v}'` : Array.isArray(v) ? `[${v.join(', ')}]` : String(v)}`)
          .join(', ')} }`
    }
  })
  return `[\n${lines.map((l) => `  ${l},`).join('\n')}\n]`
}
