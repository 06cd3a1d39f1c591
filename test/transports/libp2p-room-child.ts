/**
 * A child process hosting several libp2p replicas of one room, driven over stdin / stdout (one JSON object per line),
 * for the 50-node test (test/transports/libp2p-room.test.ts) and benchmark (bench/libp2p.ts).
 *
 * argv[2]: {@link ChildInit} as JSON. Commands on stdin, events on stdout:
 *   → {"c":"write","n":5,"at":<epoch ms>,"expect":<records>,"fields":<fields of "shared">}
 *       every replica writes n records and one field of the record "shared", starting at `at`; each replica
 *       reports {"t":"done","id","at"} once it holds `expect` records and `fields` fields of "shared"
 *   → {"c":"probe","key":"k","writer":"<peer id>"}   the writer (if here) puts probes/k; every replica here reports
 *       {"t":"seen","key","id","at"} when it sees it (`at`: performance.timeOrigin + now(), sub-ms, shared clock)
 *   → {"c":"state"}  ← {"t":"state","nodes":[{"id","peers","conns","members","count","hash"}]}
 *   → {"c":"stop"}   closes everything and exits 0
 * On start: {"t":"ready","addrs":[...first node's TCP addresses]} once every replica has started.
 */
import { createHash } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { createReplica, type Replica } from '../../src/index.js'
import { type Libp2pTransport, libp2pTransport } from '../../transports/libp2p/index.js'

/** What the parent passes in argv[2]. */
export interface ChildInit {
  readonly ids: readonly string[]
  /** Bootstrap addresses of every node here, or per node (same order as ids). */
  readonly bootstrap: readonly string[] | readonly (readonly string[])[]
  /** Listen address per node (same order as ids); default a random loopback TCP port. */
  readonly listen?: readonly string[]
  /** false: no gossipsub (peers come from bootstrap lists only). */
  readonly pubsub?: false
  readonly room: string
  readonly maxPeers?: number
  readonly announceIntervalMs: number
  readonly antiEntropyMs: number
}

const init = JSON.parse(process.argv[2] ?? '{}') as ChildInit
const now = (): number => performance.timeOrigin + performance.now()
const emit = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`)

interface Member {
  readonly id: string
  readonly t: Libp2pTransport
  readonly r: Replica
}

function hashOf(r: Replica): string {
  const recs = r.collection<{ id: string }>('todos').all().sort((a, b) => (a.id < b.id ? -1 : 1))
  const canon = recs.map((rec) => Object.entries(rec).sort(([x], [y]) => (x < y ? -1 : 1)))
  return createHash('sha256').update(JSON.stringify(canon)).digest('hex').slice(0, 16)
}

async function main(): Promise<void> {
  const members: Member[] = []
  for (const [i, id] of init.ids.entries()) {
    const boot = init.bootstrap[i]
    const t = libp2pTransport({
      listen: [init.listen?.[i] ?? '/ip4/127.0.0.1/tcp/0'],
      bootstrap: typeof init.bootstrap[0] === 'string' ? (init.bootstrap as string[]) : (boot as string[]),
      ...(init.pubsub === false ? { pubsub: false as const } : {}),
      announceIntervalMs: init.announceIntervalMs,
      redialMs: 500,
      ...(init.maxPeers !== undefined ? { maxPeers: init.maxPeers } : {}),
    })
    const r = await createReplica({ peerId: id, room: init.room, transports: [t], antiEntropyMs: init.antiEntropyMs })
    members.push({ id, t, r })
  }
  emit({ t: 'ready', addrs: members[0]?.t.multiaddrs.filter((a) => !a.includes('/ws')) ?? [] })

  let target: { expect: number; fields: number } | undefined
  const done = new Set<string>()
  const check = (m: Member): void => {
    if (!target || done.has(m.id)) return
    const c = m.r.collection<{ id: string }>('todos')
    if (c.all().length !== target.expect) return
    const shared = c.get('shared') as Record<string, unknown> | undefined
    if (!shared || Object.keys(shared).filter((k) => k.startsWith('f')).length !== target.fields) return
    done.add(m.id)
    emit({ t: 'done', id: m.id, at: now() })
  }
  const probes = new Map<string, Set<string>>()
  for (const m of members) {
    m.r.collection('todos').subscribe(() => check(m))
    m.r.collection<{ id: string }>('probes').subscribe((changes) => {
      const at = now()
      for (const ch of changes) {
        let seen = probes.get(ch.id)
        if (!seen) probes.set(ch.id, (seen = new Set())) // it may arrive before the command that announces it
        if (seen.has(m.id)) continue
        seen.add(m.id)
        emit({ t: 'seen', key: ch.id, id: m.id, at })
      }
    })
  }

  const lines = createInterface({ input: process.stdin })
  for await (const line of lines) {
    const cmd = JSON.parse(line) as { c: string; n?: number; at?: number; expect?: number; fields?: number; key?: string; writer?: string }
    if (cmd.c === 'stop') break
    if (cmd.c === 'state') {
      emit({
        t: 'state',
        nodes: members.map((m) => ({
          id: m.id,
          peers: m.r.status().peers.length,
          conns: m.t.node?.getConnections().length ?? 0,
          members: m.t.members().length,
          count: m.r.collection('todos').all().length,
          hash: hashOf(m.r),
        })),
      })
    } else if (cmd.c === 'write') {
      target = { expect: cmd.expect!, fields: cmd.fields! }
      const wait = cmd.at! - Date.now()
      if (wait > 0) await new Promise((r) => setTimeout(r, wait))
      void Promise.all(
        members.map(async (m) => {
          const c = m.r.collection<{ id: string; by?: string; n?: number }>('todos')
          for (let k = 0; k < cmd.n!; k++) await c.put({ id: `${m.id}-${k}`, by: m.id, n: k })
          await c.update('shared', { [`f${m.id}`]: cmd.n, by: m.id } as never)
        }),
      ).then(() => {
        for (const m of members) check(m)
      })
    } else if (cmd.c === 'probe') {
      const w = members.find((m) => m.id === cmd.writer)
      if (w) void w.r.collection('probes').put({ id: cmd.key!, at: Date.now() })
    }
  }
  await Promise.allSettled(members.map((m) => m.r.close()))
  process.exit(0)
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exit(1)
})
