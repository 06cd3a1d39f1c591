/**
 * The record store's memory layout: per collection, a {@link Table} keeps every record as one small block of bytes in
 * a shared arena — no object per record, per register or per value. A million records of five short fields take
 * about 120 bytes each (the id and its map entry are half of it) instead of the 500 that an object per record with
 * arrays of registers took, and a cold load writes bytes instead of allocating millions of objects.
 *
 * A block (in memory only; never stored or sent, so it can change freely):
 *
 *   block := u8 flags                                 bit 0: has a floor; bit 1: the floor is a delete
 *            [stamp floor]
 *            uint n   n × (uint name, value, stamp)    registers in first-write order; removed fields included
 *   stamp := uint x                                    x = 0: the same as the block's previous stamp; else
 *            [int (wall − previous wall), uint counter] the peer is x − 1 (previous wall: 0 for the first stamp)
 *   value := the canonical bytes of value.ts (tag 10: the field was removed)
 *
 * Names and peers are indexes into the store's tables (they only grow). Values are kept as their canonical bytes,
 * so equal values have equal bytes and exact ties compare bytes, as {@link compareValues} does; they are decoded only
 * when a record is read.
 */
import { type Reader, Writer, decodeStringAt, holdShape, putUint } from './bytes.js'
import { StampStats, noteCounter, oneVarintStamp, readWireStamp, wireStamp } from './delta.js'
import { DecodeError } from './errors.js'
import { ABSENT_TAG, checkedValueEnd, copyCanonicalValue, valueEnd } from './value.js'

const NO_BYTES = new Uint8Array(0)

/** A record's registers, parsed from its block (or being merged): the floor, then the fields in block order. */
export class Regs {
  /** The floor's peer index, or −1 when the record has no floor. */
  floorPeer = -1
  /** −0, not 0: doubles from the start, as walls and counters are (see {@link doubles}). */
  floorWall = -0
  floorCounter = -0
  deleted = false
  n = 0
  readonly names: number[] = []
  readonly walls: number[] = doubles()
  readonly counters: number[] = doubles()
  readonly peers: number[] = []
  /** Field `k`'s value is the canonical bytes `srcs[k][vs[k], ve[k])`. */
  readonly srcs: Uint8Array[] = []
  readonly vs: number[] = []
  readonly ve: number[] = []

  /** Empties it (no floor, no field). */
  clear(): void {
    this.floorPeer = -1
    this.floorWall = 0
    this.floorCounter = 0
    this.deleted = false
    this.n = 0
  }

  /** True when field `k` holds a value (it is not a removal). */
  present(k: number): boolean {
    return this.srcs[k]![this.vs[k]!] !== ABSENT_TAG
  }

  /** True when it holds a tombstone: a delete floor or a removed field (what tombstone collection drops). */
  tombstone(): boolean {
    if (this.floorPeer >= 0 && this.deleted) return true
    for (let k = 0; k < this.n; k++) if (!this.present(k)) return true
    return false
  }

  /** Visible when the floor is a replacement, or any field survives a delete. */
  visible(): boolean {
    if (this.floorPeer >= 0 && !this.deleted) return true
    for (let k = 0; k < this.n; k++) if (this.present(k)) return true
    return false
  }

  /** The slot of a name, or −1. */
  slot(name: number): number {
    const names = this.names
    for (let k = 0; k < this.n; k++) if (names[k] === name) return k
    return -1
  }

  /** Sets field `k`. */
  set(k: number, name: number, wall: number, counter: number, peer: number, src: Uint8Array, vs: number, ve: number): void {
    if (k >= this.filled) this.filled = k + 1
    this.names[k] = name
    this.walls[k] = wall
    this.counters[k] = counter
    this.peers[k] = peer
    this.srcs[k] = src
    this.vs[k] = vs
    this.ve[k] = ve
  }

  /** Copies field `from` to slot `to`. */
  move(from: number, to: number): void {
    this.set(to, this.names[from]!, this.walls[from]!, this.counters[from]!, this.peers[from]!, this.srcs[from]!, this.vs[from]!, this.ve[from]!)
  }

  /** Drops references to value buffers (so a scratch keeps no arena alive), keeping the array's room. */
  release(): void {
    const srcs = this.srcs
    for (let k = 0; k < this.filled; k++) srcs[k] = NO_BYTES
    this.filled = 0
  }

  /** How many of `srcs` may hold a buffer. */
  filled = 0
}

/**
 * An empty array that holds doubles from the start. Walls outgrow small integers (and counters are read as doubles);
 * a field or array that starts with a small integer and then takes a double changes representation, which changes the map of its object and deoptimizes all code
 * compiled for the old one — once per process, but on the hot paths, while they are still warming up.
 */
export function doubles(): number[] {
  const a = [0.5]
  a.length = 0
  return a
}

/** Cursor of the block reader, and the last stamp it read. */
let at = 0
/** The last stamp's wall and counter (a typed array: a module variable would box each new double). */
const stampWC = new Float64Array(2)
let stampPeer = -1

function readUint(buf: Uint8Array): number {
  let b = buf[at++]!
  if (b < 0x80) return b
  let v = b & 0x7f
  let scale = 0x80
  for (;;) {
    b = buf[at++]!
    v += (b & 0x7f) * scale
    if (b < 0x80) return v
    scale *= 0x80
  }
}

/**
 * Reads a stamp into stampWC (wall, counter) and stampPeer (unchanged for "the same as the previous one"); false when
 * it is the same as the previous one.
 */
function readStamp(buf: Uint8Array): boolean {
  const x = readUint(buf)
  if (x === 0) return false
  stampPeer = x - 1
  const d = readUint(buf)
  stampWC[0] = stampWC[0]! + (d % 2 === 1 ? -(d + 1) / 2 : d / 2)
  stampWC[1] = readUint(buf)
  return true
}

