import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { TENANT_A } from '../support/app.js'
import { startServerProcess, type ServerProcess } from '../support/process.js'
import { resultText, startFakeMessagesApi, toolResults, turnNumber, type FakeMessagesApi } from '../support/fake-messages-api.js'
import { startWebhookServer, type WebhookServer } from '../support/webhook-server.js'

/**
 * Crash recovery of a batch's invocations (SPEC §7, §14), with real processes: a replica is killed
 * with SIGKILL while a batch's calls are in flight, and another takes the run over.
 */

const headers = { authorization: `Bearer ${TENANT_A.key}`, 'content-type': 'application/json' }

let model: FakeMessagesApi
let tools: WebhookServer
const processes: ServerProcess[] = []

beforeAll(async () => {
  model = await startFakeMessagesApi()
  tools = await startWebhookServer()
})
afterAll(async () => {
  await Promise.all([model.close(), tools.close()])
})
afterEach(async () => {
  for (const p of processes.splice(0)) {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
    await p.exited
  }
})

async function replica (dataDir: string): Promise<ServerProcess> {
  const p = await startServerProcess({
    API_KEYS: `${TENANT_A.id}:${TENANT_A.key}`,
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    ANTHROPIC_BASE_URL: model.url,
    ANTHROPIC_API_KEY: 'sk-test',
    TOOL_EGRESS_ALLOW: '127.0.0.1',
    RUN_LEASE_MS: '2000'
  })
  processes.push(p)
  await p.ready()
  return p
}

async function api (server: ServerProcess, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`${server.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  return await res.json()
}

describe('a batch taken over after its replica is killed mid-step', () => {
  it('keeps a stored result, sends a read_only call again under the same key, and reports a side_effecting one as an unknown outcome', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-batch-restart-'))
    try {
      const first = await replica(dataDir)
      for (const [name, path, effect] of [['quick', '/ok', 'read_only'], ['read_slow', '/delay/3000', 'read_only'], ['write_slow', '/delay/3000', 'side_effecting']]) {
        await api(first, 'PUT', `/tools/${name!}`, { description: name, input_schema: { type: 'object' }, url: `${tools.url}${path!}`, effect, max_attempts: 1 })
      }
      model.respond = (request) => turnNumber(request) === 1
        ? {
            content: [{
              type: 'tool_use',
              id: 'toolu_batch',
              name: 'batch_tool',
              input: { invocations: [{ name: 'quick', arguments: '{"q":"a"}' }, { name: 'read_slow', arguments: '{"q":"r"}' }, { name: 'write_slow', arguments: '{"q":"w"}' }] }
            }]
          }
        : { content: [{ type: 'text', text: resultText(toolResults(request)[0]!) }] }
      const run = await api(first, 'POST', '/runs', { input: 'go', tools: ['quick', 'read_slow', 'write_slow'], batch_tool: true, background: true })
      // The quick call's result is stored, and both slow calls are in flight.
      await expect.poll(async () => {
        const events = await api(first, 'GET', `/runs/${run.id as string}/events?limit=100`)
        return events.data.some((e: any) => e.type === 'tool_call.completed' && e.data.tool_use_id === 'toolu_batch:0') && tools.calls.filter((c) => c.path === '/delay/3000' && c.end === null).length === 2
      }, { timeout: 15_000, interval: 50 }).toBe(true)
      first.child.kill('SIGKILL')
      await first.exited

      const second = await replica(dataDir)
      let done: any
      await expect.poll(async () => { done = await api(second, 'GET', `/runs/${run.id as string}`); return done.status }, { timeout: 30_000, interval: 200 }).toBe('completed')
      expect(done.output_text).toBe([
        '[1] quick: ok quick {"q":"a"}',
        '[2] read_slow: ok read_slow {"q":"r"}',
        '[3] write_slow: error: outcome unknown: the call was in flight when its replica stopped'
      ].join('\n\n'))
      const keys = (path: string): string[] => tools.calls.filter((c) => c.path === path).map((c) => String(c.headers['idempotency-key']))
      expect(keys('/ok')).toEqual([`${run.id as string}:toolu_batch:0`])
      expect(tools.calls.filter((c) => c.body.tool === 'read_slow').map((c) => c.headers['idempotency-key'])).toEqual([`${run.id as string}:toolu_batch:1`, `${run.id as string}:toolu_batch:1`])
      expect(tools.calls.filter((c) => c.body.tool === 'write_slow')).toHaveLength(1)
      expect(model.refusals).toEqual([])
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  }, 90_000)
})
