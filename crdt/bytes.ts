import { DecodeError } from './errors.js'

/**
 * Binary primitives shared by every syncmesh codec: unsigned LEB128 varints up to 2^53 − 1, zig-zag signed varints,
 * little-endian float64, length-prefixed bytes and strings. Strings are written as WTF-8 (UTF-8 that also carries
 * lone surrogates), so every JavaScript string — well-formed UTF-16 or not — round-trips exactly.
 */

/** `String.prototype.isWellFormed` (ES2024, present in Node 20) without pulling in the whole ES2024 lib. */
interface WellFormedString {
  isWellFormed(): boolean
}

/** The newest object of each class given to {@link holdShape}, by class. */
const shapes = new Map<unknown, object>()

/**
 * Keeps `o`, the newest object of its class, alive. At a full garbage collection V8 frees a hidden class that no
 * live object has, and throws away the optimised code compiled against it. For a class whose objects live only
 * during one call (a writer, an id being read, a merge's context), that is every major collection between two
 * bursts of writes or deltas, each sending the encode, decode and merge code back to the interpreter to be compiled
 * again. Only for objects that hold nothing large or long-lived.
 */
export function holdShape(o: object): void {
  shapes.set(o.constructor, o)
}

const textDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }) // ignoreBOM: keep a leading U+FEFF
const textEncoder = new TextEncoder()
const f64 = new Float64Array(1)
const f64Bytes = new Uint8Array(f64.buffer)

/**
 * Writes `v` (an integer in `[0, 2^53)`) as a LEB128 varint at `buf[pos]`, which must have room for 8 bytes; returns
 * where it ends. Above 2^32, the low 28 bits go first in float arithmetic; the rest (and every smaller value) with
 * bit operations.
 */
export function putUint(buf: Uint8Array, pos: number, v: number): number {
  if (v > 0xffffffff) {
    const lo = v % 0x10000000
    buf[pos++] = (lo & 0x7f) | 0x80
    buf[pos++] = ((lo >>> 7) & 0x7f) | 0x80
    buf[pos++] = ((lo >>> 14) & 0x7f) | 0x80
    buf[pos++] = ((lo >>> 21) & 0x7f) | 0x80
    v = (v - lo) / 0x10000000
  }
  while (v >= 0x80) {
    buf[pos++] = (v & 0x7f) | 0x80
    v >>>= 7
  }
  buf[pos++] = v
  return pos
}

/** A growable byte buffer with append-only writers. */
export class Writer {
  private buf: Uint8Array
  /** Number of bytes written so far. */
  pos = 0

  constructor(initialSize = 256) {
    this.buf = new Uint8Array(initialSize)
  }

  /** Writes into `buf` from `pos` on from now (growing into a copy when full: read the result back through {@link buffer}). */
  over(buf: Uint8Array, pos: number): void {
    this.buf = buf
    this.pos = pos
  }

