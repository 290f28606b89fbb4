import type { Row } from './sql-driver.js'
import type { McpServerRecord } from './store.js'

/** The stored form of an MCP server: its definition as one document, its tool list as another. */
export const PUT_MCP_SERVER = `INSERT INTO mcp_servers (tenant_id, name, definition, listed, listed_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (tenant_id, name) DO UPDATE SET definition = excluded.definition, listed = excluded.listed, listed_at = excluded.listed_at, updated_at = excluded.updated_at RETURNING *`

/** The values of PUT_MCP_SERVER for `server`. */
export function mcpServerValues (server: McpServerRecord): unknown[] {
  const { tenant_id: tenantId, name, listed, listed_at: listedAt, created_at: createdAt, updated_at: updatedAt, ...definition } = server
  return [tenantId, name, JSON.stringify(definition), JSON.stringify(listed), listedAt, createdAt, updatedAt]
}

export function toMcpServerRecord (row: Row): McpServerRecord {
  const definition = JSON.parse(row.definition as string) as Omit<McpServerRecord, 'tenant_id' | 'name' | 'listed' | 'listed_at' | 'created_at' | 'updated_at'>
  return {
    ...definition,
    tenant_id: row.tenant_id as string,
    name: row.name as string,
    listed: JSON.parse(row.listed as string),
    listed_at: Number(row.listed_at),
    created_at: Number(row.created_at),
    updated_at: Number(row.updated_at)
  }
}
