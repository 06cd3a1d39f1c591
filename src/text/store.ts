/**
 * The text half of a replica's state, on Yjs: one Y.Doc per text field of a record, holding one Y.Text (`text`) or,
 * for rich text, one Y.XmlFragment (`xml`). Stamps, sync and erasure work on the document's Yjs structs, whatever type
 * holds them; only reading the content and reporting changes depend on the type.
 *
 * Stamps. Every local Yjs transaction gets a timestamp of the replica's HLC; the Yjs structs it created are recorded
 * as a run (client, clock range, stamp), its deletions as the origin's newest deleting stamp in that field. Runs and
 * deletion stamps travel with the structs (see codec.ts), so every replica knows when each character was written.
 *
 * Sync. `vv` is the text version vector over those stamps. For a peer with vector V, a field's missing structs are
 * the runs whose stamp V does not cover; the Yjs update sent is computed against the Yjs state vector derived from V
 * (per client, its covered prefix of runs), so an offline peer gets exactly what it lacks.
 *
 * The record floor. A record's put at T or delete at D (its floor, kept by the record store) erases the text written
 * before T / at or before D: every replica deletes, in Yjs, the structs of the runs stamped below the floor — the same
 * set everywhere, whatever order things arrive in (Yjs deletions are a union), including runs that arrive after the
 * floor. A text field is alive when it was written (inserted into or deleted from) after the floor; a record with an
 * alive text field is visible, as a record with a field written after its delete is.
 */
import * as Y from 'yjs'
import { Writer } from '../../crdt/bytes.js'
import { DecodeError } from '../../crdt/errors.js'
import { murmur3x128 } from '../../crdt/hash.js'
import { type Timestamp, compareTimestamps } from '../../crdt/timestamp.js'
import { type VersionVector, advance, applyClaims, claimsFor, isNewer } from '../../crdt/version-vector.js'
import { MessageTooLargeError, StorageCorruptError } from '../errors.js'
import { MAX_TEXT_SESSIONS } from '../sync/protocol.js'
import { type TextDelta as WireDelta, type TextDocDelta, type TextRun, decodeTextDelta, encodeTextDelta, newestTextTimestamp } from './codec.js'
import type { DecodedText, RecordTextChange, TextApplyResult, TextContext, TextDelta, TextState } from './types.js'

/** Transaction origins of our own applies: anything else on a field's Y.Doc is a local edit. */
const REMOTE = Symbol('syncmesh/text remote')
const ERASE = Symbol('syncmesh/text erase')

interface Field {
  readonly collection: string
  readonly id: string
  readonly name: string
  readonly doc: Y.Doc
  /** The shared type the application edits: a Y.Text, or a Y.XmlFragment for rich text. */
  readonly shared: Y.Text | Y.XmlFragment
  readonly record: RecordText
  /** Per Yjs client, its runs in clock order. */
  readonly runs: Map<number, TextRun[]>
  /** Per origin, its newest deleting transaction. */
  readonly dels: Map<string, Timestamp>
  /** Newest stamp of any write (run or deletion). */
  lastEdit: Timestamp | undefined
  /** Local updates not yet taken ({@link YjsTextState.takeLocal}). */
  pending: Uint8Array[]
  /**
   * The change of the transaction in progress, set by the observer when the content changed: the Y.Text delta, or
   * for rich text the fragment's own delta of child nodes (empty when only nested nodes changed).
   */
  delta: TextDelta | undefined
}

interface RecordText {
  /** The floor applied to this record's text (the record store's, once floorChanged ran). */
  floor: { ts: Timestamp; deleted: boolean } | undefined
  readonly fields: Map<string, Field>
}

interface DecodedImpl extends DecodedText {
  readonly delta: WireDelta
}

/** Whether a write stamped `ts` survives `floor` (the record store's rule: a delete wins an exact tie). */
function survives(ts: Timestamp, floor: { ts: Timestamp; deleted: boolean } | undefined): boolean {
  if (!floor) return true
  const c = compareTimestamps(ts, floor.ts)
  return c > 0 || (c === 0 && !floor.deleted)
}

/** 32-bit FNV-1a of a string's UTF-16 units: a deterministic Yjs client id for a (writer, field, session). */
function clientId(s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  return h >>> 0
}

