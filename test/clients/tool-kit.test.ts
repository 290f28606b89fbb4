import { createServer, type RequestListener, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import { Webhook } from 'standardwebhooks'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createToolHandler, registerTools, Switchboard, switchboardTools, ToolSecrets, type HostedTools, type ToolCallContext } from '../../clients/typescript/src/index.js'
import { backends } from '../support/backends.js'
import { TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { toolResults, turnNumber, type RecordedRequest } from '../support/fake-messages-api.js'

async function listen (listener: RequestListener): Promise<{ url: string, server: Server }> {
  const server = createServer(listener)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server }
}

async function closeServer (server: Server | undefined): Promise<void> {
  if (server === undefined) return
  server.closeAllConnections()
  await new Promise<void>((resolve) => server.close(() => resolve()))
}

/** A call as Switchboard sends it, signed with `secret` at `at`, sent straight to a tool host. */
async function signedCall (url: string, secret: string, body: Record<string, unknown>, options: { key: string, at?: Date, signature?: string }) {
  const raw = JSON.stringify(body)
  const at = options.at ?? new Date()
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'idempotency-key': options.key,
      'webhook-id': options.key,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': options.signature ?? new Webhook(secret).sign(options.key, at, raw)
    },
    body: raw
  })
  return { status: res.status, body: await res.json() as Record<string, any> }
}

const OBJECT = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false }

