/**
 * The write, encode and merge paths keep their optimised code across full garbage collections (crdt/bytes.ts
 * holdShape): without it, V8 frees the hidden classes of the objects those paths make per call whenever none is
 * alive, and every major collection between two bursts sends them back to the interpreter.
 */
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const CHILD = fileURLToPath(new URL('./held-shapes-child.ts', import.meta.url))
const REPO = fileURLToPath(new URL('../..', import.meta.url))

describe('optimised code across garbage collections', () => {
  it('put, encodeChangesOf, applyEncoded and newestInDelta stay optimised after two full collections', () => {
    const child = spawnSync(process.execPath, ['--expose-gc', '--allow-natives-syntax', '--import', 'tsx', CHILD], {
      cwd: REPO,
      encoding: 'utf8',
      env: { ...process.env, NODE_OPTIONS: '' },
      timeout: 60_000,
    })
    expect(child.status, child.stderr).toBe(0)
    const { before, after } = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as { before: string[]; after: string[] }
    const paths = ['put', 'encodeChangesOf', 'applyEncoded', 'newestInDelta']
    // Forced optimisation must have worked, or the check below proves nothing (a V8 whose status bits moved).
    expect(before, 'TurboFan did not optimise the paths: has V8 moved its OptimizationStatus bits?').toEqual(paths)
    expect(after).toEqual(paths)
  })
})
