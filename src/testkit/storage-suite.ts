/**
 * The Storage conformance suite: one list of test cases that every {@link Storage} adapter must pass, whatever the
 * test runner. Each case opens a fresh storage through a {@link StorageHarness}, exercises one promise of the
 * contract, closes what it opened, calls `harness.cleanup()`, and throws a {@link StorageConformanceError} saying which
 * promise was broken.
 *
 * ```ts
 * for (const c of storageConformanceCases(harness)) it(c.name, c.run)        // vitest / jest / mocha
 * for (const c of storageConformanceCases(harness)) test(c.name, c.run)      // node:test
 * ```
 *
 * The contract checked, beyond the `Storage` type:
 * - values round-trip byte-for-byte; `load` of a missing key resolves `undefined`;
 * - `loadRange(prefix)` returns exactly the keys whose first `prefix.length` elements equal `prefix` (whole elements:
 *   `['log']` matches neither `['logs']` nor `['lo']`), sorted by {@link compareKeys} — JavaScript string order, i.e.
 *   UTF-16 code units, which differs from UTF-8 byte order for U+E000–U+FFFF against astral characters;
 * - keys are arbitrary string arrays: `''`, `'\u0000'`, `'/'`, lone surrogates and different lengths stay distinct;
 * - data are copied both ways: the caller may reuse its buffer as soon as `save` returns, and mutating a returned
 *   value changes nothing stored;
 * - calls issued without awaiting take effect in call order (the last save of a key wins; a load sees the writes
 *   issued before it), and many concurrent saves all land;
 * - after `close()` every method rejects (a rejected promise, not a synchronous throw) with `StorageClosedError`;
 *   `close()` twice is fine; a write that resolved before or during `close()` is there after a reopen.
 * Every case is bounded by `timeoutMs`; a timeout names the last storage call that was started.
 */
import { SyncmeshError } from '../../crdt/errors.js'
import { StorageClosedError } from '../errors.js'
import type { Storage } from '../storage/types.js'
import { compareKeys } from '../storage/types.js'
import { equalBytes, pattern, preview } from './bytes.js'
import { describeError } from './print.js'
import type { ConformanceCase } from './transport-suite.js'

/** Builds the storages the conformance cases run against. */
export interface StorageHarness {
  /** Opens a fresh, empty storage. */
  create(): Promise<Storage>
  /** Closes `s` and opens the same underlying data again (same files/database); omit when the adapter is not durable. */
  reopen?(s: Storage): Promise<Storage>
  /** Removes everything the harness created; called after every case (storages are already closed by then). */
  cleanup?(): Promise<void>
}

/** Options of {@link storageConformanceCases}. */
export interface StorageConformanceOptions {
  /**
   * Longest time, in ms, one case may take before it fails (naming the storage call in progress).
   * @default 30_000
   */
  timeoutMs?: number
}

/** A conformance case failed: the message says which promise of the Storage contract was broken. */
export class StorageConformanceError extends SyncmeshError {
  override readonly code = 'STORAGE_CONFORMANCE'
}

// ---------------------------------------------------------------------------------------------------------------------
// Helpers (local, framework-free)

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new StorageConformanceError(message)
}

function fail(message: string): never {
  throw new StorageConformanceError(message)
}

/** A key as a readable, unambiguous string (JSON escapes control characters and lone surrogates). */
function showKey(key: readonly string[]): string {
  return JSON.stringify(key)
}

function firstDifference(a: Uint8Array, b: Uint8Array): string {
  const n = Math.min(a.byteLength, b.byteLength)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return `first difference at byte ${i}: ${a[i]} vs ${b[i]}`
  return `lengths ${a.byteLength} vs ${b.byteLength}`
}

/** A short value that names its key, so a value stored under the wrong key is caught. */
function valueFor(key: readonly string[], salt = 0): Uint8Array {
  return new TextEncoder().encode(`${salt}:${showKey(key)}`)
}

function sameKey(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((e, i) => e === b[i])
}

