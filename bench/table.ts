/** Markdown table rendering and the number formats used in the report. */

/** A markdown table with padded columns; the first column is left-aligned, the others right-aligned. */
export function markdownTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((row) => (row[c] ?? '').length), 3))
  const pad = (text: string, w: number, c: number): string => (c === 0 ? text.padEnd(w) : text.padStart(w))
  const line = (cells: readonly string[]): string =>
    '| ' + widths.map((w, c) => pad(cells[c] ?? '', w, c)).join(' | ') + ' |'
  const rule = '|' + widths.map((w, c) => (c === 0 ? ':' + '-'.repeat(w + 1) : '-'.repeat(w + 1) + ':')).join('|') + '|'
  return [line(header), rule, ...rows.map(line)].join('\n')
}

/** Three significant digits, without exponent notation (e.g. 1.23, 12.3, 123, 1230). */
function sig3(x: number): string {
  if (x === 0 || !Number.isFinite(x)) return String(x)
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(x))))
  return x.toFixed(digits)
}

/** Ops per second, e.g. `1.23 M`, `112 k`, `127`. */
export function formatRate(opsPerSec: number): string {
  if (opsPerSec >= 1e6) return `${sig3(opsPerSec / 1e6)} M`
  if (opsPerSec >= 1e3) return `${sig3(opsPerSec / 1e3)} k`
  return sig3(opsPerSec)
}

/** Megabytes (10^6 bytes) with two decimals, e.g. `2.34 MB`. */
export function formatMB(bytes: number): string {
  return `${(bytes / 1e6).toFixed(2)} MB`
}

/** A heap figure already in MB, e.g. `39.7`. */
export function formatHeapMB(mb: number): string {
  return mb.toFixed(1)
}

/** An integer with space-separated thousands, e.g. `100 000`. */
export function formatCount(n: number): string {
  return Math.round(n).toLocaleString('en-US').replaceAll(',', ' ')
}

/** A byte count with thousands separators, e.g. `2 412 B`. */
export function formatBytes(bytes: number): string {
  return `${formatCount(bytes)} B`
}

/** Milliseconds, e.g. `3.21`, `87.5`, `1234`. */
export function formatMs(ms: number): string {
  return ms >= 1000 ? ms.toFixed(0) : sig3(ms)
}

/** A ratio, e.g. `9.10×`. */
export function formatRatio(ratio: number): string {
  return `${sig3(ratio)}×`
}
