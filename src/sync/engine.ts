/**
 * The sync engine: runs the protocol of protocol.ts between one replica's {@link RecordStore} and its peers, over
 * any number of transports. A peer reachable over several transports is one peer; frames go over the first link
 * that reports it (transports are listed in order of preference).
 *
 * It owns both paths of a change. Outbound ({@link SyncEngine.commit}): the replica names the records it wrote; the
 * engine builds their delta once, makes it durable, then sends it to every peer, cut up front to each peer's
 * message limit, and hands it to the store uploads. Inbound: decode, apply (text erased by raised floors first),
 * make durable, forward, acknowledge, then tell the replica what changed through {@link EngineHooks}.
 */
import { type Delta, type RecordRef, decodeDelta, newestInDelta } from '../../crdt/delta.js'
import { ClockDriftError, ClockOverflowError, SyncmeshError, asError } from '../../crdt/errors.js'
import type { HLC } from '../../crdt/hlc.js'
import type { Overwrite, RecordStore } from '../../crdt/record-store.js'
import { type Timestamp, compareTimestamps } from '../../crdt/timestamp.js'
import { type VersionVector, advance, covers, isNewer, mergeVersionVectors, minVersionVector } from '../../crdt/version-vector.js'
import type { PeerId, RoomContext, Transport } from '../../transports/types.js'
import { MessageTooLargeError, SyncTimeoutError } from '../errors.js'
import type { RecordTextChange, TextState } from '../text/types.js'
import { MAX_TEXT_TABLE, TEXT_FORMAT_ON_BASE, type TextTables, decodeTextDelta, decodeTextDeltaOn, encodeTextDelta, encodeTextDeltaOn, tablesOf } from '../text/codec.js'
import {
  MAX_REACHED,
  MAX_TEXT_FINGERPRINTS,
  Reassembler,
  decodeMessage,
  encodeDeltaMessage,
  encodeDeltaParts,
  encodeFrontierMessage,
  encodeLiveMessage,
  encodeNeighboursMessage,
  encodeTextAckToMessage,
  encodeTextMessage,
  encodeVectorMessage,
  peerHash,
  textFingerprint,
  toFrames,
} from './protocol.js'

/** A record that a remote delta changed, with its text fields' changes when it has text. */
export interface AppliedChange extends RecordRef {
  /** Whether the record was visible before. */
  readonly existed: boolean
  readonly text?: RecordTextChange['text']
}

/** What the engine tells its replica: the one interface from the engine back to the replica. */
export interface EngineHooks {
  /**
   * Remote changes were applied and handed to storage: records changed, text erased by raised floors (`fromTab`:
   * they came over the tab link, from a replica on the same store, which has stored them, so they were not
   * stored again here).
   */
  applied(changes: readonly AppliedChange[], fromTab: boolean): void
  /** Whether {@link applied} needs its list of changes (when nobody listens, a delta is applied without one). */
  wantsChanges(): boolean
  /** A remote text delta was applied and handed to storage (`fromTab` as for {@link applied}). */
  textApplied(changes: readonly RecordTextChange[], fromTab: boolean): void
  /**
   * A value was lost to a write made without knowledge of it (a conflict), while applying a peer's delta. Overwrites
   * by the value's own writer, or by a sender whose last reported vector shows it had seen the loser, are not.
   */
  conflict(o: Overwrite): void
  peerJoin(peer: PeerId): void
  peerLeave(peer: PeerId): void
  /** A peer now holds exactly what we hold. */
  peerSynced(peer: PeerId): void
  /** Bad input from a peer, or a transport failure. The engine has already dropped the offending peer if needed. */
  error(err: Error, peer?: PeerId): void
  /**
   * The collection state changed: tombstones were collected (`collected` > 0: the store no longer holds them), the
   * known peers or the frontier changed, or the store was rebased (`rebased`: it missed tombstones a peer collected
   * and dropped what they may have erased, see crdt/record-store.ts). Persist it.
   */
  gc(change: { collected: number; rebased: number; visibleBefore?: ReadonlySet<string> }): void
}

/** A peer remembered for tombstone collection: when we last heard it, and the vector it last reported. */
export interface KnownPeer {
  readonly lastSeen: number
  readonly vector: VersionVector
}

/** Tombstone collection (see {@link SyncEngine.collect}). */
export interface GcInit {
  /** A known peer silent for longer than this (ms) no longer holds collection back; if it returns, it rebases. */
  readonly horizonMs: number
  /** The wall clock (ms) for `lastSeen`. */
  readonly now: () => number
  /** Peers remembered from earlier sessions. */
  readonly known: ReadonlyMap<PeerId, KnownPeer>
}

/** Where the engine makes deltas durable (the replica's storage log). */
export interface DeltaLog {
  /** Appends an encoded record delta; resolves once it is durable. */
  append(delta: Uint8Array): Promise<void>
  /** Appends an encoded text delta; resolves once it is durable. */
  appendText(delta: Uint8Array): Promise<void>
}

/** A store upload (store-and-forward, see store-sync.ts): it receives every local delta once durable. */
export interface Upload {
  /** A batch of local writes (encoded delta parts, newest own write `upto`) is durable: upload it. */
  pushLocal(parts: readonly Uint8Array[], upto: Timestamp | undefined): void
}

/** Options of the engine. */
export interface EngineInit {
  readonly store: RecordStore
  readonly hlc: HLC
  readonly transports: readonly Transport[]
  /**
   * The link to the other replicas open on the same shared store (one of `transports`, see tabs/group.ts). Its
   * peers are left out of {@link SyncEngine.status}: they are this replica, seen from another tab.
   */
  readonly tabLink?: Transport
  readonly room: RoomContext
  /** The origin id of this replica's own timestamps. */
  readonly writerId: string
  /** Where deltas become durable: local ones before they are sent, remote ones as they are applied. */
  readonly log: DeltaLog
  /** Store uploads, handed every local delta once it is durable. */
  readonly uploads?: readonly Upload[]
  readonly maxMessageBytes: number
  /** Interval of anti-entropy rounds in ms; 0 disables the timer (tests drive rounds by hand). */
  readonly antiEntropyMs: number
  readonly hooks: EngineHooks
  /** Tombstone collection; absent, the engine never collects (it still honours peers' frontiers). */
  readonly gc?: GcInit
  /** The text half of the state, when the replica keeps text (TEXT_REQUEST, TEXT and TEXT_ACK; see protocol.ts). */
  readonly text?: TextState
}