/** Starts reading the block at `pos`: returns its flags byte. */
function startBlock(buf: Uint8Array, pos: number): number {
  at = pos + 1
  stampWC[0] = 0
  stampWC[1] = 0
  stampPeer = -1
  return buf[pos]!
}

/** Parses the block at `pos` into `out`. */
export function parseBlock(buf: Uint8Array, pos: number, out: Regs): void {
  const flags = startBlock(buf, pos)
  if (flags & 1) {
    readStamp(buf)
    out.floorPeer = stampPeer
    out.floorWall = stampWC[0]!
    out.floorCounter = stampWC[1]!
    out.deleted = (flags & 2) !== 0
  } else {
    out.floorPeer = -1
    out.deleted = false
  }
  const n = readUint(buf)
  out.n = n
  if (n > out.filled) out.filled = n
  const { names, srcs, vs, ve, walls, counters, peers } = out
  for (let k = 0; k < n; k++) {
    names[k] = readUint(buf)
    srcs[k] = buf
    vs[k] = at
    at = valueEnd(buf, at)
    ve[k] = at
    readStamp(buf)
    walls[k] = stampWC[0]!
    counters[k] = stampWC[1]!
    peers[k] = stampPeer
  }
}

/** The last written stamp's wall and counter (unboxed, as {@link stampWC}). */
const lastWC = new Float64Array(2)
let lastPeer = -1

function writeStamp(w: Writer, wall: number, counter: number, peer: number): void {
  if (peer === lastPeer && wall === lastWC[0]! && counter === lastWC[1]!) {
    w.u8(0)
    return
  }
  w.uint(peer + 1)
  w.int(wall - lastWC[0]!)
  w.uint(counter)
  lastWC[0] = wall
  lastWC[1] = counter
  lastPeer = peer
}

/** Most bytes {@link encodeBlock} writes for `regs` (a stamp takes at most 5 + 8 + 5 bytes, a count or name 5). */
function blockBound(regs: Regs): number {
  let n = 30
  const { vs, ve } = regs
  for (let k = 0; k < regs.n; k++) n += ve[k]! - vs[k]! + 25
  return n
}

/**
 * Writes `regs` as a block at `buf[pos]`, which must have room for {@link blockBound} bytes; returns where it ends.
 * (Straight into the buffer: no bounds check or call per varint.)
 */
function encodeBlock(regs: Regs, buf: Uint8Array, pos: number): number {
  let lw = 0
  let lc = -1
  let lp = -1
  const fp = regs.floorPeer
  buf[pos++] = fp >= 0 ? (regs.deleted ? 3 : 1) : 0
  if (fp >= 0) {
    const d = regs.floorWall
    pos = putUint(buf, pos, fp + 1)
    pos = putUint(buf, pos, 2 * d)
    pos = putUint(buf, pos, regs.floorCounter)
    lw = d
    lc = regs.floorCounter
    lp = fp
  }
  const n = regs.n
  pos = putUint(buf, pos, n)
  const { names, srcs, vs, ve, walls, counters, peers } = regs
  for (let k = 0; k < n; k++) {
    pos = putUint(buf, pos, names[k]!)
    const src = srcs[k]!
    const end = ve[k]!
    for (let i = vs[k]!; i < end; i++) buf[pos++] = src[i]!
    const wall = walls[k]!
    const counter = counters[k]!
    const peer = peers[k]!
    if (peer === lp && wall === lw && counter === lc) {
      buf[pos++] = 0
      continue
    }
    const d = wall - lw
    pos = putUint(buf, pos, peer + 1)
    pos = putUint(buf, pos, d < 0 ? -2 * d - 1 : 2 * d)
    pos = putUint(buf, pos, counter)
    lw = wall
    lc = counter
    lp = peer
  }
  return pos
}

/**
 * Which peers and field names a delta being encoded names, numbered in order of first appearance, its smallest wall
 * time, and the largest wall and counter of its record stamps (see {@link scanBlock}; a {@link StampRange}).
 */
export class WireTables extends StampStats {
  /** Store peer index → delta peer index (−1: not named yet); `peers` lists store indexes in delta order. */
  readonly peerAt: number[]
  readonly peers: number[] = []
  readonly nameAt: number[]
  readonly names: number[] = []
  minWall = Number.MAX_SAFE_INTEGER

  constructor(nPeers: number, nNames: number) {
    super()
    this.peerAt = new Array<number>(nPeers).fill(-1)
    this.nameAt = new Array<number>(nNames).fill(-1)
    holdShape(this)
  }

  /** Notes a timestamp's peer (store index) and wall (a vector's: see {@link stamp} for a record's). */
  see(peer: number, wall: number): void {
    if (this.peerAt[peer] === -1) this.peerAt[peer] = this.peers.push(peer) - 1
    if (wall < this.minWall) this.minWall = wall
  }

  /** Notes a record stamp: {@link see}, and {@link note}. */
  stamp(peer: number, wall: number, counter: number): void {
    this.see(peer, wall)
    this.note(wall, counter)
  }

  /** Notes a field name (store index). */
  name(name: number): void {
    if (this.nameAt[name] === -1) this.nameAt[name] = this.names.push(name) - 1
  }
}

/** Notes every stamp and name of the block at `pos` in `t` (the first pass of a full-state encode). */
export function scanBlock(buf: Uint8Array, pos: number, t: WireTables): void {
  const flags = startBlock(buf, pos)
  if (flags & 1) {
    readStamp(buf)
    t.stamp(stampPeer, stampWC[0]!, stampWC[1]!)
  }
  const n = readUint(buf)
  for (let k = 0; k < n; k++) {
    t.name(readUint(buf))
    at = valueEnd(buf, at)
    // A stamp the same as the previous one (all of a put's) is only counted again.
    if (readStamp(buf)) t.stamp(stampPeer, stampWC[0]!, stampWC[1]!)
    else noteCounter(t.counterBits, stampWC[1]!)
  }
}