for (const backend of backends) {
  describe.skipIf(backend.skip)(`the tool kit against the service: ${backend.name}`, () => {
    let h: Harness
    let client: Switchboard
    let host: { url: string, server: Server } | undefined
    /** The listener the host server answers with, swapped by tests. */
    let current: RequestListener = (_req, res) => { res.writeHead(500).end() }
    const runsOf = new Map<string, number>()
    const contexts: ToolCallContext[] = []
    const secrets = new ToolSecrets()

    const tools: HostedTools = {
      weather: {
        description: 'Weather in a city',
        input_schema: OBJECT,
        effect: 'read_only',
        handler: (input: { city: string }, context) => {
          runsOf.set(context.idempotencyKey, (runsOf.get(context.idempotencyKey) ?? 0) + 1)
          contexts.push(context)
          return { city: input.city, temperature_c: 14 }
        }
      },
      greeting: { description: 'A greeting', input_schema: { type: 'object' }, handler: () => 'hello there' },
      report: {
        description: 'Two blocks',
        input_schema: { type: 'object' },
        handler: () => [{ type: 'text', text: 'first part' }, { type: 'text', text: 'second part' }]
      },
      warehouse: {
        description: 'Always fails',
        input_schema: { type: 'object' },
        handler: () => { throw new Error('the warehouse is closed on Sundays') }
      },
      waits: {
        description: 'Waits for its signal',
        input_schema: { type: 'object' },
        timeout_ms: 1000,
        max_attempts: 1,
        handler: async (input: { linger_ms?: number }, context) => {
          await new Promise((resolve) => context.signal.addEventListener('abort', resolve, { once: true }))
          contexts.push(context)
          // Lingering past the deadline makes sure Switchboard has given up before any answer.
          await new Promise((resolve) => setTimeout(resolve, input.linger_ms ?? 0))
          return `stopped: ${(context.signal.reason as Error).name}`
        }
      }
    }

    let results: Array<{ tool_use_id: string, content?: unknown, is_error?: boolean }> = []
    const callEach = (calls: Array<{ name: string, input: unknown }>) => (request: RecordedRequest) => {
      if (turnNumber(request) === 1) return { content: calls.map((c) => ({ type: 'tool_use' as const, ...c })) }
      results = toolResults(request)
      return { content: [{ type: 'text' as const, text: 'done' }] }
    }

    beforeAll(async () => {
      h = await startHarness(backend)
      client = new Switchboard({ baseURL: await h.app.listen({ port: 0, host: '127.0.0.1' }), apiKey: TENANT_A.key })
      host = await listen((req, res) => current(req, res))
      current = createToolHandler({ secrets, tools })
      const registered = await registerTools(client, { url: `${host.url}/calls`, tools, secrets })
      expect(Object.keys(registered.secrets)).toEqual(Object.keys(tools))
    })
    afterAll(async () => {
      await closeServer(host?.server)
      await h?.close()
    })

    it('registers each tool with its definition, and keeps the signing secret each create answered', async () => {
      const weather = await client.tools.get('weather')
      expect(weather).toMatchObject({ url: `${host!.url}/calls`, effect: 'read_only', input_schema: OBJECT })
      expect((await client.tools.get('waits')).timeout_ms).toBe(1000)
      expect(secrets.for('weather')).toHaveLength(1)
      expect(secrets.for('weather')[0]).toMatch(/^whsec_/)
      // Registered again, the tools are replaced and keep their secrets: none is made anew.
      const again = await registerTools(client, { url: `${host!.url}/calls`, tools, secrets })
      expect(again.secrets).toEqual({})
    })

    it('answers calls through a run: JSON values, strings, content blocks, and thrown errors as is_error', async () => {
      h.model.respond = callEach([
        { name: 'weather', input: { city: 'Paris' } },
        { name: 'greeting', input: {} },
        { name: 'report', input: {} },
        { name: 'warehouse', input: {} }
      ])
      const run = await client.runs.create({ input: 'go', tools: ['weather', 'greeting', 'report', 'warehouse'], metadata: { customer: 'c_42' } })
      expect(run.status).toBe('completed')
      expect(run.tool_calls).toEqual({ total: 4, errors: 1 })
      const [weather, greeting, report, warehouse] = results
      expect(JSON.parse(weather!.content as string)).toEqual({ city: 'Paris', temperature_c: 14 })
      expect(greeting!.content).toBe('hello there')
      expect(report!.content).toEqual([{ type: 'text', text: 'first part' }, { type: 'text', text: 'second part' }])
      expect(warehouse).toMatchObject({ is_error: true, content: 'the warehouse is closed on Sundays' })
      expect(weather!.is_error ?? false).toBe(false)
      const context = contexts.at(-1)!
      expect(context).toMatchObject({ runId: run.id, toolUseId: weather!.tool_use_id, idempotencyKey: `${run.id}:${weather!.tool_use_id}`, attempt: 1, metadata: { customer: 'c_42' }, tool: 'weather' })
      expect(context.deadline.getTime()).toBeGreaterThan(Date.parse(run.created_at))
    })

    it('verifies calls during a secret rotation with either secret, and refuses a host that has neither', async () => {
      const first = secrets.for('weather')[0]!
      const { signing_secret: second } = await client.tools.rotateSecret('weather')
      h.model.respond = callEach([{ name: 'weather', input: { city: 'Tokyo' } }])
      try {
        for (const known of [[second], [first], [second, first]]) {
          current = createToolHandler({ secrets: { weather: known }, tools })
          await client.runs.create({ input: 'go', tools: ['weather'] })
          expect(results[0]!.is_error ?? false, `a host knowing ${known.length} secret(s)`).toBe(false)
        }
        current = createToolHandler({ secrets: { weather: 'whsec_' + Buffer.from('not the secret at all, no').toString('base64') }, tools })
        await client.runs.create({ input: 'go', tools: ['weather'] })
        expect(results[0]).toMatchObject({ is_error: true })
        expect(String(results[0]!.content)).toMatch(/HTTP 401 from weather: .*signature does not verify/)
      } finally {
        secrets.add('weather', second)
        current = createToolHandler({ secrets, tools })
      }
    })

    it('refuses stale timestamps and forged signatures', async () => {
      const secret = secrets.for('greeting')[0]!
      const call = { run_id: 'run_1', tool_use_id: 'toolu_stale', tool: 'greeting', input: {}, attempt: 1, deadline: new Date(Date.now() + 10_000).toISOString(), metadata: {} }
      const stale = await signedCall(host!.url, secret, call, { key: 'run_1:toolu_stale', at: new Date(Date.now() - 10 * 60_000) })
      expect(stale.status).toBe(401)
      expect(stale.body.error).toMatch(/timestamp too old/i)
      const forged = await signedCall(host!.url, secret, call, { key: 'run_1:toolu_forged', signature: 'v1,' + Buffer.alloc(32).toString('base64') })
      expect(forged.status).toBe(401)
      const fresh = await signedCall(host!.url, secret, call, { key: 'run_1:toolu_fresh' })
      expect(fresh).toEqual({ status: 200, body: { content: 'hello there' } })
      // A host that knows no secret for a tool refuses its calls, unless told to take them unsigned.
      try {
        current = createToolHandler({ tools })
        const unknown = await signedCall(host!.url, secret, call, { key: 'run_1:toolu_nosecret' })
        expect(unknown.status).toBe(401)
        expect(unknown.body.error).toMatch(/No signing secret is known for greeting/)
        current = createToolHandler({ tools, allowUnsigned: true, maxBodyBytes: 2000 })
        expect(await signedCall(host!.url, secret, call, { key: 'run_1:toolu_unsigned' })).toEqual({ status: 200, body: { content: 'hello there' } })
        const big = await signedCall(host!.url, secret, { ...call, input: { text: 'x'.repeat(3000) } }, { key: 'run_1:toolu_big' })
        expect(big.status).toBe(413)
      } finally {
        current = createToolHandler({ secrets, tools })
      }
    })

    it('answers a repeated idempotency key with the first answer, running the tool once', async () => {
      const secret = secrets.for('weather')[0]!
      const call = { run_id: 'run_2', tool_use_id: 'toolu_twice', tool: 'weather', input: { city: 'Oslo' }, attempt: 1, deadline: new Date(Date.now() + 10_000).toISOString(), metadata: {} }
      const answers = await Promise.all([1, 2, 3].map(() => signedCall(host!.url, secret, call, { key: 'run_2:toolu_twice' })))
      answers.push(await signedCall(host!.url, secret, { ...call, attempt: 2 }, { key: 'run_2:toolu_twice' }))
      for (const answer of answers) expect(answer).toEqual(answers[0])
      expect(runsOf.get('run_2:toolu_twice')).toBe(1)
      await signedCall(host!.url, secret, { ...call, tool_use_id: 'toolu_other' }, { key: 'run_2:toolu_other' })
      expect(runsOf.get('run_2:toolu_other')).toBe(1)
    })

    it('checks the input against the tool\'s schema before its handler sees it', async () => {
      const secret = secrets.for('weather')[0]!
      const call = { run_id: 'run_3', tool_use_id: 'toolu_bad', tool: 'weather', input: { city: 7 }, attempt: 1, deadline: new Date(Date.now() + 10_000).toISOString(), metadata: {} }
      const answer = await signedCall(host!.url, secret, call, { key: 'run_3:toolu_bad' })
      expect(answer.status).toBe(200)
      expect(answer.body).toEqual({ content: 'Tool weather was not run: invalid input: input.city: must be string', is_error: true })
      expect(runsOf.has('run_3:toolu_bad')).toBe(false)
    })

    it('gives the handler a signal that fires at the call\'s deadline', async () => {
      const secret = secrets.for('waits')[0]!
      const call = { run_id: 'run_4', tool_use_id: 'toolu_late', tool: 'waits', input: {}, attempt: 1, deadline: new Date(Date.now() + 200).toISOString(), metadata: {} }
      const answer = await signedCall(host!.url, secret, call, { key: 'run_4:toolu_late' })
      expect(answer.body).toEqual({ content: 'stopped: TimeoutError' })
      expect(contexts.at(-1)!.signal.aborted).toBe(true)
      // Through a run: Switchboard gives up at the deadline, and so does the handler.
      h.model.respond = callEach([{ name: 'waits', input: { linger_ms: 1500 } }])
      const run = await client.runs.create({ input: 'go', tools: ['waits'] })
      expect(run.tool_calls).toEqual({ total: 1, errors: 1 })
      expect(String(results[0]!.content)).toContain('timed out after 1000 ms')
      expect(contexts.at(-1)!.runId).toBe(run.id)
      expect(contexts.at(-1)!.signal.aborted).toBe(true)
    })

    it('hosts the same tools in a Fastify app, beside routes of its own', async () => {
      const app = Fastify()
      const fastifySecrets = new ToolSecrets()
      app.post('/other', async (request) => ({ echoed: request.body }))
      await app.register(switchboardTools, { prefix: '/tools', secrets: fastifySecrets, tools: { greeting: tools.greeting! } })
      const url = await app.listen({ port: 0, host: '127.0.0.1' })
      try {
        await registerTools(client, { url: (name) => `${url}/tools/${name}`, tools: { greeting: tools.greeting! }, secrets: fastifySecrets })
        expect((await client.tools.get('greeting')).url).toBe(`${url}/tools/greeting`)
        // The tool existed: its secret was rotated to get one this host knows.
        expect(fastifySecrets.has('greeting')).toBe(true)
        h.model.respond = callEach([{ name: 'greeting', input: {} }])
        await client.runs.create({ input: 'go', tools: ['greeting'] })
        expect(results[0]).toMatchObject({ content: 'hello there' })
        const other = await fetch(`${url}/other`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' })
        expect(await other.json()).toEqual({ echoed: { a: 1 } })
      } finally {
        await app.close()
      }
    })
  })
}
