/** The floor: a plain `Map` of plain objects updated in place — no history, no metadata, no replication. */
import type { Entry, Field, Rec, Update, Value } from '../data.js'
import type { System } from './types.js'

class FloorReplica {
  readonly records = new Map<string, Rec>()

  insert(entries: readonly Entry[]): void {
    for (const { id, rec } of entries) this.records.set(id, { ...rec })
  }

  update(updates: readonly Update[]): void {
    for (const { id, field, value } of updates) {
      const rec: Record<Field, Value> | undefined = this.records.get(id)
      if (rec) rec[field] = value
    }
  }

  /** UTF-8 JSON of the entries, as a reference size for "the data itself". */
  encode(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify([...this.records]))
  }

  get(id: string): Rec | undefined {
    const rec = this.records.get(id)
    return rec && { ...rec }
  }
}

/** Builds the plain-`Map` floor (it has no replicas to tell apart and no sync). */
export default function createFloor(): System<FloorReplica> {
  return {
    name: 'floor',
    create: () => new FloorReplica(),
    load: (bytes) => {
      const replica = new FloorReplica()
      const entries = JSON.parse(new TextDecoder().decode(bytes)) as [string, Rec][]
      for (const [id, rec] of entries) replica.records.set(id, rec)
      return replica
    },
  }
}
