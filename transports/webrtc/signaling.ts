/**
 * A client of a y-webrtc-compatible signaling server (y-webrtc's own `bin/server.js`, or syncmesh's server), used by
 * the WebRTC transport. The protocol is JSON text frames over one WebSocket:
 *
 * - client → server: `{type:'subscribe', topics:[t]}`, `{type:'unsubscribe', topics:[t]}`,
 *   `{type:'publish', topic:t, data}`, `{type:'ping'}`;
 * - server → client: every publish on a subscribed topic, sent back to every subscriber (the sender included) with
 *   `clients` (the subscriber count) added; `{type:'pong'}` answers a ping.
 *
 * The client subscribes to one topic, hands the `data` of every publish on it to its owner (after a size check and a
 * `JSON.parse` that cannot throw out of the handler), reconnects with jittered exponential backoff whenever the socket
 * closes or goes silent, and re-subscribes on every reconnect. What `data` means is the owner's business.
 */

/** The WebSocket constructor the transport uses: the browser's, Node 22's global, or the `ws` package's. */
export type WebSocketConstructor = new (url: string) => unknown

/** The part of a WebSocket the client touches (the browser API, which `ws` also implements). */
interface WebSocketLike {
  readonly readyState: number
  send(data: string): void
  close(code?: number, reason?: string): void
  onopen: ((ev: unknown) => void) | null
  onclose: ((ev: unknown) => void) | null
  onerror: ((ev: unknown) => void) | null
  onmessage: ((ev: { data: unknown }) => void) | null
}

const OPEN = 1

/** Reconnection delays: exponential from `initialMs` up to `maxMs`, each drawn uniformly from [d/2, d]. */
export interface BackoffInit {
  /**
   * First delay, in ms.
   * @default 500
   */
  initialMs?: number
  /**
   * Largest delay, in ms.
   * @default 30_000
   */
  maxMs?: number
}

/** The delay before retry number `attempt` (0-based), with "equal jitter": half fixed, half random. */
export function backoffDelay(attempt: number, init: Required<BackoffInit>, random: () => number = Math.random): number {
  const exp = Math.min(init.maxMs, init.initialMs * 2 ** Math.min(attempt, 30))
  return Math.round(exp / 2 + (random() * exp) / 2)
}

/** Options of {@link SignalingClient}. */
export interface SignalingClientInit {
  readonly url: string
  readonly topic: string
  readonly WebSocket: WebSocketConstructor
  /** Extra constructor argument (the `ws` package's options, e.g. `maxPayload`); omitted when undefined. */
  readonly socketOptions?: object
  readonly backoff: Required<BackoffInit>
  /** Text messages longer than this (in UTF-16 code units) are ignored unparsed. */
  readonly maxMessageChars: number
  /** Interval of application-level pings; a socket silent for two intervals is closed and reopened. */
  readonly pingIntervalMs: number
  /** The socket is open and subscribed (on the first connection and after every reconnect). */
  readonly onOpen: () => void
  /** The `data` of a publish on the topic (any JSON value; the owner validates it). */
  readonly onData: (data: unknown) => void
  /** The socket closed (it will be reopened unless the client was closed). */
  readonly onClose?: () => void
}

/** One signaling server connection that keeps itself open until {@link SignalingClient.close}. */
export class SignalingClient {
  private ws: WebSocketLike | undefined
  private closed = false
  private attempt = 0
  private heardSinceOpen = false
  private lastHeard = 0
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  private pingTimer: ReturnType<typeof setInterval> | undefined
  private connectTimer: ReturnType<typeof setTimeout> | undefined
  /** Times the socket opened (for tests and status). */
  opens = 0

  constructor(private readonly init: SignalingClientInit) {}

  /** Whether the socket is open (and therefore subscribed). */
  get connected(): boolean {
    return this.ws !== undefined && this.ws.readyState === OPEN
  }

  get url(): string {
    return this.init.url
  }

  /** Opens the first connection. */
  start(): void {
    this.connect()
  }

  /** Publishes `data` on the topic; returns false (nothing sent) when the socket is not open. */
  publish(data: unknown): boolean {
    return this.sendJson({ type: 'publish', topic: this.init.topic, data })
  }

