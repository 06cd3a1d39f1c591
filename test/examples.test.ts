import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

// The README's code blocks are these files, verbatim: running them here keeps the README's examples true.
const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
const examples = ['primitives.ts', 'replica-basics.ts', 'encrypted-room.ts', 'text-fields.ts']

describe('README examples', () => {
  for (const name of examples) {
    it(`${name} runs and appears verbatim in the README`, async () => {
      const source = readFileSync(new URL(`../examples/${name}`, import.meta.url), 'utf8')
      expect(readme.includes(source.trim()), `README.md must contain examples/${name} verbatim`).toBe(true)
      await import(`../examples/${name}`) // each example asserts its own claims with node:assert
    })
  }

  it('the quick start demo (`npm start`: a server, three peer processes and an intruder) converges and exits 0', async () => {
    const demo = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('../examples/demo.ts', import.meta.url))], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    demo.stdout.on('data', (d: Buffer) => (out += d.toString()))
    demo.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const timer = setTimeout(() => demo.kill('SIGKILL'), 90_000)
    const code = await new Promise<number | null>((resolve) => demo.once('exit', resolve))
    clearTimeout(timer)
    expect(code, out).toBe(0)
    expect(out).toContain('All replicas identical: yes')
    // Writes made while apart reach every peer, and the losing side of the same-field race is reported.
    expect(out).toMatch(/alice +✗ conflict on milk\.title: "Buy oat milk" lost to "Buy soy milk"/)
    expect(out).toMatch(/alice +bike:— ✔ \| milk:Buy soy milk @carol/)
    // The room is encrypted: the peer with the wrong passphrase is told so and holds nothing.
    expect(out).toMatch(/mallory ! AuthError/)
    expect(out).toContain('mallory (wrong passphrase) holds 0 todos')
  }, 120_000)
})
