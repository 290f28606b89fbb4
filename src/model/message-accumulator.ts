import type { ContentBlock, Message, RawContentBlockDelta, RawMessageStreamEvent, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../lib/json-depth.js'

/** A `tool_use` block, complete in the stream. `input` is null when its JSON did not parse. */
export interface CompletedToolUse {
  readonly block: ToolUseBlock
  /** The block's position in the message's content. */
  readonly index: number
  /** False when the input's JSON was incomplete or malformed (cut off by max_tokens, say). */
  readonly inputComplete: boolean
}

export interface AccumulatorHandlers {
  /** Text as the model streams it. */
  onText?: (text: string) => void
  /** Called the moment a `tool_use` block is complete, before the message ends. */
  onToolUse?: (toolUse: CompletedToolUse) => void
}

type MutableBlock = ContentBlock & Record<string, unknown>

/**
 * Builds the assistant message from raw stream events, as the API would have answered it
 * without streaming. Unlike the SDK's MessageStream it keeps each tool input's raw JSON and
 * parses it once, at the end of its block: that tells a complete input from one cut off by
 * max_tokens, and costs one parse per block instead of one per delta.
 */
export class MessageAccumulator {
  #message: (Message & { content: MutableBlock[] }) | null = null
  readonly #json = new Map<number, string>()
  readonly #handlers: AccumulatorHandlers
  #stopped = false
  #contentChars = 0

  constructor (handlers: AccumulatorHandlers = {}) {
    this.#handlers = handlers
  }

  /** True once `message_stop` arrived: the message is whole. */
  get complete (): boolean {
    return this.#stopped
  }

  /** The message so far (or whole, once complete). */
  get message (): Message | null {
    return this.#message
  }

  /**
   * How much content the stream has sent so far: the characters of its text, thinking and tool
   * input deltas (and of citations' quoted text, and of text or thinking a block starts with), plus
   * one for every delta and block, kept or skipped. What a model may produce is bounded by
   * max_tokens; the model client holds a stream to that. A server tool's result, given whole when
   * its block starts, is not the model's output and counts one.
   */
  get contentChars (): number {
    return this.#contentChars
  }

  /**
   * Takes one stream event. What the API's contract never sends (a block at an index that is no
   * next position, a tool_use without its id and name, or with an id used before) throws: the
   * stream is broken, and the call is retried. What a later API version may send (unknown block,
   * delta and event types) is kept or skipped; a delta that does not fit its block is skipped.
   */
  push (event: RawMessageStreamEvent): void {
    // Nothing the API sends nests this deep; storing it would overflow the stack.
    if (nestsDeeperThan(event, MAX_JSON_DEPTH)) throw new Error(`a stream event nested more than ${MAX_JSON_DEPTH} levels deep`)
    switch (event.type) {
      case 'message_start': {
        const start = event.message as Partial<Message> | null | undefined
        if (typeof start !== 'object' || start === null) throw new Error('message_start without a message')
        this.#message = { ...start, content: [], usage: numbers(start.usage, {}) } as unknown as Message & { content: MutableBlock[] }
        return
      }
      case 'content_block_start': {
        const message = this.#require()
        const { index, content_block: block } = event
        if (!Number.isInteger(index) || index < 0 || index > message.content.length) throw new Error(`content_block_start at index ${String(index)}, which is not the next block`)
        if (typeof block !== 'object' || block === null || typeof block.type !== 'string') throw new Error('content_block_start without a content block')
        const { text, thinking } = block as unknown as Record<string, unknown>
        this.#contentChars += 1 + lengthOf(text) + lengthOf(thinking)
        if (block.type === 'tool_use') {
          const { id, name } = block as Partial<ToolUseBlock>
          if (typeof id !== 'string' || id === '' || typeof name !== 'string' || name === '') throw new Error('a tool_use block without its id or name')
          if (message.content.some((b, i) => i !== index && b.type === 'tool_use' && b.id === id)) throw new Error(`two tool_use blocks with the id ${id}`)
        }
        message.content[index] = { ...block } as MutableBlock
        if ('input' in block) this.#json.set(index, '')
        else this.#json.delete(index)
        return
      }
      case 'content_block_delta': {
        const block = this.#block(event.index)
        const delta = event.delta as RawContentBlockDelta | null | undefined
        // Counted here, whatever becomes of the delta: a delta skipped was still sent and read.
        this.#contentChars += deltaChars(delta)
        if (block === undefined || typeof delta !== 'object' || delta === null) return
        switch (delta.type) {
          case 'text_delta':
            if (block.type !== 'text' || typeof delta.text !== 'string') return
            block.text = `${(block.text as string | undefined) ?? ''}${delta.text}`
            this.#handlers.onText?.(delta.text)
            return
          case 'input_json_delta':
            if (!this.#json.has(event.index) || typeof delta.partial_json !== 'string') return
            this.#json.set(event.index, this.#json.get(event.index)! + delta.partial_json)
            return
          case 'thinking_delta':
            if (block.type !== 'thinking' || typeof delta.thinking !== 'string') return
            block.thinking = `${(block.thinking as string | undefined) ?? ''}${delta.thinking}`
            return
          case 'signature_delta':
            if (block.type !== 'thinking' || typeof delta.signature !== 'string') return
            block.signature = delta.signature
            return
          case 'citations_delta':
            if (block.type !== 'text') return
            block.citations = [...(block.citations ?? []), delta.citation]
            return
          default: {
            // A compaction's summary (a beta of context management), kept as sent: it goes back unchanged.
            const compaction = delta as { type: string, content?: unknown, encrypted_content?: unknown }
            const target = block as unknown as Record<string, unknown>
            if (compaction.type === 'compaction_delta' && target.type === 'compaction') {
              if (typeof compaction.content === 'string') target.content = `${(target.content as string | null | undefined) ?? ''}${compaction.content}`
              if (typeof compaction.encrypted_content === 'string') target.encrypted_content = compaction.encrypted_content
            }
            // A delta type this version does not know: the block keeps what it had.
            return
          }
        }
      }
      case 'content_block_stop': {
        const block = this.#block(event.index)
        if (block === undefined || !this.#json.has(event.index)) return
        const raw = this.#json.get(event.index)!
        let input: unknown = {}
        let inputComplete = true
        if (raw.trim() !== '') {
          try {
            input = JSON.parse(raw)
          } catch {
            inputComplete = false
          }
        }
        // A tool's input is a JSON object: anything else is as unusable as JSON cut in half.
        if (typeof input !== 'object' || input === null || Array.isArray(input)) inputComplete = false
        else if (nestsDeeperThan(input, MAX_JSON_DEPTH)) throw new Error(`a tool_use input nested more than ${MAX_JSON_DEPTH} levels deep`)
        block.input = inputComplete ? input : {}
        if (block.type === 'tool_use') {
          this.#handlers.onToolUse?.({
            block: { ...(block as ToolUseBlock), input: inputComplete ? input : null },
            index: event.index,
            inputComplete
          })
        }
        return
      }
      case 'message_delta': {
        const message = this.#require() as unknown as Record<string, unknown>
        // stop_reason, stop_sequence, and whatever else the final message carries (stop_details,
        // container), as a non-streamed answer would have them; never what the message is made of.
        for (const [key, value] of Object.entries(event.delta ?? {})) {
          if (KEPT_FIELDS.has(key) || (key === 'container' && value === null)) continue
          message[key] = value
        }
        message.usage = numbers(event.usage, message.usage)
        return
      }
      case 'message_stop':
        this.#require()
        this.#stopped = true
    }
  }

  /** The block at `index`, only if it is a real position of the message. */
  #block (index: unknown): MutableBlock | undefined {
    const content = this.#require().content
    return Number.isInteger(index) && Object.hasOwn(content, index as number) ? content[index as number] : undefined
  }

  #require (): Message & { content: MutableBlock[] } {
    if (this.#message === null) throw new Error('stream event before message_start')
    return this.#message
  }
}