interface PeerState {
  readonly id: PeerId
  /** The peer's entry in LIVE messages' `reached` sets ({@link peerHash}). */
  readonly hash: number
  /** The peers it said it is connected to (its last NEIGHBOURS), undefined until it says. */
  neighbours: ReadonlySet<number> | undefined
  /** Transports on which the peer is up, in preference order. */
  links: Transport[]
  readonly reassembler: Reassembler
  /**
   * What the peer holds at least: the entry-wise maximum of every vector it reported (SYNC_REQUEST, ACK) since it
   * connected. It only moves forward: a store's vector never shrinks while its peer is connected, so an older
   * report that arrives late (reordered) says nothing new and must not lower it.
   */
  theirs: VersionVector | undefined
  /** Whether `theirs` includes a whole vector (SYNC_REQUEST or ACK), not only ACK_CHANGES entries. */
  complete: boolean
  /** Our vector as we last told the peer (see ACK_CHANGES), undefined before we first did. */
  told: VersionVector | undefined
  /**
   * The `to` vector of the catch-up delta we last sent the peer (see {@link SyncEngine.catchUp}) until it reports a
   * vector that covers it; no other is sent meanwhile.
   */
  catchingUp: ReadonlyMap<string, Timestamp> | undefined
  /** The collection frontier the peer announced (FRONTIER), undefined until it does. */
  frontier: VersionVector | undefined
  /** The peer's text version vector, merged from its TEXT_REQUESTs, TEXT_ACKs and TEXT_ACK_TOs; undefined: it keeps no text. */
  textTheirs: VersionVector | undefined
  /** The text delta of ours that the peer last ACKed with TEXT_ACK_TO: live text to it is written against it. */
  textBase: SentText | undefined
  /** The text deltas we sent the peer lately, by fingerprint (for its TEXT_ACK_TOs). */
  readonly textSent: TextWindow
  /** The peer's text deltas that we ACKed with TEXT_ACK_TO lately, by fingerprint: it may write against them. */
  readonly textBases: TextWindow
  /** Input from this peer was malformed: ignore it until it reconnects. */
  dropped: boolean
  synced: boolean
}

/** Status of one peer, as {@link Replica.status} reports it. */
export interface PeerStatus {
  readonly id: PeerId
  readonly connected: boolean
  /** Writes (field registers and record floors) we hold that the peer has not confirmed holding. */
  readonly behind: number
  /** The transport carrying the traffic (its index in `transports`), -1 when unknown. */
  readonly via: number
}

/** Runs the sync protocol for one replica. */
export class SyncEngine {
  private readonly peers = new Map<PeerId, PeerState>()
  private readonly offs: (() => void)[] = []
  private timer: ReturnType<typeof setInterval> | undefined
  private nextMessageId = 1
  private waiters = new Set<() => void>()
  private stopped = false
  private readonly reported = new Set<string>()
  private readonly selfHash: number
  /** Our set of peers changed since every peer last heard it (see {@link flushNeighbours}). */
  private neighboursDirty = false
  /** Peers remembered for tombstone collection (network peers only: tabs of our store are this replica). */
  private readonly known: Map<PeerId, KnownPeer>
  /** Peers that have said they keep text (a TEXT_REQUEST or TEXT_ACK), remembered across reconnects. */
  private readonly textPeers = new Set<PeerId>()
  /** Our newest write already committed (its delta built): the next commit starts after it. */
  private committed: Timestamp | undefined
  /** Our newest write that is durable; newer ones are never handed to a peer. */
  private durableUpTo: Timestamp | undefined

  constructor(private readonly init: EngineInit) {
    this.selfHash = peerHash(init.room.peerId)
    this.known = new Map(init.gc?.known)
    this.committed = init.store.versionVector().get(init.writerId)
    const text = init.text?.versionVector().get(init.writerId)
    this.durableUpTo = text && (!this.committed || compareTimestamps(text, this.committed) > 0) ? text : this.committed
    // Never reissue a timestamp of ours that storage holds.
    if (this.durableUpTo) init.hlc.restore(this.durableUpTo)
  }

  /** Our newest write that is durable (store uploads claim nothing newer). */
  durable(): Timestamp | undefined {
    return this.durableUpTo
  }

  /** Starts every transport and begins listening. */
  async start(): Promise<void> {
    const { transports, room, antiEntropyMs } = this.init
    for (const t of transports) {
      this.offs.push(
        t.on('peer:up', (peer) => this.linkUp(t, peer)),
        t.on('peer:down', (peer) => this.linkDown(t, peer)),
        t.on('frame', (peer, frame) => this.receive(peer, frame)),
      )
    }
    await Promise.all(transports.map((t) => t.start(room)))
    if (antiEntropyMs > 0) {
      this.timer = setInterval(() => {
        this.antiEntropy()
        this.collect()
      }, antiEntropyMs)
      ;(this.timer as { unref?: () => void }).unref?.()
    }
  }

  /** Stops the timer and every transport. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.timer)
    for (const off of this.offs) off()
    await Promise.allSettled(this.init.transports.map((t) => t.stop()))
    this.peers.clear()
    this.notify()
  }

  /**
   * Commits local writes: the records `written` since the last commit (their ids per collection; an id may repeat)
   * and the text edits waiting to be taken. Builds their delta once (encoded straight from the store's blocks) and
   * makes it durable, then sends it to every connected peer as LIVE messages
   * whose `reached` set names us and all of them (in a full mesh nobody forwards; in a sparser topology receivers
   * forward to the rest), and hands it to the store uploads. Durable first, then sent: a peer must never hold a
   * write of ours that a crash could take from us, or our version vector would later claim it while we lack it.
   * Resolves once durable and sent; throws at once when the delta cannot be encoded.
   */
  commit(written: ReadonlyMap<string, readonly string[]>): Promise<void> {
    const { store, writerId, log, maxMessageBytes } = this.init
    // Only a delta too large for one message is built as an object, to be cut.
    const since = this.committed
    const whole = written.size > 0 ? store.encodeChangesOf(writerId, since, written) : undefined
    const delta = whole && whole.length > maxMessageBytes - 16 ? store.changesOf(writerId, since, refsOf(written)) : undefined
    const parts = delta ? encodeDeltaParts(delta, maxMessageBytes - 16) : whole ? [whole] : []
    const upto = (this.committed = store.versionVectorView().get(writerId))
    const text = this.init.text?.dirty ? this.init.text.takeLocal(maxMessageBytes - 16) : undefined
    const newest = text?.newest && (!upto || compareTimestamps(text.newest, upto) > 0) ? text.newest : upto
    const stored = parts.map((part) => log.append(part))
    for (const part of text?.parts ?? []) stored.push(log.appendText(part))
    return Promise.all(stored).then(() => {
      if (newest && (!this.durableUpTo || compareTimestamps(newest, this.durableUpTo) > 0)) this.durableUpTo = newest
      if (parts.length > 0) {
        // A peer whose link takes smaller messages gets the delta cut again for it (see sendLive), from its object:
        // built only for a delta larger than one message, decoded from the one part otherwise.
        this.sendLive(this.liveTargets(), parts, () => delta ?? decodeDelta(parts[0]!), encodeLiveMessage)
        for (const u of this.init.uploads ?? []) u.pushLocal(parts, upto)
      }
      if (text && text.parts.length > 0) this.sendLiveText(this.liveTargets(), text.parts)
      this.notify()
    })
  }

