import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { backends, type StorageLocation } from '../support/backends.js'
import { TENANT_A } from '../support/app.js'
import { startServerProcess, type ServerProcess } from '../support/process.js'
import { resultText, startFakeMessagesApi, toolResults, turnNumber, type FakeMessagesApi } from '../support/fake-messages-api.js'
import { startWebhookServer, type WebhookServer } from '../support/webhook-server.js'
import { findTranscriptProblem } from '../../src/runs/transcript.js'

/**
 * A run waiting for approvals (SPEC §12) outlives the process that stopped it there: killed with
 * SIGKILL while it waits, or while an approved call is in flight, another replica (or the
 * restarted process) takes the decisions and finishes the run, every call made at most once.
 */

const postgres = backends.find((b) => b.name === 'postgres')!
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
  tools.calls.length = 0
  model.refusals.length = 0
})

async function replica (env: Record<string, string>): Promise<ServerProcess> {
  const p = await startServerProcess({
    API_KEYS: `${TENANT_A.id}:${TENANT_A.key}`,
    HOST: '127.0.0.1',
    ANTHROPIC_BASE_URL: model.url,
    ANTHROPIC_API_KEY: 'sk-test',
    TOOL_EGRESS_ALLOW: '127.0.0.1',
    RUN_LEASE_MS: '2000',
    LOG_LEVEL: 'info',
    ...env
  })
  processes.push(p)
  await p.ready()
  return p
}

async function api (server: ServerProcess, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`${server.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  return { http: res.status, ...(await res.json() as Record<string, unknown>) }
}

/** A lookup made at once, and two refunds that wait for a reviewer; then an answer quoting every result. */
async function waitingRun (server: ServerProcess, refundPath = '/ok'): Promise<any> {
  const schema = { type: 'object', properties: { q: { type: 'string' } } }
  await api(server, 'PUT', '/tools/lookup', { description: 'reads', input_schema: schema, url: `${tools.url}/ok`, effect: 'read_only' })
  await api(server, 'PUT', '/tools/refund', { description: 'refunds', input_schema: schema, url: `${tools.url}${refundPath}`, approval: 'always' })
  model.respond = (request) => turnNumber(request) === 1
    ? { content: [{ type: 'tool_use', name: 'lookup', input: { q: 'order 7' } }, { type: 'tool_use', name: 'refund', input: { q: 'order 7' } }, { type: 'tool_use', name: 'refund', input: { q: 'order 8' } }] }
    : { content: [{ type: 'text', text: toolResults(request).map(resultText).join(' | ') }] }
  const run = await api(server, 'POST', '/runs', { input: 'refund?', tools: ['lookup', 'refund'] })
  expect(run.status).toBe('requires_action')
  expect(run.required_action.type).toBe('approve_tool_calls')
  return run
}

async function completed (server: ServerProcess, runId: string): Promise<any> {
  let run: any
  await expect.poll(async () => { run = await api(server, 'GET', `/runs/${runId}?include=messages`); return run.status }, { timeout: 30_000, interval: 200 }).toBe('completed')
  return run
}

const callsOf = (tool: string) => tools.calls.filter((c) => c.body.tool === tool)

function expectWholeTranscript (run: any): void {
  expect(run.messages.at(-1).role).toBe('assistant')
  expect(findTranscriptProblem(run.messages.slice(0, -1))).toBeNull()
  expect(model.refusals).toEqual([])
}

describe.skipIf(postgres.skip)('approvals across replicas on PostgreSQL', () => {
  let location: StorageLocation
  beforeAll(async () => { location = await postgres.location() })
  afterAll(async () => location?.destroy())

  it('takes the rest of the decisions on another replica after the one that took the first was killed', async () => {
    const a = await replica({ DATABASE_URL: location.databaseUrl! })
    const b = await replica({ DATABASE_URL: location.databaseUrl! })
    const run = await waitingRun(a)
    const [first, second] = run.required_action.tool_calls
    const partial = await api(a, 'POST', `/runs/${run.id as string}/approvals`, { decisions: [{ tool_use_id: first.tool_use_id, approve: true }] })
    expect(partial.http).toBe(200)
    a.child.kill('SIGKILL')
    await a.exited
    // The run waits on no replica: B sees the wait as A left it, and decides the rest.
    const seen = await api(b, 'GET', `/runs/${run.id as string}`)
    expect(seen.required_action.tool_calls.map((c: any) => c.tool_use_id)).toEqual([second.tool_use_id])
    const rest = await api(b, 'POST', `/runs/${run.id as string}/approvals`, { decisions: [{ tool_use_id: second.tool_use_id, approve: false, reason: 'done already' }] })
    expect(rest.http).toBe(200)
    const done = await completed(b, run.id)
    expect(done.output_text).toBe('ok lookup {"q":"order 7"} | ok refund {"q":"order 7"} | Not run: denied by the reviewer: done already')
    expect(callsOf('refund')).toHaveLength(1)
    expect(callsOf('lookup')).toHaveLength(1)
    expectWholeTranscript(done)
  }, 120_000)

  it('does not ask again for an approval given before the replica making the approved call was killed', async () => {
    const a = await replica({ DATABASE_URL: location.databaseUrl! })
    const b = await replica({ DATABASE_URL: location.databaseUrl! })
    const run = await waitingRun(a, '/delay/3000')
    const decisions = run.required_action.tool_calls.map((c: any) => ({ tool_use_id: c.tool_use_id, approve: true }))
    const decided = await api(a, 'POST', `/runs/${run.id as string}/approvals`, { decisions, background: true })
    expect(decided.http).toBe(202)
    await expect.poll(() => callsOf('refund').filter((c) => c.end === null).length, { timeout: 10_000 }).toBe(2)
    a.child.kill('SIGKILL')
    await a.exited
    // B takes the run over: the refunds were approved and sent, so they may have happened.
    const done = await completed(b, run.id)
    expect(done.output_text).toBe('ok lookup {"q":"order 7"} | outcome unknown: the call was in flight when its replica stopped | outcome unknown: the call was in flight when its replica stopped')
    expect(callsOf('refund')).toHaveLength(2)
    const events = (await api(b, 'GET', `/runs/${run.id as string}/events?limit=100`)).data
    expect(events.filter((e: any) => e.type === 'run.requires_action')).toHaveLength(1)
    expectWholeTranscript(done)
  }, 120_000)
})

describe('approvals across a restart on SQLite', () => {
  it('takes the decisions on the restarted process after a SIGKILL while the run waited', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-approvals-'))
    try {
      const first = await replica({ DATA_DIR: dataDir })
      const run = await waitingRun(first)
      first.child.kill('SIGKILL')
      await first.exited
      const second = await replica({ DATA_DIR: dataDir })
      expect((await api(second, 'GET', `/runs/${run.id as string}`)).status).toBe('requires_action')
      const decisions = run.required_action.tool_calls.map((c: any) => ({ tool_use_id: c.tool_use_id, approve: true }))
      const decided = await api(second, 'POST', `/runs/${run.id as string}/approvals`, { decisions })
      expect(decided).toMatchObject({ status: 'completed', output_text: 'ok lookup {"q":"order 7"} | ok refund {"q":"order 7"} | ok refund {"q":"order 8"}' })
      expect(callsOf('refund')).toHaveLength(2)
      const done = await api(second, 'GET', `/runs/${run.id as string}?include=messages`)
      expectWholeTranscript(done)
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  }, 120_000)
})
