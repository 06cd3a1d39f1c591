/**
 * The relay transport's side of the server's store (`relayTransport({ store: true })`): the {@link RoomStoreLink}
 * the replica uploads to and downloads from, the PUT / FETCH / COMPACT requests waiting for their answers, and the
 * STORE / STORED / BLOB / FETCHED / COMPACTED ops that answer them (see the Store section of ./wire.ts).
 */
import { TransportArgumentError, TransportError, TransportStateError } from '../errors.js'
import type { RoomStoreInfo, RoomStoreLink, RoomStorePage } from '../types.js'
import { type RelayClientOp, type RelayServerOp, encodeClientOp } from './wire.js'

/** A store answer from the server. */
export type RelayStoreAnswer = Extract<RelayServerOp, { op: 'store' | 'stored' | 'blob' | 'fetched' | 'compacted' }>

/** What the store client needs from its transport. */
export interface RelayStoreHost {
  /** The server URL in use (for error messages). */
  readonly url: string
  readonly maxFrameSize: number
  /** Joined to the room right now (a transport is joined only while started). */
  readonly connected: boolean
  /** The server's `maxMessageBytes`, once a WELCOME announced it. */
  maxMessageBytes(): number | undefined
  /** Queues an encoded op; false when the send queue is full. */
  enqueue(op: Uint8Array): boolean
  /** Reports an error thrown by a listener. */
  listenerError(error: unknown): void
}

/** A store request waiting for its answer. */
interface StoreRequest {
  readonly resolve: (value: never) => void
  readonly reject: (error: Error) => void
  /** FETCH: the blobs received so far. */
  readonly blobs?: { seq: number; blob: Uint8Array }[]
}

/** The store requests of one relay transport and the link that makes them. */
export class RelayStoreClient {
  private info: RoomStoreInfo | undefined
  private readonly ready = new Set<(info: RoomStoreInfo) => void>()
  private readonly requests = new Map<number, StoreRequest>()
  private nextRequest = 1
  /** Why the server is about to close the connection (a refused upload), for the requests it fails. */
  private refusal: Error | undefined

  constructor(private readonly host: RelayStoreHost) {}

  /** The {@link RoomStoreLink} the replica uses. */
  link(): RoomStoreLink {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this
    const host = this.host
    return {
      get info() {
        return host.connected ? self.info : undefined
      },
      get maxBlobBytes() {
        // A COMPACT op around the blob, inside one message of the server's (or the default) size.
        return Math.min(host.maxFrameSize, (host.maxMessageBytes() ?? 128 * 1024) - 32)
      },
      onReady(fn) {
        self.ready.add(fn)
        return () => self.ready.delete(fn)
      },
      put: (blob) => this.request<{ seq: number; bytes: number }>((id) => ({ op: 'put', id, blob })),
      fetch: (after) => this.request<RoomStorePage>((id) => ({ op: 'fetch', id, after }), true),
      async compact(upto, blobs) {
        if (blobs.length === 0 || blobs.length > 0xffff) throw new TransportArgumentError('compact() takes 1..65535 blobs')
        const ids: number[] = []
        const answer = self.request<{ applied: boolean; bytes: number }>((id) => {
          ids.push(id)
          return { op: 'compact', id, upto, part: 0, count: blobs.length, blob: blobs[0]! }
        })
        const id = ids[0]!
        for (let part = 1; part < blobs.length; part++) {
          if (!self.requests.has(id)) break
          host.enqueue(encodeClientOp({ op: 'compact', id, upto, part, count: blobs.length, blob: blobs[part]! }))
        }
        return answer
      },
    }
  }

  /** The server refused an upload and is closing the connection: the waiting requests fail with `error`. */
  refused(error: Error): void {
    this.refusal = error
  }

  /** The connection is gone: forget the store, fail what waits (with the server's refusal, when it gave one). */
  connectionLost(error: Error): void {
    this.info = undefined
    this.failRequests(this.refusal ?? error)
    this.refusal = undefined
  }

  /** The transport stopped: forget the store, fail what waits. */
  stopped(error: Error): void {
    this.info = undefined
    this.failRequests(error)
  }

  /** Applies a store answer; returns a problem description when it is not acceptable now. */
  apply(op: RelayStoreAnswer): string | undefined {
    if (!this.host.connected) return `${op.op.toUpperCase()} before WELCOME`
    if (op.op === 'store') {
      const info = { storeId: op.storeId, head: op.head, bytes: op.bytes }
      this.info = info
      for (const fn of [...this.ready]) {
        try {
          fn(info)
        } catch (error) {
          this.host.listenerError(error)
        }
      }
      return undefined
    }
    const r = this.requests.get(op.id)
    if (r === undefined) return undefined // answered after we gave up on it
    if (op.op === 'blob') {
      if (r.blobs === undefined) return 'BLOB for a request that is not a FETCH'
      r.blobs.push({ seq: op.seq, blob: op.blob.slice() })
      return undefined
    }
    this.requests.delete(op.id)
    if (op.op === 'stored') r.resolve({ seq: op.seq, bytes: op.bytes } as never)
    else if (op.op === 'fetched') r.resolve({ blobs: r.blobs ?? [], upto: op.upto, more: op.more, bytes: op.bytes } as never)
    else r.resolve({ applied: op.applied, bytes: op.bytes } as never)
    return undefined
  }

  /** Sends one store request; resolves with its answer, rejects when the connection is lost first. */
  private request<T>(op: (id: number) => RelayClientOp, collect = false): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (!this.host.connected || this.info === undefined) {
        reject(new TransportStateError(`relay ${this.host.url}: not joined to a server with a store`))
        return
      }
      const id = this.nextRequest
      this.nextRequest = (this.nextRequest % 0xffffffff) + 1
      const encoded = encodeClientOp(op(id))
      this.requests.set(id, { resolve: resolve as (v: never) => void, reject, blobs: collect ? [] : undefined })
      if (!this.host.enqueue(encoded)) {
        this.requests.delete(id)
        reject(new TransportError(`relay ${this.host.url}: send queue full`))
      }
    })
  }

  /** Rejects every store request still waiting. */
  private failRequests(error: Error): void {
    const waiting = [...this.requests.values()]
    this.requests.clear()
    for (const r of waiting) r.reject(error)
  }
}
