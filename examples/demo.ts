/**
 * `npm start` — three peers share a todo list on this machine, each in its own process, on embedded defaults: a
 * local `syncmesh serve` (signaling + relay on 127.0.0.1, any free port), real WebRTC between the peers with the
 * relay as fallback, LevelDB storage in a temporary directory, and an encrypted room. Each peer process is
 * `examples/demo-peer.ts`. A fourth process, mallory, joins the room with the wrong passphrase and learns nothing.
 *
 * Alice goes offline and keeps editing (her writes are durable on disk); bob and carol edit the same todos
 * meanwhile, including a same-field conflict and a delete racing an update. Alice comes back and every peer
 * converges; each conflict is reported by the peer whose value lost. Exits 0 when all three hold the same list.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { DemoCommand, PeerState, Todo } from './demo-peer.js'

const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url))
const children: ChildProcess[] = []
const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Starts `syncmesh serve --port 0` (the CLI, from the sources) and returns the URL it prints. */
async function serve(): Promise<string> {
  const server = spawn(process.execPath, ['--import', 'tsx', here('../src/cli.ts'), 'serve', '--port', '0', '--quiet'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  children.push(server)
  let out = ''
  for await (const chunk of server.stdout!) {
    out += String(chunk)
    const url = /ws:\/\/\S+/.exec(out)?.[0]
    if (url) return url
  }
  throw new Error(`syncmesh serve exited before printing its URL: ${out}`)
}

/** A peer process and a typed way to call it. */
interface Peer {
  readonly name: string
  call(cmd: DemoCommand): Promise<unknown>
}

async function startPeer(name: string, url: string, dir: string, secret = PASSPHRASE): Promise<Peer> {
  const proc = fork(here('./demo-peer.ts'), [name, url, join(dir, name), secret], { execArgv: ['--import', 'tsx'] })
  children.push(proc)
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  let next = 0
  const ready = new Promise<void>((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`${name} exited (${code}) before it was ready`)))
    proc.on('message', (m: { ready?: true; id?: number; ok?: boolean; result?: unknown; error?: string }) => {
      if (m.ready) return resolve()
      const w = waiting.get(m.id!)
      waiting.delete(m.id!)
      if (m.ok) w?.resolve(m.result)
      else w?.reject(new Error(`${name}: ${m.error}`))
    })
  })
  await ready
  return {
    name,
    call: (cmd) => new Promise((resolve, reject) => {
      const id = next++
      waiting.set(id, { resolve, reject })
      proc.send({ id, cmd })
    }),
  }
}

const meet = (peers: Peer[]): Promise<unknown> => Promise.all(peers.map((p) => p.call({ op: 'meet', peers: peers.length - 1 })))
const states = async (peers: Peer[]): Promise<PeerState[]> => Promise.all(peers.map((p) => p.call({ op: 'state' }) as Promise<PeerState>))
const render = (t: Todo): string => `${t.id}:${t.title ?? '—'}${t.done ? ' ✔' : ''}${t.owner ? ` @${t.owner}` : ''}`
async function show(title: string, peers: Peer[]): Promise<PeerState[]> {
  const all = await states(peers)
  console.log(`\n${title}`)
  all.forEach((s, i) => {
    const via = s.via.length ? `   [${s.via.join(', ')}]` : ''
    console.log(`  ${peers[i]!.name.padEnd(6)} ${s.todos.map(render).join(' | ') || '(empty)'}${via}`)
  })
  console.log()
  return all
}

const PASSPHRASE = 'correct horse battery staple'
const dir = await mkdtemp(join(tmpdir(), 'syncmesh-demo-'))
let ok = false
try {
  const url = await serve()
  console.log(`syncmesh serve on ${url} (signaling + relay); each peer is a process with LevelDB in ${dir}\n`)
  const [alice, bob, carol, mallory] = (await Promise.all([
    ...['alice', 'bob', 'carol'].map((n) => startPeer(n, url, dir)),
    startPeer('mallory', url, dir, 'a wrong guess'),
  ])) as [Peer, Peer, Peer, Peer]
  const everyone = [alice, bob, carol]
  await meet(everyone)

  console.log('1. alice and bob write; every peer prints what it receives:')
  await alice.call({ op: 'put', todo: { id: 'milk', title: 'Buy milk' } })
  await alice.call({ op: 'put', todo: { id: 'tax', title: 'File taxes' } })
  await bob.call({ op: 'put', todo: { id: 'bike', title: 'Fix bike' } })
  await meet(everyone)
  await tick(300) // let the direct WebRTC channels open: the relay carried traffic until then
  await show('   synced:', everyone)

  console.log('2. alice goes offline and keeps editing (durable on disk); bob and carol edit too:')
  await alice.call({ op: 'offline' })
  await alice.call({ op: 'update', id: 'milk', patch: { title: 'Buy oat milk' } })
  await tick(5)
  await bob.call({ op: 'update', id: 'milk', patch: { title: 'Buy soy milk' } }) // same field, later: wins everywhere
  await carol.call({ op: 'update', id: 'milk', patch: { owner: 'carol' } }) // another field: both survive
  await bob.call({ op: 'update', id: 'tax', patch: { done: true } })
  await tick(5)
  await alice.call({ op: 'delete', id: 'tax' }) // a delete after bob's update: the record goes, everywhere
  await carol.call({ op: 'update', id: 'bike', patch: { owner: 'carol' } })
  await tick(5)
  await alice.call({ op: 'delete', id: 'bike' }) // erases carol's earlier edit…
  await tick(5)
  await bob.call({ op: 'update', id: 'bike', patch: { done: true } }) // …but this later write brings it back with only its field
  await meet([bob, carol])
  await show('   while apart:', everyone)

  console.log('3. alice comes back online: she reopens from disk and exchanges only what changed:')
  await alice.call({ op: 'online' })
  await meet(everyone)
  const final = await show('   all converged:', everyone)
  ok = new Set(final.map((s) => JSON.stringify(s.todos))).size === 1
  const [intruder] = await states([mallory])
  console.log(`mallory (wrong passphrase) holds ${intruder!.todos.length} todos`)
  ok &&= intruder!.todos.length === 0
  console.log(`All replicas identical: ${ok ? 'yes' : 'NO'}`)
} finally {
  for (const c of children) c.kill()
  await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined)))
  await rm(dir, { recursive: true, force: true })
}
process.exit(ok ? 0 : 1)