  /** The peers a local change goes to: every connected one that is not gated (see {@link gated}). */
  private liveTargets(): PeerState[] {
    return [...this.peers.values()].filter((p) => !p.dropped && !this.gated(p))
  }

  /**
   * Sends a live change (encoded `parts` of the delta `delta()` returns) to `targets`, naming them all and `reached`
   * in the set it carries. A target whose link takes smaller messages gets the delta cut again for it (only then is
   * it decoded); a text change (no `delta`) goes whole.
   */
  private sendLive(targets: readonly PeerState[], parts: readonly Uint8Array[], delta: (() => Delta) | undefined, encode: LiveEncoder, reached: Iterable<number> = []): void {
    if (targets.length === 0) return
    const seen = this.liveReached(targets, reached)
    const largest = Math.max(...parts.map((part) => part.length)) + 16
    const byLimit = groupBy(targets, (t) => (delta && largest > this.messageLimit(t) ? this.messageLimit(t) : this.init.maxMessageBytes))
    for (const [limit, group] of byLimit) {
      const cut = limit < this.init.maxMessageBytes ? this.cut(delta!(), limit, () => parts) : parts
      for (const part of cut) this.sendAll(group, encode(part, seen, limit))
    }
  }

  /**
   * Sends a live text change (format-1 text delta `parts`) to `targets` like {@link sendLive}, but each message names
   * only the reached peers its receivers need (see {@link reachedFor}), and a target that has ACKed a text delta
   * of ours with TEXT_ACK_TO gets the change written against that delta's tables (text delta format 2), which
   * spares a keystroke its writer's id, wall time and field names. Targets that share a base share the messages.
   */
  private sendLiveText(targets: readonly PeerState[], parts: readonly Uint8Array[], reached: Iterable<number> = []): void {
    if (targets.length === 0) return
    const seen = this.liveReached(targets, reached)
    const deltas = parts.map((part) => decodeTextDelta(part))
    for (const [base, group] of groupBy(targets, (t) => t.textBase)) {
      const named = this.reachedFor(group, seen)
      parts.forEach((part, i) => {
        const delta = deltas[i]!
        const on = base?.tables && encodeTextDeltaOn(delta, base.fingerprint, base.tables)
        const payload = on && on.bytes.length < part.length ? on.bytes : part
        this.rememberText(group, payload, delta.to, payload === part ? tablesOf(delta) : on!.tables)
        this.sendAll(group, encodeTextMessage(payload, true, named, this.init.maxMessageBytes))
      })
    }
  }

  /** Tells the peers our neighbours if due, then returns the set a live change to `targets` carries: us, them, `reached`. */
  private liveReached(targets: readonly PeerState[], reached: Iterable<number>): Set<number> {
    this.flushNeighbours()
    const seen = new Set(reached)
    seen.add(this.selfHash)
    for (const t of targets) if (seen.size < MAX_REACHED) seen.add(t.hash)
    return seen
  }

  /**
   * The part of a live change's `reached` set that its receivers `group` need (see LIVE in protocol.ts): not us (a
   * receiver counts the sender as reached), and of the rest only the peers that some receiver other than that peer
   * itself may send to, by its last NEIGHBOURS (all of them for a receiver that has not sent one, or sent "unknown").
   * Leaving a peer out can only make a receiver send it a duplicate, never skip a peer it should send to.
   */
  private reachedFor(group: readonly PeerState[], seen: ReadonlySet<number>): number[] {
    const named: number[] = []
    for (const h of seen) {
      if (h === this.selfHash) continue
      if (group.some((t) => h !== t.hash && (!t.neighbours || t.neighbours.size === 0 || t.neighbours.has(h)))) named.push(h)
    }
    return named
  }

  /** `delta` cut into parts of at most `limit` bytes, or `whole()` when a single write is larger than that. */
  private cut(delta: Delta, limit: number, whole: () => readonly Uint8Array[]): readonly Uint8Array[] {
    try {
      return encodeDeltaParts(delta, limit - 16)
    } catch (err) {
      if (err instanceof MessageTooLargeError) return whole()
      throw err
    }
  }

  /**
   * Sends one message to `targets`: with one `broadcast` per transport whose every peer is a target reached over it
   * (an encrypted room then seals it once, a relay carries it once to the server), else peer by peer.
   */
  private sendAll(targets: readonly PeerState[], message: Uint8Array): void {
    const rest = new Set(targets)
    for (const link of this.init.transports) {
      if (!link.broadcast) continue
      const on = [...this.peers.values()].filter((p) => p.links.includes(link))
      if (on.length < 2 || !on.every((p) => rest.has(p) && p.links[0] === link && message.length <= this.messageLimit(p))) continue
      try {
        for (const frame of toFrames(message, link.maxFrameSize, this.nextMessageId++)) link.broadcast(frame)
      } catch (err) {
        this.init.hooks.error(asError(err))
      }
      for (const p of on) rest.delete(p)
    }
    for (const p of rest) this.send(p, message)
  }

  /** One anti-entropy round: ask every connected peer for what we lack (and tell them what we hold). */
  antiEntropy(): void {
    this.flushNeighbours()
    const ours = this.init.store.versionVectorView()
    const req = encodeVectorMessage('sync-request', ours)
    const text = this.init.text && encodeVectorMessage('text-request', this.init.text.versionVector())
    for (const p of this.peers.values()) {
      if (this.gated(p)) {
        this.sendFrontier(p)
        continue
      }
      if (text) this.send(p, text)
      this.sendVector(p, 'sync-request', ours, req)
    }
  }

