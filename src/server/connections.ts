/**
 * The server's WebSocket connections, whatever protocol they speak: accepting one, the per-connection byte budget,
 * holding input back while a JOIN is checked, closing for violations, silence or slowness, and the output side both
 * protocols share — corking a burst of output into one write, and dropping output to a congested receiver.
 * Text messages go to the signaling protocol (./signaling.ts), binary ones to the relay protocol (./relay.ts).
 */
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { RawData, WebSocket } from 'ws'
import type { ServerLog } from './log.js'
import type { ServerOptions } from './options.js'

/** WebSocket close codes of the server: each names why it closed a connection (logged as `close code=<n>`). */
export const ServerCloseCode = {
  /** The server is shutting down; reconnect later. */
  GOING_AWAY: 1001,
  /** A text message that is not valid UTF-8. */
  INVALID_UTF8: 1007,
  /** Malformed input, a relay protocol violation, too many or too long topics, or a rate limit exceeded. */
  POLICY_VIOLATION: 1008,
  /** A message longer than `maxMessageBytes` (also refused from the frame header alone). */
  MESSAGE_TOO_BIG: 1009,
  /** Handling the message failed inside the server; only this connection is closed. */
  INTERNAL_ERROR: 1011,
  /**
   * Slow consumer: the send buffer stayed above `maxBufferedBytes` for `slowConsumerMs`. The socket is destroyed
   * without a close frame (it would queue behind unread bytes), so the client sees 1006; the code is in the log.
   */
  SLOW_CONSUMER: 4001,
} as const

/** The server's counters (see `ServerStats`), shared by the connections and both protocols. */
export interface ServerCounters {
  connections: number
  violations: number
  timeouts: number
  forwarded: number
  droppedSlow: number
  slowConsumers: number
  stored: number
  served: number
  compactions: number
  denied: number
}

/** A token bucket. */
export interface Bucket {
  tokens: number
  last: number
}

/** A connection's place in a relay room. */
export interface RelayMembership {
  readonly topic: string
  readonly peer: string
  readonly members: Map<string, Conn>
}

/** One WebSocket connection. */
export interface Conn {
  readonly id: number
  readonly ws: WebSocket
  /** The TCP socket under `ws`, corked while a burst of output to it is produced (see {@link Connections.cork}). */
  readonly socket: Duplex
  readonly remote: string
  readonly openedAt: number
  lastSeen: number
  readonly ops: Bucket
  readonly bytes: Bucket
  /** Signaling topics subscribed to. */
  readonly topics: Set<string>
  relay: RelayMembership | undefined
  /** No more input is processed (violation, timeout, server closing). */
  closed: boolean
  /** Removed from every topic and room. */
  detached: boolean
  msgsIn: number
  bytesIn: number
  closeReason: string | undefined
  /** The close code the server sent, when it closed the connection. */
  closeCode: number | undefined
  /** Since when the send buffer has been above maxBufferedBytes (undefined while below). */
  slowSince: number | undefined
  /** The relay protocol version of the connection's first binary message (what it is answered in). */
  version: number
  /** Messages that arrived while a JOIN's access check ran; handled once it is decided. */
  held: { buf: Buffer; isBinary: boolean }[] | undefined
  /** A COMPACT being assembled. */
  compacting: { id: number; upto: number; count: number; blobs: Uint8Array[]; bytes: number } | undefined
}

/** Takes `n` tokens from a bucket refilled at `rate` per second up to `burst`; false (nothing taken) when short. */
export function take(bucket: Bucket, rate: number, burst: number, n: number, now: number): boolean {
  bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.last) * rate) / 1000)
  bucket.last = now
  if (bucket.tokens < n) return false
  bucket.tokens -= n
  return true
}

/** Close codes `ws` sends for its own errors (the rest are framing errors: 1002). */
const WS_ERROR_CLOSE_CODES: Record<string, number> = {
  WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: ServerCloseCode.MESSAGE_TOO_BIG,
  WS_ERR_INVALID_UTF8: ServerCloseCode.INVALID_UTF8,
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (Array.isArray(data)) return Buffer.concat(data)
  return Buffer.from(data)
}

