import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'

// The README's code blocks are these files, verbatim: running them here keeps the README's examples true.
const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
const examples = ['primitives.ts', 'replica-basics.ts']

describe('README examples', () => {
  for (const name of examples) {
    it(`${name} runs and appears verbatim in the README`, async () => {
      const source = readFileSync(new URL(`../examples/${name}`, import.meta.url), 'utf8')
      expect(readme.includes(source.trim()), `README.md must contain examples/${name} verbatim`).toBe(true)
      await import(`../examples/${name}`) // each example asserts its own claims with node:assert
    })
  }
})
