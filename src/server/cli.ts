/**
 * The `syncmesh` command line, kept apart from the bin file (`src/cli.ts`) so that it can be imported and tested
 * without side effects. No dependencies: argv is parsed by hand.
 */
import { startServer, type ServerInit, type SyncmeshServer } from './index.js'
import type { Libp2pRelay, Libp2pRelayInit } from './libp2p.js'

/** Text of `syncmesh --help`. */
export const HELP = `Usage: syncmesh serve [options]
       syncmesh serve --libp2p [libp2p options]
       syncmesh inspect <leveldb dir> [--json]

Runs one process that is both a y-webrtc-compatible signaling server and the
syncmesh relay (transports/relay), on one port. GET /health reports status.

Options:
  --host <addr>              interface to bind (default 127.0.0.1; anything else
                             exposes the server to the network)
  --port <n>                 TCP port, 0 for any free one (default 4444)
  --max-message-bytes <n>    largest WebSocket message accepted (default 131072)
  --rate <n>                 ops per second per connection (default 1000)
  --bytes-per-second <n>     bytes per second per connection (default 4194304)
  --ping-interval <ms>       WebSocket ping interval; clients silent for two
                             intervals are dropped (default 30000)
  --max-connections <n>      simultaneous connections (default 10000)
  --max-topics <n>           signaling topics per connection (default 256)
  --max-buffered-bytes <n>   send buffer per connection above which messages
                             to it are dropped (default 8388608)
  --slow-consumer-ms <ms>    a connection over --max-buffered-bytes this long
                             is cut off as a slow consumer (default 10000)
  --store <dir|redis://…>    store-and-forward: keep what members upload, per
                             room, in a LevelDB directory or a Redis server, and
                             serve it to members that join later (blind: in an
                             encrypted room it holds sealed bytes only)
  --max-room-bytes <n>       stored bytes per room (default 67108864)
  --max-store-bytes <n>      stored bytes in all (default: no limit)
  --token <t>                a relay JOIN must carry this access token (repeat
                             the option to accept several; SYNCMESH_TOKENS, comma
                             separated, adds more)
  --redis <redis://…>        share rooms with every other server started with
                             the same --redis (scale-out over Redis pub/sub)
  --quiet                    do not log connection events
  -h, --help                 show this help

The URL is printed on stdout once listening; connection events are logged to
stderr, one line each. SIGINT / SIGTERM close every connection and exit.

With --libp2p: a libp2p relay and rendezvous node instead (circuit-relay-v2
server, identify, gossipsub following syncmesh room topics; TCP and WebSockets).
Give its addresses to peers as libp2pTransport({ relay, bootstrap }). Needs the
optional peer dependencies libp2p, @libp2p/tcp, @libp2p/websockets,
@chainsafe/libp2p-noise, @chainsafe/libp2p-yamux, @libp2p/identify,
@libp2p/circuit-relay-v2 and @libp2p/gossipsub.

libp2p options:
  --host <addr>              IP address to listen on (default 127.0.0.1)
  --port <n>                 TCP port, 0 for any free one (default 4001)
  --ws-port <n>              WebSockets port (default port + 1, or 0)
  --max-reservations <n>     relay reservations held at once (default 256)
  --relay-data-limit <n>     bytes per relayed connection (default 131072)
  --relay-duration <ms>      lifetime of a relayed connection (default 120000)
  --quiet                    do not log connection events

The multiaddrs are printed on stdout, one per line, once listening.

inspect: prints a replica's LevelDB store (identity, version vector, record
counts, entries, size on disk) from a copy of its files, so the store is never
opened for writing, even while a replica has it open.
`

/** What the command line asks for. */
export type CliCommand =
  | { readonly kind: 'help' }
  | { readonly kind: 'serve'; readonly options: ServerInit; readonly quiet: boolean }
  | { readonly kind: 'serve-libp2p'; readonly options: Libp2pRelayInit; readonly quiet: boolean }
  | { readonly kind: 'error'; readonly message: string }

