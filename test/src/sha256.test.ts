/**
 * The library's own SHA-256 (src/crypto/sha256.ts), which derives room topics: it must agree with node:crypto
 * byte for byte, or replicas built before and after it would meet under different topics.
 */
import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { roomTopic } from '../../src/index.js'
import { SHA256_H0, SHA256_K, sha256, toHex } from '../../src/crypto/sha256.js'
import { mulberry32 } from '../prng.js'

const SEED = Number(process.env.SEED ?? 20261209)
const reference = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

describe('sha256', () => {
  it('the NIST examples: "abc", the empty string, the 448-bit two-block message, a million "a"', () => {
    const enc = new TextEncoder()
    expect(toHex(sha256(enc.encode('abc')))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
    expect(toHex(sha256(new Uint8Array(0)))).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
    expect(toHex(sha256(enc.encode('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')))).toBe('248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1')
    expect(toHex(sha256(new Uint8Array(1_000_000).fill(0x61)))).toBe('cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0')
  })

  it(`agrees with node:crypto on every length 0..300 and on random inputs up to 10 kB (seed ${SEED})`, () => {
    const rnd = mulberry32(SEED)
    const bytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(rnd() * 256))
    for (let n = 0; n <= 300; n++) {
      const b = bytes(n)
      expect(toHex(sha256(b)), `length ${n}, seed ${SEED}`).toBe(reference(b))
    }
    for (let i = 0; i < 50; i++) {
      const b = bytes(Math.floor(rnd() * 10_000))
      expect(toHex(sha256(b)), `length ${b.length}, seed ${SEED}`).toBe(reference(b))
    }
  })

  it('computed constants are the standard ones, with a margin that a few ulps of sqrt / cbrt error cannot cross', () => {
    expect(SHA256_H0[0]).toBe(0x6a09e667)
    expect(SHA256_H0[7]).toBe(0x5be0cd19)
    expect(SHA256_K[0]).toBe(0x428a2f98)
    expect(SHA256_K[63]).toBe(0xc67178f2)
    // Each constant is floor(frac(root) × 2^32); how far the exact product is from an integer, in units of 2^-32.
    const primes: number[] = []
    for (let p = 2; primes.length < 64; p++) if (primes.every((q) => p % q !== 0)) primes.push(p)
    const margins = [...primes.slice(0, 8).map(Math.sqrt), ...primes.map(Math.cbrt)].map((x) => {
      const scaled = (x - Math.floor(x)) * 2 ** 32
      return Math.min(scaled - Math.floor(scaled), Math.ceil(scaled) - scaled)
    })
    expect(Math.min(...margins)).toBeGreaterThan(2 ** -12)
  })

  it('room topics are unchanged (the SHA-256 of "syncmesh/room/v1" NUL app NUL room, in hex)', () => {
    const expected = reference(new TextEncoder().encode('syncmesh/room/v1\u0000notes\u0000kitchen ☕'))
    expect(roomTopic('notes', 'kitchen ☕')).toBe(expected)
  })
})
