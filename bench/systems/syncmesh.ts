/**
 * syncmesh: one `RecordStore` per replica with its own `HLC` (distinct peer id); one op = one `put`/`update`.
 * Replication: version vector request → the delta it lacks, written straight from the store's registers
 * (`encodeChangesSince`) and merged straight from the bytes (`applyEncoded`), with no delta object in between.
 */
import * as sm from '../../crdt/index.js'
import type { Entry, Rec, Update } from '../data.js'
import type { System } from './types.js'

const COLLECTION = 'records'

class SmReplica {
  readonly hlc: sm.HLC

  constructor(
    readonly store: sm.RecordStore,
    peer: number,
  ) {
    this.hlc = new sm.HLC(`bench-peer-${peer}`)
  }

  insert(entries: readonly Entry[]): void {
    for (const { id, rec } of entries) this.store.put(COLLECTION, id, rec, this.hlc.now())
  }

  update(updates: readonly Update[]): void {
    for (const { id, field, value } of updates) this.store.update(COLLECTION, id, { [field]: value }, this.hlc.now())
  }

  encode(): Uint8Array {
    return this.store.encodeState()
  }

  get(id: string): Rec | undefined {
    const rec = this.store.get(COLLECTION, id)
    if (!rec) return undefined
    return {
      title: rec.title as string,
      n: rec.n as number,
      price: rec.price as number,
      done: rec.done as boolean,
      tag: rec.tag as string,
    }
  }

  digest(): string {
    return this.store.digest()
  }
}

/** `into` sends its encoded version vector; `from` answers with the encoded delta `into` lacks. */
function pull(from: SmReplica, into: SmReplica): number {
  const request = sm.encodeVersionVector(into.store.versionVector())
  const answer = from.store.encodeChangesSince(sm.decodeVersionVector(request))
  into.store.applyEncoded(answer)
  return request.byteLength + answer.byteLength
}

/** Builds the syncmesh system (peer ids `bench-peer-0`…; the seed is not needed: HLCs tick on wall time). */
export default function createSyncmesh(): System<SmReplica> {
  return {
    name: 'syncmesh',
    create: (peer) => new SmReplica(new sm.RecordStore(), peer),
    load: (bytes, peer) => new SmReplica(sm.RecordStore.decodeState(bytes), peer),
    sync: { pull, exchange: (a, b) => pull(a, b) + pull(b, a) },
  }
}
