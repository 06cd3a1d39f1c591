/**
 * The relay protocol on the server: the binary WebSocket messages, specified and decoded by
 * transports/relay/wire.ts (versions 1 and 2). JOIN / LEAVE / SEND / BROADCAST / PING from clients; WELCOME / PEERS
 * / UP / DOWN / FROM / PONG / ERROR back; the store ops go to ./relay-store.ts. `authenticate` / `tokens` gate
 * every JOIN; with a cluster (`redis`, ./cluster.ts) a room's members on other server processes appear in PEERS /
 * UP / DOWN and frames cross to them. Topics are opaque: syncmesh replicas hash (app, room) before a transport sees
 * it, so room names never reach the server.
 *
 * Each message is handled into an {@link Outbox} — per receiver, the ops it produced, in order — which is then
 * packed into as few messages per receiver as `maxMessageBytes` and {@link RELAY_MAX_OPS} allow. FROM ops are
 * droppable (a congested receiver loses them); membership ops are never dropped.
 */
import { timingSafeEqual } from 'node:crypto'
import {
  RELAY_MAX_OPS,
  RELAY_PROTOCOL_VERSION,
  type RelayClientOp,
  RelayErrorCode,
  type RelayLimits,
  decodeClientMessage,
  encodeRelayMessage,
  encodeServerOp,
  relayMessageVersion,
} from '../../transports/relay/wire.js'
import type { Cluster } from './cluster.js'
import { type Conn, type Connections, type ServerCounters, ServerCloseCode, take } from './connections.js'
import { type ServerLog, topicLabel } from './log.js'
import type { JoinRequest, ServerOptions } from './options.js'
import { RelayStore } from './relay-store.js'
import type { BlobStore } from './store.js'

/** Output of handling one message: per receiver, the ops to send, in order. */
type Outbox = Map<Conn, { bytes: Uint8Array; droppable: boolean }[]>

type JoinOp = Extract<RelayClientOp, { op: 'join' }>

function push(out: Outbox, to: Conn, bytes: Uint8Array, droppable = false): void {
  let list = out.get(to)
  if (list === undefined) out.set(to, (list = []))
  list.push({ bytes, droppable })
}

/** What the relay protocol works with. */
export interface RelayProtocolInit {
  readonly options: ServerOptions
  readonly connections: Connections
  readonly log: ServerLog
  readonly counters: ServerCounters
  readonly store: BlobStore | undefined
  readonly cluster: Cluster | undefined
}

/** The relay rooms of one server and the messages about them. */
export class RelayProtocol {
  /** Members of each room with at least one local member (peer → connection). */
  readonly rooms = new Map<string, Map<string, Conn>>()
  /** Per relay room with local members: its members on other server processes (peer → node). */
  private readonly remotes = new Map<string, Map<string, string>>()
  private readonly o: ServerOptions
  private readonly connections: Connections
  private readonly log: ServerLog
  private readonly counters: ServerCounters
  private readonly cluster: Cluster | undefined
  private readonly store: RelayStore | undefined
  private readonly checksAccess: boolean
  private readonly welcome: Uint8Array
  private readonly reaper: ReturnType<typeof setInterval> | undefined

  constructor(init: RelayProtocolInit) {
    this.o = init.options
    this.connections = init.connections
    this.log = init.log
    this.counters = init.counters
    this.cluster = init.cluster
    this.checksAccess = this.o.authenticate !== undefined || this.o.tokens.length > 0
    this.store = init.store && new RelayStore(init.store, this.o, this.connections, this.log, this.counters, (c, ops) => this.send(c, ops))
    const limits: RelayLimits = {
      maxMessageBytes: this.o.maxMessageBytes,
      opsPerSecond: this.o.rate,
      opsBurst: this.o.rateBurst,
      bytesPerSecond: this.o.bytesRate,
      bytesBurst: this.o.bytesBurst,
      maxOps: RELAY_MAX_OPS,
    }
    this.welcome = encodeServerOp({ op: 'welcome', limits })
    this.reaper = this.cluster && setInterval(() => this.reap(), 1000)
    if (this.reaper) this.reaper.unref()
  }

  /** Stops the cluster reaper. */
  close(): void {
    if (this.reaper) clearInterval(this.reaper)
  }

