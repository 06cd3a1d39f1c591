#!/usr/bin/env node
/**
 * The `syncmesh` bin: `syncmesh serve [--host 127.0.0.1] [--port 4444]`, or `syncmesh serve --libp2p` for a libp2p
 * relay / rendezvous node, or `syncmesh inspect <leveldb dir>` (see `syncmesh --help`).
 * Runs as `node dist/src/cli.js serve` after a build and as `npx tsx src/cli.ts serve` from the sources.
 */
import { runCli } from './server/cli.js'

const argv = process.argv.slice(2)
const io = { out: (s: string) => process.stdout.write(`${s}\n`), err: (s: string) => process.stderr.write(`${s}\n`) }
// inspect loads LevelDB (an optional peer dependency) only when asked for.
const run = argv[0] === 'inspect' ? import('./inspect-store.js').then((m) => m.runInspect(argv.slice(1), io)) : runCli(argv)
run.then(
  (code) => {
    process.exitCode = code
    // Everything is closed by now; a stray handle must not keep a stopped server's process alive.
    if (code === 0) setTimeout(() => process.exit(code), 2000).unref()
  },
  (error: unknown) => {
    process.stderr.write(`syncmesh: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exit(1)
  },
)
