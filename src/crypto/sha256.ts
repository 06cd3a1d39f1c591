/**
 * SHA-256 (FIPS 180-4), synchronous, for the two hashes the library computes without a key: the room topic
 * (`roomTopic`, which must work where WebCrypto does not — browsers give `crypto.subtle` to secure contexts only —
 * and synchronously) and the in-process cache id of derived room keys. It replaces `@noble/hashes`' SHA-256, which
 * brought 5.7 kB (minified) of general-purpose hashing code into every browser bundle for these two calls.
 * Checked against `node:crypto` on the NIST examples and on random inputs of every length around the block
 * boundaries (test/src/sha256.test.ts).
 *
 * The round constants are computed as the standard defines them: the first 32 bits of the fractional parts of the
 * square roots (initial hash) and cube roots (K) of the first primes. Doubles carry about 50 bits of those
 * fractions, and the test checks that none of the 72 lies within 2^-12 of a 32-bit boundary, so an engine's
 * `Math.sqrt` / `Math.cbrt` off by a few ulps still yields the same constants.
 */

/** The first `n` primes. */
function primes(n: number): number[] {
  const out: number[] = []
  for (let p = 2; out.length < n; p++) if (out.every((q) => p % q !== 0)) out.push(p)
  return out
}

/** The first 32 bits of the fractional part of `x`. */
const frac32 = (x: number): number => ((x - Math.floor(x)) * 2 ** 32) >>> 0

const P = primes(64)
/** Initial hash value: square roots of the first 8 primes. */
export const SHA256_H0 = Uint32Array.from(P.slice(0, 8), (p) => frac32(Math.sqrt(p)))
/** Round constants: cube roots of the first 64 primes. */
export const SHA256_K = Uint32Array.from(P, (p) => frac32(Math.cbrt(p)))

const rotr = (x: number, n: number): number => (x >>> n) | (x << (32 - n))

/** The SHA-256 digest of `data` (32 bytes). */
export function sha256(data: Uint8Array): Uint8Array {
  const len = data.length
  // Message, 0x80, zeros, 64-bit big-endian bit length: a whole number of 64-byte blocks.
  const m = new Uint8Array((((len + 8) >> 6) + 1) * 64)
  m.set(data)
  m[len] = 0x80
  const view = new DataView(m.buffer)
  view.setUint32(m.length - 8, Math.floor(len / 2 ** 29))
  view.setUint32(m.length - 4, (len * 8) >>> 0)
  const h = SHA256_H0.slice()
  const w = new Uint32Array(64)
  for (let off = 0; off < m.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + 4 * i)
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15]!
      const y = w[i - 2]!
      w[i] = w[i - 16]! + (rotr(x, 7) ^ rotr(x, 18) ^ (x >>> 3)) + w[i - 7]! + (rotr(y, 17) ^ rotr(y, 19) ^ (y >>> 10))
    }
    let [a, b, c, d, e, f, g, k] = h as unknown as [number, number, number, number, number, number, number, number]
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[i]! + w[i]!) | 0
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0
      k = g
      g = f
      f = e
      e = (d + t1) | 0
      d = c
      c = b
      b = a
      a = (t1 + t2) | 0
    }
    // Uint32Array stores wrap modulo 2^32.
    const v = [a, b, c, d, e, f, g, k]
    for (let i = 0; i < 8; i++) h[i] = h[i]! + v[i]!
  }
  const out = new Uint8Array(32)
  const o = new DataView(out.buffer)
  for (let i = 0; i < 8; i++) o.setUint32(4 * i, h[i]!)
  return out
}

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let out = ''
  for (const b of bytes) out += (b < 16 ? '0' : '') + b.toString(16)
  return out
}
