/**
 * Turns median metrics into the printed report: one markdown table per workload, ratio lines (syncmesh vs each
 * peer), the spec's targets for syncmesh as PASS/MISS, and footnotes saying exactly what was measured.
 */
import type { Sizes } from './data.js'
import type { SystemName } from './systems/types.js'
import { formatBytes, formatCount as count, formatHeapMB, formatMB, formatMs, formatRate, formatRatio, markdownTable } from './table.js'
import type { Metrics, WorkloadName } from './workloads.js'

/** Why a (system, workload) cell has no numbers. */
export interface Problem {
  kind: 'skipped' | 'error' | 'unavailable'
  message: string
}

/** Everything the report shows. */
export interface ReportInput {
  readonly header: readonly string[]
  readonly sizes: Sizes
  readonly scale: number
  readonly workloads: readonly WorkloadName[]
  readonly systems: readonly SystemName[]
  /** Median metrics per system and workload (absent when the cell has a problem). */
  readonly medians: ReadonlyMap<string, Metrics>
  readonly problems: ReadonlyMap<string, Problem>
}

/** One evaluated spec target for syncmesh. */
export interface TargetResult {
  workload: WorkloadName
  target: string
  measured: string
  pass: boolean
}

/** Key of a (system, workload) cell in {@link ReportInput} maps. */
export function cellKey(system: SystemName, workload: WorkloadName): string {
  return `${system}/${workload}`
}

interface Column {
  header: string
  cell(m: Metrics, sizes: Sizes): string
}

interface Ratio {
  key: string
  label: string
  /** Throughput: printed as "N× faster" / "N× slower" instead of a plain ratio. */
  higherIsBetter?: boolean
}

interface Target {
  key: string
  label: string
  max?: number
  min?: number
  format(value: number): string
}

/** A syncmesh figure printed beside the targets, for information only (not counted as PASS/MISS). */
interface Aside {
  key: string
  label: string
  format(value: number): string
}

interface Section {
  title(sizes: Sizes): string
  columns: Column[]
  ratios: Ratio[]
  targets: Target[]
  asides?: Aside[]
  /** Footnotes derived from the medians (batching, sampling, memory outside the heap…). */
  notes(medians: ReadonlyMap<SystemName, Metrics>, sizes: Sizes): string[]
}

/** `1k` for 1000, else the plain count. */
function shortCount(n: number): string {
  return n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n)
}

/** A metric, or NaN if absent. */
const num = (m: Metrics, key: string): number => m[key] ?? Number.NaN

/** How heap MB is measured, each system's empty-process baseline, and memory counted from outside the JS heap. */
function heapNotes(medians: ReadonlyMap<SystemName, Metrics>): string[] {
  const baselines = [...medians].map(([system, m]) => `${system} ${formatHeapMB(num(m, 'baselineHeapMB'))}`)
  const notes = [
    'heap MB = `heapUsed + arrayBuffers` of `process.memoryUsage()` after two `global.gc()` calls, in MB of ' +
      '10^6 bytes, for the whole worker process; baseline of the same process before any data was created: ' +
      `${baselines.join(', ')} MB.`,
  ]
  for (const [system, m] of medians) {
    const outside = num(m, 'outsideHeapMB')
    if (outside > 0) {
      notes.push(
        `${system} heap also counts ${formatHeapMB(outside)} MB of WASM linear memory (invisible to memoryUsage; ` +
          'its grow-only size, i.e. a high-water mark).',
      )
    }
  }
  return notes
}

