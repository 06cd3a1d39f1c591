/**
 * The syncmesh sync protocol, version 1, revision 6. This comment is the specification.
 *
 * Transport: any best-effort frame transport (frames may be dropped, duplicated or reordered). Every frame is
 *
 *   frame := u8 version=1   u8 type   payload
 *
 * Types (integers are LEB128 varints; `vv` is a version vector: uint n, n × (string peer, uint wall, uint counter);
 * `delta` is the delta format of crdt/delta.ts, which carries its own format version):
 *
 *   1 SYNC_REQUEST  vv                 "this is what I hold; send me what I lack". The receiver answers with DELTA
 *                                      parts for everything newer than vv (none when there is nothing), then always
 *                                      an ACK of its own vector, so the requester learns what it holds and lacks.
 *   2 DELTA         u8 flags  delta    changes, idempotent. flags bit 0: a live change (forward it as a LIVE to
 *                                      your other peers if it changed your state, as if it came with reached =
 *                                      {sender}). After applying, the receiver ACKs. Sync answers use flags = 0.
 *   3 ACK           vv                 "after your last message, this is what I hold". Never answered; it lets the
 *                                      sender know the receiver's progress (status, sync()).
 *   4 CHUNK         uint id  uint index  uint count  bytes   one piece of a message larger than the transport's
 *                                      maxFrameSize; the pieces of `id` concatenated form one whole frame.
 *   5 LIVE          uint n  n × u32 reached  delta
 *                                      a live change, idempotent, handled like DELTA (applied, then ACKed) plus
 *                                      forwarding: `reached` lists (as {@link peerHash}: FNV-1a 32 of the UTF-8 peer
 *                                      id, big-endian) peers that this change has been sent to already. The writer
 *                                      puts itself and every peer it sends to; a receiver whose state it changed
 *                                      sends it on only to its peers not in `reached`, after adding them and itself.
 *                                      n ≤ {@link MAX_REACHED}; a longer set is refused with DecodeError. A sender
 *                                      whose set is full sends on without adding (duplicates cost frames, not
 *                                      correctness).
 *   6 NEIGHBOURS    uint n  n × u32 peer   the peers the sender is connected to now ({@link peerHash}, big-endian),
 *                                      n ≤ {@link MAX_NEIGHBOURS}. Sent to a peer when it connects; to every peer
 *                                      at once when the sender loses a peer; after a gain, with the next LIVE the
 *                                      sender sends or forwards or its next anti-entropy round (a list missing a
 *                                      peer only costs duplicates). n = 0 means "unknown" (a sender with more
 *                                      than MAX_NEIGHBOURS peers sends that). Not answered. It lets forwarders share
 *                                      the work: a receiver of a LIVE sends it to a peer T not in `reached` only
 *                                      when, among itself and the reached peers that T's last NEIGHBOURS names, it
 *                                      has the smallest hash; the others leave T to it. Each node decides once,
 *                                      deferring only to a smaller hash that was sent the change, so with current
 *                                      lists some reached neighbour of T always sends; a list made stale by a link
 *                                      change can leave T to anti-entropy. A peer that has not sent NEIGHBOURS
 *                                      is always sent to.
 *   7 TEXT_REQUEST  vv                 the same as SYNC_REQUEST for the text half of the state (collaborative text
 *                                      fields, see below): `vv` is the sender's *text* version vector. The receiver
 *                                      answers with TEXT parts for every text write newer than vv (or a TEXT_ACK).
 *                                      Sending it also says "I keep text": peers that never sent one are left out
 *                                      of text sync and of the text half of sync() agreement.
 *   8 TEXT          u8 flags  uint n  n × u32 reached  textDelta
 *                                      text changes, idempotent (the text delta format of src/text/codec.ts, which
 *                                      carries its own format version). flags bit 0: a live change, forwarded like a
 *                                      LIVE (`reached` as there, n ≤ {@link MAX_REACHED}; sync answers have flags 0
 *                                      and n = 0). After applying, the receiver sends a TEXT_ACK (or TEXT_ACK_TO).
 *                                      A receiver counts the sender as reached, so a sender of a live TEXT may
 *                                      leave out of `reached` itself, and every peer that no receiver of the
 *                                      message other than that peer itself names in its last NEIGHBOURS (a receiver
 *                                      that has not sent one, or sent n = 0, needs them all): such a peer is no
 *                                      receiver's to send to. A two-peer room thus sends n = 0. Leaving peers out
 *                                      costs at most duplicate frames, never a peer skipped.
 *                                      The text delta is in format 1 (self-contained) or, only to a peer that has
 *                                      sent a TEXT_ACK_TO, in format 2: written against the tables of the text
 *                                      delta that ACK named (see src/text/codec.ts), so a keystroke does not repeat
 *                                      its writer's id, wall time and field names. A receiver that no longer holds
 *                                      the base answers with a TEXT_REQUEST (the sender then sends what it lacks in
 *                                      format 1, and writes live text to it in format 1 until it ACKs again); a
 *                                      receiver stores and forwards text in format 1. Each replica keeps the bases of
 *                                      its last {@link MAX_TEXT_FINGERPRINTS} TEXT_ACK_TOs to each peer (by the same
 *                                      rules), and resolves a base only among those it ACKed to the sender.
 *   9 TEXT_ACK      vv                 "after your last message, this is the text I hold" (text version vector).
 *  10 FRONTIER      vv frontier  vv newest  vv held
 *                                      what the sender knows of tombstone collection: `frontier` covers every
 *                                      tombstone that it or a peer it heard from dropped, `newest` (0 or 1 entries)
 *                                      is the newest of them, `held` the sender's own vector. Sent when a peer
 *                                      connects (if the frontier is not empty), to every peer when the sender's
 *                                      frontier grows, and each anti-entropy round to a peer that has not shown it
 *                                      covers it. A receiver whose vector does not cover `frontier` missed
 *                                      tombstones: it rebases (crdt/record-store.ts: keeps only its own writes
 *                                      newer than `newest` or on records `held` never knew), then takes the
 *                                      frontier as its own. A replica whose frontier is not empty exchanges
 *                                      changes with a peer only once that peer's FRONTIER covers it: until then it
 *                                      neither applies the peer's deltas nor sends it any (records or text:
 *                                      DELTA, LIVE, TEXT), so a peer returning after its writes' tombstones were
 *                                      dropped cannot bring deleted data back.
 *  11 ACK_CHANGES   vv                 an ACK that carries only the entries of the sender's vector that changed since
 *                                      the last vector it sent this peer (a SYNC_REQUEST, ACK or ACK_CHANGES); not
 *                                      sent when none did. Sent after applying a DELTA or LIVE; a SYNC_REQUEST is
 *                                      still answered with a whole ACK. Every entry is a lower bound of what the
 *                                      sender holds, so the receiver merges it entry-wise into what it knows of the
 *                                      sender; it calls the sender in agreement (or counts it for tombstone
 *                                      collection) only once it has had a whole vector (SYNC_REQUEST or ACK) from
 *                                      it since it connected. In a large room this keeps an ACK to a few entries
 *                                      instead of one per writer.
 *  12 TEXT_ACK_TO   u32 fingerprint    a short TEXT_ACK: "I hold at least the `to` vector of the TEXT message whose
 *                                      text delta has this fingerprint" ({@link textFingerprint}: FNV-1a 32 of the
 *                                      text delta bytes, big-endian). Sent instead of a TEXT_ACK after applying a
 *                                      TEXT whose `to` is not empty and that the receiver's text vector now covers
 *                                      (otherwise a whole TEXT_ACK is sent as before). The sender of TEXT messages
 *                                      remembers per peer the `to` of the last {@link MAX_TEXT_FINGERPRINTS} text
 *                                      deltas it sent or forwarded to it, by fingerprint (two different ones with
 *                                      one fingerprint, or one that a delta forgotten lately had: it uses neither),
 *                                      and merges the remembered vector entry-wise into what it
 *                                      knows of the peer, a lower bound like ACK_CHANGES'; an unknown fingerprint, or
 *                                      one from a peer that has sent no whole text vector since it connected, is
 *                                      ignored. A live keystroke's ACK is then 6 bytes instead of a whole vector.
 *                                      It also tells the sender that the receiver holds that delta's tables: the
 *                                      sender writes its next live text to it against them (TEXT, format 2).
 *   other                              ignored (room for later, backwards-compatible message types).
 *
 * Compatibility. Within version 1, revisions 1–5 only add message types, and a receiver ignores types it does not
 * know: revision 1 has types 1–4, revision 2 adds 5–6, revision 3 adds 7–10, revision 4 adds 11, revision 5 adds 12.
 * Revision 6 ({@link PROTOCOL_REVISION}) adds no type but writes its deltas (DELTA, LIVE) in delta format 2 (one
 * varint per record timestamp, see crdt/delta.ts), which a revision ≤ 5 peer cannot decode: it refuses each such
 * message with a DecodeError, reports it on 'error' and stops listening to the sender until it reconnects. Revision 6
 * reads both delta formats 1 and 2, so it takes a revision ≤ 5 peer's deltas, but not the other way round: peers must
 * be upgraded together. (Text messages keep their own format, unchanged.) A peer that ignores LIVE receives live changes by anti-entropy; one that ignores ACK_CHANGES learns a
 * sender's progress from its SYNC_REQUESTs (its sync() may wait for an anti-entropy round), and one that ignores TEXT_ACK_TO learns a peer's text progress
 * from its TEXT_REQUESTs and whole TEXT_ACKs alone (the same); one that never sends NEIGHBOURS is always sent to; one
 * without text (an earlier revision, or a replica opened without `text`) ignores types 7–9, neither stores nor
 * forwards text, and never holds up a text replica's sync(); one that ignores FRONTIER cannot sync with a replica
 * whose frontier is not empty (it never opens that replica's gate).
 *
 * Text. A record's text fields are Yjs documents (one Y.Text each). Every local Yjs transaction is stamped with a
 * timestamp of the replica's HLC, and the text half of the state has a version vector of its own over those stamps,
 * with the same advancement rule as the records'. A text delta names, per document, the runs of Yjs structs
 * (client, clock range, stamp) and the deletions (newest stamp per origin) the receiver lacks, plus one Yjs update
 * holding them: the update is computed against the Yjs state vector *derived* from the receiver's text vector (a
 * client's covered prefix of runs), so a peer that was offline gets only what it lacks — by Yjs state vector, without
 * sending one per document. A text answer larger than the message limit is cut between documents into parts of one
 * session (id, index, count); the parts' data applies as it arrives, their from/to claim only once every part of the
 * session has arrived. One document's update must fit in one message (otherwise MessageTooLargeError on 'error').
 * Limits: decoding checks every count against the remaining bytes; a Yjs update must stay inside the runs it is
 * sent with (or already held), else DecodeError; at most {@link MAX_TEXT_SESSIONS} incomplete sessions per replica.
 *
 * Flow: when two peers meet, each sends SYNC_REQUEST (preceded by TEXT_REQUEST when it keeps text; a replica
 * remembers which peers keep text, and waits for their text vector before it calls them in agreement); each answers
 * with what the other lacks; both ACK. Local
 * writes are coalesced per field and flushed once per tick as one delta, durable before it is sent, as LIVE
 * messages to every connected peer, cut to each peer's message limit (a relayed link may take less than
 * `maxMessageBytes`; a forwarder cuts a change again for such a link). Peers repeat
 * SYNC_REQUEST every `antiEntropyMs`, which repairs anything a lossy transport dropped (or a hash collision in a
 * `reached` set skipped). LIVE messages that changed state are forwarded to the peers not yet reached, so changes
 * cross any connected topology (line, ring, star, bounded overlays) while a full mesh of n peers spends n − 1
 * frames per write, not about n².
 *
 * Version vectors make deltas proportional to what changed, never to history: a delta holds each register newer
 * than the receiver's vector entry for its origin. A delta larger than the message limit is cut into parts ordered
 * by (origin, timestamp), never inside one timestamp; each part's `from`/`to` vectors let the receiver advance only
 * over contiguous ranges, so a lost part is re-sent by the next anti-entropy round and never skipped. A part or live
 * change that arrives ahead of an earlier one (reordered) is applied at once and counted as soon as the gap closes.
 *
 * Vectors we hold about a peer only move forward. Every vector a peer sends (SYNC_REQUEST, ACK) is a lower bound of
 * what it holds, because a store's vector never shrinks; so a receiver keeps, per peer, the entry-wise maximum of
 * the vectors that peer reported since it connected, and an older one delivered after a newer one changes nothing.
 * (A peer that reconnects starts from nothing again: it may have lost its storage.) While a sync() waits, a replica
 * sends each peer whose known vector lacks writes of other origins that it holds a catch-up DELTA (flags 0) from
 * that vector, one at a time per peer until the peer's vector covers it; the peer ACKs it like any DELTA. Together
 * these make sync() on a network that reorders but never loses frames resolve without waiting for anti-entropy.
 *
 * Limits: a reassembled message is at most `maxMessageBytes` (default 1 MiB); a peer may have at most
 * {@link MAX_PENDING_MESSAGES} partial messages in flight. A frame with another version byte is refused with
 * UnsupportedVersionError; malformed input with DecodeError; oversized with MessageTooLargeError.
 */
