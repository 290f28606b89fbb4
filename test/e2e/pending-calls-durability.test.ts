import { describe, expect, it } from 'vitest'
import { Webhook } from 'standardwebhooks'
import { backends } from '../support/backends.js'
import { useReplicas, type Replica } from '../support/replicas.js'
import { resultText, toolResults, turnNumber } from '../support/fake-messages-api.js'
import type { RecordedCall } from '../support/webhook-server.js'
import { findTranscriptProblem } from '../../src/runs/transcript.js'

/**
 * A run waiting on a call its tool answered 202 (SPEC §13) outlives the process that started it:
 * killed with SIGKILL while the run waits, or while the step is still under way, another replica
 * (or the restarted process) takes the posted result and finishes the run, once, the tool called once.
 */

const postgres = backends.find((b) => b.name === 'postgres')!

const replicas = useReplicas()

const schema = { type: 'object', properties: { q: { type: 'string' } } }

/** Registers `build` (answers 202) and `lookup` (answers after `lookupPath`); answers build's secret. */
async function tools (server: Replica, lookupPath = '/ok'): Promise<string> {
  replicas.tools.on('/later', (_req, res) => { res.writeHead(202).end() })
  const build = await server.api('PUT', '/tools/build', { description: 'builds', input_schema: schema, url: `${replicas.tools.url}/later` })
  await server.api('PUT', '/tools/lookup', { description: 'reads', input_schema: schema, url: `${replicas.tools.url}${lookupPath}`, effect: 'read_only' })
  replicas.model.respond = (request) => turnNumber(request) === 1
    ? { content: [{ type: 'tool_use', name: 'build', input: { q: 'app' } }, { type: 'tool_use', name: 'lookup', input: { q: 'docs' } }] }
    : { content: [{ type: 'text', text: toolResults(request).map(resultText).join(' | ') }] }
  return build.signing_secret as string
}

/** Posts `content` as the result of `call` to `server`, signed as the tool signs it. */
async function postResult (server: Replica, call: RecordedCall, secret: string, content: string): Promise<number> {
  const body = JSON.stringify({ content })
  const at = new Date()
  const id = `${String(call.body.run_id)}:${String(call.body.tool_use_id)}:result`
  // The path of the call's result_url, on whichever replica the tool's load balancer picks.
  const path = new URL(String(call.body.result_url)).pathname
  const res = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(Math.floor(at.getTime() / 1000)), 'webhook-signature': new Webhook(secret).sign(id, at, body) },
    body
  })
  await res.text()
  return res.status
}

const callsOf = (tool: string) => replicas.tools.calls.filter((c) => c.body.tool === tool)

async function expectOnce (server: Replica, runId: string): Promise<void> {
  const done = await server.waitForRunStatus(runId, 'completed')
  expect(done.output_text).toBe('built | ok lookup {"q":"docs"}')
  expect(done.messages.at(-1).role).toBe('assistant')
  expect(findTranscriptProblem(done.messages.slice(0, -1))).toBeNull()
  expect(replicas.model.refusals).toEqual([])
  expect(callsOf('build')).toHaveLength(1)
  const events = (await server.api('GET', `/runs/${runId}/events?limit=100`)).data
  expect(events.filter((e: any) => e.type === 'tool_call.completed' && e.data.name === 'build')).toHaveLength(1)
  expect(events.filter((e: any) => e.type === 'step.started')).toHaveLength(2)
  expect(events.filter((e: any) => e.type === 'run.completed')).toHaveLength(1)
}

describe.skipIf(postgres.skip)('pending calls across replicas on PostgreSQL', () => {
  it('finishes the run on another replica after the one that started it was killed while it waited', async () => {
    const [a, b] = await replicas.startMany(2, await replicas.store(postgres))
    const secret = await tools(a)
    const run = await a.api('POST', '/runs', { input: 'build', tools: ['build', 'lookup'] })
    expect(run).toMatchObject({ status: 'running', pending_tool_calls: [{ name: 'build' }] })
    await a.kill()
    // Nobody holds the run: B sees it waiting, takes the result, and goes on at once.
    expect((await b.api('GET', `/runs/${run.id as string}`)).pending_tool_calls).toHaveLength(1)
    expect(await postResult(b, callsOf('build')[0]!, secret, 'built')).toBe(204)
    await expectOnce(b, run.id)
  }, 120_000)

  it('takes over a step killed after its 202 but before it ended, waits on the call, and takes its result', async () => {
    const [a, b] = await replicas.startMany(2, await replicas.store(postgres))
    const secret = await tools(a, '/delay/4000')
    const run = await a.api('POST', '/runs', { input: 'build', tools: ['build', 'lookup'], background: true })
    // The build answered 202; the lookup is still in flight when A dies.
    await expect.poll(() => callsOf('build').length, { timeout: 10_000 }).toBe(1)
    await expect.poll(async () => (await a.api('GET', `/runs/${run.id as string}/events?limit=100`)).data.some((e: any) => e.type === 'tool_call.accepted'), { timeout: 10_000 }).toBe(true)
    await a.kill()
    // B takes the run over once the lease lapses: the build is not called again, the lookup is.
    await expect.poll(async () => (await b.api('GET', `/runs/${run.id as string}`)).pending_tool_calls?.length ?? 0, { timeout: 30_000 }).toBe(1)
    expect(await postResult(b, callsOf('build')[0]!, secret, 'built')).toBe(204)
    await expectOnce(b, run.id)
  }, 120_000)
})

describe('pending calls across a restart on SQLite', () => {
  it('takes the result on the restarted process after a SIGKILL while the run waited, and a second one is refused', async () => {
    const first = await replicas.start(await replicas.store())
    const secret = await tools(first)
    const run = await first.api('POST', '/runs', { input: 'build', tools: ['build', 'lookup'] })
    expect(run.status).toBe('running')
    await first.kill()
    const second = await replicas.restart(first)
    expect((await second.api('GET', `/runs/${run.id as string}`)).pending_tool_calls).toHaveLength(1)
    const call = callsOf('build')[0]!
    expect(await postResult(second, call, secret, 'built')).toBe(204)
    await expectOnce(second, run.id)
    expect(await postResult(second, call, secret, 'again')).toBe(409)
  }, 120_000)
})
