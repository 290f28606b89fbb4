import type { MessageParam, Tool as ModelTool, ToolUnion } from '@anthropic-ai/sdk/resources/messages'
import { CODE_EXECUTION_TOOL, withCallers } from '../model/code-execution.js'
import type { ModelRequest } from '../model/model-client.js'
import type { ClientTool, RunParams } from '../schemas/runs.js'
import type { ToolRecord } from '../store/index.js'
import { BATCH_TOOL_DEFINITION } from './batch-tool.js'
import { cacheBreakpoints, isBreakpoint, MAX_CACHE_BREAKPOINTS } from './transcript.js'

/** What a step's Messages API request is made of. */
export interface ModelRequestParts {
  readonly model: string
  readonly params: RunParams
  /** The run's registered tools, as read for this step (a tool deleted since is missing). */
  readonly tools: readonly ToolRecord[]
  readonly clientTools: Iterable<ClientTool>
  /** Names of every tool the history's tool_use blocks mention. */
  readonly historyTools: Iterable<string>
  /** The whole transcript so far; sent as it is (each message's JSON is made once: see messageJson). */
  readonly history: MessageParam[]
  /** The run's code execution container (SPEC §16), once a model answer named one: sent with every later request. */
  readonly container?: string | null | undefined
}

/** The API's tool search tools (SPEC §15), by the run's `tool_search`. */
const TOOL_SEARCH: Record<NonNullable<RunParams['tool_search']>, ToolUnion> = {
  regex: { type: 'tool_search_tool_regex_20251119', name: 'tool_search_tool_regex' },
  bm25: { type: 'tool_search_tool_bm25_20251119', name: 'tool_search_tool_bm25' }
}

const BREAKPOINT = { type: 'ephemeral' } as const

/**
 * The Messages API request of one step: the run's model, settings and transcript, its registered
 * tools in the order the run named them (with the fields each passes through: strict,
 * input_examples, defer_loading, eager_input_streaming), the batch meta-tool if the run offers
 * it, its client tools, then the API's tool search tool if the run asks for it. Tools the history
 * mentions but the run no longer has stay defined as stubs, since the API refuses a history whose
 * tool_use blocks name tools it is not given (a tool deleted mid-run, a name the model made up, a
 * caller's earlier conversation); calling one gets a result saying it is not available.
 *
 * Unless the run says `cache: "off"`, the request carries two cache breakpoints (SPEC §15): on
 * the last tool, and on the last block of the history, so that each step reads from the cache what
 * the step before wrote. The tools come out the same, byte for byte, at every step, or the cache
 * would miss from the first byte on.
 */
export function modelRequest (parts: ModelRequestParts): ModelRequest {
  const { params } = parts
  // The run's MCP tools (SPEC §11) come after its webhook tools, in the order they were pinned.
  const names = params.mcp_tools === undefined ? params.tools : [...params.tools, ...params.mcp_tools.map((t) => t.run_name)]
  const modelTools: ToolUnion[] = []
  for (const name of names) {
    const tool = parts.tools.find((t) => t.name === name)
    if (tool !== undefined) modelTools.push(withCallers(modelTool(tool), tool.model_options?.callers, params.code_execution === true))
  }
  if (params.batch_tool === true) modelTools.push(BATCH_TOOL_DEFINITION)
  for (const definition of parts.clientTools) {
    modelTools.push({ name: definition.name, description: definition.description, input_schema: definition.input_schema as ModelTool['input_schema'] })
  }
  const defined = new Set(modelTools.map((t) => (t as ModelTool).name))
  for (const name of parts.historyTools) {
    if (!defined.has(name)) modelTools.push({ name, description: 'Not available in this run: calling it returns an error.', input_schema: { type: 'object' } })
  }
  if (params.tool_search !== undefined) modelTools.push(TOOL_SEARCH[params.tool_search])
  // Programmatic tool calling (SPEC §16): the API's code execution tool, and the container its
  // code runs in once there is one (a continuation of code waiting for results must name it).
  if (params.code_execution === true) modelTools.push(CODE_EXECUTION_TOOL)
  const request: ModelRequest = { model: parts.model, max_tokens: params.max_tokens, messages: parts.history }
  if (parts.container !== undefined && parts.container !== null) request.container = parts.container
  if (params.system !== undefined) request.system = params.system
  if (modelTools.length > 0) {
    request.tools = modelTools
    const choice = params.tool_choice ?? { type: 'auto' }
    request.tool_choice = (params.disable_parallel_tool_use && choice.type !== 'none'
      ? { ...choice, disable_parallel_tool_use: true }
      : choice) as ModelRequest['tool_choice']
  }
  if (params.thinking !== undefined) request.thinking = params.thinking as ModelRequest['thinking']
  // Sampling settings are passed through as given; this SDK's types no longer list them.
  const sampling = request as ModelRequest & Record<string, unknown>
  if (params.temperature !== undefined) sampling.temperature = params.temperature
  if (params.top_p !== undefined) sampling.top_p = params.top_p
  if (params.top_k !== undefined) sampling.top_k = params.top_k
  if (params.stop_sequences !== undefined) request.stop_sequences = params.stop_sequences
  if (params.output_config !== undefined) request.output_config = params.output_config as ModelRequest['output_config']
  // A beta of the API (see betaHeader in src/model/betas.ts): not in this SDK's request type.
  if (params.context_management !== undefined) sampling.context_management = params.context_management
  if (params.cache !== 'off') placeBreakpoints(request)
  return request
}

