/**
 * MurmurHash3 x86 128-bit (Austin Appleby's public-domain algorithm), returning four 32-bit lanes. Not a
 * cryptographic hash: syncmesh uses it only for state digests, where it has to be fast and well distributed.
 */
export function murmur3x128(bytes: Uint8Array, seed = 0): [number, number, number, number] {
  const len = bytes.length
  const blocks = len - (len % 16)
  s1 = s2 = s3 = s4 = seed | 0
  // The 16-byte blocks are read a 32-bit word at a time from 4-aligned input (every freshly encoded entry); other
  // input is copied through an aligned scratch, a chunk at a time. One loop for both, always on the same types: it is
  // optimised once and never deoptimised by a path it had not seen (each costs a return to the interpreter).
  if (LITTLE_ENDIAN && bytes.byteOffset % 4 === 0) mixBlocks(new Int32Array(bytes.buffer, bytes.byteOffset, blocks >> 2), blocks >> 2)
  else {
    for (let at = 0; at < blocks; at += CHUNK) {
      const n = Math.min(CHUNK, blocks - at)
      if (LITTLE_ENDIAN) chunkBytes.set(bytes.subarray(at, at + n))
      else for (let i = 0; i < n; i += 4) chunkWords[i >> 2] = word(bytes, at + i)
      mixBlocks(chunkWords, n >> 2)
    }
  }
  let h1 = s1
  let h2 = s2
  let h3 = s3
  let h4 = s4
  let k1 = 0
  let k2 = 0
  let k3 = 0
  let k4 = 0
  const tail = len - blocks
  for (let j = tail - 1; j >= 0; j--) {
    const b = bytes[blocks + j]!
    if (j >= 12) k4 ^= b << ((j - 12) * 8)
    else if (j >= 8) k3 ^= b << ((j - 8) * 8)
    else if (j >= 4) k2 ^= b << ((j - 4) * 8)
    else k1 ^= b << (j * 8)
  }
  if (tail > 12) h4 ^= Math.imul(rotl(Math.imul(k4, C4), 18), C1)
  if (tail > 8) h3 ^= Math.imul(rotl(Math.imul(k3, C3), 17), C4)
  if (tail > 4) h2 ^= Math.imul(rotl(Math.imul(k2, C2), 16), C3)
  if (tail > 0) h1 ^= Math.imul(rotl(Math.imul(k1, C1), 15), C2)
  h1 ^= len
  h2 ^= len
  h3 ^= len
  h4 ^= len
  h1 = (h1 + h2 + h3 + h4) | 0
  h2 = (h2 + h1) | 0
  h3 = (h3 + h1) | 0
  h4 = (h4 + h1) | 0
  h1 = fmix(h1)
  h2 = fmix(h2)
  h3 = fmix(h3)
  h4 = fmix(h4)
  h1 = (h1 + h2 + h3 + h4) | 0
  h2 = (h2 + h1) | 0
  h3 = (h3 + h1) | 0
  h4 = (h4 + h1) | 0
  return [h1 >>> 0, h2 >>> 0, h3 >>> 0, h4 >>> 0]
}

const C1 = 0x239b961b
const C2 = 0xab0e9789
const C3 = 0x38b34ae5
const C4 = 0xa1e38b93

/**
 * The four 32-bit lanes between {@link mixBlocks} calls (module variables, not an array: reading and writing them needs
 * no type feedback, so code compiled in the middle of the first loop does not deoptimise where it ends).
 */
let s1 = 0
let s2 = 0
let s3 = 0
let s4 = 0
/** Bytes of unaligned input copied at a time (a multiple of 16). */
const CHUNK = 1 << 16
const chunkWords = new Int32Array(CHUNK >> 2)
const chunkBytes = new Uint8Array(chunkWords.buffer)

/** Mixes the first `n` words of `words` (whole 16-byte blocks) into the lanes. */
function mixBlocks(words: Int32Array, n: number): void {
  let h1 = s1
  let h2 = s2
  let h3 = s3
  let h4 = s4
  // Every sum is truncated to 32 bits where it is made (`| 0`, as Math.imul would): the optimising compiler then keeps
  // the loop in 32-bit integers instead of deoptimising on the first sum that overflows them. The rotations are
  // written out: until the loop is compiled, each call of a helper costs more than its work.
  for (let i = 0; i < n; i += 4) {
    let k1 = Math.imul(words[i]!, C1)
    let k2 = Math.imul(words[i + 1]!, C2)
    let k3 = Math.imul(words[i + 2]!, C3)
    let k4 = Math.imul(words[i + 3]!, C4)
    k1 = Math.imul((k1 << 15) | (k1 >>> 17), C2)
    h1 ^= k1
    h1 = (Math.imul((((h1 << 19) | (h1 >>> 13)) + h2) | 0, 5) + 0x561ccd1b) | 0
    k2 = Math.imul((k2 << 16) | (k2 >>> 16), C3)
    h2 ^= k2
    h2 = (Math.imul((((h2 << 17) | (h2 >>> 15)) + h3) | 0, 5) + 0x0bcaa747) | 0
    k3 = Math.imul((k3 << 17) | (k3 >>> 15), C4)
    h3 ^= k3
    h3 = (Math.imul((((h3 << 15) | (h3 >>> 17)) + h4) | 0, 5) + 0x96cd1c35) | 0
    k4 = Math.imul((k4 << 18) | (k4 >>> 14), C1)
    h4 ^= k4
    h4 = (Math.imul((((h4 << 13) | (h4 >>> 19)) + h1) | 0, 5) + 0x32ac3b17) | 0
  }
  s1 = h1
  s2 = h2
  s3 = h3
  s4 = h4
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1

/** The little-endian 32-bit word at `bytes[i]` (signed). */
function word(bytes: Uint8Array, i: number): number {
  return bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24)
}

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r))
}

function fmix(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h
}