  /** Makes room for at least `n` more bytes. */
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n))
    next.set(this.buf.subarray(0, this.pos))
    this.buf = next
  }

  /** Writes one byte. */
  u8(v: number): void {
    this.ensure(1)
    this.buf[this.pos++] = v
  }

  /** Writes an unsigned integer in `[0, 2^53)` as a LEB128 varint. */
  uint(v: number): void {
    this.ensure(8)
    this.pos = putUint(this.buf, this.pos, v)
  }

  /** Writes a safe integer as a zig-zag varint. */
  int(v: number): void {
    this.uint(v < 0 ? -2 * v - 1 : 2 * v)
  }

  /** Writes a float64, little-endian; NaN is canonicalised so equal values give equal bytes. */
  float(v: number): void {
    this.ensure(8)
    f64[0] = Number.isNaN(v) ? NaN : v
    this.buf.set(f64Bytes, this.pos)
    this.pos += 8
  }

  /** Writes raw bytes (no length prefix). */
  raw(bytes: Uint8Array): void {
    this.ensure(bytes.length)
    this.buf.set(bytes, this.pos)
    this.pos += bytes.length
  }

  /** Writes `src[start, end)` (no length prefix). */
  copy(src: Uint8Array, start: number, end: number): void {
    const n = end - start
    this.ensure(n)
    const buf = this.buf
    if (n < 32) for (let i = 0; i < n; i++) buf[this.pos + i] = src[start + i]!
    else buf.set(src.subarray(start, end), this.pos)
    this.pos += n
  }

  /** Writes a length-prefixed byte string. */
  bytes(bytes: Uint8Array): void {
    this.uint(bytes.length)
    this.raw(bytes)
  }

  /** Writes a length-prefixed WTF-8 string. */
  string(s: string): void {
    const n = s.length
    if (n < 64) {
      // Short strings: ASCII is written byte by byte, with no TextEncoder call overhead.
      let ascii = true
      for (let i = 0; i < n && ascii; i++) ascii = s.charCodeAt(i) < 0x80
      if (ascii) {
        this.ensure(n + 1)
        this.buf[this.pos++] = n
        for (let i = 0; i < n; i++) this.buf[this.pos++] = s.charCodeAt(i)
        return
      }
    } else if ((s as unknown as WellFormedString).isWellFormed()) {
      this.ensure(n * 3 + 8)
      // Reserve the widest varint for the length, encode, then move the bytes if the varint is shorter.
      const maxLen = n * 3
      const lenBytes = varintSize(maxLen)
      const start = this.pos + lenBytes
      const { written } = textEncoder.encodeInto(s, this.buf.subarray(start))
      const actual = varintSize(written)
      if (actual !== lenBytes) this.buf.copyWithin(this.pos + actual, start, start + written)
      this.uint(written)
      this.pos += written
      return
    }
    const len = wtf8Length(s)
    this.uint(len)
    this.ensure(len)
    this.pos = writeWtf8(s, this.buf, this.pos)
  }

  /** Writes `s.slice(start)` as {@link string} does, without making the slice when it is short ASCII. */
  stringFrom(s: string, start: number): void {
    const n = s.length - start
    if (n < 64) {
      let ascii = true
      for (let i = start; i < s.length && ascii; i++) ascii = s.charCodeAt(i) < 0x80
      if (ascii) {
        this.ensure(n + 1)
        const buf = this.buf
        buf[this.pos++] = n
        for (let i = start; i < s.length; i++) buf[this.pos++] = s.charCodeAt(i)
        return
      }
    }
    this.string(s.slice(start))
  }

  /** The bytes written so far (a copy, safe to keep). */
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos)
  }

  /** The internal buffer (bytes `[0, pos)` are written; valid until the next write). */
  get buffer(): Uint8Array {
    return this.buf
  }

  /** The bytes written so far as a view into the internal buffer (valid until the next write). */
  view(): Uint8Array {
    return this.buf.subarray(0, this.pos)
  }
}

function varintSize(v: number): number {
  let n = 1
  while (v >= 0x80) {
    v = Math.floor(v / 0x80)
    n++
  }
  return n
}

function wtf8Length(s: string): number {
  let len = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) len += 1
    else if (c < 0x800) len += 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && isLow(s.charCodeAt(i + 1))) {
      len += 4
      i++
    } else len += 3
  }
  return len
}

function isLow(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff
}

function writeWtf8(s: string, buf: Uint8Array, pos: number): number {
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i)
    if (c < 0x80) {
      buf[pos++] = c
    } else if (c < 0x800) {
      buf[pos++] = 0xc0 | (c >> 6)
      buf[pos++] = 0x80 | (c & 0x3f)
    } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && isLow(s.charCodeAt(i + 1))) {
      c = 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(++i) - 0xdc00)
      buf[pos++] = 0xf0 | (c >> 18)
      buf[pos++] = 0x80 | ((c >> 12) & 0x3f)
      buf[pos++] = 0x80 | ((c >> 6) & 0x3f)
      buf[pos++] = 0x80 | (c & 0x3f)
    } else {
      buf[pos++] = 0xe0 | (c >> 12)
      buf[pos++] = 0x80 | ((c >> 6) & 0x3f)
      buf[pos++] = 0x80 | (c & 0x3f)
    }
  }
  return pos
}

/** A bounds-checked cursor over bytes; every read past the end or of a malformed item throws {@link DecodeError}. */
export class Reader {
  /** Current read offset. */
  pos = 0
  constructor(readonly buf: Uint8Array) {}

  /** Bytes not yet read. */
  get remaining(): number {
    return this.buf.length - this.pos
  }

  /** True when every byte has been read. */
  get done(): boolean {
    return this.pos >= this.buf.length
  }

  /** Reads one byte. */
  u8(): number {
    if (this.pos >= this.buf.length) throw new DecodeError(`unexpected end of input at byte ${this.pos}`)
    return this.buf[this.pos++]!
  }