import { Reader, Writer } from '../../crdt/bytes.js'
import { type Delta, type FieldDelta, type RecordDelta, encodeDelta, newestInDelta, readVersionVector, writeVersionVector } from '../../crdt/delta.js'
import { DecodeError, InvalidArgumentError } from '../../crdt/errors.js'
import { type Timestamp, compareTimestamps } from '../../crdt/timestamp.js'
import type { VersionVector } from '../../crdt/version-vector.js'
import { MessageTooLargeError, UnsupportedVersionError } from '../errors.js'

/** Version byte at the start of every frame. */
export const PROTOCOL_VERSION = 1
/** Revision of version 1 this build speaks (see the spec's Compatibility: revision 6 has types 1–12 and writes delta format 2). */
export const PROTOCOL_REVISION = 6
/** Text deltas sent to (and TEXT_ACK_TOs sent to) each peer that a replica remembers by fingerprint. */
export const MAX_TEXT_FINGERPRINTS = 64
/** Incomplete multi-part text sessions a replica keeps track of; the oldest is forgotten beyond this. */
export const MAX_TEXT_SESSIONS = 16
/** Default limit of a reassembled message, in bytes. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
/** Partial (chunked) messages a peer may have in flight; the oldest is dropped beyond this. */
export const MAX_PENDING_MESSAGES = 8
/** Bytes a CHUNK frame spends on its header at most. */
const CHUNK_HEADER_BYTES = 2 + 3 * 8