  /**
   * Tombstone collection: drops the delete floors and field removals that every known peer (heard from within the
   * horizon) has acknowledged holding, when we hold everything each of them acknowledged (causal stability). A peer
   * silent for longer than the horizon no longer holds it back; if it comes back, our FRONTIER makes it rebase.
   * Runs after every anti-entropy round; returns how many tombstones it dropped.
   */
  collect(): number {
    const gc = this.init.gc
    if (!gc) return 0
    // A connected peer that has not told us what it holds yet could hold anything: wait for it.
    for (const p of this.peers.values()) if (!this.isTab(p) && !p.dropped && !p.complete) return 0
    const { store } = this.init
    const now = gc.now()
    this.touchKnown(now)
    const ours = store.versionVector()
    let stable: VersionVector | undefined
    for (const k of this.known.values()) {
      if (now - k.lastSeen > gc.horizonMs) continue
      if (!covers(ours, k.vector)) return 0 // we lack something a peer holds: not stable yet
      stable = stable ? minVersionVector(stable, k.vector) : new Map(k.vector)
    }
    const { tombstones } = store.collect(stable ?? ours)
    if (tombstones > 0) {
      this.init.hooks.gc({ collected: tombstones, rebased: 0 })
      for (const p of this.peers.values()) this.sendFrontier(p)
    }
    return tombstones
  }

  /** The peers remembered for collection (to persist). */
  knownPeers(): ReadonlyMap<PeerId, KnownPeer> {
    this.touchKnown(this.init.gc?.now() ?? 0)
    return this.known
  }

  /** Refreshes what we remember of every connected network peer. */
  private touchKnown(now: number): void {
    if (!this.init.gc) return
    for (const p of this.peers.values()) if (!this.isTab(p) && !p.dropped && p.complete && p.theirs) this.known.set(p.id, { lastSeen: now, vector: p.theirs })
  }

  /** Whether we may not exchange changes with `p` yet: our frontier is not empty and `p` has not shown it covers it. */
  private gated(p: PeerState): boolean {
    const ours = this.init.store.frontierView()
    return ours.size > 0 && (p.frontier === undefined || !covers(p.frontier, ours))
  }

  private sendFrontier(p: PeerState): void {
    const { vector, newest } = this.init.store.gcFrontier()
    if (vector.size > 0) this.send(p, encodeFrontierMessage(vector, newest, this.init.store.versionVector()))
  }

  /** A peer's FRONTIER: rebase if we missed tombstones it knows were collected, take its frontier, open the gate. */
  private onFrontier(p: PeerState, frontier: VersionVector, newest: Timestamp | undefined, held: VersionVector): void {
    const { store, writerId, hooks } = this.init
    const wasGated = this.gated(p)
    p.frontier = p.frontier ? mergeVersionVectors(p.frontier, frontier) : frontier
    if (frontier.size === 0) return
    const before = store.gcFrontier()
    if (!covers(store.versionVector(), frontier)) {
      const visibleBefore = new Set<string>()
      for (const c of store.collections()) for (const id of store.ids(c)) visibleBefore.add(`${c}\u0000${id}`)
      const dropped = store.rebase(held, newest, writerId)
      store.restoreFrontier(frontier, newest)
      hooks.gc({ collected: 0, rebased: dropped, visibleBefore })
      // Our vector went back: what every peer believes we hold is wrong now. Start over with each of them.
      for (const o of this.peers.values()) {
        o.theirs = undefined
        o.complete = false
        o.synced = false
        this.sendFrontier(o)
        this.sendVector(o, 'sync-request')
      }
      this.notify()
      return
    }
    store.restoreFrontier(frontier, newest)
    const after = store.gcFrontier()
    if (!covers(before.vector, after.vector)) {
      hooks.gc({ collected: 0, rebased: 0 })
      for (const o of this.peers.values()) this.sendFrontier(o) // ours grew: every peer must show it covers it
    } else if (p.frontier && !covers(p.frontier, after.vector)) {
      this.sendFrontier(p)
    }
    if (wasGated && !this.gated(p)) {
      if (this.init.text) this.send(p, encodeVectorMessage('text-request', this.init.text.versionVector()))
      this.sendVector(p, 'sync-request')
    }
  }

