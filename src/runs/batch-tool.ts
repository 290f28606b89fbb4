import type { Tool as ModelTool, ToolResultBlockParam, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import type { CompletedToolUse } from '../model/message-accumulator.js'
import type { ToolRecord } from '../store/index.js'
import type { StepDispatcher } from '../tools/dispatcher.js'
import type { EventLog } from './event-log.js'
import type { ResumedStep } from './resume.js'
import { toolResult } from '../tools/tool-result.js'

/** The name of the batch meta-tool (SPEC §14): reserved, no registered or client tool may take it. */
export const BATCH_TOOL_NAME = 'batch_tool'

/**
 * The batch meta-tool as the model sees it. Some models (Claude 3.7 Sonnet) seldom ask for
 * several tools in one turn; offered this, they batch their calls. `arguments` is JSON text, as
 * in the design this comes from; an object is taken too.
 */
export const BATCH_TOOL_DEFINITION: ModelTool = {
  name: BATCH_TOOL_NAME,
  description: 'Invoke multiple other tool calls simultaneously',
  input_schema: {
    type: 'object',
    properties: {
      invocations: {
        type: 'array',
        description: 'The tool calls to invoke',
        items: {
          type: 'object',
          properties: {
            name: { type: 'string', description: 'The name of the tool to invoke' },
            arguments: { type: 'string', description: 'The arguments to the tool, as JSON text' }
          },
          required: ['name', 'arguments']
        }
      }
    },
    required: ['invocations']
  }
}

/** One invocation of a batch: a tool_use of its own (id `{tool_use_id}:{index}`), or why it is not one. */
export type Invocation =
  | { readonly index: number, readonly toolUse: CompletedToolUse, readonly problem?: undefined }
  | { readonly index: number, readonly block: Pick<ToolUseBlock, 'id' | 'name'>, readonly problem: string }

/**
 * The id of a batch's invocation: its calls' idempotency key is then `{run_id}:{tool_use_id}:{index}`
 * (the key is the run's id and the call's), and its events name it. Never an id the model makes:
 * those hold no colon.
 */
export function invocationId (toolUseId: string, index: number): string {
  return `${toolUseId}:${index}`
}

/**
 * The invocations of a batch_tool call, in order. What can be told from the batch alone fails
 * that invocation only, with a message the model can act on: a missing name, arguments that are
 * not JSON text of an object, a nested batch_tool. Whether the tool is the run's and its input
 * valid is checked when each is dispatched, as any call's.
 */
export function batchInvocations (block: Pick<ToolUseBlock, 'id' | 'input'>): Invocation[] | string {
  const input = block.input as { invocations?: unknown } | null
  const list = typeof input === 'object' && input !== null ? input.invocations : undefined
  if (!Array.isArray(list)) return 'batch_tool was not called: its input needs `invocations`, a list of `{ "name": "<tool>", "arguments": "<JSON text of its input>" }`.'
  if (list.length === 0) return 'batch_tool was not called: `invocations` is empty; list at least one `{ "name", "arguments" }`.'
  return list.map((item: unknown, index): Invocation => {
    const id = invocationId(block.id, index)
    const entry = typeof item === 'object' && item !== null && !Array.isArray(item) ? item as Record<string, unknown> : {}
    const name = typeof entry.name === 'string' && entry.name !== '' ? entry.name : undefined
    if (name === undefined) return { index, block: { id, name: '(no name)' }, problem: `invocations[${index}] has no \`name\`: give the name of one of your tools.` }
    if (name === BATCH_TOOL_NAME) return { index, block: { id, name }, problem: 'batch_tool cannot invoke batch_tool: list the tools themselves in one batch.' }
    const args = parseArguments(entry.arguments)
    if (typeof args === 'string') return { index, block: { id, name }, problem: `Tool ${name} was not called: ${args}` }
    return { index, toolUse: { block: { type: 'tool_use', id, name, input: args } as ToolUseBlock, index, inputComplete: true } }
  })
}

/** An invocation's `arguments` as an input object, or what is wrong with them. */
function parseArguments (value: unknown): Record<string, unknown> | string {
  if (value === undefined || value === null) return {}
  let parsed = value
  if (typeof value === 'string') {
    if (value.trim() === '') return {}
    try {
      parsed = JSON.parse(value)
    } catch (err) {
      return `its arguments are not valid JSON (${(err as Error).message}): write them as the JSON text of an object, such as "{\\"city\\": \\"Paris\\"}".`
    }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return 'its arguments are not a JSON object: write them as the JSON text of an object, such as "{\\"city\\": \\"Paris\\"}".'
  return parsed as Record<string, unknown>
}

/**
 * How a batch_tool call is scheduled while the model's message streams: held back until the
 * message is stored if any invocation is of a side_effecting tool (as such a call is), and in
 * order around calls that run alone if any is of a tool with `parallel: false`.
 */
export function batchShape (input: unknown, tools: ReadonlyMap<string, ToolRecord>): Pick<ToolRecord, 'effect' | 'parallel'> {
  const list = (typeof input === 'object' && input !== null ? (input as { invocations?: unknown }).invocations : undefined)
  let effect: ToolRecord['effect'] = 'read_only'
  let parallel = true
  for (const item of Array.isArray(list) ? list : []) {
    const tool = tools.get((item as { name?: unknown } | null)?.name as string)
    if (tool === undefined) continue
    if (tool.effect === 'side_effecting') effect = 'side_effecting'
    if (!tool.parallel) parallel = false
  }
  return { effect, parallel }
}

/**
 * The batch's one tool_result: a text section per invocation in order, `[1] get_weather: …`, a
 * failure as `[2] get_time: error: …`; `is_error` only when every invocation failed.
 */
export function batchResult (toolUseId: string, sections: ReadonlyArray<{ name: string, result: ToolResultBlockParam }>): ToolResultBlockParam {
  const text = sections.map(({ name, result }, i) => `[${i + 1}] ${name}: ${result.is_error === true ? 'error: ' : ''}${resultText(result)}`).join('\n\n')
  return toolResult(toolUseId, text, sections.length > 0 && sections.every((s) => s.result.is_error === true))
}

function resultText (result: ToolResultBlockParam): string {
  const { content } = result
  if (content === undefined) return ''
  if (typeof content === 'string') return content
  return content.map((b) => b.type === 'text' ? b.text : `[${b.type}]`).join('')
}

/** What a batch needs of the run's tool calls (see ToolCalls). */
export interface BatchCalls {
  dispatch: (step: number, toolUse: CompletedToolUse, tools: ReadonlyMap<string, ToolRecord>, dispatcher: StepDispatcher, signal: AbortSignal) => Promise<ToolResultBlockParam>
  notCalled: (step: number, block: Pick<ToolUseBlock, 'id' | 'name'>, message: string, outcome?: 'refused' | 'unknown') => ToolResultBlockParam
  /** Whether a call of this tool waits for a reviewer (SPEC §12): never made through a batch. */
  needsApproval: (block: Pick<ToolUseBlock, 'id' | 'name'>, tool: ToolRecord | undefined) => boolean
  readonly events: Pick<EventLog, 'emit'>
}

/** What a replica taking the run over found of the step's calls (see ResumedStep). */
export type BatchResume = Pick<ResumedStep, 'results' | 'inFlight'>

/**
 * Runs a batch_tool call: each invocation is dispatched as a call of its own, at once and in
 * order (so that the step's ordering and concurrency rules, a tool's timeout, retries, caps and
 * guards apply to each as to any call), and the batch is answered when all have their result.
 * Taken over by another replica, an invocation with a stored result keeps it, one of a
 * side_effecting tool that was in flight is answered "outcome unknown", and the others are sent
 * (again, with the same idempotency key). Never rejects.
 */
export async function dispatchBatch (calls: BatchCalls, step: number, block: ToolUseBlock, tools: ReadonlyMap<string, ToolRecord>, dispatcher: StepDispatcher, signal: AbortSignal, resumed?: BatchResume): Promise<ToolResultBlockParam> {
  const startedAt = Date.now()
  const invocations = batchInvocations(block)
  if (typeof invocations === 'string') return calls.notCalled(step, block, invocations)
  // Dispatched in one go, in order: a call that must run alone is scheduled among them as listed.
  const pending = invocations.map(async (invocation): Promise<{ name: string, result: ToolResultBlockParam }> => {
    if (invocation.problem !== undefined) return { name: invocation.block.name, result: calls.notCalled(step, invocation.block, invocation.problem) }
    const { block: use } = invocation.toolUse
    const stored = resumed?.results.get(use.id)
    if (stored !== undefined) return { name: use.name, result: stored }
    // A batch does not wait for reviewers: the model is told to ask for such a call on its own.
    if (calls.needsApproval(use, tools.get(use.name))) {
      return { name: use.name, result: calls.notCalled(step, use, `Tool ${use.name} was not called: its calls need a reviewer's approval, which batch_tool does not wait for; call ${use.name} directly.`) }
    }
    const inFlight = resumed?.inFlight.get(use.id)
    if (inFlight !== undefined && (inFlight.effect ?? tools.get(use.name)?.effect ?? 'side_effecting') === 'side_effecting') {
      return { name: use.name, result: calls.notCalled(step, use, 'outcome unknown: the call was in flight when its replica stopped', 'unknown') }
    }
    return { name: use.name, result: await calls.dispatch(step, invocation.toolUse, tools, dispatcher, signal) }
  })
  const sections = await Promise.all(pending)
  const result = batchResult(block.id, sections)
  calls.events.emit('tool_call.completed', {
    step,
    tool_use_id: block.id,
    name: BATCH_TOOL_NAME,
    is_error: result.is_error === true,
    duration_ms: Date.now() - startedAt,
    attempts: 0,
    status: null,
    outcome: result.is_error === true ? 'error' : 'ok',
    content: result.content,
    invocations: sections.length
  })
  return result
}

/**
 * The `batch` field of an invocation's events: which batch_tool call it belongs to, and where in
 * it (from its id, see invocationId); nothing for a call of the model's own.
 */
export function batchRef (toolUseId: string): { batch?: { tool_use_id: string, index: number } } {
  const at = toolUseId.lastIndexOf(':')
  if (at < 0) return {}
  return { batch: { tool_use_id: toolUseId.slice(0, at), index: Number(toolUseId.slice(at + 1)) } }
}
