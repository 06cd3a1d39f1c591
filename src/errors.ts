import { SyncmeshError } from '../crdt/errors.js'

/** A message (after reassembly) or a value exceeds the configured size limit. */
export class MessageTooLargeError extends SyncmeshError {
  override readonly code = 'MESSAGE_TOO_LARGE'
  constructor(
    message: string,
    /** The size that was refused, in bytes (a lower bound when the message was refused early). */
    readonly size: number,
    /** The limit in force, in bytes. */
    readonly limit: number,
  ) {
    super(message)
  }
}

/** A frame announces a protocol version this build does not speak. */
export class UnsupportedVersionError extends SyncmeshError {
  override readonly code = 'UNSUPPORTED_VERSION'
  constructor(
    message: string,
    /** The version byte received. */
    readonly version: number,
  ) {
    super(message)
  }
}

/** The replica was used after {@link Replica.close}. */
export class ReplicaClosedError extends SyncmeshError {
  override readonly code = 'REPLICA_CLOSED'
}

/** {@link Replica.sync} did not reach agreement with every connected peer in time. */
export class SyncTimeoutError extends SyncmeshError {
  override readonly code = 'SYNC_TIMEOUT'
  constructor(
    message: string,
    /** Peers still not in agreement when the time ran out. */
    readonly peers: string[],
  ) {
    super(message)
  }
}

/** Stored data could not be read back: a corrupt or truncated entry. Names the key that is wrong. */
export class StorageCorruptError extends SyncmeshError {
  override readonly code = 'STORAGE_CORRUPT'
  constructor(
    message: string,
    /** The storage key of the bad entry. */
    readonly key: string[],
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

/**
 * A store could not be opened. `code` says why: `'STORAGE_LOCKED'` (it is already open, in this or another
 * process), `'STORAGE_NOT_FOUND'` (nothing there and creating was not allowed) or `'STORAGE_OPEN_FAILED'`.
 */
export class StorageOpenError extends SyncmeshError {
  constructor(
    message: string,
    override readonly code: 'STORAGE_LOCKED' | 'STORAGE_NOT_FOUND' | 'STORAGE_OPEN_FAILED',
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

/** A storage backend answered in a way syncmesh does not expect (a reply of the wrong type or shape). */
export class StorageProtocolError extends SyncmeshError {
  override readonly code = 'STORAGE_PROTOCOL'
}

/** A storage adapter was used after `close()`. */
export class StorageClosedError extends SyncmeshError {
  override readonly code = 'STORAGE_CLOSED'
}

export { AuthError } from '../transports/errors.js'

/**
 * Several replicas may share one store (tabs of one origin on one IndexedDB database) but this environment lacks
 * what they coordinate with: Web Locks (`navigator.locks`, only in secure contexts: https or localhost) or
 * BroadcastChannel. The message names what is missing.
 */
export class SharingUnavailableError extends SyncmeshError {
  override readonly code = 'SHARING_UNAVAILABLE'
}

/**
 * A replica on a shared store lost a lock it held without releasing it: its lease expired (a process paused, or cut
 * off from the lock service, for longer than the lease allows) or someone else took or deleted it. Losing the slot
 * closes the replica — it can no longer be sure that no other replica writes its keys, so it stops acknowledging
 * writes; losing the leadership only makes it step down and compete again.
 */
export class LeaseLostError extends SyncmeshError {
  override readonly code = 'LEASE_LOST'
  constructor(
    message: string,
    /** Which lock was lost: the replica's writer slot, or the store's leadership. */
    readonly lock: 'slot' | 'leader',
  ) {
    super(message)
  }
}

/** `collection.text()` on a replica created without text support (`createReplica({ text: yjsText() })`). */
export class TextUnavailableError extends SyncmeshError {
  override readonly code = 'TEXT_UNAVAILABLE'
}
