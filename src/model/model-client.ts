import Anthropic, { APIConnectionError, APIError, APIUserAbortError } from '@anthropic-ai/sdk'
import type { Message, MessageCreateParamsBase, RawMessageStreamEvent } from '@anthropic-ai/sdk/resources/messages'
import { linkedController } from '../lib/abort.js'
import { Redactor } from '../lib/redact.js'
import { retryAfterMs } from '../lib/retry.js'
import { cutText, wellFormed } from '../lib/text.js'
import { messageJson } from './message-json.js'
import { betaHeader } from './betas.js'
import { CONTAINER_EXPIRED, isContainerGone } from './code-execution.js'
import { MessageAccumulator, type AccumulatorHandlers } from './message-accumulator.js'
import { ServerSentEventParser, type ServerSentEvent } from './sse-reader.js'
import { undiciFetch } from './undici-fetch.js'

/** What one model call sends: the Messages API's request, without `stream`. */
export type ModelRequest = MessageCreateParamsBase

/** Why a model call failed, in the engine's terms. */
export class ModelCallError extends Error {
  override name = 'ModelCallError'
  /** Worth another try after a pause: overloaded, rate limited, a 5xx, a broken connection. */
  readonly retryable: boolean
  /** What the API asked us to wait (retry-after-ms or retry-after), if anything. */
  readonly retryAfterMs: number | undefined
  /** The run's error code if this ends the run. */
  readonly code: string
  readonly status: number | undefined

  constructor (message: string, options: { retryable: boolean, code: string, status?: number, retryAfterMs?: number, cause?: unknown }) {
    super(message, { cause: options.cause })
    this.retryable = options.retryable
    this.code = options.code
    this.status = options.status
    this.retryAfterMs = options.retryAfterMs
  }
}

export interface ModelClientOptions {
  readonly apiKey: string | undefined
  readonly baseURL: string | undefined
  /** The longest a stream may send nothing (no event) before it is abandoned (and retried). */
  readonly idleTimeoutMs: number
  /**
   * The configured secrets, taken out of what an error message quotes of the API's (or a
   * gateway's) answers: one that echoes the key it was sent must not put it in a run's error.
   */
  readonly redactor?: Redactor
}

/**
 * The Messages API, through the Anthropic SDK, always streaming. One call is one attempt: the
 * SDK's own retries are off because the engine retries, so that every retry is an event, waits
 * within the run's deadline, and also covers failures in the middle of a stream.
 */
export class ModelClient {
  readonly #client: Anthropic
  readonly #idleTimeoutMs: number
  readonly #redactor: Redactor
  readonly #closeFetch: () => Promise<void>

