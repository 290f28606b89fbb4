import type { ContentBlock, Message, RawMessageStreamEvent, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'

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

  push (event: RawMessageStreamEvent): void {
    switch (event.type) {
      case 'message_start':
        this.#message = { ...event.message, content: [] } as Message & { content: MutableBlock[] }
        return
      case 'content_block_start': {
        const message = this.#require()
        message.content[event.index] = { ...event.content_block } as MutableBlock
        if ('input' in event.content_block) this.#json.set(event.index, '')
        return
      }
      case 'content_block_delta': {
        const block = this.#require().content[event.index]
        if (block === undefined) return
        const delta = event.delta
        switch (delta.type) {
          case 'text_delta':
            block.text = `${(block.text as string | undefined) ?? ''}${delta.text}`
            this.#handlers.onText?.(delta.text)
            return
          case 'input_json_delta':
            this.#json.set(event.index, (this.#json.get(event.index) ?? '') + delta.partial_json)
            return
          case 'thinking_delta':
            block.thinking = `${(block.thinking as string | undefined) ?? ''}${delta.thinking}`
            return
          case 'signature_delta':
            block.signature = delta.signature
            return
          case 'citations_delta':
            block.citations = [...((block.citations as unknown[] | null | undefined) ?? []), delta.citation]
            return
          default:
            // A delta type this version does not know: the block keeps what it had.
            return
        }
      }
      case 'content_block_stop': {
        const block = this.#require().content[event.index]
        if (block === undefined || !this.#json.has(event.index)) return
        const raw = this.#json.get(event.index)!
        let input: unknown = {}
        let inputComplete = true
        if (raw.trim() !== '') {
          try {
            input = JSON.parse(raw)
          } catch {
            inputComplete = false
            input = null
          }
        }
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
        const message = this.#require()
        // stop_reason, stop_sequence, and whatever else the final message carries (stop_details,
        // container), as a non-streamed answer would have them.
        for (const [key, value] of Object.entries(event.delta)) {
          if (key === 'container' && value === null) continue
          ;(message as unknown as Record<string, unknown>)[key] = value
        }
        const usage = event.usage as unknown as Record<string, number | null | undefined>
        const target = message.usage as unknown as Record<string, unknown>
        for (const [key, value] of Object.entries(usage)) {
          if (value !== null && value !== undefined) target[key] = value
        }
        return
      }
      case 'message_stop':
        this.#require()
        this.#stopped = true
    }
  }

  #require (): Message & { content: MutableBlock[] } {
    if (this.#message === null) throw new Error('stream event before message_start')
    return this.#message
  }
}