/** A Yjs update (v1) holding no structs and the given delete set. */
function deleteSetUpdate(ranges: Map<number, [number, number][]>): Uint8Array {
  const w = new Writer(16 + 12 * ranges.size)
  w.uint(0)
  w.uint(ranges.size)
  for (const [client, list] of ranges) {
    list.sort((a, b) => a[0] - b[0])
    w.uint(client)
    w.uint(list.length)
    for (const [clock, len] of list) {
      w.uint(clock)
      w.uint(len)
    }
  }
  return w.finish()
}

/** A Yjs state vector (v1 encoding). */
function encodeStateVector(sv: Map<number, number>): Uint8Array {
  const w = new Writer(8 + 10 * sv.size)
  w.uint(sv.size)
  for (const [client, clock] of sv) {
    w.uint(client)
    w.uint(clock)
  }
  return w.finish()
}

/** Which Yjs type a text field is: plain text (`Y.Text`) or rich text (`Y.XmlFragment`, as y-prosemirror edits). */
export type TextKind = 'text' | 'xml'

/** {@link TextState} on Yjs; see the module comment. */
export class YjsTextState<T extends Y.Text | Y.XmlFragment = Y.Text> implements TextState<T> {
  private readonly records = new Map<string, Map<string, RecordText>>()
  private readonly vv: VersionVector = new Map()
  private readonly dirtyFields = new Set<Field>()
  /** The newest own stamp taken by takeLocal (the `from` of the next live delta). */
  private lastTaken: Timestamp | undefined
  /** Multi-part sessions being received: key → parts seen. */
  private readonly sessions = new Map<string, Set<number>>()
  private nextSession = 0
  /** Fields already reported as too large to send (reported once each). */
  private readonly tooLarge = new Set<Field>()
  /**
   * The stamp of this session: part of every local Yjs client id, so a restarted replica never reuses one. Taken at
   * the first local transaction, once the clock is restored from storage (and has heard peers' vectors), so it is
   * newer than any earlier session's, even one of a writer id reused after lost storage.
   */
  private sessionStamp: string | undefined
  private closed = false
  /** Whether a local edit was made yet (the first one fixes where live deltas start: see takeLocal). */
  private editing = false

  constructor(
    private readonly ctx: TextContext,
    private readonly kind: TextKind = 'text',
  ) {}

  private session(): string {
    if (this.sessionStamp === undefined) {
      const t = this.ctx.now()
      this.sessionStamp = `${t.wall}.${t.counter}`
    }
    return this.sessionStamp
  }

  get dirty(): boolean {
    return this.dirtyFields.size > 0
  }

  versionVector(): VersionVector {
    return new Map(this.vv)
  }

  text(collection: string, id: string, field: string): T {
    return this.field(collection, id, field).shared as T
  }

  content(collection: string, id: string, field: string): string {
    return this.records.get(collection)?.get(id)?.fields.get(field)?.shared.toString() ?? ''
  }

  alive(collection: string, id: string): boolean {
    const rec = this.records.get(collection)?.get(id)
    return rec !== undefined && recordAlive(rec)
  }

  fields(collection: string, id: string): string[] {
    const rec = this.records.get(collection)?.get(id)
    if (!rec) return []
    return [...rec.fields.values()].filter((f) => f.lastEdit !== undefined && survives(f.lastEdit, rec.floor)).map((f) => f.name)
  }

  ids(collection: string): string[] {
    const out: string[] = []
    for (const [id, rec] of this.records.get(collection) ?? []) if (recordAlive(rec)) out.push(id)
    return out
  }

  collections(): string[] {
    return [...this.records.keys()]
  }

