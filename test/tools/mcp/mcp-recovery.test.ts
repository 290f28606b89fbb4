import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { useReplicas } from '../../support/replicas.js'
import { resultText, toolResults, turnNumber } from '../../support/fake-messages-api.js'
import { McpTestServer } from '../../support/mcp-server.js'
import { findTranscriptProblem } from '../../../src/runs/transcript.js'

/**
 * Crash recovery of MCP calls (SPEC §7, §11), with real processes: a replica (`server.ts`) is
 * killed with SIGKILL while its MCP calls are in flight, and another takes the run over.
 */

const slow = async (): Promise<{ content: Array<{ type: 'text', text: string }> }> => {
  await sleep(1500)
  return { content: [{ type: 'text', text: 'slow ok' }] }
}

const replicas = useReplicas()
let mcp: McpTestServer

beforeAll(async () => {
  mcp = await new McpTestServer([
    { name: 'read_slow', annotations: { readOnlyHint: true }, run: slow },
    { name: 'write_slow', annotations: { destructiveHint: true }, run: slow }
  ]).start()
})
afterAll(async () => {
  await mcp.close()
})

describe('MCP calls after a replica is killed mid-step', () => {
  it('a read_only call is sent again with the same idempotency key; a side_effecting one is reported as an unknown outcome', async () => {
    const first = await replicas.start(await replicas.store())
    const registered = await first.api('PUT', '/mcp-servers/slow', { url: mcp.url, trust_annotations: true })
    expect(registered.tools.map((t: any) => [t.run_name, t.effect])).toEqual([['slow__read_slow', 'read_only'], ['slow__write_slow', 'side_effecting']])
    replicas.model.respond = (request) => turnNumber(request) === 1
      ? { content: [{ type: 'tool_use', name: 'slow__read_slow', input: { q: 'r' } }, { type: 'tool_use', name: 'slow__write_slow', input: { q: 'w' } }] }
      : { content: [{ type: 'text', text: toolResults(request).map((r) => `${r.is_error === true ? 'ERR' : 'OK'}: ${resultText(r)}`).join(' | ') }] }
    const run = await first.api('POST', '/runs', { input: 'go', mcp_servers: ['slow'], background: true })
    await expect.poll(() => mcp.calls.filter((c) => c.end === null).length, { timeout: 10_000 }).toBe(2)
    await first.kill()

    const second = await replicas.restart(first)
    const done = await second.waitForRunStatus(run.id, 'completed')
    expect(done.output_text).toBe('OK: slow ok | ERR: outcome unknown: the call was in flight when its replica stopped')
    expect(mcp.callsOf('write_slow')).toHaveLength(1)
    const reads = mcp.callsOf('read_slow')
    expect(reads).toHaveLength(2)
    expect(new Set(reads.map((c) => c.meta?.['switchboard/idempotency_key'])).size).toBe(1)
    // The resumed run sent the model the same tools as before the kill.
    const firstText = (content: unknown): unknown => typeof content === 'string' ? content : (content as Array<{ text?: string }>)[0]?.text
    const runRequests = replicas.model.requests.filter((r) => firstText(r.body.messages[0].content) === 'go')
    expect(runRequests.length).toBeGreaterThanOrEqual(2)
    for (const request of runRequests) expect(request.body.tools.map((t: any) => t.name)).toEqual(['slow__read_slow', 'slow__write_slow'])
    expect(done.messages.at(-1).role).toBe('assistant')
    expect(findTranscriptProblem(done.messages.slice(0, -1))).toBeNull()
    expect(replicas.model.refusals).toEqual([])
  }, 90_000)
})
