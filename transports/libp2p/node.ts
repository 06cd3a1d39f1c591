/**
 * The libp2p node a transport creates when it is not given one (TCP + WebSockets, noise, yamux, identify, circuit
 * relay, gossipsub), and what such a node needs on Node 20: the `Promise.withResolvers` polyfill, installed here,
 * explicitly, before libp2p loads, rather than as a side effect of importing the transport.
 */
import type { Libp2p } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Libp2pOptions } from 'libp2p'
import type { Libp2pTransportInit } from './types.js'

/**
 * Installs `Promise.withResolvers` when the runtime lacks it (Node 20): libp2p v3, noise 17 and yamux 8 call it, and
 * without it every inbound connection upgrade fails. Guarded: a native implementation is never replaced. Internal
 * (not exported by `syncmesh/transports/libp2p`): called where a node is created or handed to the transport, and by
 * the libp2p relay of `syncmesh serve`.
 */
export function installPromiseWithResolvers(): void {
  const P = Promise as unknown as { withResolvers?: unknown }
  if (typeof P.withResolvers === 'function') return
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function withResolvers<T>(this: PromiseConstructor) {
      let resolve!: (value: T | PromiseLike<T>) => void
      let reject!: (reason?: unknown) => void
      const C = typeof this === 'function' ? this : Promise
      const promise = new C<T>((res, rej) => {
        resolve = res
        reject = rej
      })
      return { promise, resolve, reject }
    },
  })
}

/** Creates and starts the node of a transport that was not given one. */
export async function createNode(init: Libp2pTransportInit, listen: Multiaddr[], relays: Multiaddr[], maxPeers: number): Promise<Libp2p> {
  installPromiseWithResolvers()
  const [{ createLibp2p }, { tcp }, { webSockets }, { noise }, { yamux }, { identify }, { circuitRelayTransport }] = await Promise.all([
    import('libp2p'),
    import('@libp2p/tcp'),
    import('@libp2p/websockets'),
    import('@chainsafe/libp2p-noise'),
    import('@chainsafe/libp2p-yamux'),
    import('@libp2p/identify'),
    import('@libp2p/circuit-relay-v2'),
  ])
  // @libp2p/websockets dials with the global WebSocket, which Node 20 lacks.
  if (typeof (globalThis as { WebSocket?: unknown }).WebSocket === 'undefined') {
    const ws = await import('ws')
    ;(globalThis as { WebSocket?: unknown }).WebSocket ??= ws.WebSocket
  }
  const services: Record<string, unknown> = { identify: identify() }
  const pubsubName = init.pubsub ?? 'pubsub'
  if (pubsubName !== false) {
    const { gossipsub } = await import('@libp2p/gossipsub')
    // No IP-colocation penalty: members of a room often share an address (one NAT, one machine), and past ten of
    // them gossipsub's default would graylist the rest, silencing room discovery. Announcements are signed anyway.
    services[pubsubName] = gossipsub({ allowPublishToZeroTopicPeers: true, runOnLimitedConnection: true, emitSelf: false, scoreParams: { IPColocationFactorWeight: 0 } })
  }
  const extra = init.libp2p ?? {}
  const options = {
    addresses: { listen: [...listen.map(String), ...relays.map((r) => `${r.toString()}/p2p-circuit`)] },
    transports: [tcp(), webSockets(), circuitRelayTransport()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // libp2p refuses more than 5 inbound connections per second from one address (and more than 10 upgrading at
    // once); room members sharing an address (a NAT, a LAN, one machine) that all dial their overlay neighbours at
    // once would be refused. Allow a whole overlay's worth.
    connectionManager: { inboundConnectionThreshold: Math.max(5, Math.min(2 * maxPeers, 200)), maxIncomingPendingConnections: Math.max(10, Math.min(maxPeers, 100)) },
    ...extra,
    services: { ...services, ...(extra.services ?? {}) },
  }
  return (await createLibp2p(options as Libp2pOptions<Record<string, unknown>>)) as unknown as Libp2p
}