/**
 * The records a delta being encoded sends and, of each, the floor and registers it sends (see
 * {@link collectOutgoing}): parallel arrays, per record and per register, reused from one encode to the next. A
 * register's value is `buf[vs, ve)` of its table's block arena, which stays put while the store is not written.
 */
export class Outgoing {
  /** Records: the table (a number the caller gives), the row, the floor (peer −1: not sent), the registers `[first, first + count)`. */
  n = 0
  tables = new Int32Array(1024)
  rows = new Int32Array(1024)
  floorPeers = new Int32Array(1024)
  floorWalls = new Float64Array(1024)
  floorCounters = new Float64Array(1024)
  deleted = new Uint8Array(1024)
  firsts = new Int32Array(1024)
  counts = new Int32Array(1024)
  /** Registers: store name and peer indexes, value bounds, wall and counter. */
  m = 0
  names = new Int32Array(4096)
  peers = new Int32Array(4096)
  vs = new Int32Array(4096)
  ve = new Int32Array(4096)
  walls = new Float64Array(4096)
  counters = new Float64Array(4096)
  /** Value bytes of the registers sent. */
  valueBytes = 0

  clear(): void {
    this.n = 0
    this.m = 0
    this.valueBytes = 0
  }

  growRecords(): void {
    const size = this.tables.length * 2
    this.tables = grown(this.tables, size)
    this.rows = grown(this.rows, size)
    this.floorPeers = grown(this.floorPeers, size)
    this.floorWalls = grown(this.floorWalls, size)
    this.floorCounters = grown(this.floorCounters, size)
    this.deleted = grown(this.deleted, size)
    this.firsts = grown(this.firsts, size)
    this.counts = grown(this.counts, size)
  }

  growRegisters(): void {
    const size = this.names.length * 2
    this.names = grown(this.names, size)
    this.peers = grown(this.peers, size)
    this.vs = grown(this.vs, size)
    this.ve = grown(this.ve, size)
    this.walls = grown(this.walls, size)
    this.counters = grown(this.counters, size)
  }
}

/**
 * Adds the record whose block is at `pos` in `buf` (row `row` of table number `table`) to `out` with its floor and
 * registers that `seen` does not cover (`[wall, counter]` pairs by store peer index, wall −1 for none, one pair per
 * peer of the store; see delta-parts.ts `covered`), noting their peers, names and walls in `t` in the order they will be written — or
 * adds nothing when `seen` covers all of it. One pass over the block, no object made.
 */
export function collectOutgoing(buf: Uint8Array, pos: number, seen: Float64Array, t: WireTables, out: Outgoing, table: number, row: number): void {
  const flags = startBlock(buf, pos)
  // The smallest wall (and largest wall and counter) kept in locals (a double passed to a call that is not inlined
  // is boxed).
  let minWall = t.minWall
  let maxWall = t.maxWall
  let maxCounter = t.maxCounter
  const counterBits = t.counterBits
  const peerAt = t.peerAt
  let fp = -1
  let fw = 0
  let fc = 0
  if (flags & 1) {
    readStamp(buf)
    const w = seen[2 * stampPeer]!
    if (!(w >= 0) || stampWC[0]! > w || (stampWC[0]! === w && stampWC[1]! > seen[2 * stampPeer + 1]!)) {
      fp = stampPeer
      fw = stampWC[0]!
      fc = stampWC[1]!
      if (peerAt[fp] === -1) peerAt[fp] = t.peers.push(fp) - 1
      if (fw < minWall) minWall = fw
      if (fw > maxWall) maxWall = fw
      if (fc > maxCounter) maxCounter = fc
      noteCounter(counterBits, fc)
    }
  }
  const n = readUint(buf)
  const first = out.m
  for (let k = 0; k < n; k++) {
    const name = readUint(buf)
    const vs = at
    at = valueEnd(buf, at)
    const ve = at
    readStamp(buf)
    const w = seen[2 * stampPeer]!
    if (w >= 0 && (stampWC[0]! < w || (stampWC[0]! === w && stampWC[1]! <= seen[2 * stampPeer + 1]!))) continue
    const wall = stampWC[0]!
    const counter = stampWC[1]!
    if (peerAt[stampPeer] === -1) peerAt[stampPeer] = t.peers.push(stampPeer) - 1
    if (wall < minWall) minWall = wall
    if (wall > maxWall) maxWall = wall
    if (counter > maxCounter) maxCounter = counter
    noteCounter(counterBits, counter)
    t.name(name)
    let m = out.m
    if (m === out.names.length) out.growRegisters()
    out.names[m] = name
    out.peers[m] = stampPeer
    out.vs[m] = vs
    out.ve[m] = ve
    out.walls[m] = wall
    out.counters[m] = counter
    out.m = ++m
    out.valueBytes += ve - vs
  }
  t.minWall = minWall
  t.maxWall = maxWall
  t.maxCounter = maxCounter
  if (fp < 0 && out.m === first) return
  const i = out.n
  if (i === out.tables.length) out.growRecords()
  out.tables[i] = table
  out.rows[i] = row
  out.floorPeers[i] = fp
  out.floorWalls[i] = fw
  out.floorCounters[i] = fc
  out.deleted[i] = flags === 3 ? 1 : 0
  out.firsts[i] = first
  out.counts[i] = out.m - first
  out.n = i + 1
}

/** How a delta being written spells its record stamps (see delta.ts; a DeltaWriter is one). */
export interface WireStamps {
  readonly wallBase: number
  /** The counter radix M: 0 for two varints per stamp. */
  readonly radix: number
  readonly peerCount: number
}

