import { defineConfig } from 'tsup'

export default defineConfig({
  entry: {
    'src/index': 'src/index.ts',
    'crdt/index': 'crdt/index.ts',
    'transports/memory': 'transports/memory.ts',
    'transports/webrtc': 'transports/webrtc.ts',
    'transports/relay': 'transports/relay.ts',
    'src/server/index': 'src/server/index.ts',
    'src/cli': 'src/cli.ts',
    'src/testkit/index': 'src/testkit/index.ts',
    'src/storage/level': 'src/storage/level.ts',
    'src/storage/indexeddb': 'src/storage/indexeddb.ts',
    'src/storage/redis': 'src/storage/redis.ts',
  },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  splitting: true,
  treeshake: true,
  external: ['fast-check', 'classic-level', 'redis', 'ws', '@roamhq/wrtc'],
})