  /**
   * The erasure of a floor is a Yjs deletion, and Yjs sends a document's whole delete set with any update of it. So
   * the erasure by a floor of our own is recorded as our own deletion, stamped with the floor: it is stored and sent
   * as a text write, and a replica that gets it (inside any update) gets it as a write that text sync tracks. Were it
   * not, a replica that lost its storage before its floor left would leave its erasure on the peers that received
   * some update of the field, and nowhere else: text sync would never carry it further.
   */
  floorChanged(collection: string, id: string, local = false): RecordTextChange | undefined {
    const rec = this.records.get(collection)?.get(id)
    if (!rec) return undefined
    const floor = this.ctx.floor(collection, id)
    if (!floor || (rec.floor && compareTimestamps(floor.ts, rec.floor.ts) === 0 && floor.deleted === rec.floor.deleted)) return undefined
    const aliveBefore = recordAlive(rec)
    rec.floor = floor
    const text: Record<string, TextDelta> = {}
    for (const f of rec.fields.values()) {
      const erase = this.eraseUpdate(f, f.runs.values())
      if (!erase) continue
      f.doc.transact(() => Y.applyUpdate(f.doc, erase, ERASE), ERASE)
      if (local) this.stampErasure(f, floor.ts, erase)
      if (f.delta) text[f.name] = f.delta
      f.delta = undefined
    }
    if (Object.keys(text).length === 0 && aliveBefore === recordAlive(rec)) return undefined
    return { collection, id, aliveBefore, text }
  }

  load(stored: readonly Uint8Array[]): void {
    stored.forEach((bytes, i) => {
      try {
        this.apply(this.decode(bytes))
      } catch (err) {
        if (err instanceof DecodeError) throw new StorageCorruptError(`stored text entry ${i} is corrupt: ${err.message}`, ['text'], { cause: err })
        throw err
      }
    })
    for (const collection of this.collections()) for (const id of this.ids(collection)) this.floorChanged(collection, id)
  }

  afterRecords(
    changed: readonly { readonly collection: string; readonly id: string; readonly existed: boolean }[],
    floors: readonly { readonly collection: string; readonly id: string }[],
    lwwVisible: (collection: string, id: string) => boolean,
  ): { collection: string; id: string; existed: boolean; text?: RecordTextChange['text'] }[] {
    const byKey = new Map<string, { collection: string; id: string; existed: boolean; text?: RecordTextChange['text'] }>()
    const key = (c: string, id: string): string => `${c.length}:${c}${id}`
    for (const c of changed) byKey.set(key(c.collection, c.id), { collection: c.collection, id: c.id, existed: c.existed || this.alive(c.collection, c.id) })
    for (const rd of floors) {
      const k = key(rd.collection, rd.id)
      const known = byKey.get(k)
      const lwwBefore = known ? known.existed : lwwVisible(rd.collection, rd.id)
      const aliveBefore = this.alive(rd.collection, rd.id)
      const tc = this.floorChanged(rd.collection, rd.id)
      if (!tc && !known) continue
      byKey.set(k, { collection: rd.collection, id: rd.id, existed: lwwBefore || (tc?.aliveBefore ?? aliveBefore), text: tc?.text })
    }
    return [...byKey.values()]
  }

  changesSince(vv: ReadonlyMap<string, Timestamp>, ceiling: Timestamp | undefined, maxBytes: number): Uint8Array[] {
    const docs: TextDocDelta[] = []
    let held = 0
    const heldBack = (ts: Timestamp): boolean => ceiling !== undefined && ts.peer === ceiling.peer && compareTimestamps(ts, ceiling) > 0
    for (const f of this.allFields()) {
      const runs: TextRun[] = []
      const sv = new Map<number, number>()
      let hold = false
      for (const [client, list] of f.runs) {
        let start: number | undefined
        for (const r of list) {
          if (!isNewer(vv, r.ts)) continue
          if (heldBack(r.ts)) hold = true
          start ??= r.clock
          runs.push(r)
        }
        sv.set(client, start ?? end(list))
      }
      const dels = [...f.dels.values()].filter((t) => isNewer(vv, t))
      // A sync answer carries the field's whole Yjs delete set, erasures included: an erasure by a floor of ours that
      // is not durable yet must not leave (a crash could lose the floor, and peers would keep the erasure).
      if (dels.some(heldBack) || (f.record.floor && heldBack(f.record.floor.ts))) hold = true
      if (runs.length === 0 && dels.length === 0) continue
      if (hold) {
        held++
        continue
      }
      docs.push(this.docDelta(f, runs, dels, sv))
    }
    const { from, to } = held === 0 ? claimsFor(this.vv, vv, ceiling) : { from: new Map(), to: new Map() }
    if (docs.length === 0 && to.size === 0) return []
    return this.parts(docs, from, to, maxBytes)
  }