/**
 * Writes the block at `pos` as the rest of a delta record after its id (flags, floor, fields: see delta.ts), with
 * names and peers numbered by `t` and timestamps as `d` spells them; values are copied as they are.
 */
export function blockToWire(buf: Uint8Array, pos: number, w: Writer, t: { readonly peerAt: ArrayLike<number>; readonly nameAt: ArrayLike<number> }, d: WireStamps): void {
  // Written straight into the writer's buffer, with room made once per field: this runs once per record of a
  // full-state encode or a full sync.
  const { peerAt, nameAt } = t
  const flags = startBlock(buf, pos)
  w.ensure(2 * MAX_VARINT + 1 + MAX_VARINT)
  let out = w.buffer
  let o = w.pos
  out[o++] = flags
  // The last stamp written is out[ps, pe): a stamp the same as the previous one (all of a put's) is copied.
  let ps = 0
  let pe = 0
  if (flags & 1) {
    readStamp(buf)
    ps = o
    o = pe = putWireStamp(out, o, stampWC, peerAt[stampPeer]!, d)
  }
  const n = readUint(buf)
  o = putUint(out, o, n)
  for (let k = 0; k < n; k++) {
    const name = nameAt[readUint(buf)]!
    const start = at
    at = valueEnd(buf, at)
    const len = at - start
    w.pos = o
    w.ensure(len + 3 * MAX_VARINT)
    out = w.buffer
    o = putUint(out, o, name)
    if (len < 32) for (let i = 0; i < len; i++) out[o + i] = buf[start + i]!
    else out.set(buf.subarray(start, at), o)
    o += len
    if (readStamp(buf) || pe === ps) {
      ps = o
      o = pe = putWireStamp(out, o, stampWC, peerAt[stampPeer]!, d)
    } else for (let i = ps; i < pe; i++) out[o++] = out[i]!
  }
  w.pos = o
}

/**
 * Writes a record stamp — `wc` holds its wall and counter (a typed array: doubles passed to a call are boxed), `peer`
 * is its index in the delta's table — at `out[o]` as `d` spells it; returns where it ends. The caller has made room
 * for two varints.
 */
export function putWireStamp(out: Uint8Array, o: number, wc: Float64Array, peer: number, d: WireStamps): number {
  const m = d.radix
  const offset = wc[0]! - d.wallBase
  if (m > 0) return putUint(out, o, oneVarintStamp(offset, wc[1]!, peer, m, d.peerCount))
  o = putUint(out, o, offset)
  return putUint(out, o, wc[1]! * d.peerCount + peer)
}

/** The most bytes a varint of a safe integer takes. */
export const MAX_VARINT = 8

/** What {@link wireToBlock} found: the record needs the general merge, or these bits. */
export const NEEDS_MERGE = -1
export const WIRE_VISIBLE = 1
export const WIRE_FLOOR = 2
export const WIRE_EMPTY = 4
export const WIRE_TOMBSTONE = 8 // a delete floor or a removed field

const seenNames: number[] = []

/**
 * Reads the rest of a delta record after its id (flags, floor, fields) from `r`, with the checks of `readDelta`, and
 * writes it to `w` (from `w.pos` on: {@link Table.openArena}) as the block a record the store did not hold becomes
 * when it is merged — unless merging is more
 * than copying: a field named twice, a field its own floor erases, or many fields (then {@link NEEDS_MERGE}, and the
 * caller rewinds `r`). `peerMap`/`nameMap` map delta indexes to store indexes; `cmpPeers` orders two store peers.
 */
export function wireToBlock(
  r: Reader,
  w: Writer,
  baseWall: number,
  radix: number,
  nPeers: number,
  peerMap: readonly number[],
  nameMap: readonly number[],
  cmpPeers: (a: number, b: number) => number,
): number {
  const flags = r.u8()
  if (flags > 3 || flags === 2) throw new DecodeError(`bad record flags ${flags} at byte ${r.pos - 1}`)
  lastWC[0] = 0
  lastWC[1] = -1
  lastPeer = -1
  w.u8(flags)
  let fw = 0
  let fc = 0
  let fp = -1
  const deleted = flags === 3
  if (flags & 1) {
    readWireStamp(r, baseWall, nPeers, radix)
    fw = wireStamp.wall
    fc = wireStamp.counter
    fp = peerMap[wireStamp.peer]!
    writeStamp(w, fw, fc, fp)
  }
  const n = r.count(3)
  if (n > 32) return NEEDS_MERGE
  w.uint(n)
  let visible = fp >= 0 && !deleted
  let tombstone = fp >= 0 && deleted
  for (let k = 0; k < n; k++) {
    const name = nameMap[r.uint()]
    if (name === undefined) throw new DecodeError(`field-name index out of range at byte ${r.pos}`)
    for (let j = 0; j < k; j++) if (seenNames[j] === name) return NEEDS_MERGE
    seenNames[k] = name
    w.uint(name)
    const vs = w.pos
    copyCanonicalValue(r, w)
    readWireStamp(r, baseWall, nPeers, radix)
    const { wall, counter } = wireStamp
    const peer = peerMap[wireStamp.peer]!
    if (fp >= 0) {
      const c = wall !== fw ? wall - fw : counter !== fc ? counter - fc : cmpPeers(peer, fp)
      if (c < 0 || (c === 0 && deleted)) return NEEDS_MERGE
    }
    if (w.buffer[vs] !== ABSENT_TAG) visible = true
    else tombstone = true
    writeStamp(w, wall, counter, peer)
  }
  return (visible ? WIRE_VISIBLE : 0) | (fp >= 0 ? WIRE_FLOOR : 0) | (fp < 0 && n === 0 ? WIRE_EMPTY : 0) | (tombstone ? WIRE_TOMBSTONE : 0)
}

