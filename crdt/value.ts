import { type Reader, Writer } from './bytes.js'
import { DecodeError, InvalidValueError } from './errors.js'

/**
 * What a field can hold: JSON values plus `Uint8Array`. Nested objects and arrays are atomic: a write replaces the
 * whole value (last writer wins as a whole). Numbers round-trip exactly, including -0, NaN and ±Infinity; strings
 * round-trip exactly even when they are not well-formed UTF-16.
 */
export type Value = null | boolean | number | string | Uint8Array | readonly Value[] | { readonly [key: string]: Value }

/** Deepest nesting of arrays/objects a value may have (deeper values, and cyclic ones, are refused). */
export const MAX_VALUE_DEPTH = 64

const enum Tag {
  Null = 0,
  False = 1,
  True = 2,
  Int = 3,
  Float = 4,
  Decimal = 5,
  String = 6,
  Bytes = 7,
  Array = 8,
  Object = 9,
  /** A removed field (register tombstone). The highest tag, so removals win exact timestamp ties. */
  Absent = 10,
}

const POW10 = [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15]
const INT_LIMIT = 2 ** 52

function isPlainObject(v: object): boolean {
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

/** Sets `obj[key] = value` as an own data property, even for the key `__proto__`. */
export function defineField(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true })
  else obj[key] = value
}

/**
 * Validates `v` as a {@link Value} and returns the form syncmesh stores: primitives as they are, nested
 * objects/arrays as deep-frozen copies, `Uint8Array` as a copy. Throws {@link InvalidValueError} naming the path
 * of the first problem (`undefined` inside a value, functions, class instances, cycles, too deep…).
 */
export function normalizeValue(v: unknown, path = 'value', depth = 0): Value {
  switch (typeof v) {
    case 'string':
    case 'number':
    case 'boolean':
      return v
    case 'object':
      if (v === null) return null
      if (depth >= MAX_VALUE_DEPTH) {
        throw new InvalidValueError(`${path}: nested deeper than ${MAX_VALUE_DEPTH} levels (or cyclic)`)
      }
      if (v instanceof Uint8Array) {
        if (v.constructor !== Uint8Array) throw new InvalidValueError(`${path}: only plain Uint8Array is supported`)
        return v.slice()
      }
      if (Array.isArray(v)) {
        const out = new Array<Value>(v.length)
        for (let i = 0; i < v.length; i++) {
          if (!(i in v)) throw new InvalidValueError(`${path}[${i}]: sparse arrays are not supported`)
          out[i] = normalizeValue(v[i], `${path}[${i}]`, depth + 1)
        }
        return Object.freeze(out)
      }
      if (!isPlainObject(v)) {
        throw new InvalidValueError(`${path}: ${v.constructor?.name ?? 'object'} is not a plain object, array or Uint8Array`)
      }
      {
        const out: Record<string, Value> = {}
        for (const key of Object.keys(v)) {
          defineField(out, key, normalizeValue((v as Record<string, unknown>)[key], `${path}.${key}`, depth + 1))
        }
        return Object.freeze(out)
      }
    default:
      throw new InvalidValueError(`${path}: ${typeof v} is not a storable value (JSON values and Uint8Array only)`)
  }
}

/** Writes a value (or `undefined`, meaning a removed field) in the canonical binary form. */
export function writeValue(w: Writer, v: Value | undefined): void {
  switch (typeof v) {
    case 'undefined':
      w.u8(Tag.Absent)
      return
    case 'boolean':
      w.u8(v ? Tag.True : Tag.False)
      return
    case 'string':
      w.u8(Tag.String)
      w.string(v)
      return
    case 'number':
      writeNumber(w, v)
      return
  }
  if (v === null) {
    w.u8(Tag.Null)
  } else if (v instanceof Uint8Array) {
    w.u8(Tag.Bytes)
    w.bytes(v)
  } else if (Array.isArray(v)) {
    w.u8(Tag.Array)
    w.uint(v.length)
    for (const item of v as readonly Value[]) writeValue(w, item)
  } else {
    const obj = v as { readonly [key: string]: Value }
    const keys = Object.keys(obj)
    w.u8(Tag.Object)
    w.uint(keys.length)
    for (const key of keys) {
      w.string(key)
      writeValue(w, obj[key])
    }
  }
}

function writeNumber(w: Writer, v: number): void {
  if (Number.isInteger(v) && Math.abs(v) < INT_LIMIT && !Object.is(v, -0)) {
    w.u8(Tag.Int)
    w.int(v)
    return
  }
  if (Number.isFinite(v) && !Number.isInteger(v) && Math.abs(v) < INT_LIMIT) {
    // Decimals such as 19.99 travel as a scaled integer (3–4 bytes instead of 8); used only when exact.
    for (let k = 1; k < POW10.length; k++) {
      const m = Math.round(v * POW10[k]!)
      if (Math.abs(m) >= INT_LIMIT) break
      if (m / POW10[k]! === v) {
        w.u8(Tag.Decimal)
        w.int(m)
        w.u8(k)
        return
      }
    }
  }
  w.u8(Tag.Float)
  w.float(v)
}