  takeLocal(maxBytes: number): { parts: Uint8Array[]; newest: Timestamp | undefined } {
    const own = this.ctx.writerId
    const since = this.lastTaken
    const newest = this.vv.get(own)
    const docs: TextDocDelta[] = []
    for (const f of this.dirtyFields) {
      const runs: TextRun[] = []
      for (const list of f.runs.values()) for (const r of list) if (r.ts.peer === own && (!since || compareTimestamps(r.ts, since) > 0)) runs.push(r)
      const del = f.dels.get(own)
      const dels = del && (!since || compareTimestamps(del, since) > 0) ? [del] : []
      const update = f.pending.length === 1 ? f.pending[0]! : Y.mergeUpdates(f.pending)
      f.pending = []
      docs.push({ collection: f.collection, id: f.id, field: f.name, runs, dels, update })
    }
    this.dirtyFields.clear()
    this.lastTaken = newest
    if (docs.length === 0 || !newest) return { parts: [], newest }
    const from: VersionVector = since ? new Map([[own, since]]) : new Map()
    return { parts: this.parts(docs, from, new Map([[own, newest]]), maxBytes), newest }
  }

  decode(payload: Uint8Array | WireDelta): DecodedText {
    const delta = payload instanceof Uint8Array ? decodeTextDelta(payload) : payload
    return { newest: newestTextTimestamp(delta), to: delta.to, delta } as DecodedImpl
  }

  apply(decoded: DecodedText): TextApplyResult {
    const delta = (decoded as DecodedImpl).delta
    // Check everything first: a delta that does not hold together changes nothing.
    for (const d of delta.docs) this.check(d)
    const byRecord = new Map<RecordText, { collection: string; id: string; aliveBefore: boolean; text: Record<string, TextDelta> }>()
    for (const d of delta.docs) {
      const f = this.field(d.collection, d.id, d.field)
      let entry = byRecord.get(f.record)
      if (!entry) byRecord.set(f.record, (entry = { collection: d.collection, id: d.id, aliveBefore: recordAlive(f.record), text: {} }))
      const wasAlive = f.lastEdit !== undefined && survives(f.lastEdit, f.record.floor)
      const fresh: TextRun[] = []
      for (const r of d.runs) if (this.addRun(f, r)) fresh.push(r)
      for (const t of d.dels) {
        const held = f.dels.get(t.peer)
        if (!held || compareTimestamps(t, held) > 0) f.dels.set(t.peer, t)
        this.edited(f, t)
      }
      const erase = this.eraseUpdate(f, [fresh])
      try {
        f.doc.transact(() => {
          Y.applyUpdate(f.doc, d.update, REMOTE)
          if (erase) Y.applyUpdate(f.doc, erase, ERASE)
        }, REMOTE)
      } catch (err) {
        throw new DecodeError(`text field ${d.collection}/${d.id}.${d.field}: the Yjs update does not apply: ${(err as Error).message}`)
      }
      const isAlive = f.lastEdit !== undefined && survives(f.lastEdit, f.record.floor)
      if (f.delta || wasAlive !== isAlive) entry.text[d.field] = f.delta ?? []
      f.delta = undefined
    }
    const changed: RecordTextChange[] = []
    for (const [rec, e] of byRecord) if (Object.keys(e.text).length > 0 || e.aliveBefore !== recordAlive(rec)) changed.push(e)
    return { changed, advanced: this.claim(delta) }
  }

  count(vv: ReadonlyMap<string, Timestamp>): number {
    let n = 0
    for (const f of this.allFields()) {
      for (const list of f.runs.values()) for (const r of list) if (isNewer(vv, r.ts)) n++
      for (const t of f.dels.values()) if (isNewer(vv, t)) n++
    }
    return n
  }

  encodeState(): Uint8Array {
    const docs: TextDocDelta[] = []
    for (const f of this.allFields()) {
      if (f.lastEdit === undefined) continue // created by text() and never written
      docs.push({ collection: f.collection, id: f.id, field: f.name, runs: [...f.runs.values()].flat(), dels: [...f.dels.values()], update: Y.encodeStateAsUpdate(f.doc) })
    }
    return encodeTextDelta({ session: 0, index: 0, count: 1, from: new Map(), to: this.vv, docs })
  }

