/**
 * @automerge/automerge: doc `{ records: { [id]: {...} } }` with strings stored as `ImmutableString` (plain LWW
 * registers, not collaborative text). One `Automerge.change` per op costs milliseconds at this size, so the system
 * declares a bulk batch. Two-way exchange uses the sync protocol (`generateSyncMessage`/`receiveSyncMessage`); a
 * one-way catch-up sends B's heads and answers with `saveSince`, applied with `loadIncremental`.
 */
import type { Doc, ImmutableString } from '@automerge/automerge'
import { FIELDS, randomU32, rng, type Entry, type Field, type Rec, type Update, type Value } from '../data.js'
import type { System } from './types.js'

/** Ops per `Automerge.change` in bulk phases. */
const BULK_BATCH = 1_000
/** First random-stream id for actor ids (one stream per peer), distinct from the data streams. */
const ACTOR_STREAM = 200

/** Imports automerge while recording the WASM memory its instance exports, which the JS heap numbers do not see. */
async function importWithWasmMemory(): Promise<{
  Automerge: typeof import('@automerge/automerge')
  memory: WebAssembly.Memory
}> {
  const memories: WebAssembly.Memory[] = []
  const Original = WebAssembly.Instance
  WebAssembly.Instance = new Proxy(Original, {
    construct(target, args: ConstructorParameters<typeof WebAssembly.Instance>) {
      const instance = new target(...args)
      if (instance.exports.memory instanceof WebAssembly.Memory) memories.push(instance.exports.memory)
      return instance
    },
  })
  try {
    const Automerge = await import('@automerge/automerge')
    const [memory] = memories
    if (!memory || memories.length > 1) throw new Error(`expected one automerge WASM memory, saw ${memories.length}`)
    return { Automerge, memory }
  } finally {
    WebAssembly.Instance = Original
  }
}

const { Automerge: A, memory } = await importWithWasmMemory()

type AmValue = Value | ImmutableString
type AmRec = Record<Field, AmValue>
interface AmDoc {
  records: Record<string, AmRec>
}

/** Strings become `ImmutableString`s (LWW values); numbers and booleans are stored as they are. */
function toAm(value: Value): AmValue {
  return typeof value === 'string' ? new A.ImmutableString(value) : value
}

/** Calls `fn` on consecutive slices of `items` of length `size`. */
function inChunks<T>(items: readonly T[], size: number, fn: (chunk: readonly T[]) => void): void {
  for (let i = 0; i < items.length; i += size) fn(items.slice(i, i + size))
}

class AmReplica {
  constructor(public doc: Doc<AmDoc>) {}

  insert(entries: readonly Entry[], perChange = 1): void {
    inChunks(entries, perChange, (chunk) => {
      this.doc = A.change(this.doc, (d) => {
        for (const { id, rec } of chunk) {
          const am = {} as AmRec
          for (const field of FIELDS) am[field] = toAm(rec[field])
          d.records[id] = am
        }
      })
    })
  }

  update(updates: readonly Update[], perChange = 1): void {
    inChunks(updates, perChange, (chunk) => {
      this.doc = A.change(this.doc, (d) => {
        for (const { id, field, value } of chunk) {
          const rec = d.records[id]
          if (rec) rec[field] = toAm(value)
        }
      })
    })
  }

  encode(): Uint8Array {
    return A.save(this.doc)
  }

  get(id: string): Rec | undefined {
    const rec = this.doc.records[id]
    if (!rec) return undefined
    return {
      title: String(rec.title),
      n: rec.n as number,
      price: rec.price as number,
      done: rec.done as boolean,
      tag: String(rec.tag),
    }
  }
}

/** Runs the sync protocol between two replicas (`first` speaks first) until neither has anything to send. */
function syncSession(first: AmReplica, second: AmReplica): number {
  let firstState = A.initSyncState()
  let secondState = A.initSyncState()
  let bytes = 0
  for (;;) {
    const [nextFirstState, toSecond] = A.generateSyncMessage(first.doc, firstState)
    firstState = nextFirstState
    if (toSecond) {
      bytes += toSecond.byteLength
      ;[second.doc, secondState] = A.receiveSyncMessage(second.doc, secondState, toSecond)
    }
    const [nextSecondState, toFirst] = A.generateSyncMessage(second.doc, secondState)
    secondState = nextSecondState
    if (toFirst) {
      bytes += toFirst.byteLength
      ;[first.doc, firstState] = A.receiveSyncMessage(first.doc, firstState, toFirst)
    }
    if (!toSecond && !toFirst) return bytes
  }
}

/** `into` sends its heads (32 raw bytes each); `from` answers with `saveSince(heads)`; `into` applies it. */
function pullSinceHeads(from: AmReplica, into: AmReplica): number {
  const request = Buffer.from(A.getHeads(into.doc).join(''), 'hex')
  const heads = request.toString('hex').match(/.{64}/g) ?? []
  const answer = A.saveSince(from.doc, heads)
  into.doc = A.loadIncremental(into.doc, answer)
  return request.byteLength + answer.byteLength
}

/** Builds the automerge system; actor ids are seeded random 16-byte ids (like automerge's own). */
export default function createAutomerge(seed: number): System<AmReplica> {
  const actor = (peer: number): string => {
    const rand = rng(seed, ACTOR_STREAM + peer)
    return Array.from({ length: 4 }, () => randomU32(rand).toString(16).padStart(8, '0')).join('')
  }
  return {
    name: 'automerge',
    bulkBatch: BULK_BATCH,
    create: (peer) => new AmReplica(A.change(A.init<AmDoc>({ actor: actor(peer) }), (d) => {
        d.records = {}
      })),
    load: (bytes, peer) => new AmReplica(A.load<AmDoc>(bytes, { actor: actor(peer) })),
    sync: { pull: pullSinceHeads, exchange: syncSession },
    outsideHeapBytes: () => memory.buffer.byteLength,
  }
}