/** Reads a value written by {@link writeValue}; `undefined` means a removed field. Throws {@link DecodeError}. */
export function readValue(r: Reader, depth = 0): Value | undefined {
  const tag = r.u8()
  switch (tag) {
    case Tag.Null:
      return null
    case Tag.False:
      return false
    case Tag.True:
      return true
    case Tag.Int: {
      const v = r.int()
      if (Math.abs(v) >= INT_LIMIT) throw new DecodeError(`integer ${v} out of range`)
      return v
    }
    case Tag.Float:
      return r.float()
    case Tag.Decimal: {
      const m = r.int()
      const k = r.u8()
      if (k < 1 || k >= POW10.length || Math.abs(m) >= INT_LIMIT) throw new DecodeError(`malformed decimal at byte ${r.pos}`)
      return m / POW10[k]!
    }
    case Tag.String:
      return r.string()
    case Tag.Bytes:
      return r.bytes()
    case Tag.Array:
    case Tag.Object: {
      if (depth >= MAX_VALUE_DEPTH) throw new DecodeError(`value nested deeper than ${MAX_VALUE_DEPTH} levels`)
      if (tag === Tag.Array) {
        const n = r.count(1)
        const out = new Array<Value>(n)
        for (let i = 0; i < n; i++) out[i] = readPresent(r, depth + 1)
        return Object.freeze(out)
      }
      const n = r.count(2)
      const out: Record<string, Value> = {}
      for (let i = 0; i < n; i++) {
        const key = r.string()
        defineField(out, key, readPresent(r, depth + 1))
      }
      return Object.freeze(out)
    }
    case Tag.Absent:
      return undefined
    default:
      throw new DecodeError(`unknown value tag ${tag} at byte ${r.pos - 1}`)
  }
}

function readPresent(r: Reader, depth: number): Value {
  const v = readValue(r, depth)
  if (v === undefined) throw new DecodeError(`removed-field marker inside a value at byte ${r.pos - 1}`)
  return v
}

const scratchA = new Writer(64)
const scratchB = new Writer(64)

/** The canonical bytes of a value (`undefined` = removed field). */
export function encodeValue(v: Value | undefined): Uint8Array {
  const w = new Writer(32)
  writeValue(w, v)
  return w.finish()
}

/**
 * Total order on values by their canonical bytes (`undefined`, a removed field, sorts last). Used only to break exact
 * timestamp ties, so that replicas with a misconfigured duplicate peer id still agree.
 */
export function compareValues(a: Value | undefined, b: Value | undefined): -1 | 0 | 1 {
  if (Object.is(a, b)) return 0
  scratchA.pos = 0
  scratchB.pos = 0
  writeValue(scratchA, a)
  writeValue(scratchB, b)
  const x = scratchA.view()
  const y = scratchB.view()
  const n = Math.min(x.length, y.length)
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1
  return x.length === y.length ? 0 : x.length < y.length ? -1 : 1
}

/** True when two values are the same value (same canonical bytes; NaN equals NaN, -0 differs from 0). */
export function valuesEqual(a: Value | undefined, b: Value | undefined): boolean {
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return Object.is(a, b)
  return compareValues(a, b) === 0
}

/**
 * Reads one value like {@link readValue} (same checks, same errors) and writes its canonical bytes to `w` — the bytes
 * {@link writeValue} would write for the value read — without building the value when the input is already canonical
 * (null, booleans, integers, ASCII strings, bytes, removals): those are copied as they are. Without `w` it only
 * checks the value and steps over it.
 */
export function copyCanonicalValue(r: Reader, w: Writer | undefined): void {
  const start = r.pos
  const tag = r.u8()
  switch (tag) {
    case Tag.Null:
    case Tag.False:
    case Tag.True:
    case Tag.Absent:
      w?.u8(tag)
      return
    case Tag.Int: {
      // A canonical varint (the reader refuses others) of a zig-zag integer: one encoding per value.
      if (Math.abs(r.int()) >= INT_LIMIT) throw new DecodeError(`integer out of range at byte ${r.pos}`)
      w?.copy(r.buf, start, r.pos)
      return
    }
    case Tag.String: {
      const n = r.uint()
      if (n > r.remaining) throw new DecodeError(`length ${n} exceeds the remaining ${r.remaining} bytes`)
      const buf = r.buf
      const from = r.pos
      r.pos += n
      let ascii = true
      for (let i = from; i < r.pos && ascii; i++) ascii = buf[i]! < 0x80
      if (ascii) {
        w?.copy(r.buf, start, r.pos)
        return
      }
      break
    }
    case Tag.Float: {
      const f = r.float()
      if (w) writeNumber(w, f)
      return
    }
    case Tag.Decimal: {
      const m = r.int()
      const k = r.u8()
      if (k < 1 || k >= POW10.length || Math.abs(m) >= INT_LIMIT) throw new DecodeError(`malformed decimal at byte ${r.pos}`)
      if (w) writeNumber(w, m / POW10[k]!)
      return
    }
    case Tag.Bytes: {
      const n = r.uint()
      if (n > r.remaining) throw new DecodeError(`length ${n} exceeds the remaining ${r.remaining} bytes`)
      r.pos += n
      w?.copy(r.buf, start, r.pos)
      return
    }
  }
  // Non-ASCII strings, arrays and objects: decoded (and written back in canonical form).
  r.pos = start
  const v = readValue(r)
  if (w) writeValue(w, v)
}

