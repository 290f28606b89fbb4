import type { MessageParam, ToolResultBlockParam } from '@anthropic-ai/sdk/resources/messages'
import { AppError } from '../errors.js'
import { hasLoneSurrogate } from '../lib/text.js'
import type { RunParams, ToolOutputs } from '../schemas/runs.js'
import type { RunRecord } from '../store/index.js'
import { capContent, toolResult, type ToolResultContent } from '../tools/tool-result.js'
import type { InitialWrite } from './run-driver.js'
import { cacheBreakpoints, cacheControlProblem, isBreakpoint, MAX_CACHE_BREAKPOINTS } from './transcript.js'

/** A client tool call a run waits on, as listed in its `required_action`. */
export interface AwaitedCall {
  readonly id: string
  readonly name: string
}

/** The client tool calls a run in `requires_action` waits on. */
function awaitedCalls (run: RunRecord): AwaitedCall[] {
  return (run.required_action?.tool_calls ?? []) as AwaitedCall[]
}

/**
 * Checks the caller's outputs for the calls a run waits on (SPEC §4.3): one per listed call, no
 * other, none twice, well-formed text, blocks as the Messages API takes them (no blank text, a
 * valid `cache_control`, at most four breakpoints with those of the system prompt and of
 * `messages`, the run's transcript). Answers each call's result, its text cut at `maxResultChars`
 * as a webhook's is, and an error without content saying the tool failed without a message. Every
 * refusal is a 400 that says what to fix, made before the run is taken from its wait.
 */
export function checkToolOutputs (run: RunRecord, messages: readonly MessageParam[], body: ToolOutputs, maxResultChars: number): (call: AwaitedCall) => ToolResultBlockParam {
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
  const problem = findOutputsProblem(body)
  if (problem !== null) throw new AppError('RUN_ERR_INVALID_TOOL_OUTPUTS', problem)
  // The Messages API would refuse every later request of the run. Those of the transcript and
  // system prompt alone were counted when the run was created.
  const added = outputBreakpoints(body)
  if (added.length > 0) {
    const breakpoints = [...cacheBreakpoints(messages, run.params.system as RunParams['system']), ...added]
    if (breakpoints.length > MAX_CACHE_BREAKPOINTS) throw tooManyBreakpoints(breakpoints)
  }
  const byId = new Map(body.tool_outputs.map((o) => [o.tool_use_id, o]))
  return (call) => {
    const output = byId.get(call.id)!
    const content = capContent((output.content ?? '') as ToolResultContent, maxResultChars)
    return toolResult(call.id, content, output.is_error === true, call.name)
  }
}

/**
 * What the outputs' schema leaves to be checked as the Messages API checks a tool_result's blocks:
 * text that is not blank, and a `cache_control` of its shape. Null when they are fine.
 */
function findOutputsProblem (body: ToolOutputs): string | null {
  for (const [i, output] of body.tool_outputs.entries()) {
    if (!Array.isArray(output.content)) continue
    for (const [j, block] of output.content.entries()) {
      const where = `tool_outputs[${i}].content[${j}]`
      if (block.type === 'text' && block.text.trim() === '') {
        return `${where} (for ${output.tool_use_id}) is a blank text block: the Messages API refuses text blocks without text (spaces alone count as none); give it text, or leave the block out.`
      }
      const problem = cacheControlProblem((block as { cache_control?: unknown }).cache_control, `${where}.cache_control (for ${output.tool_use_id})`)
      if (problem !== null) return problem
    }
  }
  return null
}

function outputBreakpoints (body: ToolOutputs): string[] {
  return body.tool_outputs.flatMap((output, i) => Array.isArray(output.content)
    ? output.content.flatMap((block, j) => isBreakpoint(block) ? [`tool_outputs[${i}].content[${j}]`] : [])
    : [])
}

function tooManyBreakpoints (breakpoints: readonly string[]): AppError {
  return new AppError('RUN_ERR_INVALID_TOOL_OUTPUTS', `With these outputs the run's next model request would hold ${breakpoints.length} cache breakpoints (cache_control on ${breakpoints.join(', ')}), but the Messages API takes at most ${MAX_CACHE_BREAKPOINTS}: leave cache_control out of some of the outputs' blocks.`)
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
