import { createHash, randomBytes } from 'node:crypto'
import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import { AppError } from '../errors.js'
import { newId } from '../lib/ids.js'
import { hasLoneSurrogate } from '../lib/text.js'
import type { CreateRun, RunParams } from '../schemas/runs.js'
import type { PinnedMcpTool } from '../schemas/mcp-servers.js'
import type { RunRecord } from '../store/index.js'
import { modelRefusal, type ModelAsk } from '../model/model-refusals.js'
import { RESERVED_TOOL_NAMES } from '../tools/registry.js'
import { cacheBreakpoints, findSystemProblem, findTranscriptProblem, MAX_CACHE_BREAKPOINTS } from './transcript.js'

const DEFAULT_MAX_TOKENS = 4096

/** The ceilings a run request is checked against (from the service's configuration). */
export interface RequestLimits {
  /** Highest max_steps a run may ask for. */
  readonly maxSteps: number
  /** Highest timeout_ms a run may ask for. */
  readonly maxTimeoutMs: number
  /** The model of a run that names none (for the table of known models' refusals). */
  readonly defaultModel?: string
  /** Whether a run that does not say is offered the batch meta-tool (BATCH_TOOL_DEFAULT). */
  readonly batchToolDefault?: boolean
}

/** A run request that passed every check: what the run is sent, and how it runs. */
export interface CheckedRequest {
  readonly messages: MessageParam[]
  readonly params: RunParams
}

/**
 * Checks a run request (`POST /runs`) beyond its schema, and turns it into the run's parameters.
 * Every refusal is a 400 that says what to fix. Whether the named tools exist is left to the
 * insert, which reads them anyway (see Store.createRun). `compileSchema` checks a client tool's
 * input schema the way registered tools' are checked; it throws what is wrong with it.
 */
