import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { auth, TENANT_A } from '../../support/app.js'
import { startHarness, type Harness } from '../../support/harness.js'
import { McpTestServer, runOneCall, standardTools } from '../../support/mcp-server.js'

const LIMIT = 256 * 1024

// TOOL_MAX_RESPONSE_BYTES bounds what is read of an MCP server's answer (a JSON body, or an event
// of an SSE stream), as of a webhook's: a hostile server sending 1 GB costs the limit, and the call
// is an is_error result naming it.
describe('MCP answers and TOOL_MAX_RESPONSE_BYTES', () => {
  let h: Harness
  let mcp: McpTestServer
  beforeAll(async () => {
    mcp = await new McpTestServer(standardTools()).start()
    h = await startHarness(undefined, { env: { TOOL_MAX_RESPONSE_BYTES: String(LIMIT) } })
    const res = await h.app.inject({ method: 'PUT', url: '/mcp-servers/hostile', headers: auth(TENANT_A), payload: { url: mcp.url, defaults: { max_attempts: 1 } } })
    expect(res.statusCode, res.body).toBe(201)
  })
  afterAll(async () => {
    await h?.close()
    await mcp?.close()
  })

  for (const how of ['huge-json', 'huge-sse'] as const) {
    it(`an answer of 1 GB (${how === 'huge-json' ? 'one JSON body' : 'one endless SSE event'}) is cut at the limit: an is_error result naming it, and the server stops sending`, async () => {
      mcp.answerCallsWith(how)
      mcp.hostileBytes = 0
      try {
        const { text, isError, completed } = await runOneCall(h, 'hostile__echo')
        expect(isError).toBe(true)
        expect(text).toBe(`Tool hostile__echo (tool echo of MCP server hostile) failed: the server's answer was longer than ${LIMIT} bytes (TOOL_MAX_RESPONSE_BYTES) and was cut there`)
        expect(completed.data).toMatchObject({ is_error: true })
        // The client hung up: the server wrote what the socket buffers took, far from 1 GB.
        await expect.poll(() => mcp.hostileBytes).toBeGreaterThan(LIMIT)
        expect(mcp.hostileBytes).toBeLessThan(64 * 1024 * 1024)
      } finally {
        mcp.answerCallsWith(null)
      }
      const { text } = await runOneCall(h, 'hostile__echo', { after: how })
      expect(text).toBe(`echo {"after":"${how}"}`)
    })
  }

  it('an answer\'s SSE stream is bounded by the event: 2 MB of small notifications, then the result, is answered', async () => {
    mcp.answerCallsWith('chatty-sse')
    try {
      const { text, isError } = await runOneCall(h, 'hostile__echo')
      expect({ text, isError }).toEqual({ text: 'chatty', isError: false })
    } finally {
      mcp.answerCallsWith(null)
    }
  })
})
