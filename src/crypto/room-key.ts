/**
 * Encrypted rooms: the room key and the cipher built on it (./sealed.ts wraps every transport of an encrypted room
 * with this cipher).
 *
 * - Key: PBKDF2-HMAC-SHA256 (WebCrypto's, which the cipher needs anyway: native, off the main thread, no code to
 *   bundle) over the secret, {@link ROOM_KEY_ITERATIONS} iterations, 32 bytes, salted with {@link roomKeySalt}: a versioned application constant
 *   and the length-prefixed (app, room) pair — never the room name alone, so two apps that pick the same room name
 *   and password do not share a key, and precomputed tables for one room name are useless for another app.
 * - Cipher: AES-256-GCM through WebCrypto, a fresh random 96-bit nonce per message, a 128-bit tag:
 *   `sealed = nonce[12] ‖ ciphertext ‖ tag[16]`. What a message must not be moved to (its purpose, the room topic,
 *   its sender) goes in the additional authenticated data chosen by the caller.
 * - Derived keys are cached in-process (at most {@link ROOM_KEY_CACHE_SIZE} entries) under a SHA-256 of (app, room,
 *   secret), so many replicas of one room in one process pay the slow derivation once.
 */
import { sha256 } from '@noble/hashes/sha2.js'
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js'
import { InvalidValueError, SyncmeshError } from '../../crdt/errors.js'
import { AuthError } from '../../transports/errors.js'
import type { PeerId, RoomCipher } from '../../transports/types.js'

/** PBKDF2-HMAC-SHA256 iterations of the room key (OWASP's 2023 figure for PBKDF2-SHA256). */
export const ROOM_KEY_ITERATIONS = 600_000
/** The application constant that starts every room-key salt. */
export const ROOM_KEY_SALT_PREFIX = 'syncmesh/room-key/v1'
/** Bytes of the AES-GCM nonce, random per message. */
export const NONCE_BYTES = 12
/** Bytes of the AES-GCM authentication tag. */
export const TAG_BYTES = 16
/** Bytes {@link RoomCipher.seal} adds to a message. */
export const SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES
/** Most derived room keys kept in the in-process cache. */
export const ROOM_KEY_CACHE_SIZE = 32
/** An `AuthError` of one kind from one peer is reported at most once per this interval (see {@link AuthErrorThrottle}). */
export const AUTH_ERROR_INTERVAL_MS = 10_000

/** A room secret: a non-empty string (a password, UTF-8 encoded) or non-empty bytes. */
export type RoomSecret = string | Uint8Array

/** Throws {@link InvalidValueError} unless `secret` is a non-empty string or non-empty Uint8Array; returns its bytes. */
export function secretBytes(secret: unknown): Uint8Array {
  if (typeof secret === 'string' && secret.length > 0) return utf8ToBytes(secret)
  if (secret instanceof Uint8Array && secret.length > 0) return secret.slice()
  throw new InvalidValueError('secret must be a non-empty string or a non-empty Uint8Array')
}

/** The salt of a room key: `ROOM_KEY_SALT_PREFIX ‖ 0x00 ‖ u32be(len(app)) ‖ app ‖ room` (app and room as UTF-8). */
export function roomKeySalt(app: string, room: string): Uint8Array {
  const prefix = utf8ToBytes(`${ROOM_KEY_SALT_PREFIX}\u0000`)
  const a = utf8ToBytes(app)
  const r = utf8ToBytes(room)
  const out = new Uint8Array(prefix.length + 4 + a.length + r.length)
  out.set(prefix, 0)
  new DataView(out.buffer).setUint32(prefix.length, a.length)
  out.set(a, prefix.length + 4)
  out.set(r, prefix.length + 4 + a.length)
  return out
}

/** The 32 raw bytes of a room key (slow on purpose: {@link ROOM_KEY_ITERATIONS} PBKDF2 iterations; needs WebCrypto). */
export async function deriveRoomKey(app: string, room: string, secret: RoomSecret): Promise<Uint8Array> {
  const password = secretBytes(secret)
  try {
    const subtle = globalThis.crypto.subtle
    const base = await subtle.importKey('raw', password as Uint8Array<ArrayBuffer>, 'PBKDF2', false, ['deriveBits'])
    const salt = roomKeySalt(app, room) as Uint8Array<ArrayBuffer>
    return new Uint8Array(await subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations: ROOM_KEY_ITERATIONS }, base, 256))
  } finally {
    password.fill(0)
  }
}

const cache = new Map<string, Promise<RoomCipher>>()

/**
 * The cipher of a room: derives the key (or reuses the one this process derived for the same app, room and secret).
 * Rejects with {@link InvalidValueError} for a bad secret.
 */
