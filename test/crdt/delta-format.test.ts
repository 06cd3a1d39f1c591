import { describe, expect, it } from 'vitest'
import { type Delta, RecordStore, decodeDelta } from '../../crdt/index.js'
import { newestInDelta } from '../../crdt/delta.js'
import { V1_FIXTURES } from './fixtures/delta-v1.js'

const fromHex = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex, 'hex'))
/** A delta as the fixtures spell it: vectors as their entries in order. */
const plain = (d: Delta): unknown => JSON.parse(JSON.stringify({ from: [...d.from.values()], to: [...d.to.values()], records: d.records }))

describe('delta format version 1 (pinned bytes of the build before format 2)', () => {
  for (const [name, fx] of Object.entries(V1_FIXTURES)) {
    const bytes = fromHex(fx.hex)
    it(`${name}: decodeDelta and newestInDelta read what the old build read`, () => {
      expect(bytes[0]).toBe(1)
      expect(plain(decodeDelta(bytes))).toEqual(fx.decoded)
      expect(newestInDelta(bytes)).toEqual(fx.newest)
    })

    it(`${name}: applyEncoded and decodeState hold what apply of the decoded delta holds`, () => {
      const viaObjects = new RecordStore()
      viaObjects.apply(decodeDelta(bytes))
      const viaBytes = new RecordStore()
      viaBytes.applyEncoded(bytes)
      expect(viaBytes.digest()).toBe(viaObjects.digest())
      expect(viaBytes.versionVector()).toEqual(viaObjects.versionVector())
      expect(plain(viaBytes.changesSince(new Map()))).toEqual(plain(viaObjects.changesSince(new Map())))
      const decoded = RecordStore.decodeState(bytes)
      expect(decoded.digest()).toBe(viaObjects.digest())
      if (fx.digest !== undefined) expect(decoded.digest()).toBe(fx.digest)
      // Re-encoded by this build, it reads back the same.
      expect(plain(decodeDelta(decoded.encodeState()))).toEqual(plain(decodeDelta(viaObjects.encodeState())))
    })
  }

  it('the state fixture re-encoded by this build decodes to the same records and vector', () => {
    const store = RecordStore.decodeState(fromHex(V1_FIXTURES.state.hex))
    expect(plain(decodeDelta(store.encodeState()))).toEqual(V1_FIXTURES.state.decoded)
  })
})