/**
 * Reads the rest of a delta record after its id (flags, floor, fields) from `r` into `out`, with the checks of
 * `readDelta`: values are checked and copied in canonical form to `vw` (from its start), and `out`'s fields point
 * into its buffer. `peerMap`/`nameMap` map delta indexes to store indexes.
 */
export function wireToRegs(r: Reader, out: Regs, vw: Writer, baseWall: number, radix: number, nPeers: number, peerMap: readonly number[], nameMap: readonly number[]): void {
  const flags = r.u8()
  if (flags > 3 || flags === 2) throw new DecodeError(`bad record flags ${flags} at byte ${r.pos - 1}`)
  out.clear()
  if (flags & 1) {
    readWireStamp(r, baseWall, nPeers, radix)
    out.floorPeer = peerMap[wireStamp.peer]!
    out.floorWall = wireStamp.wall
    out.floorCounter = wireStamp.counter
    out.deleted = flags === 3
  }
  const n = r.count(3)
  vw.pos = 0
  for (let k = 0; k < n; k++) {
    const name = nameMap[r.uint()]
    if (name === undefined) throw new DecodeError(`field-name index out of range at byte ${r.pos}`)
    const vs = vw.pos
    copyCanonicalValue(r, vw)
    readWireStamp(r, baseWall, nPeers, radix)
    out.set(k, name, wireStamp.wall, wireStamp.counter, peerMap[wireStamp.peer]!, NO_BYTES, vs, vw.pos)
  }
  // The buffer once every value is in it (it may have moved while growing).
  const buf = vw.buffer
  const srcs = out.srcs
  for (let k = 0; k < n; k++) srcs[k] = buf
  out.n = n
}


/** Hash of id bytes (FNV-1a). */
export function hashBytes(buf: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5
  for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i]!, 0x01000193)
  return h | 0
}

/**
 * A record id as WTF-8 bytes, for lookups by string: `[idStart, idScratch.pos)` of `idScratch.buffer`, with its hash.
 * The last id encoded is remembered: a write looks its record up, then adds it when new, and encodes the id once.
 */
const idScratch = new Writer(64)
let idStart = 0
let idHash = 0
let idLast: string | undefined

function encodeId(id: string): void {
  if (id === idLast) return
  idLast = undefined // stays unset if encoding throws
  idScratch.pos = 0
  idScratch.string(id)
  const buf = idScratch.buffer
  let p = 0
  while (buf[p++]! >= 0x80);
  idStart = p
  idHash = hashBytes(buf, idStart, idScratch.pos)
  idLast = id
}

const VISIBLE = 1
const ALIVE = 2
/** A transient mark (see {@link Table.mark}); never set when the table is written to. */
const MARKED = 4

/**
 * The records of one collection. Each record is a row: its id (WTF-8 bytes in an id arena, found through an
 * open-addressing hash index) and its block (in the block arena). Rows are numbered in order of creation and never
 * reused, so listing rows in order lists records in the order they were created (a record deleted and created again
 * comes last); rows of removed records are reclaimed by renumbering once they are half of all rows, which bumps
 * {@link generation}.
 */
export class Table {
  /** The block arena; a row's block is `buf[off[row], off[row] + len[row])`. */
  buf = new Uint8Array(1024)
  private off = new Uint32Array(64)
  private len = new Uint32Array(64)
  /** VISIBLE | ALIVE bits per row. */
  private flags = new Uint8Array(64)
  /** End of the block arena's used part, and the bytes of it rows hold (the rest is garbage). */
  private end = 0
  private live = 0
  /** Ids: `ids[idOff[row], idOff[row] + idLen[row])`, and each id's hash. */
  private ids = new Uint8Array(1024)
  private idEnd = 0
  private idOff = new Uint32Array(64)
  private idLen = new Uint32Array(64)
  private hash = new Int32Array(64)
  /**
   * Open addressing, two numbers per slot: row + 1 (0 for empty) and the row's id hash, side by side so that a probe
   * reads one cache line, not also the row's hash (a million ids make both arrays far larger than the caches). A
   * removed row's slot stays (lookups skip it).
   */
  private slots = new Int32Array(2 * 128)
  /** Rows used (alive or not), and alive. */
  private next = 0
  private alive = 0
  /** Bumped whenever rows are renumbered. */
  generation = 0
  /**
   * False when no block holds a tombstone (a delete floor or a removed field), so tombstone collection can pass the
   * table by. Set by every write that may store one and by a load's block check that finds one; cleared only by a
   * scan that found none left.
   */
  tombstones = false

  constructor(
    /** The collection's name. */
    readonly name: string,
  ) {}

  /** Number of records. */
  get size(): number {
    return this.alive
  }

  /** Rows are `0 … rowLimit − 1`; skip those not {@link has}. */
  get rowLimit(): number {
    return this.next
  }

  /** True when `row` holds a record. */
  has(row: number): boolean {
    return (this.flags[row]! & ALIVE) !== 0
  }

  /** True when the row's record is visible. */
  visible(row: number): boolean {
    return (this.flags[row]! & VISIBLE) !== 0
  }

  /**
   * Marks a row, for a reader that must take each record once (RecordStore.encodeChangesOf); it unmarks every row it
   * marked before anything else touches the table.
   */
  mark(row: number): void {
    this.flags[row]! |= MARKED
  }

  /** True when the row is marked. */
  marked(row: number): boolean {
    return (this.flags[row]! & MARKED) !== 0
  }

  unmark(row: number): void {
    this.flags[row]! &= ~MARKED
  }

  /** The row of record `id`, or −1. */
  find(id: string): number {
    encodeId(id)
    return this.findBytes(idScratch.buffer, idStart, idScratch.pos, idHash)
  }

