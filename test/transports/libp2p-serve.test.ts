/**
 * `npx syncmesh serve --libp2p`: the command line, and the relay run as a process, with replicas that can reach each
 * other only through it (found through its gossipsub, connected through its circuit relay, under its default
 * 128 KiB / 2 min limits), including a sync several times larger than one relayed connection may carry.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { afterAll, describe, expect, it } from 'vitest'
import { createReplica, type Replica } from '../../src/index.js'
import { HELP, parseCli } from '../../src/server/cli.js'
import { LIBP2P_PACKAGES, Libp2pMissingError } from '../../src/server/libp2p.js'
import { type Libp2pTransport, libp2pTransport } from '../../transports/libp2p/index.js'
import { until } from './libp2p-room.js'

const REPO = fileURLToPath(new URL('../..', import.meta.url))

const children: ChildProcess[] = []
const replicas: Replica[] = []
afterAll(async () => {
  await Promise.allSettled(replicas.splice(0).map((r) => r.close()))
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
})

/** Starts `syncmesh serve --libp2p` as a process; resolves with its TCP multiaddr once it printed it. */
async function serve(): Promise<{ child: ChildProcess; addr: string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--libp2p', '--port', '0', '--quiet'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
  let err = ''
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  const addr = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no multiaddr printed within 30 s: ${err}`)), 30_000)
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('/tcp/') && !line.includes('/ws')) {
        clearTimeout(timer)
        resolve(line.trim())
      }
    })
    void exited.then((code) => reject(new Error(`serve --libp2p exited with ${code}: ${err}`)))
  })
  return { child, addr, exited }
}

/** A transport that can dial nothing but the relay, and listens only through it. */
function behindNat(relayAddr: string, init: { redialMs?: number } = {}): Libp2pTransport {
  const relayPort = /\/tcp\/(\d+)/.exec(relayAddr)![1]!
  return libp2pTransport({
    listen: [],
    relay: [relayAddr],
    bootstrap: [relayAddr],
    announceIntervalMs: 1000,
    redialMs: init.redialMs ?? 200,
    libp2p: { connectionGater: { denyDialMultiaddr: (ma) => !ma.toString().includes(`/tcp/${relayPort}/`) && !ma.toString().endsWith(`/tcp/${relayPort}`) } },
  })
}

describe('syncmesh serve --libp2p: command line', () => {
  it('parses --libp2p and its options, and refuses the others', () => {
    expect(parseCli(['serve', '--libp2p'])).toEqual({ kind: 'serve-libp2p', options: {}, quiet: false })
    expect(parseCli(['serve', '--port', '4101', '--libp2p', '--ws-port=4102', '--host', '::1', '--quiet'])).toEqual({
      kind: 'serve-libp2p',
      options: { port: 4101, wsPort: 4102, host: '::1' },
      quiet: true,
    })
    expect(parseCli(['serve', '--libp2p', '--relay-data-limit', '65536', '--relay-duration', '60000', '--max-reservations', '9'])).toEqual({
      kind: 'serve-libp2p',
      options: { relayDataLimit: 65536, relayDurationMs: 60000, maxReservations: 9 },
      quiet: false,
    })
    expect(parseCli(['serve', '--libp2p', '--rate', '5'])).toMatchObject({ kind: 'error', message: expect.stringContaining('--rate') })
    expect(parseCli(['serve', '--libp2p', '--host', 'localhost'])).toMatchObject({ kind: 'error', message: expect.stringContaining('IP address') })
    expect(parseCli(['serve', '--libp2p', '--relay-data-limit', '10'])).toMatchObject({ kind: 'error', message: expect.stringContaining('1024') })
    expect(parseCli(['serve', '--libp2p', '--port'])).toMatchObject({ kind: 'error', message: '--port needs a value' })
    expect(parseCli(['serve', '--ws-port', '1'])).toMatchObject({ kind: 'error', message: expect.stringContaining('--ws-port') })
    expect(HELP).toContain('--libp2p')
  })

  it('names the packages to install when libp2p is missing', () => {
    const e = new Libp2pMissingError(['@libp2p/gossipsub'])
    expect(e.name).toBe('Libp2pMissingError')
    expect(e.code).toBe('LIBP2P_MISSING')
    expect(e.message).toContain('@libp2p/gossipsub')
    for (const p of LIBP2P_PACKAGES) expect(e.message).toContain(p)
  })
})

describe('the libp2p example', () => {
  it('appears verbatim in the README (it is interactive, so it is not run here)', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
    const source = readFileSync(new URL('../../examples/libp2p-peers.ts', import.meta.url), 'utf8')
    expect(readme.includes(source.trim()), 'README.md must contain examples/libp2p-peers.ts verbatim').toBe(true)
    expect(readme).toContain('npx syncmesh serve --libp2p')
  })
})

describe('syncmesh serve --libp2p: a relay process', () => {
  it('two replicas that can reach each other only through it sync; a 1 MB state crosses its 128 KiB connections by resuming', async () => {
    const { child, addr, exited } = await serve()
    expect(addr).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/12D3Koo/)

    const tB = behindNat(addr)
    const rB = await createReplica({ peerId: 'nat-b', room: 'serve-libp2p', transports: [tB], antiEntropyMs: 2000 })
    replicas.push(rB)
    // About 1 MB of records, eight times what one relayed connection may carry (128 KiB, both directions).
    const blob = 'x'.repeat(1000)
    const N = 1000
    await Promise.all(Array.from({ length: N }, (_, k) => rB.collection('todos').put({ id: `big-${k}`, blob, k } as never)))
    await until(() => tB.multiaddrs.some((a) => a.includes('/p2p-circuit')), 10_000, 'a relay reservation for B')

    const tA = behindNat(addr)
    const rA = await createReplica({ peerId: 'nat-a', room: 'serve-libp2p', transports: [tA], antiEntropyMs: 2000 })
    replicas.push(rA)
    // A knows only the relay: it finds B through the relay's gossipsub and dials B's circuit address.
    await until(() => rA.collection('todos').all().length === N, 90_000, `the ${N} records to cross the relay`)
    expect(tA.connection('nat-b')?.limited ?? true).toBe(true)
    const sent = tB.stats().bytesSent
    const limited = tB.stats().limitedSessions
    const payload = N * 1000
    console.log(`[serve --libp2p] 1 MB over a 128 KiB-per-connection relay: ${limited} relayed sessions, ${sent} bytes sent by B for ${payload} bytes of record values (${(sent / payload).toFixed(3)}×)`)
    expect(limited).toBeGreaterThanOrEqual(8)
    expect(sent / payload).toBeLessThanOrEqual(1.3)

    // Both write; both converge, through the relay.
    await rA.collection('todos').put({ id: 'from-a' } as never)
    await rB.collection('todos').put({ id: 'from-b' } as never)
    await until(() => rA.collection('todos').get('from-b') !== undefined && rB.collection('todos').get('from-a') !== undefined, 30_000, 'writes both ways')

    child.kill('SIGTERM')
    expect(await exited).toBe(0)
  }, 150_000)
})
