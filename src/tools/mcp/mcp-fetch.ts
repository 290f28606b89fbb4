import { setMaxListeners } from 'node:events'
import { isIP } from 'node:net'
import { Agent, buildConnector, DecoratorHandler, fetch as undiciFetch, type Dispatcher } from 'undici'
import { linkedController } from '../../lib/abort.js'
import { assertAddressAllowed, createGuardedLookup, unbracket, type EgressAllowList, type Resolver } from '../egress-guard.js'

/**
 * The calls in flight, by the `traceparent` header their tools/call request carries (unique to an
 * attempt: its span's id): told when the answer's SSE stream broke or ended. The MCP client would
 * wait for its own timeout then; the call is ended at once instead (a server that died mid-call).
 * A map rather than an AsyncLocalStorage, which on Node 20 turns on promise hooks for the whole
 * process: every promise of every run would pay for them.
 */
export const callStreams = new Map<string, (error: unknown) => void>()

// undici's DecoratorHandler passes every event on, in the handler API of today (it adapts fetch's
// older one); its typings do not list the methods it has.
interface EndEvents {
  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void
  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void
  onResponseEnd (controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void
  onResponseError (controller: Dispatcher.DispatchController, error: Error): void
}
const Decorator = DecoratorHandler as unknown as new (handler: Dispatcher.DispatchHandler) => Dispatcher.DispatchHandler & EndEvents

/**
 * An MCP server's answer (a JSON body, or one event of an SSE stream) was longer than
 * TOOL_MAX_RESPONSE_BYTES: it was cut there, and what was read of it is dropped.
 */
export class McpResponseTooLargeError extends Error {
  readonly code = 'ERR_MCP_RESPONSE_TOO_LARGE'
  readonly limit: number

  constructor (limit: number) {
    super(`the server's answer was longer than ${limit} bytes (TOOL_MAX_RESPONSE_BYTES) and was cut there`)
    this.name = 'McpResponseTooLargeError'
    this.limit = limit
  }
}

/**
 * Passes everything on to `handler`, tells `onEnd` when the answer ended or failed, and cuts a
 * JSON answer, or an event of an SSE stream, at `limit` bytes: a hostile server's endless answer
 * costs that much memory, no more. An SSE stream is bounded by the event, as the client parses it
 * event by event: a stream of notifications may live for days, each event read and let go.
 */
class AnswerEndHandler extends Decorator {
  readonly #onEnd: ((error: unknown) => void) | undefined
  readonly #limit: number
  #sse = false
  /** Bytes of the body, or of the SSE event being read. */
  #size = 0

  constructor (handler: Dispatcher.DispatchHandler, onEnd: ((error: unknown) => void) | undefined, limit: number) {
    super(handler)
    this.#onEnd = onEnd
    this.#limit = limit
  }

  override onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    this.#sse = String(headers['content-type']).startsWith('text/event-stream')
    super.onResponseStart(controller, statusCode, headers, statusMessage)
  }

