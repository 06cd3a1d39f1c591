/**
 * What the WebRTC transport runs on: the parts of the standard WebRTC API it uses (typed loosely, so that any
 * implementation fits), and the defaults it loads on `start()` when not given any: the global `RTCPeerConnection`
 * and `WebSocket` (browsers), else `@roamhq/wrtc` and `ws` (Node).
 */
import { TransportError } from '../errors.js'
import { type WebSocketConstructor, isObject } from './signaling.js'
import type { IceServer, RTCImplementation } from './types.js'

export interface IceCandidateInit {
  candidate: string
  sdpMid: string | null
  sdpMLineIndex: number | null
}

export interface DataChannelLike {
  readonly readyState: string
  readonly bufferedAmount: number
  bufferedAmountLowThreshold: number
  binaryType: string
  send(data: Uint8Array): void
  close(): void
  onopen: (() => void) | null
  onclose: (() => void) | null
  onerror: ((ev: unknown) => void) | null
  onmessage: ((ev: { data: unknown }) => void) | null
  onbufferedamountlow: (() => void) | null
}

export interface PeerConnectionLike {
  readonly connectionState?: string
  readonly iceConnectionState?: string
  readonly localDescription: { type: string; sdp: string } | null
  createDataChannel(label: string, init: { negotiated: boolean; id: number; ordered: boolean }): DataChannelLike
  createOffer(): Promise<{ type: string; sdp?: string }>
  createAnswer(): Promise<{ type: string; sdp?: string }>
  setLocalDescription(description: { type: string; sdp?: string }): Promise<void>
  setRemoteDescription(description: { type: string; sdp: string }): Promise<void>
  addIceCandidate(candidate: IceCandidateInit): Promise<void>
  close(): void
  onicecandidate: ((ev: { candidate: { candidate: string; sdpMid?: string | null; sdpMLineIndex?: number | null } | null }) => void) | null
  onconnectionstatechange: (() => void) | null
  oniceconnectionstatechange: (() => void) | null
}

export type PeerConnectionCtor = new (config: { iceServers: IceServer[] }) => PeerConnectionLike

let wrtcPromise: Promise<RTCImplementation> | undefined
let wsPromise: Promise<WebSocketConstructor> | undefined

export async function defaultRtc(): Promise<RTCImplementation> {
  const g = globalThis as { RTCPeerConnection?: RTCImplementation['RTCPeerConnection'] }
  if (typeof g.RTCPeerConnection === 'function') return { RTCPeerConnection: g.RTCPeerConnection }
  wrtcPromise ??= import('@roamhq/wrtc').then((mod: unknown) => {
    const m = mod as { default?: unknown; RTCPeerConnection?: unknown }
    const impl = (isObject(m.default) || typeof m.default === 'function' ? m.default : m) as { RTCPeerConnection?: unknown }
    if (typeof impl.RTCPeerConnection !== 'function') throw new TransportError('@roamhq/wrtc has no RTCPeerConnection')
    return impl as RTCImplementation
  })
  try {
    return await wrtcPromise
  } catch (error) {
    wrtcPromise = undefined
    throw new TransportError(
      `no WebRTC implementation: this runtime has no global RTCPeerConnection and @roamhq/wrtc could not be loaded (${String(error)}); install @roamhq/wrtc or pass the 'rtc' option`,
    )
  }
}

export async function defaultWebSocket(): Promise<{ ctor: WebSocketConstructor; options?: object }> {
  const g = globalThis as { WebSocket?: WebSocketConstructor }
  if (typeof g.WebSocket === 'function') return { ctor: g.WebSocket }
  wsPromise ??= import('ws').then((mod: unknown) => {
    const m = mod as { default?: unknown; WebSocket?: unknown }
    const ctor = typeof m.WebSocket === 'function' ? m.WebSocket : m.default
    if (typeof ctor !== 'function') throw new TransportError('ws has no WebSocket export')
    return ctor as WebSocketConstructor
  })
  try {
    // `ws` accepts options as its second argument: cap what one signaling message may make us buffer.
    return { ctor: await wsPromise, options: { maxPayload: 8 * 1024 * 1024 } }
  } catch (error) {
    wsPromise = undefined
    throw new TransportError(
      `no WebSocket implementation: this runtime has no global WebSocket and the ws package could not be loaded (${String(error)}); install ws or pass the 'WebSocket' option`,
    )
  }
}
