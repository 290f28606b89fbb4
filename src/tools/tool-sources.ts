import type { ToolRecord } from '../store/index.js'
import type { ToolSource } from './tool-source.js'

/**
 * Which source a tool's calls go to: the tool's MCP server for a tool a run pinned from one
 * (SPEC §11), its webhook otherwise.
 */
export function toolSources (webhooks: ToolSource, mcp: ToolSource | undefined): (tool: ToolRecord) => ToolSource {
  if (mcp === undefined) return () => webhooks
  return (tool) => tool.mcp === undefined ? webhooks : mcp
}