  override onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    const ended = this.#sse ? afterLastEvent(chunk) : 0
    // The event that ends in this chunk, whole, then the one it starts (or the body so far).
    const tooLarge = this.#size + ended > this.#limit || (ended === 0 ? this.#size + chunk.length : chunk.length - ended) > this.#limit
    this.#size = ended === 0 ? this.#size + chunk.length : chunk.length - ended
    if (tooLarge) {
      controller.abort(new McpResponseTooLargeError(this.#limit))
      return
    }
    super.onResponseData(controller, chunk)
  }

  override onResponseEnd (controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    super.onResponseEnd(controller, trailers)
    this.#onEnd?.(null)
  }

  override onResponseError (controller: Dispatcher.DispatchController, error: Error): void {
    super.onResponseError(controller, error)
    this.#onEnd?.(error)
  }
}

/**
 * How many bytes of `chunk` are events it ends (up to the last blank line: LF LF, or CR LF CR LF),
 * which then no longer count. A blank line split between two chunks is not seen: that event
 * counts on with the next, which errs on the side of the limit.
 */
function afterLastEvent (chunk: Buffer): number {
  const lf = chunk.lastIndexOf('\n\n')
  const crlf = chunk.lastIndexOf('\r\n\r\n')
  return Math.max(lf === -1 ? 0 : lf + 2, crlf === -1 ? 0 : crlf + 4)
}

/** What the MCP client's transport is given as its `fetch`. */
export type McpFetch = (url: string | URL, init?: RequestInit) => Promise<Response>

// How long the TCP (and TLS) connection may take; a call's own timeout bounds the rest.
const CONNECT_TIMEOUT_MS = 10_000
// TOOL_MAX_RESPONSE_BYTES's default, for a fetch made without the service's config.
const DEFAULT_MAX_RESPONSE_BYTES = 1_048_576

/**
 * A fetch for the MCP client over an undici Agent whose every connection is checked against the
 * egress policy on the address actually connected to (SPEC §8), as webhook calls are: a server
 * name that resolves to a loopback or metadata address now is refused whatever it resolved to at
 * registration (DNS rebinding). Redirects are not followed. Every answer (a JSON body, or an SSE
 * stream, counted whole) is cut at `maxResponseBytes` (TOOL_MAX_RESPONSE_BYTES) with a
 * {@link McpResponseTooLargeError}.
 */
export function guardedFetch (egress: EgressAllowList, resolver?: Resolver, maxResponseBytes = DEFAULT_MAX_RESPONSE_BYTES): { fetch: McpFetch, close: () => Promise<void> } {
  const connect = buildConnector({ lookup: createGuardedLookup(egress, resolver), timeout: CONNECT_TIMEOUT_MS })
  const agent = new Agent({
    connect: (options, callback) => {
      // An IP literal never goes through lookup: check it here, before any packet is sent.
      const host = unbracket(options.hostname)
      if (isIP(host) !== 0) {
        try {
          assertAddressAllowed(egress, host, host)
        } catch (err) {
          callback(err as Error, null)
          return
        }
      }
      connect(options, callback)
    },
    keepAliveTimeout: 4_000,
    // A call's deadline aborts its request; a server's SSE stream of notifications stays open for long.
    headersTimeout: 0,
    bodyTimeout: 0
  })
  const sessionSignals = new WeakSet<AbortSignal>()
  const fetch: McpFetch = async (url, init = {}) => {
    // The client hands every request the signal of its whole session, which lives as long as the
    // connection; a fetch leaves a listener on it for good. Each request gets a signal of its own,
    // linked to the session's and unhooked once its answer has been read.
    if (init.signal !== undefined && init.signal !== null && !sessionSignals.has(init.signal)) {
      // One listener per request in flight on the session (64 calls of a step, say): not a leak.
      setMaxListeners(0, init.signal)
      sessionSignals.add(init.signal)
    }
    const link = init.signal === undefined || init.signal === null ? null : linkedController(init.signal)
    // Only the stream answering a call's own tools/call tells the call it ended (a JSON answer is
    // the answer, or an error the client throws). The client builds a Headers of its own for each request.
    const trace = callStreams.size === 0 ? null : (init.headers as Headers | undefined)?.get?.('traceparent')
    const onCall = trace === null || trace === undefined ? undefined : callStreams.get(trace)
    let streamed: boolean | null = null
    let ended: { error: unknown } | null = null
    const onEnd = (error: unknown): void => {
      if (ended !== null) return
      ended = { error }
      link?.dispose()
      if (streamed === true) onCall?.(error)
    }
    try {
      // undici's own fetch, so that its Agent (the guarded connections) is the dispatcher; told when
      // the answer has been read to its end, or failed, by undici's own handler events rather than a
      // web stream wrapped around each answer's body (which costs per chunk).
      const dispatcher = { dispatch: (options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler) => agent.dispatch(options, new AnswerEndHandler(handler, onEnd, maxResponseBytes)) } as unknown as Dispatcher
      const answer = await undiciFetch(url, { ...(init as Parameters<typeof undiciFetch>[1]), signal: link?.signal, redirect: 'manual', dispatcher })
      // The client tells a Response by `instanceof` the global class when it reads an error (an
      // OAuth server's, say), which undici's own is not: such an answer is handed on as one.
      const response = answer.status < 400 ? answer as unknown as Response : new Response(answer.body as ReadableStream | null, { status: answer.status, statusText: answer.statusText, headers: answer.headers as unknown as Headers })
      streamed = String(response.headers.get('content-type')).startsWith('text/event-stream')
      if (streamed && ended !== null) onCall?.((ended as { error: unknown }).error)
      return response
    } catch (err) {
      onEnd(err)
      throw err
    }
  }

  return { fetch, close: async () => { await agent.close() } }
}
