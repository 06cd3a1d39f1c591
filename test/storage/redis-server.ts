/**
 * A `redis-server` of the tests' own (Debian package `redis-server`) on 127.0.0.1, with an append-only file fsynced
 * on every write, restartable on the same port and directory. Used by the Redis storage tests.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createClient } from 'redis'
import { afterAll, beforeAll } from 'vitest'
import type { AnyRedisClient } from '../../src/storage/redis.js'

/** The Debian package's binary; `REDIS_SERVER=/path/to/redis-server` points elsewhere (e.g. Homebrew). */
export const REDIS_SERVER = process.env.REDIS_SERVER ?? '/usr/bin/redis-server'
/** Whether the binary is there (the Redis tests are skipped without it, except under CI). */
export const available = existsSync(REDIS_SERVER)
if (!available) {
  console.warn(
    `\n!!! ${REDIS_SERVER} not found: SKIPPING the Redis storage tests (test/storage/redis*.test.ts).\n` +
      '!!! Install it with: apt-get install redis-server   (CI must have it: there a missing binary fails the run)\n',
  )
}

/** A free TCP port on 127.0.0.1 (bound by a throwaway server, then released). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo
      srv.close(() => resolve(port))
    })
  })
}

/** Resolves true once the server answers PING with PONG (not LOADING), false if it cannot be reached now. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port })
    let buf = ''
    const done = (ok: boolean): void => {
      sock.destroy()
      resolve(ok)
    }
    sock.setTimeout(500, () => done(false))
    sock.on('error', () => done(false))
    sock.on('connect', () => sock.write('PING\r\n'))
    sock.on('data', (d) => {
      buf += d.toString('latin1')
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'))
    })
  })
}

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** One redis-server process on 127.0.0.1 with AOF (`appendfsync always`), restartable on the same port and directory. */
export class RedisServer {
  /** The data directory (AOF), made at the first start: a skipped suite still builds this object, and leaves nothing. */
  private dataDir: string | undefined
  port = 0
  private proc: ChildProcess | undefined
  private log = ''

  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }

  /** Starts the server (on a fresh free port the first time, on the same port afterwards) and waits for PONG. */
  async start(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (this.port === 0 || attempt > 0) this.port = await freePort()
      try {
        await this.spawnOnce()
        return
      } catch (err) {
        // A port taken between freePort() and the bind: try another one (only on the first start).
        if (attempt >= 2 || !/already in use/i.test(this.log)) throw err
      }
    }
  }

  private async spawnOnce(): Promise<void> {
    this.log = ''
    this.dataDir ??= mkdtempSync(join(tmpdir(), 'syncmesh-redis-'))
    const args = ['--bind', '127.0.0.1', '--port', String(this.port), '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--dir', this.dataDir, '--daemonize', 'no', '--protected-mode', 'yes']
    const proc = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    this.proc = proc
    const append = (d: Buffer): void => {
      this.log = (this.log + d.toString()).slice(-4000)
    }
    proc.stdout!.on('data', append)
    proc.stderr!.on('data', append)
    let exited = false
    proc.once('exit', () => {
      exited = true
    })
    const deadline = Date.now() + 10_000
    while (!(await ping(this.port))) {
      if (exited) throw new Error(`redis-server exited at start (exit code ${proc.exitCode}):\n${this.log}`)
      if (Date.now() > deadline) {
        await this.stop('SIGKILL')
        throw new Error(`redis-server did not answer PING on 127.0.0.1:${this.port} within 10 s:\n${this.log}`)
      }
      await sleep(20)
    }
  }

  /** Stops the server (SIGTERM: a clean shutdown; SIGKILL: a crash) and waits for the process to exit. */
  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const proc = this.proc
    this.proc = undefined
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
    proc.kill(signal)
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }

  /** Last resort at process exit: never leave a redis-server behind. */
  killNow(): void {
    this.proc?.kill('SIGKILL')
  }

  async dispose(): Promise<void> {
    await this.stop('SIGTERM')
    if (this.dataDir !== undefined) rmSync(this.dataDir, { recursive: true, force: true })
  }
}

/**
 * A server for the calling `describe` block: started in beforeAll with a client of the tests' own (`admin`:
 * inspection, tampering; it reconnects by itself across server restarts), both stopped in afterAll, and the server
 * killed at process exit whatever happens. Read `admin` once the block's tests run.
 */
export function redisFixture(): { readonly server: RedisServer; admin: AnyRedisClient } {
  const server = new RedisServer()
  const fixture = { server, admin: undefined as unknown as AnyRedisClient }
  const killAtExit = (): void => server.killNow()
  beforeAll(async () => {
    process.once('exit', killAtExit)
    await server.start()
    fixture.admin = createClient({ url: server.url })
    fixture.admin.on('error', () => {})
    await fixture.admin.connect()
  })
  afterAll(async () => {
    try {
      if (fixture.admin?.isOpen) await fixture.admin.close()
    } finally {
      await server.dispose()
      process.removeListener('exit', killAtExit)
    }
  })
  return fixture
}
