/**
 * `syncmesh` — CRDT-first peer-to-peer replication. This entry point re-exports the CRDT primitives and the
 * named errors; the replica API arrives beside them.
 */
export * from '../crdt/index.js'
