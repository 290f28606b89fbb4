import type { MessageParam, ToolResultBlockParam } from '@anthropic-ai/sdk/resources/messages'
import { AppError } from '../errors.js'
import { hasLoneSurrogate } from '../lib/text.js'
import type { ToolOutputs } from '../schemas/runs.js'
import type { RunRecord } from '../store/index.js'
import { capContent, toolResult, type ToolResultContent } from '../tools/tool-result.js'
import type { InitialWrite } from './run-driver.js'

/** A client tool call a run waits on, as listed in its `required_action`. */
export interface AwaitedCall {
  readonly id: string
  readonly name: string
}

/** The client tool calls a run in `requires_action` waits on. */
export function awaitedCalls (run: RunRecord): AwaitedCall[] {
  return (run.required_action?.tool_calls ?? []) as AwaitedCall[]
}

/**
 * Checks the caller's outputs for the calls a run waits on (SPEC §4.3): one per listed call, no
 * other, none twice, well-formed text. Answers each call's result, its text cut at `maxResultChars`
 * as a webhook's is. Every refusal is a 400 that says what to fix.
 */
export function checkToolOutputs (run: RunRecord, body: ToolOutputs, maxResultChars: number): (call: AwaitedCall) => ToolResultBlockParam {
  const asked = awaitedCalls(run)
  const askedIds = new Set(asked.map((c) => c.id))
  const seen = new Set<string>()
  for (const output of body.tool_outputs) {
    if (!askedIds.has(output.tool_use_id)) {
      throw new AppError('RUN_ERR_INVALID_TOOL_OUTPUTS', `tool_outputs names ${output.tool_use_id}, which the run did not ask for: answer exactly ${[...askedIds].join(', ')}.`)
    }
    if (seen.has(output.tool_use_id)) {
      throw new AppError('RUN_ERR_INVALID_TOOL_OUTPUTS', `tool_outputs answers ${output.tool_use_id} more than once: give one output per call.`)
    }
    seen.add(output.tool_use_id)
  }
  const missing = asked.filter((c) => !seen.has(c.id)).map((c) => c.id)
  if (missing.length > 0) {
    throw new AppError('RUN_ERR_INVALID_TOOL_OUTPUTS', `tool_outputs lacks ${missing.join(', ')}: give one output for each call in required_action.`)
  }
  if (hasLoneSurrogate(body.tool_outputs)) {
    throw new AppError('RUN_ERR_INVALID_TOOL_OUTPUTS', 'An output holds half of a UTF-16 surrogate pair (half an emoji, say), which the model API refuses: send well-formed Unicode.')
  }
  const byId = new Map(body.tool_outputs.map((o) => [o.tool_use_id, o]))
  return (call) => {
    const output = byId.get(call.id)!
    const content = capContent((output.content ?? '') as ToolResultContent, maxResultChars)
    return toolResult(call.id, content, output.is_error === true)
  }
}

/** The result of a call the caller never answered: the run was cancelled, or reached its deadline. */
export function notAnswered (call: AwaitedCall, why: string): ToolResultBlockParam {
  return toolResult(call.id, `Not answered: ${why}.`, true)
}

/**
 * What a waiting run stores as it resumes: the step's results in the model's order (the webhook
 * results kept while it waited, and `answer`'s for each client call), their events, and the
 * counters. `messages` is the run's transcript, whose last message asked for the calls.
 */
export function resumeWrite (run: RunRecord, messages: readonly MessageParam[], answer: (call: AwaitedCall) => ToolResultBlockParam): InitialWrite {
  const calls = awaitedCalls(run)
  const answers = new Map(calls.map((c) => [c.id, answer(c)]))
  const pending = (run.pending_results ?? []) as Array<ToolResultBlockParam | null>
  const assistant = messages.at(-1)
  const toolUseIds = Array.isArray(assistant?.content) ? assistant.content.filter((b) => b.type === 'tool_use').map((b) => (b as { id: string }).id) : []
  const results = toolUseIds.map((id, index) => pending[index] ?? answers.get(id))
  if (results.some((r) => r === undefined)) throw new Error(`run ${run.id}: the stored wait does not match its transcript`)
  const events = calls.map((call) => {
    const result = answers.get(call.id)!
    return {
      type: 'tool_call.completed',
      data: { step: run.steps, tool_use_id: call.id, name: call.name, is_error: result.is_error === true, duration_ms: 0, attempts: 0, status: null, outcome: 'client', content: result.content ?? '' }
    }
  })
  return {
    messages: [{ role: 'user', content: results as ToolResultBlockParam[] }],
    patch: {
      required_action: null,
      pending_results: null,
      tool_calls_total: run.tool_calls_total + calls.length,
      tool_calls_errors: run.tool_calls_errors + [...answers.values()].filter((r) => r.is_error === true).length
    },
    events
  }
}