  /** Unsubscribes (best effort) and closes for good; no reconnection, no more callbacks. */
  close(): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.reconnectTimer)
    clearTimeout(this.connectTimer)
    clearInterval(this.pingTimer)
    const ws = this.ws
    this.ws = undefined
    if (ws) {
      this.sendJson({ type: 'unsubscribe', topics: [this.init.topic] }, ws)
      detach(ws)
      // An error event may still come from a socket closed while connecting: keep a no-op handler on it.
      ws.onerror = () => {}
      try {
        ws.close(1000, 'bye')
      } catch {
        // already closing
      }
    }
  }

  private connect(): void {
    if (this.closed) return
    let ws: WebSocketLike
    try {
      const Ctor = this.init.WebSocket as unknown as new (url: string, options?: object) => WebSocketLike
      ws = this.init.socketOptions === undefined ? new Ctor(this.init.url) : new Ctor(this.init.url, this.init.socketOptions)
    } catch {
      this.scheduleReconnect()
      return
    }
    this.ws = ws
    this.heardSinceOpen = false
    // A socket stuck in CONNECTING (a black-holed address) is given up after two ping intervals.
    this.connectTimer = setTimeout(() => {
      if (this.ws === ws && ws.readyState !== OPEN) this.dropSocket(ws)
    }, 2 * this.init.pingIntervalMs)
    ws.onopen = () => {
      if (this.ws !== ws) return
      clearTimeout(this.connectTimer)
      this.opens++
      this.lastHeard = Date.now()
      this.sendJson({ type: 'subscribe', topics: [this.init.topic] }, ws)
      clearInterval(this.pingTimer)
      this.pingTimer = setInterval(() => this.ping(ws), this.init.pingIntervalMs)
      this.init.onOpen()
    }
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return
      this.lastHeard = Date.now()
      if (!this.heardSinceOpen) {
        // The server answered on this connection: it is healthy, so the next failure starts from the first delay.
        this.heardSinceOpen = true
        this.attempt = 0
      }
      this.receive(ev.data)
    }
    ws.onclose = () => {
      if (this.ws === ws) this.dropSocket(ws)
    }
    ws.onerror = () => {
      // 'close' follows an error; a socket that failed while connecting may not emit it in every implementation.
      if (this.ws === ws && ws.readyState !== OPEN) this.dropSocket(ws)
    }
  }

  private ping(ws: WebSocketLike): void {
    if (this.ws !== ws) return
    if (Date.now() - this.lastHeard > 2 * this.init.pingIntervalMs) {
      this.dropSocket(ws) // silent: a half-open TCP connection or a hung server
      return
    }
    this.sendJson({ type: 'ping' }, ws)
  }

  /** Forgets the socket, closes it, and schedules the next attempt. */
  private dropSocket(ws: WebSocketLike): void {
    if (this.ws !== ws) return
    this.ws = undefined
    clearTimeout(this.connectTimer)
    clearInterval(this.pingTimer)
    detach(ws)
    ws.onerror = () => {}
    try {
      ws.close()
    } catch {
      // ignore
    }
    if (this.closed) return
    this.init.onClose?.()
    this.scheduleReconnect()
  }

  private scheduleReconnect(): void {
    if (this.closed) return
    clearTimeout(this.reconnectTimer)
    const delay = backoffDelay(this.attempt++, this.init.backoff)
    this.reconnectTimer = setTimeout(() => this.connect(), delay)
  }

  private sendJson(message: unknown, ws: WebSocketLike | undefined = this.ws): boolean {
    if (!ws || ws.readyState !== OPEN) return false
    try {
      ws.send(JSON.stringify(message))
      return true
    } catch {
      return false
    }
  }

  private receive(raw: unknown): void {
    let text: string
    if (typeof raw === 'string') text = raw
    else if (raw instanceof ArrayBuffer || ArrayBuffer.isView(raw)) {
      const bytes = raw instanceof ArrayBuffer ? new Uint8Array(raw) : new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength)
      if (bytes.byteLength > this.init.maxMessageChars * 3) return
      text = new TextDecoder().decode(bytes)
    } else return // a Blob or anything else: not this protocol
    if (text.length > this.init.maxMessageChars) return
    let message: unknown
    try {
      message = JSON.parse(text)
    } catch {
      return
    }
    if (!isObject(message) || message['type'] !== 'publish' || message['topic'] !== this.init.topic) return
    try {
      this.init.onData(message['data'])
    } catch (error) {
      // The owner validates what it reads; anything it throws is a bug, surfaced without breaking the socket.
      setTimeout(() => {
        throw error
      }, 0)
    }
  }
}

function detach(ws: WebSocketLike): void {
  ws.onopen = null
  ws.onmessage = null
  ws.onclose = null
}

/** A plain JSON object (not null, not an array). */
export function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x)
}
