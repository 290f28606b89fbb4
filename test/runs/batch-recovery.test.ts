import { describe, expect, it } from 'vitest'
import { useReplicas } from '../support/replicas.js'
import { resultText, toolResults, turnNumber } from '../support/fake-messages-api.js'

/**
 * Crash recovery of a batch's invocations (SPEC §7, §14), with real processes: a replica is killed
 * with SIGKILL while a batch's calls are in flight, and another takes the run over.
 */

const replicas = useReplicas()

describe('a batch taken over after its replica is killed mid-step', () => {
  it('keeps a stored result, sends a read_only call again under the same key, and reports a side_effecting one as an unknown outcome', async () => {
    const first = await replicas.start(await replicas.store())
    for (const [name, path, effect] of [['quick', '/ok', 'read_only'], ['read_slow', '/delay/3000', 'read_only'], ['write_slow', '/delay/3000', 'side_effecting']]) {
      await first.api('PUT', `/tools/${name!}`, { description: name, input_schema: { type: 'object' }, url: `${replicas.tools.url}${path!}`, effect, max_attempts: 1 })
    }
    replicas.model.respond = (request) => turnNumber(request) === 1
      ? {
          content: [{
            type: 'tool_use',
            id: 'toolu_batch',
            name: 'batch_tool',
            input: { invocations: [{ name: 'quick', arguments: '{"q":"a"}' }, { name: 'read_slow', arguments: '{"q":"r"}' }, { name: 'write_slow', arguments: '{"q":"w"}' }] }
          }]
        }
      : { content: [{ type: 'text', text: resultText(toolResults(request)[0]!) }] }
    const run = await first.api('POST', '/runs', { input: 'go', tools: ['quick', 'read_slow', 'write_slow'], batch_tool: true, background: true })
    // The quick call's result is stored, and both slow calls are in flight.
    await expect.poll(async () => {
      const events = await first.api('GET', `/runs/${run.id as string}/events?limit=100`)
      return events.data.some((e: any) => e.type === 'tool_call.completed' && e.data.tool_use_id === 'toolu_batch:0') && replicas.tools.calls.filter((c) => c.path === '/delay/3000' && c.end === null).length === 2
    }, { timeout: 15_000, interval: 50 }).toBe(true)
    await first.kill()

    const second = await replicas.restart(first)
    const done = await second.waitForRunStatus(run.id, 'completed')
    expect(done.output_text).toBe([
      '[1] quick: ok quick {"q":"a"}',
      '[2] read_slow: ok read_slow {"q":"r"}',
      '[3] write_slow: error: outcome unknown: the call was in flight when its replica stopped'
    ].join('\n\n'))
    const keys = (path: string): string[] => replicas.tools.calls.filter((c) => c.path === path).map((c) => String(c.headers['idempotency-key']))
    expect(keys('/ok')).toEqual([`${run.id as string}:toolu_batch:0`])
    expect(replicas.tools.calls.filter((c) => c.body.tool === 'read_slow').map((c) => c.headers['idempotency-key'])).toEqual([`${run.id as string}:toolu_batch:1`, `${run.id as string}:toolu_batch:1`])
    expect(replicas.tools.calls.filter((c) => c.body.tool === 'write_slow')).toHaveLength(1)
    expect(replicas.model.refusals).toEqual([])
  }, 90_000)
})