  /** The row of the record whose id is the bytes `src[start, end)` (hash `h`), or −1. */
  findBytes(src: Uint8Array, start: number, end: number, h: number): number {
    const slots = this.slots
    const mask = (slots.length >> 1) - 1
    const n = end - start
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const v = slots[2 * i]!
      if (v === 0) return -1
      if (slots[2 * i + 1] !== h) continue
      const row = v - 1
      if (this.idLen[row] !== n || (this.flags[row]! & ALIVE) === 0) continue
      const ids = this.ids
      const o = this.idOff[row]!
      let k = 0
      while (k < n && ids[o + k] === src[start + k]) k++
      if (k === n) return row
    }
  }

  /** The id of a row. */
  id(row: number): string {
    const o = this.idOff[row]!
    return decodeStringAt(this.ids, o, o + this.idLen[row]!)
  }

  /** The arena of id bytes: a row's id is `idArena[idStart(row), idStop(row))` (valid until the next write). */
  get idArena(): Uint8Array {
    return this.ids
  }

  idStart(row: number): number {
    return this.idOff[row]!
  }

  idStop(row: number): number {
    return this.idOff[row]! + this.idLen[row]!
  }

  /** Writes a row's id bytes to `w` (no length). */
  idBytes(row: number): Uint8Array {
    const o = this.idOff[row]!
    return this.ids.subarray(o, o + this.idLen[row]!)
  }

  /** A new, empty row for `id` (which must have none). */
  add(id: string): number {
    encodeId(id)
    return this.addBytes(idScratch.buffer, idStart, idScratch.pos, idHash)
  }

  /** {@link add} with the id as the bytes `src[start, end)` and their hash `h`. */
  addBytes(src: Uint8Array, start: number, end: number, h: number): number {
    if (this.next === this.off.length) this.growRows()
    if (this.next + 1 > this.slots.length >> 2) this.rehash(this.slots.length)
    const row = this.next++
    this.alive++
    const n = end - start
    if (this.idEnd + n > this.ids.length) this.ids = grown(this.ids, Math.max(this.ids.length * 2, this.idEnd + n))
    const ids = this.ids
    for (let k = 0; k < n; k++) ids[this.idEnd + k] = src[start + k]!
    this.idOff[row] = this.idEnd
    this.idLen[row] = n
    this.idEnd += n
    this.hash[row] = h
    this.off[row] = 0
    this.len[row] = 0
    this.flags[row] = ALIVE
    this.insert(row)
    return row
  }

  private insert(row: number): void {
    const slots = this.slots
    const mask = (slots.length >> 1) - 1
    const h = this.hash[row]!
    let i = h & mask
    while (slots[2 * i] !== 0) i = (i + 1) & mask
    slots[2 * i] = row + 1
    slots[2 * i + 1] = h
  }

  /** A new index of `slots` slots (a power of two, at least twice the rows) holding every row. */
  private rehash(slots: number): void {
    this.slots = new Int32Array(2 * slots)
    for (let row = 0; row < this.next; row++) if (this.flags[row]! & ALIVE) this.insert(row)
  }

  /** Grows the row arrays to `size` rows (by half by default). */
  private growRows(size = Math.max(64, Math.ceil(this.off.length * 1.5))): void {
    this.off = grown(this.off, size)
    this.len = grown(this.len, size)
    this.flags = grown(this.flags, size)
    this.idOff = grown(this.idOff, size)
    this.idLen = grown(this.idLen, size)
    this.hash = grown(this.hash, size)
  }

  /**
   * Makes room for `rows` more records whose blocks take about `bytes` in all, before a bulk load: the row arrays, the
   * hash index and the block arena are sized once instead of grown (and rehashed, and copied) step by step.
   */
  expect(rows: number, bytes: number): void {
    const want = this.next + rows
    if (want > this.off.length) this.growRows(want)
    let slots = this.slots.length >> 1
    while (want + 1 > slots >> 1) slots *= 2
    if (slots > this.slots.length >> 1) this.rehash(slots)
    if (this.end + bytes > this.buf.length) this.buf = grown(this.buf, this.end + bytes)
  }

  /** Drops a record (its row stays unused until rows are renumbered). */
  remove(row: number): void {
    this.live -= this.len[row]!
    this.len[row] = 0
    this.flags[row] = 0
    this.alive--
  }

  /**
   * Renumbers the rows that hold records (in order) once removed rows are most of them, reclaiming the others' ids;
   * bumps the generation. Not while rows are being iterated.
   */
  tidy(): void {
    if (this.next - this.alive <= 1024 || this.next - this.alive <= this.alive) return
    const ids = new Uint8Array(Math.max(1024, this.idEnd))
    this.idEnd = pack(this.ids, ids, this.idOff, this.idLen, this.flags, this.next)
    this.ids = ids
    let to = 0
    for (let row = 0; row < this.next; row++) {
      if ((this.flags[row]! & ALIVE) === 0) continue
      this.idOff[to] = this.idOff[row]!
      this.idLen[to] = this.idLen[row]!
      this.hash[to] = this.hash[row]!
      this.off[to] = this.off[row]!
      this.len[to] = this.len[row]!
      this.flags[to] = this.flags[row]!
      to++
    }
    this.flags.fill(0, to, this.next)
    this.next = to
    this.rehash(this.slots.length >> 1)
    this.generation++
  }

  /** Where a row's block starts in {@link buf}. */
  offset(row: number): number {
    return this.off[row]!
  }

  /** The length of a row's block. */
  length(row: number): number {
    return this.len[row]!
  }

  /** Parses a row's block into `out`. */
  read(row: number, out: Regs): void {
    parseBlock(this.buf, this.off[row]!, out)
  }

  /** Stores `regs` as the row's block. */
  write(row: number, regs: Regs): void {
    const visible = regs.visible()
    if (!this.tombstones && regs.tombstone()) this.tombstones = true
    // Written at the arena's end (where no block lies, so not over the bytes `regs` may point to), then moved into
    // the row's old place if it fits there.
    this.reserve(blockBound(regs))
    const buf = this.buf
    const start = this.end
    const stop = encodeBlock(regs, buf, start)
    const n = stop - start
    const old = this.len[row]!
    this.flags[row] = visible ? ALIVE | VISIBLE : ALIVE
    if (n <= old) buf.copyWithin(this.off[row]!, start, stop)
    else {
      this.off[row] = start
      this.end = stop
    }
    this.len[row] = n
    this.live += n - old
  }

  /**
   * Points `w` at the arena's free end, so a block is written in place rather than copied there; then
   * {@link closeArena}, whatever was written.
   */
  openArena(w: Writer): void {
    this.reserve(256)
    w.over(this.buf, this.end)
  }

  /**
   * Takes back the arena from `w` (it may have grown) and lets `w` go of it. With `row` ≥ 0 (a row with no block
   * yet), what `w` wrote since {@link openArena} becomes that row's block; otherwise it is left as free room.
   */
  closeArena(w: Writer, row: number, visible: boolean): void {
    this.buf = w.buffer as Uint8Array<ArrayBuffer> // the arena, or the copy it grew into
    if (row >= 0) {
      const n = w.pos - this.end
      this.flags[row] = visible ? ALIVE | VISIBLE : ALIVE
      this.off[row] = this.end
      this.len[row] = n
      this.end = w.pos
      this.live += n
    }
    w.over(NO_BYTES, 0)
  }

  /**
   * Writes the table as it lies in memory, for {@link Table.load}: per row that holds a record, in order, its block's
   * length and its id's length × 2 + 1 when visible; then the ids' bytes and the blocks' bytes, packed in that order.
   * Blocks number peers and field names as the store does: only the store's snapshot (RecordStore.encodeSnapshot)
   * may write it.
   */
  save(w: Writer): void {
    let blockBytes = 0
    let idBytes = 0
    for (let row = 0; row < this.next; row++) {
      if ((this.flags[row]! & ALIVE) === 0) continue
      blockBytes += this.len[row]!
      idBytes += this.idLen[row]!
    }
    w.uint(this.alive)
    w.uint(idBytes)
    w.uint(blockBytes)
    for (let row = 0; row < this.next; row++) {
      if ((this.flags[row]! & ALIVE) === 0) continue
      w.uint(this.len[row]!)
      w.uint(this.idLen[row]! * 2 + (this.flags[row]! & VISIBLE))
    }
    w.ensure(idBytes + blockBytes)
    for (let row = 0; row < this.next; row++) if (this.flags[row]! & ALIVE) w.copy(this.ids, this.idOff[row]!, this.idOff[row]! + this.idLen[row]!)
    for (let row = 0; row < this.next; row++) if (this.flags[row]! & ALIVE) w.copy(this.buf, this.off[row]!, this.off[row]! + this.len[row]!)
  }

  /**
   * A table read back from {@link Table.save}'s bytes: the arenas copied as they are, offsets summed, the hash index
   * built. Checks that the lengths add up, that each id appears once, and every block (see {@link checkBlocks}) with
   * the store's `nPeers` peers and `nNames` field names; throws `DecodeError`.
   */
  static load(name: string, r: Reader, nPeers: number, nNames: number): Table {
    const t = new Table(name)
    const rows = r.count(2)
    const idBytes = r.uint()
    const blockBytes = r.uint()
    const size = Math.max(64, rows)
    const off = new Uint32Array(size)
    const len = new Uint32Array(size)
    const idOff = new Uint32Array(size)
    const idLen = new Uint32Array(size)
    const flags = new Uint8Array(size)
    let end = 0
    let idEnd = 0
    for (let row = 0; row < rows; row++) {
      const n = r.uint()
      const id = r.uint()
      if (n === 0) throw new DecodeError(`table ${name}: row ${row} has an empty block`)
      off[row] = end
      len[row] = n
      idOff[row] = idEnd
      idLen[row] = Math.floor(id / 2)
      flags[row] = id % 2 === 1 ? ALIVE | VISIBLE : ALIVE
      end += n
      idEnd += idLen[row]!
    }
    if (end !== blockBytes || idEnd !== idBytes) throw new DecodeError(`table ${name}: the rows take ${end} + ${idEnd} bytes, not ${blockBytes} + ${idBytes}`)
    if (idBytes + blockBytes > r.remaining) throw new DecodeError(`table ${name}: ${idBytes + blockBytes} bytes announced, ${r.remaining} left`)
    const ids = new Uint8Array(Math.max(1024, idBytes))
    ids.set(r.raw(idBytes))
    const buf = new Uint8Array(Math.max(1024, blockBytes))
    buf.set(r.raw(blockBytes))
    t.buf = buf
    t.off = off
    t.len = len
    t.flags = flags
    t.end = end
    t.live = end
    t.ids = ids
    t.idEnd = idEnd
    t.idOff = idOff
    t.idLen = idLen
    t.next = rows
    t.alive = rows
    let slots = 128
    while (rows + 1 > slots >> 1) slots *= 2
    t.slots = new Int32Array(2 * slots)
    const index = t.slots
    const mask = slots - 1
    const hash = (t.hash = new Int32Array(size))
    for (let row = 0; row < rows; row++) {
      const start = idOff[row]!
      const n = idLen[row]!
      const h = (hash[row] = hashBytes(ids, start, start + n))
      // Probed as Table.insert does, comparing ids with the same hash on the way.
      let i = h & mask
      for (let v = index[2 * i]!; v !== 0; i = (i + 1) & mask, v = index[2 * i]!) {
        if (index[2 * i + 1] !== h || idLen[v - 1] !== n) continue
        const o = idOff[v - 1]!
        let k = 0
        while (k < n && ids[o + k] === ids[start + k]) k++
        if (k === n) throw new DecodeError(`table ${name}: row ${row} repeats the id of row ${v - 1}`)
      }
      index[2 * i] = row + 1
      index[2 * i + 1] = h
    }
    t.checkBlocks(nPeers, nNames)
    return t
  }

  /**
   * Reads every block through, with bounds checks (flags, counts, peer and name indexes below `nPeers`/`nNames`,
   * value shapes), and each exactly to its end: bytes that passed a storage checksum may still hold what no writer
   * should have written, and nothing that reads a table checks its blocks again. Notes on the way whether any block
   * holds a tombstone.
   */
  private checkBlocks(nPeers: number, nNames: number): void {
    const buf = this.buf
    let tombstones = false
    for (let row = 0; row < this.next; row++) {
      const end = this.off[row]! + this.len[row]!
      const got = checkBlock(buf, this.off[row]!, end, nPeers, nNames)
      if (got === BAD_BLOCK) throw new DecodeError(`table ${this.name}: row ${row} holds a malformed block`)
      if (got === TOMBSTONE_BLOCK) tombstones = true
    }
    this.tombstones = tombstones
  }

  /** Bytes the table's arenas take. */
  get capacity(): number {
    return this.buf.length + this.ids.length
  }

  /** Gives back the block arena's spare room beyond an eighth (after a load, which grows it by doubling). */
  trim(): void {
    const want = this.end + (this.end >> 3) + 1024
    if (this.buf.length > want + (want >> 2)) this.buf = this.buf.slice(0, want)
    const ids = this.idEnd + (this.idEnd >> 3) + 1024
    if (this.ids.length > ids + (ids >> 2)) this.ids = this.ids.slice(0, ids)
  }

  /** Makes room for `n` bytes at the end: compacts when garbage is most of the arena, else grows it. */
  private reserve(n: number): void {
    if (this.end + n <= this.buf.length) return
    const garbage = this.end - this.live
    const compact = garbage > this.live
    const next = new Uint8Array(compact ? Math.max(1024, Math.ceil((this.live + n) * 1.5)) : Math.max(this.buf.length * 2, this.end + n))
    // Compaction: the live blocks, in row order, packed at the start of a new arena.
    if (compact) this.end = pack(this.buf, next, this.off, this.len, this.flags, this.next)
    else next.set(this.buf.subarray(0, this.end))
    this.buf = next
  }
}

