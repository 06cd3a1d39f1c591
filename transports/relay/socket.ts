/** The relay transport's WebSocket: finding an implementation (native, else `ws`) and closing one cleanly. */
import { TransportStateError } from '../errors.js'
import type { WebSocketConstructorLike, WebSocketLike } from './types.js'

/** `readyState` of an open WebSocket. */
export const OPEN = 1

let wsFallback: Promise<WebSocketConstructorLike> | undefined

/** The WebSocket constructor to use: the one given, else the global one, else the `ws` package's. */
export async function resolveWebSocket(given: WebSocketConstructorLike | undefined): Promise<WebSocketConstructorLike> {
  if (given !== undefined) return given
  const native = (globalThis as { WebSocket?: WebSocketConstructorLike }).WebSocket
  if (typeof native === 'function') return native
  // A computed specifier keeps browser bundlers from trying to bundle `ws`; Node resolves it normally.
  const wsModule = 'ws'
  wsFallback ??= (import(/* @vite-ignore */ wsModule) as Promise<{ WebSocket?: unknown; default?: unknown }>).then(
    (m) => (m.WebSocket ?? m.default) as WebSocketConstructorLike,
    (error: unknown) => {
      wsFallback = undefined
      throw new TransportStateError('no global WebSocket and the `ws` package is not installed: pass `WebSocket` to relayTransport()', { cause: error })
    },
  )
  return wsFallback
}

/** Lets the process exit while `timer` is pending (Node; a no-op in browsers). */
export function unref(timer: ReturnType<typeof setTimeout>): void {
  ;(timer as { unref?: () => void }).unref?.()
}

/** Closes a socket and resolves once it is closed (or after a second, whichever comes first). */
export function closeSocket(ws: WebSocketLike, code: number, reason: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1000)
    unref(timer)
    ws.onopen = null
    ws.onmessage = null
    ws.onerror = () => {}
    ws.onclose = () => {
      clearTimeout(timer)
      resolve()
    }
    try {
      if (ws.readyState >= 2) {
        clearTimeout(timer)
        resolve()
        return
      }
      ws.close(code, reason)
    } catch {
      clearTimeout(timer)
      resolve()
    }
  })
}
