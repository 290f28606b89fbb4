import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, startApp, TENANT_A, TENANT_B, type StartedApp } from '../support/app.js'
import { McpTestServer, standardTools } from '../support/mcp-server.js'
import { freePort } from '../support/process.js'

for (const backend of backends) {
  describe.skipIf(backend.skip)(`MCP servers: ${backend.name}`, () => {
    let s: StartedApp
    let mcp: McpTestServer
    beforeAll(async () => {
      mcp = await new McpTestServer().start()
      s = await startApp(backend)
    })
    afterAll(async () => {
      await s?.close()
      await mcp?.close()
    })

    const put = async (name: string, body: Record<string, unknown>, tenant = TENANT_A) =>
      await s.app.inject({ method: 'PUT', url: `/mcp-servers/${name}`, headers: auth(tenant), payload: body })
    const get = async (name: string, tenant = TENANT_A) =>
      await s.app.inject({ method: 'GET', url: `/mcp-servers/${name}`, headers: auth(tenant) })

    it('registers a server after connecting and listing: its tools with run names, effects and annotations; secrets write-only', async () => {
      const res = await put('files', { url: mcp.url, headers: { authorization: 'Bearer mcp-secret-token' }, oauth: undefined })
      expect(res.statusCode, res.body).toBe(201)
      const body = res.json()
      expect(body).toMatchObject({ object: 'mcp_server', name: 'files', url: mcp.url, header_names: ['authorization'], trust_annotations: false, allowed_tools: null })
      expect(body.tools.map((t: { run_name: string }) => t.run_name)).toEqual(standardTools().map((t) => `files__${t.name}`))
      const read = body.tools.find((t: { name: string }) => t.name === 'read')
      // Annotations are shown, but untrusted by default: every tool is side_effecting.
      expect(read).toMatchObject({ run_name: 'files__read', effect: 'side_effecting', annotations: { readOnlyHint: true } })
      expect(res.body).not.toContain('mcp-secret-token')
      const again = await get('files')
      expect(again.statusCode).toBe(200)
      expect(again.body).not.toContain('mcp-secret-token')
      // A replace answers 200.
      expect((await put('files', { url: mcp.url })).statusCode).toBe(200)
    })

    it('effect classes: trusted annotations, and overrides over them', async () => {
      const res = await put('trusted', { url: mcp.url, trust_annotations: true, overrides: { write: { effect: 'idempotent' }, echo: { effect: 'read_only' } } })
      expect(res.statusCode, res.body).toBe(201)
      const effects = Object.fromEntries(res.json().tools.map((t: { name: string, effect: string }) => [t.name, t.effect]))
      expect(effects).toMatchObject({ read: 'read_only', upsert: 'idempotent', write: 'idempotent', echo: 'read_only', fail: 'side_effecting' })
    })

    it('an allow-list limits the tools offered; a name the server does not list is refused', async () => {
      const res = await put('narrow', { url: mcp.url, tools: ['echo', 'read'] })
      expect(res.statusCode, res.body).toBe(201)
      expect(res.json().tools.map((t: { name: string }) => t.name)).toEqual(['echo', 'read'])
      const bad = await put('narrow2', { url: mcp.url, tools: ['echo', 'nope'] })
      expect(bad.statusCode).toBe(400)
      expect(bad.json()).toMatchObject({ code: 'MCP_ERR_UNKNOWN_TOOL' })
      expect(bad.json().message).toContain('nope')
    })

    it('a server that cannot be reached is a 400 MCP_ERR_UNREACHABLE quoting the cause, and nothing is stored', async () => {
      const port = await freePort()
      const res = await put('down', { url: `http://127.0.0.1:${port}/mcp` })
      expect(res.statusCode).toBe(400)
      expect(res.json()).toMatchObject({ code: 'MCP_ERR_UNREACHABLE' })
      expect(res.json().message).toContain('connection refused')
      expect((await get('down')).statusCode).toBe(404)
    })

    it('a server that answers something else than MCP fails the handshake: 400, nothing stored', async () => {
      const broken = await new McpTestServer().start()
      broken.breakWith('garbage')
      try {
        const res = await put('garbage', { url: broken.url })
        expect(res.statusCode).toBe(400)
        expect(res.json()).toMatchObject({ code: 'MCP_ERR_UNREACHABLE' })
        expect((await get('garbage')).statusCode).toBe(404)
      } finally {
        await broken.close()
      }
    })

    it('a URL that is not http(s) is refused', async () => {
      const res = await put('stdio', { url: 'stdio://my-server' })
      expect(res.statusCode).toBe(400)
      expect(res.json()).toMatchObject({ code: 'MCP_ERR_INVALID_URL' })
    })

    it('another tenant\'s server answers 404, and is not listed', async () => {
      expect((await get('files', TENANT_B)).statusCode).toBe(404)
      expect((await get('files', TENANT_B)).json()).toMatchObject({ code: 'MCP_ERR_NOT_FOUND' })
      expect((await s.app.inject({ method: 'DELETE', url: '/mcp-servers/files', headers: auth(TENANT_B) })).statusCode).toBe(404)
      expect((await s.app.inject({ method: 'POST', url: '/mcp-servers/files/refresh', headers: auth(TENANT_B) })).statusCode).toBe(404)
      const list = await s.app.inject({ method: 'GET', url: '/mcp-servers', headers: auth(TENANT_B) })
      expect(list.json().data).toEqual([])
    })

    it('lists, refreshes after the server\'s tools changed, and deletes', async () => {
      const changing = await new McpTestServer([{ name: 'one', run: () => ({ content: [] }) }]).start()
      try {
        expect((await put('changing', { url: changing.url })).statusCode).toBe(201)
        const list = await s.app.inject({ method: 'GET', url: '/mcp-servers?limit=100', headers: auth(TENANT_A) })
        expect(list.json().data.map((d: { name: string }) => d.name)).toContain('changing')
        changing.setTools([{ name: 'two', run: () => ({ content: [] }) }])
        const refreshed = await s.app.inject({ method: 'POST', url: '/mcp-servers/changing/refresh', headers: auth(TENANT_A) })
        expect(refreshed.statusCode, refreshed.body).toBe(200)
        expect(refreshed.json().tools.map((t: { name: string }) => t.name)).toEqual(['two'])
        const deleted = await s.app.inject({ method: 'DELETE', url: '/mcp-servers/changing', headers: auth(TENANT_A) })
        expect(deleted.json()).toEqual({ id: 'changing', object: 'mcp_server', deleted: true })
        expect((await get('changing')).statusCode).toBe(404)
      } finally {
        await changing.close()
      }
    })

    it('notifications/tools/list_changed updates the stored list', async () => {
      const changing = await new McpTestServer([{ name: 'first', run: () => ({ content: [{ type: 'text', text: 'first' }] }) }]).start()
      try {
        expect((await put('notifying', { url: changing.url })).statusCode).toBe(201)
        // The replica's shared connection is opened by a refresh (a run's call would open it too).
        expect((await s.app.inject({ method: 'POST', url: '/mcp-servers/notifying/refresh', headers: auth(TENANT_A) })).statusCode).toBe(200)
        changing.setTools([{ name: 'second', run: () => ({ content: [] }) }])
        await expect.poll(async () => (await get('notifying')).json().tools.map((t: { name: string }) => t.name), { timeout: 5000 }).toEqual(['second'])
      } finally {
        await changing.close()
      }
    })
  })
}