function isClosedError(err: unknown): boolean {
  if (err instanceof StorageClosedError) return true
  // An adapter built against another copy of syncmesh throws another copy of the class.
  const e = err as { name?: unknown; code?: unknown } | null
  return typeof e === 'object' && e !== null && e.name === 'StorageClosedError' && e.code === 'STORAGE_CLOSED'
}

/**
 * Keys chosen to break naive encodings: element separators inside elements, empty elements, NUL, prefixes of each
 * other, and characters whose UTF-8 order differs from their UTF-16 order (U+E000–U+FFFF sort after astral
 * characters in JavaScript, before them in UTF-8), lone surrogates, and the boundaries of common variable-length
 * encodings (0x7F, 0x80, 0x7FF, 0x800, 0x407E/0x407F).
 */
const TRICKY_ELEMENTS: readonly string[] = [
  '',
  '\u0000',
  '\u0000\u0000',
  '\u0001',
  '\u001f',
  ' ',
  '/',
  '//',
  '\\',
  ',',
  '"',
  '0',
  'a',
  'a\u0000',
  'a\u0000b',
  'a/b',
  'ab',
  'a\u0001',
  '\u007e',
  '\u007f',
  '\u0080',
  'é',
  '\u00ff',
  '\u0100',
  '\u07ff',
  '\u0800',
  '\u407e',
  '\u407f',
  '\u4080',
  '日本語',
  '\ud7ff',
  '\ud800',
  '\ud83d',
  '\ud83d\ude00',
  '\ud83d\ude00x',
  '\udbff\udfff',
  '\udc00',
  '\udfff',
  '\ue000',
  '\ufeff',
  '\ufffd',
  '\uffff',
  '\uffff\uffff',
  'x'.repeat(300),
]

/** A set of keys under the prefix `[root]`: single elements, pairs and triples of different lengths. */
function trickyKeys(root: string): string[][] {
  const keys: string[][] = [[root]]
  for (const e of TRICKY_ELEMENTS) keys.push([root, e])
  for (const e of ['', 'a', '\u0000', '\ud83d\ude00', '\uffff']) {
    for (const f of ['', 'a', '/', '\u0000', '\ue000', '\ud83d\ude00']) keys.push([root, e, f])
  }
  keys.push([root, 'a', '', ''], [root, '', '', ''], [root, 'a', 'b', 'c', 'd', 'e'])
  return [...new Map(keys.map((k) => [JSON.stringify(k), k])).values()]
}

function sortedKeys(keys: readonly (readonly string[])[]): string[][] {
  return keys.map((k) => [...k]).sort(compareKeys)
}

/** Checks that `got` holds exactly `expected` (keys in compareKeys order, each with its value). */
function checkEntries(
  what: string,
  got: { key: string[]; data: Uint8Array }[],
  expected: ReadonlyMap<string, { key: readonly string[]; data: Uint8Array }>,
): void {
  assert(Array.isArray(got), `${what} must resolve an array, got ${typeof got}`)
  for (const e of got) {
    assert(Array.isArray(e?.key) && e.key.every((k) => typeof k === 'string'), `${what} returned an entry whose key is not a string array: ${String(e?.key)}`)
    assert(e.data instanceof Uint8Array, `${what} returned ${showKey(e.key)} with data that is not a Uint8Array`)
  }
  for (let i = 1; i < got.length; i++) {
    const c = compareKeys(got[i - 1]!.key, got[i]!.key)
    assert(c !== 0, `${what} returned ${showKey(got[i]!.key)} twice`)
    assert(
      c < 0,
      `${what} is not in compareKeys order (element-wise UTF-16 code-unit order, shorter first): ${showKey(got[i - 1]!.key)} came before ${showKey(got[i]!.key)}`,
    )
  }
  const gotMap = new Map(got.map((e) => [JSON.stringify(e.key), e]))
  const missing = [...expected.keys()].filter((k) => !gotMap.has(k))
  const extra = [...gotMap.keys()].filter((k) => !expected.has(k))
  assert(
    missing.length === 0 && extra.length === 0,
    `${what} returned the wrong keys: missing ${missing.length} (${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}), ` +
      `unexpected ${extra.length} (${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', …' : ''})`,
  )
  for (const [k, want] of expected) {
    const have = gotMap.get(k)!
    assert(
      equalBytes(have.data, want.data),
      `${what}: ${k} holds ${preview(have.data)}, expected ${preview(want.data)} (${firstDifference(have.data, want.data)})`,
    )
  }
}

