/**
 * Real-browser test helpers: Debian's Chromium driven by playwright-core, each "browser" a persistent context on a
 * fresh profile directory (its own IndexedDB, BroadcastChannel and Web Locks), with the flags WebRTC needs over
 * loopback. Tests skip, loudly, when /usr/bin/chromium is missing.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'

/** Where Debian's `chromium` package installs the browser. */
export const CHROMIUM = '/usr/bin/chromium'
/** Whether the browser tests can run here. */
export const haveChromium = existsSync(CHROMIUM)

/** Prints the loud skip notice (once per file). */
export function warnIfNoChromium(what: string): void {
  if (haveChromium) return
  console.warn(
    `\n${'!'.repeat(100)}\n!! SKIPPING ${what}: ${CHROMIUM} not found.\n` +
      `!! Install it with: sudo apt-get update && sudo apt-get install -y chromium   (.ci/run does this in CI)\n${'!'.repeat(100)}\n`,
  )
}

const BASE_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

/** One launched browser (a profile of its own) and the errors its pages raised. */
export interface TestBrowser {
  readonly context: BrowserContext
  readonly errors: string[]
  /** A new tab, with its errors collected. */
  page(): Promise<Page>
  close(): Promise<void>
}

/**
 * Launches Chromium on a fresh profile. `webrtc: false` makes every WebRTC connection of its pages fail, as behind
 * a NAT or firewall that blocks it: each RTCPeerConnection is made with `iceTransportPolicy: 'relay'` and there is
 * no TURN server, so it has no candidate to offer or to check from. (Leaving out the loopback flag is not enough:
 * a machine may have an interface besides loopback, and two browsers on it then connect through its address.)
 */
export async function launchBrowser(options: { webrtc?: boolean; extraArgs?: string[] } = {}): Promise<TestBrowser> {
  const profile = await mkdtemp(join(tmpdir(), 'syncmesh-chromium-'))
  const webrtc = options.webrtc ?? true
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...BASE_ARGS, ...(webrtc ? ['--allow-loopback-in-peer-connection'] : []), ...(options.extraArgs ?? [])],
    permissions: ['camera', 'microphone'], // without them Chromium gathers no host candidates
    viewport: { width: 900, height: 700 },
  })
  if (!webrtc) {
    await context.addInitScript(() => {
      const Native = globalThis.RTCPeerConnection
      globalThis.RTCPeerConnection = class extends Native {
        constructor(config?: RTCConfiguration) {
          super({ ...config, iceServers: [], iceTransportPolicy: 'relay' })
        }
      }
    })
  }
  const errors: string[] = []
  const watch = (p: Page): Page => {
    p.on('pageerror', (err) => errors.push(String(err)))
    p.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) errors.push(`console.error: ${m.text()}`)
    })
    return p
  }
  for (const p of context.pages()) watch(p)
  return {
    context,
    errors,
    page: async () => watch(await context.newPage()),
    async close() {
      await context.close().catch(() => {})
      await rm(profile, { recursive: true, force: true })
    },
  }
}
