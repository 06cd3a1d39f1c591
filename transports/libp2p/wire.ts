/**
 * Wire format of the syncmesh libp2p transport, version 1. This comment is the specification.
 *
 * Protocol id `/syncmesh/sync/1.0.0`: one long-lived, bidirectional libp2p stream per pair of room members.
 *
 *   stream  := frame*                        the first frame each way is a HELLO, every later one is opaque data
 *   frame   := uvarint len  byte[len]        LEB128 length (at most 4 bytes), then the bytes
 *   HELLO   := u8 version=1  uvarint maxFrameSize  string topic  string peerId
 *   string  := uvarint n  byte[n]            UTF-8, 1 ≤ n ≤ 256
 *
 * - The opener sends its HELLO at once; the acceptor reads it, finds the transport started in that `topic` (several
 *   rooms may share one libp2p node) and answers with its own HELLO, or resets the stream when it has no such room.
 *   `topic` is derived from the room hash the replica passes ({@link roomTopicOf}); `peerId` is the REPLICA peer id
 *   (frames are attributed to it, never to the libp2p PeerId).
 * - Both sides must use the same `maxFrameSize`; a HELLO announcing another value is refused (configuration error
 *   caught at the handshake rather than as random resets later).
 * - Limits: a HELLO is at most {@link MAX_HELLO_BYTES}; a data frame at most `maxFrameSize`. A length prefix above the
 *   limit, a malformed HELLO, another version byte, or a HELLO that does not arrive within the handshake timeout
 *   resets the stream with a typed error ({@link FrameTooLargeError}, {@link Libp2pProtocolError}); nothing is
 *   allocated for a refused length.
 *
 * Room discovery over gossipsub: topic = the same `topic` string. Members publish an ANNOUNCE now and then:
 *
 *   ANNOUNCE := u8 version=1  uvarint n (≤ 32)  n × (uvarint len (≤ 512)  multiaddr bytes)
 *
 * The sender's libp2p PeerId is the (signed) gossipsub message's `from`; unsigned announcements are ignored.
 */
import { Reader as BytesReader, Writer } from '../../crdt/bytes.js'
import { FrameTooLargeError, TransportError } from '../errors.js'

/** The stream protocol id. */
export const SYNC_PROTOCOL = '/syncmesh/sync/1.0.0'

/** Version byte of HELLO and ANNOUNCE. */
export const WIRE_VERSION = 1
/** Largest HELLO frame accepted. */
export const MAX_HELLO_BYTES = 1024
/** Longest topic or peer id string in a HELLO. */
export const MAX_ID_BYTES = 256
/** Most multiaddrs in one ANNOUNCE. */
export const MAX_ANNOUNCED_ADDRS = 32
/** Longest multiaddr in an ANNOUNCE. */
export const MAX_ADDR_BYTES = 512

/** Malformed input on the syncmesh libp2p protocol (bad HELLO, wrong version, room refused, handshake timeout). */
export class Libp2pProtocolError extends TransportError {
  override readonly code: string = 'TRANSPORT_PROTOCOL'
}

/** A peer's outbound queue is full: frames are being dropped (the sync layer above repairs the loss). */
export class QueueFullError extends TransportError {
  override readonly code: string = 'TRANSPORT_QUEUE_FULL'
}

/** The topic peers of a room meet under, on gossipsub and in HELLO: a hash of the room string the replica passes. */
export async function roomTopicOf(room: string): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', new TextEncoder().encode(`syncmesh/libp2p/v1\u0000${room}`))
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('')
  return `/syncmesh/room/1/${hex}`
}

// ---------------------------------------------------------------------------------------------------------------------
// Varints and frames

/** A copy of `payload` with its length prefix: what goes on the stream. */
export function encodeFrame(payload: Uint8Array): Uint8Array {
  const w = new Writer(payload.byteLength + 5)
  w.bytes(payload)
  return w.view() // the writer is ours alone: its buffer, sized to fit, is the frame
}

/** Reads length-prefixed frames out of arbitrary chunks, without quadratic copying. */
export class FrameDecoder {
  private header = 0
  private headerBytes = 0
  private body: Uint8Array | undefined
  private filled = 0

  /** `limit` is the largest frame accepted; it can be changed between frames (HELLO first, then data). */
  constructor(public limit: number) {}