  /**
   * Resolves when every connected peer holds exactly what we hold; rejects with SyncTimeoutError after `timeoutMs`.
   */
  sync(timeoutMs: number): Promise<void> {
    if (this.allSynced()) return Promise.resolve()
    this.antiEntropy()
    return new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (!this.allSynced()) {
          this.catchUp()
          return
        }
        cleanup()
        resolve()
      }
      const timer = setTimeout(() => {
        cleanup()
        const lagging = [...this.peers.values()].filter((p) => !this.inAgreement(p)).map((p) => p.id)
        reject(new SyncTimeoutError(`sync did not complete within ${timeoutMs} ms (peers not in agreement: ${lagging.join(', ')})`, lagging))
      }, timeoutMs)
      const cleanup = (): void => {
        clearTimeout(timer)
        this.waiters.delete(check)
      }
      this.waiters.add(check)
    })
  }

  /** The newest own write we may hand out (see {@link RecordStore.changesSince}'s `ceiling`). */
  private ceiling(): Timestamp {
    return this.durableUpTo ?? { wall: -1, counter: 0, peer: this.init.writerId }
  }

  /** Whether `p` is another replica of our shared store, reached over the tab link. */
  private isTab(p: PeerState): boolean {
    return this.init.tabLink !== undefined && p.links[0] === this.init.tabLink
  }

  /** Per-peer status. */
  status(): PeerStatus[] {
    const { store, transports } = this.init
    const text = this.init.text
    return [...this.peers.values()].filter((p) => !this.isTab(p)).map((p) => ({
      id: p.id,
      connected: !p.dropped,
      behind: countRegisters(store.changesSince(p.theirs ?? new Map())) + (text && p.textTheirs ? text.count(p.textTheirs) : 0),
      via: p.links[0] ? transports.indexOf(p.links[0]) : -1,
    }))
  }

  /** The version vector `peer` last reported (by a sync request or an ACK), if any. */
  peerVector(peer: PeerId): VersionVector | undefined {
    const theirs = this.peers.get(peer)?.theirs
    return theirs && new Map(theirs)
  }

  /** Re-checks sync waiters (after local changes). */
  notify(): void {
    for (const w of [...this.waiters]) w()
  }

  /**
   * While a sync() waits: sends every peer whose reported vector lacks writes of others that we hold what it lacks,
   * as a DELTA (which it ACKs). A peer that answered our SYNC_REQUEST before a third peer's change reached it (or
   * before it reached us) would otherwise never tell us that it has it now, and the sync() would wait for the next
   * anti-entropy round. The delta starts from the peer's reported vector, which is at most what it holds, so it
   * always lets the peer advance: one catch-up per peer is in flight at a time, until the peer reports a vector that
   * covers it. Lagging only on our own writes does not count: their live batches follow durability, and are ACKed.
   */
  private catchUp(): void {
    const ours = this.init.store.versionVectorView()
    for (const p of this.peers.values()) {
      const theirs = p.theirs
      if (p.dropped || theirs === undefined || !p.complete || this.gated(p)) continue
      if (p.catchingUp) {
        if (!covers(theirs, p.catchingUp)) continue
        p.catchingUp = undefined
      }
      let lacks = false
      for (const ts of ours.values()) if (ts.peer !== this.init.writerId && isNewer(theirs, ts)) lacks = true
      if (!lacks) continue
      // An answer that claims nothing held back a write of ours that is not durable yet: wait for its live batch.
      const to = this.answer(p, theirs, true)
      if (to.size > 0) p.catchingUp = to
    }
  }

  private allSynced(): boolean {
    const ours = this.init.store.versionVectorView()
    for (const p of this.peers.values()) if (!p.dropped && !this.inAgreement(p, ours)) return false
    return true
  }

  /** Whether `p` holds what we hold: the records, and the text when it keeps text (it sent a TEXT_REQUEST or TEXT_ACK). */
  private inAgreement(p: PeerState, ours: ReadonlyMap<string, Timestamp> = this.init.store.versionVectorView()): boolean {
    // Equal vectors have equal sizes: a cheap first test, as most calls come while vectors still differ.
    if (!p.complete || p.theirs === undefined || p.theirs.size !== ours.size || !covers(p.theirs, ours) || !covers(ours, p.theirs)) return false
    if (!this.init.text || (p.textTheirs === undefined && !this.textPeers.has(p.id))) return true
    if (p.textTheirs === undefined) return false // it keeps text, and has not told us what it holds since it came back
    const text = this.init.text.versionVector()
    return covers(p.textTheirs, text) && covers(text, p.textTheirs)
  }

  private linkUp(t: Transport, peer: PeerId): void {
    if (this.stopped || peer === this.init.room.peerId) return
    let p = this.peers.get(peer)
    if (!p) {
      p = {
        id: peer,
        hash: peerHash(peer),
        neighbours: undefined,
        links: [],
        reassembler: new Reassembler(this.init.maxMessageBytes),
        theirs: undefined,
        complete: false,
        told: undefined,
        textTheirs: undefined,
        textBase: undefined,
        textSent: new TextWindow(),
        textBases: new TextWindow(),
        catchingUp: undefined,
        frontier: undefined,
        dropped: false,
        synced: false,
      }
      this.peers.set(peer, p)
    }
    if (p.links.includes(t)) return
    const order = this.init.transports
    p.links = [...p.links, t].sort((a, b) => order.indexOf(a) - order.indexOf(b))
    if (p.links.length === 1) {
      p.dropped = false
      if (t !== this.init.tabLink) this.init.hooks.peerJoin(peer)
      this.sendFrontier(p)
      // The text request first: a peer that keeps text then knows it before it can agree on the records alone.
      if (this.init.text) this.send(p, encodeVectorMessage('text-request', this.init.text.versionVector()))
      this.sendVector(p, 'sync-request')
      // The newcomer hears our peers now; the others with the next change we send or forward, or the next
      // anti-entropy round (a list that lacks a peer only costs duplicate frames, so it may wait).
      this.send(p, encodeNeighboursMessage(this.neighbourHashes()))
      this.neighboursDirty = true
    }
  }

  private linkDown(t: Transport, peer: PeerId): void {
    const p = this.peers.get(peer)
    if (!p || !p.links.includes(t)) return
    p.links = p.links.filter((l) => l !== t)
    if (p.links.length > 0) return
    this.touchKnown(this.init.gc?.now() ?? 0)
    this.peers.delete(peer)
    // A list that names a peer we lost could make a forwarder leave someone to us in vain: correct it at once.
    this.neighboursDirty = true
    this.flushNeighbours()
    if (t !== this.init.tabLink) this.init.hooks.peerLeave(peer)
    this.notify()
  }

  private send(p: PeerState, message: Uint8Array): void {
    const link = p.links[0]
    if (!link || p.dropped) return
    try {
      for (const frame of toFrames(message, link.maxFrameSize, this.nextMessageId++)) link.send(p.id, frame)
    } catch (err) {
      this.init.hooks.error(asError(err), p.id)
    }
  }

  /**
   * Largest message worth sending to `p`: `maxMessageBytes`, or less when the link says so ({@link
   * Transport.maxMessageSize}, e.g. a relayed libp2p connection with a data allowance).
   */
  private messageLimit(p: PeerState): number {
    const hint = p.links[0]?.maxMessageSize?.(p.id)
    return hint !== undefined && hint > 0 ? Math.min(hint, this.init.maxMessageBytes) : this.init.maxMessageBytes
  }

  /**
   * Sends `p` what it lacks of our state given its vector `vv`, in parts that fit its link (a record's writes of one
   * time larger than the link's hint go whole, up to our message limit); returns what the answer claims. With
   * `onlyClaiming`, sends nothing unless the answer claims something.
   */
  private answer(p: PeerState, vv: ReadonlyMap<string, Timestamp>, onlyClaiming = false): ReadonlyMap<string, Timestamp> {
    const limit = this.messageLimit(p) - 16
    const { parts, to } = this.init.store.encodeChangesSinceParts(vv, this.ceiling(), limit)
    if (onlyClaiming && to.size === 0) return to
    const max = this.init.maxMessageBytes - 16
    for (const part of parts) {
      if (part.length > max) throw new MessageTooLargeError(`a single write of ${part.length} bytes exceeds the ${max}-byte message limit`, part.length, max)
    }
    for (const part of parts) this.send(p, encodeDeltaMessage(part, false))
    return to
  }

  private receive(peer: PeerId, frame: Uint8Array): void {
    const p = this.peers.get(peer)
    if (!p || p.dropped || this.stopped) return
    try {
      const whole = p.reassembler.push(frame)
      if (!whole) return
      const msg = decodeMessage(whole)
      if (!msg) return
      if (msg.type === 'delta') {
        if (!this.gated(p)) this.onDelta(p, msg.newest, msg.live, msg.payload, msg.reached)
      }
      else if (msg.type === 'neighbours') p.neighbours = new Set(msg.peers)
      else if (msg.type === 'frontier') this.onFrontier(p, msg.frontier, msg.newest, msg.held)
      else if (msg.type === 'text') {
        if (!this.gated(p)) this.onText(p, msg.payload, msg.live, msg.reached)
      } else if (msg.type === 'text-request' || msg.type === 'text-ack') this.onTextVector(p, msg.vv, msg.type === 'text-request')
      else if (msg.type === 'text-ack-to') this.onTextAckTo(p, msg.fingerprint)
      else this.onVector(p, msg.vv, msg.type)
    } catch (err) {
      const e = asError(err)
      if (e instanceof SyncmeshError && !(e instanceof ClockDriftError || e instanceof ClockOverflowError)) {
        // Malformed, oversized or unsupported input: drop the peer (until it reconnects), keep our state untouched.
        // A peer whose clock runs far ahead is not hostile: its delta is refused, the peer kept.
        p.dropped = true
        this.notify()
      }
      this.init.hooks.error(e, peer)
    }
  }

  /** A SYNC_REQUEST (answered), an ACK or an ACK_CHANGES (merged into what we know the peer holds). */
  private onVector(p: PeerState, vv: VersionVector, type: 'sync-request' | 'ack' | 'ack-changes'): void {
    if (p.theirs) for (const ts of vv.values()) advance(p.theirs, ts)
    else p.theirs = vv
    if (type !== 'ack-changes') p.complete = true
    const isRequest = type === 'sync-request'
    const { hlc, writerId } = this.init
    // A peer may hold writes of ours that we do not (yet) hold: never reissue their timestamps.
    const mine = vv.get(writerId)
    if (mine) hlc.receive(mine)
    if (isRequest && this.gated(p)) this.sendFrontier(p)
    else if (isRequest) {
      this.answer(p, vv)
      // Always followed by our vector: the requester learns what we hold (and lack) even when we had things to send.
      this.sendVector(p, 'ack')
    }
    this.checkSynced(p)
    this.notify()
  }

  private onDelta(p: PeerState, newest: Timestamp | undefined, live: boolean, payload: Uint8Array, reached: readonly number[] | undefined): void {
    const { store, hooks } = this.init
    // Read during apply, before the store advances its vector (it does so once every record is applied).
    const held = store.versionVectorView()
    const stored = this.apply(payload, newest, this.isTab(p), (o) => {
      // A loser we already held was reported when it first lost; one arriving again (forwarded, duplicated) is not news.
      if (o.incomingLost && !isNewer(held, o.loser.timestamp)) return
      if (isConflict(o, p) && this.firstReport(o)) hooks.conflict(o)
    })
    stored?.catch((err: unknown) => hooks.error(asError(err)))
    if (live && stored) this.forward(p, payload, () => decodeDelta(payload), reached, encodeLiveMessage)
    const ours = store.versionVectorView()
    this.acknowledge(p, ours)
    // Only a change of our state can change whether another peer agrees with us.
    if (stored) for (const other of this.peers.values()) this.checkSynced(other, ours)
    else this.checkSynced(p, ours)
    this.notify()
  }

  /**
   * Applies a delta fetched from a server's store (see store-sync.ts); resolves once it is durable here. Throws
   * (ClockDriftError for a far-future writer) to refuse it, changing nothing.
   */
  applyStored(bytes: Uint8Array): Promise<void> {
    const stored = this.apply(bytes, newestInDelta(bytes), false)
    this.notify()
    return stored ?? Promise.resolve()
  }

  /**
   * Applies a remote delta, straight from its bytes, after the clock accepts its newest timestamp `newest` (throws
   * ClockDriftError for a far-future writer: nothing is applied), erases the text that raised floors cover, stores `bytes` (not when they came
   * from a tab, which stored them) and tells the replica. Returns the storing, or undefined when nothing changed.
   */
  private apply(bytes: Uint8Array, newest: Timestamp | undefined, fromTab: boolean, onOverwrite?: (o: Overwrite) => void): Promise<void> | undefined {
    const { store, hlc, text, log, hooks } = this.init
    if (newest) hlc.receive(newest)
    // Text follows the records' changes and raised floors (a raised floor erases text stamped below it).
    const result = store.applyEncoded(bytes, onOverwrite, text !== undefined || hooks.wantsChanges())
    if (!result.wrote && !result.advanced) return undefined
    const stored = fromTab ? Promise.resolve() : log.append(bytes)
    hooks.applied(text ? text.afterRecords(result.changed, result.floors, (c, id) => store.has(c, id)) : result.changed, fromTab)
    return stored
  }

  /** Sends `p` our whole vector (a SYNC_REQUEST or ACK), and remembers it as what `p` was last told. */
  private sendVector(p: PeerState, type: 'sync-request' | 'ack', ours = this.init.store.versionVectorView(), message = encodeVectorMessage(type, ours)): void {
    p.told = new Map(ours)
    this.send(p, message)
  }

  /** ACKs a delta from `p`: the entries of our vector that changed since we last told `p` (ACK_CHANGES), if any. */
  private acknowledge(p: PeerState, ours: ReadonlyMap<string, Timestamp>): void {
    const told = p.told
    if (!told) return this.sendVector(p, 'ack', ours)
    const changed: VersionVector = new Map()
    for (const [origin, ts] of ours) {
      if (!isNewer(told, ts)) continue
      changed.set(origin, ts)
      told.set(origin, ts)
    }
    if (changed.size > 0) this.send(p, encodeVectorMessage('ack-changes', changed))
  }

  /** A TEXT_REQUEST (answered with what the peer's text vector lacks) or a TEXT_ACK. Ignored without text support. */
  private onTextVector(p: PeerState, vv: VersionVector, isRequest: boolean): void {
    const text = this.init.text
    if (!text) return
    // Like the records' vector, it only moves forward (a late, reordered TEXT_ACK says nothing new).
    p.textTheirs = p.textTheirs ? mergeVersionVectors(p.textTheirs, vv) : vv
    this.textPeers.add(p.id)
    const { hlc, writerId } = this.init
    const mine = vv.get(writerId)
    if (mine) hlc.receive(mine)
    // A request may mean the peer lost the base we write live text against (or restarted): start from format 1.
    if (isRequest) p.textBase = undefined
    // A gated peer gets no text either (its SYNC_REQUEST, sent with this, is answered with our FRONTIER).
    if (isRequest && !this.gated(p)) {
      const parts = text.changesSince(vv, this.ceiling(), this.messageLimit(p) - 16)
      for (const part of parts) {
        const delta = decodeTextDelta(part)
        this.rememberText([p], part, delta.to, tablesOf(delta))
        this.send(p, encodeTextMessage(part, false))
      }
      if (parts.length === 0) this.send(p, encodeVectorMessage('text-ack', text.versionVector()))
    }
    this.checkSynced(p)
    this.notify()
  }

  /**
   * A TEXT message: applied (after the clock accepts its newest stamp), forwarded when live and new, then ACKed. One
   * written against a base we no longer hold (text delta format 2) is answered with a TEXT_REQUEST: the peer sends
   * what we lack in full.
   */
  private onText(p: PeerState, payload: Uint8Array, live: boolean, reached: readonly number[]): void {
    const text = this.init.text
    if (!text) return
    const opened = decodeTextDeltaOn(payload, (fp) => p.textBases.get(fp)?.tables)
    if (!opened) return this.send(p, encodeVectorMessage('text-request', text.versionVector()))
    const decoded = text.decode(opened.delta)
    if (decoded.newest) this.init.hlc.receive(decoded.newest) // throws ClockDriftError for a far-future peer: nothing is applied
    const result = text.apply(decoded)
    const changed = result.changed.length > 0 || result.advanced
    // Storage and forwarding get the delta self-contained (format 1), written once applied (off the keystroke's path).
    const full = changed && payload[0] === TEXT_FORMAT_ON_BASE ? encodeTextDelta(opened.delta) : payload
    if (changed) {
      const fromTab = this.isTab(p)
      if (!fromTab) this.init.log.appendText(full).catch((err: unknown) => this.init.hooks.error(asError(err)))
      this.init.hooks.textApplied(result.changed, fromTab)
    }
    if (live && changed) this.forward(p, full, undefined, reached, encodeLiveText)
    // When we now hold all that the delta claims, a TEXT_ACK_TO says so in 6 bytes (and lets the peer write its next
    // deltas against this one's tables); otherwise our whole text vector.
    const ours = text.versionVector()
    if (decoded.to.size > 0 && covers(ours, decoded.to)) {
      const fingerprint = textFingerprint(payload)
      p.textBases.remember({ fingerprint, check: checksum(payload), to: decoded.to, tables: usable(opened.tables) })
      this.send(p, encodeTextAckToMessage(fingerprint))
    } else this.send(p, encodeVectorMessage('text-ack', ours))
    for (const other of this.peers.values()) this.checkSynced(other)
    this.notify()
  }

  /** Remembers a text delta we send (or forward) to `targets`, so that a TEXT_ACK_TO naming it can be understood. */
  private rememberText(targets: readonly PeerState[], payload: Uint8Array, to: ReadonlyMap<string, Timestamp>, tables: TextTables): void {
    if (to.size === 0) return
    const sent: SentText = { fingerprint: textFingerprint(payload), check: checksum(payload), to, tables: usable(tables) }
    for (const t of targets) t.textSent.remember(sent)
  }

  /**
   * A TEXT_ACK_TO: `p` holds at least the `to` of the text delta we sent it with this fingerprint, and that delta's
   * tables (our next live text deltas to `p` are written against them). The `to` is merged into what we know of `p`
   * like a TEXT_ACK, once `p` has sent a whole text vector since it connected.
   */
  private onTextAckTo(p: PeerState, fingerprint: number): void {
    const sent = p.textSent.get(fingerprint)
    if (!this.init.text || !sent) return
    if (sent.tables) p.textBase = sent
    if (!p.textTheirs) return
    p.textTheirs = mergeVersionVectors(p.textTheirs, sent.to)
    this.checkSynced(p)
    this.notify()
  }

  /**
   * Sends a live change that changed our state on to the peers it has not reached (see LIVE in protocol.ts), naming
   * them in the set it carries so that they do not send it to each other. A duplicate changes nothing and stops.
   * A peer whose NEIGHBOURS name a reached peer with a smaller hash than ours is left to that peer (see NEIGHBOURS).
   * A records change is cut again, from `delta()`, for a peer whose link takes smaller messages.
   */
  private forward(from: PeerState, payload: Uint8Array, delta: (() => Delta) | undefined, reached: readonly number[] | undefined, encode: LiveEncoder): void {
    const seen = new Set(reached)
    seen.add(from.hash)
    const targets: PeerState[] = []
    for (const o of this.peers.values()) if (o !== from && !o.dropped && !this.gated(o) && !seen.has(o.hash) && this.mineToSend(o, seen)) targets.push(o)
    if (encode === encodeLiveText) this.sendLiveText(targets, [payload], seen)
    else this.sendLive(targets, [payload], delta, encode, seen)
  }

  /** Whether we are the reached neighbour of `t` with the smallest hash (so the one to send `t` the change). */
  private mineToSend(t: PeerState, seen: ReadonlySet<number>): boolean {
    if (!t.neighbours) return true
    for (const h of t.neighbours) if (h < this.selfHash && seen.has(h)) return false
    return true
  }

  private neighbourHashes(): number[] {
    return [...this.peers.values()].map((p) => p.hash)
  }

  /** Tells every peer our current peers when they changed since it last heard (see NEIGHBOURS in protocol.ts). */
  private flushNeighbours(): void {
    if (!this.neighboursDirty || this.stopped || this.peers.size === 0) return
    this.neighboursDirty = false
    const message = encodeNeighboursMessage(this.neighbourHashes())
    for (const p of this.peers.values()) this.send(p, message)
  }

  /** Remembers recent conflict reports so that a value arriving twice during a gap is reported once. */
  private firstReport(o: Overwrite): boolean {
    const l = o.loser.timestamp
    const key = `${o.collection.length}:${o.collection}${o.id.length}:${o.id}${o.field}\u0000${l.wall}:${l.counter}:${l.peer}`
    if (this.reported.has(key)) return false
    this.reported.add(key)
    if (this.reported.size > 4096) this.reported.delete(this.reported.values().next().value!)
    return true
  }

  /** Records whether `p` now agrees with us, telling the replica when it starts to. Callers notify waiters. */
  private checkSynced(p: PeerState, ours?: ReadonlyMap<string, Timestamp>): void {
    const now = this.inAgreement(p, ours)
    if (now && !p.synced && !this.isTab(p)) this.init.hooks.peerSynced(p.id)
    p.synced = now
  }
}

