import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { auth, TENANT_A } from '../../support/app.js'
import { backends } from '../../support/backends.js'
import { startHarness, type Harness } from '../../support/harness.js'
import { capturingLog } from '../../support/log.js'
import { McpTestServer, runOneCall, standardTools } from '../../support/mcp-server.js'
import { OAuthTestServer } from '../../support/oauth-server.js'

const CLIENT_ID = 'switchboard-client'
const CLIENT_SECRET = 'oauth-client-secret-7f3a9c'

// OAuth client credentials (SPEC §11): the MCP server is behind bearer auth; the client finds the
// authorization server from the server's 401 (RFC 9728 metadata, then RFC 8414's) and asks it for
// a token with the client's id and secret.
for (const backend of backends) {
  describe.skipIf(backend.skip)(`MCP servers behind OAuth client credentials: ${backend.name}`, () => {
    let h: Harness
    let oauth: OAuthTestServer
    let mcp: McpTestServer
    const logs = capturingLog()
    beforeAll(async () => {
      oauth = await new OAuthTestServer({ id: CLIENT_ID, secret: CLIENT_SECRET }).start()
      mcp = await new McpTestServer(standardTools(), { eras: 'both', auth: { authorizationServer: oauth.issuer, verify: (token) => oauth.verify(token) !== null } }).start()
      h = await startHarness(backend, { logger: logs.log, env: { LOG_LEVEL: 'trace' } })
    })
    afterAll(async () => {
      await h?.close()
      await mcp?.close()
      await oauth?.close()
    })

    const put = async (name: string, body: Record<string, unknown>) =>
      await h.app.inject({ method: 'PUT', url: `/mcp-servers/${name}`, headers: auth(TENANT_A), payload: body })

    it('registers with client credentials: a token is asked for with them, and the server\'s tools are listed with it', async () => {
      const res = await put('vault', { url: mcp.url, oauth: { client_id: CLIENT_ID, client_secret: CLIENT_SECRET, scope: 'tools', issuer: oauth.issuer } })
      expect(res.statusCode, res.body).toBe(201)
      expect(res.json().tools.map((t: { name: string }) => t.name)).toContain('echo')
      expect(res.json().oauth).toEqual({ client_id: CLIENT_ID, scope: 'tools', issuer: oauth.issuer, has_client_secret: true })
      const [request] = oauth.tokenRequests
      expect(request!.form).toMatchObject({ grant_type: 'client_credentials', scope: 'tools' })
      expect(request!.authorization).toBe(`Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`)
      const { text } = await runOneCall(h, 'vault__echo', { q: 'locked' })
      expect(text).toBe('echo {"q":"locked"}')
    })

    it('a wrong client secret is a 400 at registration saying the credentials were refused, and nothing is stored', async () => {
      const res = await put('wrong', { url: mcp.url, oauth: { client_id: CLIENT_ID, client_secret: 'not-the-secret-000' } })
      expect(res.statusCode).toBe(400)
      expect(res.json()).toMatchObject({ code: 'MCP_ERR_UNREACHABLE' })
      expect(res.json().message).toContain('the authorization server refused the client credentials (invalid_client)')
      expect(res.body).not.toContain('not-the-secret-000')
      expect((await h.app.inject({ method: 'GET', url: '/mcp-servers/wrong', headers: auth(TENANT_A) })).statusCode).toBe(404)
    })

    it('with issuer, the credentials go to that authorization server only: one the MCP server names instead is refused, and is sent nothing', async () => {
      const impostor = await new OAuthTestServer({ id: CLIENT_ID, secret: CLIENT_SECRET }).start()
      const misled = await new McpTestServer(standardTools(), { auth: { authorizationServer: impostor.issuer, verify: (token) => impostor.verify(token) !== null } }).start()
      try {
        const res = await put('misled', { url: misled.url, oauth: { client_id: CLIENT_ID, client_secret: CLIENT_SECRET, issuer: oauth.issuer } })
        expect(res.statusCode).toBe(400)
        expect(res.json()).toMatchObject({ code: 'MCP_ERR_UNREACHABLE' })
        expect(res.json().message, res.body).toContain(impostor.issuer)
        expect(res.body).not.toContain(CLIENT_SECRET)
        expect(impostor.tokenRequests).toEqual([])
      } finally {
        await misled.close()
        await impostor.close()
      }
    })

    it('an expired token is renewed on a call: the call goes through', async () => {
      const before = oauth.tokenRequests.length
      const refused = mcp.unauthorized
      oauth.expireTokens()
      const { text, isError } = await runOneCall(h, 'vault__echo', { q: 'again' })
      expect({ text, isError }).toEqual({ text: 'echo {"q":"again"}', isError: false })
      expect(mcp.unauthorized).toBeGreaterThan(refused)
      expect(oauth.tokenRequests.length).toBeGreaterThan(before)
    })

    it('the client secret is write-only: never in GET, the list, a run\'s events or the log', async () => {
      const one = await h.app.inject({ method: 'GET', url: '/mcp-servers/vault', headers: auth(TENANT_A) })
      const list = await h.app.inject({ method: 'GET', url: '/mcp-servers', headers: auth(TENANT_A) })
      const { run } = await runOneCall(h, 'vault__echo')
      const events = await h.events(String(run.id))
      for (const text of [one.body, list.body, JSON.stringify(events), ...logs.lines()]) expect(text).not.toContain(CLIENT_SECRET)
      expect(one.json().oauth.has_client_secret).toBe(true)
      expect(logs.lines().length).toBeGreaterThan(0)
    })
  })
}
