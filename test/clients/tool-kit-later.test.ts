import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createToolHandler, LaterAnswerError, registerTools, Switchboard, ToolSecrets, type HostedTools, type LaterAnswer } from '../../clients/typescript/src/index.js'
import { TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { resultText, toolResults, turnNumber } from '../support/fake-messages-api.js'

// The tool kit's answerLater (SPEC §13): a handler answers 202 now and posts its result, signed
// with the tool's secret, to the call's result_url; the run goes on then. Real service, real host.

describe('the tool kit answers later', () => {
  let h: Harness
  let client: Switchboard
  let baseURL: string
  let server: Server
  const secrets = new ToolSecrets()
  const answers: LaterAnswer[] = []
  const refused: unknown[] = []

  const tools: HostedTools = {
    build: {
      description: 'Builds the app: takes a while',
      input_schema: { type: 'object', properties: { q: { type: 'string' } } },
      async_timeout_ms: 60_000,
      handler: (input: { q: string }, context) => {
        const later = context.answerLater()
        answers.push(later)
        setTimeout(() => { later.send({ built: input.q }).catch((err) => refused.push(err)) }, 200)
        return 'ignored: the call was answered 202'
      }
    },
    deploy: {
      description: 'Fails after answering 202',
      input_schema: { type: 'object' },
      handler: async (_input, context) => {
        context.answerLater()
        await sleep(50)
        throw new Error('the cluster is full')
      }
    }
  }

  beforeAll(async () => {
    h = await startHarness()
    baseURL = await h.app.listen({ port: 0, host: '127.0.0.1' })
    client = new Switchboard({ baseURL, apiKey: TENANT_A.key })
    server = createServer(createToolHandler({ secrets, tools }))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    await registerTools(client, { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/calls`, tools, secrets })
  })
  afterAll(async () => {
    server?.closeAllConnections()
    await new Promise<void>((resolve) => server?.close(() => resolve()))
    await h?.close()
  })

  const plan = (...calls: Array<{ name: string, input: Record<string, unknown> }>): void => {
    h.model.respond = (request) => turnNumber(request) === 1
      ? { content: calls.map((c) => ({ type: 'tool_use', name: c.name, input: c.input })) }
      : { content: [{ type: 'text', text: `final: ${toolResults(request).map((r) => `${r.is_error === true ? 'ERR ' : ''}${resultText(r)}`).join(' | ')}` }] }
  }
  const settled = async (id: string) => {
    for (let i = 0; i < 200; i++) {
      const run = await client.runs.get(id)
      if (['completed', 'failed', 'cancelled'].includes(run.status)) return run
      await sleep(50)
    }
    throw new Error(`run ${id} did not end`)
  }

  it('answers 202 at once and posts the result, signed, to result_url: the run goes on with it', async () => {
    plan({ name: 'build', input: { q: 'v2' } })
    const run = await client.runs.create({ input: 'build it', tools: ['build'] })
    expect(run).toMatchObject({ status: 'running', pending_tool_calls: [{ name: 'build' }] })
    expect(answers.at(-1)!.resultUrl).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:\\d+/runs/${run.id}/tool_calls/toolu_\\w+/result$`))
    const done = await settled(run.id)
    expect(done.output_text).toBe('final: {"built":"v2"}')
    // Posting again is refused: the call has its result.
    const again = await answers.at(-1)!.send('twice').catch((err: unknown) => err)
    expect(again).toBeInstanceOf(LaterAnswerError)
    expect((again as LaterAnswerError).status).toBe(409)
    expect(refused).toEqual([])
  })

  it('posts what a handler throws after answering 202 as an is_error result', async () => {
    plan({ name: 'deploy', input: {} }, { name: 'build', input: { q: 'v3' } })
    const run = await client.runs.create({ input: 'deploy', tools: ['deploy', 'build'] })
    const done = await settled(run.id)
    expect(done.output_text).toBe('final: ERR the cluster is full | {"built":"v3"}')
    expect(done.tool_calls).toEqual({ total: 2, errors: 1 })
  })

  it('posts to resultOrigin when set (the path kept), and tries again after a 429', async () => {
    // A front that the host reaches Switchboard through: it refuses the first post with 429 (a rate
    // limit in the way), then passes posts on.
    const seen: string[] = []
    const front = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (chunk: Buffer) => chunks.push(chunk))
      req.on('end', () => {
        seen.push(req.url ?? '')
        if (seen.length === 1) {
          res.writeHead(429, { 'content-type': 'application/json' }).end('{"message":"slow down"}')
          return
        }
        const headers = Object.fromEntries(['content-type', 'webhook-id', 'webhook-timestamp', 'webhook-signature'].map((h) => [h, String(req.headers[h])]))
        fetch(`${baseURL}${req.url ?? ''}`, { method: 'POST', headers, body: Buffer.concat(chunks) })
          .then(async (answer) => { res.writeHead(answer.status).end(await answer.text()) }, () => res.writeHead(502).end())
      })
    })
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve))
    const frontUrl = `http://127.0.0.1:${(front.address() as AddressInfo).port}`
    const frontSecrets = new ToolSecrets()
    const queued: HostedTools = {
      queue: {
        description: 'Queues a job',
        input_schema: { type: 'object' },
        handler: (_input, context) => {
          const later = context.answerLater()
          later.send('queued job done').catch((err) => refused.push(err))
        }
      }
    }
    const host = createServer(createToolHandler({ secrets: frontSecrets, tools: queued, resultOrigin: frontUrl }))
    await new Promise<void>((resolve) => host.listen(0, '127.0.0.1', resolve))
    try {
      await registerTools(client, { url: `http://127.0.0.1:${(host.address() as AddressInfo).port}/calls`, tools: queued, secrets: frontSecrets })
      plan({ name: 'queue', input: {} })
      const run = await client.runs.create({ input: 'queue it', tools: ['queue'] })
      const done = await settled(run.id)
      expect(done.output_text).toBe('final: queued job done')
      expect(seen).toHaveLength(2)
      expect(seen[1]).toMatch(new RegExp(`^/runs/${run.id}/tool_calls/toolu_\\w+/result$`))
      expect(seen[0]).toBe(seen[1])
      expect(refused).toEqual([])
    } finally {
      for (const server of [host, front]) {
        server.closeAllConnections()
        await new Promise<void>((resolve) => server.close(() => resolve()))
      }
    }
  })

  it('answers at once, as an error, a call that cannot be answered later (inside batch_tool)', async () => {
    plan({ name: 'batch_tool', input: { invocations: [{ name: 'build', arguments: '{"q":"v4"}' }] } })
    const run = await client.runs.create({ input: 'batch', tools: ['build'], batch_tool: true })
    expect(run.status).toBe('completed')
    expect(run.output_text).toMatch(/cannot be answered later: it has no result_url/)
  })
})
