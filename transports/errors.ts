/** Errors shared by every syncmesh transport. */
import { SyncmeshError } from '../crdt/errors.js'


/** Base class of the errors the transports throw. */
export class TransportError extends SyncmeshError {
  override readonly code: string = 'TRANSPORT'
}

/** `send` / `broadcast` was given a frame longer than the transport's `maxFrameSize`; nothing was sent. */
export class FrameTooLargeError extends TransportError {
  override readonly code: string = 'FRAME_TOO_LARGE'
  constructor(
    /** Length in bytes of the refused frame. */
    readonly size: number,
    /** The transport's `maxFrameSize`. */
    readonly maxFrameSize: number,
  ) {
    super(`frame of ${size} bytes exceeds maxFrameSize ${maxFrameSize}`)
  }
}

/** An operation is not allowed in the current state (e.g. `start()` on a started transport, `deliverNext()` in auto mode). */
export class TransportStateError extends TransportError {
  override readonly code: string = 'TRANSPORT_STATE'
}

/** `start()` was given a peer id that a started transport already uses in the same room. */
export class PeerIdInUseError extends TransportError {
  override readonly code: string = 'PEER_ID_IN_USE'
}

/** An invalid option or argument (a rate outside [0, 1], an empty room or peer id, an unknown event name, ...). */
export class TransportArgumentError extends TransportError {
  override readonly code: string = 'TRANSPORT_ARGUMENT'
}

/** `err` itself when it is an `Error`; otherwise a {@link TransportError} carrying its text (something thrown a non-Error). */
export function toError(err: unknown): Error {
  return err instanceof Error ? err : new TransportError(String(err))
}

/**
 * Bytes that should have been sealed with the room key did not open: a wrong room secret on one side, a peer without
 * one in an encrypted room, or tampering on the way. Nothing in them was used. Emitted (on the replica's `'error'`
 * event), never thrown at the caller.
 */
export class AuthError extends SyncmeshError {
  override readonly code = 'AUTH'
  constructor(
    message: string,
    /** What failed to open: a sync frame, a signaling payload, or a discovery announcement. */
    readonly source: 'frame' | 'signaling' | 'discovery' = 'frame',
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

/**
 * The relay server's access check refused to let this client join the topic (a missing, wrong or expired token).
 * Reported through `onError`; the transport keeps retrying with backoff (a token function may return a fresh token).
 */
export class AccessDeniedError extends TransportError {
  override readonly code: string = 'ACCESS_DENIED'
}

/**
 * The relay server refused a store upload and closed the connection: `code` says why — `STORE_FULL` (the store's
 * total limit), `QUOTA_EXCEEDED` (the room's limit), `MALFORMED_UPLOAD` or `STORE_FAILED` (the server's store failed).
 */
export class StoreRefusedError extends TransportError {
  constructor(
    message: string,
    /** Why the upload was refused. */
    override readonly code: 'STORE_FULL' | 'QUOTA_EXCEEDED' | 'MALFORMED_UPLOAD' | 'STORE_FAILED',
  ) {
    super(message)
  }
}
