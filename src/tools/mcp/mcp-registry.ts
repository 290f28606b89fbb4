import { AppError } from '../../errors.js'
import { cutText } from '../../lib/text.js'
import { Redactor } from '../../lib/redact.js'
import type { Log } from '../../logger.js'
import { isoDate } from '../../schemas/common.js'
import type { McpServer, McpServerDefinition, PinnedMcpTool } from '../../schemas/mcp-servers.js'
import { CIRCUIT_BREAKER_DEFAULTS, TOOL_NAME_PATTERN } from '../../schemas/tools.js'
import type { McpListedTool, McpServerRecord, Page, PageRequest, Store, ToolEffect, ToolRecord } from '../../store/index.js'
import { checkUrlEgress, EgressDeniedError, type EgressAllowList, type Resolver } from '../egress-guard.js'
import { callersProblem } from '../../model/code-execution.js'
import { failureOf } from './mcp-result.js'
import { McpConnections, probeServer, type McpConnectionOptions } from './mcp-connection.js'

/** Between a server's name and its tool's in a run's tool name: `github__search`. */
export const RUN_NAME_SEPARATOR = '__'
// A server's record read for a call is reused this long: a change made on another replica is seen
// by this one's calls within it (this replica's own changes at once).
const SERVER_CACHE_MS = 2_000
const RUN_NAME = new RegExp(TOOL_NAME_PATTERN)
// Headers the MCP transport sets itself.
const RESERVED_HEADERS = new Set(['host', 'content-type', 'content-length', 'accept', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id', 'traceparent', 'user-agent', 'connection', 'transfer-encoding'])
// What an authorization server answers when the client's id or secret is wrong, or not allowed the grant.
const REFUSED_CREDENTIALS = new Set(['invalid_client', 'unauthorized_client', 'invalid_grant', 'access_denied'])
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/

export interface McpRegistryOptions {
  readonly store: Store
  readonly egress: EgressAllowList
  readonly connection: Omit<McpConnectionOptions, 'onListChanged'>
  readonly log: Log
  /** A run starting re-lists a server whose list is older than this (MCP_LIST_TTL_MS). */
  readonly listTtlMs: number
  readonly resolver?: Resolver | undefined
  readonly now?: () => number
}

/** What a run's `tools` and `mcp_servers` name, split by source. */
export interface RunToolsResolution {
  /** Names of registered webhook tools. */
  readonly webhookTools: string[]
  /** The MCP tools the run may use, as they are now: the run keeps these definitions. */
  readonly pinned: PinnedMcpTool[]
}

/**
 * A tenant's MCP servers (SPEC §11): registration (connect, initialize, list, before anything is
 * stored), reads, removal, refresh of tool lists (on request, on notifications/tools/list_changed,
 * and when a run starts with a list older than MCP_LIST_TTL_MS), and the tools a run names. Owns
 * this replica's connections.
 */
export class McpRegistry {
  readonly connections: McpConnections
  readonly #options: McpRegistryOptions
  readonly #now: () => number
  readonly #cache = new Map<string, { server: McpServerRecord | null, at: number }>()

  constructor (options: McpRegistryOptions) {
    this.#options = options
    this.#now = options.now ?? Date.now
    this.connections = new McpConnections(options.connection, (tenantId, name) => { this.#listChanged(tenantId, name).catch(() => {}) })
  }

  /**
   * Registers or replaces a server: checks its URL against the egress policy, connects, initializes
   * and lists its tools; a server that cannot be reached or fails the handshake is a 400
   * MCP_ERR_UNREACHABLE quoting the cause, and nothing is stored.
   */
  async put (tenantId: string, name: string, definition: McpServerDefinition, source: 'api' | 'file' = 'api'): Promise<{ server: McpServerRecord, created: boolean }> {
    const existing = await this.#options.store.getMcpServer(tenantId, name)
    if (existing !== null && existing.source === 'file' && source === 'api') {
      throw new AppError('MCP_ERR_READ_ONLY', `MCP server ${name} is declared in TOOLS_FILE: change it there and restart, or remove it from the file first.`)
    }
    const url = await this.#checkUrl(definition.url)
    const headers = checkHeaders(definition.headers ?? {})
    const now = this.#now()
    const target = { tenant_id: tenantId, name, url: url.toString(), headers, oauth: definition.oauth ?? null }
    let listed: McpListedTool[]
    let protocolVersion: string | null
    try {
      ({ tools: listed, protocolVersion } = await probeServer(target, this.#options.connection))
    } catch (err) {
      // The cause is quoted without the secrets given for the server (a server may echo them).
      const cause = new Redactor([...Object.values(headers), definition.oauth?.client_secret]).redact(describeConnectFailure(err))
      throw new AppError('MCP_ERR_UNREACHABLE', `MCP server ${name} at ${url.origin} could not be registered: ${cause}. Check that url is its Streamable HTTP endpoint and that it answers initialize and tools/list.`)
    }
    const missing = (definition.tools ?? []).filter((tool) => !listed.some((t) => t.name === tool))
    if (missing.length > 0) {
      throw new AppError('MCP_ERR_UNKNOWN_TOOL', `tools names ${missing.join(', ')}, which MCP server ${name} does not list (it lists: ${listed.map((t) => t.name).join(', ') || 'no tools'}).`)
    }
    const record: McpServerRecord = {
      tenant_id: tenantId,
      name,
      url: url.toString(),
      headers,
      oauth: definition.oauth ?? null,
      tools: definition.tools ?? null,
      trust_annotations: definition.trust_annotations ?? false,
      defaults: {
        timeout_ms: definition.defaults?.timeout_ms ?? 30_000,
        max_attempts: definition.defaults?.max_attempts ?? 3,
        max_concurrency: definition.defaults?.max_concurrency ?? null
      },
      overrides: definition.overrides ?? {},
      listed,
      listed_at: now,
      protocol_version: protocolVersion,
      source,
      created_at: now,
      updated_at: now
    }
    checkCallers(record)
    const written = await this.#options.store.putMcpServer(record)
    this.#remember(written.server)
    return written
  }

  async get (tenantId: string, name: string): Promise<McpServerRecord> {
    const server = await this.#options.store.getMcpServer(tenantId, name)
    if (server === null) throw notFound(name)
    return server
  }

  list (tenantId: string, page: PageRequest): Promise<Page<McpServerRecord>> {
    return this.#options.store.listMcpServers(tenantId, page)
  }

  async delete (tenantId: string, name: string, source: 'api' | 'file' = 'api'): Promise<void> {
    const existing = await this.get(tenantId, name)
    if (existing.source === 'file' && source === 'api') {
      throw new AppError('MCP_ERR_READ_ONLY', `MCP server ${name} is declared in TOOLS_FILE: remove it from the file and restart.`)
    }
    await this.#options.store.deleteMcpServer(tenantId, name)
    this.#cache.set(key(tenantId, name), { server: null, at: this.#now() })
    await this.connections.drop(tenantId, name)
  }

  /** Lists the server's tools again now (POST /mcp-servers/{name}/refresh). */
  async refresh (tenantId: string, name: string): Promise<McpServerRecord> {
    const server = await this.get(tenantId, name)
    let listed: McpListedTool[]
    try {
      listed = await this.connections.of(server).listTools()
    } catch (err) {
      const cause = new Redactor([...Object.values(server.headers), server.oauth?.client_secret]).redact(describeConnectFailure(err))
      throw new AppError('MCP_ERR_UNREACHABLE', `MCP server ${name} could not be listed: ${cause}.`)
    }
    const updated = await this.#options.store.setMcpServerTools(tenantId, name, listed, this.#now())
    if (updated === null) throw notFound(name)
    this.#remember(updated)
    return updated
  }

  /** A server as registered now, for a call: read at most every few seconds per server. */
  async server (tenantId: string, name: string): Promise<McpServerRecord | null> {
    const cached = this.#cache.get(key(tenantId, name))
    if (cached !== undefined && this.#now() - cached.at < SERVER_CACHE_MS) return cached.server
    const server = await this.#options.store.getMcpServer(tenantId, name)
    this.#cache.set(key(tenantId, name), { server, at: this.#now() })
    return server
  }

  /**
   * Splits a run's `tools` into webhook tools and MCP tools (`<server>__<tool>` of a registered
   * server), adds every tool of the servers named in `mcp_servers`, and answers the MCP tools'
   * definitions as they are now (re-listing a server whose list is older than MCP_LIST_TTL_MS).
   * A name of an MCP server's that the server does not offer, or an unknown server, is a 400.
   */
  async resolveRun (tenantId: string, tools: readonly string[], servers: readonly string[]): Promise<RunToolsResolution> {
    const webhookTools: string[] = []
    const wanted = new Map<string, Set<string> | 'all'>()
    const records = new Map<string, McpServerRecord>()
    const recordOf = async (name: string): Promise<McpServerRecord | null> => {
      if (!records.has(name)) {
        const record = await this.#options.store.getMcpServer(tenantId, name)
        if (record === null) return null
        records.set(name, await this.#fresh(record))
      }
      return records.get(name)!
    }
    for (const name of servers) {
      if (await recordOf(name) === null) throw new AppError('RUN_ERR_UNKNOWN_TOOL', `Unknown MCP server: ${name}. Register it with PUT /mcp-servers/{name} first, or list yours with GET /mcp-servers.`)
      wanted.set(name, 'all')
    }
    for (const name of tools) {
      const at = name.indexOf(RUN_NAME_SEPARATOR)
      const serverName = at > 0 ? name.slice(0, at) : ''
      if (at <= 0 || await recordOf(serverName) === null) {
        webhookTools.push(name)
        continue
      }
      const current = wanted.get(serverName)
      if (current === 'all') continue
      const set = current ?? new Set<string>()
      set.add(name.slice(at + RUN_NAME_SEPARATOR.length))
      wanted.set(serverName, set)
    }
    const pinned: PinnedMcpTool[] = []
    const seen = new Set<string>()
    for (const [serverName, which] of wanted) {
      const server = records.get(serverName)!
      const offered = offeredTools(server)
      if (which !== 'all') {
        const missing = [...which].filter((tool) => !offered.some((t) => t.name === tool))
        if (missing.length > 0) {
          throw new AppError('RUN_ERR_UNKNOWN_TOOL', `MCP server ${serverName} offers no tool${missing.length > 1 ? 's' : ''} ${missing.join(', ')} (it offers: ${offered.map((t) => t.name).join(', ') || 'none'}). See GET /mcp-servers/${serverName}.`)
        }
      }
      for (const tool of offered) {
        if (which !== 'all' && !which.has(tool.name)) continue
        const definition = pinnedTool(server, tool)
        if (seen.has(definition.run_name)) continue
        seen.add(definition.run_name)
        pinned.push(definition)
      }
    }
    return { webhookTools, pinned }
  }

  async close (): Promise<void> {
    await this.connections.close()
  }

  /** The record, its list refreshed first if older than MCP_LIST_TTL_MS (a failure keeps the old list). */
  async #fresh (server: McpServerRecord): Promise<McpServerRecord> {
    if (this.#now() - server.listed_at < this.#options.listTtlMs) return server
    try {
      const listed = await this.connections.of(server).listTools()
      const updated = await this.#options.store.setMcpServerTools(server.tenant_id, server.name, listed, this.#now())
      return updated ?? server
    } catch (err) {
      this.#options.log.warn({ err, mcpServer: server.name }, 'MCP tool list could not be refreshed; the last list is used')
      return server
    }
  }

  async #listChanged (tenantId: string, name: string): Promise<void> {
    try {
      await this.refresh(tenantId, name)
      this.#options.log.info({ mcpServer: name }, 'MCP tool list changed; listed again')
    } catch (err) {
      this.#options.log.warn({ err, mcpServer: name }, 'MCP tool list changed but could not be listed again')
    }
  }

  async #checkUrl (value: string): Promise<URL> {
    let url: URL
    try {
      url = new URL(value)
    } catch {
      throw new AppError('MCP_ERR_INVALID_URL', `url "${cutText(value, 200)}" is not an absolute URL: write it as https://host/mcp.`)
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new AppError('MCP_ERR_INVALID_URL', `url must use http or https, not ${url.protocol.replace(':', '')} (stdio servers are not supported: run the server behind Streamable HTTP).`)
    if (url.username !== '' || url.password !== '') throw new AppError('MCP_ERR_INVALID_URL', 'url must not hold credentials (user:password@): use write-only `headers` or `oauth` instead.')
    url.hash = ''
    try {
      await checkUrlEgress(this.#options.egress, url, this.#options.resolver)
    } catch (err) {
      if (err instanceof EgressDeniedError) throw new AppError('MCP_ERR_URL_NOT_ALLOWED', `url is refused: ${err.message}. To allow a private or loopback host, list it in TOOL_EGRESS_ALLOW.`)
      throw err
    }
    return url
  }

  #remember (server: McpServerRecord): void {
    this.#cache.set(key(server.tenant_id, server.name), { server, at: this.#now() })
  }
}

/** The tools of a server that runs may use: its allow-list, and names a model can call. */
export function offeredTools (server: McpServerRecord): McpListedTool[] {
  return server.listed.filter((t) => (server.tools === null || server.tools.includes(t.name)) && RUN_NAME.test(runName(server.name, t.name)))
}

export function runName (server: string, tool: string): string {
  return `${server}${RUN_NAME_SEPARATOR}${tool}`
}

/**
 * A tool's effect class (SPEC §11): an override wins; else, with trust_annotations, readOnlyHint
 * makes it read_only and idempotentHint idempotent; anything else, and every tool without trust,
 * is side_effecting (annotations are untrusted by default, as the MCP spec says).
 */
export function effectOf (server: McpServerRecord, tool: McpListedTool): ToolEffect {
  const override = server.overrides[tool.name]?.effect
  if (override !== undefined) return override
  if (!server.trust_annotations) return 'side_effecting'
  if (tool.annotations?.readOnlyHint === true) return 'read_only'
  if (tool.annotations?.idempotentHint === true) return 'idempotent'
  return 'side_effecting'
}

/**
 * An override's `callers` may list "code" only for a tool whose effect class is read_only or
 * idempotent, as for webhook tools (SPEC §16): a 400 TOOL_ERR_CALLERS_NOT_ALLOWED naming it.
 */
function checkCallers (server: McpServerRecord): void {
  for (const tool of server.listed) {
    const problem = callersProblem(server.overrides[tool.name]?.callers, effectOf(server, tool), `${tool.name} of MCP server ${server.name}`)
    if (problem !== null) throw new AppError('TOOL_ERR_CALLERS_NOT_ALLOWED', problem)
  }
}

function pinnedTool (server: McpServerRecord, tool: McpListedTool): PinnedMcpTool {
  const override = server.overrides[tool.name]
  // Checked at registration; a tool listed again since with other annotations is still held to it.
  const callers = override?.callers !== undefined && callersProblem(override.callers, effectOf(server, tool), tool.name) === null ? override.callers : undefined
  return {
    ...(callers === undefined ? {} : { callers: [...callers] }),
    run_name: runName(server.name, tool.name),
    server: server.name,
    tool: tool.name,
    description: tool.description,
    input_schema: tool.input_schema,
    effect: effectOf(server, tool),
    parallel: override?.parallel ?? true,
    ...(override?.approval === 'always' ? { approval: 'always' as const } : {}),
    timeout_ms: override?.timeout_ms ?? server.defaults.timeout_ms,
    max_attempts: server.defaults.max_attempts,
    max_concurrency: server.defaults.max_concurrency
  }
}

/**
 * A pinned MCP tool as the record a run's tool calls go through (its source is chosen by `mcp`).
 * The revision is made of the definition, so that its input check is compiled once per definition.
 */
export function pinnedToolRecord (tenantId: string, pinned: PinnedMcpTool): ToolRecord {
  return {
    tenant_id: tenantId,
    name: pinned.run_name,
    description: pinned.description,
    input_schema: pinned.input_schema,
    url: `mcp:${pinned.server}`,
    headers: {},
    timeout_ms: pinned.timeout_ms,
    effect: pinned.effect,
    parallel: pinned.parallel,
    max_concurrency: pinned.max_concurrency,
    max_attempts: pinned.max_attempts,
    circuit_breaker: CIRCUIT_BREAKER_DEFAULTS,
    cache_ttl_ms: 0,
    approval: pinned.approval ?? 'never',
    ...(pinned.callers === undefined ? {} : { model_options: { callers: pinned.callers } }),
    signing_secrets: [],
    source: 'api',
    revision: `mcp:${JSON.stringify(pinned.input_schema)}`,
    created_at: 0,
    updated_at: 0,
    mcp: { server: pinned.server, tool: pinned.tool }
  }
}

/** A server as the API shows it: header names without values, no OAuth secret. */
export function toMcpServerObject (server: McpServerRecord): McpServer {
  return {
    object: 'mcp_server',
    name: server.name,
    url: server.url,
    header_names: Object.keys(server.headers),
    oauth: server.oauth === null ? null : { client_id: server.oauth.client_id, scope: server.oauth.scope ?? null, issuer: server.oauth.issuer ?? null, has_client_secret: true },
    allowed_tools: server.tools === null ? null : [...server.tools],
    trust_annotations: server.trust_annotations,
    defaults: { ...server.defaults },
    overrides: { ...server.overrides },
    tools: offeredTools(server).map((tool) => ({
      name: tool.name,
      run_name: runName(server.name, tool.name),
      description: tool.description,
      input_schema: tool.input_schema,
      effect: effectOf(server, tool),
      annotations: tool.annotations
    })),
    listed_at: isoDate(server.listed_at),
    protocol_version: server.protocol_version ?? null,
    source: server.source,
    created_at: isoDate(server.created_at),
    updated_at: isoDate(server.updated_at)
  }
}

function checkHeaders (headers: Record<string, string>): Record<string, string> {
  for (const [header, value] of Object.entries(headers)) {
    if (!HEADER_NAME.test(header)) throw new AppError('REQUEST_ERR_VALIDATION', `headers has an invalid header name "${header}": use letters, digits and -.`)
    if (RESERVED_HEADERS.has(header.toLowerCase())) throw new AppError('REQUEST_ERR_VALIDATION', `headers may not set "${header}": the MCP transport sets it itself.`)
    if (!HEADER_VALUE.test(value)) throw new AppError('REQUEST_ERR_VALIDATION', `headers["${header}"] has a control character (such as a line break) that a header value cannot hold.`)
  }
  return headers
}

/** Why a connection failed, in words, without a secret (headers are never quoted). */
function describeConnectFailure (err: unknown): string {
  const failure = failureOf(err)
  if (failure.egress !== null) return failure.egress.message
  if (failure.tooLarge !== null) return failure.tooLarge.message
  if (failure.oauth !== null) {
    return REFUSED_CREDENTIALS.has(failure.oauth)
      ? `the authorization server refused the client credentials (${failure.oauth}): check oauth.client_id and oauth.client_secret`
      : `OAuth failed (${failure.oauth}): ${cutText(failure.message, 300)}`
  }
  if (failure.status !== null) return `it answered HTTP ${failure.status}${failure.status === 401 || failure.status === 403 ? ' (check its headers or oauth credentials)' : ''}`
  if (failure.code === 'ECONNREFUSED') return 'connection refused'
  if (failure.code !== null) return `${failure.code}: ${cutText(failure.message, 300)}`
  return cutText(failure.message, 300)
}

function key (tenantId: string, name: string): string {
  return `${tenantId}\u0000${name}`
}

function notFound (name: string): AppError {
  return new AppError('MCP_ERR_NOT_FOUND', `No MCP server named ${name}. List yours with GET /mcp-servers.`)
}
