import { defineConfig } from 'tsup'

export default defineConfig({
  entry: {
    'src/index': 'src/index.ts',
    'crdt/index': 'crdt/index.ts',
  },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  splitting: true,
  treeshake: true,
})
