import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url))

export default defineConfig({
  resolve: {
    // Examples and README snippets import the package by name; tests run them against the sources.
    alias: [
      { find: /^syncmesh\/crdt$/, replacement: here('./crdt/index.ts') },
      { find: /^syncmesh\/testkit$/, replacement: here('./src/testkit/index.ts') },
      { find: /^syncmesh\/text$/, replacement: here('./src/text/index.ts') },
      { find: /^syncmesh\/server$/, replacement: here('./src/server/index.ts') },
      { find: /^syncmesh\/storage\/(.*)$/, replacement: here('./src/storage/$1.ts') },
      // A transport split into modules is a folder with an index.ts; the others are one file.
      { find: /^syncmesh\/transports\/(libp2p|relay|webrtc)$/, replacement: here('./transports/$1/index.ts') },
      { find: /^syncmesh\/transports\/(.*)$/, replacement: here('./transports/$1.ts') },
      { find: /^syncmesh$/, replacement: here('./src/index.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts', 'property-tests/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Vitest's default is one worker fewer than the cores: a single worker on a 2-core machine, where the suite took
    // 375 s with files one after another. Most files wait on sockets, child processes and browsers, so two workers
    // share two cores well (the same suite: 229–253 s).
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
})
