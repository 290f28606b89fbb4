import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { pathToFileURL } from 'node:url'
import { fromJsonSchema, McpServer } from '@modelcontextprotocol/server'
import { NodeStreamableHTTPServerTransport } from '@modelcontextprotocol/node'

/**
 * An example MCP server, as a team that already runs its tools as MCP servers would have one: built
 * with the official server SDK, spoken to over Streamable HTTP at `/mcp`, with sessions. Its answers
 * are made up (no network). Register it with
 * `PUT /mcp-servers/travel { "url": "http://127.0.0.1:3002/mcp", "trust_annotations": true }`; its
 * tools are then `travel__get_forecast`, `travel__convert_currency` and `travel__book_table` in runs.
 * `sleep` (ms) is for the benchmark (bench/mcp.ts).
 */

const FORECASTS: Record<string, string> = {
  paris: 'Light rain in the morning, 14 °C; dry afternoon, 17 °C.',
  tokyo: 'Clear skies all day, 19 °C.',
  london: 'Overcast, 11 °C, drizzle after 16:00.',
  sydney: 'Sunny, 24 °C, a sea breeze in the afternoon.'
}
const RATES_TO_USD: Record<string, number> = { USD: 1, EUR: 1.08, GBP: 1.27, JPY: 0.0067, AUD: 0.66 }

function register (mcp: McpServer): void {
  mcp.registerTool('get_forecast', {
    description: 'Tomorrow\'s weather forecast for a city.',
    inputSchema: fromJsonSchema({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }),
    annotations: { readOnlyHint: true }
  }, async (args) => {
    const { city } = args as { city: string }
    await sleep(200 + Math.random() * 300)
    const forecast = FORECASTS[city.toLowerCase()]
    if (forecast === undefined) return { content: [{ type: 'text', text: `No forecast for ${city}.` }], isError: true }
    return { content: [{ type: 'text', text: `${city}: ${forecast}` }] }
  })
  mcp.registerTool('convert_currency', {
    description: 'Converts an amount between currencies (USD, EUR, GBP, JPY, AUD).',
    inputSchema: fromJsonSchema({ type: 'object', properties: { amount: { type: 'number' }, from: { type: 'string' }, to: { type: 'string' } }, required: ['amount', 'from', 'to'] }),
    annotations: { readOnlyHint: true, idempotentHint: true }
  }, async (args) => {
    const { amount, from, to } = args as { amount: number, from: string, to: string }
    const a = RATES_TO_USD[from.toUpperCase()]
    const b = RATES_TO_USD[to.toUpperCase()]
    if (a === undefined || b === undefined) return { content: [{ type: 'text', text: `Unknown currency: ${a === undefined ? from : to}.` }], isError: true }
    const value = Math.round(amount * a / b * 100) / 100
    return { content: [{ type: 'text', text: `${amount} ${from.toUpperCase()} = ${value} ${to.toUpperCase()}` }], structuredContent: { value, currency: to.toUpperCase() } }
  })
  mcp.registerTool('book_table', {
    description: 'Books a restaurant table (a side effect: not retried after a failure).',
    inputSchema: fromJsonSchema({ type: 'object', properties: { restaurant: { type: 'string' }, people: { type: 'integer' } }, required: ['restaurant', 'people'] }),
    annotations: { destructiveHint: false }
  }, async (args, ctx) => {
    const { restaurant, people } = args as { restaurant: string, people: number }
    const key = String(ctx.mcpReq._meta?.['switchboard/idempotency_key'] ?? randomUUID())
    return { content: [{ type: 'text', text: `Booked ${restaurant} for ${people} (reference ${key.slice(-8)}).` }] }
  })
  mcp.registerTool('sleep', {
    description: 'Waits `ms` milliseconds (100 by default), then answers.',
    inputSchema: fromJsonSchema({ type: 'object', additionalProperties: true }),
    annotations: { readOnlyHint: true }
  }, async (args, ctx) => {
    const ms = Number((args as { ms?: number }).ms ?? 100)
    await sleep(ms, undefined, { signal: ctx.mcpReq.signal }).catch(() => {})
    return { content: [{ type: 'text', text: `slept ${ms} ms` }] }
  })
}

/** Starts the example MCP server on `port` (0: any free one) and `host`. */
export async function startDemoMcpServer (port = 0, host = '127.0.0.1'): Promise<{ url: string, server: Server, close: () => Promise<void> }> {
  const sessions = new Map<string, NodeStreamableHTTPServerTransport>()
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.url?.split('?')[0] !== '/mcp') {
      res.writeHead(req.url === '/healthz' ? 200 : 404, { 'content-type': 'text/plain' }).end(req.url === '/healthz' ? 'ok' : 'not found')
      return
    }
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const text = Buffer.concat(chunks).toString('utf8')
    const body: unknown = text === '' ? undefined : JSON.parse(text)
    const sessionId = req.headers['mcp-session-id']
    if (typeof sessionId === 'string') {
      const transport = sessions.get(sessionId)
      if (transport === undefined) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null }))
        return
      }
      await transport.handleRequest(req, res, body)
      return
    }
    const mcp = new McpServer({ name: 'switchboard-demo-travel', version: '1.0.0' })
    register(mcp)
    const transport: NodeStreamableHTTPServerTransport = new NodeStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id: string) => { sessions.set(id, transport) }
    } as ConstructorParameters<typeof NodeStreamableHTTPServerTransport>[0])
    transport.onclose = () => { if (transport.sessionId !== undefined) sessions.delete(transport.sessionId) }
    await mcp.connect(transport)
    await transport.handleRequest(req, res, body)
  }
  const server = createServer((req, res) => { handle(req, res).catch(() => res.destroy()) })
  await new Promise<void>((resolve) => server.listen(port, host, resolve))
  const address = server.address() as AddressInfo
  return {
    url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${address.port}/mcp`,
    server,
    close: async () => {
      for (const transport of sessions.values()) await transport.close().catch(() => {})
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

// Run alone (`tsx demo/mcp-server.ts`, or the compose stack's `mcp-server` service): PORT (3002) and HOST.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { url, close } = await startDemoMcpServer(Number(process.env.PORT ?? 3002), process.env.HOST ?? '127.0.0.1')
  process.stdout.write(`${JSON.stringify({ url })}\n`)
  const stop = (): void => { close().finally(() => process.exit(0)) }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}