  /** Reads a LEB128 varint of at most 2^53 − 1. */
  uint(): number {
    // One byte (most lengths, indexes and small numbers): no loop.
    const first = this.buf[this.pos]
    if (first !== undefined && first < 0x80) {
      this.pos++
      return first
    }
    let result = 0
    let scale = 1
    const buf = this.buf
    for (let i = 0; i < 8; i++) {
      // The byte read here, not through u8(): a call per byte costs more than the byte until this is compiled.
      const b = buf[this.pos++]
      if (b === undefined) throw new DecodeError(`unexpected end of input at byte ${--this.pos}`)
      result += (b & 0x7f) * scale
      if (b < 0x80) {
        if (result > Number.MAX_SAFE_INTEGER) break
        if (b === 0 && i > 0) throw new DecodeError(`non-canonical varint at byte ${this.pos - 1}`)
        return result
      }
      scale *= 0x80
    }
    throw new DecodeError(`varint too large at byte ${this.pos}`)
  }

  /** Reads a count of items that each take at least `minItemBytes`; refuses counts the remaining input cannot hold. */
  count(minItemBytes = 1, max = Number.MAX_SAFE_INTEGER): number {
    const n = this.uint()
    if (n > max) throw new DecodeError(`count ${n} exceeds the limit ${max}`)
    if (n * minItemBytes > this.remaining) throw new DecodeError(`count ${n} exceeds the remaining ${this.remaining} bytes`)
    return n
  }

  /** Reads a zig-zag varint. */
  int(): number {
    const v = this.uint()
    return v % 2 === 1 ? -(v + 1) / 2 : v / 2
  }

  /** Reads a little-endian float64. */
  float(): number {
    if (this.remaining < 8) throw new DecodeError(`unexpected end of input in a float at byte ${this.pos}`)
    const buf = this.buf
    const p = this.pos
    for (let i = 0; i < 8; i++) f64Bytes[i] = buf[p + i]!
    this.pos = p + 8
    return f64[0]!
  }

  /** Reads `n` raw bytes as a view into the input. */
  raw(n: number): Uint8Array {
    if (n > this.remaining) throw new DecodeError(`length ${n} exceeds the remaining ${this.remaining} bytes`)
    const out = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }

  /** Reads a length-prefixed byte string (a copy). */
  bytes(): Uint8Array {
    return this.raw(this.uint()).slice()
  }

  /** Reads a length-prefixed WTF-8 string. */
  string(): string {
    return decodeString(this.raw(this.uint()))
  }
}

/** Decodes WTF-8 bytes (what {@link Writer.string} writes after the length); throws {@link DecodeError} on bad input. */
export function decodeString(bytes: Uint8Array): string {
  return decodeStringAt(bytes, 0, bytes.length)
}

/**
 * {@link decodeString} of `buf[start, end)`, without a view of them. Short ASCII strings (record ids, names) are made
 * four characters at a time: a concatenation per character would allocate a string per character.
 */
export function decodeStringAt(buf: Uint8Array, start: number, end: number): string {
  const n = end - start
  if (n < 64) {
    let ascii = true
    for (let i = start; i < end && ascii; i++) ascii = buf[i]! < 0x80
    if (ascii) {
      let s = ''
      let i = start
      for (; i + 4 <= end; i += 4) s += String.fromCharCode(buf[i]!, buf[i + 1]!, buf[i + 2]!, buf[i + 3]!)
      for (; i < end; i++) s += String.fromCharCode(buf[i]!)
      return s
    }
    return decodeWtf8(buf.subarray(start, end))
  }
  const bytes = buf.subarray(start, end)
  try {
    return textDecoder.decode(bytes)
  } catch {
    return decodeWtf8(bytes)
  }
}

function decodeWtf8(bytes: Uint8Array): string {
  const units: number[] = []
  let out = ''
  const fail = (i: number): never => {
    throw new DecodeError(`invalid UTF-8/WTF-8 byte sequence at offset ${i}`)
  }
  for (let i = 0; i < bytes.length; ) {
    const b0 = bytes[i]!
    let cp: number
    let size: number
    if (b0 < 0x80) {
      cp = b0
      size = 1
    } else if (b0 >= 0xc2 && b0 <= 0xdf) {
      cp = b0 & 0x1f
      size = 2
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      cp = b0 & 0x0f
      size = 3
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      cp = b0 & 0x07
      size = 4
    } else return fail(i)
    if (i + size > bytes.length) fail(i)
    for (let k = 1; k < size; k++) {
      const b = bytes[i + k]!
      if ((b & 0xc0) !== 0x80) fail(i)
      cp = (cp << 6) | (b & 0x3f)
    }
    if ((size === 3 && cp < 0x800) || (size === 4 && (cp < 0x10000 || cp > 0x10ffff))) fail(i)
    if (cp >= 0x10000) {
      cp -= 0x10000
      units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff))
    } else units.push(cp)
    i += size
    if (units.length >= 4096) {
      out += String.fromCharCode(...units)
      units.length = 0
    }
  }
  return out + String.fromCharCode(...units)
}
