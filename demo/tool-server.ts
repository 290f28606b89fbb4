import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { pathToFileURL } from 'node:url'
import { Switchboard } from '../clients/typescript/src/index.js'
import { createToolHandler, registerTools, ToolSecrets, type HostedTool, type HostedTools, type ToolCallContext } from '../clients/typescript/src/tools/index.js'

/**
 * An example tool server, as a backend team would write one with the TypeScript client's tool kit
 * (clients/typescript): each tool is a definition and a handler; the kit verifies Switchboard's
 * signatures, checks the input, stops the handler at the call's deadline and answers repeated
 * calls once. Its answers are made up (no network), and each takes a realistic while, so that the
 * demo shows what running calls in parallel saves.
 */

const CITIES: Record<string, { zone: string, temperature: number, conditions: string }> = {
  paris: { zone: 'Europe/Paris', temperature: 14, conditions: 'light rain' },
  tokyo: { zone: 'Asia/Tokyo', temperature: 19, conditions: 'clear skies' },
  'new york': { zone: 'America/New_York', temperature: 9, conditions: 'windy, partly cloudy' },
  london: { zone: 'Europe/London', temperature: 11, conditions: 'overcast' },
  sydney: { zone: 'Australia/Sydney', temperature: 24, conditions: 'sunny' },
  'são paulo': { zone: 'America/Sao_Paulo', temperature: 27, conditions: 'thunderstorms later' }
}

const RATES_TO_USD: Record<string, number> = { USD: 1, EUR: 1.08, GBP: 1.27, JPY: 0.0067, AUD: 0.66, BRL: 0.19 }

/** Waits as long as a real service would (`?delay_ms=N` on the tool's URL: that long), or until the call's deadline. */
async function takeTime (context: ToolCallContext, [min, max]: [number, number]): Promise<void> {
  await sleep(slowness(context.url) ?? min + Math.random() * (max - min), undefined, { signal: context.signal })
}

function city (name: string): { zone: string, temperature: number, conditions: string } {
  const found = CITIES[name.toLowerCase()]
  // A thrown error is an is_error answer: the model reads the message.
  if (found === undefined) throw new Error(`I do not know the city ${name}.`)
  return found
}

export const DEMO_TOOLS = {
  get_weather: {
    description: 'Current weather for a city: temperature in °C and conditions.',
    input_schema: { type: 'object', properties: { city: { type: 'string', description: 'City name, e.g. Paris' } }, required: ['city'], additionalProperties: false },
    effect: 'read_only',
    timeout_ms: 5000,
    handler: async (input: { city: string }, context: ToolCallContext) => {
      await takeTime(context, [350, 700])
      const { temperature, conditions } = city(input.city)
      return { city: input.city, temperature_c: temperature, conditions }
    }
  },
  get_local_time: {
    description: 'The current local time in a city.',
    input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false },
    effect: 'read_only',
    timeout_ms: 5000,
    handler: async (input: { city: string }, context: ToolCallContext) => {
      await takeTime(context, [120, 250])
      const { zone } = city(input.city)
      const time = new Intl.DateTimeFormat('en-GB', { timeZone: zone, hour: '2-digit', minute: '2-digit', weekday: 'long' }).format(new Date())
      return { city: input.city, local_time: time, time_zone: zone }
    }
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
    timeout_ms: 5000,
    handler: async (input: { amount: number, from: string, to: string }, context: ToolCallContext) => {
      await takeTime(context, [200, 400])
      const from = input.from.toUpperCase()
      const to = input.to.toUpperCase()
      if (RATES_TO_USD[from] === undefined || RATES_TO_USD[to] === undefined) throw new Error(`No rate for ${from} to ${to}.`)
      return { amount: input.amount, from, to, result: Math.round(input.amount * RATES_TO_USD[from] / RATES_TO_USD[to] * 100) / 100 }
    }
  },
  get_forecast: {
    description: 'The forecast for a city over the next days (1 to 7), from a slow weather model: its answer comes a few seconds after the call.',
    input_schema: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer', minimum: 1, maximum: 7 } }, required: ['city'], additionalProperties: false },
    effect: 'read_only',
    timeout_ms: 5000,
    async_timeout_ms: 60_000,
    // Answers later (SPEC §13): 202 now; the result is posted to the call's result_url once the
    // "model" is done (3 s, or ?delay_ms=N), while the run waits holding nothing.
    handler: (input: { city: string, days?: number }, context: ToolCallContext) => {
      const { temperature, conditions } = city(input.city)
      const later = context.answerLater()
      const days = Array.from({ length: input.days ?? 3 }, (_, i) => ({ day: i + 1, temperature_c: temperature + (i % 3) - 1, conditions }))
      setTimeout(() => { later.send({ city: input.city, forecast: days }).catch(() => {}) }, slowness(context.url) ?? 3000)
      return undefined
    }
  }
} as const satisfies Record<string, HostedTool>

