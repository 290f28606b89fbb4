import { setTimeout as sleep } from 'node:timers/promises'
import { describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { useReplicas, type Replica } from '../support/replicas.js'
import { resultText, toolResults, turnNumber } from '../support/fake-messages-api.js'
import { WebhookServer } from '../support/webhook-server.js'
import { findTranscriptProblem } from '../../src/runs/transcript.js'

/**
 * A run outlives the process driving it (SPEC §7), proved with real processes: replicas are
 * `server.ts` started as Switchboard is started, killed with SIGKILL or stopped with SIGTERM.
 */

const postgres = backends.find((b) => b.name === 'postgres')!

const replicas = useReplicas()

async function registerTools (server: Replica, delayMs: number): Promise<void> {
  const schema = { type: 'object', properties: { q: { type: 'string' } } }
  await server.api('PUT', '/tools/read_slow', { description: 'reads', input_schema: schema, url: `${replicas.tools.url}/delay/${delayMs}`, effect: 'read_only' })
  await server.api('PUT', '/tools/write_slow', { description: 'writes', input_schema: schema, url: `${replicas.tools.url}/delay/${delayMs}`, effect: 'side_effecting' })
}

/** Both tools on the first turn; then an answer that quotes every result. */
function bothToolsThenAnswer (): void {
  replicas.model.respond = (request) => turnNumber(request) === 1
    ? { content: [{ type: 'tool_use', name: 'read_slow', input: { q: 'r' } }, { type: 'tool_use', name: 'write_slow', input: { q: 'w' } }] }
    : { content: [{ type: 'text', text: toolResults(request).map((r) => `${r.is_error === true ? 'ERR' : 'OK'}: ${resultText(r)}`).join(' | ') }] }
}

/** Starts a run that calls both tools (each taking `delayMs`), once both calls are in flight. */
async function runWithBothCallsInFlight (server: Replica, delayMs: number): Promise<{ id: string }> {
  await registerTools(server, delayMs)
  bothToolsThenAnswer()
  const run = await server.api('POST', '/runs', { input: 'go', tools: ['read_slow', 'write_slow'], background: true })
  await expect.poll(() => replicas.tools.calls.filter((c) => c.end === null).length, { timeout: 10_000 }).toBe(2)
  return run
}

const callsOf = (tool: string) => replicas.tools.calls.filter((c) => c.body.tool === tool)

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
  expect(replicas.model.refusals).toEqual([])
}

