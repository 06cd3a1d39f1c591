/** yjs: one top-level `Y.Map` of nested `Y.Map`s (one per record); every op in its own `doc.transact`. */
import * as Y from 'yjs'
import { FIELDS, randomU32, rng, type Entry, type Rec, type Update, type Value } from '../data.js'
import type { System } from './types.js'

/** First random-stream id for client ids (one stream per peer), distinct from the data streams. */
const CLIENT_ID_STREAM = 100

class YReplica {
  readonly records: Y.Map<Y.Map<Value>>

  constructor(readonly doc: Y.Doc) {
    this.records = doc.getMap('records')
  }

  insert(entries: readonly Entry[]): void {
    for (const { id, rec } of entries) {
      this.doc.transact(() => {
        const map = new Y.Map<Value>()
        this.records.set(id, map)
        for (const field of FIELDS) map.set(field, rec[field])
      })
    }
  }

  update(updates: readonly Update[]): void {
    for (const { id, field, value } of updates) {
      this.doc.transact(() => this.records.get(id)?.set(field, value))
    }
  }

  encode(): Uint8Array {
    return Y.encodeStateAsUpdate(this.doc)
  }

  get(id: string): Rec | undefined {
    const map = this.records.get(id)
    if (!map) return undefined
    return {
      title: map.get('title') as string,
      n: map.get('n') as number,
      price: map.get('price') as number,
      done: map.get('done') as boolean,
      tag: map.get('tag') as string,
    }
  }
}

/** Builds the yjs system; client ids are seeded random u32s (like yjs's own), so byte counts are reproducible. */
export default function createYjs(seed: number): System<YReplica> {
  const newDoc = (peer: number): Y.Doc => {
    const doc = new Y.Doc()
    doc.clientID = randomU32(rng(seed, CLIENT_ID_STREAM + peer))
    return doc
  }
  const pull = (from: YReplica, into: YReplica): number => {
    const request = Y.encodeStateVector(into.doc)
    const answer = Y.encodeStateAsUpdate(from.doc, request)
    Y.applyUpdate(into.doc, answer)
    return request.byteLength + answer.byteLength
  }
  return {
    name: 'yjs',
    create: (peer) => new YReplica(newDoc(peer)),
    load: (bytes, peer) => {
      const doc = newDoc(peer)
      Y.applyUpdate(doc, bytes)
      return new YReplica(doc)
    },
    sync: { pull, exchange: (a, b) => pull(a, b) + pull(b, a) },
  }
}
