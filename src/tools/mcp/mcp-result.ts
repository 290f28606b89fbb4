import type { ImageBlockParam, TextBlockParam } from '@anthropic-ai/sdk/resources/messages'
import { OAuthError, SdkError } from '@modelcontextprotocol/client'
import { cutText } from '../../lib/text.js'
import { capContent, errorOutcome, type ToolOutcome } from '../tool-result.js'

/** A tools/call result as the MCP client answers it (the fields read here). */
export interface McpCallResult {
  readonly content?: ReadonlyArray<Record<string, unknown>> | undefined
  readonly structuredContent?: unknown
  readonly isError?: boolean | undefined
}

const IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp'])

/**
 * An MCP tool's result as the model's tool_result (SPEC §11): `isError` is `is_error`; text and
 * image blocks pass through (images of a type the Messages API takes); `structuredContent` without
 * text becomes its JSON text; any other block (audio, resources, links) a short description.
 * Text is cut at `maxResultChars` as a webhook's is.
 */
export function outcomeFromResult (subject: string, result: McpCallResult, maxResultChars: number): ToolOutcome {
  const blocks: Array<TextBlockParam | ImageBlockParam> = []
  for (const block of result.content ?? []) {
    const type = String(block.type)
    if (type === 'text' && typeof block.text === 'string') {
      if (block.text.trim() !== '') blocks.push({ type: 'text', text: block.text })
    } else if (type === 'image' && typeof block.data === 'string' && IMAGE_TYPES.has(String(block.mimeType))) {
      blocks.push({ type: 'image', source: { type: 'base64', media_type: block.mimeType as 'image/png', data: block.data } })
    } else {
      blocks.push({ type: 'text', text: describe(type, block) })
    }
  }
  if (!blocks.some((b) => b.type === 'text') && result.structuredContent !== undefined) {
    blocks.unshift({ type: 'text', text: JSON.stringify(result.structuredContent) ?? 'null' })
  }
  const isError = result.isError === true
  const content = blocks.length === 1 && blocks[0]!.type === 'text' ? blocks[0].text : blocks
  if (isError && blocks.length === 0) return errorOutcome('error', `${subject} failed without a message.`)
  return { kind: isError ? 'error' : 'ok', isError, status: null, retry: 'no', content: capContent(content, maxResultChars) }
}

/** A short description of a block the model is not given as it is. */
function describe (type: string, block: Record<string, unknown>): string {
  const resource = block.resource as Record<string, unknown> | undefined
  const uri = typeof block.uri === 'string' ? block.uri : typeof resource?.uri === 'string' ? resource.uri : undefined
  const mime = typeof block.mimeType === 'string' ? block.mimeType : typeof resource?.mimeType === 'string' ? resource.mimeType : undefined
  const parts = [uri, mime].filter((p) => p !== undefined).map((p) => cutText(p, 200))
  return `[${type} block${parts.length > 0 ? `: ${parts.join(', ')}` : ''}]`
}

// Failures that can only happen before a request is written: safe to retry for every tool.
const BEFORE_SEND = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL', 'UND_ERR_CONNECT_TIMEOUT'])
// HTTP statuses retried for tools that may be called twice (SPEC §6).
const RETRY_STATUSES = new Set([408, 429, 502, 503, 504])

/** What a failed request was, read down its causes (the client's errors wrap the request's own). */
export interface McpFailure {
  /** The network error's code (ECONNREFUSED, UND_ERR_SOCKET...), never one of the MCP client's own. */
  readonly code: string | null
  readonly status: number | null
  readonly rpcCode: number | null
  readonly egress: Error | null
  /** The answer was cut at TOOL_MAX_RESPONSE_BYTES. */
  readonly tooLarge: Error | null
  /** The OAuth error code an authorization server answered (invalid_client, say). */
  readonly oauth: string | null
  readonly message: string
}

/** What a failed tools/call was: its error's code, HTTP status and JSON-RPC code, down its causes. */
export function failureOf (err: unknown): McpFailure {
  let code: string | null = null
  let status: number | null = null
  let rpcCode: number | null = null
  let egress: Error | null = null
  let tooLarge: Error | null = null
  let oauth: string | null = null
  const seen = new Set<unknown>()
  for (let e = err as any; e !== undefined && e !== null && !seen.has(e); e = e.cause) {
    seen.add(e)
    if (e.code === 'ERR_EGRESS_DENIED') egress ??= e as Error
    if (e.code === 'ERR_MCP_RESPONSE_TOO_LARGE') tooLarge ??= e as Error
    if (e instanceof OAuthError) oauth ??= String(e.code)
    // The client's own codes (ERA_NEGOTIATION_FAILED, say) say which step failed, not why: the
    // network's code is further down the causes.
    if (typeof e.code === 'string' && !(e instanceof SdkError) && /^(E[A-Z]|UND_ERR)/.test(e.code)) code ??= e.code
    if (typeof e.code === 'number' && e.name === 'ProtocolError') rpcCode ??= e.code
    const dataStatus = e.data?.status
    if (typeof dataStatus === 'number') status ??= dataStatus
    if (typeof e.status === 'number') status ??= e.status
  }
  const message = err instanceof Error ? err.message : String(err)
  return { code, status, rpcCode, egress, tooLarge, oauth, message }
}

/** A failed tools/call (no result) as the outcome the model sees, naming the server and tool. */
export function outcomeFromFailure (subject: string, err: unknown): ToolOutcome {
  const failure = failureOf(err)
  if (failure.egress !== null) return errorOutcome('refused', `${subject} was not called: ${failure.egress.message}`)
  if (failure.tooLarge !== null) return errorOutcome('error', `${subject} failed: ${failure.tooLarge.message}`)
  if (failure.rpcCode !== null) {
    return errorOutcome('error', `${subject} failed: JSON-RPC error ${failure.rpcCode}: ${cutText(failure.message, 500)}`)
  }
  if (failure.status !== null) {
    return errorOutcome('error', `${subject} failed: the server answered HTTP ${failure.status}`, {
      status: failure.status,
      retry: RETRY_STATUSES.has(failure.status) ? 'idempotent-only' : 'no'
    })
  }
  if (failure.code !== null && BEFORE_SEND.has(failure.code)) {
    const what = failure.code === 'ECONNREFUSED' ? 'connection refused' : `could not connect (${failure.code})`
    return errorOutcome('unreachable', `${subject} could not be reached: ${what}`, { retry: 'any-tool' })
  }
  if (failure.code !== null) {
    return errorOutcome('unreachable', `${subject} failed: the connection was lost before the answer came (${failure.code})`, { retry: 'idempotent-only' })
  }
  return errorOutcome('unreachable', `${subject} failed: ${cutText(failure.message, 500)}`, { retry: 'idempotent-only' })
}
