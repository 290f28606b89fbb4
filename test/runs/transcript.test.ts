import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import { describe, expect, it } from 'vitest'
import { findTranscriptProblem } from '../../src/runs/transcript.js'

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
