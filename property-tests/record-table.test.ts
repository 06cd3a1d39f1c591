/**
 * The record table's id index (crdt/record-table.ts) answers like a Map from id to row: through growth (rehashing),
 * removals (whose slots stay until rows are renumbered) and renumbering (`tidy`, once removed rows outnumber the
 * rest). Ids come from a small alphabet so that many share hash buckets and prefixes.
 */
import fc from 'fast-check'
import { describe, expect } from 'vitest'
import { Table } from '../crdt/record-table.js'
import { propTest } from './helpers.js'

type Op = { kind: 'add' | 'remove'; id: string }

const idArb = fc.stringMatching(/^[ab\u00e9\u{1F600}]{1,6}$/u)
const opsArb = fc.array(fc.record({ kind: fc.constantFrom<'add' | 'remove'>('add', 'add', 'remove'), id: idArb }), { maxLength: 400 })

/** Applies `ops` to a table and a model; checks every id after each renumbering and at the end. */
function run(ops: readonly Op[], bulk: number): void {
  const table = new Table('c')
  const model = new Map<string, number>()
  const check = (): void => {
    for (const [id, row] of model) {
      expect(table.find(id)).toBe(row)
      expect(table.id(row)).toBe(id)
    }
    expect(table.size).toBe(model.size)
  }
  // Many rows first (and most of them removed), so that renumbering happens.
  for (let i = 0; i < bulk; i++) model.set(`bulk${i}`, table.add(`bulk${i}`))
  for (let i = 0; i < bulk; i += 4) {
    for (const id of [`bulk${i}`, `bulk${i + 1}`, `bulk${i + 2}`]) {
      const row = model.get(id)
      if (row === undefined) continue
      table.remove(row)
      model.delete(id)
    }
  }
  let generation = table.generation
  table.tidy()
  if (table.generation !== generation) for (const [id] of model) model.set(id, table.find(id))
  check()
  for (const { kind, id } of ops) {
    const row = table.find(id)
    expect(row).toBe(model.get(id) ?? -1)
    if (kind === 'add' && row < 0) model.set(id, table.add(id))
    if (kind === 'remove' && row >= 0) {
      table.remove(row)
      model.delete(id)
      generation = table.generation
      table.tidy()
      if (table.generation !== generation) {
        // Rows were renumbered: the model learns the new rows from ids, which must all still be found.
        for (const [id2] of model) model.set(id2, table.find(id2))
        expect([...model.values()].every((r) => r >= 0)).toBe(true)
      }
    }
  }
  check()
  for (const id of ['nope', 'bulk1', 'a'.repeat(7)]) if (!model.has(id)) expect(table.find(id)).toBe(-1)
}

describe('record table id index', () => {
  propTest('finds every id like a Map would, through growth, removals and renumbering', 300, () =>
    fc.property(opsArb, fc.constantFrom(0, 100, 3000), (ops, bulk) => run(ops, bulk)),
  )
})