export function checkRunRequest (body: CreateRun, limits: RequestLimits, compileSchema: (schema: Record<string, unknown>) => unknown, mcpTools: readonly PinnedMcpTool[] = []): CheckedRequest {
  if ((body.input === undefined) === (body.messages === undefined)) {
    throw invalid('Send exactly one of `input` (the first user message, a string) and `messages` (a Messages API history).')
  }
  if (body.stream === true && body.background === true) {
    throw invalid('Choose `stream` or `background`, not both: a stream already answers at once.')
  }
  // The defaults give way to lower ceilings; only an explicit value over a ceiling is refused.
  const maxSteps = body.max_steps ?? Math.min(25, limits.maxSteps)
  if (maxSteps > limits.maxSteps) throw invalid(`max_steps is ${maxSteps} but this service allows at most ${limits.maxSteps} (RUN_MAX_STEPS).`)
  const timeoutMs = body.timeout_ms ?? Math.min(600_000, limits.maxTimeoutMs)
  if (timeoutMs > limits.maxTimeoutMs) throw invalid(`timeout_ms is ${timeoutMs} but this service allows at most ${limits.maxTimeoutMs} (RUN_MAX_TIMEOUT_MS).`)

  if (body.input?.trim() === '') throw new AppError('RUN_ERR_INVALID_MESSAGES', '`input` has no text (spaces alone count as none), and the Messages API refuses an empty message: write the first user message.')
  const messages: MessageParam[] = body.messages ?? [{ role: 'user', content: body.input! }]
  const problem = findTranscriptProblem(messages)
  if (problem !== null) throw new AppError('RUN_ERR_INVALID_MESSAGES', problem)
  if (hasLoneSurrogate(messages) || hasLoneSurrogate(body.system)) {
    throw new AppError('RUN_ERR_INVALID_MESSAGES', 'The text holds half of a UTF-16 surrogate pair (half an emoji, say), which the model API refuses: send well-formed Unicode.')
  }
  const systemProblem = findSystemProblem(body.system)
  if (systemProblem !== null) throw invalid(systemProblem)
  const breakpoints = cacheBreakpoints(messages, body.system)
  if (breakpoints.length > MAX_CACHE_BREAKPOINTS) {
    throw invalid(`The request sets ${breakpoints.length} cache breakpoints (cache_control on ${breakpoints.join(', ')}), but the Messages API takes at most ${MAX_CACHE_BREAKPOINTS} in a request: keep cache_control on ${MAX_CACHE_BREAKPOINTS} blocks at the most.`)
  }

  const toolNames = body.tools ?? []
  // MCP tools (`body.tools` then holds the webhook tools alone) are named like registered tools.
  const named = new Set([...toolNames, ...mcpTools.map((t) => t.run_name)])
  checkClientTools(body, named, compileSchema)
  for (const name of body.require_approval ?? []) {
    if (!named.has(name)) throw invalid(`require_approval names ${name}, which is not one of this run's registered or MCP tools: list it in \`tools\` (a caller's own tools need no approval).`)
  }
  const allTools = new Set([...named, ...(body.client_tools ?? []).map((t) => t.name)])
  if (body.tool_choice?.type === 'tool' && !allTools.has(body.tool_choice.name ?? '')) {
    throw invalid(`tool_choice names ${body.tool_choice.name ?? '(nothing)'}, which is not one of this run's tools.`)
  }
  if (body.tool_choice !== undefined && allTools.size === 0) {
    throw invalid('tool_choice needs tools: list the run\'s tools in `tools`, or leave tool_choice out.')
  }
  const maxTokens = body.max_tokens ?? DEFAULT_MAX_TOKENS
  checkThinking(body, maxTokens)
  const model = body.model ?? limits.defaultModel
  const refused = model === undefined ? null : modelRefusal(model, body as ModelAsk)
  if (refused !== null) {
    throw new AppError('RUN_ERR_MODEL_UNSUPPORTED', `${refused.option}: model ${model} does not take ${refused.why}, or choose another model.`)
  }
  const batchTool = body.batch_tool ?? limits.batchToolDefault ?? false

  const params: RunParams = {
    tools: toolNames,
    max_tokens: maxTokens,
    max_steps: maxSteps,
    timeout_ms: timeoutMs,
    disable_parallel_tool_use: body.disable_parallel_tool_use ?? false,
    parallelism: body.parallelism ?? 64,
    ...pick(body, ['system', 'tool_choice', 'thinking', 'temperature', 'top_p', 'top_k', 'stop_sequences', 'client_tools', 'require_approval', 'budget']),
    ...(mcpTools.length > 0 ? { mcp_tools: [...mcpTools] } : {}),
    ...(batchTool ? { batch_tool: true } : {}),
    ...pick(body, ['output_config', 'context_management', 'tool_search']),
    ...(body.cache === 'off' ? { cache: 'off' as const } : {}),
    ...(body.code_execution === true ? { code_execution: true } : {})
  }
  return { messages, params }
}

/**
 * Thinking settings the Messages API refuses in every request: a `budget_tokens` under 1024 or not
 * below `max_tokens` (thinking is spent from max_tokens), and thinking with a `tool_choice` that
 * forces tool use (`any` or `tool`), which leaves the model no room to think first.
 */
function checkThinking (body: CreateRun, maxTokens: number): void {
  const { thinking } = body
  if (thinking === undefined || thinking.type === 'disabled') return
  if (thinking.type === 'enabled') {
    const budget = (thinking as Record<string, unknown>).budget_tokens
    if (typeof budget !== 'number' || !Number.isInteger(budget) || budget < 1024) {
      throw invalid(`thinking.budget_tokens is ${JSON.stringify(budget) ?? 'missing'}, but thinking of type "enabled" needs a whole number of tokens, at least 1024: set thinking.budget_tokens.`)
    }
    if (budget >= maxTokens) {
      // The schema fills in max_tokens: 4096 is the default, whether given or not.
      const given = `max_tokens is ${maxTokens}${maxTokens === DEFAULT_MAX_TOKENS ? ' (the default)' : ''}`
      throw invalid(`thinking.budget_tokens is ${budget} but ${given}: the budget must be below max_tokens, since thinking is spent from it. Raise max_tokens above ${budget}, or lower the budget.`)
    }
  }
  const forced = body.tool_choice?.type
  if (forced === 'any' || forced === 'tool') {
    throw invalid(`thinking cannot be used with tool_choice "${forced}", which forces tool use: the Messages API refuses the two together. Use tool_choice "auto" or "none", or leave thinking out.`)
  }
}

