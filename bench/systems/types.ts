/** The small interface every system under test implements, so the workloads never touch a library directly. */
import type { Entry, Rec, Update } from '../data.js'

/** The systems the harness knows, in table order. */
export const SYSTEM_NAMES = ['syncmesh', 'yjs', 'automerge', 'floor'] as const

/** Name of one system under test. */
export type SystemName = (typeof SYSTEM_NAMES)[number]

/** One replica (document, store or map) of a system, holding the `records` collection. */
export interface Replica {
  /**
   * Inserts the records, one transaction per record. Systems that declare {@link System.bulkBatch} accept a
   * `perChange` > 1 and then group that many records per transaction.
   */
  insert(entries: readonly Entry[], perChange?: number): void
  /** Applies the updates, one transaction per update (or `perChange` per transaction, as for {@link insert}). */
  update(updates: readonly Update[], perChange?: number): void
  /** The full state as bytes, loadable with {@link System.load}. */
  encode(): Uint8Array
  /** The current value of a record, or undefined if the replica does not hold it. */
  get(id: string): Rec | undefined
  /** A cheap string equal across replicas iff their visible states are equal; absent = compare full snapshots. */
  digest?(): string
}

/** Replication between two replicas of the same system; every method returns the bytes it put on the wire. */
export interface Sync<R extends Replica> {
  /** `into` sends its request (state vector, heads…), `from` answers with what `into` lacks, `into` applies it. */
  pull(from: R, into: R): number
  /** A two-way anti-entropy session after which `a` and `b` hold each other's changes. */
  exchange(a: R, b: R): number
}

/** A system under test: how to make, load and sync its replicas. */
export interface System<R extends Replica = Replica> {
  readonly name: SystemName
  /**
   * Set when one transaction per op is too slow for the full workloads (automerge): bulk phases then apply this
   * many ops per transaction, and per-op rates are timed on a sample only.
   */
  readonly bulkBatch?: number
  /** A new empty replica; `peer` (0, 1, 2…) picks a distinct replica identity derived from the run's seed. */
  create(peer: number): R
  /** A replica decoded from {@link Replica.encode} output, with identity `peer`. */
  load(bytes: Uint8Array, peer: number): R
  /** Replication, if the system has any (the plain-Map floor has none). */
  readonly sync?: Sync<R>
  /** Bytes the system holds outside the JS heap and array buffers (automerge: WASM linear memory). */
  outsideHeapBytes?(): number
}

/** What each system module exports: builds the system for one seeded run. */
export type SystemFactory = (seed: number) => System
