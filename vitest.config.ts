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
  },
})