export function roomCipher(app: string, room: string, secret: RoomSecret): Promise<RoomCipher> {
  if (typeof globalThis.crypto?.subtle?.importKey !== 'function') {
    throw new CryptoUnavailableError(
      'an encrypted room needs WebCrypto (crypto.subtle), and this environment has none: browsers give it only to secure contexts (a page served over https or from localhost)',
    )
  }
  const password = secretBytes(secret)
  const id = cacheId(app, room, password)
  password.fill(0)
  let entry = cache.get(id)
  if (entry) {
    cache.delete(id) // re-inserted below: the map's order is least recently used first
    cache.set(id, entry)
    return entry
  }
  entry = deriveRoomKey(app, room, secret).then(async (raw) => {
    try {
      return await cipherFromKey(raw)
    } finally {
      raw.fill(0)
    }
  })
  cache.set(id, entry)
  if (cache.size > ROOM_KEY_CACHE_SIZE) cache.delete(cache.keys().next().value!)
  entry.catch(() => {
    if (cache.get(id) === entry) cache.delete(id)
  })
  return entry
}

/** An encrypted room was asked for where there is no WebCrypto (`crypto.subtle`: only in secure contexts in browsers). */
export class CryptoUnavailableError extends SyncmeshError {
  override readonly code = 'CRYPTO_UNAVAILABLE'
}

function cacheId(app: string, room: string, password: Uint8Array): string {
  const salt = roomKeySalt(app, room)
  const buf = new Uint8Array(4 + salt.length + password.length)
  new DataView(buf.buffer).setUint32(0, salt.length)
  buf.set(salt, 4)
  buf.set(password, 4 + salt.length)
  const id = bytesToHex(sha256(buf))
  buf.fill(0)
  return id
}

/** A {@link RoomCipher} over a raw 32-byte AES-256 key (imported into WebCrypto as non-extractable). */
export async function cipherFromKey(raw: Uint8Array): Promise<RoomCipher> {
  if (!(raw instanceof Uint8Array) || raw.length !== 32) throw new InvalidValueError('a room key is 32 bytes')
  const key = await globalThis.crypto.subtle.importKey('raw', raw as Uint8Array<ArrayBuffer>, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt'])
  return new AesGcmCipher(key)
}

class AesGcmCipher implements RoomCipher {
  readonly overhead = SEAL_OVERHEAD

  constructor(private readonly key: CryptoKey) {}

  async seal(plain: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    const iv = new Uint8Array(NONCE_BYTES)
    globalThis.crypto.getRandomValues(iv)
    // WebCrypto copies `plain` before this call returns: the caller may reuse its buffer at once.
    const ct = await globalThis.crypto.subtle.encrypt(
      { name: 'AES-GCM', iv, additionalData: aad as Uint8Array<ArrayBuffer>, tagLength: TAG_BYTES * 8 },
      this.key,
      plain as Uint8Array<ArrayBuffer>,
    )
    const out = new Uint8Array(NONCE_BYTES + ct.byteLength)
    out.set(iv, 0)
    out.set(new Uint8Array(ct), NONCE_BYTES)
    return out
  }

  async open(sealed: Uint8Array, aad: Uint8Array): Promise<Uint8Array> {
    if (!(sealed instanceof Uint8Array) || sealed.length < SEAL_OVERHEAD) {
      throw new AuthError(`a sealed message is at least ${SEAL_OVERHEAD} bytes`)
    }
    let plain: ArrayBuffer
    try {
      plain = await globalThis.crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: sealed.subarray(0, NONCE_BYTES) as Uint8Array<ArrayBuffer>, additionalData: aad as Uint8Array<ArrayBuffer>, tagLength: TAG_BYTES * 8 },
        this.key,
        sealed.subarray(NONCE_BYTES) as Uint8Array<ArrayBuffer>,
      )
    } catch (cause) {
      throw new AuthError('the message does not open with the room key (wrong secret, or altered on the way)', 'frame', { cause })
    }
    return new Uint8Array(plain)
  }
}

/**
 * Keeps a wrong secret from flooding the `'error'` event: an `AuthError` of one source from one peer (or from an
 * unknown sender) passes at most once per interval; the next one that passes says how many were held back.
 */
export class AuthErrorThrottle {
  private readonly last = new Map<string, { at: number; suppressed: number }>()

  constructor(
    private readonly intervalMs = AUTH_ERROR_INTERVAL_MS,
    private readonly now: () => number = Date.now,
    private readonly maxKeys = 1024,
  ) {}

  /** The error to report now, or undefined when one like it was reported less than the interval ago. */
  pass(error: AuthError, peer?: PeerId): AuthError | undefined {
    const key = `${error.source}\u0000${peer ?? ''}`
    const now = this.now()
    const seen = this.last.get(key)
    if (seen && now - seen.at < this.intervalMs) {
      seen.suppressed++
      return undefined
    }
    this.last.delete(key)
    this.last.set(key, { at: now, suppressed: 0 })
    if (this.last.size > this.maxKeys) this.last.delete(this.last.keys().next().value!)
    if (!seen || seen.suppressed === 0) return error
    return new AuthError(`${error.message} (${seen.suppressed} more like it since the last report)`, error.source, { cause: error.cause })
  }
}