function checkClientTools (body: CreateRun, named: ReadonlySet<string>, compileSchema: (schema: Record<string, unknown>) => unknown): void {
  const names = new Set<string>()
  for (const [index, tool] of (body.client_tools ?? []).entries()) {
    const where = `client_tools[${index}] (${tool.name})`
    if (RESERVED_TOOL_NAMES.has(tool.name)) throw invalid(`${where} has a name Switchboard gives a tool of its own (the batch meta-tool): give it another name.`)
    if (named.has(tool.name)) throw invalid(`${where} has the name of one of the run's \`tools\` (registered tools): give it another name.`)
    if (names.has(tool.name)) throw invalid(`${where} repeats a name: each client tool needs its own.`)
    names.add(tool.name)
    try {
      compileSchema(tool.input_schema)
    } catch (err) {
      throw invalid(`${where}: ${(err as Error).message}`)
    }
  }
}

/** Who drives a new run from its first moment: this replica, under a fresh lease, or nobody yet (queued). */
export interface NewRunLease {
  readonly owner: string
  readonly leaseMs: number
}

/** What a new run is made of, beyond its checked request. */
export interface NewRunOptions {
  readonly tenantId: string
  readonly body: CreateRun
  readonly checked: CheckedRequest
  readonly defaultModel: string
  readonly idempotencyKey: string | null
  readonly requestHash: string | null
  readonly callbackUrl: string | null
  /** Null: the run waits, queued, for any replica with room. */
  readonly lease: NewRunLease | null
  readonly now: number
}

/** The stored form of a run about to be created: status `queued`, one event (`run.created`) so far. */
export function newRunRecord (options: NewRunOptions): RunRecord {
  const { body, checked, lease, now } = options
  return {
    id: newId('run'),
    tenant_id: options.tenantId,
    status: 'queued',
    stop_reason: null,
    model: body.model ?? options.defaultModel,
    params: checked.params as unknown as Record<string, unknown>,
    metadata: body.metadata ?? {},
    created_at: now,
    started_at: null,
    completed_at: null,
    deadline_at: now + checked.params.timeout_ms,
    steps: 0,
    tool_calls_total: 0,
    tool_calls_errors: 0,
    usage: { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    output: [],
    required_action: null,
    error: null,
    idempotency_key: options.idempotencyKey,
    request_hash: options.requestHash,
    trace_id: randomBytes(16).toString('hex'),
    callback_url: options.callbackUrl,
    message_count: checked.messages.length,
    event_count: 1,
    lease_owner: lease?.owner ?? null,
    lease_token: lease === null ? 0 : 1,
    lease_expires_at: lease === null ? 0 : now + lease.leaseMs,
    pending_results: null,
    cancel_requested_at: null,
    callback_status: null,
    callback_attempts: 0,
    callback_next_at: null,
    callback_error: null,
    step_events_after: 1
  }
}

/** A digest of a request's body, the same for the same JSON whatever the order of its keys. */
export function hashRequest (body: unknown): string {
  return createHash('sha256').update(canonicalJson(body)).digest('hex')
}

function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (typeof value === 'object' && value !== null) {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`
  }
  return JSON.stringify(value) ?? 'null'
}

/**
 * The run an Idempotency-Key already made, if `requestHash` says it was made for the same request;
 * for another request, a 409.
 */
export function sameRequest (earlier: RunRecord, requestHash: string | null): RunRecord {
  if (earlier.request_hash !== requestHash) {
    throw new AppError('RUN_ERR_IDEMPOTENCY_CONFLICT', `This Idempotency-Key was used for another request (run ${earlier.id}): use a new key for a new run, or send the same body to get that run back.`)
  }
  return earlier
}

function invalid (message: string): AppError {
  return new AppError('RUN_ERR_INVALID_REQUEST', message)
}

function pick<T extends object, K extends keyof T> (object: T, keys: readonly K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {}
  for (const key of keys) if (object[key] !== undefined) out[key] = object[key]
  return out
}