/** Most entries of a LIVE message's `reached` set. */
export const MAX_REACHED = 256
/** Most entries of a NEIGHBOURS message. */
export const MAX_NEIGHBOURS = 256

const enum Type {
  SyncRequest = 1,
  Delta = 2,
  Ack = 3,
  Chunk = 4,
  Live = 5,
  Neighbours = 6,
  TextRequest = 7,
  Text = 8,
  TextAck = 9,
  Frontier = 10,
  AckChanges = 11,
  TextAckTo = 12,
}

/** A decoded protocol message. */
export type Message =
  | { readonly type: 'sync-request'; readonly vv: VersionVector }
  | {
      readonly type: 'delta'
      readonly live: boolean
      /** The newest timestamp the delta carries (checked whole at decode: see `newestInDelta`), undefined if none. */
      readonly newest: Timestamp | undefined
      /** The encoded delta inside the message (what storage logs and the store applies), a view into the message. */
      readonly payload: Uint8Array
      /** For a LIVE message: the peer hashes it has reached; for a live DELTA: undefined (only the sender). */
      readonly reached: readonly number[] | undefined
    }
  | { readonly type: 'ack' | 'ack-changes'; readonly vv: VersionVector }
  | { readonly type: 'neighbours'; readonly peers: readonly number[] }
  | { readonly type: 'frontier'; readonly frontier: VersionVector; readonly newest: Timestamp | undefined; readonly held: VersionVector }
  | { readonly type: 'text-request' | 'text-ack'; readonly vv: VersionVector }
  | { readonly type: 'text-ack-to'; readonly fingerprint: number }
  | {
      readonly type: 'text'
      readonly live: boolean
      /** The encoded text delta (opaque here: src/text/codec.ts), a view into the message. */
      readonly payload: Uint8Array
      /** For a live change: the peer hashes it has reached. */
      readonly reached: readonly number[]
    }

