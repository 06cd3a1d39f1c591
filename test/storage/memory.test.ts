import { describe, it } from 'vitest'
import { MemoryStorage } from '../../src/storage/memory.js'
import type { Storage } from '../../src/storage/types.js'
import { storageConformanceCases } from '../../src/testkit/storage-suite.js'

/**
 * MemoryStorage is not durable, but a "reopen" that hands the same entries to a new instance models a restart on
 * the same files, so the reopen cases run too (the old instance stays closed).
 */
function reopen(s: Storage): Promise<Storage> {
  return (async () => {
    await s.close?.()
    const entries = (s as unknown as { entries: Map<string, unknown> }).entries
    return Object.assign(new MemoryStorage(), { entries }) as MemoryStorage
  })()
}

describe('MemoryStorage conformance', () => {
  for (const c of storageConformanceCases({ create: async () => new MemoryStorage(), reopen })) it(c.name, c.run)
})

describe('MemoryStorage conformance (harness without reopen)', () => {
  const cases = storageConformanceCases({ create: async () => new MemoryStorage() })
  it('skips the reopen cases and passes the rest', async () => {
    for (const c of cases) await c.run()
  })
})
