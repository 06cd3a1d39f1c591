/**
 * The y-webrtc signaling protocol: the server's text WebSocket messages, so `WebrtcProvider({ signaling: [url] })`
 * works against a syncmesh server unchanged.
 *
 * ```
 * {"type":"subscribe","topics":["t",...]}    add this connection to each topic (non-string entries are skipped)
 * {"type":"unsubscribe","topics":["t",...]}  remove it
 * {"type":"publish","topic":"t",...}         re-sent verbatim, plus "clients": <subscriber count>, to EVERY
 *                                            subscriber of t — the sender included when it is subscribed (the
 *                                            text is forwarded as received with `,"clients":n` spliced in before
 *                                            its closing brace: never re-serialised, encoded once for all)
 * {"type":"ping"}                            answered {"type":"pong"}
 * ```
 *
 * Valid JSON without a known `type` is ignored (as y-webrtc does). Invalid JSON, `topics` that is not an array, a
 * topic longer than `maxTopicLength` or more than `maxTopicsPerConnection` topics close the connection with 1008.
 * Each message counts as one op against the connection's rate limit. y-webrtc topics *are* room names, so the log
 * shows them only as a short hash.
 */
import { type Conn, type Connections, type ServerCounters, ServerCloseCode, take } from './connections.js'
import { type ServerLog, topicLabel } from './log.js'
import type { ServerOptions } from './options.js'

const PONG = Buffer.from('{"type":"pong"}')

/** The signaling topics of one server and the messages about them. */
export class SignalingProtocol {
  /** Subscribers of each topic with at least one. */
  readonly topics = new Map<string, Set<Conn>>()

  constructor(
    private readonly o: ServerOptions,
    private readonly connections: Connections,
    private readonly log: ServerLog,
    private readonly counters: ServerCounters,
  ) {}

  /** Handles one text message. */
  onMessage(c: Conn, buf: Buffer, now: number): void {
    if (!take(c.ops, this.o.rate, this.o.rateBurst, 1, now)) return this.connections.violation(c, ServerCloseCode.POLICY_VIOLATION, 'rate limit exceeded')
    const text = buf.toString('utf8')
    let message: unknown
    try {
      message = JSON.parse(text)
    } catch {
      return this.connections.violation(c, ServerCloseCode.POLICY_VIOLATION, 'malformed signaling message (not JSON)')
    }
    if (message === null || typeof message !== 'object' || Array.isArray(message)) return // ignored, as y-webrtc does
    const m = message as Record<string, unknown>
    switch (m['type']) {
      case 'subscribe': {
        const list = this.topicList(c, m['topics'])
        if (list === undefined) return
        const added: string[] = []
        for (const t of list) {
          if (c.topics.has(t)) continue
          if (c.topics.size >= this.o.maxTopicsPerConnection) return this.connections.violation(c, ServerCloseCode.POLICY_VIOLATION, `more than ${this.o.maxTopicsPerConnection} topics`)
          c.topics.add(t)
          let subs = this.topics.get(t)
          if (subs === undefined) this.topics.set(t, (subs = new Set()))
          subs.add(c)
          added.push(t)
        }
        if (added.length > 0) {
          const shown = added.slice(0, 4).map(topicLabel).join(',')
          this.log(`conn=${c.id} subscribe topics=${shown}${added.length > 4 ? `,+${added.length - 4}` : ''}`)
        }
        return
      }
      case 'unsubscribe': {
        const list = this.topicList(c, m['topics'])
        if (list === undefined) return
        for (const t of list) {
          if (!c.topics.delete(t)) continue
          const subs = this.topics.get(t)
          subs?.delete(c)
          if (subs?.size === 0) this.topics.delete(t)
        }
        return
      }
      case 'publish': {
        const t = m['topic']
        if (typeof t !== 'string' || t === '') return
        const subs = this.topics.get(t)
        if (subs === undefined) return
        // Spliced rather than re-serialised: JSON.stringify recurses, and a deeply nested publish that JSON.parse
        // accepted would overflow its stack. A "clients" the sender put in is overridden (a JSON reader keeps the
        // last of duplicate keys). Encoded once, the same bytes go to every subscriber.
        const out = Buffer.from(`${text.slice(0, text.lastIndexOf('}'))},"clients":${subs.size}}`, 'utf8')
        for (const s of subs) this.sendText(s, out)
        return
      }
      case 'ping':
        this.sendText(c, PONG)
        return
      default:
        return // unknown types are ignored, as y-webrtc does
    }
  }

  /** Removes a connection from every topic. */
  detach(c: Conn): void {
    for (const t of c.topics) {
      const subs = this.topics.get(t)
      if (subs === undefined) continue
      subs.delete(c)
      if (subs.size === 0) this.topics.delete(t)
    }
    c.topics.clear()
  }

  /** The string topics of a subscribe/unsubscribe, or undefined after a violation (or when absent). */
  private topicList(c: Conn, value: unknown): string[] | undefined {
    if (value === undefined || value === null) return []
    if (!Array.isArray(value)) {
      this.connections.violation(c, ServerCloseCode.POLICY_VIOLATION, 'malformed signaling message (topics is not an array)')
      return undefined
    }
    const out: string[] = []
    for (const t of value) {
      if (typeof t !== 'string') continue // skipped, as y-webrtc does
      if (t.length > this.o.maxTopicLength) {
        this.connections.violation(c, ServerCloseCode.POLICY_VIOLATION, `topic longer than ${this.o.maxTopicLength}`)
        return undefined
      }
      out.push(t)
    }
    return out
  }

  private sendText(to: Conn, text: Buffer): void {
    if (to.closed || to.ws.readyState !== 1) return
    if (this.connections.congested(to, Date.now())) {
      this.counters.droppedSlow++
      return
    }
    try {
      this.connections.cork(to)
      to.ws.send(text, { binary: false })
    } catch {
      this.connections.drop(to, ServerCloseCode.INTERNAL_ERROR, 'send failed')
    }
  }
}
