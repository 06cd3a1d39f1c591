import { describe, expect, it } from 'vitest'
import { murmur3x128 } from '../../crdt/hash.js'

/** Deterministic bytes: `n` of them, seen from `offset` into their buffer (so not 4-aligned unless offset is 0). */
function bytes(n: number, offset: number): Uint8Array {
  const buf = new Uint8Array(n + offset)
  for (let i = 0; i < buf.length; i++) buf[i] = (Math.imul(i, 2654435761) >>> 13) & 255
  return buf.subarray(offset)
}

describe('murmur3x128', () => {
  // Stored entries carry this checksum: these values are pinned (computed by the implementation that wrote the
  // first stores), so a change that breaks old stores fails here. Both the aligned and the copied (unaligned) path,
  // tails of every length class, and inputs longer than one copy chunk.
  const pinned: [number, number, number, [number, number, number, number]][] = [
    [0, 0, 0, [0, 0, 0, 0]],
    [3, 0, 0, [1824795601, 2232438965, 2232438965, 2232438965]],
    [15, 0, 1, [730949199, 1410923880, 2108288046, 1430603580]],
    [16, 0, 0, [3703226383, 1319054556, 1117297855, 2076211347]],
    [17, 1, 0, [3097273118, 3382333692, 420492156, 2771185023]],
    [100, 3, 42, [2109777409, 3468367992, 439985582, 1152024889]],
    [70001, 0, 0, [3220083734, 2258246062, 3186344876, 1001376323]],
    [70001, 1, 0, [3616684617, 2952091383, 3873151725, 3536058490]],
    [200003, 2, 7, [3680460092, 237068644, 601408746, 102453029]],
  ]
  it.each(pinned)('%i bytes at offset %i, seed %i', (n, offset, seed, lanes) => {
    expect(murmur3x128(bytes(n, offset), seed)).toEqual(lanes)
  })

  it('gives the same lanes for the same bytes wherever they lie in memory', () => {
    for (const n of [1, 16, 33, 65_536, 65_553]) {
      const a = bytes(n, 0)
      const b = new Uint8Array(n + 1).subarray(1)
      b.set(a)
      expect(murmur3x128(b)).toEqual(murmur3x128(a))
    }
  })
})
