/**
 * What a replica tells people who debug a sync: {@link Replica.inspect} (peers with their vectors, lag, transport
 * and traffic, pending writes, the last events) and {@link Replica.conflicts} (recent values lost to other writers).
 * Both are kept in bounded rings, so an inspected replica costs the same memory after a day as after a minute.
 */
import type { Timestamp } from '../crdt/timestamp.js'
import type { VersionVector } from '../crdt/version-vector.js'
import type { PeerStatus } from './sync/engine.js'
import type { Traffic } from './sync/gate.js'

/** A version vector as plain data: per origin id, the newest write held from it. */
export type VectorSnapshot = Record<string, Timestamp>

/** One entry of {@link ReplicaInspection.events}. */
export interface InspectEvent {
  /** When it happened, ms since the epoch. */
  readonly at: number
  readonly type: 'peer:join' | 'peer:leave' | 'sync' | 'conflict' | 'error' | 'online' | 'offline' | 'collect' | 'rebase'
  readonly peer?: string
  /** For errors, `Name: message`; for conflicts, `collection/id.field`; for collect and rebase, how many tombstones or writes were dropped. */
  readonly detail?: string
}

/** A network peer as {@link ReplicaInspection.peers} lists it. */
export interface PeerInspection extends PeerStatus {
  /** Its version vector as it last reported it; undefined before it has. */
  readonly vector: VectorSnapshot | undefined
  /** Sync frames and bytes exchanged with it, summed over every transport, before any sealing. */
  readonly traffic: Readonly<Traffic>
}

/** What {@link Replica.inspect} returns: a snapshot, safe to log or to serialise as JSON. */
export interface ReplicaInspection {
  readonly peerId: string
  /** The origin id this replica's writes carry. */
  readonly writerId: string
  readonly vector: VectorSnapshot
  /** Per collection, visible records and deleted ones still kept. */
  readonly collections: Record<string, { visible: number; deleted: number }>
  /** Local writes not yet durable. */
  readonly pending: number
  readonly online: boolean
  /** Whether this replica runs the transports (see "Tabs and shared storage"): on others, traffic is the leader's and not listed. */
  readonly leader: boolean
  readonly peers: readonly PeerInspection[]
  /** The most recent events, oldest first. */
  readonly events: readonly InspectEvent[]
}

/** A value lost to another writer's write, as {@link Replica.conflicts} lists it. */
export interface ConflictRecord {
  /** When this replica saw it, ms since the epoch. */
  readonly at: number
  readonly collection: string
  readonly id: string
  readonly field: string
  readonly winner: { readonly value: unknown; readonly timestamp: Timestamp }
  readonly loser: { readonly value: unknown; readonly timestamp: Timestamp }
}

/** The last `size` items pushed, oldest first. */
export class Ring<T> {
  private readonly items: T[] = []
  private next = 0

  constructor(private readonly size: number) {}

  /** Adds an item, dropping the oldest when full. */
  push(item: T): void {
    if (this.size <= 0) return
    if (this.items.length < this.size) this.items.push(item)
    else this.items[this.next] = item
    this.next = (this.next + 1) % this.size
  }

  /** The items, oldest first. */
  toArray(): T[] {
    return this.items.length < this.size ? [...this.items] : [...this.items.slice(this.next), ...this.items.slice(0, this.next)]
  }
}

/** A version vector as plain data. */
export function vectorSnapshot(vv: VersionVector): VectorSnapshot {
  return Object.fromEntries([...vv].map(([origin, ts]) => [origin, { ...ts }]))
}

/** Traffic summed over several transports. */
export function sumTraffic(parts: readonly (Traffic | undefined)[]): Traffic {
  const sum: Traffic = { framesIn: 0, bytesIn: 0, framesOut: 0, bytesOut: 0, lastHeard: 0 }
  for (const t of parts) {
    if (!t) continue
    sum.framesIn += t.framesIn
    sum.bytesIn += t.bytesIn
    sum.framesOut += t.framesOut
    sum.bytesOut += t.bytesOut
    sum.lastHeard = Math.max(sum.lastHeard, t.lastHeard)
  }
  return sum
}