describe.skipIf(postgres.skip)('several replicas on PostgreSQL', () => {
  it('another replica finishes a run whose replica was killed in the middle of a step', async () => {
    const [a, b] = await replicas.startMany(2, await replicas.store(postgres))
    // Both calls are in flight at the tool server when the replica dies.
    const run = await runWithBothCallsInFlight(a, 3000)
    await a.kill()
    const done = await b.waitForRunStatus(run.id, 'completed')
    const events = (await b.api('GET', `/runs/${run.id as string}/events?limit=100`)).data
    expectSafeRecovery(done, events)
    expect(events.find((e: any) => e.type === 'run.resumed').data).toMatchObject({ step: 1, after_model_call: true })
  })

  it('another replica asks the model again when the replica that was waiting on it was killed', async () => {
    const [a, b] = await replicas.startMany(2, await replicas.store(postgres))
    let asked = 0
    replicas.model.respond = (request) => {
      if (turnNumber(request) === 1 && ++asked === 1) return { kind: 'hang' }
      return { content: [{ type: 'text', text: `answered on try ${asked}` }] }
    }
    const run = await a.api('POST', '/runs', { input: 'go', background: true })
    await expect.poll(() => asked, { timeout: 10_000 }).toBe(1)
    await a.kill()
    const done = await b.waitForRunStatus(run.id, 'completed')
    expect(done.output_text).toBe('answered on try 2')
    expect(done.steps).toBe(1)
    expect(replicas.model.refusals).toEqual([])
  })

  it('on SIGTERM, hands a run that outlasts the grace period to another replica at once, and exits 0', async () => {
    const store = await replicas.store(postgres)
    const a = await replicas.start({ ...store, SHUTDOWN_GRACE_MS: '300', RUN_LEASE_MS: '60000' })
    const b = await replicas.start({ ...store, RUN_LEASE_MS: '60000' })
    const run = await runWithBothCallsInFlight(a, 3000)
    expect((await a.terminate()).code).toBe(0)
    // The lease lasts a minute, yet b takes the run now: a released it.
    const done = await b.waitForRunStatus(run.id, 'completed')
    const events = (await b.api('GET', `/runs/${run.id as string}/events?limit=100`)).data
    expectSafeRecovery(done, events)
  })

  it('fences out a replica that stalled: once another took its run, it writes nothing more to it', async () => {
    const [a, b] = await replicas.startMany(2, await replicas.store(postgres))
    const run = await runWithBothCallsInFlight(a, 3000)
    // Frozen, not dead: its sockets stay open, its timers stop, its lease runs out.
    a.child.kill('SIGSTOP')
    const done = await b.waitForRunStatus(run.id, 'completed')
    const eventsBefore = (await b.api('GET', `/runs/${run.id as string}/events?limit=100`)).data
    a.child.kill('SIGCONT')
    // Awake again, a finds its lease gone and stops driving the run, having changed nothing.
    await expect.poll(() => a.output(), { timeout: 15_000 }).toMatch(/"(run handed back|lease lost: another replica drives this run now)"/)
    const after = await b.api('GET', `/runs/${run.id as string}?include=messages`)
    expect(after.messages).toEqual(done.messages)
    expect((await b.api('GET', `/runs/${run.id as string}/events?limit=100`)).data).toEqual(eventsBefore)
    expect(callsOf('write_slow')).toHaveLength(1)
  })

  it('queues runs past MAX_RUNNING_RUNS for any replica with room', async () => {
    const store = await replicas.store(postgres)
    const a = await replicas.start({ ...store, MAX_RUNNING_RUNS: '1' })
    // Each call is held until both runs' calls have come (20 s at most): they overlap only if b
    // drives the second run while a still drives the first, however long b takes to start.
    const arrived = new Set<string>()
    let openGate = (): void => {}
    const gate = new Promise<void>((resolve) => { openGate = resolve })
    replicas.tools.on('/gate', async (_req, res, call) => {
      arrived.add(String(call.body.input?.q))
      if (arrived.size >= 2) openGate()
      await Promise.race([gate, sleep(20_000)])
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ content: 'ok' }))
    })
    await a.api('PUT', '/tools/read_slow', { description: 'reads', input_schema: { type: 'object', properties: { q: { type: 'string' } } }, url: `${replicas.tools.url}/gate`, effect: 'read_only' })
    replicas.model.respond = (request) => turnNumber(request) === 1
      ? { content: [{ type: 'tool_use', name: 'read_slow', input: { q: request.body.messages[0].content } }] }
      : { content: [{ type: 'text', text: 'done' }] }
    const first = await a.api('POST', '/runs', { input: 'first', tools: ['read_slow'], background: true })
    const second = await a.api('POST', '/runs', { input: 'second', tools: ['read_slow'], background: true })
    // a is full: the second run waits until b, with room, takes it, while a still drives the first.
    const b = await replicas.start(store)
    await b.waitForRunStatus(second.id, 'completed')
    expect((await a.api('GET', `/runs/${first.id as string}`)).status).not.toBe('queued')
    const [firstCall, secondCall] = [callsOf('read_slow').find((c) => c.body.input.q === 'first')!, callsOf('read_slow').find((c) => c.body.input.q === 'second')!]
    expect(WebhookServer.maxOverlap([firstCall, secondCall])).toBe(2)
    await a.waitForRunStatus(first.id, 'completed')
  })
})

describe('one replica on SQLite', () => {
  it('answers "outcome unknown" for a complete call in flight in a max_tokens message, not "cut off"', async () => {
    const first = await replicas.start(await replicas.store())
    await registerTools(first, 2000)
    // The message ends at max_tokens, yet its last tool_use is whole: it was sent.
    replicas.model.respond = () => ({ content: [{ type: 'tool_use', name: 'write_slow', input: { q: 'w' } }], stop_reason: 'max_tokens' })
    const run = await first.api('POST', '/runs', { input: 'go', tools: ['write_slow'], background: true })
    await expect.poll(() => callsOf('write_slow').filter((c) => c.end === null).length, { timeout: 10_000 }).toBe(1)
    await first.kill()
    const second = await replicas.restart(first)
    const done = await second.waitForRunStatus(run.id, 'completed')
    expect(done.stop_reason).toBe('max_tokens')
    expect(resultText(done.messages.at(-1).content[0])).toBe('outcome unknown: the call was in flight when its replica stopped')
    expect(callsOf('write_slow')).toHaveLength(1)
  })

  it('resumes at once, after a restart, the run that was going when the process was killed', async () => {
    const first = await replicas.start({ ...await replicas.store(), RUN_LEASE_MS: '600000' })
    const run = await runWithBothCallsInFlight(first, 2000)
    await first.kill()
    // Its lease would last ten minutes: the restart knows it is the only process, and takes the run.
    const second = await replicas.restart(first)
    const done = await second.waitForRunStatus(run.id, 'completed')
    const events = (await second.api('GET', `/runs/${run.id as string}/events?limit=100`)).data
    expectSafeRecovery(done, events)
    expect(second.output()).toContain('releasing the leases of a previous process')
  })
})