export type DemoToolName = keyof typeof DEMO_TOOLS

export class DemoToolServer {
  /**
   * Signing secrets by tool name, once registered (registerTools fills it): calls of a tool with a
   * secret are verified with it. A tool without one is called unsigned, as the compose stack does.
   */
  readonly secrets = new ToolSecrets()
  readonly #server: Server
  #url = ''

  /** `resultOrigin`: where results posted later go, when Switchboard is reached at another address than its callers use. */
  constructor (options: { resultOrigin?: string | undefined } = {}) {
    // Every tool could share one URL (the kit routes on the call's `tool`); each has its own,
    // /tools/<name>, so that ?delay_ms can slow one down.
    this.#server = createServer(createToolHandler({ tools: DEMO_TOOLS, secrets: this.secrets, allowUnsigned: true, resultOrigin: options.resultOrigin }))
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
}

/**
 * `?delay_ms=N` on a tool's URL makes every answer take N ms (at most ten minutes): register a tool
 * that way to watch a timeout, a cancel, or another replica taking over a run whose replica died.
 */
function slowness (path: string): number | undefined {
  const delay = Number(new URL(path, 'http://tool-server').searchParams.get('delay_ms') ?? Number.NaN)
  return Number.isFinite(delay) && delay >= 0 ? Math.min(delay, 600_000) : undefined
}

/** The tools that answer later (get_forecast): they sign their results, so they need a secret. */
const LATER_TOOLS = Object.fromEntries(Object.entries(DEMO_TOOLS).filter(([, tool]) => 'async_timeout_ms' in tool)) as HostedTools

/** The key of the first `tenant:key` pair of an API_KEYS list (none given by digest). */
function firstKey (apiKeys: string | undefined): string | undefined {
  return (apiKeys ?? '').split(',').map((pair) => pair.trim().split(':')).find((parts) => parts.length === 2 && parts[1] !== '')?.[1]
}

/**
 * Registers the tools that answer later with Switchboard at `baseURL`, as reached at `toolsUrl`,
 * so that the server knows their secrets (a restart rotates them), trying every 2 s for 3 minutes
 * while Switchboard starts.
 */
async function registerLaterTools (server: DemoToolServer, baseURL: string, apiKey: string, toolsUrl: string): Promise<void> {
  const client = new Switchboard({ baseURL, apiKey })
  for (let attempt = 1; ; attempt++) {
    try {
      await registerTools(client, { url: (name) => `${toolsUrl}/tools/${name}`, tools: LATER_TOOLS, secrets: server.secrets })
      process.stdout.write(`registered ${Object.keys(LATER_TOOLS).join(', ')} with ${baseURL}: results posted later are signed\n`)
      return
    } catch (err) {
      if (attempt >= 90) throw err
      await sleep(2000)
    }
  }
}

// Run on its own, as the compose stack's `tools` service: `node dist/demo/tool-server.js` (or
// `npx tsx demo/tool-server.ts`), listening on PORT (4000) and HOST (127.0.0.1). It knows no
// signing secret (Switchboard makes one when a tool is registered), so it does not check the
// signatures of the tools you register. Given SWITCHBOARD_URL and SWITCHBOARD_API_KEYS (API_KEYS'
// list: the first key is used), it registers the tools that answer later itself, as reached at
// TOOLS_URL, so that it can sign their results, which it posts to SWITCHBOARD_URL.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const switchboard = process.env.SWITCHBOARD_URL
  const server = await new DemoToolServer({ resultOrigin: switchboard }).start(Number(process.env.PORT ?? 4000), process.env.HOST ?? '127.0.0.1')
  process.stdout.write(`demo tool server on ${server.url}/tools/{${Object.keys(DEMO_TOOLS).join(',')}} (signatures not checked; ?delay_ms=N slows a tool down)\n`)
  const apiKey = firstKey(process.env.SWITCHBOARD_API_KEYS)
  if (switchboard !== undefined && switchboard !== '' && apiKey !== undefined) {
    registerLaterTools(server, switchboard, apiKey, process.env.TOOLS_URL || server.url)
      .catch((err) => { process.stderr.write(`could not register ${Object.keys(LATER_TOOLS).join(', ')} with ${switchboard}: ${String(err)}\n`) })
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => { server.close().then(() => process.exit(0), () => process.exit(1)) })
}