/** What the connections hand to the protocols. */
export interface ConnectionProtocols {
  /** Handles one message: text is signaling, binary is relay. */
  message(c: Conn, buf: Buffer, isBinary: boolean, now: number): void
  /** Removes a connection from every topic and room. */
  detach(c: Conn): void
}

/** Every open connection of one server. */
export class Connections {
  readonly open = new Set<Conn>()
  private readonly corked = new Set<Conn>()
  private nextId = 1

  constructor(
    private readonly o: ServerOptions,
    private readonly log: ServerLog,
    private readonly counters: ServerCounters,
    private readonly protocols: ConnectionProtocols,
  ) {}

  /** Takes a new WebSocket connection in. */
  accept(ws: WebSocket, req: IncomingMessage): void {
    const now = Date.now()
    const c: Conn = {
      id: this.nextId++,
      ws,
      socket: req.socket,
      remote: `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`,
      openedAt: now,
      lastSeen: now,
      ops: { tokens: this.o.rateBurst, last: now },
      bytes: { tokens: this.o.bytesBurst, last: now },
      topics: new Set(),
      relay: undefined,
      closed: false,
      detached: false,
      msgsIn: 0,
      bytesIn: 0,
      closeReason: undefined,
      closeCode: undefined,
      slowSince: undefined,
      version: 0,
      held: undefined,
      compacting: undefined,
    }
    this.open.add(c)
    this.counters.connections++
    this.log(`conn=${c.id} open from=${c.remote}`)
    ws.on('message', (data: RawData, isBinary: boolean) => {
      try {
        this.receive(c, data, isBinary)
      } catch (err) {
        // A bug of ours must cost at most this one connection, never the process.
        this.log(`conn=${c.id} internal error ${(err as Error)?.stack?.split('\n', 2).join(' ') ?? String(err)}`)
        this.drop(c, ServerCloseCode.INTERNAL_ERROR, 'internal error')
      }
    })
    ws.on('pong', () => (c.lastSeen = Date.now()))
    ws.on('ping', () => (c.lastSeen = Date.now()))
    ws.on('error', (err: Error & { code?: string }) => {
      // ws has already sent the close frame (1009 too big, 1007 invalid UTF-8, 1002 bad framing) and drops the socket.
      const code = typeof err.code === 'string' && err.code.startsWith('WS_ERR_') ? (WS_ERROR_CLOSE_CODES[err.code] ?? 1002) : undefined
      if (code !== undefined && !c.closed) {
        this.counters.violations++
        c.closeCode = code
        c.closeReason = err.message
        this.log(`conn=${c.id} violation code=${code} ${err.message}`)
      } else {
        c.closeReason ??= err.code ?? 'error'
        this.log(`conn=${c.id} error ${err.code ?? ''} ${err.message}`.replace(/\s+/g, ' '))
      }
      c.closed = true
      this.detach(c)
    })
    ws.on('close', (code: number, reason: Buffer) => {
      c.closed = true
      this.detach(c)
      this.open.delete(c)
      const why = reason.length > 0 ? ` reason=${JSON.stringify(reason.toString('utf8').slice(0, 80))}` : ''
      const secs = ((Date.now() - c.openedAt) / 1000).toFixed(1)
      const by = ` by=${c.closeReason === undefined ? 'client' : 'server'}`
      this.log(`conn=${c.id} close code=${c.closeCode ?? code}${why}${by} msgs=${c.msgsIn} bytes=${c.bytesIn} duration=${secs}s`)
    })
  }

  private receive(c: Conn, data: RawData, isBinary: boolean): void {
    if (c.closed) return
    const now = Date.now()
    c.lastSeen = now
    const buf = toBuffer(data)
    c.msgsIn++
    c.bytesIn += buf.byteLength
    if (!take(c.bytes, this.o.bytesRate, this.o.bytesBurst, buf.byteLength, now)) return this.violation(c, ServerCloseCode.POLICY_VIOLATION, 'byte rate limit exceeded')
    if (c.held !== undefined) {
      // A JOIN's access check is running: what follows it waits, in order.
      if (c.held.length >= 64) return this.violation(c, ServerCloseCode.POLICY_VIOLATION, 'too many messages during the access check')
      c.held.push({ buf, isBinary })
      return
    }
    this.protocols.message(c, buf, isBinary, now)
  }

