import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../../support/backends.js'
import { auth, startApp, TENANT_A } from '../../support/app.js'
import { McpTestServer } from '../../support/mcp-server.js'

const dir = mkdtempSync(join(tmpdir(), 'switchboard-mcp-file-'))
let mcp: McpTestServer
beforeAll(async () => { mcp = await new McpTestServer().start() })
afterAll(async () => {
  await mcp?.close()
  rmSync(dir, { recursive: true, force: true })
})

let files = 0
function toolsFile (text: string): string {
  const path = join(dir, `tools-${++files}.yaml`)
  writeFileSync(path, text)
  return path
}

describe('TOOLS_FILE mcp_servers', () => {
  it('registers the file\'s MCP servers at start-up, with secrets from the environment; the API cannot change them', async () => {
    const path = toolsFile(`
mcp_servers:
  ${TENANT_A.id}:
    files:
      url: ${mcp.url}
      headers: { authorization: "Bearer \${MCP_TOKEN}" }
      tools: [echo, read]
      trust_annotations: true
`)
    const started = await startApp(backends[0]!, { env: { TOOLS_FILE: path, MCP_TOKEN: 'tok-mcp-from-env-77' } })
    try {
      const res = await started.app.inject({ method: 'GET', url: '/mcp-servers/files', headers: auth(TENANT_A) })
      expect(res.statusCode).toBe(200)
      expect(res.json()).toMatchObject({ source: 'file', header_names: ['authorization'], tools: [{ run_name: 'files__echo', effect: 'side_effecting' }, { run_name: 'files__read', effect: 'read_only' }] })
      expect(res.body).not.toContain('tok-mcp-from-env-77')
      const put = await started.app.inject({ method: 'PUT', url: '/mcp-servers/files', headers: auth(TENANT_A), payload: { url: mcp.url } })
      expect(put.statusCode).toBe(409)
      expect(put.json()).toMatchObject({ code: 'MCP_ERR_READ_ONLY' })
      // The server saw the header from the environment.
      expect(mcp.initializations).toBeGreaterThan(0)
    } finally {
      await started.close()
    }
  })

  it('a file server that cannot be reached stops start-up, naming it', async () => {
    const path = toolsFile(`
mcp_servers:
  ${TENANT_A.id}:
    gone:
      url: http://127.0.0.1:9/mcp
`)
    await expect(startApp(backends[0]!, { env: { TOOLS_FILE: path } })).rejects.toThrow(/MCP server "gone" of tenant "acme".*could not be registered/)
  })
})
