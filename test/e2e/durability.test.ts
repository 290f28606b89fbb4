import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { backends, type StorageLocation } from '../support/backends.js'
import { TENANT_A } from '../support/app.js'
import { startServerProcess, type ServerProcess } from '../support/process.js'
import { resultText, startFakeMessagesApi, toolResults, turnNumber, type FakeMessagesApi } from '../support/fake-messages-api.js'
import { startWebhookServer, WebhookServer } from '../support/webhook-server.js'
import { findTranscriptProblem } from '../../src/runs/transcript.js'

/**
 * A run outlives the process driving it (SPEC §7), proved with real processes: replicas are
 * `server.ts` started as Switchboard is started, killed with SIGKILL or stopped with SIGTERM.
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
  return await res.json()
}

async function registerTools (server: ServerProcess, delayMs: number): Promise<void> {
  const schema = { type: 'object', properties: { q: { type: 'string' } } }
  await api(server, 'PUT', '/tools/read_slow', { description: 'reads', input_schema: schema, url: `${tools.url}/delay/${delayMs}`, effect: 'read_only' })
  await api(server, 'PUT', '/tools/write_slow', { description: 'writes', input_schema: schema, url: `${tools.url}/delay/${delayMs}`, effect: 'side_effecting' })
}

/** Both tools on the first turn; then an answer that quotes every result. */
function bothToolsThenAnswer (): void {
  model.respond = (request) => turnNumber(request) === 1
    ? { content: [{ type: 'tool_use', name: 'read_slow', input: { q: 'r' } }, { type: 'tool_use', name: 'write_slow', input: { q: 'w' } }] }
    : { content: [{ type: 'text', text: toolResults(request).map((r) => `${r.is_error === true ? 'ERR' : 'OK'}: ${resultText(r)}`).join(' | ') }] }
}

/** Starts a run that calls both tools (each taking `delayMs`), once both calls are in flight. */
async function runWithBothCallsInFlight (server: ServerProcess, delayMs: number): Promise<{ id: string }> {
  await registerTools(server, delayMs)
  bothToolsThenAnswer()
  const run = await api(server, 'POST', '/runs', { input: 'go', tools: ['read_slow', 'write_slow'], background: true })
  await expect.poll(() => tools.calls.filter((c) => c.end === null).length, { timeout: 10_000 }).toBe(2)
  return run
}

async function finished (server: ServerProcess, runId: string): Promise<any> {
  let run: any
  await expect.poll(async () => { run = await api(server, 'GET', `/runs/${runId}?include=messages`); return run.status }, { timeout: 30_000, interval: 200 }).toBe('completed')
  return run
}

const callsOf = (tool: string) => tools.calls.filter((c) => c.body.tool === tool)

/** What every takeover test checks: no side effect twice, read-only calls repeated with their key, a valid transcript. */
function expectSafeRecovery (run: any, events: any[]): void {
  expect(callsOf('write_slow')).toHaveLength(1)
  const reads = callsOf('read_slow')
  expect(reads.length).toBeGreaterThanOrEqual(2)
  expect(new Set(reads.map((c) => c.headers['idempotency-key'])).size).toBe(1)
  expect(run.output_text).toMatch(/^OK: ok read_slow \{"q":"r"\} \| ERR: outcome unknown: the call was in flight when its replica stopped$/)
  // Every tool_use answered, first and once: the history up to the final answer is a valid request.
  expect(run.messages.at(-1).role).toBe('assistant')
  expect(findTranscriptProblem(run.messages.slice(0, -1))).toBeNull()
  expect(events.some((e) => e.type === 'run.resumed')).toBe(true)
  // The strict fake accepted every request, from either replica.
  expect(model.refusals).toEqual([])
}