const SECTIONS: Record<WorkloadName, Section> = {
  W1: {
    title: (s) =>
      `W1 — ${count(s.records)} inserts, then ${count(s.w1Updates)} single-field updates, one op per transaction`,
    columns: [
      {
        header: 'insert ops/s',
        cell: (m) => {
          const perTxn = num(m, 'insertsPerChange')
          return formatRate(num(m, 'insertOpsPerSec')) + (perTxn > 1 ? ` (${shortCount(perTxn)}/txn)` : '')
        },
      },
      {
        header: 'update ops/s',
        cell: (m, s) => {
          const timed = num(m, 'updateOpsTimed')
          const sample = timed < s.w1Updates ? ` (${shortCount(timed)}-op sample)` : ''
          return formatRate(num(m, 'updateOpsPerSec')) + sample
        },
      },
      { header: 'heap MB', cell: (m) => formatHeapMB(num(m, 'heapMB')) },
      { header: 'state', cell: (m) => formatMB(num(m, 'stateBytes')) },
      { header: 'inserts-only state', cell: (m) => formatMB(num(m, 'insertsOnlyBytes')) },
      { header: 'growth ×', cell: (m) => num(m, 'growth').toFixed(2) },
    ],
    ratios: [
      { key: 'updateOpsPerSec', label: 'updates', higherIsBetter: true },
      { key: 'insertOpsPerSec', label: 'inserts', higherIsBetter: true },
      { key: 'heapMB', label: 'heap' },
      { key: 'stateBytes', label: 'state' },
    ],
    targets: [
      { key: 'updateOpsPerSec', label: 'update ops/s', min: 1e6, format: formatRate },
      { key: 'heapMB', label: 'heap', max: 10, format: (v) => `${formatHeapMB(v)} MB` },
      { key: 'stateBytes', label: 'state', max: 0.83e6, format: formatMB },
      { key: 'growth', label: 'state ÷ inserts-only', max: 1.05, format: (v) => `${v.toFixed(3)}×` },
    ],
    notes: (medians, s) => {
      const notes = heapNotes(medians)
      for (const [system, m] of medians) {
        const timed = num(m, 'updateOpsTimed')
        if (timed < s.w1Updates) {
          notes.push(
            `${system}: update ops/s timed on the first ${count(timed)} updates, one transaction each; the ` +
              `other ${count(s.w1Updates - timed)} were applied ${count(num(m, 'updatesPerChangeUntimed'))} ` +
              'per transaction (untimed) to build the full-history state behind the heap and byte columns.',
          )
        }
        if (num(m, 'insertsPerChange') > 1) {
          notes.push(`${system}: inserts batched ${count(num(m, 'insertsPerChange'))} records per transaction.`)
        }
      }
      notes.push(
        'state = full-state encoding after all updates (syncmesh `encodeState`, yjs `encodeStateAsUpdate`, automerge ' +
          '`save`, floor UTF-8 `JSON.stringify` of the entries); inserts-only = the same right after the inserts; ' +
          'MB = 10^6 bytes. Every final state is checked against the expected records.',
      )
      return notes
    },
  },
  W2: {
    title: () => 'W2 — cold load of the W1 final state in a fresh process',
    columns: [
      { header: 'load ms', cell: (m) => formatMs(num(m, 'loadMs')) },
      { header: 'heap MB', cell: (m) => formatHeapMB(num(m, 'heapMB')) },
      { header: 'state loaded', cell: (m) => formatMB(num(m, 'stateBytes')) },
    ],
    ratios: [
      { key: 'loadMs', label: 'load time' },
      { key: 'heapMB', label: 'heap' },
    ],
    targets: [{ key: 'loadMs', label: 'load', max: 100, format: (v) => `${formatMs(v)} ms` }],
    notes: (medians) => [
      'load ms = decode into a fresh replica + read one record (r00042), in a new process fed the state file that ' +
        'the same run’s W1 worker wrote (file read untimed); the whole loaded state is then checked.',
      ...heapNotes(medians),
    ],
  },
  W3: {
    title: (s) =>
      `W3 — 4 replicas × ${count(s.w3UpdatesPerReplica)} concurrent updates, pairwise exchange until converged`,
    columns: [
      { header: 'merge ms', cell: (m) => formatMs(num(m, 'mergeMs')) },
      { header: 'bytes exchanged', cell: (m) => formatMB(num(m, 'bytesExchanged')) },
      { header: 'rounds', cell: (m) => String(num(m, 'rounds')) },
      { header: 'updates/txn', cell: (m) => count(num(m, 'updatesPerChange')) },
    ],
    ratios: [
      { key: 'mergeMs', label: 'merge time' },
      { key: 'bytesExchanged', label: 'bytes' },
    ],
    targets: [
      { key: 'mergeMs', label: 'merge', max: 350, format: (v) => `${formatMs(v)} ms` },
      { key: 'bytesExchanged', label: 'bytes', max: 4.25e6, format: formatMB },
    ],
    notes: () => [
      'All 4 replicas are loaded from W1’s inserts-only state (inserted once, in W1’s process), each with its ' +
        'own identity (HLC peer id, yjs clientID, automerge actor), then make their updates concurrently. ' +
        'A round = two-way sessions over the 6 pairs in order 0-1, 0-2, 0-3, 1-2, 1-3, 2-3; rounds repeat until all ' +
        'replicas agree. merge ms covers the sessions only (message encode + decode + apply), not the convergence ' +
        'checks. Convergence is asserted on the full record snapshots (and digests where the system has them).',
      'syncmesh: `encodeVersionVector` → `encodeChangesSince` (the delta written from the record blocks) → `applyEncoded` (merged from its bytes), each ' +
        'direction. yjs: `encodeStateVector` → `encodeStateAsUpdate(doc, sv)` → `applyUpdate`, each direction. ' +
        'automerge: the sync protocol (`generateSyncMessage`/`receiveSyncMessage`, fresh `SyncState`s) until ' +
        'neither side sends.',
      'updates/txn: updates per transaction on each replica before the exchange (automerge batched to keep the ' +
        'run time sane; this also means fewer, larger changes to sync).',
    ],
  },
  W4: {
    title: (s) =>
      `W4 — bytes to bring B up to date after A changed ${count(s.w4Changes)} fields (B’s request included)`,
    columns: [
      { header: 'fresh state', cell: (m) => formatBytes(num(m, 'bytesFresh')) },
      { header: 'after shared overwrites', cell: (m) => formatBytes(num(m, 'bytesAfterOverwrites')) },
    ],
    ratios: [
      { key: 'bytesFresh', label: 'fresh' },
      { key: 'bytesAfterOverwrites', label: 'after overwrites' },
    ],
    targets: [
      { key: 'bytesFresh', label: 'fresh', max: 2500, format: formatBytes },
      { key: 'bytesAfterOverwrites', label: 'after overwrites', max: 2500, format: formatBytes },
    ],
    notes: (_medians, s) => [
      `A and B are loaded from W1’s inserts-only state (fresh) or from W1’s final state, i.e. after ` +
        `${count(s.w1Updates)} overwrites both share; then A changes ${count(s.w4Changes)} fields, one op per ` +
        'transaction, and B pulls. The two replicas are then checked equal.',
      'syncmesh: B’s `encodeVersionVector` + A’s `encodeDelta(changesSince(vv))`. yjs: B’s ' +
        '`encodeStateVector` + A’s `encodeStateAsUpdate(doc, sv)`. automerge: B’s heads (32 raw bytes each) + ' +
        'A’s `saveSince(heads)`, applied with `loadIncremental`.',
    ],
  },
  API: {
    title: (s) =>
      `API — through the replica API, in-memory storage: ${count(s.records)} \`collection.put\`, then ` +
      `${count(s.w1Updates)} single-field \`collection.update\`, pipelined and awaited`,
    columns: [
      { header: 'insert ops/s (pipelined, first of process)', cell: (m) => formatRate(num(m, 'insertOpsPerSec')) },
      { header: 'insert ops/s (pipelined, warm)', cell: (m) => formatRate(num(m, 'warmInsertOpsPerSec')) },
      { header: 'update ops/s (pipelined)', cell: (m) => formatRate(num(m, 'pipelinedOpsPerSec')) },
      { header: 'update ops/s (awaited)', cell: (m) => formatRate(num(m, 'awaitedOpsPerSec')) },
      { header: 'heap MB', cell: (m) => formatHeapMB(num(m, 'heapMB')) },
      {
        header: 'storage',
        cell: (m) => (Number.isFinite(num(m, 'storageBytes')) ? formatMB(num(m, 'storageBytes')) : '—'),
      },
    ],
    ratios: [
      { key: 'pipelinedOpsPerSec', label: 'pipelined updates', higherIsBetter: true },
      { key: 'awaitedOpsPerSec', label: 'awaited updates', higherIsBetter: true },
      { key: 'insertOpsPerSec', label: 'inserts (first of process)', higherIsBetter: true },
      { key: 'warmInsertOpsPerSec', label: 'inserts (warm)', higherIsBetter: true },
      { key: 'heapMB', label: 'heap' },
    ],
    targets: [
      { key: 'pipelinedOpsPerSec', label: 'API update ops/s (pipelined)', min: 3e5, format: formatRate },
      { key: 'warmInsertOpsPerSec', label: 'API put ops/s (pipelined, warm)', min: 3e5, format: formatRate },
    ],
    asides: [
      { key: 'awaitedOpsPerSec', label: 'API update ops/s (awaited)', format: formatRate },
      { key: 'insertOpsPerSec', label: 'API put ops/s (pipelined, first of process)', format: formatRate },
    ],
    notes: (medians, s) => {
      const group = count(num([...medians.values()][0] ?? {}, 'groupSize'))
      return [
        'syncmesh: `createReplica({ peerId, storage })` with a `MemoryStorage` (a subclass whose `close()` keeps ' +
          'the content, for the checks below), no transports; the public ' +
          '`collection(\'records\')` API, W1’s records and updates (same seed). Each mode runs on its own fresh ' +
          'replica in the same process, pipelined first (so the pipelined update rate gets no warm-up from the awaited ' +
          'mode).',
        `pipelined: \`update\`s issued without awaiting each, awaited in groups of ${group} with \`Promise.all\` — ` +
          'what an app making a burst of edits sees. The writes of one tick are flushed to storage as one delta, and ' +
          'each promise still resolves only once its write is stored. insert ops/s: the puts of new records, pipelined ' +
          'the same way. "first of process": the pipelined replica\'s, the first writes of the fresh process, so ' +
          'mostly V8 compiling the write path while it runs. "warm": the awaited replica\'s, a new replica, store ' +
          'and storage in the same process after the first one\'s writes and the two full collections of its heap ' +
          'measurement — what an app sees from its second burst on.',
        `awaited: \`await c.update(…)\` one at a time — every write is durable in storage before the next one ` +
          `starts, so each of the ${count(s.w1Updates)} writes is its own delta and storage append. Informational, ` +
          'no target.',
        ...heapNotes(medians).map(
          (note, i) =>
            note + (i === 0 ? ' Here measured with the pipelined replica alive, after its writes resolved.' : ''),
        ),
        'storage = `MemoryStorage.byteSize` of the pipelined replica after `close()`: the last compaction’s ' +
          'snapshot plus the log entries written since, as stored (so it moves with where compaction fell). Checks: after each mode no write is pending, the records equal W1’s expected ' +
          'final records, and a second replica opened from that storage after `close()` holds them too.',
        'floor: the same loops over async `put`/`update` that `Map.set` a fresh object — no validation, stamps, ' +
          'events or storage: the cost of the async API shape alone.',
      ]
    },
  },
}