/**
 * The origin id a new storage history stamps its writes with. A version vector's entry for an origin promises every
 * write of that origin up to it, so an origin must never outlive the storage that holds its writes: a replica that
 * lost its storage (or runs on a fresh one) under a peer id the application chose gets a new origin,
 * `peerId@<nonce>`, the nonce random (8 base-36 characters, 41 bits). Not the time: a wall clock set back can repeat
 * the ms of an earlier history. A random peer id is already new with its storage and serves as the origin itself
 * (`nonce` undefined). {@link peerOfWriter} inverts it.
 */
export function writerIdFor(peerId: string, nonce?: string): string {
  return nonce === undefined ? peerId : `${peerId}@${nonce}`
}

/**
 * The origin id of slot `slot` of a shared store (see tabs/group.ts): every replica open on the store at once
 * writes under a slot of its own, so no two of them ever stamp writes with the same origin.
 */
export function slotWriterId(writerId: string, slot: number): string {
  return `${writerId}~${slot}`
}

/** The peer id whose replica stamps writes with `writerId` (the inverse of {@link writerIdFor} and {@link slotWriterId}). */
export function peerOfWriter(writerId: string): string {
  const base = writerId.replace(/~\d+$/, '')
  const at = base.lastIndexOf('@')
  return at < 0 ? base : base.slice(0, at)
}