/** What {@link checkBlock} found: a malformed block, or a well-formed one with or without a tombstone. */
const BAD_BLOCK = -1
const GOOD_BLOCK = 0
const TOMBSTONE_BLOCK = 1

/**
 * Whether `buf[start, end)` is one well-formed block ({@link BAD_BLOCK} when not): flags, then stamps, counts and values
 * that stay inside it and end exactly at `end`, peer indexes below `nPeers`, name indexes below `nNames`, a first
 * stamp that is not "the same as the previous one"; and whether it holds a delete floor or a removed field. The cursor
 * is {@link at}, as for the other block readers.
 */
function checkBlock(buf: Uint8Array, start: number, end: number, nPeers: number, nNames: number): number {
  const flags = buf[start]!
  if (start >= end || flags > 3 || flags === 2) return BAD_BLOCK
  at = start + 1
  let first = true
  if (flags & 1) {
    if (!checkStamp(buf, end, nPeers, true)) return BAD_BLOCK
    first = false
  }
  let tombstone = flags === 3
  const n = checkedUint(buf, end)
  for (let k = 0; k < n; k++) {
    const name = checkedUint(buf, end)
    if (name < 0 || name >= nNames) return BAD_BLOCK
    const vs = at
    at = checkedValueEnd(buf, at, end)
    if (at < 0 || !checkStamp(buf, end, nPeers, first)) return BAD_BLOCK
    if (buf[vs] === ABSENT_TAG) tombstone = true
    first = false
  }
  if (n < 0 || at !== end) return BAD_BLOCK
  return tombstone ? TOMBSTONE_BLOCK : GOOD_BLOCK
}