  digest(): string {
    const lanes = [0, 0, 0, 0]
    const w = new Writer(256)
    for (const f of this.allFields()) {
      if (f.lastEdit === undefined || !survives(f.lastEdit, f.record.floor)) continue
      w.pos = 0
      w.string(f.collection)
      w.string(f.id)
      w.string(f.name)
      w.string(f.shared.toString())
      const h = murmur3x128(w.view())
      for (let i = 0; i < 4; i++) lanes[i] = (lanes[i]! + h[i]!) >>> 0
    }
    return lanes.map((x) => x.toString(16).padStart(8, '0')).join('')
  }

  close(): void {
    this.closed = true
    for (const f of this.allFields()) f.doc.destroy()
  }

  // -------------------------------------------------------------------------------------------------------------------

  private *allFields(): Iterable<Field> {
    for (const recs of this.records.values()) for (const rec of recs.values()) yield* rec.fields.values()
  }

  /** The field's state, created empty (with the record's current floor) on first use. */
  private field(collection: string, id: string, name: string): Field {
    let recs = this.records.get(collection)
    if (!recs) this.records.set(collection, (recs = new Map()))
    let rec = recs.get(id)
    if (!rec) recs.set(id, (rec = { floor: this.ctx.floor(collection, id), fields: new Map() }))
    let f = rec.fields.get(name)
    if (f) return f
    const doc = new Y.Doc()
    let named = false
    doc.on('beforeTransaction', (tr: Y.Transaction) => {
      if (named || tr.origin === REMOTE || tr.origin === ERASE) return
      named = true // our Yjs client id in this field, for this session (deterministic: see clientId)
      doc.clientID = clientId(`${this.ctx.writerId}\u0000${collection.length}:${collection}${id.length}:${id}${name}\u0000${this.session()}`)
    })
    const shared = this.kind === 'xml' ? doc.getXmlFragment('xml') : doc.getText('text')
    const field: Field = { collection, id, name, doc, shared, record: rec, runs: new Map(), dels: new Map(), lastEdit: undefined, pending: [], delta: undefined }
    if (shared instanceof Y.Text) {
      shared.observe((event) => {
        field.delta = event.delta as TextDelta
      })
    } else {
      shared.observeDeep((events) => {
        const own = events.find((e) => e.target === shared)
        field.delta = own ? (own.changes.delta as TextDelta) : []
      })
    }
    doc.on('update', (update: Uint8Array, origin: unknown, _doc: Y.Doc, tr: Y.Transaction) => {
      if (origin !== REMOTE && origin !== ERASE) this.local(field, update, tr)
    })
    rec.fields.set(name, (f = field))
    return f
  }

  /** Stamps a local transaction: its structs as a run, its deletions; queues its update and reports it. */
  private local(f: Field, update: Uint8Array, tr: Y.Transaction): void {
    if (this.closed) return
    const aliveBefore = recordAlive(f.record)
    this.startEditing()
    // Stamped after the record's floor: a clock restored from our own writes only may be behind a floor we hold.
    const ts = this.ctx.now(f.record.floor?.ts)
    const client = f.doc.clientID
    const before = tr.beforeState.get(client) ?? 0
    const after = tr.afterState.get(client) ?? 0
    const run = after > before ? { client, clock: before, len: after - before, ts } : undefined
    if (run) this.addRun(f, run)
    if (tr.deleteSet.clients.size > 0) f.dels.set(ts.peer, ts)
    this.edited(f, ts)
    advance(this.vv, ts)
    f.pending.push(update)
    this.dirtyFields.add(f)
    let delta = f.delta ?? []
    f.delta = undefined
    const erase = run && this.eraseUpdate(f, [[run]])
    if (erase) {
      // Still below the floor (the clock would not jump that far): erased here as it will be everywhere.
      f.doc.transact(() => Y.applyUpdate(f.doc, erase, ERASE), ERASE)
      f.delta = undefined
      delta = []
    }
    this.ctx.localEdit({ collection: f.collection, id: f.id, aliveBefore, text: { [f.name]: delta } })
  }

  /** Records the erasure `update` by our own floor at `ts` as our deletion in `f`, to store and send (see floorChanged). */
  private stampErasure(f: Field, ts: Timestamp, update: Uint8Array): void {
    this.startEditing()
    f.dels.set(ts.peer, ts)
    this.edited(f, ts)
    advance(this.vv, ts)
    f.pending.push(update)
    this.dirtyFields.add(f)
  }

