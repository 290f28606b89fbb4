import type { McpRegistry } from './mcp-registry.js'
import type { McpSource } from './mcp-source.js'

export { McpRegistry, offeredTools, pinnedToolRecord, runName, toMcpServerObject, RUN_NAME_SEPARATOR } from './mcp-registry.js'
export { McpSource } from './mcp-source.js'
export { guardedFetch } from './mcp-fetch.js'

/** MCP servers as a tool source (SPEC §11), as the run engine uses them. */
export interface McpTools {
  /** The tenants' servers, and what a run's `tools` and `mcp_servers` name. */
  readonly registry: McpRegistry
  /** Where calls of MCP tools go. */
  readonly source: McpSource
}
