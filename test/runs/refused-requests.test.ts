import Anthropic from '@anthropic-ai/sdk'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { startFakeMessagesApi, resultText, toolResults, toolsThenAnswer, type FakeMessagesApi } from '../support/fake-messages-api.js'
import { startHarness, type Harness } from '../support/harness.js'
import type { Handler } from '../support/webhook-server.js'

/**
 * Requests the Messages API refuses are never created, stored or sent: a history, thinking
 * settings or cache breakpoints it refuses are a 400 at POST /runs, before any model call; and no
 * tool's answer (an is_error result that says nothing, blocks with fields the API does not take in
 * a tool result) makes the model refuse a run's next request. The fake Messages API is as strict
 * as the real one about each of these, so a run that reached it would fail.
 */

const image = { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }
const cached = (text: string, cacheControl: unknown = { type: 'ephemeral' }) => ({ type: 'text', text, cache_control: cacheControl })

/** A webhook that answers `value` as JSON. */
function answers (value: unknown): Handler {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(value))
  }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`requests the model would refuse: ${backend.name}`, () => {
    let h: Harness
    beforeAll(async () => {
      h = await startHarness(backend)
      await h.registerTool('weather', '/ok')
    })
    afterAll(async () => h?.close())
    beforeEach(() => {
      h.model.refusals.length = 0
      h.model.respond = () => ({ content: [{ type: 'text', text: 'fine' }] })
    })

    /** POST /runs, expecting a 400 with `code` and a message that starts with `start`, and no model call. */
    async function refused (body: Record<string, unknown>, code: string, start: string): Promise<string> {
      const before = h.model.requests.length
      const res = await h.startRun(body)
      expect(res.status, JSON.stringify(res.body)).toBe(400)
      expect(res.body.code).toBe(code)
      expect(res.body.message.slice(0, start.length)).toBe(start)
      expect(h.model.requests.length).toBe(before)
      return res.body.message
    }

    describe('a history the Messages API refuses is a 400 naming the message and the block', () => {
      const asked = { role: 'assistant', content: [{ type: 'text', text: 'Checking.' }, { type: 'tool_use', id: 'toolu_1', name: 'weather', input: { q: 'Paris' } }] }
      const cases: Array<[string, unknown[], string]> = [
        ['an empty message', [{ role: 'user', content: '' }], 'messages[0] has empty content: '],
        ['a blank message', [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: '   ' }, { role: 'user', content: '?' }], 'messages[1] has empty content: '],
        ['an empty text block', [{ role: 'user', content: 'Weather?' }, asked, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'sunny' }, { type: 'text', text: '' }] }], 'messages[2].content[1] is an empty text block: '],
        ['a malformed tool_use id', [{ role: 'user', content: 'Weather?' }, { role: 'assistant', content: [{ type: 'tool_use', id: 'call.1', name: 'weather', input: {} }] }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call.1', content: 'sunny' }] }], 'messages[1].content[0] is a tool_use whose id "call.1" is malformed: '],
        ['a tool input that is a string', [{ role: 'user', content: 'Weather?' }, { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'weather', input: 'Paris' }] }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'sunny' }] }], 'messages[1].content[0] is a tool_use whose input is not a JSON object: '],
        ['a thinking block without its signature', [{ role: 'user', content: 'a' }, { role: 'assistant', content: [{ type: 'thinking', thinking: 'Let me see.' }, { type: 'text', text: 'b' }] }, { role: 'user', content: 'c' }], 'messages[1].content[0] is a thinking block without a signature: '],
        ['an unknown block type', [{ role: 'user', content: [{ type: 'text', text: 'Look:' }, { type: 'video', url: 'https://example.com/v.mp4' }] }], 'messages[0].content[1] has type "video", which the Messages API does not take in a message: '],
        ['an is_error result without content', [{ role: 'user', content: 'Weather?' }, asked, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: '', is_error: true }] }], 'messages[2].content[0] is an is_error tool_result without content: '],
        ['a bad cache_control', [{ role: 'user', content: [cached('a', { type: 'ephemeral', ttl: '1d' })] }], 'messages[0].content[0].cache_control has ttl "1d": ']
      ]
      for (const [what, messages, start] of cases) {
        it(`refuses ${what}`, async () => {
          await refused({ messages, tools: ['weather'] }, 'RUN_ERR_INVALID_MESSAGES', start)
        })
      }

      it('says how to fix it', async () => {
        const message = await refused({ messages: cases[2]![1] }, 'RUN_ERR_INVALID_MESSAGES', 'messages[2].content[1]')
        expect(message).toBe('messages[2].content[1] is an empty text block: the Messages API refuses text blocks without text (spaces alone count as none); give it text, or leave the block out.')
      })
    })

    it('runs a history of what the API takes: images, documents, tool results of blocks and errors, a signed thinking block', async () => {
      const thinking = 'The user wants the weather; I asked the tool.'
      const { status, body } = await h.startRun({
        tools: ['weather'],
        messages: [
          { role: 'user', content: [{ type: 'text', text: 'Weather where this photo was taken, and in Rome?' }, image, { type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'Notes.' } }] },
          {
            role: 'assistant',
            content: [
              { type: 'thinking', thinking, signature: h.model.signThinking(thinking) },
              { type: 'tool_use', id: 'toolu_01', name: 'weather', input: { q: 'Paris' } },
              { type: 'tool_use', id: 'toolu_02', name: 'weather', input: { q: 'Rome' } }
            ]
          },
          {
            role: 'user',
            content: [
              { type: 'tool_result', tool_use_id: 'toolu_01', content: [{ type: 'text', text: 'sunny' }, image, cached('21°C')] },
              { type: 'tool_result', tool_use_id: 'toolu_02', content: 'Rome is not a city I know', is_error: true },
              { type: 'text', text: 'So?' }
            ]
          }
        ]
      })
      expect(status).toBe(200)
      expect(body).toMatchObject({ status: 'completed', output_text: 'fine' })
      expect(h.model.refusals).toEqual([])
    })

    describe('thinking settings the API always refuses are a 400 saying what to change', () => {
      it('a budget not below max_tokens, the default one included', async () => {
        const message = await refused({ input: 'Think.', thinking: { type: 'enabled', budget_tokens: 4096 } }, 'RUN_ERR_INVALID_REQUEST', 'thinking.budget_tokens is 4096 but max_tokens is 4096 (the default)')
        expect(message).toMatch(/Raise max_tokens above 4096, or lower the budget\.$/)
        await refused({ input: 'Think.', thinking: { type: 'enabled', budget_tokens: 9000 }, max_tokens: 8000 }, 'RUN_ERR_INVALID_REQUEST', 'thinking.budget_tokens is 9000 but max_tokens is 8000:')
      })

      it('a budget under 1024, or none', async () => {
        await refused({ input: 'Think.', thinking: { type: 'enabled', budget_tokens: 512 }, max_tokens: 8000 }, 'RUN_ERR_INVALID_REQUEST', 'thinking.budget_tokens is 512, but thinking of type "enabled" needs a whole number of tokens, at least 1024')
        await refused({ input: 'Think.', thinking: { type: 'enabled' } }, 'RUN_ERR_INVALID_REQUEST', 'thinking.budget_tokens is missing')
      })

      it('thinking with a tool_choice that forces tool use', async () => {
        await refused({ input: 'Weather?', tools: ['weather'], thinking: { type: 'enabled', budget_tokens: 2048 }, max_tokens: 8000, tool_choice: { type: 'any' } }, 'RUN_ERR_INVALID_REQUEST', 'thinking cannot be used with tool_choice "any", which forces tool use')
        await refused({ input: 'Weather?', tools: ['weather'], thinking: { type: 'adaptive' }, tool_choice: { type: 'tool', name: 'weather' } }, 'RUN_ERR_INVALID_REQUEST', 'thinking cannot be used with tool_choice "tool"')
      })

      it('runs thinking the API takes: a budget below max_tokens, with tool_choice auto', async () => {
        h.model.respond = toolsThenAnswer([{ name: 'weather', input: { q: 'Paris' } }])
        const { body } = await h.startRun({ input: 'Weather?', tools: ['weather'], thinking: { type: 'enabled', budget_tokens: 2048 }, max_tokens: 8000, tool_choice: { type: 'auto' } })
        expect(body).toMatchObject({ status: 'completed', steps: 2 })
        expect(h.model.requests.at(-1)!.body.thinking).toEqual({ type: 'enabled', budget_tokens: 2048 })
        expect(h.model.refusals).toEqual([])
      })
    })

    describe('cache breakpoints: at most four in a request, each of the API\'s shape', () => {
      it('refuses a fifth, counted across the system prompt and the messages, and names them', async () => {
        const message = await refused({
          system: [cached('You are terse.'), cached('Today is Monday.')],
          messages: [{ role: 'user', content: [cached('a'), cached('b'), cached('c')] }]
        }, 'RUN_ERR_INVALID_REQUEST', 'The request sets 5 cache breakpoints (cache_control on system[0], system[1], messages[0].content[0], messages[0].content[1], messages[0].content[2])')
        expect(message).toMatch(/the Messages API takes at most 4 in a request/)
      })

      it('refuses a system block the API refuses', async () => {
        await refused({ input: 'a', system: [cached('You are terse.', { type: 'ephemeral', ttl: 3600 })] }, 'RUN_ERR_INVALID_REQUEST', 'system[0].cache_control has ttl 3600: ')
        await refused({ input: 'a', system: [{ type: 'text', text: '' }] }, 'RUN_ERR_INVALID_REQUEST', 'system[0] is an empty text block: ')
      })

      it('runs four', async () => {
        const { body } = await h.startRun({ system: [cached('You are terse.')], messages: [{ role: 'user', content: [cached('a'), cached('b', { type: 'ephemeral', ttl: '1h' }), cached('c', null), cached('d')] }] })
        expect(body.status).toBe('completed')
        expect(h.model.refusals).toEqual([])
      })
    })

    describe('a tool\'s answer never makes the model refuse the run', () => {
      beforeAll(async () => {
        const paths: Record<string, unknown> = {
          silent_string: { content: '', is_error: true },
          silent_list: { content: [], is_error: true },
          silent_blank: { content: [{ type: 'text', text: ' ' }], is_error: true },
          // Five breakpoints are more than the API takes in a request; the rest are fields it refuses in a tool result.
          cached_blocks: { content: ['one', 'two', 'three', 'four', 'five'].map((t) => cached(t)) },
          odd_blocks: {
            content: [
              cached('bad cache_control', { type: 'forever' }),
              { type: 'text', text: 'cited', citations: [{ type: 'char_location', cited_text: 'x', document_index: 0, start_char_index: 0, end_char_index: 1 }] },
              { type: 'text', text: 'traced', trace_id: 'abc' },
              { ...image, cache_control: { type: 'ephemeral' }, alt: 'a map' }
            ]
          }
        }
        for (const [name, value] of Object.entries(paths)) {
          h.tools.on(`/answer/${name}`, answers(value))
          await h.registerTool(name, `/answer/${name}`)
        }
      })

      it('an is_error answer that says nothing is sent as a text naming the tool', async () => {
        const tools = ['silent_string', 'silent_list', 'silent_blank']
        h.model.respond = toolsThenAnswer(tools.map((name) => ({ name, input: {} })))
        const { body } = await h.startRun({ input: 'Try them.', tools })
        expect(body).toMatchObject({ status: 'completed', steps: 2, tool_calls: { total: 3, errors: 3 } })
        expect(h.model.refusals).toEqual([])
        const results = toolResults(h.model.requests.at(-1)!)
        expect(results.map((r) => [r.is_error, resultText(r)])).toEqual(tools.map((name) => [true, `Tool ${name} failed without a message.`]))
        // The events say what the model was sent.
        const completed = (await h.events(body.id)).filter((e) => e.type === 'tool_call.completed')
        expect(completed.map((e) => e.data.content)).toEqual(tools.map((name) => `Tool ${name} failed without a message.`))
      })

      it('blocks keep only the fields the API takes in a tool result: breakpoints, citations and unknown fields are dropped', async () => {
        h.model.respond = toolsThenAnswer([{ name: 'cached_blocks', input: {} }, { name: 'odd_blocks', input: {} }])
        const { body } = await h.startRun({ input: 'Try them.', tools: ['cached_blocks', 'odd_blocks'] })
        expect(body).toMatchObject({ status: 'completed', steps: 2, tool_calls: { total: 2, errors: 0 } })
        expect(h.model.refusals).toEqual([])
        const [first, second] = toolResults(h.model.requests.at(-1)!)
        expect(first!.content).toEqual(['one', 'two', 'three', 'four', 'five'].map((text) => ({ type: 'text', text })))
        expect(second!.content).toEqual([{ type: 'text', text: 'bad cache_control' }, { type: 'text', text: 'cited' }, { type: 'text', text: 'traced' }, image])
      })
    })
  })
}