/** A varint of at most {@link MAX_VARINT} bytes at {@link at}, read no further than `end`; −1 when it is not there. */
function checkedUint(buf: Uint8Array, end: number): number {
  let v = 0
  let scale = 1
  for (let i = 0; i < MAX_VARINT; i++) {
    if (at >= end) return -1
    const b = buf[at++]!
    v += (b & 0x7f) * scale
    if (b < 0x80) return v
    scale *= 0x80
  }
  return -1
}

/** A block stamp at {@link at}, read with {@link checkedUint}: false when it is malformed. */
function checkStamp(buf: Uint8Array, end: number, nPeers: number, first: boolean): boolean {
  const x = checkedUint(buf, end)
  if (x < 0 || x > nPeers || (x === 0 && first)) return false
  return x === 0 || (checkedUint(buf, end) >= 0 && checkedUint(buf, end) >= 0)
}

/** A copy of `a`, `size` long (zero-filled past `a`'s length). */
export function grown<T extends Float64Array | Uint32Array | Int32Array | Uint8Array>(a: T, size: number): T {
  const b = new (a.constructor as new (n: number) => T)(size)
  b.set(a.length <= size ? a : (a.subarray(0, size) as T))
  return b
}

/**
 * Copies each alive row's bytes `src[off[row], off[row] + len[row])` to `dst`, packed in row order, and points `off`
 * at the copies; returns where they end.
 */
function pack(src: Uint8Array, dst: Uint8Array, off: Uint32Array, len: Uint32Array, flags: Uint8Array, rows: number): number {
  let pos = 0
  for (let row = 0; row < rows; row++) {
    if ((flags[row]! & ALIVE) === 0) continue
    const n = len[row]!
    const o = off[row]!
    // Blocks are small: a loop, not a view per block.
    for (let i = 0; i < n; i++) dst[pos + i] = src[o + i]!
    off[row] = pos
    pos += n
  }
  return pos
}
