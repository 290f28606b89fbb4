import type { RawMessageStreamEvent } from '@anthropic-ai/sdk/resources/messages'
import { describe, expect, it } from 'vitest'
import { MessageAccumulator, type CompletedToolUse } from '../../src/model/message-accumulator.js'

/** Raw events as the Messages API streams them; cast once here so tests can give plain objects. */
function feed (accumulator: MessageAccumulator, events: unknown[]): void {
  for (const event of events) accumulator.push(event as RawMessageStreamEvent)
}

function messageStart (usage: Record<string, unknown> = {}): unknown {
  return {
    type: 'message_start',
    message: {
      id: 'msg_01',
      type: 'message',
      role: 'assistant',
      model: 'claude-test',
      content: [],
      stop_reason: null,
      stop_sequence: null,
      stop_details: null,
      container: null,
      usage: { input_tokens: 25, output_tokens: 1, cache_creation_input_tokens: null, cache_read_input_tokens: 10, ...usage }
    }
  }
}

const blockStart = (index: number, block: Record<string, unknown>): unknown => ({ type: 'content_block_start', index, content_block: block })
const delta = (index: number, d: Record<string, unknown>): unknown => ({ type: 'content_block_delta', index, delta: d })
const blockStop = (index: number): unknown => ({ type: 'content_block_stop', index })
const text = (index: number, t: string): unknown => delta(index, { type: 'text_delta', text: t })
const json = (index: number, partial: string): unknown => delta(index, { type: 'input_json_delta', partial_json: partial })
const messageDelta = (stopReason: string, usage: Record<string, unknown> = { output_tokens: 50 }, stopSequence: string | null = null): unknown => ({
  type: 'message_delta',
  delta: { stop_reason: stopReason, stop_sequence: stopSequence },
  usage
})
const messageStop = { type: 'message_stop' }

function toolUseStart (index: number, id: string, name: string): unknown {
  return blockStart(index, { type: 'tool_use', id, name, input: {} })
}

