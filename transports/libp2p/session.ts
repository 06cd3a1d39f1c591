/**
 * One stream of the syncmesh protocol with one remote node, from HELLO to close ({@link Session}): framing in and
 * out, the per-peer send queue with backpressure (batched in a microtask, waits for drain, bounded by
 * `maxQueuedBytes`), and the budget of a limited (relayed) connection, renewed before the relay cuts it.
 */
import type { Connection, Stream } from '@libp2p/interface'
import { TransportStateError, toError } from '../errors.js'
import type { PeerId } from '../types.js'
import { unref } from './timers.js'
import { FrameDecoder, type Hello, Libp2pProtocolError, MAX_HELLO_BYTES, decodeHello } from './wire.js'

const BATCH_BYTES = 64 * 1024

/** What a session reports to its owner (a transport, or the hub before the room is known). */
export interface SessionEvents {
  hello(s: Session, hello: Hello): void
  frame(s: Session, frame: Uint8Array): void
  end(s: Session): void
  error(s: Session, err: Error): void
}

/** Options a session gets from its transport. */
export interface SessionLimits {
  maxQueuedBytes: number
  handshakeTimeoutMs: number
  onDrop(s: Session, first: boolean): void
  onSent(frames: number, bytes: number): void
  onReceived(bytes: number): void
}

/**
 * Share of a limited (relayed) connection's data limit our stream may use before we close the connection on purpose
 * and let the dialer open a fresh one: the relay counts both directions and every protocol, and it drops whatever it
 * has received but not yet forwarded when it cuts, so we stop short of the limit instead of being cut mid-burst.
 */
const LIMITED_SHARE = 0.75
const LIMITED_OVERHEAD_BYTES = 8 * 1024
const LIMITED_MIN_BUDGET = 4 * 1024
/** Bytes always left unused of what the connection itself reports as remaining (the other end's bytes in flight). */
const LIMITED_MARGIN_BYTES = 4 * 1024
/** A sync message sent on a limited connection is at most this fraction of its budget: several fit in each one. */
const LIMITED_MESSAGE_PARTS = 4
/** Fraction of a limited connection's duration after which we renew it ourselves. */
const LIMITED_DURATION_SHARE = 0.9
/**
 * Longest we keep a connection whose limits include a duration. js-libp2p relays (circuit-relay-v2 4.x) send their
 * duration limit in milliseconds where clients read seconds, so the reported time is 1000× too long; the default
 * relay limit is 2 minutes.
 */
const LIMITED_MAX_AGE_MS = 110_000

/** What {@link Session.messageHint} says for a limited connection whose budget is not known (yet, or any more). */
export const MIN_MESSAGE_HINT = LIMITED_MIN_BUDGET / LIMITED_MESSAGE_PARTS

