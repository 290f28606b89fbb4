import { AsyncLocalStorage } from 'node:async_hooks'
import { setMaxListeners } from 'node:events'
import { isIP } from 'node:net'
import { Agent, buildConnector, fetch as undiciFetch } from 'undici'
import { linkedController } from '../../lib/abort.js'
import { assertAddressAllowed, createGuardedLookup, unbracket, type EgressAllowList, type Resolver } from '../egress-guard.js'

/** What a call's requests carry through the MCP client down to its fetch. */
export interface RequestContext {
  /** The call's W3C trace context, sent as the `traceparent` header. */
  readonly traceparent: string
  /**
   * The answer's stream broke or ended before the call was answered. The MCP client would wait
   * for its own timeout then; the call is ended at once instead (a server that died mid-call).
   */
  readonly onStreamEnd: (error: unknown) => void
}

/** The context of the call being sent: its requests are made inside `requestContext.run(...)`. */
export const requestContext = new AsyncLocalStorage<RequestContext>()

/** What the MCP client's transport is given as its `fetch`. */
export type McpFetch = (url: string | URL, init?: RequestInit) => Promise<Response>

// How long the TCP (and TLS) connection may take; a call's own timeout bounds the rest.
const CONNECT_TIMEOUT_MS = 10_000

/**
 * A fetch for the MCP client over an undici Agent whose every connection is checked against the
 * egress policy on the address actually connected to (SPEC §8), as webhook calls are: a server
 * name that resolves to a loopback or metadata address now is refused whatever it resolved to at
 * registration (DNS rebinding). Redirects are not followed.
 */
export function guardedFetch (egress: EgressAllowList, resolver?: Resolver): { fetch: McpFetch, close: () => Promise<void> } {
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
    const call = requestContext.getStore()
    let headers = init.headers
    if (call !== undefined) {
      const withTrace = new Headers(init.headers)
      withTrace.set('traceparent', call.traceparent)
      headers = withTrace
    }
    // The client hands every request the signal of its whole session, which lives as long as the
    // connection; a fetch leaves a listener on it for good. Each request gets a signal of its own,
    // linked to the session's and unhooked once its answer has been read.
    if (init.signal !== undefined && init.signal !== null && !sessionSignals.has(init.signal)) {
      // One listener per request in flight on the session (64 calls of a step, say): not a leak.
      setMaxListeners(0, init.signal)
      sessionSignals.add(init.signal)
    }
    const link = init.signal === undefined || init.signal === null ? null : linkedController(init.signal)
    let response: Response
    try {
      // undici's own fetch, so that its Agent (the guarded connections) is the dispatcher.
      response = await (undiciFetch(url, { ...(init as Parameters<typeof undiciFetch>[1]), headers: headers as NonNullable<Parameters<typeof undiciFetch>[1]>['headers'], signal: link?.signal, redirect: 'manual', dispatcher: agent }) as unknown as Promise<Response>)
    } catch (err) {
      link?.dispose()
      throw err
    }
    const streamed = response.body !== null && String(response.headers.get('content-type')).startsWith('text/event-stream')
    if (!streamed) {
      // A JSON answer (or none) is read whole here, so that its link can go at once.
      const body = response.body === null ? null : await response.arrayBuffer().finally(() => link?.dispose())
      link?.dispose()
      return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers })
    }
    // Only the stream answering the call itself tells the call it ended: a handshake made for the
    // call ends as it should.
    const onCall = call !== undefined && init.method === 'POST' && isToolCall(init.body) ? call.onStreamEnd : undefined
    return new Response(watched(response.body!, (error) => {
      link?.dispose()
      onCall?.(error)
    }), { status: response.status, statusText: response.statusText, headers: response.headers })
  }
  return { fetch, close: async () => { await agent.close() } }
}

/** `body`, passed through, with `onEnd` told when it ends or breaks. */
function watched (body: ReadableStream<Uint8Array>, onEnd: (error: unknown) => void): ReadableStream<Uint8Array> {
  const reader = body.getReader()
  return new ReadableStream<Uint8Array>({
    async pull (controller) {
      try {
        const { value, done } = await reader.read()
        if (done) {
          controller.close()
          onEnd(null)
          return
        }
        controller.enqueue(value)
      } catch (err) {
        controller.error(err)
        onEnd(err)
      }
    },
    async cancel (reason) {
      onEnd(reason)
      await reader.cancel(reason)
    }
  })
}

function isToolCall (body: unknown): boolean {
  if (typeof body !== 'string' || !body.includes('"tools/call"')) return false
  try {
    return (JSON.parse(body) as { method?: unknown }).method === 'tools/call'
  } catch {
    return false
  }
}
