/**
 * The protocol handler of a libp2p node ({@link Hub}): one per (node, protocol), shared by the transports of every
 * room on that node. An inbound stream becomes a session whose HELLO names its room; the hub hands it to the
 * transport serving that room, or resets it quietly when there is none.
 */
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { TransportStateError } from '../errors.js'
import type { Session, SessionEvents } from './session.js'
import type { Libp2pErrorContext } from './types.js'
import { type Hello, Libp2pProtocolError } from './wire.js'

/** What the hub needs of a room's transport. */
export interface HubRoom {
  /** Wraps a stream in a session with the transport's limits, reporting to `events`. */
  createSession(stream: Stream, connection: Connection, opener: string, events: SessionEvents): Session
  /** An inbound stream said HELLO for this room: the transport takes the session over. */
  adoptInbound(s: Session, hello: Hello): void
  /** Malformed input on a stream (counted and reported). */
  protocolError(err: Error, context: Libp2pErrorContext): void
}

/** One protocol handler per (node, protocol), shared by the transports of every room on that node. */
export class Hub {
  readonly rooms = new Map<string, HubRoom>()
  private handled: Promise<void> | undefined

  constructor(
    readonly node: Libp2p,
    readonly protocol: string,
    private readonly forget: () => void,
  ) {}

  async attach(topic: string, t: HubRoom): Promise<void> {
    if (this.rooms.has(topic)) {
      throw new TransportStateError('another syncmesh transport already serves this room on this libp2p node')
    }
    this.rooms.set(topic, t)
    this.handled ??= this.node.handle(this.protocol, (stream, connection) => this.inbound(stream, connection), {
      runOnLimitedConnection: true,
      maxInboundStreams: 64,
      maxOutboundStreams: 64,
    })
    try {
      await this.handled
    } catch (err) {
      this.handled = undefined
      this.rooms.delete(topic)
      if (this.rooms.size === 0) this.forget()
      throw err
    }
  }

  async detach(topic: string, t: HubRoom): Promise<void> {
    if (this.rooms.get(topic) !== t) return
    this.rooms.delete(topic)
    if (this.rooms.size > 0) return
    this.forget()
    const handled = this.handled
    this.handled = undefined
    if (!handled) return
    const removing = (async () => {
      await handled.catch(() => undefined)
      if (this.node.status === 'started') await Promise.resolve(this.node.unhandle(this.protocol)).catch(() => undefined)
    })()
    // A hub created for this node meanwhile must not register before we unregister (it would lose its handler).
    unhandling.set(this.node, removing)
    await removing
    if (unhandling.get(this.node) === removing) unhandling.delete(this.node)
  }

  private inbound(stream: Stream, connection: Connection): void {
    const hub = this
    const pending: SessionEvents = {
      hello(s, hello) {
        const t = hub.rooms.get(hello.topic)
        if (!t) {
          // Speaks our protocol, but not in a room we serve: not a member. Quiet reset.
          s.fail(new Libp2pProtocolError('no such room here'), true)
          return
        }
        t.adoptInbound(s, hello)
      },
      frame() {},
      end() {},
      error(s, err) {
        // Before the room is known, errors go to every room's onError (there is usually one).
        for (const t of hub.rooms.values()) t.protocolError(err, { remote: s.remote })
      },
    }
    const any = this.rooms.values().next().value
    if (!any) {
      stream.abort(new Libp2pProtocolError('not serving any room'))
      return
    }
    any.createSession(stream, connection, connection.remotePeer.toString(), pending)
  }
}

const hubs = new WeakMap<Libp2p, Map<string, Hub>>()
/** Protocol handlers being removed, per node. */
const unhandling = new WeakMap<Libp2p, Promise<void>>()

export async function hubFor(node: Libp2p, protocol: string): Promise<Hub> {
  await unhandling.get(node)
  let byProtocol = hubs.get(node)
  if (!byProtocol) hubs.set(node, (byProtocol = new Map()))
  let hub = byProtocol.get(protocol)
  if (!hub) {
    const map = byProtocol
    hub = new Hub(node, protocol, () => {
      map.delete(protocol)
      if (map.size === 0) hubs.delete(node)
    })
    byProtocol.set(protocol, hub)
  }
  return hub
}