describe('MessageAccumulator', () => {
  it('assembles text from its deltas and calls onText for each delta', () => {
    const texts: string[] = []
    const accumulator = new MessageAccumulator({ onText: (t) => texts.push(t) })
    feed(accumulator, [
      messageStart(),
      blockStart(0, { type: 'text', text: '', citations: null }),
      text(0, 'Hello'),
      text(0, ', '),
      text(0, 'world'),
      blockStop(0),
      messageDelta('end_turn'),
      messageStop
    ])
    expect(texts).toEqual(['Hello', ', ', 'world'])
    const message = accumulator.message!
    expect(message.content).toEqual([{ type: 'text', text: 'Hello, world', citations: null }])
    expect(message).toMatchObject({ id: 'msg_01', role: 'assistant', model: 'claude-test', stop_reason: 'end_turn' })
  })

  it('assembles a tool input from its JSON pieces and hands over the tool_use as soon as its block stops', () => {
    const seen: string[] = []
    const toolUses: CompletedToolUse[] = []
    const accumulator = new MessageAccumulator({
      onText: (t) => seen.push(`text ${t}`),
      onToolUse: (toolUse) => {
        seen.push(`tool_use ${toolUse.block.id}`)
        toolUses.push(toolUse)
      }
    })
    feed(accumulator, [
      messageStart(),
      blockStart(0, { type: 'text', text: '' }),
      text(0, 'Checking.'),
      blockStop(0),
      toolUseStart(1, 'toolu_1', 'get_weather'),
      json(1, ''),
      json(1, '{"city": "Par'),
      json(1, 'is", "days": [1, '),
      json(1, '2]}')
    ])
    // Not complete until its block stops: the input is not parsed piece by piece.
    expect(toolUses).toEqual([])
    expect(accumulator.message!.content[1]).toMatchObject({ type: 'tool_use', input: {} })

    feed(accumulator, [blockStop(1)])
    expect(toolUses).toEqual([{
      block: { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris', days: [1, 2] } },
      index: 1,
      inputComplete: true
    }])
    expect(accumulator.complete).toBe(false)
    expect(accumulator.message!.stop_reason).toBeNull()

    feed(accumulator, [
      toolUseStart(2, 'toolu_2', 'get_time'),
      json(2, '{"tz":"UTC"}'),
      blockStop(2),
      messageDelta('tool_use'),
      messageStop
    ])
    expect(seen).toEqual(['text Checking.', 'tool_use toolu_1', 'tool_use toolu_2'])
    expect(toolUses[1]).toMatchObject({ index: 2, inputComplete: true, block: { id: 'toolu_2', input: { tz: 'UTC' } } })
    expect(accumulator.message!.content).toEqual([
      { type: 'text', text: 'Checking.' },
      { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris', days: [1, 2] } },
      { type: 'tool_use', id: 'toolu_2', name: 'get_time', input: { tz: 'UTC' } }
    ])
    expect(accumulator.message!.stop_reason).toBe('tool_use')
  })

  it('gives {} for a tool input whose JSON is empty', () => {
    const toolUses: CompletedToolUse[] = []
    const accumulator = new MessageAccumulator({ onToolUse: (t) => toolUses.push(t) })
    feed(accumulator, [
      messageStart(),
      toolUseStart(0, 'toolu_a', 'now'),
      blockStop(0),
      toolUseStart(1, 'toolu_b', 'now'),
      json(1, ''),
      json(1, '  '),
      blockStop(1)
    ])
    expect(toolUses.map((t) => [t.inputComplete, t.block.input])).toEqual([[true, {}], [true, {}]])
    expect(accumulator.message!.content.map((b) => (b as { input: unknown }).input)).toEqual([{}, {}])
  })

  it('marks a cut or malformed tool input as incomplete', () => {
    const toolUses: CompletedToolUse[] = []
    const accumulator = new MessageAccumulator({ onToolUse: (t) => toolUses.push(t) })
    feed(accumulator, [
      messageStart(),
      toolUseStart(0, 'toolu_cut', 'search'),
      json(0, '{"query": "long que'),
      blockStop(0),
      toolUseStart(1, 'toolu_bad', 'search'),
      json(1, '{"query": nope}'),
      blockStop(1),
      messageDelta('max_tokens'),
      messageStop
    ])
    expect(toolUses).toEqual([
      { block: { type: 'tool_use', id: 'toolu_cut', name: 'search', input: null }, index: 0, inputComplete: false },
      { block: { type: 'tool_use', id: 'toolu_bad', name: 'search', input: null }, index: 1, inputComplete: false }
    ])
    // The message itself stays valid for the API: an object input.
    expect(accumulator.message!.content).toEqual([
      { type: 'tool_use', id: 'toolu_cut', name: 'search', input: {} },
      { type: 'tool_use', id: 'toolu_bad', name: 'search', input: {} }
    ])
    expect(accumulator.message!.stop_reason).toBe('max_tokens')
  })

  it('assembles thinking and its signature', () => {
    const accumulator = new MessageAccumulator()
    feed(accumulator, [
      messageStart(),
      blockStart(0, { type: 'thinking', thinking: '', signature: '' }),
      delta(0, { type: 'thinking_delta', thinking: 'Let me think' }),
      delta(0, { type: 'thinking_delta', thinking: ' about this.' }),
      delta(0, { type: 'signature_delta', signature: 'EqQBCgIYAhIM' }),
      blockStop(0),
      blockStart(1, { type: 'text', text: '' }),
      text(1, 'Done.'),
      blockStop(1),
      messageDelta('end_turn'),
      messageStop
    ])
    expect(accumulator.message!.content).toEqual([
      { type: 'thinking', thinking: 'Let me think about this.', signature: 'EqQBCgIYAhIM' },
      { type: 'text', text: 'Done.' }
    ])
  })

  it('keeps redacted thinking whole', () => {
    const accumulator = new MessageAccumulator()
    feed(accumulator, [
      messageStart(),
      blockStart(0, { type: 'redacted_thinking', data: 'EmwKAhgBEgy3va3pzix/LafPsn4a' }),
      blockStop(0),
      messageDelta('end_turn'),
      messageStop
    ])
    expect(accumulator.message!.content).toEqual([{ type: 'redacted_thinking', data: 'EmwKAhgBEgy3va3pzix/LafPsn4a' }])
  })

  it('appends citations to the text block', () => {
    const first = { type: 'char_location', cited_text: 'The sky is blue.', document_index: 0, document_title: 'Sky', start_char_index: 0, end_char_index: 16, file_id: null }
    const second = { type: 'char_location', cited_text: 'Grass is green.', document_index: 0, document_title: 'Sky', start_char_index: 17, end_char_index: 32, file_id: null }
    const accumulator = new MessageAccumulator()
    feed(accumulator, [
      messageStart(),
      blockStart(0, { type: 'text', text: '', citations: null }),
      delta(0, { type: 'citations_delta', citation: first }),
      text(0, 'The sky is blue'),
      delta(0, { type: 'citations_delta', citation: second }),
      text(0, ' and grass green.'),
      blockStop(0)
    ])
    expect(accumulator.message!.content).toEqual([{ type: 'text', text: 'The sky is blue and grass green.', citations: [first, second] }])
  })

  it('keeps a block of an unknown type as content_block_start gave it', () => {
    const block = { type: 'some_future_block', payload: { a: [1, 2] }, label: 'x' }
    const accumulator = new MessageAccumulator()
    feed(accumulator, [
      messageStart(),
      blockStart(0, block),
      blockStop(0),
      blockStart(1, { type: 'text', text: '' }),
      text(1, 'after'),
      blockStop(1)
    ])
    expect(accumulator.message!.content).toEqual([block, { type: 'text', text: 'after' }])
    // A copy: later deltas never write into the caller's event.
    expect(accumulator.message!.content[0]).not.toBe(block)
  })

  it('ignores a delta of an unknown type', () => {
    const texts: string[] = []
    const accumulator = new MessageAccumulator({ onText: (t) => texts.push(t) })
    expect(() => feed(accumulator, [
      messageStart(),
      blockStart(0, { type: 'text', text: '' }),
      text(0, 'one'),
      delta(0, { type: 'hologram_delta', hologram: 'ignored', text: 'not text' }),
      text(0, ' two'),
      blockStop(0),
      delta(7, { type: 'text_delta', text: 'no such block' })
    ])).not.toThrow()
    expect(texts).toEqual(['one', ' two'])
    expect(accumulator.message!.content).toEqual([{ type: 'text', text: 'one two' }])
  })

  it('takes stop_reason and stop_sequence from message_delta and merges its usage', () => {
    const accumulator = new MessageAccumulator()
    feed(accumulator, [
      messageStart({ server_tool_use: null }),
      blockStart(0, { type: 'text', text: '' }),
      text(0, 'one, two, STOP'),
      blockStop(0),
      messageDelta('stop_sequence', {
        output_tokens: 73,
        input_tokens: null,
        cache_creation_input_tokens: 5,
        cache_read_input_tokens: null,
        server_tool_use: { web_search_requests: 1 }
      }, 'STOP')
    ])
    const message = accumulator.message!
    expect(message.stop_reason).toBe('stop_sequence')
    expect(message.stop_sequence).toBe('STOP')
    expect(message.usage).toEqual({
      input_tokens: 25, // null in the delta: kept
      output_tokens: 73, // updated
      cache_creation_input_tokens: 5, // null before, given now
      cache_read_input_tokens: 10, // null in the delta: kept
      server_tool_use: { web_search_requests: 1 }
    })
  })

  it('copies stop_details and container from message_delta, as a non-streamed answer has them', () => {
    const accumulator = new MessageAccumulator()
    const container = { id: 'container_1', expires_at: '2030-01-01T00:00:00Z', skills: null }
    const stopDetails = { type: 'refusal', category: 'cyber', explanation: 'refused' }
    feed(accumulator, [
      messageStart(),
      { type: 'message_delta', delta: { stop_reason: 'refusal', stop_sequence: null, stop_details: stopDetails, container }, usage: { output_tokens: 3 } },
      messageStop
    ])
    const message = accumulator.message! as unknown as Record<string, unknown>
    expect(message.stop_reason).toBe('refusal')
    expect(message.stop_details).toEqual(stopDetails)
    expect(message.container).toEqual(container)
  })

  it('is complete only once message_stop arrives', () => {
    const accumulator = new MessageAccumulator()
    expect(accumulator.complete).toBe(false)
    expect(accumulator.message).toBeNull()
    feed(accumulator, [messageStart()])
    expect(accumulator.complete).toBe(false)
    expect(accumulator.message).toMatchObject({ id: 'msg_01', content: [] })
    feed(accumulator, [blockStart(0, { type: 'text', text: '' }), text(0, 'hi'), blockStop(0)])
    expect(accumulator.complete).toBe(false)
    feed(accumulator, [messageDelta('end_turn')])
    expect(accumulator.complete).toBe(false)
    feed(accumulator, [messageStop])
    expect(accumulator.complete).toBe(true)
    expect(accumulator.message!.content).toEqual([{ type: 'text', text: 'hi' }])
  })

  it('throws on a content or delta event before message_start', () => {
    const events = [
      blockStart(0, { type: 'text', text: '' }),
      text(0, 'x'),
      blockStop(0),
      messageDelta('end_turn')
    ]
    for (const event of events) {
      const accumulator = new MessageAccumulator()
      expect(() => feed(accumulator, [event]), (event as { type: string }).type).toThrow('stream event before message_start')
      expect(accumulator.message).toBeNull()
    }
  })
})

describe('content counted against max_tokens', () => {
  it('counts the characters of text, thinking and tool input deltas, and one for every delta and block, kept or skipped', () => {
    const accumulator = new MessageAccumulator()
    feed(accumulator, [
      messageStart(),
      blockStart(0, { type: 'thinking', thinking: '', signature: '' }),
      delta(0, { type: 'thinking_delta', thinking: 'hmm, four' }),
      delta(0, { type: 'signature_delta', signature: 'sig' }),
      blockStop(0),
      blockStart(1, { type: 'text', text: '' }),
      text(1, 'hello'),
      delta(1, { type: 'citations_delta', citation: { type: 'char_location', cited_text: 'quoted' } }),
      blockStop(1),
      toolUseStart(2, 'toolu_1', 'lookup'),
      json(2, '{"q":'),
      json(2, '"x"}'),
      // Sent but not kept: text into a tool_use block, a delta at no block, a type of a later API.
      text(2, 'stray'),
      text(7, 'nowhere'),
      delta(1, { type: 'mystery_delta', payload: 'x'.repeat(100) }),
      blockStop(2),
      // A block that starts with its text, and a server tool's result, given whole.
      blockStart(3, { type: 'text', text: 'given at once' }),
      blockStart(4, { type: 'web_search_tool_result', tool_use_id: 'srvtoolu_1', content: [{ type: 'web_search_result', title: 'x'.repeat(500) }] })
    ])
    // 9 + 5 + 6 + 5 + 4 + 5 + 7 + 13 characters, 9 deltas and 5 blocks.
    expect(accumulator.contentChars).toBe(9 + 5 + 6 + 5 + 4 + 5 + 7 + 13 + 9 + 5)
    expect(accumulator.message!.content.slice(0, 4)).toMatchObject([{ thinking: 'hmm, four' }, { text: 'hello' }, { input: { q: 'x' } }, { text: 'given at once' }])
  })
})
