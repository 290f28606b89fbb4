import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import { describe, expect, it } from 'vitest'
import { cacheBreakpoints, cacheControlProblem, findSystemProblem, findTranscriptProblem } from '../../src/runs/transcript.js'

const user = (content: MessageParam['content']): MessageParam => ({ role: 'user', content })
const assistant = (content: MessageParam['content']): MessageParam => ({ role: 'assistant', content })
const toolUse = (id: string, name = 'get_weather') => ({ type: 'tool_use' as const, id, name, input: {} })
const toolResult = (id: string, content = 'ok') => ({ type: 'tool_result' as const, tool_use_id: id, content })
const text = (t: string) => ({ type: 'text' as const, text: t })

describe('findTranscriptProblem', () => {
  describe('valid histories', () => {
    it('accepts a single user message, as text or blocks', () => {
      expect(findTranscriptProblem([user('What is the weather in Paris?')])).toBeNull()
      expect(findTranscriptProblem([user([text('What is the weather in Paris?')])])).toBeNull()
    })

    it('accepts alternating user and assistant messages', () => {
      expect(findTranscriptProblem([user('Hi'), assistant('Hello! How can I help?'), user('Weather in Paris?')])).toBeNull()
      expect(findTranscriptProblem([user('Hi'), assistant([text('Hello')]), user('a'), assistant('b'), user('c')])).toBeNull()
    })

    it('accepts tool_use blocks answered by tool_results at the start of the next message, in any order', () => {
      expect(findTranscriptProblem([
        user('Weather in Paris?'),
        assistant([text('Checking.'), toolUse('toolu_1')]),
        user([toolResult('toolu_1', 'sunny')])
      ])).toBeNull()
      expect(findTranscriptProblem([
        user('Weather in Paris, Rome and Oslo?'),
        assistant([toolUse('toolu_p'), toolUse('toolu_r'), toolUse('toolu_o')]),
        user([toolResult('toolu_o'), toolResult('toolu_p'), toolResult('toolu_r'), text('Also, what time is it?')]),
        assistant([toolUse('toolu_t', 'get_time')]),
        user([toolResult('toolu_t')])
      ])).toBeNull()
    })
  })

  describe('blocks the Messages API takes', () => {
    it('accepts images, documents, search results and tool results of a string or blocks', () => {
      const image = { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }
      const document = { type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'A contract.' }, title: 'Contract' }
      expect(findTranscriptProblem([user([text('What is in these?'), image, document] as never)])).toBeNull()
      expect(findTranscriptProblem([
        user('Weather?'),
        assistant([toolUse('toolu_1'), toolUse('toolu_2'), toolUse('toolu_3')]),
        user([
          toolResult('toolu_1', ''),
          { type: 'tool_result', tool_use_id: 'toolu_2', content: [text('a map:'), image, { type: 'text', text: 'cached', cache_control: { type: 'ephemeral', ttl: '1h' } }] },
          { type: 'tool_result', tool_use_id: 'toolu_3', content: 'city not found', is_error: true }
        ] as never)
      ])).toBeNull()
    })

    it('accepts what the model wrote, passed back: thinking with its signature, redacted thinking, server tools, citations', () => {
      expect(findTranscriptProblem([
        user('Search the web.'),
        assistant([
          { type: 'thinking', thinking: 'I should search.', signature: 'EqQBCgIYAhIM' },
          { type: 'redacted_thinking', data: 'EmwKAhgBEgy3va3pzix' },
          { type: 'server_tool_use', id: 'srvtoolu_01WYG3', name: 'web_search', input: { query: 'weather' } },
          { type: 'web_search_tool_result', tool_use_id: 'srvtoolu_01WYG3', content: [] },
          { type: 'text', text: 'It is sunny.', citations: null }
        ] as never),
        user('Thanks.')
      ])).toBeNull()
    })

    it('counts cache breakpoints in the system prompt, the messages and tool results\' own blocks', () => {
      const cached = (t: string) => ({ type: 'text' as const, text: t, cache_control: { type: 'ephemeral' as const } })
      expect(cacheBreakpoints([
        user([cached('a'), text('b')]),
        assistant([toolUse('toolu_1')]),
        user([{ type: 'tool_result', tool_use_id: 'toolu_1', content: [text('x'), cached('y')], cache_control: { type: 'ephemeral' } }, { ...text('c'), cache_control: null }] as never)
      ], [cached('system'), text('more')])).toEqual(['system[0]', 'messages[0].content[0]', 'messages[2].content[0]', 'messages[2].content[0].content[1]'])
      expect(cacheBreakpoints([user('a')], 'a string system prompt')).toEqual([])
    })
  })

  describe('blocks the Messages API refuses, named by message and block', () => {
    const refused: Array<[string, MessageParam[], string]> = [
      ['empty content', [user('')], 'messages[0] has empty content: '],
      ['blank content', [user('Hi'), assistant(' \n '), user('?')], 'messages[1] has empty content: '],
      ['no blocks', [user([])], 'messages[0] has no content blocks: '],
      ['an empty text block', [user('Hi'), assistant('Hello'), user([text('a'), text('')])], 'messages[2].content[1] is an empty text block: the Messages API refuses text blocks without text (spaces alone count as none); give it text, or leave the block out.'],
      ['a blank text block from the assistant', [user('Hi'), assistant([text('  '), toolUse('toolu_1')]), user([toolResult('toolu_1')])], 'messages[1].content[0] is an empty text block: '],
      ['a text block without text', [user([{ type: 'text' }] as never)], 'messages[0].content[0] is a text block without text: '],
      ['an unknown field on a text block', [user([{ type: 'text', text: 'a', id: 'x' }] as never)], 'messages[0].content[0] is a text block with a field "id", which the Messages API does not take: leave it out.'],
      ['an unknown block type', [user([{ type: 'video', url: 'x' }] as never)], 'messages[0].content[0] has type "video", which the Messages API does not take in a message: use one of text, image, '],
      ['a malformed tool_use id', [user('a'), assistant([toolUse('call 1')]), user([toolResult('call 1')])], 'messages[1].content[0] is a tool_use whose id "call 1" is malformed: the Messages API takes ids of letters, digits, _ and - (such as "toolu_01A"); use the id the model gave.'],
      ['a tool_use without an id', [user('a'), assistant([{ type: 'tool_use', name: 'x', input: {} }] as never), user('b')], 'messages[1].content[0] is a tool_use whose id is missing: '],
      ['a malformed tool name', [user('a'), assistant([toolUse('toolu_1', 'get weather')]), user([toolResult('toolu_1')])], 'messages[1].content[0] is a tool_use whose name "get weather" is malformed: '],
      ['a tool input that is not an object', [user('a'), assistant([{ ...toolUse('toolu_1'), input: ['Paris'] }] as never), user([toolResult('toolu_1')])], 'messages[1].content[0] is a tool_use whose input is not a JSON object: '],
      ['a null tool input', [user('a'), assistant([{ ...toolUse('toolu_1'), input: null }] as never), user([toolResult('toolu_1')])], 'messages[1].content[0] is a tool_use whose input is not a JSON object: '],
      ['two tool_use blocks with one id', [user('a'), assistant([toolUse('toolu_1'), toolUse('toolu_1')]), user([toolResult('toolu_1')])], 'messages[1] has two tool_use blocks with the same id: '],
      ['a tool_use from the user', [user([toolUse('toolu_1')] as never)], 'messages[0].content[0] is a tool_use block in a user message: '],
      ['a tool_result from the assistant', [user('a'), assistant([toolResult('toolu_1')] as never), user('b')], 'messages[1].content[0] is a tool_result block in an assistant message: '],
      ['thinking without a signature', [user('a'), assistant([{ type: 'thinking', thinking: 'hmm' }, text('b')] as never), user('c')], 'messages[1].content[0] is a thinking block without a signature: the Messages API refuses it; '],
      ['thinking with an empty signature', [user('a'), assistant([{ type: 'thinking', thinking: 'hmm', signature: '' }] as never), user('c')], 'messages[1].content[0] is a thinking block without a signature: '],
      ['redacted thinking without data', [user('a'), assistant([{ type: 'redacted_thinking' }] as never), user('c')], 'messages[1].content[0] is a redacted_thinking block without its data: '],
      ['a malformed server_tool_use id', [user('a'), assistant([{ type: 'server_tool_use', id: 'toolu_1', name: 'web_search', input: {} }] as never), user('c')], 'messages[1].content[0] is a server_tool_use whose id "toolu_1" is malformed: '],
      ['an is_error result without content', [user('a'), assistant([toolUse('toolu_1')]), user([{ type: 'tool_result', tool_use_id: 'toolu_1', is_error: true }] as never)], 'messages[2].content[0] is an is_error tool_result without content: the Messages API refuses it; say in its content what went wrong.'],
      ['an is_error result with empty content', [user('a'), assistant([toolUse('toolu_1')]), user([{ type: 'tool_result', tool_use_id: 'toolu_1', content: [], is_error: true }] as never)], 'messages[2].content[0] is an is_error tool_result without content: '],
      ['a tool_result holding a tool_use', [user('a'), assistant([toolUse('toolu_1')]), user([{ type: 'tool_result', tool_use_id: 'toolu_1', content: [toolUse('toolu_2')] }] as never)], 'messages[2].content[0].content[0] has type "tool_use", which the Messages API does not take in a tool_result: '],
      ['an empty text block in a tool_result', [user('a'), assistant([toolUse('toolu_1')]), user([{ type: 'tool_result', tool_use_id: 'toolu_1', content: [text('')] }] as never)], 'messages[2].content[0].content[0] is an empty text block: '],
      ['citations in a tool_result', [user('a'), assistant([toolUse('toolu_1')]), user([{ type: 'tool_result', tool_use_id: 'toolu_1', content: [{ ...text('x'), citations: [{ type: 'char_location' }] }] }] as never)], 'messages[2].content[0].content[0] is a text block with a field "citations", which the Messages API does not take in a tool_result: '],
      ['a cache_control of another type', [user([{ ...text('a'), cache_control: { type: 'persistent' } }] as never)], 'messages[0].content[0].cache_control has type "persistent": the Messages API takes only "ephemeral"; '],
      ['a cache_control with an unknown ttl', [user([{ ...text('a'), cache_control: { type: 'ephemeral', ttl: '1d' } }] as never)], 'messages[0].content[0].cache_control has ttl "1d": '],
      ['a cache_control inside a tool_result with an unknown field', [user('a'), assistant([toolUse('toolu_1')]), user([{ type: 'tool_result', tool_use_id: 'toolu_1', content: [{ ...text('x'), cache_control: { type: 'ephemeral', scope: 'org' } }] }] as never)], 'messages[2].content[0].content[0].cache_control has "scope", which the Messages API does not take: ']
    ]
    for (const [what, messages, problem] of refused) {
      it(`refuses ${what}`, () => {
        // The start of the message: where, and what is wrong (the rest says how to fix it).
        expect(findTranscriptProblem(messages)?.slice(0, problem.length)).toBe(problem)
      })
    }
  })

  describe('system prompts and cache_control', () => {
    it('refuses blank, bare or odd system blocks, and accepts a string', () => {
      expect(findSystemProblem('You are terse.')).toBeNull()
      expect(findSystemProblem([{ type: 'text', text: 'You are terse.', cache_control: { type: 'ephemeral', ttl: '5m' } }])).toBeNull()
      expect(findSystemProblem([{ type: 'text', text: ' ' }])).toMatch(/^system\[0\] is an empty text block: /)
      expect(findSystemProblem([{ type: 'text', text: 'a' }, { type: 'text', text: 'b', cache_control: { type: 'ephemeral', ttl: 300 } } as never])).toMatch(/^system\[1\]\.cache_control has ttl 300: /)
      expect(findSystemProblem([{ type: 'text', text: 'a', extra: 1 } as never])).toMatch(/^system\[0\] is a text block with a field "extra"/)
    })

    it('takes an absent or null cache_control as no breakpoint, and anything but ephemeral as a problem', () => {
      expect(cacheControlProblem(undefined, 'x')).toBeNull()
      expect(cacheControlProblem(null, 'x')).toBeNull()
      expect(cacheControlProblem({ type: 'ephemeral' }, 'x')).toBeNull()
      expect(cacheControlProblem({ type: 'ephemeral', ttl: '1h' }, 'x')).toBeNull()
      expect(cacheControlProblem('ephemeral', 'x')).toMatch(/^x is not an object: write `\{ "type": "ephemeral" \}`/)
      expect(cacheControlProblem([], 'x')).toMatch(/^x is not an object/)
      expect(cacheControlProblem({}, 'x')).toMatch(/^x has type missing: /)
    })
  })

  describe('problems', () => {
    it('refuses an empty history or one that does not start with the user', () => {
      expect(findTranscriptProblem([])).toBe('messages[0] must have role "user": a history starts with the user.')
      expect(findTranscriptProblem([assistant('Hello'), user('Hi')])).toBe('messages[0] must have role "user": a history starts with the user.')
    })

    it('refuses a history that does not end with the user', () => {
      expect(findTranscriptProblem([user('Hi'), assistant('Hello')]))
        .toBe('messages[1] must have role "user": the model answers the last user message.')
      expect(findTranscriptProblem([user('a'), assistant('b'), user('c'), assistant('d')]))
        .toBe('messages[3] must have role "user": the model answers the last user message.')
    })

    it('refuses two messages of the same role in a row', () => {
      expect(findTranscriptProblem([user('a'), user('b')]))
        .toBe('messages[1] has the same role as the message before it: roles must alternate between "user" and "assistant".')
      expect(findTranscriptProblem([user('a'), assistant('b'), assistant('c'), user('d')]))
        .toBe('messages[2] has the same role as the message before it: roles must alternate between "user" and "assistant".')
    })

    it('refuses a tool_use without a result', () => {
      expect(findTranscriptProblem([
        user('Weather?'),
        assistant([toolUse('toolu_1'), toolUse('toolu_2')]),
        user([toolResult('toolu_1')])
      ])).toBe('messages[2] must answer tool_use toolu_2 of messages[1] with exactly one tool_result (found 0).')
      expect(findTranscriptProblem([
        user('Weather?'),
        assistant([toolUse('toolu_1')]),
        user('It is sunny, I checked myself.')
      ])).toBe('messages[2] must answer tool_use toolu_1 of messages[1] with exactly one tool_result (found 0).')
    })

    it('refuses two results for one tool_use', () => {
      expect(findTranscriptProblem([
        user('Weather?'),
        assistant([toolUse('toolu_1')]),
        user([toolResult('toolu_1', 'sunny'), toolResult('toolu_1', 'rainy')])
      ])).toBe('messages[2] must answer tool_use toolu_1 of messages[1] with exactly one tool_result (found 2).')
    })

    it('refuses a tool_result after other content', () => {
      expect(findTranscriptProblem([
        user('Weather?'),
        assistant([toolUse('toolu_1')]),
        user([text('Here you go:'), toolResult('toolu_1')])
      ])).toBe('messages[2]: tool_result blocks must come before any other content.')
      expect(findTranscriptProblem([
        user('Weather?'),
        assistant([toolUse('toolu_1'), toolUse('toolu_2')]),
        user([toolResult('toolu_1'), text('and'), toolResult('toolu_2')])
      ])).toBe('messages[2]: tool_result blocks must come before any other content.')
    })

    it('refuses a tool_result for an id the assistant message before did not ask for', () => {
      expect(findTranscriptProblem([
        user('Weather?'),
        assistant([toolUse('toolu_1')]),
        user([toolResult('toolu_1'), toolResult('toolu_9')])
      ])).toBe('messages[2] has a tool_result for toolu_9, which messages[1] did not ask for.')
      // An assistant message without any tool_use asked for nothing.
      expect(findTranscriptProblem([
        user('Weather?'),
        assistant('Let me check.'),
        user([toolResult('toolu_1')])
      ])).toBe('messages[2] has a tool_result for toolu_1, which no tool_use just before it asked for.')
      // Asked for two turns earlier is not enough.
      expect(findTranscriptProblem([
        user('Weather?'),
        assistant([toolUse('toolu_1')]),
        user([toolResult('toolu_1')]),
        assistant('Sunny.'),
        user([toolResult('toolu_1')])
      ])).toBe('messages[4] has a tool_result for toolu_1, which no tool_use just before it asked for.')
    })

    it('refuses a tool_result in a user message with no assistant message before it', () => {
      expect(findTranscriptProblem([user([toolResult('toolu_1')])]))
        .toBe('messages[0] has a tool_result for toolu_1, which no tool_use just before it asked for.')
    })

    it('names the first problem in the history', () => {
      expect(findTranscriptProblem([
        user('a'),
        assistant([toolUse('toolu_1')]),
        user([toolResult('toolu_1')]),
        assistant([toolUse('toolu_2')]),
        user([toolResult('toolu_3')])
      ])).toBe('messages[4] must answer tool_use toolu_2 of messages[3] with exactly one tool_result (found 0).')
    })
  })
})
