#!/usr/bin/env node
/**
 * The `syncmesh` bin: `syncmesh serve [--host 127.0.0.1] [--port 4444]`, or `syncmesh serve --libp2p` for a libp2p
 * relay / rendezvous node (see `syncmesh --help`).
 * Runs as `node dist/src/cli.js serve` after a build and as `npx tsx src/cli.ts serve` from the sources.
 */
import { runCli } from './server/cli.js'

runCli(process.argv.slice(2)).then(
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
