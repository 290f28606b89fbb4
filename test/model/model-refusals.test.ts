import { describe, expect, it } from 'vitest'
import { modelRefusal } from '../../src/model/model-refusals.js'

describe('what known models refuse', () => {
  it('matches a model by its id or a dated snapshot of it, never a longer id', () => {
    expect(modelRefusal('claude-opus-4-7', { top_p: 0.9 })?.option).toBe('top_p')
    expect(modelRefusal('claude-opus-4-7-20260416', { top_k: 5 })?.option).toBe('top_k')
    // claude-opus-4 is in the table; claude-opus-4-5 is a model of its own, which takes effort.
    expect(modelRefusal('claude-opus-4', { output_config: { effort: 'low' } })?.option).toBe('output_config.effort')
    expect(modelRefusal('claude-opus-4-5-20251101', { output_config: { effort: 'low' } })).toBeNull()
    expect(modelRefusal('claude-opus-4-7-beta', { temperature: 1 })).toBeNull()
  })

  it('forced tool use only where it is refused, and thinking in the form the model lacks', () => {
    expect(modelRefusal('claude-opus-5-5', { tool_choice: { type: 'tool' } })?.option).toBe('tool_choice')
    expect(modelRefusal('claude-opus-5-5', { tool_choice: { type: 'auto' } })).toBeNull()
    expect(modelRefusal('claude-sonnet-4-6', { tool_choice: { type: 'any' } })).toBeNull()
    expect(modelRefusal('claude-sonnet-5', { thinking: { type: 'enabled' } })?.option).toBe('thinking.budget_tokens')
    expect(modelRefusal('claude-sonnet-5', { thinking: { type: 'adaptive' } })).toBeNull()
    expect(modelRefusal('claude-haiku-4-5', { thinking: { type: 'adaptive' } })?.option).toBe('thinking')
  })

  it('effort levels a model lacks; a null effort asks for nothing', () => {
    expect(modelRefusal('claude-sonnet-4-6', { output_config: { effort: 'max' } })?.why).toContain('effort "max"')
    expect(modelRefusal('claude-opus-4-6', { output_config: { effort: 'max' } })).toBeNull()
    expect(modelRefusal('claude-3-7-sonnet-20250219', { output_config: { effort: null } })).toBeNull()
  })

  it('an unknown model passes whatever it is asked', () => {
    expect(modelRefusal('claude-someday-9', { tool_choice: { type: 'any' }, thinking: { type: 'enabled' }, temperature: 0, output_config: { effort: 'xhigh' } })).toBeNull()
  })
})
