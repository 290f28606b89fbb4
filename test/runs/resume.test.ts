import { describe, expect, it } from 'vitest'
import { resumedCalls, resumedStep, type ResumedStep } from '../../src/runs/resume.js'
import type { EventRecord } from '../../src/store/index.js'

let seq = 0
function event (type: string, data: Record<string, unknown>): EventRecord {
  return { run_id: 'run_1', seq: ++seq, type, at: 0, data } as EventRecord
}

const toolUse = (id: string, name: string) => ({ type: 'tool_use', id, name, input: {} })
const answer = (blocks: unknown[], stopReason = 'tool_use') => ({ step: 2, content: blocks, stop_reason: stopReason, usage: { input_tokens: 1, output_tokens: 1 }, incomplete: [] })

describe('resumedStep: what the stored events say of the step in progress', () => {
  it('without step.completed, the model is asked again: nothing of the answer is kept', () => {
    const resumed = resumedStep(2, [event('step.started', { step: 2 })])
    expect(resumed).toMatchObject({ step: 2, incomplete: null })
    expect(resumed.message).toBeUndefined()
  })

  it('keeps stored results, and lists as in flight the calls sent without one; a cancelled result is no result', () => {
    const resumed = resumedStep(2, [
      event('tool_call.completed', { step: 1, tool_use_id: 'old', outcome: 'ok', content: 'of the step before', is_error: false }),
      event('step.completed', answer([toolUse('a', 'read'), toolUse('b', 'write'), toolUse('c', 'read')])),
      event('tool_call.started', { step: 2, tool_use_id: 'a', effect: 'read_only' }),
      event('tool_call.completed', { step: 2, tool_use_id: 'a', outcome: 'ok', content: 'sunny', is_error: false }),
      event('tool_call.started', { step: 2, tool_use_id: 'b', effect: 'side_effecting' }),
      event('tool_call.started', { step: 2, tool_use_id: 'c', effect: 'read_only' }),
      event('tool_call.completed', { step: 2, tool_use_id: 'c', outcome: 'cancelled', content: 'cut short', is_error: true })
    ])
    expect(resumed.message?.content).toHaveLength(3)
    expect([...resumed.results.keys()]).toEqual(['a'])
    expect(resumed.results.get('a')).toEqual({ type: 'tool_result', tool_use_id: 'a', content: 'sunny' })
    expect([...resumed.inFlight.entries()]).toEqual([['b', { effect: 'side_effecting' }], ['c', { effect: 'read_only' }]])
    expect(resumed.incomplete).toEqual(new Set())
  })
})

describe('resumedCalls: what becomes of each tool_use of a step taken over', () => {
  const tools = {
    isClientTool: (name: string) => name === 'confirm',
    effectOf: (name: string) => ({ read: 'read_only', write: 'side_effecting', put: 'idempotent' } as Record<string, string>)[name]
  }
  const step = (blocks: unknown[], over: Partial<ResumedStep> = {}, stopReason = 'tool_use'): ResumedStep => ({
    step: 2,
    message: answer(blocks, stopReason) as unknown as ResumedStep['message'],
    results: new Map(),
    inFlight: new Map(),
    incomplete: new Set(),
    ...over
  })

  it('uses stored results, sends again what may be sent twice, and never repeats a side effect', () => {
    const resumed = step([toolUse('a', 'read'), toolUse('b', 'write'), toolUse('c', 'put'), toolUse('d', 'write'), toolUse('e', 'confirm')], {
      results: new Map([['a', { type: 'tool_result', tool_use_id: 'a', content: 'kept' }]]),
      inFlight: new Map([['b', { effect: 'side_effecting' }], ['c', { effect: 'idempotent' }]])
    })
    expect(resumedCalls(resumed, tools).map((c) => [c.toolUse.id, c.action])).toEqual([
      ['a', 'stored'], ['b', 'unknown'], ['c', 'send'], ['d', 'send'], ['e', 'client']
    ])
  })

  it('goes by the effect a call was sent with, not the tool\'s effect now', () => {
    const resumed = step([toolUse('a', 'write'), toolUse('b', 'read')], {
      inFlight: new Map([['a', { effect: 'read_only' }], ['b', { effect: 'side_effecting' }]])
    })
    expect(resumedCalls(resumed, tools).map((c) => c.action)).toEqual(['send', 'unknown'])
  })

  it('takes an in-flight call of a tool gone since, sent with no effect recorded, as a side effect', () => {
    const resumed = step([toolUse('a', 'deleted')], { inFlight: new Map([['a', { effect: undefined }]]) })
    expect(resumedCalls(resumed, tools).map((c) => c.action)).toEqual(['unknown'])
  })

  it('never sends a block whose input was never complete; for old events, the last block of a max_tokens answer', () => {
    const said = step([toolUse('a', 'read'), toolUse('b', 'read')], { incomplete: new Set(['a']) })
    expect(resumedCalls(said, tools).map((c) => c.action)).toEqual(['never_sent', 'send'])
    const old = step([toolUse('a', 'read'), toolUse('b', 'read')], { incomplete: null }, 'max_tokens')
    expect(resumedCalls(old, tools).map((c) => c.action)).toEqual(['send', 'never_sent'])
  })

  it('keeps each block\'s place in the message, the order its calls are dispatched in', () => {
    const resumed = step([toolUse('a', 'read'), toolUse('b', 'put')])
    expect(resumedCalls(resumed, tools).map((c) => c.action === 'send' ? c.index : null)).toEqual([0, 1])
  })
})
