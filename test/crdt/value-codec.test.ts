import { describe, expect, it } from 'vitest'
import { Reader, Writer } from '../../crdt/bytes.js'
import { DecodeError, InvalidValueError, compareValues, encodeValue, normalizeValue, valuesEqual } from '../../crdt/index.js'
import { readValue } from '../../crdt/value.js'

const roundTrip = (v: unknown): unknown => readValue(new Reader(encodeValue(normalizeValue(v))))

describe('values', () => {
  it('round-trip exactly: -0, NaN, ±Infinity, decimals, big ints, bytes, lone surrogates, nesting', () => {
    const cases: unknown[] = [0, -0, NaN, Infinity, -Infinity, 19.99, -0.01, 1e-7, 2 ** 52 - 1, -(2 ** 52) + 1, 2 ** 60, 1.7976931348623157e308, 5e-324,
      '', 'héllo', '\ud800', 'a\udc00b', '😀', 'x'.repeat(5000) + '\ud800', new Uint8Array([]), new Uint8Array([0, 255]),
      null, true, false, [1, [2, [3]]], { a: { b: [null, 'c'] }, __proto__x: 1 }]
    for (const v of cases) {
      const back = roundTrip(v)
      if (typeof v === 'number') expect(Object.is(back, v), `number ${v}`).toBe(true)
      else expect(back).toEqual(v)
    }
  })

  it('keep a "__proto__" key as an own property, never as a prototype', () => {
    const v = JSON.parse('{"__proto__": {"polluted": true}}')
    const back = roundTrip(v) as Record<string, unknown>
    expect(Object.keys(back)).toEqual(['__proto__'])
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype)
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })

  it('encode 2-decimal floats compactly (scaled integers) and exactly', () => {
    expect(encodeValue(123.45).length).toBeLessThanOrEqual(5)
    for (let i = 0; i < 10_000; i++) {
      const v = Math.round(Math.sin(i) * 1e6) / 100
      expect(Object.is(roundTrip(v), v)).toBe(true)
    }
  })

  it('normalize to frozen deep copies and refuse what is not storable, writing the path', () => {
    const input = { a: [1, { b: 2 }] }
    const out = normalizeValue(input) as { a: [number, { b: number }] }
    expect(out).toEqual(input)
    expect(out).not.toBe(input)
    expect(Object.isFrozen(out) && Object.isFrozen(out.a) && Object.isFrozen(out.a[1])).toBe(true)
    const bytes = new Uint8Array([1])
    const copy = normalizeValue(bytes) as Uint8Array
    bytes[0] = 9
    expect(copy[0]).toBe(1)
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    const bad: [unknown, RegExp][] = [
      [undefined, /undefined/], [() => 1, /function/], [Symbol('s'), /symbol/], [10n, /bigint/], [new Date(), /Date/],
      [new Map(), /Map/], [{ a: { b: undefined } }, /value\.a\.b/], [[1, , 3], /sparse/], [cyclic, /deeper|cyclic/],
      [new Uint16Array(2), /Uint8Array/],
    ]
    for (const [v, msg] of bad) expect(() => normalizeValue(v), String(msg)).toThrow(msg)
    expect(() => normalizeValue(() => 1)).toThrow(InvalidValueError)
  })

  it('order values totally by canonical bytes (-0 ≠ 0, NaN = NaN, removal last)', () => {
    expect(compareValues(-0, 0)).not.toBe(0)
    expect(compareValues(NaN, NaN)).toBe(0)
    expect(valuesEqual(NaN, NaN)).toBe(true)
    expect(valuesEqual(-0, 0)).toBe(false)
    expect(valuesEqual({ a: [1] }, { a: [1] })).toBe(true)
    expect(compareValues(undefined, 'zzz')).toBe(1)
    expect(compareValues('a', 'b')).toBe(-1)
    expect(compareValues(new Uint8Array([1]), new Uint8Array([1]))).toBe(0)
  })

  it('refuse malformed encodings with DecodeError', () => {
    const bad = [[], [99], [3], [4, 1, 2], [5, 2, 0], [5, 2, 16], [6, 5, 0x61], [6, 2, 0xc0, 0x80], [6, 3, 0xed, 0xa0], [8, 200], [9, 1, 1, 0x61], [8, 1, 10]]
    for (const b of bad) expect(() => readValue(new Reader(new Uint8Array(b))), JSON.stringify(b)).toThrow(DecodeError)
    let deep = new Uint8Array([0])
    for (let i = 0; i < 100; i++) deep = new Uint8Array([8, 1, ...deep])
    expect(() => readValue(new Reader(deep))).toThrow(/deeper/)
  })

  it('varints: canonical, bounded, round-trip to 2^53 − 1', () => {
    for (const n of [0, 1, 127, 128, 300, 2 ** 31, 2 ** 32 + 5, Number.MAX_SAFE_INTEGER]) {
      const w = new Writer()
      w.uint(n)
      expect(new Reader(w.finish()).uint()).toBe(n)
    }
    expect(() => new Reader(new Uint8Array([0x80, 0x00])).uint()).toThrow(/non-canonical/)
    expect(() => new Reader(new Uint8Array(9).fill(0xff)).uint()).toThrow(DecodeError)
    expect(() => new Reader(new Uint8Array([0x80])).uint()).toThrow(/end of input/)
  })

  it('Writer.stringFrom(s, k) writes exactly what Writer.string(s.slice(k)) writes', () => {
    const strings = ['', 'r00042', 'héllo wörld', 'a\ud800b', '😀x😀', 'ab'.repeat(40), 'x'.repeat(200) + 'é']
    for (const s of strings) {
      for (let k = 0; k <= s.length; k++) {
        const a = new Writer(4)
        a.stringFrom(s, k)
        const b = new Writer(4)
        b.string(s.slice(k))
        expect(a.finish(), `${JSON.stringify(s)} from ${k}`).toEqual(b.finish())
      }
    }
  })
})