/**
 * Whether an overwrite is news to the application: not when one writer replaced its own value, nor when the sender
 * wrote the winning value after it had acknowledged holding the loser (it knowingly replaced it).
 */
function isConflict(o: Overwrite, sender: PeerState): boolean {
  const writer = o.winner.timestamp.peer
  if (writer === o.loser.timestamp.peer) return false
  const senderSawLoser = sender.theirs !== undefined && !isNewer(sender.theirs, o.loser.timestamp)
  // A tab of the same store is a peer named after its origin id; any other peer writes as peerOfWriter says.
  const senderWrote = writer === sender.id || peerOfWriter(writer) === sender.id
  return !(!o.incomingLost && senderWrote && senderSawLoser)
}

/** A text delta sent or ACKed: its fingerprint, a second checksum, the vector it claims, and its tables. */
interface SentText {
  readonly fingerprint: number
  readonly check: number
  readonly to: ReadonlyMap<string, Timestamp>
  /** Undefined when a table is too long to write against (format 2 allows {@link MAX_TEXT_TABLE} entries). */
  readonly tables: TextTables | undefined
}

/**
 * The last {@link MAX_TEXT_FINGERPRINTS} text deltas sent to (or ACKed to) one peer, by fingerprint. Two different
 * deltas (told apart by a second checksum) under one fingerprint leave it unusable (null), and so does a fingerprint
 * that a delta forgotten lately had: a TEXT_ACK_TO or a base naming it may mean that one, so it is ignored.
 */
