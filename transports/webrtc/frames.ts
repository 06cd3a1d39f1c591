/**
 * Frames and backpressure of the WebRTC transport: while a data channel's `bufferedAmount` stays under
 * `maxBufferedBytes` a frame goes to the channel at once; above it, frames wait in a per-peer FIFO
 * ({@link FrameQueue}) of at most `maxQueuedBytes`, drained as the channel empties (`bufferedamountlow`, with a
 * polling fallback for stacks that never fire it); a frame that does not fit is dropped and counted.
 */
import type { DataChannelLike } from './runtime.js'

const DRAIN_POLL_MS = 5

/** FIFO of frames with a moving head (amortised O(1)). */
/** FIFO of frames with a moving head (amortised O(1)). */
export class FrameQueue {
  private items: Uint8Array[] = []
  private head = 0
  bytes = 0
  get length(): number {
    return this.items.length - this.head
  }
  peek(): Uint8Array | undefined {
    return this.items[this.head]
  }
  push(frame: Uint8Array): void {
    this.items.push(frame)
    this.bytes += frame.byteLength
  }
  shift(): void {
    const f = this.items[this.head]
    if (!f) return
    this.bytes -= f.byteLength
    this.head++
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head > 256 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
  }
  clear(): void {
    this.items = []
    this.head = 0
    this.bytes = 0
  }
}

/** The part of a peer connection that frames go through. */
export interface Channel {
  readonly dc: DataChannelLike
  readonly queue: FrameQueue
  readonly closed: boolean
  drainTimer: ReturnType<typeof setTimeout> | undefined
  /**
   * Bytes handed to the channel since the last macrotask. Some implementations (@roamhq/wrtc under load) update
   * `bufferedAmount` late, so a synchronous burst is bounded by this count as well.
   */
  burst: number
}

/** Sends frames on channels within the transport's buffer and queue bounds. */
export class Backpressure {
  /** Frames dropped because a peer's queue was full (or its channel was closing), since creation. */
  dropped = 0

  constructor(
    private readonly maxBuffered: number,
    private readonly maxQueued: number,
  ) {}

  /** Hands a frame to the channel, queues it, or drops it (counted) when the queue is full. */
  send(conn: Channel, frame: Uint8Array): void {
    if (conn.queue.length === 0 && this.buffered(conn) + frame.byteLength <= this.maxBuffered) {
      this.transmit(conn, frame)
      return
    }
    if (conn.queue.bytes + frame.byteLength > this.maxQueued) {
      this.dropped++
      return
    }
    conn.queue.push(frame.slice()) // the caller may reuse its buffer once send returns
    this.scheduleDrain(conn)
  }

  /** What the channel holds, as far as we can tell: its bufferedAmount, or this turn's burst when larger. */
  private buffered(conn: Channel): number {
    return Math.max(conn.dc.bufferedAmount, conn.burst)
  }

  private transmit(conn: Channel, frame: Uint8Array): void {
    if (conn.burst === 0) setTimeout(() => (conn.burst = 0), 0)
    conn.burst += frame.byteLength
    try {
      conn.dc.send(frame)
    } catch {
      // The channel is closing: the frame is lost, and 'close' follows.
      this.dropped++
    }
  }

  /** Moves queued frames to the channel while its buffer has room (on `bufferedamountlow`, and polled). */
  drain(conn: Channel): void {
    if (conn.closed) return
    for (let f = conn.queue.peek(); f !== undefined; f = conn.queue.peek()) {
      if (this.buffered(conn) + f.byteLength > this.maxBuffered) break
      conn.queue.shift()
      this.transmit(conn, f)
    }
    if (conn.queue.length > 0) this.scheduleDrain(conn)
  }

  private scheduleDrain(conn: Channel): void {
    if (conn.drainTimer !== undefined) return
    conn.drainTimer = setTimeout(() => {
      conn.drainTimer = undefined
      this.drain(conn)
    }, DRAIN_POLL_MS)
  }
}

/** The frame in a data-channel message (a copy); undefined for text or a Blob, which are not ours. */
export function frameOf(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data)
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength))
  return undefined
}
