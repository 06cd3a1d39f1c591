/** Lazy registry of the systems under test: a worker imports only the one library it measures. */
import type { System, SystemFactory, SystemName } from './types.js'

const MODULES: Record<SystemName, () => Promise<{ default: SystemFactory }>> = {
  syncmesh: () => import('./syncmesh.js'),
  yjs: () => import('./yjs.js'),
  automerge: () => import('./automerge.js'),
  floor: () => import('./floor.js'),
}

/** Imports one system's module and builds it for `seed`; rejects if the library (or syncmesh core) cannot load. */
export async function loadSystem(name: SystemName, seed: number): Promise<System> {
  const { default: create } = await MODULES[name]()
  return create(seed)
}