/** The 32-bit hash that stands for a peer id in a LIVE message's `reached` set: FNV-1a over its UTF-8 bytes. */
export function peerHash(peer: string): number {
  return fnv1a(utf8.encode(peer))
}
const utf8 = new TextEncoder()

/** The fingerprint that a TEXT_ACK_TO names a text delta by: FNV-1a 32 over its bytes. */
export function textFingerprint(textDelta: Uint8Array): number {
  return fnv1a(textDelta)
}

function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193)
  return h >>> 0
}

/** Encodes a TEXT_ACK_TO: "I hold at least the `to` of the text delta with this fingerprint". */
export function encodeTextAckToMessage(fingerprint: number): Uint8Array {
  return Uint8Array.of(PROTOCOL_VERSION, Type.TextAckTo, fingerprint >>> 24, (fingerprint >>> 16) & 0xff, (fingerprint >>> 8) & 0xff, fingerprint & 0xff)
}

const VECTOR_TYPES = { 'sync-request': Type.SyncRequest, ack: Type.Ack, 'ack-changes': Type.AckChanges, 'text-request': Type.TextRequest, 'text-ack': Type.TextAck } as const

/** Encodes a SYNC_REQUEST, ACK or ACK_CHANGES (or the text counterparts, TEXT_REQUEST and TEXT_ACK). */
export function encodeVectorMessage(type: keyof typeof VECTOR_TYPES, vv: ReadonlyMap<string, Timestamp>): Uint8Array {
  const w = new Writer(16 + 24 * vv.size)
  w.u8(PROTOCOL_VERSION)
  w.u8(VECTOR_TYPES[type])
  writeVersionVector(w, vv)
  return w.finish()
}

