/**
 * The language of schedules: the steps a convergence run executes (local writes and network or lifecycle events),
 * the topologies and the fault knobs. Plain data, so that a schedule prints as code and replays exactly.
 */
import type { Value } from '../../crdt/value.js'

/** Replaces a record (fields absent from `fields` are removed; an `undefined` field counts as absent, as in `put`). */
export interface PutOp {
  readonly kind: 'put'
  /** Index of the replica that writes. */
  readonly replica: number
  readonly collection: string
  readonly id: string
  readonly fields: { readonly [field: string]: Value | undefined }
}

/** Sets some fields of a record (`undefined` removes a field). */
export interface UpdateOp {
  readonly kind: 'update'
  /** Index of the replica that writes. */
  readonly replica: number
  readonly collection: string
  readonly id: string
  readonly patch: { readonly [field: string]: Value | undefined }
}

/** Deletes a record. */
export interface DeleteOp {
  readonly kind: 'delete'
  /** Index of the replica that writes. */
  readonly replica: number
  readonly collection: string
  readonly id: string
}

/**
 * Edits a collaborative text field (runs need text support: see {@link RunScheduleOptions.text}): at position
 * `index % (length + 1)` removes up to `remove` characters, then inserts `insert`. Text ops make the run load yjs.
 */
export interface TextOp {
  readonly kind: 'text'
  /** Index of the replica that edits. */
  readonly replica: number
  readonly collection: string
  readonly id: string
  readonly field: string
  readonly index: number
  readonly remove: number
  readonly insert: string
}

/** A write of a whole record or of some of its fields (every op but a text edit). */
export type RecordOp = PutOp | UpdateOp | DeleteOp

/** One local write on one replica. Consecutive ops in a schedule are issued in the same tick (so they coalesce). */
export type Op = RecordOp | TextOp

/** A network or lifecycle event of a schedule. */
export type NetworkStep =
  /** Delivers up to `count` queued items (peer events first, then frames; reordered when the faults say so). */
  | { readonly kind: 'deliver'; readonly count: number }
  /** Delivers until nothing is queued. */
  | { readonly kind: 'deliverAll' }
  /** Sets drop / duplicate rates for the next `steps` steps, then restores the run's baseline faults. */
  | { readonly kind: 'burst'; readonly dropRate: number; readonly duplicateRate: number; readonly steps: number }
  /** Splits the replicas into groups (`groups[i]` is replica i's group); links between groups are cut. Replaces an earlier partition. */
  | { readonly kind: 'partition'; readonly groups: readonly number[] }
  /** Ends the partition and restores every cut link (topology links stay as the topology says). */
  | { readonly kind: 'heal' }
  /** Cuts (`up: false`) or restores the link between two replicas; ignored for pairs outside the topology. */
  | { readonly kind: 'link'; readonly a: number; readonly b: number; readonly up: boolean }
  /**
   * Stops a replica and reopens it from its storage with the same peer id. `crash` is a kill -9: writes still in
   * flight never become durable (their frames may already be on the wire), received deltas not yet saved are lost.
   */
  | { readonly kind: 'restart'; readonly replica: number; readonly crash: boolean }
  /** Moves one replica's physical clock by `ms` (negative: backwards) for the rest of the run. */
  | { readonly kind: 'clock'; readonly replica: number; readonly ms: number }
  /** Stops a replica and reopens it with EMPTY storage and the same peer id. */
  | { readonly kind: 'amnesia'; readonly replica: number }
  /** One anti-entropy round on one replica, or on every replica when `replica` is absent. */
  | { readonly kind: 'antiEntropy'; readonly replica?: number }

/** One step of a schedule. */
export type Step = Op | NetworkStep

/** The kinds of step a schedule mixes (keys of {@link ScheduleOptions.weights}; `restart` is graceful, `crash` is a restart with `crash: true`). */
export type StepKind = 'op' | NetworkStep['kind'] | 'crash'

/** Which links exist: every pair (`mesh`), a chain r0–r1–…, a ring, or a star around r0. */
export type Topology = 'mesh' | 'line' | 'ring' | 'star'

/** Baseline fault knobs of a run. */
export interface Faults {
  /**
   * Probability that a frame is lost.
   * @default 0.1
   */
  dropRate?: number
  /**
   * Probability that a frame is delivered twice.
   * @default 0.1
   */
  duplicateRate?: number
  /**
   * Reordering of frames (see {@link MemoryFaults.reorder}).
   * @default true
   */
  reorder?: boolean | number
}

/** The faults a run uses unless told otherwise: 10 % drop, 10 % duplication, reordering. */
export const DEFAULT_FAULTS: Readonly<Required<Faults>> = Object.freeze({ dropRate: 0.1, duplicateRate: 0.1, reorder: true })

/** Whether replicas i and j are linked in `topology` over n replicas. */
export function inTopology(topology: Topology, n: number, i: number, j: number): boolean {
  const [a, b] = i < j ? [i, j] : [j, i]
  switch (topology) {
    case 'mesh':
      return true
    case 'line':
      return b === a + 1
    case 'ring':
      return b === a + 1 || (a === 0 && b === n - 1)
    case 'star':
      return a === 0
  }
}
