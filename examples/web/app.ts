/**
 * A shared todo list in the browser: the syncmesh web example (`npm run web` serves it). Plain TypeScript and DOM,
 * bundled with esbuild. Every todo is a record; the list lives in IndexedDB (it survives reloads and works offline),
 * syncs with the other tabs of this browser over BroadcastChannel at once, and with other browsers over WebRTC, with
 * the relay of the local `syncmesh serve` as fallback. An optional passphrase encrypts the room.
 *
 * The page shows who is connected and through what (`via`), how many writes each peer still lacks (`behind`), the
 * writes not yet durable (`pending`), an offline switch, and conflicts as they happen. The URL fragment carries the
 * room (and passphrase) — fragments never reach a server: `#room=groceries&secret=…`.
 *
 * Every todo also has notes: a collaborative text field (`todos.text(id, 'notes')`, a Y.Text from syncmesh/text)
 * bound to a textarea by {@link bindTextarea}, so two people typing in the same notes merge character by character.
 * Editor bindings (y-codemirror.next, y-quill, y-monaco) bind the same Y.Text the same way.
 *
 * For tests, the page exposes `window.todoApp` (see {@link TodoApp}).
 */
import { createReplica, type ConflictEvent, type Replica, type ReplicaStatus } from 'syncmesh'
import { indexedDBStorage } from 'syncmesh/storage/indexeddb'
import { yjsText } from 'syncmesh/text'
import { relayTransport } from 'syncmesh/transports/relay'
import { webrtcTransport } from 'syncmesh/transports/webrtc'
import type * as Y from 'yjs'

/** One todo. */
export interface Todo {
  id: string
  title?: string
  done?: boolean
}

/** What the page exposes on `window.todoApp` once joined. */
export interface TodoApp {
  readonly replica: Replica<Y.Text>
  add(title: string): Promise<string>
  toggle(id: string): Promise<void>
  rename(id: string, title: string): Promise<void>
  remove(id: string): Promise<void>
  todos(): Todo[]
  /** The todo's notes (its collaborative text field). */
  notes(id: string): string
  conflicts: string[]
}

declare global {
  interface Window {
    /** Set by `npm run web` (examples/web/serve.ts): the local `syncmesh serve`. */
    SYNCMESH_SERVER?: string
    todoApp?: TodoApp
    todoAppError?: string
  }
}

const $ = <T extends HTMLElement>(sel: string): T => document.querySelector<T>(sel)!
const escape = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

function params(): URLSearchParams {
  return new URLSearchParams(location.hash.slice(1))
}

