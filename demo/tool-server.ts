import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import { Webhook } from 'standardwebhooks'

/**
 * An example tool server, as a backend team would write one: each tool is a POST endpoint that
 * verifies Switchboard's Standard Webhooks signature, reads `input`, and answers JSON. Its answers
 * are made up (no network), and each takes a realistic while, so that the demo shows what running
 * calls in parallel saves.
 */

interface Call { tool: string, input: Record<string, unknown>, run_id: string, attempt: number }

const CITIES: Record<string, { zone: string, temperature: number, conditions: string }> = {
  paris: { zone: 'Europe/Paris', temperature: 14, conditions: 'light rain' },
  tokyo: { zone: 'Asia/Tokyo', temperature: 19, conditions: 'clear skies' },
  'new york': { zone: 'America/New_York', temperature: 9, conditions: 'windy, partly cloudy' },
  london: { zone: 'Europe/London', temperature: 11, conditions: 'overcast' },
  sydney: { zone: 'Australia/Sydney', temperature: 24, conditions: 'sunny' },
  'são paulo': { zone: 'America/Sao_Paulo', temperature: 27, conditions: 'thunderstorms later' }
}

const RATES_TO_USD: Record<string, number> = { USD: 1, EUR: 1.08, GBP: 1.27, JPY: 0.0067, AUD: 0.66, BRL: 0.19 }

export const DEMO_TOOLS = {
  get_weather: {
    description: 'Current weather for a city: temperature in °C and conditions.',
    input_schema: { type: 'object', properties: { city: { type: 'string', description: 'City name, e.g. Paris' } }, required: ['city'], additionalProperties: false },
    effect: 'read_only',
    timeout_ms: 5000
  },
  get_local_time: {
    description: 'The current local time in a city.',
    input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false },
    effect: 'read_only',
    timeout_ms: 5000
  },
  convert_currency: {
    description: 'Converts an amount between currencies (USD, EUR, GBP, JPY, AUD, BRL).',
    input_schema: {
      type: 'object',
      properties: { amount: { type: 'number' }, from: { type: 'string', minLength: 3, maxLength: 3 }, to: { type: 'string', minLength: 3, maxLength: 3 } },
      required: ['amount', 'from', 'to'],
      additionalProperties: false
    },
    effect: 'idempotent',
    timeout_ms: 5000
  }
} as const

export type DemoToolName = keyof typeof DEMO_TOOLS

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** How long each answer takes: weather is the slowest, a currency rate the quickest. */
const LATENCY: Record<DemoToolName, [number, number]> = { get_weather: [350, 700], get_local_time: [120, 250], convert_currency: [200, 400] }

function answer (tool: DemoToolName, input: Record<string, unknown>): { status: number, body: unknown } {
  if (tool === 'convert_currency') {
    const from = String(input.from).toUpperCase()
    const to = String(input.to).toUpperCase()
    if (RATES_TO_USD[from] === undefined || RATES_TO_USD[to] === undefined) return { status: 200, body: { content: `No rate for ${from} to ${to}.`, is_error: true } }
    const amount = Number(input.amount)
    return { status: 200, body: { amount, from, to, result: Math.round(amount * RATES_TO_USD[from]! / RATES_TO_USD[to]! * 100) / 100 } }
  }
  const city = CITIES[String(input.city).toLowerCase()]
  if (city === undefined) return { status: 200, body: { content: `I do not know the city ${String(input.city)}.`, is_error: true } }
  if (tool === 'get_weather') return { status: 200, body: { city: input.city, temperature_c: city.temperature, conditions: city.conditions } }
  const time = new Intl.DateTimeFormat('en-GB', { timeZone: city.zone, hour: '2-digit', minute: '2-digit', weekday: 'long' }).format(new Date())
  return { status: 200, body: { city: input.city, local_time: time, time_zone: city.zone } }
}

export class DemoToolServer {
  /** Signing secrets by tool name, once registered: calls are verified with them. */
  readonly secrets = new Map<string, string>()
  readonly #server: Server
  #url = ''

  constructor () {
    this.#server = createServer((req, res) => { this.#handle(req, res).catch(() => res.destroy()) })
  }

  get url (): string {
    return this.#url
  }

  async start (port = 0, host = '127.0.0.1'): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(port, host, resolve))
    const address = this.#server.address() as AddressInfo
    this.#url = `http://${host}:${address.port}`
    return this
  }

  async close (): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  async #handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const raw = Buffer.concat(chunks).toString('utf8')
    const url = new URL(req.url ?? '/', 'http://tool-server')
    const tool = url.pathname.replace(/^\/tools\//, '') as DemoToolName
    if (req.method !== 'POST' || !(tool in DEMO_TOOLS)) return send(res, 404, { error: 'no such tool' })
    const secret = this.secrets.get(tool)
    if (secret !== undefined) {
      try {
        // Any Standard Webhooks library checks the signature, and refuses stale timestamps.
        new Webhook(secret).verify(raw, req.headers as Record<string, string>)
      } catch {
        return send(res, 401, { error: 'bad signature' })
      }
    }
    const call = JSON.parse(raw) as Call
    const [min, max] = LATENCY[tool]
    await sleep(slowness(url) ?? min + Math.random() * (max - min))
    const { status, body } = answer(tool, call.input)
    send(res, status, body)
  }
}

/**
 * `?delay_ms=N` on a tool's URL makes every answer take N ms (at most ten minutes): register a tool
 * that way to watch a timeout, a cancel, or another replica taking over a run whose replica died.
 */
function slowness (url: URL): number | undefined {
  const delay = Number(url.searchParams.get('delay_ms') ?? Number.NaN)
  return Number.isFinite(delay) && delay >= 0 ? Math.min(delay, 600_000) : undefined
}

function send (res: ServerResponse, status: number, body: unknown): void {
  if (res.destroyed) return
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

// Run on its own, as the compose stack's `tools` service: `node dist/demo/tool-server.js` (or
// `npx tsx demo/tool-server.ts`), listening on PORT (4000) and HOST (127.0.0.1). It then knows no
// signing secret (Switchboard makes one when a tool is registered), so it does not check signatures.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const server = await new DemoToolServer().start(Number(process.env.PORT ?? 4000), process.env.HOST ?? '127.0.0.1')
  process.stdout.write(`demo tool server on ${server.url}/tools/{${Object.keys(DEMO_TOOLS).join(',')}} (signatures not checked; ?delay_ms=N slows a tool down)\n`)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => { server.close().then(() => process.exit(0), () => process.exit(1)) })
}
