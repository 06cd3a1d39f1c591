import { defineConfig } from 'tsup'

// dist/ is emptied by the build script, not by `clean`: the two configs build in parallel and would wipe each
// other's output.

/** Packages users install themselves (optional peer dependencies) or that must stay a single shared copy. */
const external = [
  'fast-check',
  'classic-level',
  'redis',
  'ws',
  '@roamhq/wrtc',
  'libp2p',
  /^@libp2p\//,
  /^@chainsafe\//,
  '@multiformats/multiaddr',
  'yjs',
]

const common = { dts: true, sourcemap: true, target: 'node20', splitting: true, treeshake: true, external } as const

export default defineConfig([
  {
    ...common,
    format: ['esm', 'cjs'],
    entry: {
      'src/index': 'src/index.ts',
      'crdt/index': 'crdt/index.ts',
      'transports/memory': 'transports/memory.ts',
      'transports/broadcast': 'transports/broadcast.ts',
      'transports/webrtc/index': 'transports/webrtc/index.ts',
      'transports/relay/index': 'transports/relay/index.ts',
      'src/server/index': 'src/server/index.ts',
      'src/cli': 'src/cli.ts',
      'src/testkit/index': 'src/testkit/index.ts',
      'src/text/index': 'src/text/index.ts',
      'src/storage/level': 'src/storage/level.ts',
      'src/storage/indexeddb': 'src/storage/indexeddb.ts',
      'src/storage/redis': 'src/storage/redis.ts',
    },
  },
  // libp2p v3 is ESM-only: this entry point has no CommonJS build.
  { ...common, format: ['esm'], entry: { 'transports/libp2p/index': 'transports/libp2p/index.ts' } },
])