/** "syncmesh ÷ peer" for one metric: N× faster/slower for throughput, a plain ratio for costs. */
function ratioPhrase(ratio: Ratio, mine: number, theirs: number): string {
  const r = mine / theirs
  if (!ratio.higherIsBetter) return `${formatRatio(r)} ${ratio.label}`
  return r >= 1 ? `${formatRatio(r)} faster ${ratio.label}` : `${formatRatio(1 / r)} slower ${ratio.label}`
}

/** Checks one target against syncmesh's medians (a missing measurement is a MISS). */
function evaluate(workload: WorkloadName, target: Target, m: Metrics | undefined, why: string): TargetResult {
  const limit = target.max ?? target.min ?? Number.NaN
  const text = `${target.label} ${target.max !== undefined ? '≤' : '≥'} ${target.format(limit)}`
  const value = m?.[target.key]
  if (value === undefined) return { workload, target: text, measured: `not measured (${why})`, pass: false }
  const pass = target.max !== undefined ? value <= target.max : value >= limit
  return { workload, target: text, measured: target.format(value), pass }
}

/** One workload's table, ratio lines, target line and footnotes. */
function renderSection(input: ReportInput, workload: WorkloadName): { lines: string[]; targets: TargetResult[] } {
  const section = SECTIONS[workload]
  const medians = new Map<SystemName, Metrics>()
  const notes: string[] = []
  const rows = input.systems.map((system) => {
    const m = input.medians.get(cellKey(system, workload))
    const problem = input.problems.get(cellKey(system, workload))
    const label = problem?.kind === 'skipped' ? 'n/a' : (problem?.kind ?? '—')
    if (m) medians.set(system, m)
    if (problem) notes.push(`${system}: ${label} — ${problem.message}`)
    return [system, ...section.columns.map((column) => (m ? column.cell(m, input.sizes) : label))]
  })
  const header = ['system', ...section.columns.map((column) => column.header)]
  const lines = [`## ${section.title(input.sizes)}`, '', markdownTable(header, rows), '']
  const targets: TargetResult[] = []
  if (input.systems.includes('syncmesh')) {
    const mine = medians.get('syncmesh')
    for (const [peer, theirs] of medians) {
      if (peer === 'syncmesh' || !mine) continue
      const phrases = section.ratios.map((r) => ratioPhrase(r, num(mine, r.key), num(theirs, r.key)))
      lines.push(`- syncmesh vs ${peer}: ${phrases.join(', ')}`)
    }
    const why = input.problems.get(cellKey('syncmesh', workload))?.kind ?? 'no result'
    targets.push(...section.targets.map((target) => evaluate(workload, target, mine, why)))
    const verdicts = targets.map((t) => `${t.target}: ${t.measured} **${t.pass ? 'PASS' : 'MISS'}**`)
    const asides = (section.asides ?? []).flatMap((a) =>
      mine ? [`${a.label}: ${a.format(num(mine, a.key))} (no target)`] : [],
    )
    lines.push(`- **syncmesh targets:** ${[...verdicts, ...asides].join(' · ')}`, '')
  }
  notes.push(...section.notes(medians, input.sizes))
  lines.push(...notes.map((note, i) => `${i + 1}. ${note}`), '')
  return { lines, targets }
}

/** Renders the full report (markdown) and evaluates syncmesh's targets. */
export function renderReport(input: ReportInput): { text: string; targets: TargetResult[] } {
  const out: string[] = [...input.header, '']
  const targets: TargetResult[] = []
  if (input.scale !== 1) {
    out.push(`> BENCH_SCALE=${input.scale}: all sizes scaled; the spec targets are meant for scale 1.`, '')
  }
  for (const workload of input.workloads) {
    const section = renderSection(input, workload)
    out.push(...section.lines)
    targets.push(...section.targets)
  }
  if (targets.length > 0) {
    const passed = targets.filter((t) => t.pass).length
    out.push(`**syncmesh targets: ${passed} PASS, ${targets.length - passed} MISS** (of ${targets.length} checked)`, '')
    out.push('Ratios are syncmesh ÷ peer (for heap, bytes and ms, below 1 means syncmesh uses less).')
  }
  return { text: out.join('\n'), targets }
}
