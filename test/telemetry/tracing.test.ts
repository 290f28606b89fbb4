import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { turnNumber, type RecordedRequest } from '../support/fake-messages-api.js'
import { startOtlpCollector, type CollectedSpan, type OtlpCollector } from '../support/otlp-collector.js'
import { VERSION } from '../../src/version.js'

const MODEL = 'claude-sonnet-4-6'
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/

/** Step 1 asks for `lookup` and `flaky` at once; step 2 ends the run. */
function twoParallelCalls (request: RecordedRequest) {
  return turnNumber(request) === 1
    ? { content: [{ type: 'tool_use' as const, name: 'lookup', input: { q: 'a' } }, { type: 'tool_use' as const, name: 'flaky', input: { q: 'b' } }] }
    : { content: [{ type: 'text' as const, text: 'done' }] }
}

function childrenOf (spans: CollectedSpan[], parent: CollectedSpan): CollectedSpan[] {
  return spans.filter((s) => s.parentSpanId === parent.spanId)
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`tracing: ${backend.name}`, () => {
    let collector: OtlpCollector
    let h: Harness | undefined
    beforeEach(async () => { collector = await startOtlpCollector() })
    afterEach(async () => {
      await h?.close()
      h = undefined
      await collector.close()
    })

    it('exports a run\'s spans over OTLP/HTTP: run > step > model call and tool call attempts, each webhook carrying its attempt\'s context', async () => {
      h = await startHarness(backend, { env: { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_SERVICE_NAME: 'switchboard-test' } })
      expect(h.app.tracing.enabled).toBe(true)
      await h.registerTool('lookup', '/ok', { effect: 'read_only' })
      await h.registerTool('flaky', '/flaky/1/503', { effect: 'read_only', max_attempts: 2 })
      h.model.respond = twoParallelCalls
      const { body: run } = await h.startRun({ input: 'go', tools: ['lookup', 'flaky'], model: MODEL })
      expect(run.status).toBe('completed')
      const stored = await h.app.store.getRun(TENANT_A.id, run.id)
      const events = await h.events(run.id)
      const webhookCalls = [...h.tools.calls]
      // Closing sends the spans still batched.
      await h.close()
      h = undefined

      const spans = collector.spans
      expect(new Set(spans.map((s) => s.traceId))).toEqual(new Set([stored!.trace_id]))
      expect(spans[0]!.resource).toMatchObject({ 'service.name': 'switchboard-test', 'service.version': VERSION })

      const [root, ...others] = spans.filter((s) => s.name === 'invoke_agent switchboard')
      expect(others).toHaveLength(0)
      expect(root!.parentSpanId).toBe('')
      expect(root!.attributes).toMatchObject({
        'gen_ai.operation.name': 'invoke_agent',
        'gen_ai.provider.name': 'anthropic',
        'gen_ai.conversation.id': run.id,
        'gen_ai.request.model': MODEL,
        'switchboard.run.status': 'completed',
        'switchboard.run.stop_reason': 'end_turn'
      })

      const steps = childrenOf(spans, root!).sort((a, b) => Number(a.attributes['switchboard.step']) - Number(b.attributes['switchboard.step']))
      expect(steps.map((s) => [s.name, s.attributes['switchboard.step']])).toEqual([['step', 1], ['step', 2]])

      // One model call per step, under its step, with what the model answered.
      const completed = events.filter((e) => e.type === 'step.completed')
      for (const [index, step] of steps.entries()) {
        const calls = childrenOf(spans, step).filter((s) => s.name === `chat ${MODEL}`)
        expect(calls).toHaveLength(1)
        expect(calls[0]!.attributes).toMatchObject({
          'gen_ai.operation.name': 'chat',
          'gen_ai.provider.name': 'anthropic',
          'gen_ai.request.model': MODEL,
          'gen_ai.response.finish_reasons': [index === 0 ? 'tool_use' : 'end_turn'],
          'gen_ai.usage.input_tokens': completed[index]!.data.usage.input_tokens,
          'gen_ai.usage.output_tokens': completed[index]!.data.usage.output_tokens
        })
        expect(calls[0]!.attributes['gen_ai.response.id']).toMatch(/^msg_/)
      }

      // Three attempts under step 1: lookup once, flaky twice (a 503, then an answer).
      const attempts = childrenOf(spans, steps[0]!).filter((s) => s.name.startsWith('execute_tool '))
      expect(attempts.map((s) => [s.name, s.attributes['switchboard.tool.attempt'], s.attributes['http.response.status_code']]).sort()).toEqual([
        ['execute_tool flaky', 1, 503],
        ['execute_tool flaky', 2, 200],
        ['execute_tool lookup', 1, 200]
      ])
      expect(childrenOf(spans, steps[1]!).filter((s) => s.name.startsWith('execute_tool '))).toHaveLength(0)
      const failedAttempt = attempts.find((s) => s.attributes['http.response.status_code'] === 503)!
      expect(failedAttempt.attributes['error.type']).toBe('error')
      expect(failedAttempt.status.code).toBe(2) // ERROR

      // Each webhook request's traceparent is exactly its attempt's span.
      expect(webhookCalls).toHaveLength(3)
      const toolUseIds = new Map(events.filter((e) => e.type === 'tool_call.completed').map((e) => [e.data.name as string, e.data.tool_use_id as string]))
      for (const call of webhookCalls) {
        const [, traceId, spanId] = TRACEPARENT.exec(String(call.headers.traceparent))!
        expect(traceId).toBe(stored!.trace_id)
        const span = attempts.find((s) => s.spanId === spanId)
        expect(span, `no attempt span ${spanId}`).toBeDefined()
        expect(span!.attributes).toMatchObject({
          'gen_ai.operation.name': 'execute_tool',
          'gen_ai.tool.name': call.body.tool,
          'gen_ai.tool.call.id': call.body.tool_use_id,
          'switchboard.tool.attempt': call.body.attempt
        })
        expect(call.body.tool_use_id).toBe(toolUseIds.get(call.body.tool))
      }
    })

    it('with no OTEL variables nothing is traced, and webhooks still get a traceparent of the run\'s trace', async () => {
      h = await startHarness(backend)
      expect(h.app.tracing.enabled).toBe(false)
      await h.registerTool('lookup', '/ok', { effect: 'read_only' })
      await h.registerTool('flaky', '/ok', { effect: 'read_only' })
      h.model.respond = twoParallelCalls
      const { body: run } = await h.startRun({ input: 'go', tools: ['lookup', 'flaky'] })
      expect(run.status).toBe('completed')
      const stored = await h.app.store.getRun(TENANT_A.id, run.id)
      const parents = h.tools.calls.map((c) => TRACEPARENT.exec(String(c.headers.traceparent)))
      expect(parents).toHaveLength(2)
      expect(parents.map((p) => p?.[1])).toEqual([stored!.trace_id, stored!.trace_id])
      expect(parents[0]![2]).not.toBe(parents[1]![2])
    })

    it('OTEL_SDK_DISABLED=true wins over an endpoint: the collector receives nothing', async () => {
      h = await startHarness(backend, { env: { OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: collector.url } })
      expect(h.app.tracing.enabled).toBe(false)
      await h.registerTool('lookup', '/ok')
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'lookup', input: { q: 'a' } }] }
        : { content: [{ type: 'text', text: 'done' }] }
      const { body: run } = await h.startRun({ input: 'go', tools: ['lookup'] })
      expect(run.status).toBe('completed')
      expect(String(h.tools.calls[0]!.headers.traceparent)).toMatch(TRACEPARENT)
      await h.close()
      h = undefined
      expect(collector.requests).toBe(0)
    })
  })
}
