import type { MessageParam, Tool as ModelTool } from '@anthropic-ai/sdk/resources/messages'
import type { ModelRequest } from '../model/model-client.js'
import type { ClientTool, RunParams } from '../schemas/runs.js'
import type { ToolRecord } from '../store/index.js'

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
}

/**
 * The Messages API request of one step: the run's model, settings and transcript, its registered
 * tools in the order the run named them, then its client tools. Tools the history mentions but
 * the run no longer has stay defined as stubs, since the API refuses a history whose tool_use
 * blocks name tools it is not given (a tool deleted mid-run, a name the model made up, a caller's
 * earlier conversation); calling one gets a result saying it is not available.
 */
export function modelRequest (parts: ModelRequestParts): ModelRequest {
  const { params } = parts
  // The run's MCP tools (SPEC §11) come after its webhook tools, in the order they were pinned.
  const names = params.mcp_tools === undefined ? params.tools : [...params.tools, ...params.mcp_tools.map((t) => t.run_name)]
  const modelTools: ModelTool[] = names
    .map((name) => parts.tools.find((t) => t.name === name))
    .filter((t): t is ToolRecord => t !== undefined)
    .map((t) => ({ name: t.name, description: t.description, input_schema: t.input_schema as ModelTool['input_schema'] }))
  for (const definition of parts.clientTools) {
    modelTools.push({ name: definition.name, description: definition.description, input_schema: definition.input_schema as ModelTool['input_schema'] })
  }
  const defined = new Set(modelTools.map((t) => t.name))
  for (const name of parts.historyTools) {
    if (!defined.has(name)) modelTools.push({ name, description: 'Not available in this run: calling it returns an error.', input_schema: { type: 'object' } })
  }
  const request: ModelRequest = { model: parts.model, max_tokens: params.max_tokens, messages: parts.history }
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
  return request
}