describe('MCP servers and the egress policy', () => {
  it('a loopback URL is refused without TOOL_EGRESS_ALLOW, at registration', async () => {
    const mcp = await new McpTestServer().start()
    const s = await startApp(backends[0]!, { env: { TOOL_EGRESS_ALLOW: null } })
    try {
      const res = await s.app.inject({ method: 'PUT', url: '/mcp-servers/local', headers: auth(TENANT_A), payload: { url: mcp.url } })
      expect(res.statusCode).toBe(400)
      expect(res.json()).toMatchObject({ code: 'MCP_ERR_URL_NOT_ALLOWED' })
      expect(res.json().message).toContain('TOOL_EGRESS_ALLOW')
      expect(mcp.initializations).toBe(0)
    } finally {
      await s.close()
      await mcp.close()
    }
  })

  it('a name that resolves to loopback is refused on the connection itself (DNS rebinding)', async () => {
    const mcp = await new McpTestServer().start()
    // Resolves to a public address when checked, to loopback when connected.
    let lookups = 0
    const resolver = (_host: string, callback: (err: NodeJS.ErrnoException | null, addresses: Array<{ address: string, family: number }>) => void): void => {
      lookups++
      callback(null, [{ address: lookups === 1 ? '93.184.216.34' : '127.0.0.1', family: 4 }])
    }
    const s = await startApp(backends[0]!, { env: { TOOL_EGRESS_ALLOW: null }, resolver })
    try {
      const port = new URL(mcp.url).port
      const res = await s.app.inject({ method: 'PUT', url: '/mcp-servers/rebound', headers: auth(TENANT_A), payload: { url: `http://rebind.test:${port}/mcp` } })
      expect(res.statusCode).toBe(400)
      expect(res.json()).toMatchObject({ code: 'MCP_ERR_UNREACHABLE' })
      expect(res.json().message).toContain('egress policy')
      expect(mcp.initializations).toBe(0)
    } finally {
      await s.close()
      await mcp.close()
    }
  })
})
