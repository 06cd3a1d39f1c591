/**
 * What a replica stores about tombstone collection (storage key `['meta', 'gc']`): the frontier (what it or its
 * peers collected) and the peers it knows, with when it last heard each and the vector each last reported. JSON,
 * timestamps as crdt/timestamp.ts's `encodeTimestamp` strings:
 *
 *   { "v": 1, "frontier": { origin: ts }, "newest": ts | null, "known": { peer: { "seen": ms, "vv": { origin: ts } } } }
 */
import { DecodeError } from '../../crdt/errors.js'
import { type Timestamp, decodeTimestamp, encodeTimestamp } from '../../crdt/timestamp.js'
import type { VersionVector } from '../../crdt/version-vector.js'
import { StorageCorruptError } from '../errors.js'
import type { KnownPeer } from './engine.js'

/** The decoded state. */
export interface GcState {
  readonly frontier: VersionVector
  readonly newest: Timestamp | undefined
  readonly known: Map<string, KnownPeer>
}

const vvToJson = (vv: ReadonlyMap<string, Timestamp>): Record<string, string> => Object.fromEntries([...vv].map(([o, ts]) => [o, encodeTimestamp(ts)]))

function vvFromJson(x: unknown): VersionVector {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new DecodeError('expected an object of timestamps')
  const vv: VersionVector = new Map()
  for (const [origin, ts] of Object.entries(x)) vv.set(origin, decodeTimestamp(ts as string))
  return vv
}

/** Encodes the state; `lastSeen` is rounded down to the minute, so that saving it every round rarely changes it. */
export function encodeGcState(frontier: ReadonlyMap<string, Timestamp>, newest: Timestamp | undefined, known: ReadonlyMap<string, KnownPeer>): string {
  const peers: Record<string, { seen: number; vv: Record<string, string> }> = {}
  for (const [id, k] of known) peers[id] = { seen: Math.floor(k.lastSeen / 60_000) * 60_000, vv: vvToJson(k.vector) }
  return JSON.stringify({ v: 1, frontier: vvToJson(frontier), newest: newest ? encodeTimestamp(newest) : null, known: peers })
}

/** Decodes {@link encodeGcState}'s text; a malformed one is StorageCorruptError (never silently dropped). */
export function decodeGcState(text: string): GcState {
  try {
    const j = JSON.parse(text) as { v?: unknown; frontier?: unknown; newest?: unknown; known?: unknown }
    if (j.v !== 1) throw new DecodeError(`unknown version ${String(j.v)}`)
    const known = new Map<string, KnownPeer>()
    if (typeof j.known !== 'object' || j.known === null) throw new DecodeError('known: expected an object')
    for (const [id, k] of Object.entries(j.known as Record<string, { seen?: unknown; vv?: unknown }>)) {
      if (typeof k?.seen !== 'number' || !Number.isFinite(k.seen)) throw new DecodeError(`known peer ${id}: bad "seen"`)
      known.set(id, { lastSeen: k.seen, vector: vvFromJson(k.vv) })
    }
    const newest = j.newest === null ? undefined : decodeTimestamp(j.newest as string)
    return { frontier: vvFromJson(j.frontier), newest, known }
  } catch (err) {
    throw new StorageCorruptError(`the stored tombstone-collection state is malformed: ${(err as Error).message}`, ['meta', 'gc'], { cause: err })
  }
}