/** Encodes a FRONTIER: what the sender knows of tombstone collection, and its own vector. */
export function encodeFrontierMessage(frontier: ReadonlyMap<string, Timestamp>, newest: Timestamp | undefined, held: ReadonlyMap<string, Timestamp>): Uint8Array {
  const w = new Writer(32 + 24 * (frontier.size + held.size))
  w.u8(PROTOCOL_VERSION)
  w.u8(Type.Frontier)
  writeVersionVector(w, frontier)
  writeVersionVector(w, newest ? new Map([[newest.peer, newest]]) : new Map())
  writeVersionVector(w, held)
  return w.finish()
}

/** Wraps an encoded delta (see crdt/delta.ts) as a DELTA message. */
export function encodeDeltaMessage(deltaBytes: Uint8Array, live: boolean): Uint8Array {
  const out = new Uint8Array(deltaBytes.length + 3)
  out[0] = PROTOCOL_VERSION
  out[1] = Type.Delta
  out[2] = live ? 1 : 0
  out.set(deltaBytes, 3)
  return out
}

/** Encodes a NEIGHBOURS message (an empty list, "unknown", when there are more than {@link MAX_NEIGHBOURS}). */
export function encodeNeighboursMessage(peers: readonly number[]): Uint8Array {
  const list = peers.length > MAX_NEIGHBOURS ? [] : peers
  const w = new Writer(4 + 4 * list.length)
  w.u8(PROTOCOL_VERSION)
  w.u8(Type.Neighbours)
  writeHashes(w, list)
  return w.finish()
}

function writeHashes(w: Writer, hashes: readonly number[]): void {
  w.uint(hashes.length)
  for (const h of hashes) {
    w.u8(h >>> 24)
    w.u8((h >>> 16) & 0xff)
    w.u8((h >>> 8) & 0xff)
    w.u8(h & 0xff)
  }
}

function readHashes(r: Reader, max: number): number[] {
  const n = r.count(4, max)
  const out: number[] = []
  for (let i = 0; i < n; i++) out.push(((r.u8() << 24) | (r.u8() << 16) | (r.u8() << 8) | r.u8()) >>> 0)
  return out
}

/**
 * Encodes a LIVE message: an encoded delta and the peers it has reached (see the spec). Only the first hashes of
 * `reached` are written when the set has more than {@link MAX_REACHED}, or when the message would otherwise
 * outgrow `maxMessageBytes` (a set cut short costs duplicate frames, never correctness).
 */
export function encodeLiveMessage(deltaBytes: Uint8Array, reached: Iterable<number>, maxMessageBytes = Infinity): Uint8Array {
  const room = Math.floor((maxMessageBytes - deltaBytes.length - 5) / 4)
  const hashes = [...reached].slice(0, Math.max(0, Math.min(MAX_REACHED, room)))
  const w = new Writer(deltaBytes.length + 8 + 4 * hashes.length)
  w.u8(PROTOCOL_VERSION)
  w.u8(Type.Live)
  writeHashes(w, hashes)
  w.raw(deltaBytes)
  return w.finish()
}

