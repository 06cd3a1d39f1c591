/**
 * `syncmesh inspect <leveldb dir>`, run as a process the way a user runs it: it prints a store's identity, vector,
 * record counts and size from a copy, so it works while a replica has the store open and never changes it.
 */
import { execFile } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { createReplica } from '../../src/index.js'
import type { StoreReport } from '../../src/inspect-store.js'
import { levelStorage } from '../../src/storage/level.js'

const REPO = fileURLToPath(new URL('../..', import.meta.url))
const run = promisify(execFile)

/** Runs the CLI; resolves with its exit code and output (never rejects on a non-zero exit). */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'inspect', ...args], { cwd: REPO })
    return { code: 0, stdout, stderr }
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string }
    return { code: err.code, stdout: err.stdout, stderr: err.stderr }
  }
}

/** Every file of a directory with its bytes. */
async function snapshotDir(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const f of await readdir(dir)) out[f] = (await readFile(join(dir, f))).toString('base64')
  return out
}

const dirs: string[] = []
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
})
const tmp = async (): Promise<string> => {
  const d = await mkdtemp(join(tmpdir(), 'syncmesh-inspect-test-'))
  dirs.push(d)
  return d
}

describe('syncmesh inspect', () => {
  it('prints identity, vector, record counts and size, while the store is open elsewhere, without changing a byte of it', async () => {
    const dir = await tmp()
    const replica = await createReplica({ peerId: 'laptop', storage: levelStorage(dir) })
    const todos = replica.collection('todos')
    for (let i = 0; i < 20; i++) await todos.put({ id: `t${i}`, title: `todo ${i}` })
    for (let i = 0; i < 5; i++) await todos.delete(`t${i}`)
    await replica.collection('notes').put({ id: 'n', text: 'hi' })
    const before = await snapshotDir(dir)

    const text = await cli(dir)
    expect(text.code).toBe(0)
    expect(text.stdout).toContain('peer id    laptop')
    expect(text.stdout).toMatch(/todos {2}15 \/ 5/)
    expect(text.stdout).toMatch(/notes {2}1 \/ 0/)
    const json = await cli(dir, '--json')
    expect(json.code).toBe(0)
    const report = JSON.parse(json.stdout) as StoreReport
    expect(report).toMatchObject({ peerId: 'laptop', collections: { todos: { visible: 15, deleted: 5 }, notes: { visible: 1, deleted: 0 } } })
    expect(Object.keys(report.vector)).toEqual([report.writerId])
    expect(report.diskBytes).toBeGreaterThan(0)
    expect(report.entries['log']!.count).toBeGreaterThan(0)

    expect(await snapshotDir(dir)).toEqual(before) // not a byte changed, LOCK included
    await todos.put({ id: 'after', title: 'the replica still writes' }) // and it still holds its store
    await replica.close()
    const after = JSON.parse((await cli(dir, '--json')).stdout) as StoreReport
    expect(after.collections['todos']).toEqual({ visible: 16, deleted: 5 })
  })

  it('fails with a clear message and exit code for no store, a missing directory, and bad usage', async () => {
    const empty = await tmp()
    const none = await cli(empty)
    expect(none.code).toBe(1)
    expect(none.stderr).toContain('StorageCorruptError')
    expect(none.stderr).toContain('holds no LevelDB store')
    expect(await readdir(empty)).toEqual([]) // nothing was created there
    const missing = await cli(join(empty, 'nope'))
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain('ENOENT')
    const usage = await cli()
    expect(usage.code).toBe(2)
    expect(usage.stderr).toContain('Usage: syncmesh inspect <leveldb dir>')
  })
})
