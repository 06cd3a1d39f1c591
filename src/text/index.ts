/**
 * `syncmesh/text` — collaborative text fields inside records, on Yjs (an optional peer dependency: only apps that
 * import this entry point load yjs). Pass `text: yjsText()` to `createReplica`; then `collection.text(id, field)`
 * returns a `Y.Text` bound to that record's field: edits to it merge character by character on every replica, travel
 * over the same transports and storage as the records, and follow the record's put and delete (see the README,
 * "Text fields"). With `text: yjsRichText()` instead, text fields are `Y.XmlFragment`s, the type ProseMirror and Tiptap
 * edit through y-prosemirror.
 */
import type * as Y from 'yjs'
import { YjsTextState } from './store.js'
import type { TextSupport } from './types.js'

export type { TextDelta, TextDeltaOp, TextSupport, TextState, TextContext, RecordTextChange, TextApplyResult, DecodedText } from './types.js'
export { TEXT_FORMAT_VERSION, encodeTextDelta, decodeTextDelta, type TextRun, type TextDocDelta } from './codec.js'

/** Text support on Yjs for {@link createReplica}: text fields are `Y.Text`s. */
export function yjsText(): TextSupport<Y.Text> {
  return { create: (context) => new YjsTextState<Y.Text>(context, 'text') }
}

/** Rich-text support on Yjs for {@link createReplica}: text fields are `Y.XmlFragment`s (bind them with y-prosemirror). */
export function yjsRichText(): TextSupport<Y.XmlFragment> {
  return { create: (context) => new YjsTextState<Y.XmlFragment>(context, 'xml') }
}