  /** Handles one binary message. */
  onMessage(c: Conn, buf: Buffer, now: number): void {
    let ops
    try {
      ops = decodeClientMessage(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength))
    } catch (err) {
      return this.connections.violation(c, ServerCloseCode.POLICY_VIOLATION, `malformed relay message: ${(err as Error).message}`)
    }
    if (c.version === 0) c.version = relayMessageVersion(buf)
    if (!take(c.ops, this.o.rate, this.o.rateBurst, ops.length, now)) return this.connections.violation(c, ServerCloseCode.POLICY_VIOLATION, 'rate limit exceeded')
    this.handleOps(c, ops, 0)
  }

  /** Takes a connection out of its room; the other members get DOWN. */
  detach(c: Conn): void {
    const out: Outbox = new Map()
    this.leaveRoom(c, out)
    this.flush(out)
  }

  /** Handles `ops` from index `start` on (a JOIN with an access check suspends the rest until it is decided). */
  private handleOps(c: Conn, ops: readonly RelayClientOp[], start: number): void {
    const out: Outbox = new Map()
    const cluster = this.cluster
    let problem: string | undefined
    for (let i = start; i < ops.length && problem === undefined; i++) {
      const op = ops[i]!
      switch (op.op) {
        case 'join': {
          if (c.relay !== undefined) {
            problem = 'JOIN while in a room'
            break
          }
          if (this.checksAccess || cluster !== undefined) {
            this.flush(out)
            this.beginJoin(c, op, ops, i + 1)
            return
          }
          this.join(c, op, out, undefined)
          break
        }
        case 'leave':
          this.leaveRoom(c, out)
          break
        case 'send': {
          const r = c.relay
          if (r === undefined) {
            problem = 'SEND outside a room'
            break
          }
          const to = r.members.get(op.to)
          if (to === undefined) {
            if (cluster !== undefined && this.remotes.get(r.topic)?.has(op.to)) cluster.send(r.topic, r.peer, op.to, op.payload)
            break
          }
          if (to === c) break
          push(out, to, encodeServerOp({ op: 'from', from: r.peer, payload: op.payload }), true)
          break
        }
        case 'broadcast': {
          const r = c.relay
          if (r === undefined) {
            problem = 'BROADCAST outside a room'
            break
          }
          if (cluster !== undefined && (this.remotes.get(r.topic)?.size ?? 0) > 0) cluster.broadcast(r.topic, r.peer, op.payload)
          if (r.members.size < 2) break
          const frame = encodeServerOp({ op: 'from', from: r.peer, payload: op.payload })
          for (const m of r.members.values()) if (m !== c) push(out, m, frame, true)
          break
        }
        case 'ping':
          push(out, c, encodeServerOp({ op: 'pong', nonce: op.nonce }))
          break
        case 'put':
        case 'fetch':
        case 'compact':
          problem = this.store ? this.store.op(c, op) : `${op.op.toUpperCase()} on a server without a store`
          break
      }
    }
    // What was produced before a violation goes out first, so no FROM(c) can follow the DOWN(c) the violation causes.
    this.flush(out)
    if (problem !== undefined) this.connections.violation(c, ServerCloseCode.POLICY_VIOLATION, `relay protocol violation: ${problem}`)
  }

  /** Enters a room; `remote`: its members on other server processes, from the cluster claim. */
  private join(c: Conn, op: JoinOp, out: Outbox, remote: Map<string, string> | undefined): void {
    let members = this.rooms.get(op.topic)
    if (members?.has(op.peer)) {
      push(out, c, encodeServerOp({ op: 'error', code: RelayErrorCode.PEER_ID_IN_USE, message: 'peer id in use in this room' }))
      this.log(`conn=${c.id} join refused room=${topicLabel(op.topic)}: peer id in use`)
      return
    }
    if (members !== undefined && members.size + (this.remotes.get(op.topic)?.size ?? 0) >= this.o.maxPeersPerRoom) {
      if (this.cluster !== undefined && remote !== undefined) this.cluster.leave(op.topic, op.peer, false)
      push(out, c, encodeServerOp({ op: 'error', code: RelayErrorCode.ROOM_FULL, message: 'room full' }))
      this.log(`conn=${c.id} join refused room=${topicLabel(op.topic)}: room full`)
      return
    }
    if (members === undefined) this.rooms.set(op.topic, (members = new Map()))
    let others = this.remotes.get(op.topic)
    others?.delete(op.peer) // a peer back from a dead server: it is ours now (its old entry must not DOWN it later)
    if (remote !== undefined && remote.size > 0) {
      if (others === undefined) this.remotes.set(op.topic, (others = new Map()))
      for (const [p, n] of remote) {
        if (members.has(p) || p === op.peer) continue
        // A remote peer this claim found first (its UP has not come yet, and will then be one we know): the members
        // already here hear of it now, as they would have from that UP.
        if (!others.has(p)) {
          const up = encodeServerOp({ op: 'up', peer: p })
          for (const m of members.values()) push(out, m, up)
        }
        others.set(p, n)
      }
    }
    push(out, c, this.welcome)
    const present = [...members.keys(), ...(others?.keys() ?? [])]
    for (let i = 0; i < present.length; i += 256) push(out, c, encodeServerOp({ op: 'peers', peers: present.slice(i, i + 256) }))
    const up = encodeServerOp({ op: 'up', peer: op.peer })
    for (const m of members.values()) push(out, m, up)
    members.set(op.peer, c)
    const membership = (c.relay = { topic: op.topic, peer: op.peer, members })
    this.cluster?.announce(op.topic, op.peer)
    this.log(`conn=${c.id} join room=${topicLabel(op.topic)} peers=${members.size}${others ? `+${others.size}` : ''}`)
    if (this.store !== undefined && c.version >= 2) this.store.announce(c, op.topic, () => c.relay === membership)
  }

  /**
   * A JOIN that needs asynchronous work — the access check, the peer id's claim across the cluster — while the
   * connection's other messages wait.
   */
  private beginJoin(c: Conn, op: JoinOp, ops: readonly RelayClientOp[], next: number): void {
    const { tokens, authenticate } = this.o
    const cluster = this.cluster
    c.held = []
    const token = Buffer.from(op.token ?? new Uint8Array(0))
    const request: JoinRequest = { token, tokenText: token.toString('utf8'), topic: op.topic, peer: op.peer, remote: c.remote }
    const tokenOk = tokens.length === 0 || tokens.some((t) => t.byteLength === token.byteLength && timingSafeEqual(t, token))
    Promise.resolve()
      .then(() => tokenOk && (authenticate === undefined || authenticate(request)))
      .catch((err: unknown) => {
        this.log(`conn=${c.id} authenticate threw: ${(err as Error)?.message ?? String(err)}`)
        return false
      })
      .then(async (admitted) => {
        if (c.closed) return
        if (admitted !== true) {
          this.counters.denied++
          this.log(`conn=${c.id} join denied room=${topicLabel(op.topic)}`)
          this.send(c, [encodeServerOp({ op: 'error', code: RelayErrorCode.ACCESS_DENIED, message: 'access denied' })])
          this.connections.drop(c, ServerCloseCode.POLICY_VIOLATION, 'access denied')
          return
        }
        let remote: Map<string, string> | undefined
        if (cluster !== undefined && !this.rooms.get(op.topic)?.has(op.peer)) {
          remote = await cluster.join(op.topic, op.peer)
          if (remote === undefined) {
            if (!this.rooms.has(op.topic)) cluster.leave(op.topic, op.peer, true) // unsubscribes (its DOWN is ignored: not ours)
            this.log(`conn=${c.id} join refused room=${topicLabel(op.topic)}: peer id in use on another server`)
            this.send(c, [encodeServerOp({ op: 'error', code: RelayErrorCode.PEER_ID_IN_USE, message: 'peer id in use in this room' })])
          } else if (c.closed) {
            cluster.leave(op.topic, op.peer, !this.rooms.has(op.topic))
            return
          }
        }
        const held = c.held ?? []
        c.held = undefined
        const out: Outbox = new Map()
        if (cluster === undefined || remote !== undefined || this.rooms.get(op.topic)?.has(op.peer)) this.join(c, op, out, remote)
        this.flush(out)
        this.handleOps(c, ops, next)
        while (held.length > 0 && !c.closed) {
          const m = held.shift()!
          const again = c.held as { buf: Buffer; isBinary: boolean }[] | undefined
          if (again !== undefined) again.push(m) // another JOIN is being checked: keep the order
          else this.connections.release(c, m)
        }
      })
      .catch((err: unknown) => {
        this.log(`conn=${c.id} internal error ${(err as Error)?.message ?? String(err)}`)
        this.connections.drop(c, ServerCloseCode.INTERNAL_ERROR, 'internal error')
      })
  }

  private leaveRoom(c: Conn, out: Outbox): void {
    const r = c.relay
    if (r === undefined) return
    c.relay = undefined
    if (r.members.get(r.peer) !== c) return
    r.members.delete(r.peer)
    this.cluster?.leave(r.topic, r.peer, r.members.size === 0)
    if (r.members.size === 0) {
      if (this.rooms.get(r.topic) === r.members) this.rooms.delete(r.topic)
      this.remotes.delete(r.topic)
      return
    }
    const down = encodeServerOp({ op: 'down', peer: r.peer })
    for (const m of r.members.values()) push(out, m, down)
  }

  /** Sends encoded ops to one connection now, in order. */
  private send(c: Conn, ops: readonly Uint8Array[]): void {
    const out: Outbox = new Map()
    for (const op of ops) push(out, c, op)
    this.flush(out)
  }

  /** Sends each receiver its ops, packed into as few messages as maxMessageBytes / RELAY_MAX_OPS allow. */
  private flush(out: Outbox): void {
    for (const [to, items] of out) {
      if (to.closed || to.ws.readyState !== 1) continue
      const slow = this.connections.congested(to, Date.now())
      if (to.closed) continue
      let batch: Uint8Array[] = []
      let size = 1
      const emit = (): void => {
        if (batch.length === 0) return
        try {
          this.connections.cork(to)
          to.ws.send(encodeRelayMessage(batch, to.version || RELAY_PROTOCOL_VERSION))
        } catch {
          this.connections.drop(to, ServerCloseCode.INTERNAL_ERROR, 'send failed')
        }
        batch = []
        size = 1
      }
      for (const item of items) {
        if (item.droppable) {
          if (slow) {
            this.counters.droppedSlow++
            continue
          }
          this.counters.forwarded++
        }
        if (batch.length > 0 && (size + item.bytes.byteLength > this.o.maxMessageBytes || batch.length >= RELAY_MAX_OPS)) emit()
        batch.push(item.bytes)
        size += item.bytes.byteLength
      }
      emit()
    }
  }

  // -- cluster (scale-out over Redis) -------------------------------------------------------------------------------

  /** A peer joined `topic` on another server process. */
  remoteUp(topic: string, peer: string, node: string): void {
    const members = this.rooms.get(topic)
    if (members === undefined || members.has(peer)) return
    let others = this.remotes.get(topic)
    if (others === undefined) this.remotes.set(topic, (others = new Map()))
    const known = others.has(peer)
    others.set(peer, node)
    if (known) return
    this.toMembers(members, encodeServerOp({ op: 'up', peer }))
  }

  /** A peer left `topic` on another server process. */
  remoteDown(topic: string, peer: string, node: string): void {
    const others = this.remotes.get(topic)
    if (others?.get(peer) !== node) return
    others.delete(peer)
    const members = this.rooms.get(topic)
    if (members === undefined || members.has(peer)) return
    this.toMembers(members, encodeServerOp({ op: 'down', peer }))
  }

  /** A frame from a peer on another server process, to one local member or (`to` undefined) to all. */
  remoteFrame(topic: string, from: string, to: string | undefined, payload: Uint8Array): void {
    const members = this.rooms.get(topic)
    if (members === undefined || !this.remotes.get(topic)?.has(from)) return // never a FROM before its sender's UP
    const out: Outbox = new Map()
    const frame = encodeServerOp({ op: 'from', from, payload })
    if (to !== undefined) {
      const m = members.get(to)
      if (m !== undefined) push(out, m, frame, true)
    } else {
      for (const m of members.values()) push(out, m, frame, true)
    }
    this.flush(out)
  }

  private toMembers(members: Map<string, Conn>, op: Uint8Array): void {
    const out: Outbox = new Map()
    for (const m of members.values()) push(out, m, op)
    this.flush(out)
  }

  /** Peers of server processes that died without a word (their liveness key expired) are reported down. */
  private reap(): void {
    const cluster = this.cluster!
    const nodes = new Set<string>()
    for (const others of this.remotes.values()) for (const n of others.values()) nodes.add(n)
    if (nodes.size === 0) return
    cluster.dead(nodes).then((dead) => {
      for (const [topic, others] of this.remotes) {
        for (const [peer, node] of others) {
          if (!dead.has(node)) continue
          this.log(`cluster node ${node} is gone: its peer leaves room=${topicLabel(topic)}`)
          this.remoteDown(topic, peer, node)
          cluster.forget(topic, peer, node)
        }
      }
    }, (err: unknown) => this.log(`cluster error ${(err as Error)?.message}`))
  }
}