  constructor (options: ModelClientOptions) {
    this.#idleTimeoutMs = options.idleTimeoutMs
    this.#redactor = options.redactor ?? Redactor.none
    const { fetch, close } = undiciFetch()
    this.#closeFetch = close
    this.#client = new Anthropic({
      fetch,
      // Model calls are traced by Switchboard itself (a GenAI span per attempt, under the step's
      // span): the SDK's own spans would repeat them.
      openTelemetry: false,
      // Without a key the SDK would hunt for credentials in profiles on disk: never do that here.
      apiKey: options.apiKey ?? 'missing-api-key',
      baseURL: options.baseURL ?? null,
      maxRetries: 0,
      // One call's ceiling; the idle timeout above is what catches a stalled stream.
      timeout: 600_000,
      logLevel: 'off'
    })
  }

  /**
   * Streams one model answer. `handlers` see text as it arrives and each `tool_use` block the
   * moment it is complete. Resolves with the whole message; rejects with {@link ModelCallError},
   * or with the signal's reason when aborted.
   */
  async stream (request: ModelRequest, handlers: AccumulatorHandlers, signal: AbortSignal): Promise<Message> {
    // Set when a tool_use block was handed over by the event just read (see the loop below).
    let handedOver = false
    let pausedAt = -Infinity
    const onToolUse = handlers.onToolUse
    const accumulator = new MessageAccumulator(onToolUse === undefined
      ? handlers
      : { ...handlers, onToolUse: (toolUse) => { handedOver = true; onToolUse(toolUse) } })
    // The SDK's timeout stops at the response headers: a stream that goes silent halfway would hang
    // until the run's deadline. A gap of idleTimeoutMs between events abandons the attempt instead.
    const attempt = linkedController(signal)
    let idle = false
    const maxContentChars = streamContentLimit(request)
    // One timer, pushed back on every event (refresh, not a new timer per event: a message of 64
    // tool calls is a few hundred events).
    const timer = setTimeout(() => {
      idle = true
      attempt.controller.abort()
    }, this.#idleTimeoutMs)
    try {
      // Through the SDK's post rather than messages.create: create walks every block of the history
      // (for a telemetry header of SDK helpers, which Switchboard does not use) and serializes it
      // whole, both growing with the run. The body is built here from each message's JSON, made once.
      const response = await this.#client.post('/v1/messages', {
        body: requestBody(request),
        headers: betaHeaders(request),
        stream: true,
        signal: attempt.signal
      }).asResponse()
      timer.refresh()
      // The SDK made the request and turned an error answer into its error; the events are read
      // here rather than through its Stream, which hands them over one promise (two async
      // generators) at a time: a model answer of 8 tool calls is about thirty events, and that
      // machinery cost more CPU than parsing them.
      const decoder = new TextDecoder()
      const parser = new ServerSentEventParser(MAX_STREAM_EVENT_CHARS)
      for await (const chunk of (response.body ?? []) as AsyncIterable<Uint8Array>) {
        for (const sse of parser.push(decoder.decode(chunk, { stream: true }))) {
          const event = streamEvent(sse, response.headers, this.#redactor)
          if (event === undefined) continue
          timer.refresh()
          accumulator.push(event)
          if (accumulator.contentChars > maxContentChars) {
            throw new ModelCallError(`the Messages API stream sent more than ${maxContentChars} characters of content, more than max_tokens ${request.max_tokens} can produce: the stream is broken`, { retryable: true, code: 'MODEL_ERR_UNAVAILABLE' })
          }
          // The events of one network read are all handed over in one go, without a turn of the
          // event loop; but undici writes a request on a reused connection only in the loop's
          // check phase (it first makes sure the idle connection was not closed meanwhile).
          // Without this pause, a message whose 64 tool_use blocks arrive in one read would have
          // its first call sent only once the last block is parsed: eager dispatch in name only.
          // A pause costs a turn of the loop (a poll, on this VM some tens of µs), so blocks
          // parsed within YIELD_EVERY_MS of a pause share the next one.
          if (handedOver && performance.now() - pausedAt >= YIELD_EVERY_MS) {
            handedOver = false
            await new Promise((resolve) => setImmediate(resolve))
            pausedAt = performance.now()
          }
        }
      }
    } catch (err) {
      if (signal.aborted) throw signal.reason
      if (idle) throw this.#idleError()
      throw classify(err, this.#redactor)
    } finally {
      clearTimeout(timer)
      attempt.dispose()
    }
    // A stream cut by the signal may end rather than throw: look at why it ended.
    if (signal.aborted) throw signal.reason
    if (idle) throw this.#idleError()
    if (!accumulator.complete || accumulator.message === null) {
      throw new ModelCallError('the Messages API stream ended before the message was complete', { retryable: true, code: 'MODEL_ERR_UNAVAILABLE' })
    }
    return accumulator.message
  }

  /** Closes the connections to the Messages API; calls still streaming are cut. */
  async close (): Promise<void> {
    await this.#closeFetch()
  }

  #idleError (): ModelCallError {
    return new ModelCallError(`the Messages API sent nothing for ${this.#idleTimeoutMs} ms (MODEL_IDLE_TIMEOUT_MS)`, { retryable: true, code: 'MODEL_ERR_UNAVAILABLE' })
  }
}