  /** Feeds bytes; calls `onFrame` for each whole frame (a fresh buffer). Throws on a refused length prefix. */
  push(chunk: Uint8Array, onFrame: (frame: Uint8Array) => boolean | void): void {
    let i = 0
    while (i < chunk.byteLength) {
      if (this.body === undefined) {
        const b = chunk[i++]!
        this.header += (b & 0x7f) * 2 ** (7 * this.headerBytes)
        this.headerBytes++
        if (b & 0x80) {
          if (this.headerBytes >= 4) throw new Libp2pProtocolError('frame length prefix longer than 4 bytes')
          continue
        }
        const len = this.header
        this.header = 0
        this.headerBytes = 0
        if (len > this.limit) throw new FrameTooLargeError(len, this.limit)
        if (len === 0) {
          if (onFrame(new Uint8Array(0)) === false) return
          continue
        }
        this.body = new Uint8Array(len)
        this.filled = 0
        continue
      }
      const take = Math.min(this.body.byteLength - this.filled, chunk.byteLength - i)
      this.body.set(chunk.subarray(i, i + take), this.filled)
      this.filled += take
      i += take
      if (this.filled < this.body.byteLength) continue
      const frame = this.body
      this.body = undefined
      if (onFrame(frame) === false) return // the consumer stopped reading (the stream failed)
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// HELLO

/** What a HELLO says. */
export interface Hello {
  readonly topic: string
  readonly peerId: string
  readonly maxFrameSize: number
}

const utf8 = new TextEncoder()
const utf8Strict = new TextDecoder('utf-8', { fatal: true })

/** The crdt byte reader (crdt/bytes.ts), with this protocol's error type and field limits. */
class Reader {
  private readonly r: BytesReader
  constructor(bytes: Uint8Array, private readonly what: string) {
    this.r = new BytesReader(bytes)
  }

  get done(): boolean {
    return this.r.done
  }

  u8(): number {
    return this.guard(() => this.r.u8())
  }

  uvarint(): number {
    return this.guard(() => this.r.uint())
  }

  bytesOf(max: number, min = 0): Uint8Array {
    const n = this.uvarint()
    if (n < min || n > max) throw new Libp2pProtocolError(`field of ${n} bytes in ${this.what} (allowed ${min}..${max})`)
    return this.guard(() => this.r.raw(n))
  }

  string(): string {
    const raw = this.bytesOf(MAX_ID_BYTES, 1)
    try {
      return utf8Strict.decode(raw)
    } catch {
      throw new Libp2pProtocolError(`invalid UTF-8 in ${this.what}`)
    }
  }

  private guard<T>(read: () => T): T {
    try {
      return read()
    } catch (err) {
      throw new Libp2pProtocolError(`malformed ${this.what}: ${err instanceof Error ? err.message : String(err)}`)
    }
  }
}

function checkVersion(version: number, what: string): void {
  if (version !== WIRE_VERSION) {
    throw new Libp2pProtocolError(`${what} version ${version} is not supported (this build speaks ${WIRE_VERSION})`)
  }
}

/** Encodes a HELLO payload (not yet length-prefixed). */
export function encodeHello(hello: Hello): Uint8Array {
  const w = new Writer(64)
  w.u8(WIRE_VERSION)
  w.uint(hello.maxFrameSize)
  w.bytes(utf8.encode(hello.topic))
  w.bytes(utf8.encode(hello.peerId))
  return w.finish()
}

/** Decodes a HELLO payload; throws {@link Libp2pProtocolError} on anything malformed. */
export function decodeHello(bytes: Uint8Array): Hello {
  const r = new Reader(bytes, 'HELLO')
  checkVersion(r.u8(), 'HELLO')
  const maxFrameSize = r.uvarint()
  const topic = r.string()
  const peerId = r.string()
  if (!r.done) throw new Libp2pProtocolError('trailing bytes after HELLO')
  return { topic, peerId, maxFrameSize }
}

// ---------------------------------------------------------------------------------------------------------------------
// ANNOUNCE

/** Encodes an ANNOUNCE of the given multiaddrs (their binary form); extra or oversized ones are left out. */
export function encodeAnnounce(addrs: readonly Uint8Array[]): Uint8Array {
  const kept = addrs.filter((a) => a.byteLength <= MAX_ADDR_BYTES).slice(0, MAX_ANNOUNCED_ADDRS)
  const w = new Writer(256)
  w.u8(WIRE_VERSION)
  w.uint(kept.length)
  for (const a of kept) w.bytes(a)
  return w.finish()
}

/** Decodes an ANNOUNCE; throws {@link Libp2pProtocolError} on anything malformed. */
export function decodeAnnounce(bytes: Uint8Array): Uint8Array[] {
  const r = new Reader(bytes, 'ANNOUNCE')
  checkVersion(r.u8(), 'ANNOUNCE')
  const n = r.uvarint()
  if (n > MAX_ANNOUNCED_ADDRS) throw new Libp2pProtocolError(`ANNOUNCE of ${n} addresses (at most ${MAX_ANNOUNCED_ADDRS})`)
  const out: Uint8Array[] = []
  for (let k = 0; k < n; k++) out.push(r.bytesOf(MAX_ADDR_BYTES, 1).slice())
  if (!r.done) throw new Libp2pProtocolError('trailing bytes after ANNOUNCE')
  return out
}
