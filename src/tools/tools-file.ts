import { readFileSync } from 'node:fs'
import { parse as parseYaml } from 'yaml'
import { AppError, ConfigError } from '../errors.js'
import { createRequestValidators, describeValidation, type ValidationIssue } from '../schemas/validation.js'
import { ToolDefinitionSchema, TOOL_NAME_PATTERN, type ToolDefinition } from '../schemas/tools.js'
import type { Log } from '../logger.js'
import type { ToolRegistry } from './registry.js'

/** A tool declared in the file: its definition, and optionally the signing secret to use. */
export interface FileTool {
  readonly definition: ToolDefinition
  readonly signingSecret?: string
}

/** Tools by tenant, then by name, as declared in TOOLS_FILE. */
export type FileTools = Map<string, Map<string, FileTool>>

const VARIABLE = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g
const SECRET_FORMAT = /^whsec_[A-Za-z0-9+/]{32,}={0,2}$/

/**
 * Reads TOOLS_FILE (YAML or JSON):
 *
 * ```yaml
 * tenants:
 *   acme:                          # a tenant of API_KEYS (`default` in open mode)
 *     get_weather:                 # the tool's name
 *       description: Current weather for a city
 *       url: https://tools.acme.internal/weather
 *       input_schema: { type: object, properties: { city: { type: string } }, required: [city] }
 *       headers: { authorization: "Bearer ${WEATHER_TOKEN}" }   # ${VAR}: from the environment
 *       signing_secret: ${WEATHER_SIGNING_SECRET}                 # optional; else one is made
 * ```
 *
 * Every tool is checked as `PUT /tools/{name}` checks it. A problem stops start-up with a
 * {@link ConfigError} naming the tenant, the tool and the field.
 */
export function loadToolsFile (path: string, env: Readonly<Record<string, string | undefined>>, tenants: readonly string[]): FileTools {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(`TOOLS_FILE ${path} cannot be read: ${(err as Error).message}`)
  }
  let document: unknown
  try {
    document = /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    throw new ConfigError(`TOOLS_FILE ${path} is not valid ${/\.json$/i.test(path) ? 'JSON' : 'YAML'}: ${(err as Error).message}`)
  }
  const where = `TOOLS_FILE ${path}`
  // A file of MCP servers alone (`mcp_servers`, read by src/tools/mcp/mcp-file.ts) declares no tools.
  if (isObject(document) && document.tenants === undefined && isObject(document.mcp_servers)) return new Map()
  if (!isObject(document) || !isObject(document.tenants)) {
    throw new ConfigError(`${where} must hold a "tenants" mapping: tenants → tool names → tool fields (see docs/webhooks.md, "Tools in a file").`)
  }
  const validate = createRequestValidators().body.compile(ToolDefinitionSchema)
  const namePattern = new RegExp(TOOL_NAME_PATTERN)
  const result: FileTools = new Map()
  for (const [tenantId, tools] of Object.entries(document.tenants)) {
    if (!tenants.includes(tenantId)) {
      throw new ConfigError(`${where}: tenant "${tenantId}" has no key in API_KEYS (known tenants: ${tenants.join(', ')}).`)
    }
    if (!isObject(tools)) throw new ConfigError(`${where}: tenant "${tenantId}" must map tool names to tool fields.`)
    const byName = new Map<string, FileTool>()
    for (const [name, raw] of Object.entries(tools)) {
      const tool = `${where}: tool "${name}" of tenant "${tenantId}"`
      if (!namePattern.test(name)) throw new ConfigError(`${tool}: the name must match ${TOOL_NAME_PATTERN}.`)
      if (!isObject(raw)) throw new ConfigError(`${tool} must be a mapping of tool fields.`)
      const fields = interpolate(raw, env, tool) as Record<string, unknown>
      const { signing_secret: signingSecret, ...definition } = fields
      if (signingSecret !== undefined && (typeof signingSecret !== 'string' || !SECRET_FORMAT.test(signingSecret))) {
        throw new ConfigError(`${tool}: signing_secret must be a Standard Webhooks secret (whsec_ then base64 of at least 24 bytes).`)
      }
      if (!validate(definition)) {
        throw new ConfigError(`${tool}: ${describeValidation('tool', validate.errors as ValidationIssue[])}.`)
      }
      byName.set(name, { definition: definition as ToolDefinition, ...(signingSecret === undefined ? {} : { signingSecret }) })
    }
    result.set(tenantId, byName)
  }
  return result
}

/**
 * Makes the registry hold exactly the file's tools for every tenant: each declared tool is
 * created or replaced, and tools that came from the file before but are no longer in it are
 * removed. Tools registered through the API are left alone.
 */
export async function syncToolsFile (registry: ToolRegistry, fileTools: FileTools, tenants: readonly string[], path: string, log: Log): Promise<void> {
  let declared = 0
  for (const [tenantId, tools] of fileTools) {
    for (const [name, tool] of tools) {
      try {
        const written = await registry.put(tenantId, name, tool.definition, 'file')
        const current = written.tool.signing_secrets.find((s) => s.expires_at === null)?.secret
        if (tool.signingSecret !== undefined && current !== tool.signingSecret) {
          await registry.rotateSecret(tenantId, name, tool.signingSecret)
        }
        declared++
      } catch (err) {
        if (err instanceof AppError) throw new ConfigError(`TOOLS_FILE ${path}: tool "${name}" of tenant "${tenantId}": ${err.message}`)
        throw err
      }
    }
  }
  let removed = 0
  for (const tenantId of tenants) {
    const keep = fileTools.get(tenantId) ?? new Map()
    let after: string | undefined
    do {
      const page = await registry.list(tenantId, { limit: 100, after })
      for (const tool of page.items) {
        if (tool.source === 'file' && !keep.has(tool.name)) {
          await registry.delete(tenantId, tool.name, 'file')
          removed++
        }
      }
      after = page.nextCursor ?? undefined
    } while (after !== undefined)
  }
  log.info({ path, declared, removed }, 'tools file loaded')
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Replaces `${VAR}` in every string of `value` with the variable's value. */
function interpolate (value: unknown, env: Readonly<Record<string, string | undefined>>, where: string): unknown {
  if (typeof value === 'string') {
    return value.replace(VARIABLE, (_match, name: string) => {
      const found = env[name]
      if (found === undefined) throw new ConfigError(`${where} refers to \${${name}}, which is not set in the environment.`)
      return found
    })
  }
  if (Array.isArray(value)) return value.map((v) => interpolate(v, env, where))
  if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, env, where)]))
  return value
}