  /** At the first local write of the session: live deltas claim our writes from the newest one held before it. */
  private startEditing(): void {
    if (this.editing) return
    this.editing = true
    this.lastTaken = this.vv.get(this.ctx.writerId)
  }

  private edited(f: Field, ts: Timestamp): void {
    if (!f.lastEdit || compareTimestamps(ts, f.lastEdit) > 0) f.lastEdit = ts
  }

  /** Records a run (false when it is held already). */
  private addRun(f: Field, r: TextRun): boolean {
    let list = f.runs.get(r.client)
    if (!list) f.runs.set(r.client, (list = []))
    // Runs arrive mostly in clock order: search from the end.
    let i = list.length
    while (i > 0 && list[i - 1]!.clock > r.clock) i--
    const prev = list[i - 1]
    if (prev && prev.clock === r.clock && prev.len === r.len && compareTimestamps(prev.ts, r.ts) === 0) return false
    list.splice(i, 0, r)
    this.edited(f, r.ts)
    return true
  }

  /** Refuses a doc delta whose runs contradict held ones, or whose Yjs update holds structs outside its runs. */
  private check(d: TextDocDelta): void {
    const where = `text field ${d.collection}/${d.id}.${d.field}`
    const held = this.records.get(d.collection)?.get(d.id)?.fields.get(d.field)
    const byClient = new Map<number, TextRun[]>()
    for (const r of d.runs) {
      let list = byClient.get(r.client)
      if (!list) byClient.set(r.client, (list = []))
      list.push(r)
    }
    for (const [client, list] of byClient) {
      list.sort((a, b) => a.clock - b.clock)
      for (let i = 1; i < list.length; i++) if (list[i]!.clock < list[i - 1]!.clock + list[i - 1]!.len) throw new DecodeError(`${where}: overlapping runs of client ${client}`)
      const mine = held?.runs.get(client)
      if (!mine) continue
      for (const r of list) {
        // Held runs are sorted and disjoint: look from the last one starting at or before r.
        for (let i = Math.max(0, lastAtOrBefore(mine, r.clock)); i < mine.length && mine[i]!.clock < r.clock + r.len; i++) {
          const h = mine[i]!
          const overlap = r.clock < h.clock + h.len && h.clock < r.clock + r.len
          if (overlap && (h.clock !== r.clock || h.len !== r.len || compareTimestamps(h.ts, r.ts) !== 0)) {
            throw new DecodeError(`${where}: a run of client ${client} contradicts one held (two writers with one Yjs client id?)`)
          }
        }
      }
    }
    // Every struct the update holds must lie in a run it declares or one held (Skip: a gap the sender lacks too).
    let structs: { id: { client: number; clock: number }; length: number }[]
    try {
      structs = Y.decodeUpdate(d.update).structs.filter((st) => !(st instanceof Y.Skip))
    } catch (err) {
      throw new DecodeError(`${where}: malformed Yjs update: ${(err as Error).message}`)
    }
    for (const st of structs) {
      const { client, clock } = st.id
      if (!covered([byClient.get(client), held?.runs.get(client)], clock, st.length)) {
        throw new DecodeError(`${where}: the Yjs update holds structs of client ${client} (${clock}…${clock + st.length}) that no stamped run covers`)
      }
    }
  }

  /** The Yjs update deleting the structs of `lists`' runs that the record's floor erases, or undefined. */
  private eraseUpdate(f: Field, lists: Iterable<readonly TextRun[]>): Uint8Array | undefined {
    const floor = f.record.floor
    if (!floor) return undefined
    const ranges = new Map<number, [number, number][]>()
    for (const list of lists) {
      for (const r of list) {
        if (survives(r.ts, floor)) continue
        let l = ranges.get(r.client)
        if (!l) ranges.set(r.client, (l = []))
        l.push([r.clock, r.len])
      }
    }
    return ranges.size === 0 ? undefined : deleteSetUpdate(ranges)
  }

  private docDelta(f: Field, runs: TextRun[], dels: Timestamp[], sv: Map<number, number>): TextDocDelta {
    // Clients the runs do not know (none, normally) are never sent: start from the document's own state vector.
    const full = Y.decodeStateVector(Y.encodeStateVector(f.doc))
    for (const [client, clock] of sv) full.set(client, clock)
    return { collection: f.collection, id: f.id, field: f.name, runs, dels, update: Y.encodeStateAsUpdate(f.doc, encodeStateVector(full)) }
  }