function entryMap(entries: Iterable<{ key: readonly string[]; data: Uint8Array }>): Map<string, { key: readonly string[]; data: Uint8Array }> {
  return new Map([...entries].map((e) => [JSON.stringify(e.key), e]))
}

/** Storage calls made by a case, recording the last one started (for timeout messages). */
interface Ctx {
  /** The storage under test (the latest one after a reopen). */
  readonly s: Storage
  /** Closes the current storage and opens the same data again; undefined when the harness is not durable. */
  readonly reopen: (() => Promise<Storage>) | undefined
  load(key: string[]): Promise<Uint8Array | undefined>
  save(key: string[], data: Uint8Array): Promise<void>
  remove(key: string[]): Promise<void>
  loadRange(prefix: string[]): Promise<{ key: string[]; data: Uint8Array }[]>
  /** Loads one key and checks it holds `want` (undefined: absent). */
  expectValue(key: string[], want: Uint8Array | undefined, why: string): Promise<void>
}

// ---------------------------------------------------------------------------------------------------------------------
// The suite

/** Returns the conformance cases for storages built by `harness`; run each with any test runner. */
export function storageConformanceCases(harness: StorageHarness, opts: StorageConformanceOptions = {}): ConformanceCase[] {
  const timeoutMs = opts.timeoutMs ?? 30_000

  function storageCase(name: string, body: (ctx: Ctx) => Promise<void>, needs: { reopen?: boolean } = {}): ConformanceCase {
    return {
      name,
      run: async () => {
        if (needs.reopen && !harness.reopen) return // not durable: nothing to check
        let current = 'harness.create()'
        const opened: Storage[] = []
        let timer: ReturnType<typeof setTimeout> | undefined
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new StorageConformanceError(`timed out after ${timeoutMs} ms; last storage call started: ${current}`)), timeoutMs)
        })
        const bounded = <T>(p: Promise<T>): Promise<T> => Promise.race([p, timeout])
        let failed = false
        try {
          const first = await bounded(harness.create())
          assert(first && typeof first.load === 'function', 'harness.create() must resolve a Storage')
          opened.push(first)
          const call = <T>(what: string, fn: () => Promise<T>): Promise<T> => {
            current = what
            let p: Promise<T>
            try {
              p = fn()
            } catch (err) {
              fail(`${what} threw synchronously instead of returning a promise: ${describeError(err)}`)
            }
            assert(p && typeof p.then === 'function', `${what} must return a promise`)
            return bounded(p)
          }
          const ctx: Ctx = {
            get s() {
              return opened.at(-1)!
            },
            reopen: harness.reopen
              ? async () => {
                  const next = await call('harness.reopen()', () => harness.reopen!(opened.at(-1)!))
                  assert(next && typeof next.load === 'function', 'harness.reopen() must resolve a Storage')
                  opened.push(next)
                  return next
                }
              : undefined,
            load: (key) => call(`load(${showKey(key)})`, () => ctx.s.load(key)),
            save: (key, data) => call(`save(${showKey(key)}, ${preview(data)})`, () => ctx.s.save(key, data)),
            remove: (key) => call(`remove(${showKey(key)})`, () => ctx.s.remove(key)),
            loadRange: (prefix) => call(`loadRange(${showKey(prefix)})`, () => ctx.s.loadRange(prefix)),
            expectValue: async (key, want, why) => {
              const got = await ctx.load(key)
              if (want === undefined) {
                assert(got === undefined, `${why}: load(${showKey(key)}) must resolve undefined, got ${preview(got)}`)
                return
              }
              assert(got instanceof Uint8Array, `${why}: load(${showKey(key)}) must resolve a Uint8Array, got ${preview(got)}`)
              assert(equalBytes(got, want), `${why}: load(${showKey(key)}) gave ${preview(got)}, expected ${preview(want)} (${firstDifference(got, want)})`)
            },
          }
          await bounded(body(ctx))
        } catch (err) {
          failed = true
          throw err
        } finally {
          clearTimeout(timer)
          // Close whatever is still open (the reopen hook closed the earlier ones); a cleanup failure must not mask
          // the failure of the case itself.
          const last = opened.at(-1)
          const closing = (async () => {
            if (last?.close) await last.close()
            await harness.cleanup?.()
          })()
          if (failed) await closing.catch(() => undefined)
          else await closing.catch((err: unknown) => fail(`closing the storage or harness.cleanup() failed: ${describeError(err)}`))
        }
      },
    }
  }

  return [
    storageCase('load of a missing key resolves undefined (not empty bytes, not an error)', async (ctx) => {
      await ctx.expectValue(['missing'], undefined, 'a fresh storage')
      await ctx.expectValue(['missing', 'deeper'], undefined, 'a fresh storage')
      await ctx.expectValue([''], undefined, 'a fresh storage')
      await ctx.save(['present'], new Uint8Array([1]))
      await ctx.expectValue(['present', ''], undefined, 'a longer key than one stored')
      await ctx.expectValue(['presen'], undefined, 'a key that is a string prefix of one stored')
      await ctx.expectValue(['present\u0000'], undefined, 'a key one NUL longer than one stored')
    }),

    storageCase('values round-trip byte-for-byte: empty, every byte value, 5 MiB, a view into a larger buffer', async (ctx) => {
      const values: [string[], Uint8Array][] = [
        [['v', 'empty'], new Uint8Array(0)],
        [['v', 'zero'], new Uint8Array([0])],
        [['v', 'all-bytes'], Uint8Array.from({ length: 256 }, (_, i) => i)],
        [['v', 'all-bytes-reversed'], Uint8Array.from({ length: 256 }, (_, i) => 255 - i)],
        [['v', 'zeros'], new Uint8Array(1000)],
        [['v', 'utf8-invalid'], new Uint8Array([0xc0, 0x80, 0xed, 0xa0, 0x80, 0xff, 0xfe])],
        [['v', 'big'], pattern(5 * 1024 * 1024, 1)],
        // A view: only the viewed bytes may be stored.
        [['v', 'view'], pattern(200, 2).subarray(50, 150)],
      ]
      for (const [key, data] of values) await ctx.save(key, data)
      for (const [key, data] of values) await ctx.expectValue(key, data, 'after save')
      const range = await ctx.loadRange(['v'])
      checkEntries('loadRange(["v"])', range, entryMap(values.map(([key, data]) => ({ key, data }))))
    }),

    storageCase('a second save replaces the value (no stale, merged or appended bytes)', async (ctx) => {
      const key = ['o', 'k']
      await ctx.save(key, pattern(5000, 3))
      await ctx.save(key, new Uint8Array([7, 7, 7]))
      await ctx.expectValue(key, new Uint8Array([7, 7, 7]), 'after overwriting with a shorter value')
      await ctx.save(key, pattern(9000, 4))
      await ctx.expectValue(key, pattern(9000, 4), 'after overwriting with a longer value')
      await ctx.save(key, new Uint8Array(0))
      await ctx.expectValue(key, new Uint8Array(0), 'after overwriting with an empty value')
      const range = await ctx.loadRange(['o'])
      assert(range.length === 1, `an overwritten key must appear once in loadRange, got ${range.length} entries`)
    }),

    storageCase('remove deletes exactly one key; removing a missing key resolves', async (ctx) => {
      await ctx.save(['r', 'a'], new Uint8Array([1]))
      await ctx.save(['r', 'a', 'child'], new Uint8Array([2]))
      await ctx.save(['r', 'ab'], new Uint8Array([3]))
      await ctx.remove(['r', 'a'])
      await ctx.expectValue(['r', 'a'], undefined, 'after remove')
      await ctx.expectValue(['r', 'a', 'child'], new Uint8Array([2]), 'remove of a shorter key must not remove its extensions')
      await ctx.expectValue(['r', 'ab'], new Uint8Array([3]), 'remove must not touch a key that merely shares a string prefix')
      await ctx.remove(['r', 'a']) // again
      await ctx.remove(['r', 'never-saved'])
      await ctx.remove(['never', 'saved', 'either'])
      const range = await ctx.loadRange(['r'])
      checkEntries('loadRange(["r"]) after remove', range, entryMap([
        { key: ['r', 'a', 'child'], data: new Uint8Array([2]) },
        { key: ['r', 'ab'], data: new Uint8Array([3]) },
      ]))
      await ctx.save(['r', 'a'], new Uint8Array([4]))
      await ctx.expectValue(['r', 'a'], new Uint8Array([4]), 'a removed key can be saved again')
    }),

    storageCase(
      'loadRange returns exactly the keys under a prefix in compareKeys order: "", NUL, "/", unicode (U+E000–U+FFFF vs astral), lone surrogates, different lengths',
      async (ctx) => {
        const inside = trickyKeys('t')
        // Decoys: share a string prefix with 't' or sort next to it, but are not under ['t'].
        const decoys = [['s'], ['s', 't'], ['t\u0000'], ['t\u0000', 'a'], ['t/', 'a'], ['ta'], ['tt', ''], ['u'], ['', 't'], ['T'], ['\ud83d\ude00', 't']]
        const all = [...inside, ...decoys]
        for (const key of all) await ctx.save(key, valueFor(key))
        const want = (prefix: readonly string[]): Map<string, { key: readonly string[]; data: Uint8Array }> =>
          entryMap(all.filter((k) => prefix.every((p, i) => k[i] === p)).map((key) => ({ key, data: valueFor(key) })))
        for (const prefix of [['t'], ['t', ''], ['t', 'a'], ['t', '\u0000'], ['t', '\ud83d\ude00'], ['t', '\uffff'], ['t', 'a', ''], ['t', 'a', 'b', 'c']]) {
          checkEntries(`loadRange(${showKey(prefix)})`, await ctx.loadRange(prefix), want(prefix))
        }
        // The exact order, spelled out, so a wrong order is shown as keys rather than as a count.
        const got = (await ctx.loadRange(['t'])).map((e) => e.key)
        const expectedOrder = sortedKeys(inside)
        for (let i = 0; i < expectedOrder.length; i++) {
          assert(
            got[i] !== undefined && sameKey(got[i]!, expectedOrder[i]!),
            `loadRange(["t"]) entry #${i} is ${got[i] ? showKey(got[i]!) : 'missing'}, expected ${showKey(expectedOrder[i]!)}`,
          )
        }
        for (const key of all) await ctx.expectValue(key, valueFor(key), 'every tricky key is stored under itself')
      },
    ),

    storageCase('key order is UTF-16 code-unit order, not UTF-8 byte or code-point order', async (ctx) => {
      // JavaScript: '\ud83d\ude00' < '\ue000' < '\uffff'. UTF-8 / code points: U+E000 < U+FFFF < U+1F600.
      const keys = [['k', '\uffff'], ['k', '\ue000'], ['k', '\ud83d\ude00'], ['k', '\ud800'], ['k', '\udfff'], ['k', '\ufffd'], ['k', '\u07ff'], ['k', '\u0800']]
      for (const key of keys) await ctx.save(key, valueFor(key))
      const got = (await ctx.loadRange(['k'])).map((e) => e.key[1]!)
      const want = keys.map((k) => k[1]!).sort()
      assert(
        got.length === want.length && got.every((g, i) => g === want[i]),
        `loadRange(["k"]) order ${JSON.stringify(got)} is not JavaScript string order ${JSON.stringify(want)}`,
      )
    }),

    storageCase("loadRange matches whole key elements only: ['log'] matches neither ['logs', …] nor ['lo']", async (ctx) => {
      const keys = [['lo'], ['lo', 'g'], ['lo\u0000g'], ['log'], ['log', ''], ['log', '1'], ['log', '2', 'x'], ['log\u0000', '1'], ['log/', '1'], ['logs'], ['logs', '1'], ['loh'], ['l']]
      for (const key of keys) await ctx.save(key, valueFor(key))
      const under = (prefix: string[]) => entryMap(keys.filter((k) => prefix.every((p, i) => k[i] === p)).map((key) => ({ key, data: valueFor(key) })))
      checkEntries('loadRange(["log"])', await ctx.loadRange(['log']), under(['log']))
      checkEntries('loadRange(["lo"])', await ctx.loadRange(['lo']), under(['lo']))
      checkEntries('loadRange(["l"])', await ctx.loadRange(['l']), under(['l']))
      checkEntries('loadRange(["logs"])', await ctx.loadRange(['logs']), under(['logs']))
      checkEntries('loadRange(["log", "2"])', await ctx.loadRange(['log', '2']), under(['log', '2']))
      checkEntries('loadRange(["nothing"])', await ctx.loadRange(['nothing']), new Map())
      checkEntries('loadRange(["log", "1", "deeper"])', await ctx.loadRange(['log', '1', 'deeper']), new Map())
    }),

    storageCase('loadRange([]) returns every entry, in compareKeys order (a fresh storage is empty)', async (ctx) => {
      checkEntries('loadRange([]) on a fresh storage', await ctx.loadRange([]), new Map())
      const keys = [...trickyKeys('a'), ...trickyKeys(''), ...trickyKeys('\uffff'), ...trickyKeys('\ud83d\ude00'), ['b'], ['\u0000']]
      for (const key of keys) await ctx.save(key, valueFor(key))
      checkEntries('loadRange([])', await ctx.loadRange([]), entryMap(keys.map((key) => ({ key, data: valueFor(key) }))))
    }),

    storageCase('returned data are copies: mutating a loaded value changes nothing stored', async (ctx) => {
      const key = ['c', 'x']
      const data = pattern(64, 5)
      await ctx.save(key, data)
      const a = await ctx.load(key)
      assert(a instanceof Uint8Array, `load(${showKey(key)}) must resolve a Uint8Array`)
      a.fill(0xaa)
      await ctx.expectValue(key, data, 'after mutating the result of an earlier load')
      const range = await ctx.loadRange(['c'])
      assert(range.length === 1, `loadRange(["c"]) returned ${range.length} entries, expected 1`)
      range[0]!.data.fill(0xbb)
      range[0]!.key[1] = 'mutated'
      await ctx.expectValue(key, data, 'after mutating the data of an earlier loadRange')
      checkEntries('loadRange(["c"]) after mutating an earlier result', await ctx.loadRange(['c']), entryMap([{ key, data }]))
      const b = await ctx.load(key)
      const c = await ctx.load(key)
      assert(b && c && (b.byteLength === 0 || b.buffer !== c.buffer || b.byteOffset !== c.byteOffset), 'two loads must not return views of the same memory')
    }),

    storageCase("saved data are copied: mutating the caller's buffer once save() returns changes nothing stored", async (ctx) => {
      const key = ['c', 'y']
      const buf = pattern(64, 6)
      const original = buf.slice()
      const p = ctx.save(key, buf)
      buf.fill(0xcc) // the caller reuses its buffer before the save resolved
      await p
      await ctx.expectValue(key, original, 'after the caller overwrote its buffer while save() was pending')
      buf.fill(0xdd)
      await ctx.expectValue(key, original, 'after the caller overwrote its buffer after save() resolved')
      const big = new Uint8Array(300)
      big.set(original, 100)
      const view = big.subarray(100, 164)
      const q = ctx.save(['c', 'z'], view)
      big.fill(0xee)
      await q
      await ctx.expectValue(['c', 'z'], original, 'a saved view whose buffer was then overwritten')
    }),

    storageCase('200 concurrent saves (and then concurrent loads) all land under the right keys', async (ctx) => {
      const keys = Array.from({ length: 200 }, (_, i) => ['n', String(i).padStart(3, '0'), i % 3 === 0 ? '' : 'x'])
      const results = await Promise.allSettled(keys.map((key, i) => ctx.save(key, pattern(16 + (i % 50) * 37, i))))
      const rejected = results.flatMap((r, i) => (r.status === 'rejected' ? [`${showKey(keys[i]!)}: ${describeError(r.reason)}`] : []))
      assert(rejected.length === 0, `${rejected.length} of 200 concurrent saves rejected, e.g. ${rejected[0]}`)
      const loaded = await Promise.all(keys.map((key) => ctx.load(key)))
      loaded.forEach((got, i) => {
        const want = pattern(16 + (i % 50) * 37, i)
        assert(got instanceof Uint8Array && equalBytes(got, want), `concurrent save #${i} (${showKey(keys[i]!)}) holds ${preview(got)}, expected ${preview(want)}`)
      })
      checkEntries('loadRange(["n"])', await ctx.loadRange(['n']), entryMap(keys.map((key, i) => ({ key, data: pattern(16 + (i % 50) * 37, i) }))))
    }),

    storageCase('calls issued without awaiting take effect in call order (the last save wins; a load sees earlier writes)', async (ctx) => {
      const key = ['q', 'k']
      const ops: Promise<unknown>[] = []
      for (let i = 0; i < 50; i++) ops.push(ctx.save(key, new Uint8Array([i])))
      const seen = ctx.load(key)
      ops.push(ctx.remove(key))
      const afterRemove = ctx.load(key)
      ops.push(ctx.save(key, new Uint8Array([99])))
      ops.push(ctx.save(['q', 'other'], new Uint8Array([1])))
      ops.push(ctx.remove(['q', 'other']))
      const range = ctx.loadRange(['q'])
      await Promise.all(ops)
      const s = await seen
      assert(s instanceof Uint8Array && equalBytes(s, new Uint8Array([49])), `a load issued after 50 unawaited saves gave ${preview(s)}, expected the last one [49]`)
      const r = await afterRemove
      assert(r === undefined, `a load issued after an unawaited remove gave ${preview(r)}, expected undefined`)
      checkEntries('loadRange(["q"]) issued after unawaited writes', await range, entryMap([{ key, data: new Uint8Array([99]) }]))
      await ctx.expectValue(key, new Uint8Array([99]), 'after 50 saves, a remove and a save issued without awaiting')
      await ctx.expectValue(['q', 'other'], undefined, 'after a save and a remove issued without awaiting')
    }),

    storageCase('after close(), every method rejects with StorageClosedError; close() twice is fine', async (ctx) => {
      const s = ctx.s
      if (typeof s.close !== 'function') return // optional in the interface: nothing to check
      await ctx.save(['x'], new Uint8Array([1]))
      await s.close()
      await s.close() // twice
      const attempts: [string, () => Promise<unknown>][] = [
        ['load', () => s.load(['x'])],
        ['save', () => s.save(['x'], new Uint8Array([2]))],
        ['remove', () => s.remove(['x'])],
        ['loadRange', () => s.loadRange([])],
        ['loadRange(["x"])', () => s.loadRange(['x'])],
      ]
      for (const [name, attempt] of attempts) {
        let p: Promise<unknown>
        try {
          p = attempt()
        } catch (err) {
          fail(`${name} after close() threw synchronously (${describeError(err)}); it must return a rejected promise`)
        }
        const outcome = await p.then(
          (v) => ({ ok: true as const, v }),
          (err: unknown) => ({ ok: false as const, err }),
        )
        assert(!outcome.ok, `${name} after close() resolved; it must reject with StorageClosedError`)
        assert(isClosedError(outcome.err), `${name} after close() must reject with StorageClosedError, got ${describeError(outcome.err)}`)
      }
    }),

    storageCase(
      'data survive reopen: values, overwrites, removals and tricky keys',
      async (ctx) => {
        const keys = trickyKeys('d')
        for (const key of keys) await ctx.save(key, valueFor(key))
        await ctx.save(['d', 'a'], valueFor(['d', 'a'], 1)) // overwritten
        await ctx.remove(['d', ''])
        await ctx.save(['big'], pattern(1024 * 1024, 7))
        const expected = entryMap([
          ...keys.filter((k) => !sameKey(k, ['d', ''])).map((key) => ({ key, data: sameKey(key, ['d', 'a']) ? valueFor(key, 1) : valueFor(key) })),
          { key: ['big'], data: pattern(1024 * 1024, 7) },
        ])
        await ctx.reopen!()
        checkEntries('loadRange([]) after reopen', await ctx.loadRange([]), expected)
        await ctx.expectValue(['d', 'a'], valueFor(['d', 'a'], 1), 'an overwrite after reopen')
        await ctx.expectValue(['d', ''], undefined, 'a removed key after reopen')
        // The reopened store is fully usable, and survives a second reopen.
        await ctx.save(['d', 'after'], new Uint8Array([5]))
        await ctx.remove(['big'])
        await ctx.reopen!()
        await ctx.expectValue(['d', 'after'], new Uint8Array([5]), 'a write made after the first reopen, after the second')
        await ctx.expectValue(['big'], undefined, 'a remove made after the first reopen, after the second')
      },
      { reopen: true },
    ),

    storageCase(
      'a write that resolved while close() was in progress is there after reopen',
      async (ctx) => {
        const s = ctx.s
        if (typeof s.close !== 'function') return
        const keys = Array.from({ length: 20 }, (_, i) => ['w', String(i)])
        const writes = keys.map((key) => s.save(key, valueFor(key)))
        const closing = s.close()
        const results = await Promise.allSettled(writes)
        await closing
        for (const r of results) {
          if (r.status === 'rejected') assert(isClosedError(r.reason), `a save racing close() may only reject with StorageClosedError, got ${describeError(r.reason)}`)
        }
        await ctx.reopen!()
        for (let i = 0; i < keys.length; i++) {
          if (results[i]!.status === 'fulfilled') await ctx.expectValue(keys[i]!, valueFor(keys[i]!), 'a save that resolved while close() ran')
        }
      },
      { reopen: true },
    ),

    storageCase('batch() (where offered) applies puts and removes together, in order, copying its input', async (ctx) => {
      const s = ctx.s
      if (typeof s.batch !== 'function') return // optional method
      await ctx.save(['b', 'old'], new Uint8Array([1]))
      const data = new Uint8Array([7, 8, 9])
      const pending = s.batch([
        { type: 'put', key: ['b', 'x'], data },
        { type: 'del', key: ['b', 'old'] },
        { type: 'put', key: ['b', 'y'], data: new Uint8Array([]) },
        { type: 'put', key: ['b', 'x'], data: new Uint8Array([4]) }, // a later op on the same key wins
        { type: 'del', key: ['b', 'never-there'] },
      ])
      data[0] = 99 // copied at call time: this must not be what is stored
      await pending
      await ctx.expectValue(['b', 'x'], new Uint8Array([4]), 'the last put of a key in a batch')
      await ctx.expectValue(['b', 'y'], new Uint8Array([]), 'an empty value put in a batch')
      await ctx.expectValue(['b', 'old'], undefined, 'a key removed in a batch')
      const range = await ctx.loadRange(['b'])
      assert(range.length === 2, `loadRange(['b']) after the batch must hold 2 entries, got ${range.length}`)
      await s.batch([])
      if (ctx.reopen) {
        await ctx.reopen()
        await ctx.expectValue(['b', 'x'], new Uint8Array([4]), 'a batch, after reopen')
      }
    }),
  ]
}
