/**
 * Run by held-shapes.test.ts as `node --expose-gc --allow-natives-syntax --import tsx held-shapes-child.ts`: compiles
 * the write, encode and merge paths with TurboFan, runs two full garbage collections, and prints one JSON line saying
 * which of them lost their optimised code. The two stores stay, as an app's replica does between two bursts of
 * writes; nothing else of the bursts is kept.
 */
import { newestInDelta } from '../../crdt/delta.js'
import { RecordStore } from '../../crdt/record-store.js'

type Native = (f: unknown) => unknown
const native = (name: string): Native => new Function('f', `return %${name}(f)`) as Native
const prepare = native('PrepareFunctionForOptimization')
const optimizeNext = native('OptimizeFunctionOnNextCall')
const status = native('GetOptimizationStatus') as (f: unknown) => number
const waitForBackground = new Function('return %WaitForBackgroundOptimization()') as () => void
/** V8's "optimised by TurboFan" status bit (src/runtime/runtime.h, OptimizationStatus::kTurboFanned). */
const TURBOFANNED = 1 << 6

const proto = RecordStore.prototype as unknown as Record<string, unknown>
const paths: Record<string, unknown> = {
  put: proto.put,
  encodeChangesOf: proto.encodeChangesOf,
  applyEncoded: proto.applyEncoded,
  newestInDelta,
}

const a = new RecordStore()
const b = new RecordStore()
let wall = 1_800_000_000_000
/** One burst: local puts on `a`, the delta of each tick's writes, merged into `b`. */
function burst(): void {
  for (let tick = 0; tick < 20; tick++) {
    const ids: string[] = []
    for (let i = 0; i < 10; i++) {
      const id = `r${wall}-${i}`
      a.put('todos', id, { title: `t${i}`, n: i, done: i % 2 === 0 }, { wall: ++wall, counter: 0, peer: 'a' })
      ids.push(id)
    }
    const bytes = a.encodeChangesOf('a', undefined, new Map([['todos', ids]]))
    newestInDelta(bytes)
    b.applyEncoded(bytes)
  }
}

for (const f of Object.values(paths)) prepare(f)
burst()
for (const f of Object.values(paths)) optimizeNext(f)
burst()
waitForBackground()
const optimized = (): string[] => Object.keys(paths).filter((k) => (status(paths[k]) & TURBOFANNED) !== 0)
const before = optimized()
const gc = (globalThis as unknown as { gc(): void }).gc
gc()
gc()
process.stdout.write(`${JSON.stringify({ before, after: optimized() })}\n`)
