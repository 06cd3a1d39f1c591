/**
 * What the replica, the sync engine and persistence need from the text half of a replica's state. The core never
 * imports yjs: the implementation comes from `syncmesh/text` ({@link TextSupport}, passed as `createReplica({ text })`).
 */
import type { Timestamp } from '../../crdt/timestamp.js'
import type { VersionVector } from '../../crdt/version-vector.js'
import type { TextDelta as WireTextDelta } from './codec.js'

/** One operation of a text change, in the Yjs / Quill delta form (`Y.YTextEvent.delta`). */
export interface TextDeltaOp {
  readonly insert?: string | object
  readonly delete?: number
  readonly retain?: number
  readonly attributes?: { readonly [name: string]: unknown }
}

/** A change of one text field: the Yjs delta (retain / insert / delete from the start of the text). */
export type TextDelta = readonly TextDeltaOp[]

/** The text side of a change to one record: its text fields' deltas, and whether it had live text before. */
export interface RecordTextChange {
  readonly collection: string
  readonly id: string
  /** Whether any text field of the record was alive (written after the record's floor) before the change. */
  readonly aliveBefore: boolean
  /** Per text field, the change of its content (an empty delta when only its liveness changed). */
  readonly text: { readonly [field: string]: TextDelta }
}

/** What applying a text delta from a peer did. */
export interface TextApplyResult {
  readonly changed: readonly RecordTextChange[]
  /** True when the delta raised the text version vector. */
  readonly advanced: boolean
}

/** A decoded text delta, ready to apply (opaque to the engine beyond its newest timestamp). */
export interface DecodedText {
  /** The newest timestamp it carries: the receiving clock must accept it first. */
  readonly newest: Timestamp | undefined
  /** The text vector it claims (once every part of its session is applied); empty when it claims nothing. */
  readonly to: ReadonlyMap<string, Timestamp>
}

/** What the text state is told by, and asks of, its replica. */
export interface TextContext {
  /** The origin id of this replica's own timestamps. */
  readonly writerId: string
  /**
   * A fresh timestamp of the replica's clock for a local text transaction, after `after` when given (the record's
   * floor) unless the clock refuses to jump that far (see HLC.receive).
   */
  now(after?: Timestamp): Timestamp
  /** The record's floor (its latest put or delete), from the record store. */
  floor(collection: string, id: string): { readonly ts: Timestamp; readonly deleted: boolean } | undefined
  /** A local edit was made (and stamped): flush it, report it. */
  localEdit(change: RecordTextChange): void
  /** Something went wrong that has no caller to throw to (a text field too large to send, …). */
  error(err: Error): void
}

/** The text half of a replica's state: one Yjs document per text field, a text version vector over their stamps. */
export interface TextState<T = unknown> {
  /** Per origin, the newest text write held (see the protocol spec). */
  versionVector(): VersionVector
  /** The shared text of a field (created empty on first use); edits to it are stamped, stored and synced. */
  text(collection: string, id: string, field: string): T
  /** The current content of a text field ('' when erased or never written). */
  content(collection: string, id: string, field: string): string
  /** Whether any text field of the record is alive: written after the record's floor. */
  alive(collection: string, id: string): boolean
  /** The alive text fields of a record. */
  fields(collection: string, id: string): string[]
  /** Ids of the records of a collection with alive text. */
  ids(collection: string): string[]
  /** Names of the collections holding any text. */
  collections(): string[]
  /**
   * Applies the record's (new) floor from the record store: erases text stamped at or before it. `local`: the floor
   * is a write of this replica, and its erasure is recorded and sent as a text deletion stamped with it.
   */
  floorChanged(collection: string, id: string, local?: boolean): RecordTextChange | undefined
  /**
   * Loads the stored text deltas (snapshot, then log) and applies the record floors to them; throws
   * StorageCorruptError on a corrupt entry.
   */
  load(stored: readonly Uint8Array[]): void
  /**
   * After a records delta was applied: follows the raised `floors` (erasing text) and tells, for every record changed
   * or floored, whether it was visible before (`lwwVisible`: its LWW visibility before, for the changed ones) and its
   * text changes. A record whose floor rose but that changed in no visible way is left out.
   */
  afterRecords(
    changed: readonly { readonly collection: string; readonly id: string; readonly existed: boolean }[],
    floors: readonly { readonly collection: string; readonly id: string }[],
    lwwVisible: (collection: string, id: string) => boolean,
  ): { collection: string; id: string; existed: boolean; text?: RecordTextChange['text'] }[]
  /** Encoded text delta parts (each ≤ maxBytes) for a peer whose text vector is `vv`; see RecordStore.changesSince for `ceiling`. */
  changesSince(vv: ReadonlyMap<string, Timestamp>, ceiling: Timestamp | undefined, maxBytes: number): Uint8Array[]
  /** Local edits not yet taken, as encoded live text delta parts, and the newest own stamp they hold. */
  takeLocal(maxBytes: number): { parts: Uint8Array[]; newest: Timestamp | undefined }
  /** Whether local edits wait to be taken. */
  readonly dirty: boolean
  /** Decodes a text delta (throws DecodeError on malformed input), or takes one decoded already (src/text/codec.ts). */
  decode(payload: Uint8Array | WireTextDelta): DecodedText
  /** Applies a decoded text delta (throws DecodeError, changing nothing, when it is inconsistent). */
  apply(delta: DecodedText): TextApplyResult
  /** How many text writes (runs and deletions) a peer with text vector `vv` lacks. */
  count(vv: ReadonlyMap<string, Timestamp>): number
  /** The whole text state as one text delta (a storage snapshot). */
  encodeState(): Uint8Array
  /** A digest of the alive text content: equal on two replicas exactly when their alive text fields are equal. */
  digest(): string
  /** Detaches every document (edits made after this are not recorded). */
  close(): void
}

/** Text support for a replica: `yjsText()` from `syncmesh/text`. `T` is the type {@link TextState.text} hands out. */
export interface TextSupport<T = unknown> {
  create(context: TextContext): TextState<T>
}
