/**
 * The signaling payloads of the WebRTC transport (the `data` of a publish on the room topic; the protocol is
 * specified in index.ts): their shapes, a parser that accepts only well-formed ones, and their sealed form in
 * encrypted rooms ({@link SealedSignals}).
 */
import { AuthError } from '../errors.js'
import type { PeerId, RoomCipher } from '../types.js'
import type { IceCandidateInit } from './runtime.js'
import { isObject } from './signaling.js'

export type Signal =
  | { type: 'offer' | 'answer'; sdp: string }
  | { type: 'candidate'; candidate: IceCandidateInit }
  | { type: 'reject' | 'bye' }

export type Incoming =
  | { type: 'announce'; from: PeerId; session: string; to: PeerId | undefined }
  | { type: 'leave'; from: PeerId; session: string | undefined }
  | { type: 'signal'; from: PeerId; to: PeerId; token: string; session: string | undefined; signal: Signal }

export const MAX_ID_CHARS = 256
export const MAX_TOKEN_CHARS = 64

export const isId = (x: unknown): x is string => typeof x === 'string' && x.length > 0 && x.length <= MAX_ID_CHARS
export const isToken = (x: unknown): x is string => typeof x === 'string' && x.length > 0 && x.length <= MAX_TOKEN_CHARS

/** Reads one signaling payload; undefined for anything that is not a well-formed message of this protocol. */
export function parseIncoming(data: unknown): Incoming | undefined {
  if (!isObject(data)) return undefined
  const from = data['from']
  if (!isId(from)) return undefined
  const session = data['session']
  switch (data['type']) {
    case 'announce': {
      const to = data['to']
      if (!isToken(session) || (to !== undefined && !isId(to))) return undefined
      return { type: 'announce', from, session, to }
    }
    case 'leave':
      if (session !== undefined && !isToken(session)) return undefined
      return { type: 'leave', from, session }
    case 'signal': {
      const { to, token } = data
      if (!isId(to) || !isToken(token) || (session !== undefined && !isToken(session))) return undefined
      const signal = parseSignal(data['signal'])
      return signal && { type: 'signal', from, to, token, session, signal }
    }
    default:
      return undefined
  }
}

function parseSignal(s: unknown): Signal | undefined {
  if (!isObject(s)) return undefined
  const type = s['type']
  if (type === 'offer' || type === 'answer') {
    const sdp = s['sdp']
    return typeof sdp === 'string' && sdp.length > 0 ? { type, sdp } : undefined
  }
  if (type === 'candidate') {
    const c = s['candidate']
    if (!isObject(c)) return undefined
    const { candidate, sdpMid, sdpMLineIndex } = c
    if (typeof candidate !== 'string' || candidate.length > 2048) return undefined
    if (!(sdpMid === undefined || sdpMid === null || (typeof sdpMid === 'string' && sdpMid.length <= 64))) return undefined
    if (
      !(sdpMLineIndex === undefined || sdpMLineIndex === null || (Number.isInteger(sdpMLineIndex) && (sdpMLineIndex as number) >= 0 && (sdpMLineIndex as number) < 65536))
    ) {
      return undefined
    }
    return {
      type,
      candidate: { candidate, sdpMid: (sdpMid as string | null | undefined) ?? null, sdpMLineIndex: (sdpMLineIndex as number | null | undefined) ?? null },
    }
  }
  if (type === 'reject' || type === 'bye') return { type }
  return undefined
}

/** Base64 (standard alphabet, padded) of bytes; chunked so that large inputs do not overflow the call stack. */
export function toBase64(bytes: Uint8Array): string {
  let bin = ''
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(bin)
}

/** The bytes of a base64 string, or undefined when it is not base64. */
export function fromBase64(text: string): Uint8Array | undefined {
  let bin: string
  try {
    bin = atob(text)
  } catch {
    return undefined
  }
  const out = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out
}

export function randomToken(): string {
  const bytes = new Uint8Array(12)
  globalThis.crypto.getRandomValues(bytes)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

/** Insertion-ordered set that forgets its oldest entries beyond `cap`. */
export class BoundedSet {
  private readonly items = new Set<string>()
  constructor(private readonly cap: number) {}
  has(x: string): boolean {
    return this.items.has(x)
  }
  add(x: string): void {
    this.items.add(x)
    if (this.items.size > this.cap) this.items.delete(this.items.values().next().value!)
  }
  clear(): void {
    this.items.clear()
  }
}


/** Sealed signaling payloads waiting to be opened, at most (encrypted rooms). */
const MAX_PENDING_SIGNALS = 256

/**
 * The sealed form of signaling payloads in an encrypted room: `{sm: 1, c: base64(seal(JSON))}` with AAD
 * `"syncmesh/signal/v1" 0x00 topic`. Payloads are sealed, and opened, each direction in order.
 */
export class SealedSignals {
  private cipher: RoomCipher | undefined
  private aad = new Uint8Array(0)
  private out: Promise<void> = Promise.resolve()
  private in: Promise<void> = Promise.resolve()
  /** Sealed payloads received and not yet handled (a flooding server cannot make this grow without bound). */
  private pending = 0

  /** At start: the room key (undefined in a room without one) and the room topic bound into every payload. */
  use(cipher: RoomCipher | undefined, room: string): void {
    this.cipher = cipher
    this.aad = new TextEncoder().encode(`syncmesh/signal/v1\u0000${room}`)
  }

  /** Whether payloads are sealed (the room has a key). */
  get enabled(): boolean {
    return this.cipher !== undefined
  }

  /** `{sm: 1, c: base64(seal(JSON))}`. */
  async seal(data: unknown): Promise<{ sm: 1; c: string }> {
    const sealed = await this.cipher!.seal(new TextEncoder().encode(JSON.stringify(data)), this.aad)
    return { sm: 1, c: toBase64(sealed) }
  }

  /** Seals `data` and hands it to `publish` once every payload sealed before it is out; `fail` gets a sealing error. */
  sealInOrder(data: unknown, publish: (payload: { sm: 1; c: string }) => void, fail: (error: unknown) => void): void {
    const sealed = this.seal(data)
    sealed.catch(() => undefined) // handled in order below
    this.out = this.out.then(() => sealed).then(publish, fail)
  }

  /**
   * Opens a received payload and hands its JSON to `deliver` once every payload received before it is handled. One
   * that is not sealed, or does not open, goes to `fail` as an {@link AuthError}; authentic bytes that are not JSON
   * are ignored (another build's business), and so are payloads beyond a backlog of 256 (announces repeat).
   */
  openInOrder(data: unknown, deliver: (message: unknown) => void, fail: (error: AuthError) => void): void {
    const c = isObject(data) && data['sm'] === 1 && typeof data['c'] === 'string' ? fromBase64(data['c']) : undefined
    if (!c) {
      fail(new AuthError('a signaling payload in an encrypted room is not sealed (a peer without the room secret, or another build)', 'signaling'))
      return
    }
    if (this.pending >= MAX_PENDING_SIGNALS) return // a flood: signaling is best-effort, announces repeat
    const opened = this.cipher!.open(c, this.aad)
    opened.catch(() => undefined) // handled in order below
    this.pending++
    this.in = this.in
      .then(() => opened)
      .finally(() => this.pending--)
      .then(
        (plain) => {
          let message: unknown
          try {
            message = JSON.parse(new TextDecoder().decode(plain))
          } catch {
            return // authentic but not JSON
          }
          deliver(message)
        },
        (cause: unknown) => {
          fail(new AuthError('a signaling payload does not open with the room key (a peer with another secret, or altered by the server)', 'signaling', { cause }))
        },
      )
  }
}
