import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { backends } from '../support/backends.js'
import { auth, TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { resultText, toolResults, type RecordedRequest, type Turn } from '../support/fake-messages-api.js'
import { propertyOptions } from '../support/property.js'

/**
 * A hostile or broken Messages API (SPEC §5): malformed JSON in tool_use input, unknown block and
 * delta types, events out of order or pointing nowhere, a missing message_stop, garbage SSE
 * lines, a 200 that is no event stream, streams that never end. Each run ends in a defined state
 * (continued where the API's contract allows, retried per the engine's rules, or failed with a
 * clear error), never a 500, never a run hung past its timeout, never a broken transcript sent
 * back to the model, and the process stays whole (nothing of it polluted).
 */

// ---- a raw event stream, written by hand ----

const sse = (event: string, data: unknown): string => `event: ${event}\ndata: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`
const messageStart = (usage: unknown = { input_tokens: 10, output_tokens: 1 }): string => sse('message_start', {
  type: 'message_start',
  message: { id: 'msg_hostile', type: 'message', role: 'assistant', model: 'claude-test', content: [], stop_reason: null, stop_sequence: null, usage }
})
const blockStart = (index: unknown, block: unknown): string => sse('content_block_start', { type: 'content_block_start', index, content_block: block })
const delta = (index: unknown, d: unknown): string => sse('content_block_delta', { type: 'content_block_delta', index, delta: d })
const blockStop = (index: unknown): string => sse('content_block_stop', { type: 'content_block_stop', index })
const messageDelta = (stopReason: unknown, usage: unknown = { output_tokens: 5 }): string => sse('message_delta', { type: 'message_delta', delta: { stop_reason: stopReason, stop_sequence: null }, usage })
const messageStop = sse('message_stop', { type: 'message_stop' })
const text = (index: number, value: string): string[] => [blockStart(index, { type: 'text', text: '' }), delta(index, { type: 'text_delta', text: value }), blockStop(index)]
const toolUse = (index: number, id: string, name: string, json: string): string[] =>
  [blockStart(index, { type: 'tool_use', id, name, input: {} }), delta(index, { type: 'input_json_delta', partial_json: json }), blockStop(index)]
const raw = (chunks: string[], extra: Partial<Extract<Turn, { kind: 'raw' }>> = {}): Turn => ({ kind: 'raw', chunks, ...extra })
const whole = (blocks: string[], stopReason = 'end_turn'): Turn => raw([messageStart(), ...blocks, messageDelta(stopReason), messageStop])

const ANSWER: Turn = { content: [{ type: 'text', text: 'recovered' }] }

/** Answers the scripted turns in order, then `ANSWER` to every later call. */
function inOrder (turns: Turn[]): (request: RecordedRequest) => Turn {
  let next = 0
  return () => turns[next++] ?? ANSWER
}

/** Every block of an assistant message sent back to the model has only the fields its type has. */
const BLOCK_FIELDS: Record<string, string[]> = {
  text: ['type', 'text', 'citations'],
  tool_use: ['type', 'id', 'name', 'input'],
  thinking: ['type', 'thinking', 'signature'],
  redacted_thinking: ['type', 'data']
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`a hostile Messages API: ${backend.name}`, () => {
    let h: Harness
    /** Each run's script, by its input (unique per run), so that runs can go side by side. */
    const scripts = new Map<string, (request: RecordedRequest) => Turn>()
    let runs = 0
    const start = async (env: Record<string, string> = {}): Promise<Harness> => {
      const started = await startHarness(backend, { env: { MODEL_MAX_RETRIES: '1', MODEL_IDLE_TIMEOUT_MS: '1000', RATE_LIMIT_PER_MINUTE: '0', TENANT_MAX_ACTIVE_RUNS: '100000', ...env } })
      await started.registerTool('lookup', '/ok', { effect: 'read_only', max_attempts: 1 })
      started.model.respond = (request) => scripts.get(request.body.messages[0].content)?.(request) ?? ANSWER
      return started
    }

    beforeAll(async () => {
      h = await start()
    })
    afterAll(async () => h?.close())

    /** POST /runs (sync) with the model answering `turns`; the run as answered. */
    async function runWith (turns: Turn[], body: Record<string, unknown> = {}): Promise<Record<string, any>> {
      const input = `run ${++runs}`
      scripts.set(input, inOrder(turns))
      const firstRequest = h.model.requests.length
      const refusals = h.model.refusals.length
      const res = await h.app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input, tools: ['lookup'], timeout_ms: 8000, ...body } })
      expect(res.statusCode, res.body).toBe(200)
      const run = res.json()
      expect(['completed', 'failed']).toContain(run.status)
      if (run.status === 'failed') {
        expect(run.error.code).toMatch(/^[A-Z]+_ERR_[A-Z_]+$/)
        expect(run.error.message.length).toBeGreaterThan(10)
      }
      // Whatever the model sent, what went back to it was a transcript the API accepts.
      const refused = h.model.refusals.slice(refusals).map((r) => r.message)
      if (refused.length > 0) throw new Error(`the model API refused what was sent back: ${refused.join('; ')}`)
      for (const request of h.model.requests.slice(firstRequest)) {
        for (const message of request.body.messages) {
          if (message.role !== 'assistant' || !Array.isArray(message.content)) continue
          for (const block of message.content) {
            const fields = BLOCK_FIELDS[block.type]
            if (fields !== undefined) for (const key of Object.keys(block)) expect(fields, `${block.type} block sent back with ${key}`).toContain(key)
            if (block.type === 'tool_use') {
              expect(typeof block.input === 'object' && block.input !== null && !Array.isArray(block.input)).toBe(true)
            }
          }
        }
      }
      // The stored run reads back, transcript and events included.
      const read = await h.app.inject({ method: 'GET', url: `/runs/${run.id as string}?include=messages`, headers: auth(TENANT_A) })
      expect(read.statusCode, read.body).toBe(200)
      expect((await h.app.inject({ method: 'GET', url: `/runs/${run.id as string}/events?limit=100`, headers: auth(TENANT_A) })).statusCode).toBe(200)
      return run
    }

    /** The tool_result the model got back for the first turn's tool_use `id`. */
    function resultFor (id: string): { content?: unknown, is_error?: boolean } | undefined {
      for (const request of [...h.model.requests].reverse()) {
        const found = toolResults(request).find((r) => r.tool_use_id === id)
        if (found !== undefined) return found
      }
      return undefined
    }

    describe('malformed tool_use input', () => {
      const cases: Array<[string, string]> = [
        ['cut off in the middle', '{"q": "par'],
        ['not JSON at all', '{q: \'paris\'}'],
        ['an array', '[1, 2]'],
        ['a string', '"paris"'],
        ['a number', '42'],
        ['null', 'null'],
        ['two documents', '{"q":"a"}{"q":"b"}']
      ]
      for (const [what, json] of cases) {
        it(`${what}: the tool is not called, the model gets an is_error result naming it, and the run goes on`, async () => {
          const calls = h.tools.callsTo('/ok').length
          const id = `toolu_${what.replace(/\W/g, '_')}`
          const run = await runWith([whole([...text(0, 'Looking.'), ...toolUse(1, id, 'lookup', json)], 'tool_use')])
          expect(run.status).toBe('completed')
          expect(run.output_text).toBe('recovered')
          expect(h.tools.callsTo('/ok').length).toBe(calls)
          const result = resultFor(id)!
          expect(result.is_error).toBe(true)
          expect(resultText(result)).toMatch(/Tool lookup was not called/)
        })
      }

      it('a valid input beside a broken one: the valid call is made, both get their result', async () => {
        const run = await runWith([whole([...toolUse(0, 'toolu_good', 'lookup', '{"q":"ok"}'), ...toolUse(1, 'toolu_bad', 'lookup', '{"q":')], 'tool_use')])
        expect(run.status).toBe('completed')
        expect(resultFor('toolu_good')!.is_error).toBeUndefined()
        expect(resultFor('toolu_bad')!.is_error).toBe(true)
      })

      it('an input nested 100,000 levels deep ends in a defined state', async () => {
        const deep = `${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`
        await runWith([whole(toolUse(0, 'toolu_deep', 'lookup', deep), 'tool_use')])
      })
    })

    describe('blocks, deltas and events the client does not expect', () => {
      it('an unknown content block type is kept, and the tool call after it still made', async () => {
        const run = await runWith([whole([blockStart(0, { type: 'mystery_block', payload: { x: 1 } }), blockStop(0), ...toolUse(1, 'toolu_after_mystery', 'lookup', '{"q":"x"}')], 'tool_use')])
        expect(run.status).toBe('completed')
        expect(resultFor('toolu_after_mystery')!.is_error).toBeUndefined()
      })

      it('unknown delta types, and deltas that do not fit their block, are ignored', async () => {
        const run = await runWith([whole([
          blockStart(0, { type: 'text', text: '' }),
          delta(0, { type: 'text_delta', text: 'Hello' }),
          delta(0, { type: 'mystery_delta', text: 'ignored' }),
          delta(0, { type: 'input_json_delta', partial_json: '{"x":1}' }),
          delta(0, { type: 'thinking_delta', thinking: 'not a thinking block' }),
          blockStop(0),
          blockStart(1, { type: 'tool_use', id: 'toolu_mixed', name: 'lookup', input: {} }),
          delta(1, { type: 'text_delta', text: 'not text' }),
          delta(1, { type: 'signature_delta', signature: 'sig' }),
          delta(1, { type: 'input_json_delta', partial_json: '{"q":"mixed"}' }),
          blockStop(1)
        ], 'tool_use')])
        expect(run.status).toBe('completed')
        expect(resultFor('toolu_mixed')!.is_error).toBeUndefined()
        const second = h.model.requests[h.model.requests.length - 1]!.body.messages[1]
        expect(second.content[0]).toEqual({ type: 'text', text: 'Hello' })
      })

      it('deltas and stops for blocks that never started, and indexes that are no index, change nothing', async () => {
        const before = { arrays: Object.keys(Array.prototype), objects: Object.keys(Object.prototype) }
        const run = await runWith([raw([
          messageStart(),
          delta(0, { type: 'text_delta', text: 'early' }),
          blockStop(5),
          delta('__proto__', { type: 'text_delta', text: 'polluted' }),
          delta('constructor', { type: 'text_delta', text: 'polluted' }),
          delta(-1, { type: 'text_delta', text: 'x' }),
          delta(1.5, { type: 'text_delta', text: 'x' }),
          ...text(0, 'fine'),
          blockStop('__proto__'),
          messageDelta('end_turn'),
          messageStop
        ])])
        expect(run.status).toBe('completed')
        expect(run.output_text).toBe('fine')
        expect({ arrays: Object.keys(Array.prototype), objects: Object.keys(Object.prototype) }).toEqual(before)
        expect(([] as unknown as Record<string, unknown>).text).toBeUndefined()
      })

      it('a block started at an index far past the end is a broken stream, not a huge message', async () => {
        const run = await runWith([raw([messageStart(), blockStart(100_000_000, { type: 'text', text: '' }), messageDelta('end_turn'), messageStop])])
        // Retried (MODEL_MAX_RETRIES=1) with a sound answer.
        expect(run.status).toBe('completed')
        expect(run.output_text).toBe('recovered')
        expect(JSON.stringify(run.output).length).toBeLessThan(1000)
      })

      it('a block started at "__proto__" or "length" is a broken stream', async () => {
        for (const index of ['__proto__', 'length']) {
          const run = await runWith([raw([messageStart(), blockStart(index, { type: 'text', text: 'x' }), blockStop(index), messageDelta('end_turn'), messageStop])])
          expect(run.status).toBe('completed')
          expect(run.output_text).toBe('recovered')
        }
      })

      it('usage that is not numbers does not reach the run', async () => {
        const run = await runWith([raw([messageStart({ input_tokens: 'many', output_tokens: null }), ...text(0, 'ok'), messageDelta('end_turn', { output_tokens: '5', input_tokens: { x: 1 } }), messageStop])])
        expect(run.status).toBe('completed')
        const { cache_creation: byLifetime, cost_usd: cost, ...counts } = run.usage
        for (const value of [...Object.values(counts), ...Object.values(byLifetime)]) expect(Number.isInteger(value)).toBe(true)
        expect(cost === null || Number.isFinite(cost)).toBe(true)
      })

      it('a message_delta that tries to replace the content is not obeyed', async () => {
        const run = await runWith([raw([messageStart(), ...text(0, 'kept'), sse('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', content: 'replaced', id: 42 }, usage: { output_tokens: 1 } }), messageStop])])
        expect(run.status).toBe('completed')
        expect(run.output_text).toBe('kept')
      })

      it('stop reason tool_use without a tool_use block ends the run as end_turn', async () => {
        const run = await runWith([whole(text(0, 'I will call a tool.'), 'tool_use')])
        expect(run).toMatchObject({ status: 'completed', stop_reason: 'end_turn', steps: 1, output_text: 'I will call a tool.' })
      })

      it('an unknown stop reason ends the run as end_turn', async () => {
        const run = await runWith([whole(text(0, 'hm'), 'mystery_reason')])
        expect(run).toMatchObject({ status: 'completed', stop_reason: 'end_turn', output_text: 'hm' })
      })
    })

    describe('broken streams are retried, then fail clearly', () => {
      const broken: Array<[string, Turn]> = [
        ['a block before message_start', raw([...text(0, 'x'), messageStart(), messageDelta('end_turn'), messageStop])],
        ['no message_stop', raw([messageStart(), ...text(0, 'x'), messageDelta('end_turn')])],
        ['event data that is not JSON', raw([messageStart(), sse('content_block_start', '{"type": "content_block_start", index: 0')])],
        ['event data that is null', raw([messageStart(), 'event: content_block_start\ndata: null\n\n', messageStop])],
        ['a 200 with a JSON body', raw(['{"type":"message","content":[]}'], { headers: { 'content-type': 'application/json' } })],
        ['a 200 with an HTML body', raw(['<html><body>Bad gateway</body></html>'], { headers: { 'content-type': 'text/html' } })],
        ['a 200 with no body', raw([])],
        ['an error event that is not JSON', raw([messageStart(), 'event: error\ndata: oops\n\n'])],
        ['a stream that goes silent', raw([messageStart(), ...text(0, 'x')], { keepOpen: true })],
        ['pings for ever', raw([messageStart()], { forever: sse('ping', { type: 'ping' }), chunkDelayMs: 50 })]
      ]
      it('each is retried, and its run completes when the API comes back', async () => {
        // Side by side: each waits out a backoff or an idle timeout.
        const outcomes = await Promise.allSettled(broken.map(async ([what, turn]) => {
          const run = await runWith([turn])
          const events = await h.events(run.id)
          if (run.status !== 'completed' || run.output_text !== 'recovered' || !events.some((e) => e.type === 'step.retrying')) {
            throw new Error(`${what}: ${JSON.stringify({ status: run.status, error: run.error, output_text: run.output_text })}`)
          }
        }))
        expect(outcomes.flatMap((o, i) => o.status === 'rejected' ? [`${broken[i]![0]}: ${String(o.reason)}`] : [])).toEqual([])
      })

      it('an event that never ends is cut at its size limit, not held in memory, and the call retried', async () => {
        // 64 KB a millisecond: the limit (8 Mi characters) comes long before the idle timeout.
        const run = await runWith([raw([messageStart(), 'event: content_block_delta\ndata: '], { forever: 'x'.repeat(65536), chunkDelayMs: 1 })])
        expect(run).toMatchObject({ status: 'completed', output_text: 'recovered' })
        const retrying = (await h.events(run.id)).find((e) => e.type === 'step.retrying')
        expect(retrying?.data.error).toMatch(/server-sent event longer than 8388608 characters/)
      })

      it('an error event of a type the client does not know fails the run, naming it', async () => {
        const run = await runWith([raw([messageStart(), sse('error', { type: 'error', error: { type: 'mystery_error', message: 'what happened' } })])])
        expect(run).toMatchObject({ status: 'failed', stop_reason: 'error', error: { code: 'MODEL_ERR_UNAVAILABLE' } })
        expect(run.error.message).toMatch(/mystery_error.*what happened/)
      })

      it('broken every time: the run fails with the model error, in its own words', async () => {
        const run = await runWith([raw(['<html>'], { headers: { 'content-type': 'text/html' } }), raw(['<html>'], { headers: { 'content-type': 'text/html' } })])
        expect(run).toMatchObject({ status: 'failed', stop_reason: 'error', error: { code: 'MODEL_ERR_UNAVAILABLE' } })
        expect(run.error.message).toMatch(/^The model call failed: /)
      })

      it('garbage lines, comments and unknown events between real ones are skipped', async () => {
        const run = await runWith([raw([
          ': a comment\n\n', 'garbage without a colon\n\n', 'retry: 10\n\n', 'id: 7\n\n',
          messageStart(), 'data: {"no": "event name"}\n\n', sse('mystery_event', { type: 'mystery_event' }), sse('ping', { type: 'ping' }),
          ...text(0, 'through the noise'), 'event: \ndata: \n\n', messageDelta('end_turn'), messageStop
        ])])
        expect(run).toMatchObject({ status: 'completed', output_text: 'through the noise' })
      })

      it('a stream of text far past what max_tokens can produce is abandoned as broken, long before the run\'s deadline', async () => {
        // 64 Ki characters a millisecond for a call of max_tokens 100: read until the deadline, that
        // would be more than a gigabyte; the call is abandoned past 64 characters a token and a
        // fixed allowance, retried once (the same again), and the run fails with the model error.
        const aborted = h.model.aborted.length
        const endless = (): Turn => raw([messageStart(), blockStart(0, { type: 'text', text: '' })], { forever: delta(0, { type: 'text_delta', text: 'x'.repeat(65536) }), chunkDelayMs: 1 })
        const run = await runWith([endless(), endless()], { max_tokens: 100, timeout_ms: 20_000 })
        expect(run).toMatchObject({ status: 'failed', stop_reason: 'error', error: { code: 'MODEL_ERR_UNAVAILABLE' } })
        expect(run.error.message).toMatch(/more than max_tokens 100 can produce/)
        const retrying = (await h.events(run.id)).filter((e) => e.type === 'step.retrying')
        expect(retrying).toHaveLength(1)
        expect(retrying[0]!.data.error).toMatch(/^the Messages API stream sent more than \d+ characters of content/)
        // Both endless answers were hung up on.
        await expect.poll(() => h.model.aborted.length).toBeGreaterThanOrEqual(aborted + 2)
      })

      it('a stream of text that never ends is stopped at the run\'s timeout', async () => {
        const aborted = h.model.aborted.length
        const run = await runWith([raw([messageStart(), blockStart(0, { type: 'text', text: '' })], { forever: delta(0, { type: 'text_delta', text: 'more ' }), chunkDelayMs: 20 })], { timeout_ms: 1000 })
        expect(run).toMatchObject({ status: 'failed', stop_reason: 'timeout', error: { code: 'RUN_ERR_TIMEOUT' } })
        // The endless answer was hung up on, not read for ever.
        await expect.poll(() => h.model.aborted.length).toBeGreaterThan(aborted)
      })
    })

    it('random event streams: every run ends completed or failed, with a transcript the API accepts', async () => {
      const index = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 3 }) }, { weight: 1, arbitrary: fc.constantFrom(-1, 1.5, '0', '__proto__', null, 1e9) })
      const block = fc.oneof(
        fc.constant({ type: 'text', text: '' }),
        fc.record({ type: fc.constant('tool_use'), id: fc.constantFrom('toolu_a', 'toolu_b'), name: fc.constantFrom('lookup', 'nope'), input: fc.constant({}) }),
        fc.constant({ type: 'thinking', thinking: '', signature: '' }),
        fc.constant({ type: 'mystery', x: 1 }),
        fc.constant(null),
        fc.constant({ type: 'tool_use' })
      )
      const deltaValue = fc.oneof(
        fc.record({ type: fc.constant('text_delta'), text: fc.string({ maxLength: 10 }) }),
        fc.record({ type: fc.constant('input_json_delta'), partial_json: fc.oneof(fc.constantFrom('{"q":"x"}', '{', '"q"', '}', '[]', 'null'), fc.string({ maxLength: 5 })) }),
        fc.record({ type: fc.constant('thinking_delta'), thinking: fc.string({ maxLength: 5 }) }),
        fc.record({ type: fc.constant('signature_delta'), signature: fc.string({ maxLength: 5 }) }),
        fc.record({ type: fc.constant('citations_delta'), citation: fc.constant({ type: 'char_location', cited_text: 'x' }) }),
        fc.constant({ type: 'mystery_delta' }),
        fc.constant(null)
      )
      const event = fc.oneof(
        fc.constant(messageStart()),
        fc.tuple(index, block).map(([i, b]) => blockStart(i, b)),
        fc.tuple(index, deltaValue).map(([i, d]) => delta(i, d)),
        index.map(blockStop),
        // No pause_turn: continuing twice puts two assistant messages in a row, which the real API
        // merges and the fake refuses (model.test.ts covers pause_turn).
        fc.constantFrom('end_turn', 'tool_use', 'max_tokens', 'refusal', null, 'mystery').map((r) => messageDelta(r)),
        fc.constant(messageStop),
        fc.constantFrom(sse('ping', { type: 'ping' }), 'garbage\n\n', 'event: content_block_delta\ndata: {\n\n', sse('mystery', { type: 'mystery' }), 'data: 1\n\n')
      )
      // Mostly well-framed: message_start first, message_stop last, random events between.
      const stream = fc.tuple(fc.boolean(), fc.array(event, { maxLength: 10 }), fc.boolean()).map(([framed, events, stopped]) =>
        framed ? [messageStart(), ...events, ...(stopped ? [messageDelta('tool_use'), messageStop] : [])] : events)
      // Without retries, so that a broken stream fails its run at once instead of after a backoff.
      const main = h
      h = await start({ MODEL_MAX_RETRIES: '0' })
      try {
        await fc.assert(fc.asyncProperty(stream, async (chunks) => {
          await runWith([raw(chunks), raw(chunks)], { timeout_ms: 8000 })
        }), propertyOptions(60))
        expect((await h.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200)
      } finally {
        await h.close()
        h = main
      }
    })
  })
}