/** Joins the room named in the fragment (asking for one first when there is none). */
async function main(): Promise<void> {
  const p = params()
  const room = p.get('room')
  if (!room) {
    $('#join').hidden = false
    $<HTMLFormElement>('#join').onsubmit = (e) => {
      e.preventDefault()
      const next = new URLSearchParams({ room: $<HTMLInputElement>('#room').value.trim() || 'todos' })
      const secret = $<HTMLInputElement>('#secret').value
      if (secret) next.set('secret', secret)
      location.hash = next.toString()
      location.reload()
    }
    return
  }
  const secret = p.get('secret') ?? undefined
  const server = window.SYNCMESH_SERVER ?? `ws://${location.hostname}:4444`
  const replica = await createReplica({
    room,
    secret,
    storage: indexedDBStorage(`syncmesh-web/${room}`),
    // In order of preference: a direct WebRTC channel once one opens, the relay until then (or when none can).
    transports: [webrtcTransport({ signaling: [server] }), relayTransport({ url: server })],
    antiEntropyMs: 2000,
    text: yjsText(), // collaborative text fields: the notes of each todo
  })
  const todos = replica.collection<Todo>('todos')
  const conflicts: string[] = []
  const errors: string[] = []

  replica.on('conflict', (c: ConflictEvent) => {
    conflicts.unshift(`${new Date().toLocaleTimeString()} “${String(c.loser.value)}” lost to “${String(c.winner.value)}” (${c.field} of ${c.id})`)
    conflicts.length = Math.min(conflicts.length, 20)
    render()
  })
  replica.on('error', (e) => {
    errors.unshift(`${e.name}: ${e.message}`)
    errors.length = Math.min(errors.length, 5)
    render()
  })
  todos.subscribe(() => render())

  const app: TodoApp = {
    replica,
    conflicts,
    async add(title) {
      const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`
      await todos.put({ id, title, done: false })
      return id
    },
    toggle: (id) => todos.update(id, { done: !todos.get(id)?.done }),
    rename: (id, title) => todos.update(id, { title }),
    remove: (id) => todos.delete(id),
    todos: () => todos.all().sort((a, b) => a.id.localeCompare(b.id)),
    notes: (id) => todos.text(id, 'notes').toString(),
  }

  $('#app').hidden = false
  $('#room-name').textContent = room + (secret ? ' 🔒' : '')
  $<HTMLFormElement>('#add').onsubmit = (e) => {
    e.preventDefault()
    const input = $<HTMLInputElement>('#title')
    if (input.value.trim()) void app.add(input.value.trim())
    input.value = ''
  }
  $<HTMLInputElement>('#online').onchange = (e) => void replica.setOnline((e.target as HTMLInputElement).checked)
  $('#list').onclick = (e) => {
    const el = e.target as HTMLElement
    const id = el.closest('li')?.dataset.id
    if (!id) return
    if (el.matches('input[type=checkbox]')) void app.toggle(id)
    if (el.matches('button.remove')) void app.remove(id)
  }
  $('#list').onchange = (e) => {
    const el = e.target as HTMLInputElement
    const id = el.closest('li')?.dataset.id
    if (id && el.matches('input.edit')) void app.rename(id, el.value)
  }

  /** One list item per todo, kept across renders (its notes textarea stays bound, keeps focus and cursor). */
  const items = new Map<string, { li: HTMLLIElement; unbind: () => void }>()

  function render(): void {
    const list = $('#list')
    const shown = app.todos()
    const ids = new Set(shown.map((t) => t.id))
    for (const [id, item] of items) {
      if (ids.has(id)) continue
      item.unbind()
      item.li.remove()
      items.delete(id)
    }
    let cursor = list.firstElementChild
    for (const t of shown) {
      let item = items.get(t.id)
      if (!item) {
        const li = document.createElement('li')
        li.dataset.id = t.id
        li.innerHTML =
          '<div class="row"><input type="checkbox"><input class="edit"><button class="remove" title="delete">✕</button></div>' +
          '<textarea class="notes" rows="1" placeholder="notes (shared, merged as you type)"></textarea>'
        item = { li, unbind: bindTextarea(li.querySelector('textarea')!, todos.text(t.id, 'notes')) }
        items.set(t.id, item)
      }
      const { li } = item
      li.className = t.done ? 'done' : ''
      li.querySelector<HTMLInputElement>('input[type=checkbox]')!.checked = t.done === true
      const title = li.querySelector<HTMLInputElement>('input.edit')!
      if (document.activeElement !== title) title.value = t.title ?? '' // not while the user types in it
      // In order, moving an item only when it is out of place (a move would take the focus from its textarea).
      if (li === cursor) cursor = cursor.nextElementSibling
      else list.insertBefore(li, cursor)
    }
    renderStatus(replica.status())
    $('#conflicts').innerHTML = conflicts.map((c) => `<li>${escape(c)}</li>`).join('') || '<li class="none">none yet</li>'
    $('#errors').innerHTML = errors.map((c) => `<li>${escape(c)}</li>`).join('')
  }

  function renderStatus(s: ReplicaStatus): void {
    const via = ['WebRTC', 'relay']
    $('#me').textContent = `${s.peerId.slice(0, 8)} · ${s.leader ? 'this tab runs the network' : 'another tab runs the network'}`
    $<HTMLInputElement>('#online').checked = s.online
    $('#pending').textContent = String(s.pending)
    $('#peers').innerHTML =
      s.peers.map((p) => `<tr><td>${escape(p.id.slice(0, 8))}</td><td class="via">${via[p.via] ?? '—'}</td><td>${p.behind}</td></tr>`).join('') ||
      `<tr><td colspan="3" class="none">${s.online ? 'nobody else here yet' : 'offline'}</td></tr>`
  }

  replica.on('peer:join', render)
  replica.on('peer:leave', render)
  replica.on('sync', render)
  setInterval(render, 1000) // `behind`, the leader's status and `pending` change without events
  render()
  window.todoApp = app
  document.title = `ready · ${room}`
}

/** Transaction origin of the textarea's own edits (its observer skips them). */
const TEXTAREA = Symbol('textarea')

/**
 * Binds a textarea to a Y.Text both ways: typing becomes the smallest Yjs edit (the changed span between the common
 * prefix and suffix, never splitting a surrogate pair); remote changes rewrite the textarea and move the selection
 * with the text around it. Returns the unbind function.
 */
export function bindTextarea(area: HTMLTextAreaElement, ytext: Y.Text): () => void {
  let last = ytext.toString()
  area.value = last
  const onInput = (): void => {
    const next = area.value
    let start = 0
    while (start < last.length && start < next.length && last[start] === next[start]) start++
    let endLast = last.length
    let endNext = next.length
    while (endLast > start && endNext > start && last[endLast - 1] === next[endNext - 1]) {
      endLast--
      endNext--
    }
    if (start > 0 && isHigh(last.charCodeAt(start - 1))) start-- // keep a surrogate pair whole
    if (endLast < last.length && isLow(last.charCodeAt(endLast))) {
      endLast++
      endNext++
    }
    ytext.doc!.transact(() => {
      if (endLast > start) ytext.delete(start, endLast - start)
      if (endNext > start) ytext.insert(start, next.slice(start, endNext))
    }, TEXTAREA)
    last = next
  }
  const onChange = (event: Y.YTextEvent, tr: Y.Transaction): void => {
    if (tr.origin === TEXTAREA) return
    // Move the selection with the text: an insertion before it shifts it right, a deletion left.
    let [from, to] = [area.selectionStart, area.selectionEnd]
    let at = 0
    for (const op of event.delta) {
      if (op.retain !== undefined) at += op.retain
      else if (typeof op.insert === 'string') {
        if (at <= from) from += op.insert.length
        if (at < to) to += op.insert.length
        at += op.insert.length
      } else if (op.delete !== undefined) {
        if (at < from) from -= Math.min(op.delete, from - at)
        if (at < to) to -= Math.min(op.delete, to - at)
      }
    }
    last = ytext.toString()
    area.value = last
    if (document.activeElement === area) area.setSelectionRange(from, to)
  }
  area.addEventListener('input', onInput)
  ytext.observe(onChange)
  return () => {
    area.removeEventListener('input', onInput)
    ytext.unobserve(onChange)
  }
}

const isHigh = (c: number): boolean => c >= 0xd800 && c <= 0xdbff
const isLow = (c: number): boolean => c >= 0xdc00 && c <= 0xdfff

main().catch((err: unknown) => {
  const e = err instanceof Error ? err : new Error(String(err))
  window.todoAppError = `${e.name}: ${e.message}`
  $('#fatal').hidden = false
  $('#fatal').textContent = `Cannot start: ${e.name}: ${e.message}`
  document.title = 'failed'
})
