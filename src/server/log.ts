/**
 * The server's log: one line per connection event, `<ISO time> conn=<n> <event> ...`. Topics appear only as
 * {@link topicLabel}s — never topics or peer ids.
 */
import { createHash } from 'node:crypto'

/** Writes one log line (the time is prepended). */
export type ServerLog = (line: string) => void

/** The log `startServer({ log })` asked for: stderr by default, nothing with `false`. A throwing sink is ignored. */
export function serverLog(sink: ((line: string) => void) | false | undefined): ServerLog {
  const write = sink === undefined ? (line: string) => process.stderr.write(`${line}\n`) : sink
  return (line) => {
    if (write === false) return
    try {
      write(`${new Date().toISOString()} ${line}`)
    } catch {
      // A failing log sink must not take the server down.
    }
  }
}

/** Short, non-reversible label of a topic for the log. */
export function topicLabel(topic: string): string {
  return `#${createHash('sha256').update(topic, 'utf8').digest('hex').slice(0, 12)}`
}
