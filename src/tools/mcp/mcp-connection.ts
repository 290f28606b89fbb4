import { Client, ClientCredentialsProvider, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { abortable } from '../../lib/abort.js'
import type { Log } from '../../logger.js'
import type { McpListedTool, McpServerRecord } from '../../store/index.js'
import { failureOf } from './mcp-result.js'
import type { McpFetch } from './mcp-fetch.js'

/** How long the handshake (initialize) may take, at registration and on every connection. */
export const CONNECT_TIMEOUT_MS = 10_000

/** What a connection is told of its server. */
export interface McpConnectionOptions {
  readonly fetch: McpFetch
  readonly userAgent: string
  readonly log: Log
  /** The server said its tool list changed (notifications/tools/list_changed). */
  readonly onListChanged?: () => void
}

type ServerTarget = Pick<McpServerRecord, 'tenant_id' | 'name' | 'url' | 'headers' | 'oauth'>

/**
 * One MCP session with one server (the official client over Streamable HTTP), shared by every
 * call of every run of this replica: calls are JSON-RPC requests on it, in parallel. It connects
 * on first use; a session the server forgot (HTTP 404) is initialized again, once per failed
 * request (see {@link withSession}).
 */
export class McpConnection {
  readonly target: ServerTarget
  readonly #options: McpConnectionOptions
  #session: Promise<Client> | null = null
  /** The client of the session once connected. */
  #current: Client | null = null
  #closed = false

  constructor (target: ServerTarget, options: McpConnectionOptions) {
    this.target = target
    this.#options = options
  }

  /** The connected client, connecting first if need be; a failed connection is not kept. */
  async client (signal?: AbortSignal): Promise<Client> {
    if (this.#closed) throw new Error('the connection is closed')
    if (this.#session === null) {
      const session = this.#connect(signal)
      this.#session = session
      session.catch(() => { if (this.#session === session) this.#session = null })
    }
    return await this.#session
  }

  /**
   * Runs `request` on the session; if the server answers that the session expired (HTTP 404),
   * initializes a new session and runs it once more.
   */
  async withSession<T> (request: (client: Client) => Promise<T>, signal?: AbortSignal): Promise<T> {
    // The session is shared: one call's signal does not cut the handshake short for the others.
    const client = await abortable(this.client(), signal)
    try {
      return await request(client)
    } catch (err) {
      if (failureOf(err).status !== 404 || signal?.aborted === true) throw err
      this.#options.log.info({ mcpServer: this.target.name }, 'MCP session expired; initializing again')
      this.#forget(client)
      return await request(await abortable(this.client(), signal))
    }
  }

  /**
   * The MCP revision spoken on the session (2025-11-25 and earlier: the initialize handshake;
   * 2026-07-28 and later: server/discover), once connected.
   */
  get protocolVersion (): string | null {
    return this.#current?.getNegotiatedProtocolVersion() ?? null
  }

  /** Every tool the server lists (all pages). */
  async listTools (signal?: AbortSignal): Promise<McpListedTool[]> {
    const { tools } = await this.withSession(async (client) => await client.listTools(undefined, { signal, timeout: CONNECT_TIMEOUT_MS, cacheMode: 'bypass' } as Parameters<Client['listTools']>[1]), signal)
    return tools.map((t) => ({
      name: t.name,
      description: t.description ?? t.title ?? t.name,
      input_schema: (t.inputSchema ?? { type: 'object' }) as Record<string, unknown>,
      annotations: (t.annotations as Record<string, unknown> | undefined) ?? null
    }))
  }

  async close (): Promise<void> {
    this.#closed = true
    const session = this.#session
    this.#session = null
    this.#current = null
    if (session !== null) await session.then(async (client) => { await client.close() }, () => {})
  }

  /** Drops a session that expired, unless another call already replaced it. */
  #forget (client: Client): void {
    if (this.#current !== client) return
    this.#current = null
    this.#session = null
    client.close().catch(() => {})
  }

  async #connect (signal?: AbortSignal): Promise<Client> {
    const { target } = this
    const client = new Client({ name: 'switchboard', version: this.#options.userAgent.replace(/^switchboard\//, '') }, {
      listChanged: { tools: { autoRefresh: false, debounceMs: 0, onChanged: () => this.#options.onListChanged?.() } },
      // Both eras (SPEC §11): server/discover first; a 2026-07-28 server answers it, and any other
      // answer the spec names as a 2025 server's (an error, a 4xx with a JSON-RPC error) falls back
      // to the initialize handshake. A failure of the request itself (refused, 401, the egress
      // policy, a timeout) is no era's answer: connect fails with it as its cause (see failureOf).
      versionNegotiation: { mode: 'auto' }
    })
    const transport = new StreamableHTTPClientTransport(new URL(target.url), {
      fetch: this.#options.fetch,
      requestInit: { headers: { ...target.headers, 'user-agent': this.#options.userAgent } },
      ...(target.oauth === null
        ? {}
        : { authProvider: new ClientCredentialsProvider({ clientId: target.oauth.client_id, clientSecret: target.oauth.client_secret, ...(target.oauth.scope === undefined ? {} : { scope: target.oauth.scope }), ...(target.oauth.issuer === undefined ? {} : { expectedIssuer: target.oauth.issuer }) }) })
    })
    client.onerror = (err) => { this.#options.log.debug({ err, mcpServer: target.name }, 'MCP connection error') }
    try {
      await client.connect(transport, { timeout: CONNECT_TIMEOUT_MS, ...(signal === undefined ? {} : { signal }) })
    } catch (err) {
      await client.close().catch(() => {})
      throw err
    }
    this.#current = client
    return client
  }
}

/**
 * This replica's connections, one per tenant's server, made on first use and replaced when the
 * server's registration changes where or how it connects.
 */
export class McpConnections {
  readonly #connections = new Map<string, { fingerprint: string, connection: McpConnection }>()
  readonly #fingerprints = new WeakMap<ServerTarget, string>()
  readonly #options: Omit<McpConnectionOptions, 'onListChanged'>
  readonly #onListChanged: (tenantId: string, name: string) => void

  constructor (options: Omit<McpConnectionOptions, 'onListChanged'>, onListChanged: (tenantId: string, name: string) => void) {
    this.#options = options
    this.#onListChanged = onListChanged
  }

  /** The connection to `server` (as registered now). */
  of (server: ServerTarget): McpConnection {
    const key = `${server.tenant_id}\u0000${server.name}`
    // Asked at every call, with the same record for seconds (the registry's cache): encoded once.
    let fingerprint = this.#fingerprints.get(server)
    if (fingerprint === undefined) {
      fingerprint = JSON.stringify([server.url, server.headers, server.oauth])
      this.#fingerprints.set(server, fingerprint)
    }
    const known = this.#connections.get(key)
    if (known !== undefined && known.fingerprint === fingerprint) return known.connection
    if (known !== undefined) known.connection.close().catch(() => {})
    const connection = new McpConnection(server, { ...this.#options, onListChanged: () => this.#onListChanged(server.tenant_id, server.name) })
    this.#connections.set(key, { fingerprint, connection })
    return connection
  }

  /** Closes the connection to a server (deleted, or replaced). */
  async drop (tenantId: string, name: string): Promise<void> {
    const key = `${tenantId}\u0000${name}`
    const known = this.#connections.get(key)
    this.#connections.delete(key)
    await known?.connection.close()
  }

  async close (): Promise<void> {
    const all = [...this.#connections.values()]
    this.#connections.clear()
    await Promise.allSettled(all.map(async ({ connection }) => { await connection.close() }))
  }
}

/** A connection made for one registration check, then closed: the server's tools, and the revision it spoke. */
export async function probeServer (server: ServerTarget, options: Omit<McpConnectionOptions, 'onListChanged'>): Promise<{ tools: McpListedTool[], protocolVersion: string | null }> {
  const connection = new McpConnection(server, options)
  try {
    const tools = await connection.listTools()
    return { tools, protocolVersion: connection.protocolVersion }
  } finally {
    await connection.close()
  }
}
