/**
 * `syncmesh/crdt` — the pure CRDT core: hybrid logical clocks, last-writer-wins registers and maps, version vectors,
 * the record store and its binary codec. No I/O, no timers, no dependencies; clocks are injected.
 */
export { SyncmeshError, DecodeError, ClockDriftError, ClockOverflowError, InvalidValueError, InvalidArgumentError } from './errors.js'
export {
  type Timestamp,
  MAX_WALL,
  MAX_COUNTER,
  MAX_PEER_LENGTH,
  compareTimestamps,
  encodeTimestamp,
  decodeTimestamp,
} from './timestamp.js'
export { HLC, type HLCInit, RECEIVE_HEADROOM } from './hlc.js'
export { type Value, MAX_VALUE_DEPTH, normalizeValue, encodeValue, compareValues, valuesEqual } from './value.js'
export { LWWRegister, type RegisterState } from './lww-register.js'
export { LWWMap, type MapState } from './lww-map.js'
export { type VersionVector, isNewer, mergeVersionVectors, covers } from './version-vector.js'
export {
  type Delta,
  type RecordDelta,
  type FieldDelta,
  type RecordRef,
  DELTA_FORMAT_VERSION,
  encodeDelta,
  decodeDelta,
  encodeVersionVector,
  decodeVersionVector,
} from './delta.js'
export { RecordStore, type RecordStoreInit, type StoredRecord, type Overwrite, type ApplyResult, type RecordChange } from './record-store.js'
