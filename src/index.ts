/**
 * `syncmesh` — CRDT-first peer-to-peer replication: records as LWW maps stamped by hybrid logical clocks, delta sync
 * over any transport, local-first storage. This entry point: `createReplica`, the collection API, the named errors,
 * and the CRDT primitives most apps use (the rest, with the record store and codecs, is in `syncmesh/crdt`).
 */
// The primitives people use beside the replica; the record store and the codecs stay in `syncmesh/crdt`.
export { SyncmeshError, DecodeError, ClockDriftError, ClockOverflowError, InvalidValueError, InvalidArgumentError } from '../crdt/errors.js'
export { type Timestamp, compareTimestamps } from '../crdt/timestamp.js'
export { HLC, type HLCInit } from '../crdt/hlc.js'
export { type Value } from '../crdt/value.js'
export { LWWRegister } from '../crdt/lww-register.js'
export { LWWMap } from '../crdt/lww-map.js'
export { type VersionVector } from '../crdt/version-vector.js'
export {
  createReplica,
  roomTopic,
  type Replica,
  type ReplicaInit,
  type ReplicaEvents,
  type ReplicaStatus,
  type Collection,
  type RecordShape,
  type RecordChangeEvent,
  type ConflictEvent,
} from './replica.js'
export type { PeerStatus } from './sync/engine.js'
export type { ReplicaInspection, PeerInspection, InspectEvent, ConflictRecord, VectorSnapshot } from './inspect.js'
export type { Traffic } from './sync/gate.js'
export { PROTOCOL_VERSION, PROTOCOL_REVISION, DEFAULT_MAX_MESSAGE_BYTES } from './sync/protocol.js'
export {
  MessageTooLargeError,
  UnsupportedVersionError,
  ReplicaClosedError,
  SyncTimeoutError,
  StorageCorruptError,
  StorageClosedError,
  StorageOpenError,
  StorageProtocolError,
  AuthError,
  SharingUnavailableError,
  LeaseLostError,
  TextUnavailableError,
} from './errors.js'
export type { TextDelta, TextDeltaOp, TextSupport } from './text/types.js'
export { ROOM_KEY_ITERATIONS, CryptoUnavailableError, type RoomSecret } from './crypto/room-key.js'
export type { Storage, StorageSharing, Locks, Lease, SharedChannel } from './storage/types.js'
export { MemoryStorage } from './storage/memory.js'
export type { Transport, RoomContext, RoomCipher, PeerId, RoomStoreLink, RoomStoreInfo, RoomStorePage } from '../transports/types.js'
export { AccessDeniedError, StoreRefusedError } from '../transports/errors.js'
export { storeSync, type StoreSyncInit, type StoreSyncSupport } from './sync/store-sync.js'
