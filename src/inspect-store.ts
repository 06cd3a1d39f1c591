/**
 * `syncmesh inspect <leveldb dir> [--json]`: what a replica's LevelDB store holds — its identity, version vector,
 * record counts, entries and size — without opening it for writing. LevelDB has no read-only mode (opening replays
 * and rewrites its log, and takes the directory's lock), so the store's files are copied to a temporary directory
 * and the copy is opened; the original is only read, even while a replica has it open.
 */
import { cp, mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { asError } from '../crdt/errors.js'
import type { Timestamp } from '../crdt/timestamp.js'
import { StorageCorruptError } from './errors.js'
import { vectorSnapshot, type VectorSnapshot } from './inspect.js'
import { Persistence } from './persistence.js'
import { levelStorage } from './storage/level.js'

/** What {@link inspectLevelStore} reports. */
export interface StoreReport {
  readonly dir: string
  readonly peerId: string | undefined
  readonly writerId: string | undefined
  readonly vector: VectorSnapshot
  /** Per collection, visible records and deleted ones still kept. */
  readonly collections: Record<string, { visible: number; deleted: number }>
  /** Stored entries by kind (`snapshot`, `log`, `meta`, …) with their bytes. */
  readonly entries: Record<string, { count: number; bytes: number }>
  /** Bytes of the store's files on disk. */
  readonly diskBytes: number
}

/** Reads a copy of the LevelDB store at `dir`; throws StorageCorruptError for a damaged store or no store at all. */
export async function inspectLevelStore(dir: string): Promise<StoreReport> {
  const files = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    throw new StorageCorruptError(`cannot read ${dir}: ${err.code ?? err.message}`, [], { cause: err })
  })
  if (!files.includes('CURRENT')) throw new StorageCorruptError(`${dir} holds no LevelDB store (no CURRENT file)`, [])
  let diskBytes = 0
  for (const f of files) diskBytes += (await stat(join(dir, f))).size
  const copy = await mkdtemp(join(tmpdir(), 'syncmesh-inspect-'))
  try {
    await cp(dir, copy, { recursive: true, filter: (src) => !src.endsWith('/LOCK') })
    const storage = levelStorage(copy)
    try {
      const entries: Record<string, { count: number; bytes: number }> = {}
      for (const { key, data } of await storage.loadRange([])) {
        const kind = key[0] === 'tabs' ? `tabs/${key[2] ?? ''}` : (key[0] ?? '')
        const e = (entries[kind] ??= { count: 0, bytes: 0 })
        e.count++
        e.bytes += data.byteLength
      }
      const { store, peerId, writerId } = await Persistence.open(storage)
      const collections: StoreReport['collections'] = {}
      for (const name of store.collections()) collections[name] = store.count(name)
      return { dir, peerId, writerId, vector: vectorSnapshot(store.versionVector()), collections, entries, diskBytes }
    } finally {
      await storage.close()
    }
  } finally {
    await rm(copy, { recursive: true, force: true })
  }
}

const time = (ts: Timestamp): string => `${new Date(ts.wall).toISOString()} #${ts.counter}`

/** The report as text for people. */
export function formatStoreReport(r: StoreReport): string {
  const lines = [`store      ${r.dir}`, `peer id    ${r.peerId ?? '(none)'}`, `writer id  ${r.writerId ?? '(none)'}`, `on disk    ${r.diskBytes} bytes`, '', 'version vector (origin → newest write held):']
  const origins = Object.keys(r.vector).sort()
  for (const o of origins) lines.push(`  ${o}  ${time(r.vector[o]!)}`)
  if (origins.length === 0) lines.push('  (empty)')
  lines.push('', 'collections (visible / deleted but kept):')
  const names = Object.keys(r.collections).sort()
  for (const n of names) lines.push(`  ${n}  ${r.collections[n]!.visible} / ${r.collections[n]!.deleted}`)
  if (names.length === 0) lines.push('  (none)')
  lines.push('', 'entries (count, bytes):')
  for (const [kind, e] of Object.entries(r.entries).sort()) lines.push(`  ${kind}  ${e.count}, ${e.bytes}`)
  return lines.join('\n')
}

/** `syncmesh inspect` on its arguments; resolves with the exit code. */
export async function runInspect(argv: readonly string[], io: { out(s: string): void; err(s: string): void }): Promise<number> {
  const json = argv.includes('--json')
  const dirs = argv.filter((a) => a !== '--json')
  if (dirs.length !== 1 || dirs[0]!.startsWith('-')) {
    io.err('Usage: syncmesh inspect <leveldb dir> [--json]')
    return 2
  }
  try {
    const report = await inspectLevelStore(dirs[0]!)
    io.out(json ? JSON.stringify(report, null, 2) : formatStoreReport(report))
    return 0
  } catch (err) {
    const e = asError(err)
    io.err(`syncmesh inspect: ${e.name}: ${e.message}`)
    return 1
  }
}