/**
 * Encodes a TEXT message: an encoded text delta, live or not, and for a live one the peers it has reached (cut short
 * like {@link encodeLiveMessage}'s).
 */
export function encodeTextMessage(textDelta: Uint8Array, live: boolean, reached: Iterable<number> = [], maxMessageBytes = Infinity): Uint8Array {
  const room = Math.floor((maxMessageBytes - textDelta.length - 6) / 4)
  const hashes = live ? [...reached].slice(0, Math.max(0, Math.min(MAX_REACHED, room))) : []
  const w = new Writer(textDelta.length + 9 + 4 * hashes.length)
  w.u8(PROTOCOL_VERSION)
  w.u8(Type.Text)
  w.u8(live ? 1 : 0)
  writeHashes(w, hashes)
  w.raw(textDelta)
  return w.finish()
}

/** Decodes a whole (reassembled) message; returns undefined for message types this version does not know. */
export function decodeMessage(bytes: Uint8Array): Message | undefined {
  const r = new Reader(bytes)
  checkVersion(r.u8())
  const type = r.u8()
  switch (type) {
    case Type.SyncRequest:
    case Type.Ack:
    case Type.AckChanges:
    case Type.TextRequest:
    case Type.TextAck: {
      const vv = readVersionVector(r)
      const name = (Object.keys(VECTOR_TYPES) as (keyof typeof VECTOR_TYPES)[]).find((k) => VECTOR_TYPES[k] === type)!
      if (!r.done) throw new DecodeError(`${r.remaining} trailing bytes after a ${name} message`)
      return { type: name, vv }
    }
    case Type.Text: {
      const flags = r.u8()
      if (flags > 1) throw new DecodeError(`bad TEXT flags ${flags}`)
      const reached = readHashes(r, MAX_REACHED)
      return { type: 'text', live: flags === 1, reached, payload: bytes.subarray(r.pos) }
    }
    case Type.TextAckTo: {
      if (r.remaining !== 4) throw new DecodeError(`a TEXT_ACK_TO holds 4 bytes, not ${r.remaining}`)
      const fingerprint = ((r.u8() << 24) | (r.u8() << 16) | (r.u8() << 8) | r.u8()) >>> 0
      return { type: 'text-ack-to', fingerprint }
    }
    case Type.Delta: {
      const flags = r.u8()
      const payload = bytes.subarray(3)
      return { type: 'delta', live: (flags & 1) === 1, newest: newestInDelta(payload), payload, reached: undefined }
    }
    case Type.Live: {
      const reached = readHashes(r, MAX_REACHED)
      const payload = bytes.subarray(r.pos)
      return { type: 'delta', live: true, newest: newestInDelta(payload), payload, reached }
    }
    case Type.Neighbours: {
      const peers = readHashes(r, MAX_NEIGHBOURS)
      if (!r.done) throw new DecodeError(`${r.remaining} trailing bytes after a NEIGHBOURS`)
      return { type: 'neighbours', peers }
    }
    case Type.Frontier: {
      const frontier = readVersionVector(r)
      const newestVv = readVersionVector(r)
      const held = readVersionVector(r)
      if (!r.done) throw new DecodeError(`${r.remaining} trailing bytes after a FRONTIER`)
      if (newestVv.size > 1) throw new DecodeError('a FRONTIER names at most one newest tombstone')
      return { type: 'frontier', frontier, newest: newestVv.values().next().value, held }
    }
    case Type.Chunk:
      throw new DecodeError('a CHUNK frame cannot be nested inside a message')
    default:
      return undefined
  }
}

function checkVersion(version: number): void {
  if (version !== PROTOCOL_VERSION) {
    throw new UnsupportedVersionError(`sync protocol version ${version} is not supported (this build speaks ${PROTOCOL_VERSION})`, version)
  }
}