describe('the fake Messages API refuses what the real one refuses', () => {
  let fake: FakeMessagesApi
  let client: Anthropic
  beforeAll(async () => {
    fake = await startFakeMessagesApi(() => ({ content: [{ type: 'text', text: 'ok' }] }))
    client = new Anthropic({ apiKey: 'sk-ant-test', baseURL: fake.url, maxRetries: 0 })
  })
  afterAll(async () => fake?.close())

  const tool = { name: 'weather', description: 'Weather', input_schema: { type: 'object' as const } }
  const asked = { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'weather', input: {} }] }
  const answered = (result: Record<string, unknown>) => [{ role: 'user', content: 'Weather?' }, asked, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', ...result }] }]
  const base = { model: 'claude-test', max_tokens: 4096 }
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['an is_error tool_result without content', { tools: [tool], messages: answered({ content: '', is_error: true }) }, /content cannot be empty if `is_error` is true/],
    ['an is_error tool_result with an empty list', { tools: [tool], messages: answered({ content: [], is_error: true }) }, /content cannot be empty if `is_error` is true/],
    ['five cache breakpoints', { system: [cached('s')], messages: [{ role: 'user', content: [cached('a'), cached('b'), cached('c'), cached('d')] }] }, /A maximum of 4 blocks with cache_control may be provided\. Found 5\./],
    ['breakpoints in a tool_result counted too', { tools: [{ ...tool, cache_control: { type: 'ephemeral' } }], messages: answered({ content: [cached('a'), cached('b'), cached('c'), cached('d')] }) }, /Found 5/],
    ['a bad cache_control', { messages: [{ role: 'user', content: [cached('a', { type: 'ephemeral', ttl: '2h' })] }] }, /messages\.0\.content\.0\.cache_control\.ttl: Input should be '5m' or '1h'/],
    ['a cache_control with a field the API does not know', { system: [cached('a', { type: 'ephemeral', scope: 'global' })], messages: [{ role: 'user', content: 'hi' }] }, /system\.0\.cache_control\.scope: Extra inputs are not permitted/],
    ['an unknown field on a tool result\'s text block', { tools: [tool], messages: answered({ content: [{ type: 'text', text: 'x', trace: 1 }] }) }, /content\.0\.text\.trace: Extra inputs are not permitted/],
    ['citations in a tool result\'s text block', { tools: [tool], messages: answered({ content: [{ type: 'text', text: 'x', citations: [{ type: 'char_location' }] }] }) }, /text\.citations: Extra inputs are not permitted/],
    ['an empty text block', { messages: [{ role: 'user', content: [{ type: 'text', text: '' }] }] }, /text content blocks must be non-empty/],
    ['a blank text block from the assistant', { messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: [{ type: 'text', text: '\n\n' }] }, { role: 'user', content: 'b' }] }, /text content blocks must contain non-whitespace text/],
    ['an empty message', { messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: '' }, { role: 'user', content: 'b' }] }, /all messages must have non-empty content except for the optional final assistant message/],
    ['a message with no blocks', { messages: [{ role: 'user', content: [] }] }, /all messages must have non-empty content/],
    ['a blank message', { messages: [{ role: 'user', content: ' ' }] }, /text content blocks must contain non-whitespace text/],
    ['an unknown block type', { messages: [{ role: 'user', content: [{ type: 'video' }] }] }, /Input tag 'video' found using 'type' does not match any of the expected tags/],
    ['a malformed tool_use id', { tools: [tool], messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: [{ type: 'tool_use', id: 'call:1', name: 'weather', input: {} }] }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call:1', content: 'x' }] }] }, /tool_use\.id: String should match pattern/],
    ['a thinking budget not below max_tokens', { thinking: { type: 'enabled', budget_tokens: 4096 }, messages: [{ role: 'user', content: 'a' }] }, /`max_tokens` must be greater than `thinking\.budget_tokens`/],
    ['a thinking budget under 1024', { max_tokens: 8000, thinking: { type: 'enabled', budget_tokens: 1000 }, messages: [{ role: 'user', content: 'a' }] }, /budget_tokens: Input should be greater than or equal to 1024/],
    ['thinking with a forced tool_choice', { max_tokens: 8000, thinking: { type: 'enabled', budget_tokens: 2048 }, tools: [tool], tool_choice: { type: 'any' }, messages: [{ role: 'user', content: 'a' }] }, /Thinking may not be enabled when tool_choice forces tool use/]
  ]
  for (const [what, request, message] of cases) {
    it(`refuses ${what} with a 400 invalid_request_error`, async () => {
      const before = fake.refusals.length
      const err = await client.messages.create({ ...base, ...request } as never).then(() => null, (e: unknown) => e)
      expect(err).toBeInstanceOf(Anthropic.BadRequestError)
      expect((err as InstanceType<typeof Anthropic.BadRequestError>).error).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', message: expect.stringMatching(message) } })
      expect(fake.refusals.slice(before).map((r) => r.message)).toEqual([expect.stringMatching(message)])
    })
  }

  it('takes the same requests made right', async () => {
    const ok = [
      { tools: [tool], messages: answered({ content: 'Not found', is_error: true }) },
      { system: [cached('s')], messages: [{ role: 'user', content: [cached('a'), cached('b'), cached('c', { type: 'ephemeral', ttl: '1h' }), { type: 'text', text: 'd', cache_control: null }] }] },
      { tools: [tool], messages: answered({ content: [{ type: 'text', text: 'x', citations: null }, cached('y')] }) },
      { max_tokens: 8000, thinking: { type: 'enabled', budget_tokens: 2048 }, tools: [tool], tool_choice: { type: 'auto' }, messages: [{ role: 'user', content: 'a' }] }
    ]
    for (const request of ok) {
      const message = await client.messages.create({ ...base, ...request } as never)
      expect(message.content).toEqual([{ type: 'text', text: 'ok', citations: null }])
    }
  })
})
