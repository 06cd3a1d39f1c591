import { createReplica, type MemoryStorage, type Replica, type ReplicaInit } from '../../src/index.js'
import { MemoryNetwork } from '../../transports/memory.js'

/** Todo records used across the replica tests. */
export interface Todo {
  id: string
  title?: string
  done?: boolean
  n?: number
}

/** N replicas on one in-memory network (auto delivery), named r0…rN-1. */
export async function replicas(n: number, init: Partial<ReplicaInit> = {}, net = new MemoryNetwork({ seed: 7 })): Promise<{ net: MemoryNetwork; rs: Replica[] }> {
  const rs: Replica[] = []
  for (let i = 0; i < n; i++) rs.push(await createReplica({ peerId: `r${i}`, transports: [net.transport()], antiEntropyMs: 0, ...init }))
  return { net, rs }
}

/** Collects every event of a kind. */
export function record<T>(subscribe: (fn: (x: T) => void) => unknown): T[] {
  const out: T[] = []
  subscribe((x) => out.push(x))
  return out
}

/** The shared polling wait (test/wait.ts), re-exported for the replica tests. */
export { until } from '../wait.js'

/** The same MemoryStorage, usable again after a replica closed it (a restart on the same data). */
export function reopen(s: MemoryStorage): MemoryStorage {
  Object.assign(s, { closed: false })
  return s
}

/** Three rounds of a short pause then `sync()` on every replica: enough for text and records to settle. */
export async function settle(...rs: Replica[]): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 5))
    await Promise.all(rs.map((r) => r.sync({ timeoutMs: 5000 })))
  }
}