  /** Raises the text vector by a delta's claims: at once for a whole delta, for a session once every part arrived. */
  private claim(d: WireDelta): boolean {
    if (d.count > 1) {
      const key = `${d.session}/${d.count}/${vvKey(d.from)}/${vvKey(d.to)}`
      let seen = this.sessions.get(key)
      if (!seen) {
        if (this.sessions.size >= MAX_TEXT_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!)
        this.sessions.set(key, (seen = new Set()))
      }
      seen.add(d.index)
      if (seen.size < d.count) return false
      this.sessions.delete(key)
    }
    return applyClaims(this.vv, d.from, d.to)
  }

  /** Encodes docs as one text delta, or as parts of one session each ≤ maxBytes (cut between documents). */
  private parts(docs: TextDocDelta[], from: VersionVector, to: VersionVector, maxBytes: number): Uint8Array[] {
    const whole = encodeTextDelta({ session: 0, index: 0, count: 1, from, to, docs })
    if (whole.length <= maxBytes) return [whole]
    const groups: TextDocDelta[][] = []
    const probe = { session: 2 ** 32, index: 2 ** 32, count: 2 ** 32, from, to }
    const cut = (list: TextDocDelta[]): void => {
      const size = encodeTextDelta({ ...probe, docs: list }).length
      if (size <= maxBytes) groups.push(list)
      else if (list.length > 1) {
        cut(list.slice(0, list.length >> 1))
        cut(list.slice(list.length >> 1))
      } else {
        const d = list[0]!
        const f = this.records.get(d.collection)?.get(d.id)?.fields.get(d.field)
        if (f && !this.tooLarge.has(f)) {
          this.tooLarge.add(f)
          this.ctx.error(new MessageTooLargeError(`text field ${d.collection}/${d.id}.${d.field}: ${size} bytes do not fit in a ${maxBytes}-byte message; it cannot be sent`, size, maxBytes))
        }
        throw new DocTooLarge()
      }
    }
    try {
      cut(docs)
    } catch (err) {
      if (!(err instanceof DocTooLarge)) throw err
      // Send what fits, claiming nothing (the receiver must keep asking for what is missing).
      const fits = docs.filter((d) => encodeTextDelta({ ...probe, from: new Map(), to: new Map(), docs: [d] }).length <= maxBytes)
      return fits.length === 0 ? [] : this.parts(fits, new Map(), new Map(), maxBytes)
    }
    if (this.nextSession === 0) this.nextSession = clientId(`${this.ctx.writerId}\u0000${this.session()}`) || 1
    const session = (this.nextSession = (this.nextSession + 1) >>> 0 || 1)
    return groups.map((g, index) => encodeTextDelta({ session, index, count: groups.length, from, to, docs: g }))
  }
}

class DocTooLarge extends Error {}

/** Whether `[clock, clock + len)` lies inside the union of the runs of `lists` (each sorted by clock, disjoint). */
function covered(lists: readonly (readonly TextRun[] | undefined)[], clock: number, len: number): boolean {
  const endOf = (list: readonly TextRun[] | undefined, at: number): number => {
    const r = list?.[lastAtOrBefore(list, at)]
    return r && r.clock + r.len > at ? r.clock + r.len : at
  }
  let at = clock
  while (at < clock + len) {
    const next = Math.max(...lists.map((l) => endOf(l, at)))
    if (next === at) return false
    at = next
  }
  return true
}

/** Index of the last run starting at or before `clock` (-1 when none). */
function lastAtOrBefore(list: readonly TextRun[], clock: number): number {
  let lo = 0
  let hi = list.length - 1
  let found = -1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    if (list[mid]!.clock <= clock) {
      found = mid
      lo = mid + 1
    } else hi = mid - 1
  }
  return found
}

function end(list: readonly TextRun[]): number {
  const last = list[list.length - 1]
  return last ? last.clock + last.len : 0
}

function recordAlive(rec: RecordText): boolean {
  for (const f of rec.fields.values()) if (f.lastEdit !== undefined && survives(f.lastEdit, rec.floor)) return true
  return false
}

function vvKey(vv: ReadonlyMap<string, Timestamp>): string {
  return [...vv.values()].map((t) => `${t.peer}@${t.wall}.${t.counter}`).sort().join(',')
}
