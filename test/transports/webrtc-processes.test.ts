/**
 * Three replicas in three Node processes (@roamhq/wrtc, LevelDB in temporary directories), meeting through a
 * signaling server: ours (`startServer`, with the relay as second transport) and y-webrtc's own `bin/server.js`
 * (WebRTC only). Concurrent writes converge; a peer whose process was killed catches up after a restart on the same
 * LevelDB directory, bringing the edits it made while offline.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { startServer, type SyncmeshServer } from '../../src/server/index.js'
import { killChildren, track } from '../server/helpers.js'
import { startYWebrtcServer } from './webrtc-helpers.js'

const REPO = fileURLToPath(new URL('../..', import.meta.url))
const CHILD = fileURLToPath(new URL('./webrtc-replica-child.ts', import.meta.url))

const dirs: string[] = []
let ours: SyncmeshServer | undefined
afterAll(async () => {
  await killChildren() // every replica process and y-webrtc's server
  await ours?.close()
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

/** A replica process driven over its line protocol (see webrtc-replica-child.ts). */
class Peer {
  private readonly lines: string[] = []
  private waiters: (() => void)[] = []
  private readonly proc: ChildProcess
  private out = ''
  private err = ''

  constructor(readonly id: string, dir: string, room: string, signaling: string | undefined, relay: string | undefined) {
    this.proc = track(spawn(process.execPath, ['--import', 'tsx', CHILD, id, dir, room, signaling ?? '-', ...(relay ? [relay] : [])], {
      cwd: REPO,
      stdio: ['pipe', 'pipe', 'pipe'],
    }))
    this.proc.stderr!.on('data', (d: Buffer) => (this.err = (this.err + d.toString()).slice(-4000)))
    this.proc.once('exit', () => this.wake())
    this.proc.stdout!.on('data', (d: Buffer) => {
      this.out += d.toString()
      const parts = this.out.split('\n')
      this.out = parts.pop()!
      for (const l of parts) if (l && !l.startsWith('#')) this.lines.push(l)
      this.wake()
    })
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  /** The next protocol line (an answer, or `ready`). */
  async next(ms = 20_000): Promise<string> {
    const end = Date.now() + ms
    while (this.lines.length === 0) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) throw new Error(`${this.id} exited (${this.proc.exitCode ?? this.proc.signalCode}): ${this.err}`)
      if (Date.now() > end) throw new Error(`${this.id}: no answer within ${ms} ms`)
      await new Promise<void>((r) => {
        this.waiters.push(r)
        setTimeout(r, 100)
      })
    }
    return this.lines.shift()!
  }

  async ask(command: string, ms?: number): Promise<string> {
    this.proc.stdin!.write(`${command}\n`)
    const answer = await this.next(ms)
    if (answer.startsWith('err')) throw new Error(`${this.id} ${command.split(' ')[0]}: ${answer}`)
    return answer
  }

  async state(): Promise<unknown> {
    return JSON.parse((await this.ask('state')).slice('state '.length))
  }

  /** Waits until this peer is connected to all of `others` over WebRTC (not the relay). */
  async meet(others: string[], ms = 20_000): Promise<void> {
    const end = Date.now() + ms
    for (;;) {
      const ids = JSON.parse((await this.ask('direct')).slice('peers '.length)) as string[]
      if (others.every((o) => ids.includes(o))) return
      if (Date.now() > end) throw new Error(`${this.id} sees ${JSON.stringify(ids)}, not ${JSON.stringify(others)}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  kill(): Promise<void> {
    const exited = new Promise<void>((r) => this.proc.once('exit', () => r()))
    this.proc.kill('SIGKILL')
    return exited
  }
}

const servers: { name: string; start(): Promise<{ signaling: string; relay: string | undefined }> }[] = [
  {
    name: 'the syncmesh server (WebRTC, relay as fallback)',
    start: async () => {
      ours = await startServer({ port: 0, log: false })
      return { signaling: ours.url, relay: ours.url }
    },
  },
  {
    name: "y-webrtc's own server (WebRTC only)",
    start: async () => {
      const theirs = await startYWebrtcServer()
      return { signaling: theirs.url, relay: undefined }
    },
  },
]

describe.each(servers)('three processes over WebRTC with LevelDB: $name', ({ start }) => {
  it('concurrent writes converge; a killed peer restarts on its LevelDB directory, with offline edits, and catches up', async () => {
    const { signaling, relay } = await start()
    const room = `processes-${process.pid}-${Date.now().toString(36)}`
    const base = await mkdtemp(join(tmpdir(), 'syncmesh-procs-'))
    dirs.push(base)
    const open = async (id: string, online = true): Promise<Peer> => {
      const p = new Peer(id, join(base, id), room, online ? signaling : undefined, relay)
      expect(await p.next()).toBe('ready')
      return p
    }
    const [a, b] = await Promise.all([open('a'), open('b')])
    let c = await open('c')
    await Promise.all([a.meet(['b', 'c']), b.meet(['a', 'c']), c.meet(['a', 'b'])])

    // Concurrent writes from all three: distinct records, and the same field of one shared record.
    await Promise.all(
      [a, b, c].flatMap((p) => [
        ...Array.from({ length: 10 }, (_, i) => p.ask(`put ${JSON.stringify({ id: `${p.id}-${i}`, n: i, by: p.id })}`)),
        p.ask(`update shared ${JSON.stringify({ title: `title by ${p.id}`, [p.id]: true })}`),
      ]),
    )
    await Promise.all([a.ask('sync'), b.ask('sync'), c.ask('sync')])
    const first = await a.state()
    expect(first).toHaveLength(31)
    expect(await b.state()).toEqual(first)
    expect(await c.state()).toEqual(first)

    // c crashes; a and b go on editing.
    await c.kill()
    await a.ask(`update shared ${JSON.stringify({ title: 'renamed by a while c was away' })}`)
    await b.ask(`put ${JSON.stringify({ id: 'b-late', by: 'b' })}`)
    await a.ask(`update a-0 ${JSON.stringify({ n: 100 })}`)
    // c comes back offline on the same directory and edits on its own. Its own writes were durable before they
    // resolved, so they are all there; remote changes it applied just before the kill may not have reached its
    // disk yet (they are fetched again below: the stored version vector never claims what the store lacks).
    c = await open('c', false)
    const reopened = (await c.state()) as { id: string; [k: string]: unknown }[]
    for (let i = 0; i < 10; i++) expect(reopened.find((r) => r.id === `c-${i}`)).toMatchObject({ n: i, by: 'c' })
    expect(reopened.find((r) => r.id === 'shared')).toMatchObject({ c: true })
    await c.ask(`put ${JSON.stringify({ id: 'c-offline', by: 'c' })}`)
    await c.ask(`update b-1 ${JSON.stringify({ note: 'c was here, offline' })}`)
    await c.ask('close')
    // And online again: it catches up, and its offline edits reach the others.
    c = await open('c')
    await Promise.all([a.meet(['b', 'c']), b.meet(['a', 'c']), c.meet(['a', 'b'])])
    await Promise.all([a.ask('sync'), b.ask('sync'), c.ask('sync')])
    const final = (await a.state()) as { id: string; [k: string]: unknown }[]
    expect(await b.state()).toEqual(final)
    expect(await c.state()).toEqual(final)
    const byId = new Map(final.map((r) => [r.id, r]))
    expect(byId.get('shared')).toMatchObject({ title: 'renamed by a while c was away', a: true, b: true, c: true })
    expect(byId.get('a-0')).toMatchObject({ n: 100 })
    expect(byId.get('b-late')).toBeDefined()
    expect(byId.get('c-offline')).toBeDefined()
    expect(byId.get('b-1')).toMatchObject({ note: 'c was here, offline', by: 'b' })
    expect(final).toHaveLength(33)
    await Promise.all([a.ask('close'), b.ask('close'), c.ask('close')])
  }, 40_000)
})
