/**
 * Bundles a browser entry point against the package's sources with esbuild, the way an app that imports `syncmesh`
 * gets bundled (but without a build of the package first): used by `npm run web`, the browser tests and the bundle
 * size benchmark.
 */
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { build, type BuildOptions, type Plugin } from 'esbuild'

const root = (p: string): string => fileURLToPath(new URL(`../../${p}`, import.meta.url))

/** The package's entry points, resolved to their sources. */
export const SOURCE_ALIASES: Record<string, string> = {
  syncmesh: root('src/index.ts'),
  'syncmesh/crdt': root('crdt/index.ts'),
  'syncmesh/testkit': root('src/testkit/index.ts'),
  'syncmesh/text': root('src/text/index.ts'),
  'syncmesh/storage/indexeddb': root('src/storage/indexeddb.ts'),
  'syncmesh/transports/webrtc': root('transports/webrtc/index.ts'),
  'syncmesh/transports/relay': root('transports/relay/index.ts'),
  'syncmesh/transports/broadcast': root('transports/broadcast.ts'),
  'syncmesh/transports/memory': root('transports/memory.ts'),
}

/** Resolves `syncmesh` and its subpaths to the sources (exact names only). */
const sources: Plugin = {
  name: 'syncmesh-sources',
  setup(b) {
    b.onResolve({ filter: /^syncmesh(\/.*)?$/ }, (args) => {
      const path = SOURCE_ALIASES[args.path]
      return path ? { path } : { errors: [{ text: `no source mapping for ${args.path}` }] }
    })
  },
}

/** A browser bundle: its JavaScript and the source files it took in. */
export interface Bundle {
  readonly js: string
  /** Every input file, relative to the repository root. */
  readonly inputs: string[]
}

/** Bundles `contents` (TypeScript, resolved from the repository root) for browsers. */
export async function bundleDetails(contents: string, options: Pick<BuildOptions, 'minify'> = {}): Promise<Bundle> {
  const out = await build({
    stdin: { contents, resolveDir: root(''), sourcefile: 'entry.ts', loader: 'ts' },
    plugins: [sources],
    bundle: true,
    write: false,
    metafile: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    // Node-only fallbacks the transports load with import() when a runtime lacks WebRTC or WebSocket globals.
    external: ['@roamhq/wrtc', 'ws'],
    logLevel: 'silent',
    ...options,
  })
  return { js: out.outputFiles[0]!.text, inputs: Object.keys(out.metafile.inputs) }
}

/** Bundles `contents` (TypeScript, resolved from the repository root) for browsers; returns the JavaScript. */
export async function bundleForBrowser(contents: string, options: Pick<BuildOptions, 'minify'> = {}): Promise<string> {
  return (await bundleDetails(contents, options)).js
}

/**
 * The web example's script. Its source is the bundle's entry itself: imported from another entry, esbuild would drop
 * it whole, since package.json declares the package free of side effects.
 */
export async function bundleWebApp(): Promise<string> {
  return bundleForBrowser(await readFile(root('examples/web/app.ts'), 'utf8'))
}
