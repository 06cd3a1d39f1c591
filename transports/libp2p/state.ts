/**
 * What the parts of a running libp2p transport (dialer, discovery, peer table) read from it: one interface they all
 * extend, implemented by the transport (transport.ts), so that none of them imports it.
 */
import type { Libp2p } from '@libp2p/interface'
import type { Membership } from './membership.js'
import type { Timers } from './timers.js'

/** The state a started transport shares with its parts. */
export interface TransportState {
  /** The libp2p node in use. */
  readonly current: Libp2p | undefined
  /** Incremented by every start and stop: work of an older generation stands down. */
  readonly generation: number
  /** Our libp2p PeerId. */
  readonly selfNode: string
  readonly membership: Membership
  readonly timers: Timers
  /** Started or starting. */
  isLive(): boolean
  /** Whether a live session with that node exists. */
  hasSessionWith(remote: string): boolean
}
