import { AsyncLocalStorage } from 'node:async_hooks'
import { isIP } from 'node:net'
import { Agent, buildConnector, fetch as undiciFetch } from 'undici'
import { assertAddressAllowed, createGuardedLookup, unbracket, type EgressAllowList, type Resolver } from '../egress-guard.js'

/**
 * The W3C trace context of the call being sent: the MCP client's requests are made inside
 * `requestContext.run(traceparent, ...)`, and the fetch adds it as the `traceparent` header.
 */
export const requestContext = new AsyncLocalStorage<string>()

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
  const fetch: McpFetch = async (url, init = {}) => {
    const traceparent = requestContext.getStore()
    if (traceparent !== undefined) {
      const headers = new Headers(init.headers)
      headers.set('traceparent', traceparent)
      init = { ...init, headers }
    }
    // undici's own fetch, so that its Agent (the guarded connections) is the dispatcher.
    return await (undiciFetch(url, { ...(init as Parameters<typeof undiciFetch>[1]), redirect: 'manual', dispatcher: agent }) as unknown as Promise<Response>)
  }
  return { fetch, close: async () => { await agent.close() } }
}
