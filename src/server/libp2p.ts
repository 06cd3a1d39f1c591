/**
 * A libp2p relay and rendezvous node for syncmesh rooms (`npx syncmesh serve --libp2p`): circuit-relay-v2 server,
 * identify, and gossipsub, listening on TCP and WebSockets. It holds no room data and is no room member.
 *
 * - Nodes that cannot be dialed listen through it (`libp2pTransport({ relay: [addr] })`); relayed connections carry
 *   the relay's limits (`relayDataLimit` / `relayDurationMs`), which the transport renews transparently.
 * - Rooms discover through it: a gossipsub node only forwards topics it subscribes to, so the relay subscribes to
 *   every syncmesh room topic (`/syncmesh/room/…`, a hash: room names never reach it) that a connected peer
 *   subscribes to, and leaves it when the last one leaves. Members that only know this node (`bootstrap: [addr]`)
 *   hear each other's announcements through it and then dial each other directly (or through the relay).
 *
 * libp2p is an optional peer dependency: the packages are loaded with `import()`, and a missing one gives
 * {@link Libp2pMissingError} naming what to install.
 *
 * The CLI (`src/server/cli.ts`) loads this module with `import()` only for `serve --libp2p`, so the signaling server
 * and its CommonJS build never touch libp2p (which is ESM-only).
 */
import { SyncmeshError } from '../../crdt/errors.js'
import { installPromiseWithResolvers } from '../../transports/libp2p/node.js'

/** The packages the libp2p relay loads; all are optional peer dependencies of syncmesh. */
export const LIBP2P_PACKAGES: readonly string[] = [
  'libp2p',
  '@libp2p/tcp',
  '@libp2p/websockets',
  '@chainsafe/libp2p-noise',
  '@chainsafe/libp2p-yamux',
  '@libp2p/identify',
  '@libp2p/circuit-relay-v2',
  '@libp2p/gossipsub',
]

/** Prefix of the gossipsub topics syncmesh rooms meet under (see `roomTopicOf` in transports/libp2p/wire.ts). */
export const ROOM_TOPIC_PREFIX = '/syncmesh/room/'

/** libp2p packages are not installed (they are optional peer dependencies). */
export class Libp2pMissingError extends SyncmeshError {
  override readonly code = 'LIBP2P_MISSING'
  constructor(
    /** The packages that could not be loaded. */
    readonly missing: readonly string[],
  ) {
    super(`the libp2p relay needs these packages, which are not installed: ${missing.join(', ')}\n  npm install ${LIBP2P_PACKAGES.join(' ')}`)
  }
}

/** Options of {@link startLibp2pRelay}. */
export interface Libp2pRelayInit {
  /**
   * Interface to listen on (IPv4 or IPv6 literal).
   * @default '127.0.0.1'
   */
  host?: string
  /**
   * TCP port; 0 picks a free one.
   * @default 4001
   */
  port?: number
  /**
   * WebSockets port; 0 picks a free one.
   * @default port + 1 (0 when port is 0)
   */
  wsPort?: number
  /**
   * Relay reservations held at once.
   * @default 256
   */
  maxReservations?: number
  /**
   * Bytes a relayed connection may carry (both directions) before the relay cuts it.
   * @default 131072 (128 KiB, the circuit-relay-v2 default)
   */
  relayDataLimit?: number
  /**
   * Milliseconds a relayed connection may live.
   * @default 120000
   */
  relayDurationMs?: number
  /**
   * Most room topics the relay follows at once; further ones are ignored.
   * @default 10000
   */
  maxTopics?: number
  /** One line per event (peer connected, topic followed); off by default. */
  log?: (line: string) => void
}

/** A running relay. */
export interface Libp2pRelay {
  /** The libp2p PeerId of the relay. */
  readonly peerId: string
  /** Dialable addresses, each ending in `/p2p/<peerId>`. */
  readonly multiaddrs: string[]
  /** Room topics currently followed. */
  topics(): string[]
  /** Open connections. */
  connections(): number
  /** Peers subscribed to a followed topic, and those in the relay's gossipsub mesh for it. */
  topicPeers(topic: string): { subscribers: number; mesh: number }
  /** Stops the node; idempotent. */
  close(): Promise<void>
}

