/**
 * Child of `redis-sharing.test.ts`: takes a lock, gives it back and ends at once.
 *
 *   node --import tsx test/storage/redis-lock-exit-child.ts <redis port> <namespace>
 *
 * Its Redis connections go through a proxy in this process that holds every script call (EVAL: the lock's release)
 * back 300 ms on its way to Redis, as a slow link would. The proxy's sockets and timers are unreferenced, so it keeps
 * nothing alive: what keeps the process running is the storage alone. The lock must not outlive the process.
 */
import net from 'node:net'

async function main(): Promise<void> {
  const [portArg, namespace] = process.argv.slice(2)
  const port = Number(portArg)
  const proxy = net.createServer((client) => {
    client.unref()
    const upstream = net.connect({ host: '127.0.0.1', port })
    upstream.unref()
    client.on('data', (d: Buffer) => (d.includes('EVAL') ? setTimeout(() => upstream.write(d), 300).unref() : upstream.write(d)))
    upstream.on('data', (d: Buffer) => client.write(d))
    const end = (): void => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', end).on('close', end)
    upstream.on('error', end).on('close', end)
  })
  proxy.unref()
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r))
  const { redisStorage } = await import('../../src/storage/redis.js')
  const storage = redisStorage({ url: `redis://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`, namespace, lockTtlMs: 60_000 })
  const lease = await storage.sharing.locks!.acquire('leader')
  process.stdout.write('acquired\n')
  lease.release()
  await storage.close()
  process.stdout.write('closed\n')
  // No process.exit: the process ends by itself once nothing keeps it alive.
}

main().catch((err: unknown) => {
  process.stderr.write(`child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exit(2)
})