const NUMERIC: Record<string, { key: keyof ServerInit; min: number; max: number }> = {
  '--port': { key: 'port', min: 0, max: 65535 },
  '--max-message-bytes': { key: 'maxMessageBytes', min: 1024, max: 0xffffffff },
  '--rate': { key: 'ratePerSecond', min: 1, max: 0xffffffff },
  '--bytes-per-second': { key: 'bytesPerSecond', min: 1, max: 0xffffffff },
  '--ping-interval': { key: 'pingIntervalMs', min: 10, max: 86_400_000 },
  '--max-connections': { key: 'maxConnections', min: 1, max: 0xffffffff },
  '--max-topics': { key: 'maxTopicsPerConnection', min: 1, max: 0xffffffff },
  '--max-buffered-bytes': { key: 'maxBufferedBytes', min: 1024, max: 0xffffffff },
  '--slow-consumer-ms': { key: 'slowConsumerMs', min: 10, max: 86_400_000 },
  '--max-room-bytes': { key: 'maxRoomBytes', min: 1024, max: Number.MAX_SAFE_INTEGER },
  '--max-store-bytes': { key: 'maxStoreBytes', min: 1024, max: Number.MAX_SAFE_INTEGER },
}

/** Options that take a string: where each goes in ServerInit (`tokens` collects every occurrence). */
const STRINGS: Record<string, 'store' | 'tokens' | 'redis'> = { '--store': 'store', '--token': 'tokens', '--redis': 'redis' }

const NUMERIC_LIBP2P: Record<string, { key: keyof Libp2pRelayInit; min: number; max: number }> = {
  '--port': { key: 'port', min: 0, max: 65535 },
  '--ws-port': { key: 'wsPort', min: 0, max: 65535 },
  '--max-reservations': { key: 'maxReservations', min: 1, max: 1_000_000 },
  '--relay-data-limit': { key: 'relayDataLimit', min: 1024, max: Number.MAX_SAFE_INTEGER },
  '--relay-duration': { key: 'relayDurationMs', min: 1000, max: 2 ** 31 - 1 },
}

/** Parses `argv` (without `node` and the script path). */
export function parseCli(argv: readonly string[]): CliCommand {
  const args = [...argv]
  const command = args.shift()
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') return { kind: 'help' }
  if (command !== 'serve') return { kind: 'error', message: `unknown command ${JSON.stringify(command)}` }
  const libp2p = args.includes('--libp2p')
  const numeric = libp2p ? NUMERIC_LIBP2P : NUMERIC
  const options: Record<string, unknown> = {}
  let quiet = false
  while (args.length > 0) {
    const arg = args.shift()!
    if (arg === '-h' || arg === '--help') return { kind: 'help' }
    if (arg === '--quiet') {
      quiet = true
      continue
    }
    if (arg === '--libp2p') continue
    const eq = arg.indexOf('=')
    const name = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg
    const inline = arg.startsWith('--') && eq > 0 ? arg.slice(eq + 1) : undefined
    const stringOption = libp2p ? undefined : STRINGS[name]
    if (name !== '--host' && numeric[name] === undefined && stringOption === undefined) {
      return { kind: 'error', message: `unknown option ${JSON.stringify(arg)}${libp2p ? ' (with --libp2p)' : ''}` }
    }
    const value = inline ?? args.shift()
    if (value === undefined || value === '' || (inline === undefined && value.startsWith('--'))) {
      return { kind: 'error', message: `${name} needs a value` }
    }
    if (stringOption === 'tokens') {
      options['tokens'] = [...((options['tokens'] as string[] | undefined) ?? []), value]
      continue
    }
    if (stringOption !== undefined) {
      options[stringOption] = value
      continue
    }
    if (name === '--host') {
      if (libp2p && !/^[0-9a-fA-F.:]+$/.test(value)) return { kind: 'error', message: `--host must be an IP address with --libp2p, got ${JSON.stringify(value)}` }
      options['host'] = value
      continue
    }
    const spec = numeric[name]!
    if (!/^\d+$/.test(value)) return { kind: 'error', message: `${name} must be a whole number, got ${JSON.stringify(value)}` }
    const n = Number(value)
    if (n < spec.min || n > spec.max) return { kind: 'error', message: `${name} must be in ${spec.min}..${spec.max}, got ${n}` }
    options[spec.key] = n
  }
  if (libp2p) return { kind: 'serve-libp2p', options: options as Libp2pRelayInit, quiet }
  return { kind: 'serve', options: options as ServerInit, quiet }
}

