import { describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { useReplicas, type Replica } from '../support/replicas.js'
import { resultText, toolResults, turnNumber } from '../support/fake-messages-api.js'
import { findTranscriptProblem } from '../../src/runs/transcript.js'

/**
 * A run waiting for approvals (SPEC §12) outlives the process that stopped it there: killed with
 * SIGKILL while it waits, or while an approved call is in flight, another replica (or the
 * restarted process) takes the decisions and finishes the run, every call made at most once.
 */

const postgres = backends.find((b) => b.name === 'postgres')!

const replicas = useReplicas()

/** A lookup made at once, and two refunds that wait for a reviewer; then an answer quoting every result. */
async function waitingRun (server: Replica, refundPath = '/ok'): Promise<any> {
  const schema = { type: 'object', properties: { q: { type: 'string' } } }
  await server.api('PUT', '/tools/lookup', { description: 'reads', input_schema: schema, url: `${replicas.tools.url}/ok`, effect: 'read_only' })
  await server.api('PUT', '/tools/refund', { description: 'refunds', input_schema: schema, url: `${replicas.tools.url}${refundPath}`, approval: 'always' })
  replicas.model.respond = (request) => turnNumber(request) === 1
    ? { content: [{ type: 'tool_use', name: 'lookup', input: { q: 'order 7' } }, { type: 'tool_use', name: 'refund', input: { q: 'order 7' } }, { type: 'tool_use', name: 'refund', input: { q: 'order 8' } }] }
    : { content: [{ type: 'text', text: toolResults(request).map(resultText).join(' | ') }] }
  const run = await server.api('POST', '/runs', { input: 'refund?', tools: ['lookup', 'refund'] })
  expect(run.status).toBe('requires_action')
  expect(run.required_action.type).toBe('approve_tool_calls')
  return run
}

const callsOf = (tool: string) => replicas.tools.calls.filter((c) => c.body.tool === tool)

function expectWholeTranscript (run: any): void {
  expect(run.messages.at(-1).role).toBe('assistant')
  expect(findTranscriptProblem(run.messages.slice(0, -1))).toBeNull()
  expect(replicas.model.refusals).toEqual([])
}

describe.skipIf(postgres.skip)('approvals across replicas on PostgreSQL', () => {
  it('takes the rest of the decisions on another replica after the one that took the first was killed', async () => {
    const [a, b] = await replicas.startMany(2, await replicas.store(postgres))
    const run = await waitingRun(a)
    const [first, second] = run.required_action.tool_calls
    const partial = await a.request('POST', `/runs/${run.id as string}/approvals`, { decisions: [{ tool_use_id: first.tool_use_id, approve: true }] })
    expect(partial.statusCode).toBe(200)
    await a.kill()
    // The run waits on no replica: B sees the wait as A left it, and decides the rest.
    const seen = await b.api('GET', `/runs/${run.id as string}`)
    expect(seen.required_action.tool_calls.map((c: any) => c.tool_use_id)).toEqual([second.tool_use_id])
    const rest = await b.request('POST', `/runs/${run.id as string}/approvals`, { decisions: [{ tool_use_id: second.tool_use_id, approve: false, reason: 'done already' }] })
    expect(rest.statusCode).toBe(200)
    const done = await b.waitForRunStatus(run.id, 'completed')
    expect(done.output_text).toBe('ok lookup {"q":"order 7"} | ok refund {"q":"order 7"} | Not run: denied by the reviewer: done already')
    expect(callsOf('refund')).toHaveLength(1)
    expect(callsOf('lookup')).toHaveLength(1)
    expectWholeTranscript(done)
  }, 120_000)

  it('does not ask again for an approval given before the replica making the approved call was killed', async () => {
    const [a, b] = await replicas.startMany(2, await replicas.store(postgres))
    const run = await waitingRun(a, '/delay/3000')
    const decisions = run.required_action.tool_calls.map((c: any) => ({ tool_use_id: c.tool_use_id, approve: true }))
    const decided = await a.request('POST', `/runs/${run.id as string}/approvals`, { decisions, background: true })
    expect(decided.statusCode).toBe(202)
    await expect.poll(() => callsOf('refund').filter((c) => c.end === null).length, { timeout: 10_000 }).toBe(2)
    await a.kill()
    // B takes the run over: the refunds were approved and sent, so they may have happened.
    const done = await b.waitForRunStatus(run.id, 'completed')
    expect(done.output_text).toBe('ok lookup {"q":"order 7"} | outcome unknown: the call was in flight when its replica stopped | outcome unknown: the call was in flight when its replica stopped')
    expect(callsOf('refund')).toHaveLength(2)
    const events = (await b.api('GET', `/runs/${run.id as string}/events?limit=100`)).data
    expect(events.filter((e: any) => e.type === 'run.requires_action')).toHaveLength(1)
    expectWholeTranscript(done)
  }, 120_000)
})

describe('approvals across a restart on SQLite', () => {
  it('takes the decisions on the restarted process after a SIGKILL while the run waited', async () => {
    const first = await replicas.start(await replicas.store())
    const run = await waitingRun(first)
    await first.kill()
    const second = await replicas.restart(first)
    expect((await second.api('GET', `/runs/${run.id as string}`)).status).toBe('requires_action')
    const decisions = run.required_action.tool_calls.map((c: any) => ({ tool_use_id: c.tool_use_id, approve: true }))
    const decided = await second.api('POST', `/runs/${run.id as string}/approvals`, { decisions })
    expect(decided).toMatchObject({ status: 'completed', output_text: 'ok lookup {"q":"order 7"} | ok refund {"q":"order 7"} | ok refund {"q":"order 8"}' })
    expect(callsOf('refund')).toHaveLength(2)
    const done = await second.api('GET', `/runs/${run.id as string}?include=messages`)
    expectWholeTranscript(done)
  }, 120_000)
})
