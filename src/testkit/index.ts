/**
 * `syncmesh/testkit` — prove that your use of syncmesh converges.
 *
 * - {@link arbitraries}: fast-check generators for values (every awkward corner the codec must carry), operations
 *   (put / update / delete over small pools so that writes collide, and with `text: { fields }` edits of
 *   collaborative text fields) and whole schedules mixing operations with network
 *   events (delivery, drop and duplicate bursts, partitions, cut links, restarts, one amnesiac replica, anti-entropy).
 * - {@link runSchedule}: runs a schedule over N real replicas on a manual, seeded `MemoryNetwork` with an
 *   injected clock — fully deterministic — then drives the system to quiescence.
 * - {@link assertConverged}: compares the replicas' visible states (text fields' content included) and digests; on failure it throws a
 *   {@link ConvergenceError} with a readable per-field diff and the replay line.
 * - {@link runConvergenceProperty}: all of the above as one seeded, replayable property (one line in your tests).
 *
 * ```ts
 * import { runConvergenceProperty } from 'syncmesh/testkit'
 * it('converges', () => runConvergenceProperty({ replicas: { min: 2, max: 5 }, steps: 200, numRuns: 50 }))
 * ```
 */

/** The replica type runs return (re-exported for typing your own checks). */
export type { Replica } from '../replica.js'
/** The value type of fields (re-exported for typing your own arbitraries). */
export type { Value } from '../../crdt/value.js'

// Schedules
/** A put step: replaces a record. */
export type { PutOp } from './schedule.js'
/** An update step: sets some fields of a record. */
export type { UpdateOp } from './schedule.js'
/** A delete step: deletes a record. */
export type { DeleteOp } from './schedule.js'
/** A text step: edits a collaborative text field. */
export type { TextOp } from './schedule.js'
/** A put, update or delete (every op but a text edit). */
export type { RecordOp } from './schedule.js'
/** One local write on one replica. */
export type { Op } from './schedule.js'
/** A network or lifecycle event of a schedule. */
export type { NetworkStep } from './schedule.js'
/** One step of a schedule. */
export type { Step } from './schedule.js'
/** The kinds of step a schedule mixes (keys of the step weights). */
export type { StepKind } from './schedule.js'
/** Which links exist between replicas. */
export type { Topology } from './schedule.js'
/** Baseline fault knobs of a run. */
export type { Faults } from './schedule.js'
/** The faults a run uses unless told otherwise: 10 % drop, 10 % duplication, reordering. */
export { DEFAULT_FAULTS } from './schedule.js'

// Generators
/** fast-check arbitraries of values, operations and schedules. */
export { arbitraries } from './generators.js'
/** Default relative weights of the step kinds of a schedule. */
export { DEFAULT_STEP_WEIGHTS } from './generators.js'
/** Options of `arbitraries.value`. */
export type { ValueOptions } from './values.js'
/** Options of `arbitraries.op`. */
export type { OpOptions } from './generators.js'
/** Options of `arbitraries.schedule`. */
export type { ScheduleOptions } from './generators.js'

// Running a schedule
/** Runs a schedule over N replicas on a deterministic simulated network, then to quiescence. */
export { runSchedule } from './run.js'
/** The system did not become quiescent within the run's bounds. */
export { NotQuiescentError } from './run.js'
/** Options of `runSchedule`. */
export type { RunScheduleOptions } from './run.js'
/** The simulated clock of a run. */
export type { SimClockOptions } from './run.js'
/** What `runSchedule` returns. */
export type { RunResult } from './run.js'
/** An error a replica or the network reported during a run. */
export type { RunError } from './run.js'

// Checking convergence
/** Throws ConvergenceError unless the replicas hold the same visible records and digests. */
export { assertConverged } from './converge.js'
/** Every difference in visible state and digest between replicas (empty when they agree). */
export { compareReplicas } from './converge.js'
/** Replicas that should have converged differ; the message has the diff and the replay line. */
export { ConvergenceError } from './converge.js'
/** Options of `assertConverged`. */
export type { AssertConvergedOptions } from './converge.js'
/** One difference between replicas. */
export type { ConvergenceDifference } from './converge.js'

// Printing
/** Short, exact, readable form of a value. */
export { formatValue } from './print.js'
/** A schedule as TypeScript source, to paste into a test. */
export { formatSchedule } from './print.js'

// The one-line property
/** A seeded, replayable convergence property over generated schedules. */
export { runConvergenceProperty } from './property.js'
/** A convergence property failed; the message starts with the replay line and ends with the minimal schedule. */
export { ConvergencePropertyError } from './property.js'
/** A run reported errors (error events, failed writes) where none were allowed; the cause of a failed property. */
export { RunErrorsError } from './property.js'
/** Options of `runConvergenceProperty`. */
export type { ConvergencePropertyOptions } from './property.js'
/** One generated run of `runConvergenceProperty` (the failing case and its minimal form on the error). */
export type { ConvergenceCase } from './property.js'

// Conformance suites for your own transports and storages
/** The Transport conformance cases: run each against your own transport. */
export { transportConformanceCases } from './transport-suite.js'
/** A transport conformance case failed. */
export { TransportConformanceError } from './transport-suite.js'
/** Builds fresh transports for one transport conformance case. */
export type { TransportHarness } from './transport-suite.js'
/** Options of `transportConformanceCases`. */
export type { TransportConformanceOptions } from './transport-suite.js'
/** One named conformance test (transport or storage). */
export type { ConformanceCase } from './transport-suite.js'
/** The Storage conformance cases: run each against your own storage adapter. */
export { storageConformanceCases } from './storage-suite.js'
/** A storage conformance case failed. */
export { StorageConformanceError } from './storage-suite.js'
/** Builds the storages the storage conformance cases run against. */
export type { StorageHarness } from './storage-suite.js'
/** Options of `storageConformanceCases`. */
export type { StorageConformanceOptions } from './storage-suite.js'