/** Cuts a message into frames of at most `maxFrameSize` bytes (one frame when it already fits). */
export function toFrames(message: Uint8Array, maxFrameSize: number, id: number): Uint8Array[] {
  if (message.length <= maxFrameSize) return [message]
  const room = maxFrameSize - CHUNK_HEADER_BYTES
  if (room < 16) throw new InvalidArgumentError(`maxFrameSize ${maxFrameSize} is too small to carry chunks`)
  const count = Math.ceil(message.length / room)
  const frames: Uint8Array[] = []
  for (let index = 0; index < count; index++) {
    const piece = message.subarray(index * room, Math.min(message.length, (index + 1) * room))
    const w = new Writer(piece.length + CHUNK_HEADER_BYTES)
    w.u8(PROTOCOL_VERSION)
    w.u8(Type.Chunk)
    w.uint(id)
    w.uint(index)
    w.uint(count)
    w.bytes(piece)
    frames.push(w.finish())
  }
  return frames
}

interface Partial {
  readonly count: number
  readonly pieces: (Uint8Array | undefined)[]
  received: number
  bytes: number
}

/** Reassembles one peer's CHUNK frames into whole messages, within a size limit. */
export class Reassembler {
  private readonly partial = new Map<number, Partial>()

  constructor(private readonly maxMessageBytes: number) {}

  /**
   * Takes one frame; returns a whole message when one is complete (a non-chunk frame is returned as it is),
   * otherwise undefined. Throws DecodeError / MessageTooLargeError / UnsupportedVersionError on bad input.
   */
  push(frame: Uint8Array): Uint8Array | undefined {
    if (frame.length < 2) throw new DecodeError(`frame of ${frame.length} bytes is too short`)
    checkVersion(frame[0]!)
    if (frame[1] !== Type.Chunk) {
      if (frame.length > this.maxMessageBytes) {
        throw new MessageTooLargeError(`message of ${frame.length} bytes exceeds the ${this.maxMessageBytes}-byte limit`, frame.length, this.maxMessageBytes)
      }
      return frame
    }
    const r = new Reader(frame)
    r.pos = 2
    const id = r.uint()
    const index = r.uint()
    const count = r.uint()
    const piece = r.bytes()
    if (!r.done) throw new DecodeError('trailing bytes after a CHUNK')
    if (count < 2 || index >= count) throw new DecodeError(`bad CHUNK index ${index} of ${count}`)
    if (count > this.maxMessageBytes) {
      throw new MessageTooLargeError(`a message of ${count} chunks exceeds the ${this.maxMessageBytes}-byte limit`, count, this.maxMessageBytes)
    }
    let p = this.partial.get(id)
    if (!p) {
      if (this.partial.size >= MAX_PENDING_MESSAGES) this.partial.delete(this.partial.keys().next().value!)
      p = { count, pieces: new Array(count), received: 0, bytes: 0 }
      this.partial.set(id, p)
    } else if (p.count !== count) {
      this.partial.delete(id)
      throw new DecodeError(`CHUNK ${id} changed its count from ${p.count} to ${count}`)
    }
    if (p.pieces[index] !== undefined) return undefined // a duplicate
    p.bytes += piece.length
    if (p.bytes > this.maxMessageBytes) {
      this.partial.delete(id)
      throw new MessageTooLargeError(`chunked message exceeds the ${this.maxMessageBytes}-byte limit`, p.bytes, this.maxMessageBytes)
    }
    p.pieces[index] = piece
    if (++p.received < count) return undefined
    this.partial.delete(id)
    const out = new Uint8Array(p.bytes)
    let at = 0
    for (const part of p.pieces) {
      out.set(part!, at)
      at += part!.length
    }
    return out
  }
}

/** Records in a delta up to which {@link encodeDeltaParts} first tries it whole (and items it samples beyond). */
const SAMPLE_RECORDS = 2000

interface Item {
  readonly ts: Timestamp
  readonly rd: RecordDelta
  /** The field, or undefined for the record's floor. */
  readonly field: FieldDelta | undefined
}

/**
 * Encodes a delta as one or more self-contained DELTA payloads of at most `maxBytes` each (see the spec above:
 * parts ordered by origin and timestamp, never cut inside one timestamp). Throws MessageTooLargeError when a single
 * write is larger than `maxBytes` on its own.
 */
