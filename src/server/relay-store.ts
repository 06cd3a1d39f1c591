/**
 * Store-and-forward on the relay protocol: the server's side of PUT / FETCH / COMPACT and STORE (the Store section
 * of the relay spec, transports/relay/wire.ts), between a room's connections and the {@link BlobStore} that keeps
 * their blobs. A refused upload answers ERROR with its wire code and closes only that connection.
 */
import { RelayErrorCode, type RelayClientOp, type RelayServerOp, encodeServerOp } from '../../transports/relay/wire.js'
import { SEAL_OVERHEAD } from '../crypto/room-key.js'
import { BLOB_PLAIN, BLOB_SEALED } from '../sync/store-sync.js'
import { type Conn, type Connections, type ServerCounters, ServerCloseCode } from './connections.js'
import { type ServerLog, topicLabel } from './log.js'
import type { ServerOptions } from './options.js'
import { StoreLimitError } from './errors.js'
import type { BlobStore } from './store.js'

/** A store op from a client. */
export type RelayStoreOp = Extract<RelayClientOp, { op: 'put' | 'fetch' | 'compact' }>

/** Why a blob cannot be stored (see the Store section of the relay spec), or undefined. */
function blobProblem(blob: Uint8Array): string | undefined {
  if (blob.byteLength < 2) return 'a blob needs at least 2 bytes'
  if (blob[0] !== BLOB_PLAIN && blob[0] !== BLOB_SEALED) return `not a blob (first byte 0x${blob[0]!.toString(16)})`
  if (blob[0] === BLOB_SEALED && blob.byteLength < 1 + SEAL_OVERHEAD + 4) return 'a sealed blob too short to hold anything'
  return undefined
}

/** The store requests of a server's relay connections. */
export class RelayStore {
  constructor(
    private readonly store: BlobStore,
    private readonly o: ServerOptions,
    private readonly connections: Connections,
    private readonly log: ServerLog,
    private readonly counters: ServerCounters,
    /** Sends encoded ops to one connection now, in order. */
    private readonly send: (c: Conn, ops: readonly Uint8Array[]) => void,
  ) {}

  /** After a JOIN on a v2 connection: sends STORE (the store's id, the room's head and bytes) while still joined. */
  announce(c: Conn, topic: string, stillJoined: () => boolean): void {
    this.store.info(topic).then(
      (info) => stillJoined() && this.reply(c, { op: 'store', storeId: this.store.id, head: info.head, bytes: info.bytes }),
      (err: unknown) => this.failure(c, err),
    )
  }

  /** Starts a store op; returns a protocol problem (the caller closes the connection), or undefined. */
  op(c: Conn, op: RelayStoreOp): string | undefined {
    const r = c.relay
    if (r === undefined) return `${op.op.toUpperCase()} outside a room`
    const topic = r.topic
    if (op.op === 'fetch') {
      this.store.range(topic, op.after, this.o.maxMessageBytes - 64).then((page) => {
        const ops = page.blobs.map((b) => encodeServerOp({ op: 'blob', id: op.id, seq: b.seq, blob: b.blob }))
        ops.push(encodeServerOp({ op: 'fetched', id: op.id, upto: page.upto, more: page.more, bytes: page.bytes }))
        this.counters.served += page.blobs.length
        this.send(c, ops)
      }, (err: unknown) => this.failure(c, err))
      return undefined
    }
    const bad = blobProblem(op.blob)
    if (bad !== undefined) {
      this.refuse(c, RelayErrorCode.MALFORMED_UPLOAD, bad)
      return undefined
    }
    if (op.op === 'put') {
      this.store.put(topic, op.blob, this.o.storeLimits).then(({ seq, bytes }) => {
        this.counters.stored++
        this.reply(c, { op: 'stored', id: op.id, seq, bytes })
      }, (err: unknown) => this.failure(c, err))
      return undefined
    }
    let job = c.compacting
    if (op.part === 0) {
      if (job !== undefined) return this.refuse(c, RelayErrorCode.MALFORMED_UPLOAD, 'COMPACT part 0 while another compaction is incomplete')
      job = c.compacting = { id: op.id, upto: op.upto, count: op.count, blobs: [], bytes: 0 }
    } else if (job === undefined || job.id !== op.id || job.upto !== op.upto || job.count !== op.count || job.blobs.length !== op.part) {
      return this.refuse(c, RelayErrorCode.MALFORMED_UPLOAD, 'COMPACT parts out of order')
    }
    job.blobs.push(op.blob)
    job.bytes += op.blob.byteLength
    if (job.bytes > this.o.storeLimits.maxRoomBytes) return this.refuse(c, RelayErrorCode.QUOTA_EXCEEDED, 'compaction larger than the room limit')
    if (job.blobs.length < job.count) return undefined
    c.compacting = undefined
    const { id, upto, blobs } = job
    this.store.compact(topic, upto, blobs, this.o.storeLimits).then((res) => {
      if (res.applied) this.counters.compactions++
      this.log(`conn=${c.id} compact room=${topicLabel(topic)} upto=${upto} parts=${blobs.length} applied=${res.applied} bytes=${res.bytes}`)
      this.reply(c, { op: 'compacted', id, applied: res.applied, bytes: res.bytes })
    }, (err: unknown) => this.failure(c, err))
    return undefined
  }

  /** A store operation failed: a limit answers its own code, anything else STORE_FAILED. */
  private failure(c: Conn, err: unknown): void {
    if (err instanceof StoreLimitError) {
      this.refuse(c, RelayErrorCode[err.code], err.message)
      return
    }
    this.log(`conn=${c.id} store error ${(err as Error)?.message ?? String(err)}`)
    this.refuse(c, RelayErrorCode.STORE_FAILED, 'the store failed')
  }

  /** Sends ERROR(code) and closes only this connection. */
  private refuse(c: Conn, code: number, message: string): undefined {
    if (c.closed) return undefined
    this.log(`conn=${c.id} store refused code=${code} ${message}`)
    this.reply(c, { op: 'error', code, message })
    this.connections.drop(c, ServerCloseCode.POLICY_VIOLATION, message)
    return undefined
  }

  private reply(c: Conn, op: RelayServerOp): void {
    this.send(c, [encodeServerOp(op)])
  }
}
