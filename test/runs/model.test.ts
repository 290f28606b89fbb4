import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { resultText, toolResults, turnNumber, type RecordedRequest, type Turn } from '../support/fake-messages-api.js'

/** A script by turn number; past the end, a final text. */
function turns (...script: Turn[]) {
  return (request: RecordedRequest): Turn => script[turnNumber(request) - 1] ?? { content: [{ type: 'text', text: 'the end' }] }
}

const useTool = (q: string): Turn => ({ content: [{ type: 'tool_use', name: 'lookup', input: { q } }] })

for (const backend of backends) {
  describe.skipIf(backend.skip)(`the model loop: ${backend.name}`, () => {
    let h: Harness
    beforeAll(async () => {
      h = await startHarness(backend, { env: { MODEL_MAX_RETRIES: '3' } })
      await h.registerTool('lookup', '/ok')
    })
    afterAll(async () => h?.close())
    beforeEach(() => { h.model.refusals.length = 0 })

    it('ends on end_turn with the last message as output and usage summed over every call', async () => {
      h.model.respond = turns(useTool('a'), useTool('b'), { content: [{ type: 'text', text: 'Paris is ' }, { type: 'text', text: 'sunny.' }] })
      const { body } = await h.startRun({ input: 'weather?', tools: ['lookup'], metadata: { ticket: 'T-1' } })
      expect(body).toMatchObject({ status: 'completed', stop_reason: 'end_turn', steps: 3, output_text: 'Paris is sunny.', metadata: { ticket: 'T-1' }, error: null })
      expect(body.output.map((b: { type: string }) => b.type)).toEqual(['text', 'text'])
      const events = await h.events(body.id)
      const summed = events.filter((e) => e.type === 'step.completed').reduce((sum, e) => sum + e.data.usage.input_tokens + e.data.usage.output_tokens, 0)
      expect(body.usage.input_tokens + body.usage.output_tokens).toBe(summed)
      expect(body.usage.input_tokens).toBeGreaterThan(0)
      expect(h.model.refusals).toEqual([])
    })

    for (const stop of ['stop_sequence', 'refusal'] as const) {
      it(`ends on ${stop}`, async () => {
        h.model.respond = turns({ content: [{ type: 'text', text: 'stopping' }], stop_reason: stop })
        const { body } = await h.startRun({ input: 'x', stop_sequences: ['STOP'] })
        expect(body).toMatchObject({ status: 'completed', stop_reason: stop, steps: 1 })
      })
    }

    it('ends on max_tokens without running a tool_use that was cut off, keeping the transcript valid', async () => {
      h.tools.calls.length = 0
      h.model.respond = turns({
        content: [{ type: 'text', text: 'Let me look.' }, { type: 'tool_use', name: 'lookup', input: { q: 'complete' } }, { type: 'tool_use', name: 'lookup', input: { q: 'cut in the middle of this input' } }],
        cutAtMaxTokens: true
      })
      const { body } = await h.startRun({ input: 'x', tools: ['lookup'], max_tokens: 50 })
      expect(body).toMatchObject({ status: 'completed', stop_reason: 'max_tokens', steps: 1 })
      // The complete call ran (it was dispatched as soon as it was complete); the cut one did not.
      expect(h.tools.calls.map((c) => c.body.input.q)).toEqual(['complete'])
      const run = (await h.app.inject({ method: 'GET', url: `/runs/${body.id}?include=messages`, headers: auth(TENANT_A) })).json()
      const last = run.messages[run.messages.length - 1]
      expect(last.role).toBe('user')
      expect(last.content).toHaveLength(2)
      expect(last.content[0]).toMatchObject({ type: 'tool_result', content: 'ok lookup {"q":"complete"}' })
      expect(last.content[1]).toMatchObject({ type: 'tool_result', is_error: true })
      expect(last.content[1].content).toContain('cut off by max_tokens')
    })

    it('treats model_context_window_exceeded like max_tokens', async () => {
      h.model.respond = turns({ content: [{ type: 'text', text: 'too long' }], stop_reason: 'model_context_window_exceeded' })
      const { body } = await h.startRun({ input: 'x' })
      expect(body).toMatchObject({ status: 'completed', stop_reason: 'max_tokens' })
    })

    it('stops after max_steps model calls, with the last step\'s results stored', async () => {
      h.model.respond = () => useTool('again')
      const { body } = await h.startRun({ input: 'loop forever', tools: ['lookup'], max_steps: 3 })
      expect(body).toMatchObject({ status: 'completed', stop_reason: 'max_steps', steps: 3, tool_calls: { total: 3, errors: 0 } })
      const run = (await h.app.inject({ method: 'GET', url: `/runs/${body.id}?include=messages`, headers: auth(TENANT_A) })).json()
      expect(run.messages.map((m: { role: string }) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant', 'user', 'assistant', 'user'])
    })

    it('continues after pause_turn with the paused message, then finishes', async () => {
      h.model.respond = turns(
        { content: [{ type: 'text', text: 'Searching the web…' }], stop_reason: 'pause_turn' },
        { content: [{ type: 'text', text: 'Found it.' }] }
      )
      const { body } = await h.startRun({ input: 'search' })
      expect(body).toMatchObject({ status: 'completed', stop_reason: 'end_turn', steps: 2, output_text: 'Found it.' })
      const second = h.model.requests[h.model.requests.length - 1]!
      const messages = second.body.messages
      expect(messages[messages.length - 1]).toMatchObject({ role: 'assistant', content: [{ type: 'text', text: 'Searching the web…' }] })
      expect(h.model.refusals).toEqual([])
    })

    it('passes thinking and redacted thinking back unmodified', async () => {
      h.model.respond = turns(
        { content: [{ type: 'thinking', thinking: 'The user wants a lookup; I will call the tool.' }, { type: 'redacted_thinking' }, { type: 'tool_use', name: 'lookup', input: { q: 'think' } }] },
        { content: [{ type: 'thinking', thinking: 'Now I can answer.' }, { type: 'text', text: 'Answer.' }] }
      )
      const { body } = await h.startRun({ input: 'x', tools: ['lookup'], thinking: { type: 'enabled', budget_tokens: 1024 }, max_tokens: 4096 })
      expect(body).toMatchObject({ status: 'completed', steps: 2 })
      // The fake checks each thinking block's signature and each redacted block's data: any change is a 400.
      expect(h.model.refusals).toEqual([])
      const sent = h.model.requests[h.model.requests.length - 1]!.body.messages[1].content
      expect(sent.map((b: { type: string }) => b.type)).toEqual(['thinking', 'redacted_thinking', 'tool_use'])
    })

    it('passes the run\'s options through to the model', async () => {
      h.model.respond = turns({ content: [{ type: 'text', text: 'ok' }] })
      await h.startRun({
        input: 'x',
        tools: ['lookup'],
        model: 'claude-test-model',
        system: [{ type: 'text', text: 'You are terse.' }],
        max_tokens: 777,
        temperature: 0.2,
        top_k: 5,
        stop_sequences: ['END'],
        tool_choice: { type: 'any' },
        disable_parallel_tool_use: true
      })
      const sent = h.model.requests[h.model.requests.length - 1]!.body
      expect(sent).toMatchObject({
        model: 'claude-test-model',
        system: [{ type: 'text', text: 'You are terse.' }],
        max_tokens: 777,
        temperature: 0.2,
        top_k: 5,
        stop_sequences: ['END'],
        tool_choice: { type: 'any', disable_parallel_tool_use: true },
        stream: true
      })
      // With the cache breakpoint Switchboard puts on the last tool (SPEC §15).
      expect(sent.tools).toEqual([{ name: 'lookup', description: 'The lookup tool', input_schema: { type: 'object', properties: { q: { type: 'string' } } }, cache_control: { type: 'ephemeral' } }])
    })

    it('sends no tools and no tool_choice to a run without tools', async () => {
      h.model.respond = turns({ content: [{ type: 'text', text: 'ok' }] })
      await h.startRun({ input: 'x' })
      const sent = h.model.requests[h.model.requests.length - 1]!.body
      expect(sent).not.toHaveProperty('tools')
      expect(sent).not.toHaveProperty('tool_choice')
    })

    describe('model errors', () => {
      it('retries 429 and 529 answers, honouring retry-after, and the run does not fail', async () => {
        let calls = 0
        h.model.respond = (request) => {
          calls++
          if (calls === 1) return { kind: 'error', status: 429, type: 'rate_limit_error', headers: { 'retry-after': '0.3' } }
          if (calls === 2) return { kind: 'error', status: 529, type: 'overloaded_error' }
          return turns({ content: [{ type: 'text', text: 'made it' }] })(request)
        }
        const { body } = await h.startRun({ input: 'x' })
        expect(body).toMatchObject({ status: 'completed', output_text: 'made it' })
        const retries = (await h.events(body.id)).filter((e) => e.type === 'step.retrying')
        expect(retries.map((e) => e.data.status)).toEqual([429, 529])
        expect(retries[0]!.data.retry_in_ms).toBe(300)
      })

      it('retries a 500 and a stream that fails halfway, cancelling the calls that stream had started', async () => {
        let calls = 0
        h.tools.calls.length = 0
        h.model.respond = (request) => {
          calls++
          if (calls === 1) return { kind: 'error', status: 500, type: 'api_error' }
          if (calls === 2) return { content: [{ type: 'tool_use', name: 'lookup', input: { q: 'orphan' } }, { type: 'text', text: 'never' }], streamErrorAfterBlocks: 1 }
          return turns({ content: [{ type: 'text', text: 'recovered' }] })(request)
        }
        const { body } = await h.startRun({ input: 'x', tools: ['lookup'] })
        expect(body).toMatchObject({ status: 'completed', output_text: 'recovered', steps: 1 })
        const events = await h.events(body.id)
        expect(events.filter((e) => e.type === 'step.retrying')).toHaveLength(2)
        // The broken answer's call (of a side_effecting tool) was never made.
        expect(h.tools.calls.filter((c) => c.body.input?.q === 'orphan')).toHaveLength(0)
        expect(h.model.refusals).toEqual([])
      })

      it('abandons and retries a stream that goes silent halfway', async () => {
        const quiet = await startHarness(backend, { env: { MODEL_IDLE_TIMEOUT_MS: '1000' } })
        try {
          let calls = 0
          quiet.model.respond = () => ++calls === 1
            ? { content: [{ type: 'text', text: 'I was saying' }, { type: 'text', text: 'never sent' }], stallAfterBlocks: 1 }
            : { content: [{ type: 'text', text: 'second wind' }] }
          const { body } = await quiet.startRun({ input: 'x' })
          expect(body).toMatchObject({ status: 'completed', output_text: 'second wind' })
          const retry = (await quiet.events(body.id)).find((e) => e.type === 'step.retrying')!
          expect(retry.data.error).toBe('the Messages API sent nothing for 1000 ms (MODEL_IDLE_TIMEOUT_MS)')
          await expect.poll(() => quiet.model.aborted).toContain(0)
        } finally {
          await quiet.close()
        }
      })

      it('fails the run on a request the API refuses, with the API\'s reason', async () => {
        h.model.respond = () => ({ kind: 'error', status: 400, type: 'invalid_request_error', message: 'prompt is too long: 300000 tokens > 200000 maximum' })
        const { body } = await h.startRun({ input: 'x' })
        expect(body).toMatchObject({ status: 'failed', stop_reason: 'error', error: { code: 'MODEL_ERR_REQUEST_REFUSED' } })
        expect(body.error.message).toContain('prompt is too long')
      })

      it('fails the run on a bad API key, without showing the key', async () => {
        h.model.respond = () => ({ kind: 'error', status: 401, type: 'authentication_error', message: 'invalid x-api-key' })
        const { body } = await h.startRun({ input: 'x' })
        expect(body).toMatchObject({ status: 'failed', stop_reason: 'error', error: { code: 'MODEL_ERR_AUTHENTICATION' } })
        expect(JSON.stringify(body)).not.toContain('sk-ant-test-key-000')
      })

      it('fails the run once retries are exhausted', async () => {
        h.model.respond = () => ({ kind: 'error', status: 529, type: 'overloaded_error', headers: { 'retry-after-ms': '20' } })
        const { body } = await h.startRun({ input: 'x' })
        expect(body).toMatchObject({ status: 'failed', stop_reason: 'error', error: { code: 'MODEL_ERR_UNAVAILABLE' } })
        expect((await h.events(body.id)).filter((e) => e.type === 'step.retrying')).toHaveLength(3)
      })
    })

    describe('the deadline', () => {
      it('fails a run whose model call hangs, at timeout_ms', async () => {
        h.model.respond = () => ({ kind: 'hang' })
        const before = h.model.aborted.length
        const { body } = await h.startRun({ input: 'x', timeout_ms: 1000 })
        expect(body).toMatchObject({ status: 'failed', stop_reason: 'timeout', error: { code: 'RUN_ERR_TIMEOUT' } })
        expect(body.error.message).toContain('1000 ms')
        // The model call itself was aborted, not left hanging.
        await expect.poll(() => h.model.aborted.length).toBeGreaterThan(before)
      })

      it('cancels tool calls in flight at the deadline and stores a valid transcript', async () => {
        await h.registerTool('stuck', '/hang', { timeout_ms: 600_000 })
        h.model.respond = turns({ content: [{ type: 'tool_use', name: 'stuck', input: { q: 'forever' } }] })
        const { body } = await h.startRun({ input: 'x', tools: ['stuck'], timeout_ms: 1000 })
        expect(body).toMatchObject({ status: 'failed', stop_reason: 'timeout', tool_calls: { total: 1, errors: 1 } })
        const run = (await h.app.inject({ method: 'GET', url: `/runs/${body.id}?include=messages`, headers: auth(TENANT_A) })).json()
        const results = run.messages[run.messages.length - 1].content
        expect(results[0]).toMatchObject({ type: 'tool_result', is_error: true })
        expect(resultText(results[0])).toMatch(/Tool stuck was cancelled: the run reached its timeout of 1000 ms/)
        await expect.poll(() => h.tools.callsTo('/hang').every((c) => c.aborted)).toBe(true)
      })
    })

    it('answers a call of a tool the run does not have with an error result, and keeps going', async () => {
      h.model.respond = turns({ content: [{ type: 'tool_use', name: 'no_such_tool', input: {} }] })
      const { body } = await h.startRun({ input: 'x', tools: ['lookup'] })
      expect(body).toMatchObject({ status: 'completed', steps: 2, tool_calls: { total: 1, errors: 1 } })
      const second = h.model.requests[h.model.requests.length - 1]!
      expect(resultText(toolResults(second)[0]!)).toBe('Tool no_such_tool is not available in this run (available: lookup).')
      // The fake refuses a history naming a tool it is not given, as the real API does: the name
      // stays defined as a stub so the run can go on.
      expect(second.body.tools.map((t: { name: string }) => t.name)).toEqual(['lookup', 'no_such_tool'])
      expect(h.model.refusals).toEqual([])
    })

    it('keeps going when a tool is deleted in the middle of a run', async () => {
      // The tool's first call deletes it: the next step has it no more.
      await h.registerTool('ephemeral', '/self-destruct')
      h.tools.on('/self-destruct', async (_req, res) => {
        await h.app.inject({ method: 'DELETE', url: '/tools/ephemeral', headers: auth(TENANT_A) })
        res.writeHead(200, { 'content-type': 'text/plain' }).end('gone now')
      })
      h.model.respond = turns(
        { content: [{ type: 'tool_use', name: 'ephemeral', input: { q: 'once' } }] },
        { content: [{ type: 'tool_use', name: 'ephemeral', input: { q: 'twice' } }] }
      )
      const { body } = await h.startRun({ input: 'x', tools: ['ephemeral'] })
      expect(body).toMatchObject({ status: 'completed', steps: 3, tool_calls: { total: 2, errors: 1 } })
      expect(h.model.refusals).toEqual([])
    })
  })
}
