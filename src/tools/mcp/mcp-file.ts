import { readFileSync } from 'node:fs'
import { parse as parseYaml } from 'yaml'
import { AppError, ConfigError } from '../../errors.js'
import type { Log } from '../../logger.js'
import { McpServerDefinitionSchema, MCP_SERVER_NAME_PATTERN, type McpServerDefinition } from '../../schemas/mcp-servers.js'
import { createRequestValidators, describeValidation, type ValidationIssue } from '../../schemas/validation.js'
import type { McpRegistry } from './mcp-registry.js'

/** MCP servers by tenant, then by name, as declared in TOOLS_FILE. */
export type FileMcpServers = Map<string, Map<string, McpServerDefinition>>

const VARIABLE = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g

/**
 * Reads the `mcp_servers` of TOOLS_FILE (YAML or JSON), beside its `tenants`:
 *
 * ```yaml
 * mcp_servers:
 *   acme:                              # a tenant of API_KEYS (`default` in open mode)
 *     github:                          # the server's name
 *       url: https://mcp.acme.internal/mcp
 *       headers: { authorization: "Bearer ${GITHUB_MCP_TOKEN}" }   # ${VAR}: from the environment
 *       trust_annotations: true
 * ```
 *
 * Each server is checked as `PUT /mcp-servers/{name}` checks its body; a problem stops start-up.
 */
export function loadMcpServersFile (path: string, env: Readonly<Record<string, string | undefined>>, tenants: readonly string[]): FileMcpServers {
  const where = `TOOLS_FILE ${path}`
  let document: unknown
  try {
    const text = readFileSync(path, 'utf8')
    document = /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    throw new ConfigError(`${where} cannot be read: ${(err as Error).message}`)
  }
  const result: FileMcpServers = new Map()
  if (!isObject(document) || document.mcp_servers === undefined) return result
  if (!isObject(document.mcp_servers)) throw new ConfigError(`${where}: mcp_servers must map tenants to MCP server names to their fields (see docs/mcp.md).`)
  const validate = createRequestValidators().body.compile(McpServerDefinitionSchema)
  const namePattern = new RegExp(MCP_SERVER_NAME_PATTERN)
  for (const [tenantId, servers] of Object.entries(document.mcp_servers)) {
    if (!tenants.includes(tenantId)) throw new ConfigError(`${where}: mcp_servers tenant "${tenantId}" has no key in API_KEYS (known tenants: ${tenants.join(', ')}).`)
    if (!isObject(servers)) throw new ConfigError(`${where}: mcp_servers of tenant "${tenantId}" must map server names to their fields.`)
    const byName = new Map<string, McpServerDefinition>()
    for (const [name, raw] of Object.entries(servers)) {
      const server = `${where}: MCP server "${name}" of tenant "${tenantId}"`
      if (!namePattern.test(name)) throw new ConfigError(`${server}: the name must match ${MCP_SERVER_NAME_PATTERN}.`)
      const fields = interpolate(raw, env, server)
      if (!validate(fields)) throw new ConfigError(`${server}: ${describeValidation('mcp_server', validate.errors as ValidationIssue[])}.`)
      byName.set(name, fields as McpServerDefinition)
    }
    result.set(tenantId, byName)
  }
  return result
}

/**
 * Registers the file's servers (each connects and lists first) and removes servers that came from
 * the file before but are no longer in it. A server that cannot be reached at start-up stops it,
 * as any other problem of the file does: its tools would be missing from every run.
 */
export async function syncMcpServersFile (registry: McpRegistry, servers: FileMcpServers, tenants: readonly string[], path: string, log: Log): Promise<void> {
  let declared = 0
  for (const [tenantId, byName] of servers) {
    for (const [name, definition] of byName) {
      try {
        await registry.put(tenantId, name, definition, 'file')
        declared++
      } catch (err) {
        if (err instanceof AppError) throw new ConfigError(`TOOLS_FILE ${path}: MCP server "${name}" of tenant "${tenantId}": ${err.message}`)
        throw err
      }
    }
  }
  let removed = 0
  for (const tenantId of tenants) {
    const keep = servers.get(tenantId) ?? new Map()
    let after: string | undefined
    do {
      const page = await registry.list(tenantId, { limit: 100, after })
      for (const server of page.items) {
        if (server.source === 'file' && !keep.has(server.name)) {
          await registry.delete(tenantId, server.name, 'file')
          removed++
        }
      }
      after = page.nextCursor ?? undefined
    } while (after !== undefined)
  }
  if (declared > 0 || removed > 0) log.info({ path, declared, removed }, 'MCP servers of the tools file registered')
}

function interpolate (value: unknown, env: Readonly<Record<string, string | undefined>>, where: string): unknown {
  if (typeof value === 'string') {
    return value.replace(VARIABLE, (_match, name: string) => {
      const found = env[name]
      if (found === undefined) throw new ConfigError(`${where}: \${${name}} is not set in the environment.`)
      return found
    })
  }
  if (Array.isArray(value)) return value.map((v) => interpolate(v, env, where))
  if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, env, where)]))
  return value
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
