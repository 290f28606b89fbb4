import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { auth, TENANT_A } from '../../support/app.js'
import { startHarness, type Harness } from '../../support/harness.js'
import { resultText, toolResults, toolsThenAnswer } from '../../support/fake-messages-api.js'
import { startDemoMcpServer } from '../../../demo/mcp-server.js'

describe('the demo\'s example MCP server, as the compose stack runs it', () => {
  let h: Harness
  let server: Awaited<ReturnType<typeof startDemoMcpServer>>
  beforeAll(async () => {
    server = await startDemoMcpServer()
    h = await startHarness()
  })
  afterAll(async () => {
    await h?.close()
    await server?.close()
  })

  it('registers with its tools\' effect classes from trusted annotations, and answers a run\'s calls in one step', async () => {
    const res = await h.app.inject({ method: 'PUT', url: '/mcp-servers/travel', headers: auth(TENANT_A), payload: { url: server.url, trust_annotations: true, tools: ['get_forecast', 'convert_currency', 'book_table'] } })
    expect(res.statusCode, res.body).toBe(201)
    expect(res.json().tools.map((t: { run_name: string, effect: string }) => [t.run_name, t.effect])).toEqual([
      ['travel__get_forecast', 'read_only'], ['travel__convert_currency', 'read_only'], ['travel__book_table', 'side_effecting']
    ])
    h.model.respond = toolsThenAnswer([
      { name: 'travel__get_forecast', input: { city: 'Paris' } },
      { name: 'travel__convert_currency', input: { amount: 100, from: 'EUR', to: 'USD' } },
      { name: 'travel__get_forecast', input: { city: 'Atlantis' } }
    ])
    const { body } = await h.startRun({ input: 'Paris tomorrow, and 100 EUR in USD?', mcp_servers: ['travel'] })
    expect(body.status).toBe('completed')
    const results = toolResults(h.model.requests[h.model.requests.length - 1]!)
    expect(resultText(results[0]!)).toBe('Paris: Light rain in the morning, 14 °C; dry afternoon, 17 °C.')
    expect(resultText(results[1]!)).toBe('100 EUR = 108 USD')
    expect(results[2]).toMatchObject({ is_error: true })
    expect(resultText(results[2]!)).toBe('No forecast for Atlantis.')
  })
})