/** The headers of a request: its JSON type, and the betas it needs (see betaHeader). */
function betaHeaders (request: ModelRequest): Record<string, string> {
  const beta = betaHeader(request)
  return beta === undefined ? { 'content-type': 'application/json' } : { 'content-type': 'application/json', 'anthropic-beta': beta }
}

/** The request's JSON, `stream: true`, each message's part made once per message (see messageJson). */
export function requestBody (request: ModelRequest): string {
  const { messages, ...rest } = request
  const head = JSON.stringify({ ...rest, stream: true })
  return `${head.slice(0, -1)},"messages":[${messages.map(messageJson).join(',')}]}`
}

/**
 * The most characters one event of a model stream may hold. The largest the API sends is a block
 * given whole in its content_block_start (a server tool's result, say), far below this; a stream
 * that sends more, or a line without end, is broken, and is cut rather than held in memory.
 */
const MAX_STREAM_EVENT_CHARS = 8 * 1024 * 1024

/** How long a stream's events may be handed over without a pause for the calls they started (see stream). */
const YIELD_EVERY_MS = 1

/**
 * Characters of content counted for each token a call may produce. A token is about 4 characters
 * of English text, and even the longest (runs of spaces or punctuation) are far below 64 on
 * average over an answer: 64 is many times what any real answer holds, and a stream past it
 * sends what no model produced.
 */
const CHARS_PER_TOKEN = 64

/**
 * Content counted on top of the tokens: a tool input's JSON and a thinking block are streamed as
 * the model writes them, but small max_tokens values leave little room for the ratio above to even
 * out, and the API may format what it streams. 256 Ki characters is more than any real answer of
 * a few tokens holds, and little to read.
 */
const CONTENT_ALLOWANCE_CHARS = 256 * 1024

/**
 * The most characters of content (text, thinking, tool input deltas; see
 * MessageAccumulator.contentChars) one call's stream may send before it is abandoned as broken
 * (and retried, as other broken streams are): {@link CHARS_PER_TOKEN} for each token the call may
 * produce (max_tokens, and a thinking budget on top of it, which interleaved thinking lets exceed
 * max_tokens), plus {@link CONTENT_ALLOWANCE_CHARS}. Without it, a stream that never ends is read
 * and held until the run's deadline: 92 MB in 20 s for a call of `max_tokens: 100`.
 */
export function streamContentLimit (request: Pick<ModelRequest, 'max_tokens' | 'thinking'>): number {
  const budget = (request.thinking as { budget_tokens?: unknown } | undefined)?.budget_tokens
  const tokens = request.max_tokens + (typeof budget === 'number' && budget > 0 ? budget : 0)
  return tokens * CHARS_PER_TOKEN + CONTENT_ALLOWANCE_CHARS
}

const RETRYABLE_TYPES = new Set(['overloaded_error', 'api_error', 'rate_limit_error', 'timeout_error'])

/**
 * What a server-sent event of a Messages API stream says, as the SDK's own Stream reads it: an
 * event with no name, a `ping` or no data is nothing (undefined), an `error` event is thrown as
 * the failure it names, and any other event is its data's JSON (which the accumulator checks).
 */
function streamEvent (sse: ServerSentEvent, headers: Headers, redactor: Redactor): RawMessageStreamEvent | undefined {
  if (sse.event === null || sse.event === 'ping') return undefined
  if (sse.event === 'error') throw streamError(sse.data, headers, redactor)
  if (sse.data === '') return undefined
  return JSON.parse(sse.data) as RawMessageStreamEvent
}

/** An `error` event in the middle of a stream: retryable when its type says so, or says nothing. */
function streamError (data: string, headers: Headers, redactor: Redactor): ModelCallError {
  let body: { error?: { type?: unknown, message?: unknown } } | undefined
  try {
    body = JSON.parse(data) as typeof body
  } catch {}
  const type = typeof body?.error?.type === 'string' ? body.error.type : undefined
  const detail = preview(redactor.redact(typeof body?.error?.message === 'string' ? body.error.message : data))
  return new ModelCallError(`the Messages API stream failed (${redactor.redact(type ?? 'error')}): ${detail}`, {
    retryable: type === undefined || RETRYABLE_TYPES.has(type), code: 'MODEL_ERR_UNAVAILABLE', retryAfterMs: retryAfterMs(headers)
  })
}

