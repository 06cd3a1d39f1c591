/** Byte helpers shared by the conformance suites: deterministic test data, comparison, readable previews. */

/** The first bytes in hex with the length, for messages: `[12 bytes: 01 02 … ]`; says so when given no Uint8Array. */
export function preview(bytes: Uint8Array | undefined): string {
  if (bytes === undefined) return 'undefined'
  if (!(bytes instanceof Uint8Array)) return `a ${Object.prototype.toString.call(bytes)} (not a Uint8Array)`
  const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ')
  return `[${bytes.byteLength} bytes${bytes.byteLength > 0 ? `: ${head}${bytes.byteLength > 8 ? ' …' : ''}` : ''}]`
}

/** Whether two byte arrays hold the same bytes. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false
  return true
}

/** Deterministic filler, different per salt, so that corrupted, shifted, truncated or mixed-up data are detectable. */
export function pattern(length: number, salt: number): Uint8Array {
  const out = new Uint8Array(length)
  let x = (salt * 2654435761 + 1) >>> 0
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    out[i] = x >>> 24
  }
  return out
}
