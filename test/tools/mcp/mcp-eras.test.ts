import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { auth, TENANT_A } from '../../support/app.js'
import { backends } from '../../support/backends.js'
import { startHarness, type Harness } from '../../support/harness.js'
import { McpTestServer, runOneCall, standardTools } from '../../support/mcp-server.js'
import { freePort } from '../../support/process.js'

// Both protocol eras (SPEC §11): the client probes with server/discover; a 2026-07-28 server
// answers it, a 2025-11-25 one does not, and is spoken to after initialize.
for (const backend of backends) {
  describe.skipIf(backend.skip)(`MCP protocol eras: ${backend.name}`, () => {
    let h: Harness
    const servers: Record<'legacy' | 'modern' | 'both', McpTestServer> = {} as never
    beforeAll(async () => {
      servers.legacy = await new McpTestServer(standardTools(), { eras: 'legacy' }).start()
      servers.modern = await new McpTestServer(standardTools(), { eras: 'modern' }).start()
      servers.both = await new McpTestServer(standardTools(), { eras: 'both' }).start()
      h = await startHarness(backend)
    })
    afterAll(async () => {
      await h?.close()
      await Promise.all(Object.values(servers).map(async (s) => { await s.close() }))
    })

    const put = async (name: string, body: Record<string, unknown>) =>
      await h.app.inject({ method: 'PUT', url: `/mcp-servers/${name}`, headers: auth(TENANT_A), payload: body })
    const get = async (name: string) => await h.app.inject({ method: 'GET', url: `/mcp-servers/${name}`, headers: auth(TENANT_A) })

    it('a 2025-11-25 server is spoken to after initialize: GET shows its revision, and its tools are called', async () => {
      const res = await put('old', { url: servers.legacy.url, overrides: { hang: { timeout_ms: 300 } } })
      expect(res.statusCode, res.body).toBe(201)
      expect(res.json().protocol_version).toBe('2025-11-25')
      expect((await get('old')).json().protocol_version).toBe('2025-11-25')
      const { text } = await runOneCall(h, 'old__echo', { q: 1 })
      expect(text).toBe('echo {"q":1}')
      expect(servers.legacy.callsOf('echo').map((c) => c.era)).toEqual(['legacy'])
    })

    it('a 2026-07-28 server, which refuses initialize, is spoken to after server/discover: GET shows its revision, calls carry _meta and traceparent', async () => {
      const res = await put('new', { url: servers.modern.url, overrides: { hang: { timeout_ms: 300 } } })
      expect(res.statusCode, res.body).toBe(201)
      expect(res.json().protocol_version).toBe('2026-07-28')
      expect(res.json().tools.map((t: { run_name: string }) => t.run_name)).toContain('new__echo')
      expect((await get('new')).json().protocol_version).toBe('2026-07-28')
      const { text, run } = await runOneCall(h, 'new__echo', { q: 2 })
      expect(text).toBe('echo {"q":2}')
      const [call] = servers.modern.callsOf('echo')
      expect(call!.era).toBe('modern')
      const toolUseId = String(call!.meta!['switchboard/tool_use_id'])
      expect(call!.meta).toMatchObject({ 'switchboard/run_id': run.id, 'switchboard/idempotency_key': `${String(run.id)}:${toolUseId}` })
      expect(String(call!.headers.traceparent)).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/)
    })

    it('on a 2026-07-28 server, isError is is_error and a hanging tool times out with the call cancelled at the server', async () => {
      const failed = await runOneCall(h, 'new__fail')
      expect(failed).toMatchObject({ text: 'the tool broke', isError: true })
      const hung = await runOneCall(h, 'new__hang')
      expect(hung.text).toBe('Tool new__hang timed out after 300 ms')
      await expect.poll(() => servers.modern.callsOf('hang').every((c) => c.cancelled)).toBe(true)
    })

    it('a 2026-07-28 server\'s notifications/tools/list_changed (on its subscriptions/listen stream) updates the stored list', async () => {
      const moving = await new McpTestServer(standardTools(), { eras: 'modern' }).start()
      try {
        expect((await put('moving', { url: moving.url })).statusCode).toBe(201)
        // A call opens this replica's connection, which listens for changes.
        await runOneCall(h, 'moving__echo')
        moving.setTools([...standardTools(), { name: 'fresh', description: 'New.', run: () => ({ content: [{ type: 'text', text: 'fresh' }] }) }])
        await expect.poll(async () => (await get('moving')).json().tools.map((t: { name: string }) => t.name), { timeout: 5000 }).toContain('fresh')
      } finally {
        await moving.close()
      }
    })

    it('a server that speaks both eras is spoken to in the newer', async () => {
      const res = await put('bilingual', { url: servers.both.url })
      expect(res.statusCode, res.body).toBe(201)
      expect(res.json().protocol_version).toBe('2026-07-28')
      await runOneCall(h, 'bilingual__echo')
      expect(servers.both.callsOf('echo').map((c) => c.era)).toEqual(['modern'])
      expect(servers.both.initializations).toBe(0)
    })

    it('a failed connection names its cause, whichever era was tried first: connection refused, HTTP 401', async () => {
      const refused = await put('down', { url: `http://127.0.0.1:${await freePort()}/mcp` })
      expect(refused.statusCode).toBe(400)
      expect(refused.json()).toMatchObject({ code: 'MCP_ERR_UNREACHABLE' })
      expect(refused.json().message).toContain(': connection refused.')
      const locked = await new McpTestServer(standardTools(), { eras: 'both', auth: { authorizationServer: 'http://127.0.0.1:9/', verify: () => false } }).start()
      try {
        const denied = await put('locked', { url: locked.url })
        expect(denied.statusCode).toBe(400)
        expect(denied.json()).toMatchObject({ code: 'MCP_ERR_UNREACHABLE' })
        expect(denied.json().message).toContain('it answered HTTP 401 (check its headers or oauth credentials)')
      } finally {
        await locked.close()
      }
      expect((await get('down')).statusCode).toBe(404)
      expect((await get('locked')).statusCode).toBe(404)
    })

    it('a 2026-07-28 server that goes away: its calls are is_error results saying the connection was refused', async () => {
      const gone = await new McpTestServer(standardTools(), { eras: 'modern' }).start()
      expect((await put('gone', { url: gone.url, trust_annotations: true, defaults: { max_attempts: 1 } })).statusCode).toBe(201)
      await gone.close()
      const { text, isError } = await runOneCall(h, 'gone__read')
      expect(isError).toBe(true)
      expect(text).toContain('(tool read of MCP server gone) could not be reached: connection refused')
    })
  })
}