describe.skipIf(postgres.skip)('several replicas on PostgreSQL', () => {
  let location: StorageLocation
  beforeAll(async () => { location = await postgres.location() })
  afterAll(async () => location?.destroy())

  it('another replica finishes a run whose replica was killed in the middle of a step', async () => {
    const a = await replica({ DATABASE_URL: location.databaseUrl! })
    const b = await replica({ DATABASE_URL: location.databaseUrl! })
    // Both calls are in flight at the tool server when the replica dies.
    const run = await runWithBothCallsInFlight(a, 3000)
    a.child.kill('SIGKILL')
    await a.exited
    const done = await finished(b, run.id)
    const events = (await api(b, 'GET', `/runs/${run.id as string}/events?limit=100`)).data
    expectSafeRecovery(done, events)
    expect(events.find((e: any) => e.type === 'run.resumed').data).toMatchObject({ step: 1, after_model_call: true })
  })

  it('another replica asks the model again when the replica that was waiting on it was killed', async () => {
    const a = await replica({ DATABASE_URL: location.databaseUrl! })
    const b = await replica({ DATABASE_URL: location.databaseUrl! })
    let asked = 0
    model.respond = (request) => {
      if (turnNumber(request) === 1 && ++asked === 1) return { kind: 'hang' }
      return { content: [{ type: 'text', text: `answered on try ${asked}` }] }
    }
    const run = await api(a, 'POST', '/runs', { input: 'go', background: true })
    await expect.poll(() => asked, { timeout: 10_000 }).toBe(1)
    a.child.kill('SIGKILL')
    await a.exited
    const done = await finished(b, run.id)
    expect(done.output_text).toBe('answered on try 2')
    expect(done.steps).toBe(1)
    expect(model.refusals).toEqual([])
  })

  it('on SIGTERM, hands a run that outlasts the grace period to another replica at once, and exits 0', async () => {
    const a = await replica({ DATABASE_URL: location.databaseUrl!, SHUTDOWN_GRACE_MS: '300', RUN_LEASE_MS: '60000' })
    const b = await replica({ DATABASE_URL: location.databaseUrl!, RUN_LEASE_MS: '60000' })
    const run = await runWithBothCallsInFlight(a, 3000)
    a.child.kill('SIGTERM')
    expect((await a.exited).code).toBe(0)
    // The lease lasts a minute, yet b takes the run now: a released it.
    const done = await finished(b, run.id)
    const events = (await api(b, 'GET', `/runs/${run.id as string}/events?limit=100`)).data
    expectSafeRecovery(done, events)
  })

  it('fences out a replica that stalled: once another took its run, it writes nothing more to it', async () => {
    const a = await replica({ DATABASE_URL: location.databaseUrl! })
    const b = await replica({ DATABASE_URL: location.databaseUrl! })
    const run = await runWithBothCallsInFlight(a, 3000)
    // Frozen, not dead: its sockets stay open, its timers stop, its lease runs out.
    a.child.kill('SIGSTOP')
    const done = await finished(b, run.id)
    const eventsBefore = (await api(b, 'GET', `/runs/${run.id as string}/events?limit=100`)).data
    a.child.kill('SIGCONT')
    // Awake again, a finds its lease gone and stops driving the run, having changed nothing.
    await expect.poll(() => a.output(), { timeout: 15_000 }).toMatch(/"(run handed back|lease lost: another replica drives this run now)"/)
    const after = await api(b, 'GET', `/runs/${run.id as string}?include=messages`)
    expect(after.messages).toEqual(done.messages)
    expect((await api(b, 'GET', `/runs/${run.id as string}/events?limit=100`)).data).toEqual(eventsBefore)
    expect(callsOf('write_slow')).toHaveLength(1)
  })

  it('queues runs past MAX_RUNNING_RUNS for any replica with room', async () => {
    const a = await replica({ DATABASE_URL: location.databaseUrl!, MAX_RUNNING_RUNS: '1' })
    // Each call is held until both runs' calls have come (20 s at most): they overlap only if b
    // drives the second run while a still drives the first, however long b takes to start.
    const arrived = new Set<string>()
    let openGate = (): void => {}
    const gate = new Promise<void>((resolve) => { openGate = resolve })
    tools.on('/gate', async (_req, res, call) => {
      arrived.add(String(call.body.input?.q))
      if (arrived.size >= 2) openGate()
      await Promise.race([gate, sleep(20_000)])
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ content: 'ok' }))
    })
    await api(a, 'PUT', '/tools/read_slow', { description: 'reads', input_schema: { type: 'object', properties: { q: { type: 'string' } } }, url: `${tools.url}/gate`, effect: 'read_only' })
    model.respond = (request) => turnNumber(request) === 1
      ? { content: [{ type: 'tool_use', name: 'read_slow', input: { q: request.body.messages[0].content } }] }
      : { content: [{ type: 'text', text: 'done' }] }
    const first = await api(a, 'POST', '/runs', { input: 'first', tools: ['read_slow'], background: true })
    const second = await api(a, 'POST', '/runs', { input: 'second', tools: ['read_slow'], background: true })
    // a is full: the second run waits until b, with room, takes it, while a still drives the first.
    const b = await replica({ DATABASE_URL: location.databaseUrl! })
    await finished(b, second.id)
    expect((await api(a, 'GET', `/runs/${first.id as string}`)).status).not.toBe('queued')
    const [firstCall, secondCall] = [callsOf('read_slow').find((c) => c.body.input.q === 'first')!, callsOf('read_slow').find((c) => c.body.input.q === 'second')!]
    expect(WebhookServer.maxOverlap([firstCall, secondCall])).toBe(2)
    await finished(a, first.id)
  })
})

describe('one replica on SQLite', () => {
  it('answers "outcome unknown" for a complete call in flight in a max_tokens message, not "cut off"', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-restart-'))
    try {
      const first = await replica({ DATA_DIR: dataDir })
      await registerTools(first, 2000)
      // The message ends at max_tokens, yet its last tool_use is whole: it was sent.
      model.respond = () => ({ content: [{ type: 'tool_use', name: 'write_slow', input: { q: 'w' } }], stop_reason: 'max_tokens' })
      const run = await api(first, 'POST', '/runs', { input: 'go', tools: ['write_slow'], background: true })
      await expect.poll(() => callsOf('write_slow').filter((c) => c.end === null).length, { timeout: 10_000 }).toBe(1)
      first.child.kill('SIGKILL')
      await first.exited
      const second = await replica({ DATA_DIR: dataDir })
      let done: any
      await expect.poll(async () => { done = await api(second, 'GET', `/runs/${run.id as string}?include=messages`); return done.status }, { timeout: 30_000 }).toBe('completed')
      expect(done.stop_reason).toBe('max_tokens')
      expect(resultText(done.messages.at(-1).content[0])).toBe('outcome unknown: the call was in flight when its replica stopped')
      expect(callsOf('write_slow')).toHaveLength(1)
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  })

  it('resumes at once, after a restart, the run that was going when the process was killed', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-restart-'))
    try {
      const first = await replica({ DATA_DIR: dataDir, RUN_LEASE_MS: '600000' })
      const run = await runWithBothCallsInFlight(first, 2000)
      first.child.kill('SIGKILL')
      await first.exited
      // Its lease would last ten minutes: the restart knows it is the only process, and takes the run.
      const second = await replica({ DATA_DIR: dataDir, RUN_LEASE_MS: '600000' })
      const done = await finished(second, run.id)
      const events = (await api(second, 'GET', `/runs/${run.id as string}/events?limit=100`)).data
      expectSafeRecovery(done, events)
      expect(second.output()).toContain('releasing the leases of a previous process')
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})