/** Invalid option given to {@link startLibp2pRelay}. */
export class Libp2pRelayArgumentError extends SyncmeshError {
  override readonly code = 'LIBP2P_RELAY_ARGUMENT'
}

function intIn(name: string, v: number | undefined, fallback: number, min: number, max: number): number {
  if (v === undefined) return fallback
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new Libp2pRelayArgumentError(`${name} must be an integer in ${min}..${max}, got ${String(v)}`)
  return v
}

async function load<T>(name: string, missing: string[]): Promise<T | undefined> {
  try {
    return (await import(name)) as T
  } catch (err) {
    const code = (err as { code?: string }).code
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      missing.push(name)
      return undefined
    }
    throw err
  }
}

/** Starts a relay / rendezvous node; rejects with {@link Libp2pMissingError} when libp2p is not installed. */
export async function startLibp2pRelay(init: Libp2pRelayInit = {}): Promise<Libp2pRelay> {
  const host = init.host ?? '127.0.0.1'
  if (typeof host !== 'string' || !/^[0-9a-fA-F.:]+$/.test(host)) throw new Libp2pRelayArgumentError(`host must be an IP address literal, got ${JSON.stringify(host)}`)
  const port = intIn('port', init.port, 4001, 0, 65535)
  const wsPort = intIn('wsPort', init.wsPort, port === 0 ? 0 : port + 1, 0, 65535)
  const maxReservations = intIn('maxReservations', init.maxReservations, 256, 1, 1_000_000)
  const dataLimit = intIn('relayDataLimit', init.relayDataLimit, 128 * 1024, 1024, Number.MAX_SAFE_INTEGER)
  const durationMs = intIn('relayDurationMs', init.relayDurationMs, 120_000, 1000, 2 ** 31 - 1)
  const maxTopics = intIn('maxTopics', init.maxTopics, 10_000, 1, 1_000_000)
  const log = init.log ?? (() => {})
  installPromiseWithResolvers()

  type M = Record<string, (...args: never[]) => unknown>
  const missing: string[] = []
  const mods = await Promise.all(LIBP2P_PACKAGES.map((name) => load<M>(name, missing)))
  if (missing.length > 0) throw new Libp2pMissingError(missing)
  const [core, tcpMod, wsMod, noiseMod, yamuxMod, identifyMod, relayMod, gossipMod] = mods as M[]
  // @libp2p/websockets dials with the global WebSocket, which Node 20 lacks (the relay mostly listens, but identify
  // and relay reservations may dial back).
  if (typeof (globalThis as { WebSocket?: unknown }).WebSocket === 'undefined') {
    const ws = await import('ws')
    ;(globalThis as { WebSocket?: unknown }).WebSocket ??= ws.WebSocket
  }
  const ip = host.includes(':') ? 'ip6' : 'ip4'
  const options = {
    addresses: { listen: [`/${ip}/${host}/tcp/${port}`, `/${ip}/${host}/tcp/${wsPort}/ws`] },
    transports: [tcpMod!.tcp!(), wsMod!.webSockets!()],
    connectionEncrypters: [noiseMod!.noise!()],
    streamMuxers: [yamuxMod!.yamux!()],
    // Many clients may share one address (a NAT, one machine): libp2p's default of 5 inbound connections per second
    // per address and 10 upgrading at once would turn most of them away when they arrive together.
    connectionManager: { maxConnections: Math.max(300, maxReservations * 2), inboundConnectionThreshold: 1000, maxIncomingPendingConnections: 256 },
    services: {
      identify: identifyMod!.identify!(),
      relay: relayMod!.circuitRelayServer!({
        reservations: { maxReservations, defaultDataLimit: BigInt(dataLimit), defaultDurationLimit: durationMs } as never,
      } as never),
      // A hub, not a peer among peers: members often have no other connection at first, so the relay keeps every
      // subscriber of a room topic in its mesh (gossipsub's default mesh of 6 would leave the rest to lazy gossip).
      pubsub: gossipMod!.gossipsub!({
        allowPublishToZeroTopicPeers: true,
        runOnLimitedConnection: true,
        emitSelf: false,
        D: 64,
        Dlo: 32,
        Dhi: 1024,
        Dscore: 16,
        Dout: 2,
        Dlazy: 16,
        // Many members may share one address (a NAT, or one machine): gossipsub's default IP-colocation penalty would
        // graylist all but the first ten, and with them their rooms' discovery.
        scoreParams: { IPColocationFactorWeight: 0 },
      } as never),
    },
  }
  interface NodeLike {
    peerId: { toString(): string }
    getMultiaddrs(): { toString(): string }[]
    getConnections(): unknown[]
    stop(): Promise<void>
    addEventListener(type: string, fn: (evt: CustomEvent) => void): void
    services: { pubsub: PubSub }
  }
  interface PubSub {
    subscribe(topic: string): void
    unsubscribe(topic: string): void
    getSubscribers(topic: string): unknown[]
    getTopics(): string[]
    getMeshPeers?(topic: string): unknown[]
    addEventListener(type: string, fn: (evt: CustomEvent) => void): void
  }
  const node = (await (core!.createLibp2p as (o: unknown) => Promise<unknown>)(options)) as NodeLike
  const ps = node.services.pubsub
  const followed = new Set<string>()
  // Follow room topics peers subscribe to; leave a topic (after a grace period) when no peer subscribes anymore.
  const review = (topic: string): void => {
    if (!followed.has(topic) || ps.getSubscribers(topic).length > 0) return
    followed.delete(topic)
    try {
      ps.unsubscribe(topic)
    } catch {
      // stopping
    }
    log(`left topic ${topic.slice(ROOM_TOPIC_PREFIX.length, ROOM_TOPIC_PREFIX.length + 12)}…`)
  }
  const timers = new Set<ReturnType<typeof setTimeout>>()
  ps.addEventListener('subscription-change', (evt) => {
    const { subscriptions } = evt.detail as { subscriptions: { topic: string; subscribe: boolean }[] }
    for (const s of subscriptions) {
      if (typeof s.topic !== 'string' || !s.topic.startsWith(ROOM_TOPIC_PREFIX) || s.topic.length > 200) continue
      if (s.subscribe) {
        if (followed.has(s.topic) || followed.size >= maxTopics) continue
        followed.add(s.topic)
        ps.subscribe(s.topic)
        log(`following topic ${s.topic.slice(ROOM_TOPIC_PREFIX.length, ROOM_TOPIC_PREFIX.length + 12)}…`)
      } else {
        const t = setTimeout(() => {
          timers.delete(t)
          review(s.topic)
        }, 5_000)
        t.unref?.()
        timers.add(t)
      }
    }
  })
  node.addEventListener('peer:connect', (evt) => log(`peer connected ${String(evt.detail)}`))
  node.addEventListener('peer:disconnect', (evt) => {
    log(`peer disconnected ${String(evt.detail)}`)
    // gossipsub drops a gone peer's subscriptions without an event: re-check followed topics soon.
    const t = setTimeout(() => {
      timers.delete(t)
      for (const topic of [...followed]) review(topic)
    }, 5_000)
    t.unref?.()
    timers.add(t)
  })
  let closing: Promise<void> | undefined
  return {
    peerId: node.peerId.toString(),
    get multiaddrs() {
      return node.getMultiaddrs().map(String)
    },
    topics: () => [...followed],
    connections: () => node.getConnections().length,
    topicPeers: (topic) => ({ subscribers: ps.getSubscribers(topic).length, mesh: ps.getMeshPeers?.(topic).length ?? 0 }),
    close() {
      closing ??= (async () => {
        for (const t of timers) clearTimeout(t)
        timers.clear()
        await node.stop()
      })()
      return closing
    },
  }
}
