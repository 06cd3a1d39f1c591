/**
 * `startServer` in a process of its own, for test/server/load.test.ts: the server's memory is then measurable apart
 * from the test's. Options come as JSON in argv[2] (always on 127.0.0.1, port 0). Over IPC it sends
 * `{ url }` once listening and answers `'probe'` with `{ probe: { rss, heapUsed, ..., lagMaxMs, cpuMs, stats } }`
 * (lagMaxMs: the longest event-loop delay since the previous probe; cpuMs: CPU time used so far), `'probe-gc'` the
 * same after a full GC (the test runs it with --expose-gc). Disconnecting the IPC channel closes the server and exits.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { startServer, type ServerInit } from '../../src/server/index.js'

const init = JSON.parse(process.argv[2] ?? '{}') as ServerInit
const server = await startServer({ ...init, host: '127.0.0.1', port: 0, log: false })
const gc = (globalThis as { gc?: () => void }).gc
const lag = monitorEventLoopDelay({ resolution: 10 })
lag.enable()

process.on('message', (m) => {
  if (m === 'probe-gc') gc?.()
  if (m !== 'probe' && m !== 'probe-gc') return
  const mem = process.memoryUsage()
  const lagMaxMs = lag.max / 1e6
  const cpu = process.cpuUsage()
  lag.reset()
  process.send?.({ probe: { rss: mem.rss, heapUsed: mem.heapUsed, external: mem.external, arrayBuffers: mem.arrayBuffers, lagMaxMs, cpuMs: (cpu.user + cpu.system) / 1000, stats: server.stats() } })
})
process.once('disconnect', () => void server.close().then(() => process.exit(0)))
process.send?.({ url: server.url })