/** Where the CLI writes and how it waits for shutdown; replaced in tests. */
export interface CliIO {
  out(line: string): void
  err(line: string): void
  /** Resolves when the process is asked to stop (SIGINT / SIGTERM). */
  stopSignal(): Promise<string>
}

const processIO: CliIO = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  stopSignal: () =>
    new Promise((resolve) => {
      const on = (signal: string): void => {
        process.off('SIGINT', on)
        process.off('SIGTERM', on)
        resolve(signal)
      }
      process.on('SIGINT', on)
      process.on('SIGTERM', on)
    }),
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost'])

/** Runs the command line; resolves with the exit code. */
export async function runCli(argv: readonly string[], io: CliIO = processIO): Promise<number> {
  const cmd = parseCli(argv)
  if (cmd.kind === 'help') {
    io.out(HELP.trimEnd())
    return 0
  }
  if (cmd.kind === 'error') {
    io.err(`syncmesh: ${cmd.message}\n\n${HELP.trimEnd()}`)
    return 2
  }
  const host = cmd.options.host ?? '127.0.0.1'
  if (!LOOPBACK.has(host) && !host.startsWith('127.')) {
    io.err(`syncmesh: warning: binding ${host} exposes the server beyond this machine`)
  }
  if (cmd.kind === 'serve-libp2p') return serveLibp2p(cmd.options, cmd.quiet, io)
  let server: SyncmeshServer
  try {
    const envTokens = (process.env['SYNCMESH_TOKENS'] ?? '').split(',').filter((t) => t !== '')
    const tokens = [...(cmd.options.tokens ?? []), ...envTokens]
    server = await startServer({ ...cmd.options, tokens: tokens.length > 0 ? tokens : undefined, log: cmd.quiet ? false : (line) => io.err(line) })
  } catch (error) {
    const e = error as NodeJS.ErrnoException
    io.err(`syncmesh: cannot listen on ${host}:${cmd.options.port ?? 4444}: ${e.code ?? ''} ${e.message}`.trim())
    return 1
  }
  const httpUrl = server.url.replace(/^ws/, 'http')
  io.out(`syncmesh signaling + relay server listening on ${server.url} (health: ${httpUrl}/health)`)
  const signal = await io.stopSignal()
  io.err(`syncmesh: ${signal}, closing`)
  await server.close()
  return 0
}

/** `serve --libp2p`: the relay / rendezvous node of src/server/libp2p.ts, loaded (with libp2p) only when asked for. */
async function serveLibp2p(options: Libp2pRelayInit, quiet: boolean, io: CliIO): Promise<number> {
  let relay: Libp2pRelay
  try {
    const { startLibp2pRelay } = await import('./libp2p.js')
    relay = await startLibp2pRelay({ ...options, log: quiet ? undefined : (line) => io.err(`${new Date().toISOString()} ${line}`) })
  } catch (error) {
    const e = error as NodeJS.ErrnoException
    if (e.code === 'LIBP2P_MISSING') {
      io.err(`syncmesh: ${e.message}`)
      return 1
    }
    io.err(`syncmesh: cannot start the libp2p relay on ${options.host ?? '127.0.0.1'}:${options.port ?? 4001}: ${e.code ?? ''} ${e.message}`.trim())
    return 1
  }
  io.err(`syncmesh libp2p relay ${relay.peerId} listening (circuit-relay-v2, gossipsub rendezvous); addresses on stdout`)
  for (const addr of relay.multiaddrs) io.out(addr)
  const signal = await io.stopSignal()
  io.err(`syncmesh: ${signal}, closing`)
  await relay.close()
  return 0
}