/**
 * Where the value starting at `pos` ends, reading no further than `end`; −1 when the bytes there are no value (an
 * unknown tag, a length past `end`, nesting deeper than {@link MAX_VALUE_DEPTH}). Checks the shape only: what
 * {@link valueEnd} and the readers after it rely on.
 */
export function checkedValueEnd(buf: Uint8Array, pos: number, end: number, depth = 0): number {
  if (pos >= end) return -1
  const tag = buf[pos++]!
  switch (tag) {
    case Tag.Null:
    case Tag.False:
    case Tag.True:
    case Tag.Absent:
      return pos
    case Tag.Int:
      return checkedVarintEnd(buf, pos, end)
    case Tag.Float:
      return pos + 8 <= end ? pos + 8 : -1
    case Tag.Decimal: {
      const p = checkedVarintEnd(buf, pos, end)
      return p >= 0 && p < end ? p + 1 : -1
    }
    case Tag.String:
    case Tag.Bytes:
      return checkedBlobEnd(buf, pos, end)
    case Tag.Array:
    case Tag.Object: {
      if (depth >= MAX_VALUE_DEPTH) return -1
      let n = 0
      let scale = 1
      for (let i = 0; ; i++) {
        if (pos >= end || i > 7) return -1
        const b = buf[pos++]!
        n += (b & 0x7f) * scale
        if (b < 0x80) break
        scale *= 0x80
      }
      for (let i = 0; i < n && pos >= 0; i++) {
        if (tag === Tag.Object) pos = checkedBlobEnd(buf, pos, end) // the key
        if (pos >= 0) pos = checkedValueEnd(buf, pos, end, depth + 1)
      }
      return pos
    }
    default:
      return -1
  }
}

/** Where the varint at `pos` ends (at most 8 bytes, before `end`), or −1. */
function checkedVarintEnd(buf: Uint8Array, pos: number, end: number): number {
  for (let i = 0; i < 8; i++) {
    if (pos + i >= end) return -1
    if (buf[pos + i]! < 0x80) return pos + i + 1
  }
  return -1
}

/** Where the length-prefixed bytes at `pos` end (before `end`), or −1. */
function checkedBlobEnd(buf: Uint8Array, pos: number, end: number): number {
  if (checkedVarintEnd(buf, pos, end) < 0) return -1
  const stop = blobEnd(buf, pos)
  return stop <= end ? stop : -1
}

/** Where the canonical value starting at `pos` in `buf` ends (the bytes must be a valid value: no checks). */
export function valueEnd(buf: Uint8Array, pos: number): number {
  const tag = buf[pos++]!
  switch (tag) {
    case Tag.Int:
      while (buf[pos++]! >= 0x80);
      return pos
    case Tag.Float:
      return pos + 8
    case Tag.Decimal:
      while (buf[pos++]! >= 0x80);
      return pos + 1
    case Tag.String:
    case Tag.Bytes:
      return blobEnd(buf, pos)
    case Tag.Array:
    case Tag.Object: {
      let n = 0
      let scale = 1
      for (;;) {
        const b = buf[pos++]!
        n += (b & 0x7f) * scale
        if (b < 0x80) break
        scale *= 0x80
      }
      for (let i = 0; i < n; i++) {
        if (tag === Tag.Object) pos = blobEnd(buf, pos) // the key
        pos = valueEnd(buf, pos)
      }
      return pos
    }
    default:
      return pos
  }
}

/** Where the length-prefixed string or byte string starting at `pos` ends. */
function blobEnd(buf: Uint8Array, pos: number): number {
  let n = 0
  let scale = 1
  for (;;) {
    const b = buf[pos++]!
    n += (b & 0x7f) * scale
    if (b < 0x80) return pos + n
    scale *= 0x80
  }
}

/** The removed-field marker's byte (a canonical removal is this one byte). */
export const ABSENT_TAG: number = Tag.Absent

/** Orders two canonical encodings as {@link compareValues} orders the values they encode. */
export function compareValueBytes(a: Uint8Array, as: number, ae: number, b: Uint8Array, bs: number, be: number): number {
  const la = ae - as
  const lb = be - bs
  const n = Math.min(la, lb)
  for (let i = 0; i < n; i++) {
    const x = a[as + i]!
    const y = b[bs + i]!
    if (x !== y) return x < y ? -1 : 1
  }
  return la === lb ? 0 : la < lb ? -1 : 1
}
