import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { guardedFetch, McpRegistry, McpSource, type McpTools } from '../src/tools/mcp/index.js'
import { loadMcpServersFile, syncMcpServersFile } from '../src/tools/mcp/mcp-file.js'
import { OPEN_MODE_TENANT } from '../src/tenants/api-keys.js'
import type { Resolver } from '../src/tools/egress-guard.js'
import { Telemetry } from '../src/telemetry/index.js'
import { VERSION } from '../src/version.js'
import type { Redactor } from '../src/lib/redact.js'

declare module 'fastify' {
  interface FastifyInstance {
    mcp: McpTools
  }
}

/**
 * MCP servers as a tool source (SPEC §11): the registry of tenants' servers, with this replica's
 * connections (through the egress-guarded dispatcher), and the source their tools' calls go to.
 * TOOLS_FILE's `mcp_servers` are registered at start-up. Connections close on close.
 */
export default fp(async function mcpPlugin (app: FastifyInstance, options: { resolver?: Resolver | undefined, redactor: Redactor }) {
  const { config } = app
  const fetch = guardedFetch(config.egressAllow, options.resolver, config.TOOL_MAX_RESPONSE_BYTES)
  const registry = new McpRegistry({
    store: app.store,
    egress: config.egressAllow,
    connection: { fetch: fetch.fetch, userAgent: `switchboard/${VERSION}`, log: app.log },
    log: app.log,
    listTtlMs: config.MCP_LIST_TTL_MS,
    resolver: options.resolver
  })
  const source = new McpSource({
    connections: registry.connections,
    server: async (tenantId, name) => await registry.server(tenantId, name),
    maxResultChars: config.TOOL_MAX_RESULT_CHARS,
    telemetry: new Telemetry(app.metrics, app.tracing),
    redactor: options.redactor
  })
  app.decorate('mcp', { registry, source })
  app.addHook('onClose', async () => {
    await registry.close()
    await fetch.close()
  })
  if (config.TOOLS_FILE !== undefined) {
    const tenants = config.keyring.size === 0 ? [OPEN_MODE_TENANT] : config.keyring.tenants()
    const servers = loadMcpServersFile(config.TOOLS_FILE, config.env, tenants)
    await syncMcpServersFile(registry, servers, tenants, config.TOOLS_FILE, app.log)
  }
}, { name: 'mcp', dependencies: ['config', 'store', 'metrics', 'tracing'] })