/** A registered tool as the model sees it. */
function modelTool (tool: ToolRecord): ModelTool {
  const out: ModelTool = { name: tool.name, description: tool.description, input_schema: tool.input_schema as ModelTool['input_schema'] }
  const options = tool.model_options
  if (options === undefined) return out
  if (options.strict !== undefined) out.strict = options.strict
  if (options.input_examples !== undefined) out.input_examples = options.input_examples
  if (options.defer_loading !== undefined) out.defer_loading = options.defer_loading
  if (options.eager_input_streaming !== undefined) out.eager_input_streaming = options.eager_input_streaming
  return out
}

/** How many breakpoints each message holds, counted once per message object (a history only grows). */
const messageBreakpoints = new WeakMap<MessageParam, number>()

function breakpointsOf (message: MessageParam): number {
  let count = messageBreakpoints.get(message)
  if (count === undefined) {
    count = cacheBreakpoints([message]).length
    messageBreakpoints.set(message, count)
  }
  return count
}

/**
 * Sets the request's cache breakpoints: at the end of the history first (it caches everything
 * before it: tools, system, messages), then on the last tool, within the API's limit of four with
 * the caller's own (in the system prompt and messages). A block that has one already keeps it. The
 * stored history is never changed: the last message is sent as a copy with the breakpoint. The
 * last tool is never a deferred one (the API refuses a breakpoint there) nor the tool search tool.
 */
function placeBreakpoints (request: ModelRequest): void {
  let room = MAX_CACHE_BREAKPOINTS - cacheBreakpoints([], request.system as never).length
  for (const message of request.messages) room -= breakpointsOf(message)
  if (room <= 0) return
  const messages = request.messages
  const last = messages[messages.length - 1]
  if (last !== undefined) {
    const marked = withBreakpoint(last)
    if (marked !== last) {
      request.messages = [...messages.slice(0, -1), marked]
      room--
    }
  }
  if (room <= 0 || request.tools === undefined) return
  const tools = request.tools as Array<ToolUnion & { defer_loading?: boolean }>
  for (let i = tools.length - 1; i >= 0; i--) {
    const tool = tools[i]!
    if (tool.defer_loading === true || ('type' in tool && typeof tool.type === 'string' && tool.type.startsWith('tool_search_tool'))) continue
    if (!isBreakpoint(tool)) tools[i] = { ...tool, cache_control: BREAKPOINT } as ToolUnion
    return
  }
}

/**
 * The message with a breakpoint on its last block (the message itself if it has one there, or
 * cannot take one). A message of text alone (a run's `input`, in its first request) is sent as it
 * was given: its breakpoint comes with the next step's, which reads the tools' from the cache.
 */
function withBreakpoint (message: MessageParam): MessageParam {
  const { content } = message
  if (typeof content === 'string') return message
  const lastBlock = content[content.length - 1]
  // Thinking blocks take no cache_control; a block that has one is left as the caller set it.
  if (lastBlock === undefined || isBreakpoint(lastBlock) || lastBlock.type === 'thinking' || lastBlock.type === 'redacted_thinking') return message
  return { role: message.role, content: [...content.slice(0, -1), { ...lastBlock, cache_control: BREAKPOINT }] } as MessageParam
}