export function encodeDeltaParts(delta: Delta, maxBytes: number): Uint8Array[] {
  // A delta of many records (a new peer's first sync) is sized from a sample instead of encoded whole first.
  const whole = delta.records.length <= SAMPLE_RECORDS ? encodeDelta(delta) : undefined
  if (whole && whole.length <= maxBytes) return [whole]
  const items: Item[] = []
  for (const rd of delta.records) {
    if (rd.floor) items.push({ ts: rd.floor, rd, field: undefined })
    for (const f of rd.fields) items.push({ ts: f.ts, rd, field: f })
  }
  items.sort((a, b) => (a.ts.peer === b.ts.peer ? compareTimestamps(a.ts, b.ts) : a.ts.peer < b.ts.peer ? -1 : 1))
  const lastIndex = new Map<string, number>()
  items.forEach((it, i) => lastIndex.set(it.ts.peer, i))
  const parts: Uint8Array[] = []
  const emit = (lo: number, hi: number): void => {
    const bytes = encodeDelta(partOf(delta, items, lo, hi, lastIndex))
    if (bytes.length <= maxBytes) {
      parts.push(bytes)
      return
    }
    const cut = cutPoint(items, lo, hi)
    if (cut === undefined) {
      throw new MessageTooLargeError(`a single write of ${bytes.length} bytes exceeds the ${maxBytes}-byte message limit`, bytes.length, maxBytes)
    }
    emit(lo, cut)
    emit(cut, hi)
  }
  // Cut where the average item size says a part fills ~85 % of the limit (tables repeat in every part), so each
  // item is encoded about once more; a part that still comes out too large is halved.
  const sample = whole ? items.length : Math.min(items.length, SAMPLE_RECORDS)
  const sampleBytes = whole?.length ?? encodeDelta(partOf(delta, items, 0, sample, lastIndex)).length
  const perPart = Math.max(1, Math.floor((sample * maxBytes * 0.85) / sampleBytes))
  for (let lo = 0; lo < items.length; ) {
    let hi = Math.min(items.length, lo + perPart)
    while (hi < items.length && compareTimestamps(items[hi - 1]!.ts, items[hi]!.ts) === 0) hi++
    emit(lo, hi)
    lo = hi
  }
  return parts
}

/** A split point near the middle of `[lo, hi)` that does not separate equal timestamps, or undefined. */
function cutPoint(items: Item[], lo: number, hi: number): number | undefined {
  const same = (i: number): boolean => compareTimestamps(items[i - 1]!.ts, items[i]!.ts) === 0
  const mid = (lo + hi) >> 1
  for (let d = 0; d < hi - lo; d++) {
    const up = mid + d
    if (up > lo && up < hi && !same(up)) return up
    const down = mid - d
    if (down > lo && down < hi && !same(down)) return down
  }
  return undefined
}

/** The part of `delta` made of items `[lo, hi)`, with the vectors that make it safe to apply on its own. */
function partOf(delta: Delta, items: Item[], lo: number, hi: number, lastIndex: Map<string, number>): Delta {
  const from: VersionVector = new Map()
  const to: VersionVector = new Map()
  const byRecord = new Map<RecordDelta, { floor?: Timestamp; deleted?: boolean; fields: FieldDelta[] }>()
  for (let i = lo; i < hi; i++) {
    const it = items[i]!
    const origin = it.ts.peer
    // An origin the whole delta makes no claim for (see RecordStore.changesSince) gets none in any part either.
    if (delta.to.has(origin)) {
      if (!to.has(origin)) {
        const prev = i > 0 && items[i - 1]!.ts.peer === origin ? items[i - 1]!.ts : delta.from.get(origin)
        if (prev) from.set(origin, prev)
      }
      to.set(origin, lastIndex.get(origin) === i ? delta.to.get(origin)! : it.ts)
    }
    let rec = byRecord.get(it.rd)
    if (!rec) byRecord.set(it.rd, (rec = { fields: [] }))
    if (it.field) rec.fields.push(it.field)
    else {
      rec.floor = it.rd.floor
      rec.deleted = it.rd.deleted
    }
  }
  if (lo === 0) {
    // Origins whose writes were all superseded still advance; they ride in the first part.
    for (const [origin, ts] of delta.to) {
      if (lastIndex.has(origin)) continue
      const f = delta.from.get(origin)
      if (f) from.set(origin, f)
      to.set(origin, ts)
    }
  }
  const records: RecordDelta[] = []
  for (const [rd, rec] of byRecord) {
    records.push(rec.floor ? { collection: rd.collection, id: rd.id, floor: rec.floor, deleted: rec.deleted === true, fields: rec.fields } : { collection: rd.collection, id: rd.id, fields: rec.fields })
  }
  return { from, to, records }
}