/** One stream of our protocol with one remote node, from HELLO to close. */
export class Session {
  state: 'handshake' | 'open' | 'ended' = 'handshake'
  hello: Hello | undefined
  /** Set once the stream is no longer the peer's active one: flush, close our side, keep reading until the end. */
  retired = false
  /** Set once a limited connection's budget is spent: nothing more is sent, the connection is being closed. */
  renewing = false
  events: SessionEvents
  readonly remote: string
  private readonly decoder = new FrameDecoder(MAX_HELLO_BYTES)
  private out: Uint8Array[] = []
  private outBytes = 0
  private flushQueued = false
  private draining = false
  private overflowing = false
  /** Bytes of our stream (both directions) a limited connection may still carry; undefined when unlimited. */
  private budget: number | undefined
  private used = 0
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    readonly stream: Stream,
    readonly connection: Connection,
    /** libp2p PeerId (string) of the side that opened the stream. */
    readonly opener: string,
    events: SessionEvents,
    /** Queue bound, timeouts and counters: those of the transport that owns the session. */
    public limits: SessionLimits,
  ) {
    this.events = events
    this.remote = connection.remotePeer.toString()
    this.timer = setTimeout(() => {
      if (this.state === 'handshake') this.fail(new Libp2pProtocolError(`no HELLO within ${limits.handshakeTimeoutMs} ms`))
    }, limits.handshakeTimeoutMs)
    unref(this.timer)
    stream.addEventListener('message', (evt) => {
      const data = evt.data
      this.receive(data instanceof Uint8Array ? data : data.subarray())
    })
    stream.addEventListener('close', () => this.end())
    stream.addEventListener('remoteCloseWrite', () => {
      // The remote is done with this stream: close ours too (flushing), and the session is over.
      this.closeWrite()
      this.end()
    })
    if (stream.status !== 'open') queueMicrotask(() => this.end())
  }

  get peer(): PeerId | undefined {
    return this.hello?.peerId
  }

  get limited(): boolean {
    return this.connection.limits != null
  }

  /** Largest sync message worth sending on this session (see `Libp2pTransport.maxMessageSize`). */
  messageHint(): number | undefined {
    if (this.budget === undefined) return undefined
    return Math.max(MIN_MESSAGE_HINT, Math.floor(this.budget / LIMITED_MESSAGE_PARTS))
  }

  /** Switches to data frames after the HELLO exchange. */
  open(maxFrameSize: number): void {
    this.state = 'open'
    this.decoder.limit = maxFrameSize
    clearTimeout(this.timer)
    this.timer = undefined
    const limits = this.connection.limits
    if (limits?.bytes != null) {
      this.budget = Math.max(LIMITED_MIN_BUDGET, Math.floor(Number(limits.bytes) * LIMITED_SHARE) - LIMITED_OVERHEAD_BYTES)
    }
    if (limits?.seconds != null && limits.seconds > 0) {
      this.timer = setTimeout(() => this.renew(), Math.min(limits.seconds * 1000 * LIMITED_DURATION_SHARE, LIMITED_MAX_AGE_MS))
      unref(this.timer)
    }
  }

  /** Queues one encoded frame; false when it was dropped. */
  enqueue(encoded: Uint8Array): boolean {
    if (this.state === 'ended' || this.retired || this.renewing) return false
    if (this.outBytes + encoded.byteLength > this.limits.maxQueuedBytes && this.out.length > 0) {
      this.limits.onDrop(this, !this.overflowing)
      this.overflowing = true
      return false
    }
    this.out.push(encoded)
    this.outBytes += encoded.byteLength
    this.scheduleFlush()
    return true
  }

  /** Hands the queued frames over to another session (when this one loses a duplicate race or ends). */
  takeQueue(): Uint8Array[] {
    const q = this.out
    this.out = []
    this.outBytes = 0
    return q
  }

  retire(): void {
    if (this.retired || this.state === 'ended') return
    this.retired = true
    if (this.out.length === 0 && !this.draining) this.closeWrite()
  }

  fail(err: Error, quiet = false): void {
    if (this.state === 'ended') return
    if (!quiet) this.events.error(this, err)
    this.stream.abort(err)
    this.end()
  }

  /** Closes gracefully within `ms`, else resets. */
  async shutdown(ms: number): Promise<void> {
    if (this.state === 'ended' && this.stream.status !== 'open') return
    this.out = []
    this.outBytes = 0
    try {
      await this.stream.close({ signal: AbortSignal.timeout(ms) })
    } catch {
      this.stream.abort(new TransportStateError('syncmesh transport stopped'))
    }
    this.end()
  }

  end(): void {
    if (this.state === 'ended') return
    this.state = 'ended'
    clearTimeout(this.timer)
    this.events.end(this) // the owner may take the unsent frames over to another stream
    this.out = []
    this.outBytes = 0
  }

  /** Sends whatever is queued right away (used for HELLO, so it precedes anything else on the connection). */
  flushNow(): void {
    if (this.flushQueued) this.flush()
  }

  /**
   * The limited connection has carried its share (or lived most of its time): stop sending, close our stream and the
   * connection gracefully, so everything sent so far arrives, and a fresh connection gets a fresh allowance. What we
   * did not send is not lost for good: the sync engine resumes from version vectors on the next `peer:up`.
   */
  private renew(): void {
    if (this.renewing || this.state === 'ended') return
    this.renewing = true
    this.out = []
    this.outBytes = 0
    void (async () => {
      try {
        await this.stream.close({ signal: AbortSignal.timeout(5_000) })
      } catch {
        // closed or reset meanwhile
      }
      try {
        await this.connection.close({ signal: AbortSignal.timeout(5_000) })
      } catch (err) {
        this.connection.abort(toError(err))
      }
    })()
  }

  /** Bytes this session may still send: unlimited, or what is left of a limited connection's allowance. */
  private allowance(): number {
    if (this.budget === undefined) return Infinity
    const remaining = this.connection.limits?.bytes // a live count on js-libp2p relayed connections (all protocols)
    const live = remaining == null ? Infinity : Number(remaining) - LIMITED_MARGIN_BYTES
    return Math.min(this.budget - this.used, live)
  }

  private closeWrite(): void {
    if (this.stream.writeStatus !== 'writable') return
    this.stream.close().catch((err: unknown) => this.stream.abort(toError(err)))
  }

  private receive(bytes: Uint8Array): void {
    if (this.state === 'ended') return
    this.used += bytes.byteLength
    this.limits.onReceived(bytes.byteLength)
    try {
      this.decoder.push(bytes, (frame) => {
        if (this.state === 'ended') return false
        if (this.hello === undefined) {
          const hello = decodeHello(frame)
          this.hello = hello
          this.events.hello(this, hello)
        } else {
          this.events.frame(this, frame)
        }
        return (this.state as Session['state']) !== 'ended'
      })
    } catch (err) {
      this.fail(toError(err))
    }
  }

  private scheduleFlush(): void {
    if (this.flushQueued || this.draining) return
    this.flushQueued = true
    queueMicrotask(() => this.flush())
  }

  private flush(): void {
    this.flushQueued = false
    if (this.draining || this.state === 'ended' || this.renewing) return
    while (this.out.length > 0) {
      const left = this.allowance()
      if (this.out[0]!.byteLength > left) {
        this.renew() // the next frame does not fit in what this limited connection has left
        return
      }
      const room = Math.min(BATCH_BYTES, left)
      let n = 0
      let size = 0
      while (n < this.out.length && (n === 0 || size + this.out[n]!.byteLength <= room)) size += this.out[n++]!.byteLength
      let batch: Uint8Array
      if (n === 1) {
        batch = this.out[0]!
      } else {
        batch = new Uint8Array(size)
        let o = 0
        for (let k = 0; k < n; k++) {
          batch.set(this.out[k]!, o)
          o += this.out[k]!.byteLength
        }
      }
      this.out.splice(0, n)
      this.outBytes -= size
      this.used += size
      let more: boolean
      try {
        more = this.stream.send(batch)
      } catch (err) {
        this.fail(toError(err), true) // the stream closed under us: a normal end, not bad input
        return
      }
      this.limits.onSent(n, size)
      if (!more) {
        this.draining = true
        this.stream.onDrain().then(
          () => {
            this.draining = false
            this.flush()
          },
          () => this.end(),
        )
        return
      }
    }
    this.overflowing = false
    if (this.retired) this.closeWrite()
  }
}