class TextWindow {
  private readonly live = new Map<number, SentText | null>()
  private readonly retired = new Set<number>()

  get(fingerprint: number): SentText | null | undefined {
    return this.live.get(fingerprint)
  }

  remember(t: SentText): void {
    const known = this.live.get(t.fingerprint)
    this.live.delete(t.fingerprint)
    const fresh = known === undefined && !this.retired.has(t.fingerprint)
    this.live.set(t.fingerprint, fresh ? t : known?.check === t.check ? known : null)
    if (this.live.size <= MAX_TEXT_FINGERPRINTS) return
    const oldest = this.live.keys().next().value!
    this.live.delete(oldest)
    this.retired.add(oldest)
    if (this.retired.size > 16 * MAX_TEXT_FINGERPRINTS) this.retired.delete(this.retired.values().next().value!)
  }

  /** Forgets everything (tests: a peer that lost its bases). */
  clear(): void {
    this.live.clear()
  }
}

/** A second 32-bit checksum of a text delta (djb2-xor), independent of its fingerprint (FNV-1a). */
function checksum(bytes: Uint8Array): number {
  let h = 5381
  for (let i = 0; i < bytes.length; i++) h = (Math.imul(h, 33) ^ bytes[i]!) | 0
  return (h ^ bytes.length) >>> 0
}

function usable(tables: TextTables): TextTables | undefined {
  return tables.peers.length <= MAX_TEXT_TABLE && tables.docs.length <= MAX_TEXT_TABLE && tables.clients.length <= MAX_TEXT_TABLE ? tables : undefined
}

/** Encodes a live change (one encoded delta part) with the peers it has reached, in at most `maxBytes`. */
type LiveEncoder = (part: Uint8Array, reached: Iterable<number>, maxBytes: number) => Uint8Array

/** A live TEXT message (see {@link LiveEncoder}). */
function encodeLiveText(part: Uint8Array, reached: Iterable<number>, maxBytes: number): Uint8Array {
  return encodeTextMessage(part, true, reached, maxBytes)
}


function countRegisters(delta: Delta): number {
  let n = 0
  for (const rd of delta.records) n += rd.fields.length + (rd.floor ? 1 : 0)
  return n
}

/** The records of a commit's `written` map, as refs. */
function refsOf(written: ReadonlyMap<string, readonly string[]>): RecordRef[] {
  const refs: RecordRef[] = []
  for (const [collection, ids] of written) for (const id of ids) refs.push({ collection, id })
  return refs
}

/** `items` grouped by `key`, groups in order of first appearance. */
function groupBy<T, K>(items: readonly T[], key: (item: T) => K): Map<K, T[]> {
  const groups = new Map<K, T[]>()
  for (const item of items) {
    const k = key(item)
    const group = groups.get(k)
    if (group) group.push(item)
    else groups.set(k, [item])
  }
  return groups
}
