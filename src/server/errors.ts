/**
 * Named errors of the signaling + relay server (`syncmesh/server`), each with a stable `code`. Invalid options of
 * `startServer` throw the library's {@link InvalidArgumentError}.
 */
import { SyncmeshError } from '../../crdt/errors.js'

export { InvalidArgumentError } from '../../crdt/errors.js'

/** An option needs an optional peer dependency that is not installed (`--store` LevelDB or Redis, `--redis`). */
export class MissingDependencyError extends SyncmeshError {
  override readonly code = 'DEPENDENCY_MISSING'
}

/**
 * Why the store refused to take an upload: `STORE_FULL` (the store's total limit), `QUOTA_EXCEEDED` (the room's) or
 * `MALFORMED_UPLOAD` (a compaction past what is stored). The relay answers with the `ERROR` op of the same name.
 */
export class StoreLimitError extends SyncmeshError {
  constructor(
    message: string,
    override readonly code: 'STORE_FULL' | 'QUOTA_EXCEEDED' | 'MALFORMED_UPLOAD',
  ) {
    super(message)
  }
}
