/**
 * Which source files one local write passes through until a remote subscriber hears it: two replicas on the memory
 * network, synced; V8 coverage counters are reset, one `put` runs until the other replica's `change` event fires,
 * and the files with any function run since are listed. Run: `npm run write-path` (sets NODE_V8_COVERAGE itself).
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { takeCoverage } from 'node:v8'

const root = join(fileURLToPath(import.meta.url), '../..')

if (!process.env.NODE_V8_COVERAGE) {
  const dir = mkdtempSync(join(tmpdir(), 'syncmesh-write-path-'))
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], { env: { ...process.env, NODE_V8_COVERAGE: dir }, stdio: 'inherit' })
  const reports = readdirSync(dir).filter((f) => f.endsWith('.json')).sort()
  // takeCoverage() writes one report per call: [after setup, after the write]; the process exit writes a third.
  const afterWrite = reports.map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as Report).find((rep) => rep.result.some((s) => s.url.endsWith('write-path.ts') && ran(s, 'measureOneWrite')))
  if (!afterWrite) throw new Error('no coverage report of the write')
  const files = afterWrite.result
    .filter((s) => s.url.startsWith('file://') && !s.url.includes('node_modules') && !s.url.includes('/bench/'))
    .filter((s) => s.functions.some((f) => f.ranges[0]!.count > 0 && f.functionName !== ''))
    .map((s) => relative(root, fileURLToPath(s.url)))
    .sort()
  console.log(`a local write passes through ${files.length} source files until a remote subscriber hears it:`)
  for (const f of files) {
    const s = afterWrite.result.find((x) => x.url.startsWith('file://') && relative(root, fileURLToPath(x.url)) === f)!
    const names = [...new Set(s.functions.filter((fn) => fn.ranges[0]!.count > 0 && fn.functionName !== '').map((fn) => fn.functionName))]
    console.log(`  ${f}${process.env.VERBOSE ? `: ${names.join(', ')}` : ''}`)
  }
  rmSync(dir, { recursive: true, force: true })
  process.exit(r.status ?? 1)
}

interface Report {
  result: { url: string; functions: { functionName: string; ranges: { count: number }[] }[] }[]
}
function ran(s: Report['result'][number], name: string): boolean {
  return s.functions.some((f) => f.functionName === name && f.ranges[0]!.count > 0)
}

const { createReplica } = await import('../src/index.js')
const { MemoryNetwork } = await import('../transports/memory.js')
const net = new MemoryNetwork()
const a = await createReplica({ peerId: 'a', transports: [net.transport()], antiEntropyMs: 0 })
const b = await createReplica({ peerId: 'b', transports: [net.transport()], antiEntropyMs: 0 })
await a.collection('notes').put({ id: 'warm-up', text: 'x' })
await a.sync()
await b.sync()
await new Promise((r) => setTimeout(r, 50))

async function measureOneWrite(): Promise<void> {
  const heard = new Promise<void>((resolve) => b.on('change', () => resolve()))
  await a.collection('notes').put({ id: 'n1', text: 'hello' })
  await heard
}
takeCoverage() // resets the counters: what follows is the write alone
await measureOneWrite()
takeCoverage()
await a.close()
await b.close()