/**
 * Turns whatever the SDK threw into a {@link ModelCallError}. What it quotes of what the other
 * side said is redacted before it is cut, so that no secret is left half in; the error kept as
 * `cause` (the SDK's, with the raw body) is only ever logged, and the log redacts it.
 */
function classify (err: unknown, redactor: Redactor): ModelCallError {
  if (err instanceof ModelCallError) return err
  if (err instanceof APIUserAbortError) {
    return new ModelCallError('the model call was aborted', { retryable: true, code: 'MODEL_ERR_UNAVAILABLE', cause: err })
  }
  if (err instanceof APIConnectionError) {
    // The SDK says "Connection error."; why (refused, reset, an unreadable answer) is its cause.
    const why = err.cause instanceof Error && err.cause.message !== '' ? ` (${err.cause.message})` : ''
    return new ModelCallError(`could not reach the Messages API: ${redactor.redact(`${err.message}${why}`)}`, { retryable: true, code: 'MODEL_ERR_UNAVAILABLE', cause: err })
  }
  if (err instanceof APIError) {
    const body = err.error as { error?: { type?: string, message?: string } } | undefined
    const type = typeof body?.error?.type === 'string' ? redactor.redact(body.error.type) : undefined
    const detail = preview(redactor.redact(typeof body?.error?.message === 'string' ? body.error.message : err.message))
    const status = err.status
    const waitMs = retryAfterMs(err.headers)
    // No status: not an answer of the API's (the stream's error events are read in streamEvent).
    if (status === undefined) return new ModelCallError(`the model call failed: ${detail}`, { retryable: true, code: 'MODEL_ERR_UNAVAILABLE', retryAfterMs: waitMs, cause: err })
    const retryable = status === 408 || status === 409 || status === 429 || status >= 500
    const what = type !== undefined ? `${status} ${type}` : String(status)
    // The run's code execution container is gone (SPEC §16): asking again cannot bring it back.
    if (isContainerGone(status, type, detail)) {
      return new ModelCallError(`the run's code execution container expired or is gone (the Messages API answered ${what}: ${detail}); the code it ran and its state are lost: start the task again in a new run`, { retryable: false, code: CONTAINER_EXPIRED, status, cause: err })
    }
    return new ModelCallError(`the Messages API answered ${what}: ${detail}`, {
      retryable,
      code: retryable ? 'MODEL_ERR_UNAVAILABLE' : status === 401 || status === 403 ? 'MODEL_ERR_AUTHENTICATION' : 'MODEL_ERR_REQUEST_REFUSED',
      status,
      retryAfterMs: waitMs,
      cause: err
    })
  }
  // Anything else (a malformed event, a socket torn mid-stream) is most likely passing.
  return new ModelCallError(`the model call failed: ${preview(redactor.redact(String((err as Error)?.message ?? err)))}`, { retryable: true, code: 'MODEL_ERR_UNAVAILABLE', cause: err })
}

/**
 * The most characters of what the API (or a gateway in front of it) said that an error message
 * quotes: it ends up in the run's error, stored and shown, and an error page or a broken stream
 * can say a great deal.
 */
const MAX_ERROR_DETAIL_CHARS = 500

/** What the API said, cut to {@link MAX_ERROR_DETAIL_CHARS}, with a note when cut. */
function preview (detail: string): string {
  if (detail.length <= MAX_ERROR_DETAIL_CHARS) return detail
  const kept = cutText(detail, MAX_ERROR_DETAIL_CHARS)
  return `${wellFormed(kept)}… [${detail.length - kept.length} more characters]`
}
