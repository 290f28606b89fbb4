import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { auth, TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { turnNumber, type RecordedRequest } from '../support/fake-messages-api.js'

const LONG_SYSTEM = `You answer questions about the weather. ${'Be precise, cite the tool you used, and keep it short. '.repeat(100)}`

/** Every block of a request that carries a cache breakpoint, by where it is. */
function breakpoints (body: Record<string, any>): string[] {
  const out: string[] = []
  for (const [i, tool] of (body.tools ?? []).entries()) if (tool.cache_control != null) out.push(`tools.${i as number}`)
  for (const [i, message] of body.messages.entries()) {
    if (!Array.isArray(message.content)) continue
    for (const [j, block] of message.content.entries()) if (block.cache_control != null) out.push(`messages.${i as number}.content.${j as number}`)
  }
  return out
}

describe('model requests of today (SPEC §15)', () => {
  let h: Harness
  beforeAll(async () => {
    h = await startHarness()
    await h.registerTool('lookup', '/ok', { effect: 'read_only' })
  })
  afterAll(async () => h?.close())
  beforeEach(() => {
    h.model.refusals.length = 0
  })

  describe('options passed through', () => {
    it('output_config, context_management (with its beta header), tool_search and the tool fields reach the API as given', async () => {
      const put = await h.app.inject({
        method: 'PUT',
        url: '/tools/forecast',
        headers: auth(TENANT_A),
        payload: {
          description: 'Forecast for a city',
          input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false },
          url: `${h.tools.url}/ok`,
          strict: true,
          input_examples: [{ city: 'Paris' }, { city: 'Lagos' }],
          defer_loading: true,
          eager_input_streaming: true
        }
      })
      expect(put.statusCode, put.body).toBe(201)
      expect(put.json()).toMatchObject({ strict: true, input_examples: [{ city: 'Paris' }, { city: 'Lagos' }], defer_loading: true, eager_input_streaming: true })

      h.model.respond = () => ({ content: [{ type: 'text', text: '{"ok": true}' }] })
      const outputConfig = { effort: 'high', format: { type: 'json_schema', schema: { type: 'object', properties: { ok: { type: 'boolean' } } } } }
      const contextManagement = { edits: [{ type: 'clear_tool_uses_20250919', keep: { type: 'tool_uses', value: 3 } }] }
      const { body: run } = await h.startRun({ input: 'x', tools: ['lookup', 'forecast'], output_config: outputConfig, context_management: contextManagement, tool_search: 'bm25' })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      expect(h.model.refusals).toEqual([])
      const sent = h.model.requests.at(-1)!
      expect(sent.body.output_config).toEqual(outputConfig)
      expect(sent.body.context_management).toEqual(contextManagement)
      expect(sent.headers['anthropic-beta']).toBe('context-management-2025-06-27')
      expect(sent.body.tools).toEqual([
        // The breakpoint goes on the last tool the API lets hold one: not a deferred tool, not the search tool.
        { name: 'lookup', description: 'The lookup tool', input_schema: { type: 'object', properties: { q: { type: 'string' } } }, cache_control: { type: 'ephemeral' } },
        {
          name: 'forecast',
          description: 'Forecast for a city',
          input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false },
          strict: true,
          input_examples: [{ city: 'Paris' }, { city: 'Lagos' }],
          defer_loading: true,
          eager_input_streaming: true
        },
        { type: 'tool_search_tool_bm25_20251119', name: 'tool_search_tool_bm25' }
      ])
    })

    it('an input example that does not match the schema is a 400 that names it', async () => {
      const res = await h.app.inject({
        method: 'PUT',
        url: '/tools/bad_examples',
        headers: auth(TENANT_A),
        payload: {
          description: 'x',
          input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
          url: `${h.tools.url}/ok`,
          input_examples: [{ city: 'Paris' }, { town: 'Lagos' }]
        }
      })
      expect(res.statusCode).toBe(400)
      expect(res.json()).toMatchObject({ code: 'TOOL_ERR_INVALID_EXAMPLE', message: expect.stringMatching(/^input_examples\[1\] does not match input_schema: .*city/) })
    })
  })

  describe('what known models refuse is a 400 at create', () => {
    it.each([
      [{ model: 'claude-opus-4-7', temperature: 0.3 }, 'temperature', 'claude-opus-4-7'],
      [{ model: 'claude-opus-4-7-20260416', thinking: { type: 'enabled', budget_tokens: 2048 } }, 'thinking.budget_tokens', 'claude-opus-4-7-20260416'],
      [{ model: 'claude-opus-5-5', tools: ['lookup'], tool_choice: { type: 'any' } }, 'tool_choice', 'claude-opus-5-5'],
      [{ model: 'claude-sonnet-4-5', output_config: { effort: 'low' } }, 'output_config.effort', 'claude-sonnet-4-5'],
      [{ model: 'claude-opus-4-6', output_config: { effort: 'xhigh' } }, 'output_config.effort', 'claude-opus-4-6']
    ])('%j', async (fields, option, model) => {
      const before = h.model.requests.length
      const res = await h.startRun({ input: 'x', ...fields })
      expect(res.status).toBe(400)
      expect(res.body.code).toBe('RUN_ERR_MODEL_UNSUPPORTED')
      expect(res.body.message).toMatch(new RegExp(`^${option.replace('.', '\\.')}: model ${model} does not take`))
      expect(h.model.requests.length).toBe(before)
    })

    it('an unknown model gets what it is asked for', async () => {
      h.model.respond = () => ({ content: [{ type: 'text', text: 'ok' }] })
      const res = await h.startRun({ input: 'x', model: 'claude-someday-9', temperature: 0.3, tools: ['lookup'], tool_choice: { type: 'any' }, output_config: { effort: 'max' } })
      expect(res.body.status, JSON.stringify(res.body)).toBe('completed')
      expect(h.model.requests.at(-1)!.body).toMatchObject({ model: 'claude-someday-9', temperature: 0.3, output_config: { effort: 'max' } })
    })
  })

  describe('server tool and compaction blocks', () => {
    it('stay in the history byte for byte, get no tool_result, and pause_turn goes on', async () => {
      const search = { type: 'server_tool_use', id: 'srvtoolu_01abc', name: 'web_search', input: { query: 'weather in Paris' } }
      const found = { type: 'web_search_tool_result', tool_use_id: 'srvtoolu_01abc', content: [{ type: 'web_search_result', url: 'https://example.com/paris', title: 'Paris', encrypted_content: 'Zm9v', page_age: null }] }
      const compaction = { type: 'compaction', content: 'The user asked about the weather in Paris; a search found a page.', encrypted_content: 'b3BhcXVl' }
      h.model.respond = (request: RecordedRequest) => {
        const turn = turnNumber(request)
        if (turn === 1) return { content: [{ type: 'raw', block: compaction }, { type: 'tool_use', id: 'toolu_after', name: 'lookup', input: { q: 'paris' } }] }
        if (turn === 2) return { content: [{ type: 'raw', block: search }, { type: 'raw', block: found }], stop_reason: 'pause_turn' }
        return { content: [{ type: 'text', text: 'sunny' }] }
      }
      const { body: run } = await h.startRun({ input: 'weather in Paris?', tools: ['lookup'], context_management: { edits: [{ type: 'compact_20260112' }] } })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      // The fake refuses any server or compaction block that is not one it sent, to the byte.
      expect(h.model.refusals).toEqual([])
      expect(run.steps).toBe(3)
      const last = h.model.requests.at(-1)!
      expect(last.headers['anthropic-beta']).toBe('compact-2026-01-12')
      const messages = last.body.messages
      expect(messages[1].content[0]).toEqual(compaction)
      // The paused message is sent back as it came (the breakpoint aside), and the API goes on with it.
      const { cache_control: _, ...lastBlock } = messages[3].content[1]
      expect(messages[3].role).toBe('assistant')
      expect(JSON.stringify([messages[3].content[0], lastBlock])).toBe(JSON.stringify([search, found]))
      // The one tool_result answers the one tool_use, never the server tool's call.
      expect(messages[2].content.map((b: { type: string, tool_use_id?: string }) => [b.type, b.tool_use_id])).toEqual([['tool_result', 'toolu_after']])
      expect(messages).toHaveLength(4)
    })
  })

  describe('prompt caching', () => {
    it('each request has a breakpoint on the last tool and at the end of the history, with the same tools to the byte; later steps read the cache', async () => {
      h.model.respond = (request: RecordedRequest) => turnNumber(request) <= 3
        ? { content: [{ type: 'tool_use', name: 'lookup', input: { q: `q${turnNumber(request)}` } }] }
        : { content: [{ type: 'text', text: 'done' }] }
      const before = h.model.requests.length
      const { body: run } = await h.startRun({ input: 'look it up', system: LONG_SYSTEM, tools: ['lookup'], batch_tool: true })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      const requests = h.model.requests.slice(before)
      expect(requests).toHaveLength(4)
      // The first request's input is sent as given, a string: its breakpoint is the last tool's.
      expect(requests[0]!.body.messages[0].content).toBe('look it up')
      expect(breakpoints(requests[0]!.body)).toEqual(['tools.1'])
      for (const request of requests.slice(1)) {
        const { body } = request
        const lastMessage = body.messages.length - 1
        expect(breakpoints(body)).toEqual([`tools.${body.tools.length - 1 as number}`, `messages.${lastMessage as number}.content.${body.messages[lastMessage].content.length - 1 as number}`])
      }
      const tools = requests.map((r) => JSON.stringify(r.body.tools))
      expect(new Set(tools).size).toBe(1)
      // The first request writes the cache; each later one reads what the one before wrote.
      const steps = (await h.events(run.id)).filter((e) => e.type === 'step.completed').map((e) => e.data.usage)
      // The first request caches nothing (its tools alone are under the 1,024 tokens a prefix needs);
      // the second writes the system prompt and history, and each later one reads what the one before wrote.
      expect(steps[0]).toMatchObject({ cache_read_input_tokens: 0, cache_creation_input_tokens: 0 })
      expect(steps[1].cache_creation_input_tokens).toBeGreaterThan(1024)
      for (const [i, usage] of steps.slice(2).entries()) {
        expect(usage.cache_read_input_tokens).toBe(steps[i + 1].cache_read_input_tokens + steps[i + 1].cache_creation_input_tokens)
      }
      expect(run.usage.cache_read_input_tokens).toBe(steps.reduce((sum, u) => sum + (u.cache_read_input_tokens as number), 0))
      // The stored transcript holds no breakpoint of Switchboard's.
      const stored = await h.app.inject({ method: 'GET', url: `/runs/${run.id as string}?include=messages`, headers: auth(TENANT_A) })
      expect(JSON.stringify(stored.json().messages)).not.toContain('cache_control')
    })

    it('cache: "off" sends no breakpoint, and nothing is read from or written to the cache', async () => {
      h.model.respond = (request: RecordedRequest) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'lookup', input: { q: 'x' } }] }
        : { content: [{ type: 'text', text: 'done' }] }
      const before = h.model.requests.length
      const { body: run } = await h.startRun({ input: 'look it up', system: LONG_SYSTEM, tools: ['lookup'], cache: 'off' })
      expect(run.status).toBe('completed')
      for (const request of h.model.requests.slice(before)) expect(breakpoints(request.body)).toEqual([])
      expect(run.usage).toMatchObject({ cache_read_input_tokens: 0, cache_creation_input_tokens: 0 })
    })

    it('a history with four breakpoints of its own gets none more', async () => {
      h.model.respond = () => ({ content: [{ type: 'text', text: 'ok' }] })
      const mark = { type: 'ephemeral' }
      const messages = [
        { role: 'user', content: [{ type: 'text', text: 'one', cache_control: mark }, { type: 'text', text: 'two', cache_control: mark }] },
        { role: 'assistant', content: [{ type: 'text', text: 'three', cache_control: mark }] },
        { role: 'user', content: [{ type: 'text', text: 'four', cache_control: mark }] }
      ]
      const { body: run } = await h.startRun({ messages, tools: ['lookup'] })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      expect(h.model.refusals).toEqual([])
      expect(breakpoints(h.model.requests.at(-1)!.body)).toEqual(['messages.0.content.0', 'messages.0.content.1', 'messages.1.content.0', 'messages.2.content.0'])
    })
  })
})
