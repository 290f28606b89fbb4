import type { ImageBlockParam, TextBlockParam } from '@anthropic-ai/sdk/resources/messages'
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../../lib/json-depth.js'
import { parseRetryAfter } from '../../lib/retry.js'
import { cutText, wellFormed } from '../../lib/text.js'
import { capContent, errorOutcome, failedWithoutMessage, isEmptyContent, type ToolOutcome, type ToolResultContent } from '../tool-result.js'

export interface ResultLimits {
  /** Text sent to the model from one result is cut at this many characters. */
  readonly maxResultChars: number
  /**
   * Takes the secrets out of an error answer's text, before its preview is cut (so that no secret
   * is left half in it): the tool may echo what it was sent.
   */
  readonly redact?: (text: string) => string
}

const BODY_PREVIEW_CHARS = 500
const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp'])
const RETRYABLE_STATUSES = new Set([408, 429, 502, 503, 504])

/**
 * Turns a tool's HTTP answer into the result the model sees (SPEC §6): a 2xx JSON object with
 * `content` (and maybe `is_error`) as is; other 2xx JSON as its JSON text; `text/*` as text; an
 * image as an image block; an empty 2xx as an empty result; anything else as an `is_error`
 * result that names the tool and what went wrong.
 */
export function outcomeFromResponse (tool: string, status: number, headers: Record<string, string | string[] | undefined>, body: Buffer, limits: ResultLimits): ToolOutcome {
  const contentType = headerValue(headers['content-type']).split(';')[0]!.trim().toLowerCase()
  if (status >= 300 && status < 400) {
    const location = headerValue(headers.location)
    return errorOutcome('error', `HTTP ${status} from ${tool}: redirects are not followed${location !== '' ? ` (Location: ${location.slice(0, 200)})` : ''}; register the final URL instead`, { status })
  }
  if (status < 200 || status >= 300) {
    const text = body.toString('utf8')
    const preview = wellFormed(cutText(collapse(limits.redact?.(text) ?? text), BODY_PREVIEW_CHARS))
    return errorOutcome('error', `HTTP ${status} from ${tool}${preview !== '' ? `: ${preview}` : ''}`, {
      status,
      retry: RETRYABLE_STATUSES.has(status) ? 'idempotent-only' : 'no',
      retryAfterMs: parseRetryAfter(headerValue(headers['retry-after']))
    })
  }
  if (body.length === 0) return ok('', status, false)
  if (contentType === 'application/json' || contentType.endsWith('+json')) {
    let parsed: unknown
    try {
      parsed = JSON.parse(body.toString('utf8'))
    } catch (err) {
      return errorOutcome('error', `${tool} answered invalid JSON (content-type ${contentType}): ${(err as Error).message}`, { status })
    }
    if (nestsDeeperThan(parsed, MAX_JSON_DEPTH)) {
      return errorOutcome('error', `${tool} answered JSON nested more than ${MAX_JSON_DEPTH} levels deep, which cannot be given to the model: answer a flatter document`, { status })
    }
    const own = ownResult(parsed)
    if (own !== null) {
      // The API refuses an is_error result that says nothing: say at least which tool failed.
      const content = own.isError && isEmptyContent(own.content) ? failedWithoutMessage(tool) : own.content
      return ok(capContent(content, limits.maxResultChars), status, own.isError)
    }
    return ok(capContent(JSON.stringify(parsed), limits.maxResultChars), status, false)
  }
  if (IMAGE_TYPES.has(contentType)) {
    const mediaType = contentType as 'image/png' | 'image/jpeg' | 'image/gif' | 'image/webp'
    return ok([{ type: 'image', source: { type: 'base64', media_type: mediaType, data: body.toString('base64') } }], status, false)
  }
  if (contentType === '' || contentType.startsWith('text/')) {
    return ok(capContent(body.toString('utf8'), limits.maxResultChars), status, false)
  }
  return errorOutcome('error', `${tool} answered content-type ${wellFormed(contentType)}, which cannot be given to the model: answer JSON, text or an image`, { status })
}

/**
 * A result a tool posts later (SPEC §13) as the model gets it: `{ content, is_error? }` read as a
 * 2xx JSON answer is (same blocks kept, same cut at `maxResultChars`). Null when it is not of that
 * shape (a block of another type, an image without its source...).
 */
export function laterResult (tool: string, value: unknown, maxResultChars: number): { content: ToolResultContent, isError: boolean } | null {
  if (nestsDeeperThan(value, MAX_JSON_DEPTH)) return null
  const own = ownResult(value)
  if (own === null) return null
  const content = own.isError && isEmptyContent(own.content) ? failedWithoutMessage(tool) : own.content
  return { content: capContent(content, maxResultChars), isError: own.isError }
}

/**
 * `{ content, is_error? }` in the shape the model accepts, or null. Each block keeps only what the
 * Messages API takes in a tool result: a text block its text, an image its source. The rest
 * (`cache_control`, whose breakpoints a run would soon have more of than the API's four,
 * `citations`, any unknown field) is dropped, so that no tool's answer makes the model refuse the
 * run's next request.
 */
function ownResult (value: unknown): { content: ToolResultContent, isError: boolean } | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null
  const { content, is_error: isError } = value as { content?: unknown, is_error?: unknown }
  if (isError !== undefined && typeof isError !== 'boolean') return null
  if (typeof content === 'string') return { content, isError: isError === true }
  if (!Array.isArray(content)) return null
  const blocks: Array<TextBlockParam | ImageBlockParam> = []
  for (const block of content) {
    const kept = resultBlock(block)
    if (kept === null) return null
    // The API refuses blank text blocks; an empty list is an empty result.
    if (kept.type !== 'text' || kept.text.trim() !== '') blocks.push(kept)
  }
  return { content: blocks.length === 0 ? '' : blocks, isError: isError === true }
}

/** A tool's block as the model takes it, with only the fields the API accepts; null for any other. */
function resultBlock (block: unknown): TextBlockParam | ImageBlockParam | null {
  if (typeof block !== 'object' || block === null) return null
  const b = block as Record<string, any>
  if (b.type === 'text') return typeof b.text === 'string' ? { type: 'text', text: b.text } : null
  if (b.type !== 'image') return null
  const source = b.source as Record<string, unknown> | undefined
  if (source?.type === 'base64' && typeof source.data === 'string' && source.data !== '' && IMAGE_TYPES.has(source.media_type as string)) {
    return { type: 'image', source: { type: 'base64', media_type: source.media_type as 'image/png', data: source.data } }
  }
  if (source?.type === 'url' && typeof source.url === 'string' && /^https?:\/\//.test(source.url)) {
    return { type: 'image', source: { type: 'url', url: source.url } }
  }
  return null
}

function ok (content: ToolResultContent, status: number, isError: boolean): ToolOutcome {
  return { kind: isError ? 'error' : 'ok', isError, content, status, retry: 'no' }
}

function headerValue (value: string | string[] | undefined): string {
  return Array.isArray(value) ? value[0] ?? '' : value ?? ''
}

function collapse (text: string): string {
  return text.replace(/\s+/g, ' ').trim()
}