  /** Handles a message that was held back during a JOIN's access check. */
  release(c: Conn, held: { buf: Buffer; isBinary: boolean }): void {
    this.protocols.message(c, held.buf, held.isBinary, Date.now())
  }

  /** Closes a connection on our side (violation, timeout, shutdown); detaches it at once so peers see DOWN now. */
  drop(c: Conn, code: number, reason: string): void {
    if (c.closed && c.detached && c.closeReason !== undefined) return
    c.closed = true
    c.closeReason ??= reason
    c.closeCode ??= code
    this.detach(c)
    try {
      c.ws.close(code, reason.slice(0, 120))
    } catch {
      c.ws.terminate()
    }
    // A peer that ignores the closing handshake is cut off.
    const t = setTimeout(() => c.ws.terminate(), 1000)
    t.unref()
  }

  /** Closes a connection that broke a rule, counted and logged as a violation. */
  violation(c: Conn, code: number, reason: string): void {
    if (c.closed) return
    this.counters.violations++
    this.log(`conn=${c.id} violation code=${code} ${reason}`)
    this.drop(c, code, reason)
  }

  /** Removes a connection from every topic and room (idempotent); relay peers get DOWN. */
  detach(c: Conn): void {
    if (c.detached) return
    c.detached = true
    this.protocols.detach(c)
  }

  /**
   * Corks `to`'s socket until the current task ends: everything sent to it while handling one inbound chunk (which
   * may hold thousands of small messages, each fanned out to every subscriber) leaves in one write instead of one
   * system call per message — the cost that dominated a publish burst.
   */
  cork(to: Conn): void {
    if (this.corked.has(to)) return
    this.corked.add(to)
    to.socket.cork()
    if (this.corked.size === 1) process.nextTick(this.uncorkAll)
  }

  private readonly uncorkAll = (): void => {
    for (const c of this.corked) c.socket.uncork()
    this.corked.clear()
  }

  /**
   * Whether `to`'s send buffer is over maxBufferedBytes (so droppable output to it is dropped). A receiver over it for
   * slowConsumerMs, or over twice it, is cut off as a slow consumer (and so counts as congested too).
   */
  congested(to: Conn, now: number): boolean {
    const buffered = to.ws.bufferedAmount
    if (buffered <= this.o.maxBufferedBytes) {
      to.slowSince = undefined
      return false
    }
    to.slowSince ??= now
    if (now - to.slowSince >= this.o.slowConsumerMs || buffered > 2 * this.o.maxBufferedBytes) this.cutSlowConsumer(to, buffered, now - to.slowSince)
    return true
  }

  /** Destroys a slow consumer's socket now: a close frame would queue behind the bytes it does not read. */
  private cutSlowConsumer(c: Conn, buffered: number, forMs: number): void {
    if (c.closed) return
    this.counters.slowConsumers++
    this.log(`conn=${c.id} slow consumer buffered=${buffered} over=${this.o.maxBufferedBytes} for=${forMs}ms`)
    c.closed = true
    c.closeReason = 'slow consumer'
    c.closeCode = ServerCloseCode.SLOW_CONSUMER
    this.detach(c)
    c.ws.terminate()
  }

  /** One liveness round (every `pingIntervalMs`): drops connections silent for two intervals, pings the others. */
  sweep(): void {
    const now = Date.now()
    for (const c of this.open) {
      if (c.closed) continue
      if (this.congested(c, now) && c.closed) continue
      const silent = now - c.lastSeen
      if (silent > 2 * this.o.pingIntervalMs) {
        this.counters.timeouts++
        this.log(`conn=${c.id} timeout silent=${silent}ms`)
        c.closed = true
        c.closeReason = 'timeout'
        this.detach(c)
        c.ws.terminate()
        continue
      }
      try {
        c.ws.ping()
      } catch {
        // The close event follows.
      }
    }
  }

  /** Server shutdown: detaches every connection and closes it with 1001 (going away). */
  goingAway(): void {
    const open = [...this.open]
    for (const c of open) {
      c.closed = true
      c.closeReason ??= 'shutdown'
      c.closeCode ??= ServerCloseCode.GOING_AWAY
      this.detach(c)
    }
    for (const c of open) {
      try {
        c.ws.close(ServerCloseCode.GOING_AWAY, 'server shutting down')
      } catch {
        c.ws.terminate()
      }
    }
  }
}
