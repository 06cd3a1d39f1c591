/**
 * MurmurHash3 x86 128-bit (Austin Appleby's public-domain algorithm), returning four 32-bit lanes. Not a
 * cryptographic hash: syncmesh uses it only for state digests, where it has to be fast and well distributed.
 */
export function murmur3x128(bytes: Uint8Array, seed = 0): [number, number, number, number] {
  const c1 = 0x239b961b
  const c2 = 0xab0e9789
  const c3 = 0x38b34ae5
  const c4 = 0xa1e38b93
  let h1 = seed >>> 0
  let h2 = h1
  let h3 = h1
  let h4 = h1
  const len = bytes.length
  const blocks = len - (len % 16)
  // Every sum is truncated to 32 bits where it is made (`| 0`, as Math.imul would): the optimising compiler then keeps
  // the loop in 32-bit integers instead of deoptimising on the first sum that overflows them.
  // On a little-endian machine, 4-aligned input (every freshly encoded entry) is read a 32-bit word at a time.
  const words = LITTLE_ENDIAN && bytes.byteOffset % 4 === 0 ? new Int32Array(bytes.buffer, bytes.byteOffset, blocks >> 2) : undefined
  for (let i = 0; i < blocks; i += 16) {
    let k1 = words ? words[i >> 2]! : word(bytes, i)
    let k2 = words ? words[(i >> 2) + 1]! : word(bytes, i + 4)
    let k3 = words ? words[(i >> 2) + 2]! : word(bytes, i + 8)
    let k4 = words ? words[(i >> 2) + 3]! : word(bytes, i + 12)
    k1 = Math.imul(rotl(Math.imul(k1, c1), 15), c2)
    h1 ^= k1
    h1 = (Math.imul((rotl(h1, 19) + h2) | 0, 5) + 0x561ccd1b) | 0
    k2 = Math.imul(rotl(Math.imul(k2, c2), 16), c3)
    h2 ^= k2
    h2 = (Math.imul((rotl(h2, 17) + h3) | 0, 5) + 0x0bcaa747) | 0
    k3 = Math.imul(rotl(Math.imul(k3, c3), 17), c4)
    h3 ^= k3
    h3 = (Math.imul((rotl(h3, 15) + h4) | 0, 5) + 0x96cd1c35) | 0
    k4 = Math.imul(rotl(Math.imul(k4, c4), 18), c1)
    h4 ^= k4
    h4 = (Math.imul((rotl(h4, 13) + h1) | 0, 5) + 0x32ac3b17) | 0
  }
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
  if (tail > 12) h4 ^= Math.imul(rotl(Math.imul(k4, c4), 18), c1)
  if (tail > 8) h3 ^= Math.imul(rotl(Math.imul(k3, c3), 17), c4)
  if (tail > 4) h2 ^= Math.imul(rotl(Math.imul(k2, c2), 16), c3)
  if (tail > 0) h1 ^= Math.imul(rotl(Math.imul(k1, c1), 15), c2)
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
