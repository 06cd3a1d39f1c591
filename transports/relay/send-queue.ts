/**
 * The relay transport's outgoing ops: a bounded queue, written in as few messages as the server's limits allow and
 * paced by token buckets that mirror the server's (announced in WELCOME), so a well-behaved client never trips them.
 * Ops wait while the socket's own buffer is full; ops beyond `maxQueuedBytes` are dropped and counted.
 */
import { FrameTooLargeError, toError } from '../errors.js'
import { OPEN } from './socket.js'
import type { WebSocketLike } from './types.js'
import { type RelayLimits, encodeRelayMessage } from './wire.js'

/** Above this many bytes buffered in the socket, the queue stops writing and waits. */
const SOCKET_HIGH_WATER = 1 << 20
/** Fraction of the server's announced rates and bursts the client allows itself (clock and delivery jitter). */
const PACING_MARGIN = 0.8

const EMPTY = new Uint8Array(0)

/** Token bucket mirroring one of the server's, at {@link PACING_MARGIN} of its rate and capacity. */
class Pacer {
  private tokens: number
  private last: number
  constructor(
    private readonly rate: number,
    readonly capacity: number,
    spent: number,
  ) {
    this.last = Date.now()
    this.tokens = Math.max(0, capacity - spent)
  }
  available(): number {
    const now = Date.now()
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) * this.rate) / 1000)
    this.last = now
    return this.tokens
  }
  take(n: number): void {
    this.tokens -= n
  }
  /** Milliseconds until `n` tokens are available. */
  waitFor(n: number): number {
    const missing = n - this.available()
    return missing <= 0 ? 0 : Math.ceil((missing * 1000) / this.rate)
  }
}

/** What the queue needs from its transport. */
export interface SendQueueHost {
  /** The socket to write to; undefined unless the transport is started and joined. */
  socket(): WebSocketLike | undefined
  /** The version byte of the current connection's messages. */
  wireVersion(): number
  /** The transport's counters (the queue counts dropped ops and written messages). */
  readonly counters: { dropped: number; messagesOut: number }
  report(error: Error): void
}

/** The outgoing ops of one relay transport (see the module comment). */
export class SendQueue {
  private queue: Uint8Array[] = []
  private queueHead = 0
  private queuedBytes = 0
  private flushTimer: ReturnType<typeof setTimeout> | undefined
  private flushQueued = false
  private announced: RelayLimits | undefined
  private opsPacer: Pacer | undefined
  private bytesPacer: Pacer | undefined
  private maxOpsPerMessage = 1

  constructor(
    private readonly maxQueuedBytes: number,
    private readonly host: SendQueueHost,
  ) {}

  /** The limits of the last WELCOME (kept across reconnects). */
  get limits(): RelayLimits | undefined {
    return this.announced
  }

  /** Adopts the limits a WELCOME announced: pacing starts afresh within them. */
  welcome(l: RelayLimits): void {
    this.announced = l
    const opsCap = Math.max(1, Math.floor(l.opsBurst * PACING_MARGIN))
    this.opsPacer = new Pacer(l.opsPerSecond * PACING_MARGIN, opsCap, 1)
    this.bytesPacer = new Pacer(l.bytesPerSecond * PACING_MARGIN, Math.max(l.bytesBurst * PACING_MARGIN, Math.min(l.bytesBurst, l.maxMessageBytes)), 64)
    this.maxOpsPerMessage = Math.max(1, Math.min(l.maxOps, opsCap))
  }

  /** Queues one encoded op and schedules a flush; false (and counted as dropped) when the queue is full. */
  enqueue(op: Uint8Array): boolean {
    if (this.queuedBytes + op.byteLength > this.maxQueuedBytes) {
      this.host.counters.dropped++
      return false
    }
    this.queue.push(op)
    this.queuedBytes += op.byteLength
    this.scheduleFlush(0)
    return true
  }

  /**
   * Empties the queue and cancels a timed flush: `'lost'` (the connection went; what was queued counts as dropped)
   * or `'stopped'` (the transport stopped; a flush already scheduled for this task is forgotten too).
   */
  clear(why: 'lost' | 'stopped'): void {
    clearTimeout(this.flushTimer)
    this.flushTimer = undefined
    if (why === 'stopped') this.flushQueued = false
    else this.host.counters.dropped += this.queue.length - this.queueHead
    this.queue = []
    this.queueHead = 0
    this.queuedBytes = 0
  }

  /** Coalesces every send of the current task into as few messages as the limits allow. */
  private scheduleFlush(delayMs: number): void {
    if (delayMs <= 0) {
      if (this.flushQueued || this.flushTimer !== undefined) return
      this.flushQueued = true
      queueMicrotask(() => {
        this.flushQueued = false
        this.flush()
      })
    } else if (this.flushTimer === undefined) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined
        this.flush()
      }, delayMs)
    }
  }

  private flush(): void {
    const ws = this.host.socket()
    const limits = this.announced
    const opsPacer = this.opsPacer
    const bytesPacer = this.bytesPacer
    if (!ws || !limits || !opsPacer || !bytesPacer || ws.readyState !== OPEN) return
    while (this.queueHead < this.queue.length) {
      if (ws.bufferedAmount > SOCKET_HIGH_WATER) {
        this.compactQueue()
        return this.scheduleFlush(10)
      }
      const ops = Math.floor(opsPacer.available())
      const budget = Math.min(limits.maxMessageBytes, Math.floor(bytesPacer.available()))
      const parts: Uint8Array[] = []
      let size = 1
      while (this.queueHead < this.queue.length && parts.length < Math.min(ops, this.maxOpsPerMessage)) {
        const op = this.queue[this.queueHead]!
        if (1 + op.byteLength > limits.maxMessageBytes) {
          // Larger than the server accepts at all (maxFrameSize set above what this server allows): drop it.
          this.queue[this.queueHead++] = EMPTY
          this.queuedBytes -= op.byteLength
          this.host.counters.dropped++
          this.host.report(new FrameTooLargeError(op.byteLength, limits.maxMessageBytes - 1))
          continue
        }
        if (size + op.byteLength > budget) break
        parts.push(op)
        this.queue[this.queueHead++] = EMPTY
        this.queuedBytes -= op.byteLength
        size += op.byteLength
      }
      if (parts.length === 0) {
        if (this.queueHead >= this.queue.length) break
        const next = this.queue[this.queueHead]!
        this.compactQueue()
        return this.scheduleFlush(Math.max(1, opsPacer.waitFor(1), bytesPacer.waitFor(1 + next.byteLength)))
      }
      opsPacer.take(parts.length)
      bytesPacer.take(size)
      try {
        ws.send(encodeRelayMessage(parts, this.host.wireVersion()))
        this.host.counters.messagesOut++
      } catch (error) {
        this.host.counters.dropped += parts.length
        this.host.report(toError(error))
        return
      }
    }
    this.queue = []
    this.queueHead = 0
    this.queuedBytes = 0
  }

  /** Drops the consumed prefix of the queue once it dominates (amortised O(1) per op). */
  private compactQueue(): void {
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead)
      this.queueHead = 0
    }
  }
}