/** What a content_block_delta adds to {@link MessageAccumulator.contentChars}. */
function deltaChars (delta: unknown): number {
  if (typeof delta !== 'object' || delta === null) return 1
  const { text, partial_json: json, thinking, citation } = delta as Record<string, unknown>
  const quoted = typeof citation === 'object' && citation !== null ? (citation as Record<string, unknown>).cited_text : undefined
  return 1 + lengthOf(text) + lengthOf(json) + lengthOf(thinking) + lengthOf(quoted)
}

function lengthOf (value: unknown): number {
  return typeof value === 'string' ? value.length : 0
}

// What a message_delta may not overwrite: the message's identity, content and usage (summed apart).
const KEPT_FIELDS = new Set(['id', 'type', 'role', 'model', 'content', 'usage', '__proto__', 'constructor', 'prototype'])

const TOKEN_COUNTS = new Set(['input_tokens', 'output_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens'])

/**
 * Usage: `add`'s values over `base`'s, null ones aside (they mean "unchanged"). The token counts
 * the run adds up are taken only as whole, non-negative numbers; anything else there is ignored.
 */
function numbers (add: unknown, base: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const source of [base, add]) {
    if (typeof source !== 'object' || source === null) continue
    for (const [key, value] of Object.entries(source)) {
      if (value === null || value === undefined || KEPT_FIELDS.has(key)) continue
      if (TOKEN_COUNTS.has(key) && !(Number.isSafeInteger(value) && (value as number) >= 0)) continue
      out[key] = value
    }
  }
  return out
}
