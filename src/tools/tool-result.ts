import type { ImageBlockParam, TextBlockParam, ToolResultBlockParam } from '@anthropic-ai/sdk/resources/messages'
import { cutText, wellFormed } from '../lib/text.js'

/** What a tool_result carries to the model. */
export type ToolResultContent = string | Array<TextBlockParam | ImageBlockParam>

/**
 * How one attempt of a tool call ended.
 * - `ok` and `error`: the tool answered (an `error` is a non-2xx or an `is_error` result);
 * - `timeout`: no whole answer within the tool's timeout;
 * - `unreachable`: the request could not be sent or its answer not read (refused, reset, DNS, TLS);
 * - `refused`: not sent at all: the egress policy, an unknown tool, an invalid input;
 * - `cancelled`: the run stopped while the call was in flight;
 * - `circuit_open`: not sent: the tool's circuit breaker is open (see tools/health/);
 * - `cached`: not sent: a stored result of a read_only tool for the same input answered it;
 * - `accepted`: the tool answered `202 Accepted`: its result comes later, to its result_url (SPEC §13).
 */
export type OutcomeKind = 'ok' | 'error' | 'timeout' | 'unreachable' | 'refused' | 'cancelled' | 'circuit_open' | 'cached' | 'accepted'

/** Which retries an outcome allows (SPEC §6). */
export type Retryability = 'no' | 'any-tool' | 'idempotent-only'

export interface ToolOutcome {
  readonly kind: OutcomeKind
  readonly isError: boolean
  readonly content: ToolResultContent
  /** The tool's HTTP status, when it answered. */
  readonly status: number | null
  readonly retry: Retryability
  /** What the tool asked us to wait before retrying (Retry-After), if anything. */
  readonly retryAfterMs?: number | undefined
}

/**
 * The tool_result block for a call; `is_error` is only written when true, as the model API shows
 * it. The Messages API refuses an `is_error` result without content, so an error that says
 * nothing says that the tool (`toolName`, when known) failed without a message.
 */
export function toolResult (toolUseId: string, content: ToolResultContent, isError: boolean, toolName?: string): ToolResultBlockParam {
  if (!isError) return { type: 'tool_result', tool_use_id: toolUseId, content }
  return { type: 'tool_result', tool_use_id: toolUseId, content: isEmptyContent(content) ? failedWithoutMessage(toolName) : content, is_error: true }
}

/** Whether content says nothing: no blocks, or a string of nothing but spaces. */
export function isEmptyContent (content: ToolResultContent | undefined): boolean {
  return content === undefined || (typeof content === 'string' ? content.trim() === '' : content.length === 0)
}

/** The content of an error result whose tool said nothing (an is_error result must have some). */
export function failedWithoutMessage (toolName?: string): string {
  return toolName === undefined ? 'The tool failed without a message.' : `Tool ${toolName} failed without a message.`
}

/**
 * An outcome that is an error, with its message as the content. The message may quote what a tool
 * sent (a parser's error message does, cut anywhere): it is made well-formed for the model API.
 */
export function errorOutcome (kind: OutcomeKind, message: string, options: { status?: number | null, retry?: Retryability, retryAfterMs?: number | undefined } = {}): ToolOutcome {
  return { kind, isError: true, content: wellFormed(message), status: options.status ?? null, retry: options.retry ?? 'no', retryAfterMs: options.retryAfterMs }
}

/**
 * Cuts text content at `maxChars` characters, with a note saying how much was left out, so the
 * model knows the result is partial. Images are kept; they count for nothing here.
 */
export function capContent (content: ToolResultContent, maxChars: number): ToolResultContent {
  if (typeof content === 'string') {
    if (content.length <= maxChars) return wellFormed(content)
    const kept = cutText(content, maxChars)
    return wellFormed(kept) + cutNote(content.length - kept.length, maxChars)
  }
  let budget = maxChars
  let leftOut = 0
  const out: Array<TextBlockParam | ImageBlockParam> = []
  for (const block of content) {
    if (block.type !== 'text') {
      out.push(block)
      continue
    }
    if (budget <= 0) {
      leftOut += block.text.length
      continue
    }
    if (block.text.length > budget) {
      // The API refuses a blank text block: a cut that would keep only spaces keeps nothing.
      const kept = cutText(block.text, budget).trimEnd()
      if (kept !== '') out.push({ type: 'text', text: wellFormed(kept) })
      leftOut += block.text.length - kept.length
      budget = 0
      continue
    }
    out.push({ ...block, text: wellFormed(block.text) })
    budget -= block.text.length
  }
  if (leftOut > 0) out.push({ type: 'text', text: cutNote(leftOut, maxChars).trimStart() })
  return out
}

function cutNote (leftOut: number, maxChars: number): string {
  return `\n[${leftOut.toLocaleString('en-US')} more characters left out: a tool result is cut at ${maxChars.toLocaleString('en-US')} characters]`
}
