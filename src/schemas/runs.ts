import Type, { type Static } from 'typebox'
import type { MessageParam, TextBlockParam } from '@anthropic-ai/sdk/resources/messages'
import { ISODate, NO_NUL, NullableISODate } from './common.js'
import { JsonObject, ToolNameSchema } from './tools.js'
import type { PinnedMcpTool } from './mcp-servers.js'

export const RunStatusSchema = Type.Union([
  Type.Literal('queued'), Type.Literal('running'), Type.Literal('requires_action'),
  Type.Literal('completed'), Type.Literal('failed'), Type.Literal('cancelled')
])
export const FINAL_STATUSES: ReadonlySet<string> = new Set(['completed', 'failed', 'cancelled'])

const METADATA_KEY = '^[a-zA-Z0-9_.:-]{1,64}$'

export const MetadataSchema = Type.Record(Type.String(), Type.String({ maxLength: 512, pattern: NO_NUL }), {
  maxProperties: 16,
  propertyNames: { pattern: METADATA_KEY },
  description: 'Up to 16 string pairs (keys: letters, digits, _ . : -, at most 64; values at most 512 characters). Stored, listed, filterable and sent to every tool call.'
})

const ContentBlockSchema = Type.Object({ type: Type.String({ minLength: 1 }) }, { additionalProperties: true, description: 'A content block of the Messages API.' })

/**
 * One message of a history: an Anthropic `MessageParam`, checked for shape here, and block by block
 * as the Messages API checks it when the run is created (src/runs/transcript.ts).
 */
export const MessageParamSchema = Type.Unsafe<MessageParam>(Type.Object({
  role: Type.Union([Type.Literal('user'), Type.Literal('assistant')]),
  content: Type.Union([Type.String(), Type.Array(ContentBlockSchema, { minItems: 1 })])
}, { additionalProperties: false, title: 'MessageParam' }))

const SystemSchema = Type.Unsafe<string | TextBlockParam[]>(Type.Union([
  Type.String(),
  Type.Array(Type.Object({ type: Type.Literal('text'), text: Type.String() }, { additionalProperties: true }), { minItems: 1 })
], { description: 'The system prompt: a string or text blocks (with cache_control, say).' }))

const ToolChoiceSchema = Type.Object({
  type: Type.Union([Type.Literal('auto'), Type.Literal('any'), Type.Literal('tool'), Type.Literal('none')]),
  name: Type.Optional(Type.String()),
  disable_parallel_tool_use: Type.Optional(Type.Boolean())
}, { additionalProperties: false, description: 'As in the Messages API.' })

const ThinkingSchema = Type.Object({ type: Type.String() }, { additionalProperties: true, description: 'As in the Messages API, e.g. `{ "type": "enabled", "budget_tokens": 2048 }`.' })

/** A tool the caller runs itself, described to the model like a registered one. */
export const ClientToolSchema = Type.Object({
  name: ToolNameSchema,
  description: Type.String({ minLength: 1, maxLength: 20_000 }),
  input_schema: JsonObject('JSON Schema of the input, `type: "object"` at the top.')
}, { additionalProperties: false })

export type ClientTool = Static<typeof ClientToolSchema>

/** The body of `POST /runs`. */
export const CreateRunSchema = Type.Object({
  input: Type.Optional(Type.String({ minLength: 1, description: 'The first user message. Give this or `messages`, not both.' })),
  messages: Type.Optional(Type.Array(MessageParamSchema, { minItems: 1, maxItems: 10_000, description: 'A Messages API history ending with a user message. Give this or `input`, not both.' })),
  tools: Type.Optional(Type.Array(ToolNameSchema, { maxItems: 128, uniqueItems: true, default: [], description: 'Names of registered tools this run may use; a registered MCP server\'s tool as `<server>__<tool>`.' })),
  mcp_servers: Type.Optional(Type.Array(Type.String({ pattern: '^[a-zA-Z0-9_-]{1,32}$' }), { maxItems: 32, uniqueItems: true, description: 'Registered MCP servers whose every offered tool this run may use (SPEC §11). The run keeps the tool definitions it started with.' })),
  model: Type.Optional(Type.String({ minLength: 1, maxLength: 256, pattern: NO_NUL, description: 'Defaults to DEFAULT_MODEL.' })),
  system: Type.Optional(SystemSchema),
  max_tokens: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, default: 4096, description: 'Per model call.' })),
  max_steps: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'Model calls at the most. Default 25, or RUN_MAX_STEPS if lower; more than RUN_MAX_STEPS is refused.' })),
  timeout_ms: Type.Optional(Type.Integer({ minimum: 1000, maximum: 2_147_483_647, description: 'Deadline of the whole run, from its creation. Default 600000 (10 minutes), or RUN_MAX_TIMEOUT_MS if lower; more than RUN_MAX_TIMEOUT_MS is refused.' })),
  tool_choice: Type.Optional(ToolChoiceSchema),
  thinking: Type.Optional(ThinkingSchema),
  temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
  top_p: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
  top_k: Type.Optional(Type.Integer({ minimum: 0 })),
  stop_sequences: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { maxItems: 16 })),
  disable_parallel_tool_use: Type.Optional(Type.Boolean({ default: false, description: 'Passed to the model as `tool_choice.disable_parallel_tool_use`.' })),
  parallelism: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024, default: 64, description: 'Most tool calls of this run in flight at once.' })),
  metadata: Type.Optional(MetadataSchema),
  client_tools: Type.Optional(Type.Array(ClientToolSchema, { maxItems: 128, description: 'Tools the caller runs itself: a step that calls one stops in `requires_action` until POST /runs/{id}/tool_outputs.' })),
  require_approval: Type.Optional(Type.Array(ToolNameSchema, { maxItems: 128, uniqueItems: true, description: 'Names of this run\'s tools (registered or MCP) whose every call waits for a reviewer\'s decision (POST /runs/{id}/approvals), as a tool with `approval: "always"` does.' })),
  callback_url: Type.Optional(Type.String({ minLength: 1, maxLength: 2048, description: 'Receives the final run object, signed with the tenant\'s callback secret (POST /callbacks/rotate-secret), retried with backoff.' })),
  background: Type.Optional(Type.Boolean({ default: false, description: '`true`: answer 202 at once; poll GET /runs/{id}.' })),
  stream: Type.Optional(Type.Boolean({ default: false, description: '`true`: answer with Server-Sent Events, one per event, ending after the last.' })),
  budget: Type.Optional(Type.Object({
    max_cost_usd: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1_000_000, description: 'Most the run\'s model calls may cost, in USD, at the price table\'s prices. Needs a model with a price.' })),
    max_input_tokens: Type.Optional(Type.Integer({ minimum: 1, description: 'Most input tokens (cache writes and reads included) the run\'s model calls may take, summed.' })),
    max_output_tokens: Type.Optional(Type.Integer({ minimum: 1, description: 'Most output tokens the run\'s model calls may produce, summed.' }))
  }, { additionalProperties: false, description: 'Checked before every model call against what the run spent plus an estimate of the call: when it cannot be afforded, the run ends `completed` with `stop_reason: "budget_exhausted"`, every tool call answered. `run.budget_warning` at 80% of a limit.' })),
  batch_tool: Type.Optional(Type.Boolean({ description: 'Offer the model `batch_tool`, which calls several of the run\'s tools at once, each as a call of its own (SPEC §14). Default: BATCH_TOOL_DEFAULT (false).' })),
  output_config: Type.Optional(Type.Object({
    effort: Type.Optional(Type.Union([Type.Literal('low'), Type.Literal('medium'), Type.Literal('high'), Type.Literal('xhigh'), Type.Literal('max'), Type.Null()])),
    format: Type.Optional(Type.Union([Type.Object({
      type: Type.Literal('json_schema'),
      schema: JsonObject('JSON Schema the answer\'s text follows.')
    }, { additionalProperties: false }), Type.Null()]))
  }, { additionalProperties: false, description: 'Passed to the Messages API: `effort` (`low` … `max`) and a structured output `format`.' })),
  context_management: Type.Optional(Type.Object({
    edits: Type.Optional(Type.Array(Type.Object({ type: Type.String({ minLength: 1 }) }, { additionalProperties: true }), { maxItems: 8 }))
  }, { additionalProperties: false, description: 'Passed to the Messages API as it is (clearing old tool results or thinking, compaction), with its beta header.' })),
  tool_search: Type.Optional(Type.Union([Type.Literal('regex'), Type.Literal('bm25')], { description: 'Add the Messages API\'s tool search tool (regex or BM25), which finds tools with `defer_loading` for the model.' })),
  cache: Type.Optional(Type.Union([Type.Literal('auto'), Type.Literal('off')], { default: 'auto', description: '`auto`: each model request carries cache breakpoints on the last tool and at the end of the history; `off`: none but the caller\'s own.' })),
  code_execution: Type.Optional(Type.Boolean({ default: false, description: '`true`: add the Messages API\'s code execution tool (programmatic tool calling, SPEC §16): the model\'s code may call the run\'s tools registered with `callers` listing `code`, each call dispatched as any other. A model known not to take it is a 400 RUN_ERR_MODEL_UNSUPPORTED.' }))
}, { additionalProperties: false, title: 'CreateRun' })

export type CreateRun = Static<typeof CreateRunSchema>

/** What a run was started with, as the engine keeps it. */
export interface RunParams {
  readonly tools: string[]
  readonly system?: CreateRun['system']
  readonly max_tokens: number
  readonly max_steps: number
  readonly timeout_ms: number
  readonly tool_choice?: CreateRun['tool_choice']
  readonly thinking?: CreateRun['thinking']
  readonly temperature?: number
  readonly top_p?: number
  readonly top_k?: number
  readonly stop_sequences?: string[]
  readonly disable_parallel_tool_use: boolean
  readonly parallelism: number
  readonly client_tools?: ClientTool[]
  /** Tools whose every call waits for a reviewer in this run (SPEC §12), beside those with `approval: "always"`. */
  readonly require_approval?: string[]
  /** The run's budget (SPEC §17), checked by its driver's budget guard (src/cost/). */
  readonly budget?: CreateRun['budget']
  /** The MCP tools the run may use, as they were when it started (SPEC §11). */
  readonly mcp_tools?: PinnedMcpTool[]
  /** Whether the model is offered `batch_tool` (SPEC §14); absent in runs made before it: false. */
  readonly batch_tool?: boolean
  /** Passed through to the Messages API (SPEC §15). */
  readonly output_config?: CreateRun['output_config']
  readonly context_management?: CreateRun['context_management']
  readonly tool_search?: CreateRun['tool_search']
  /** `off`: no cache breakpoints of Switchboard's own; absent (runs made before it) is `auto`. */
  readonly cache?: CreateRun['cache']
  /** Whether the model is given the API's code execution tool (SPEC §16); absent: false. */
  readonly code_execution?: boolean
  /** Where each call's result_url points (SPEC §13): PUBLIC_URL, or the scheme and host the run was created through. */
  readonly result_base?: string
}

const UsageSchema = Type.Object({
  input_tokens: Type.Integer(),
  output_tokens: Type.Integer(),
  cache_creation_input_tokens: Type.Integer(),
  cache_read_input_tokens: Type.Integer(),
  cache_creation: Type.Object({
    ephemeral_5m_input_tokens: Type.Integer(),
    ephemeral_1h_input_tokens: Type.Integer()
  }, { description: 'Cache writes by lifetime.' }),
  cost_usd: Type.Union([Type.Number(), Type.Null()], { description: 'What the model calls cost in USD, at the price table\'s prices; null when the model has no price (never a guess).' })
}, { description: 'Summed over every model call of the run.' })

export const StopReasonSchema = Type.Union([
  Type.Literal('end_turn'), Type.Literal('max_tokens'), Type.Literal('stop_sequence'), Type.Literal('refusal'),
  Type.Literal('max_steps'), Type.Literal('timeout'), Type.Literal('cancelled'), Type.Literal('error'), Type.Literal('budget_exhausted'), Type.Null()
])

export type StopReason = Exclude<Static<typeof StopReasonSchema>, null>

/** The run object (SPEC §4.2). */
export const RunSchema = Type.Object({
  id: Type.String({ description: '`run_…`' }),
  object: Type.Literal('run'),
  status: RunStatusSchema,
  stop_reason: StopReasonSchema,
  model: Type.String(),
  created_at: ISODate,
  started_at: NullableISODate,
  completed_at: NullableISODate,
  metadata: Type.Record(Type.String(), Type.String()),
  output: Type.Array(Type.Unsafe<Record<string, unknown>>({ type: 'object', additionalProperties: true }), { description: 'The content blocks of the last assistant message.' }),
  output_text: Type.String({ description: 'The text of `output`.' }),
  steps: Type.Integer({ description: 'Model calls made.' }),
  tool_calls: Type.Object({ total: Type.Integer(), errors: Type.Integer() }),
  usage: UsageSchema,
  required_action: Type.Union([Type.Unsafe<Record<string, unknown>>({ type: 'object', additionalProperties: true }), Type.Null()]),
  pending_tool_calls: Type.Union([Type.Array(Type.Object({
    tool_use_id: Type.String(),
    name: Type.String(),
    deadline: ISODate
  })), Type.Null()], { description: 'While the run (`running`) waits, held by no replica, for results its tools will post to `result_url` (SPEC §13): those calls, and when each stops waiting. Null otherwise.' }),
  error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
  container: Type.Union([Type.Object({
    id: Type.String({ description: 'The container\'s id, as the Messages API names it.' }),
    expires_at: Type.Union([ISODate, Type.Null()], { description: 'When the container expires unless a request of the run uses it, from the last model answer (the API moves it on with each request).' })
  }), Type.Null()], { description: 'With `code_execution` (SPEC §16): the Messages API container the model\'s code runs in, sent with each request of the run after the first answer that named it. Null until then, and for a run without code execution.' }),
  callback: Type.Union([Type.Object({
    url: Type.String(),
    status: Type.Union([Type.Literal('waiting'), Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')], { description: '`waiting` until the run ends, then `pending` until delivered (or `failed` after the last attempt).' }),
    attempts: Type.Integer(),
    last_error: Type.Union([Type.String(), Type.Null()])
  }), Type.Null()], { description: 'Where the final run object goes, and how that went; null without `callback_url`.' }),
  timeline_url: Type.Union([Type.String(), Type.Null()], { description: 'The run\'s timeline page (GET /runs/{id}/timeline), signed so that a browser opens it without the API key, for an hour and for this run only. A path on this service unless PUBLIC_URL is set. Null in run objects inside events and callbacks: read the run for a fresh one.' }),
  messages: Type.Optional(Type.Array(Type.Unsafe<Record<string, unknown>>({ type: 'object', additionalProperties: true }), { description: 'With `?include=messages`: the whole transcript as sent to the model.' }))
}, { $id: 'Run', title: 'Run' })

export type Run = Static<typeof RunSchema>

/** One event of a run (SPEC §4.4). */
export const EventSchema = Type.Object({
  id: Type.Integer({ description: 'Numbered 1, 2, 3… within the run.' }),
  type: Type.String(),
  run_id: Type.String(),
  at: ISODate,
  data: Type.Unsafe<Record<string, unknown>>({ type: 'object', additionalProperties: true })
}, { $id: 'RunEvent', title: 'RunEvent' })

export type RunEvent = Static<typeof EventSchema>

export const RunIdParams = Type.Object({ id: Type.String({ pattern: '^run_[0-9A-Z]{26}$', description: '`run_…`' }) })

/** `GET /runs`: pages, a status filter, and `metadata[key]=value` filters. */
export const ListRunsQuerySchema = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
  after: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
  status: Type.Optional(RunStatusSchema)
}, {
  additionalProperties: false,
  patternProperties: { '^metadata\\[[a-zA-Z0-9_.:-]{1,64}\\]$': Type.String({ maxLength: 512, pattern: NO_NUL }) },
  // limit, after, status, and a filter for each of the 16 metadata keys a run can have at most.
  maxProperties: 19,
  description: 'Filter on metadata with `metadata[key]=value` (up to 16, as many as a run\'s metadata can hold).'
})

export const GetRunQuerySchema = Type.Object({
  include: Type.Optional(Type.Literal('messages', { description: '`messages`: add the whole transcript.' }))
}, { additionalProperties: false })

// What a tool_result may hold, checked as strictly as the Messages API checks it: a caller's typo
// is a 400 here, not a failed model call later. What a schema cannot say (text that is only
// spaces; cache_control's shape and the request's limit of four breakpoints, counted with those
// the run already has) is checked by checkToolOutputs and resumeWrite (src/runs/waiting.ts), with
// a RUN_ERR_INVALID_TOOL_OUTPUTS that names the output and the block.
const CacheControlSchema = Type.Unsafe<{ type: 'ephemeral', ttl?: '5m' | '1h' } | null>({
  description: 'A cache breakpoint: `{ "type": "ephemeral" }`, with an optional `ttl` of "5m" or "1h". A model request holds at most four, the run\'s own included.'
})

const ToolResultBlockSchema = Type.Union([
  Type.Object({ type: Type.Literal('text'), text: Type.String({ minLength: 1 }), cache_control: Type.Optional(CacheControlSchema) }, { additionalProperties: false }),
  Type.Object({
    type: Type.Literal('image'),
    source: Type.Union([
      Type.Object({ type: Type.Literal('base64'), media_type: Type.Union([Type.Literal('image/png'), Type.Literal('image/jpeg'), Type.Literal('image/gif'), Type.Literal('image/webp')]), data: Type.String({ minLength: 1 }) }, { additionalProperties: false }),
      Type.Object({ type: Type.Literal('url'), url: Type.String({ pattern: '^https?://' }) }, { additionalProperties: false })
    ])
  }, { additionalProperties: false })
])

/** The body of `POST /runs/{id}/tool_outputs`. */
export const ToolOutputsSchema = Type.Object({
  tool_outputs: Type.Array(Type.Object({
    tool_use_id: Type.String({ minLength: 1, maxLength: 256 }),
    content: Type.Optional(Type.Union([Type.String(), Type.Array(ToolResultBlockSchema, { maxItems: 100 })], { description: 'A string, or `text` and `image` blocks, as in a tool_result.' })),
    is_error: Type.Optional(Type.Boolean())
  }, { additionalProperties: false }), { minItems: 1, maxItems: 128 }),
  background: Type.Optional(Type.Boolean({ default: false, description: '`true`: answer 202 at once.' })),
  stream: Type.Optional(Type.Boolean({ default: false, description: '`true`: answer with the run\'s next events as Server-Sent Events.' }))
}, { additionalProperties: false, title: 'ToolOutputs' })

export type ToolOutputs = Static<typeof ToolOutputsSchema>

/** The body of `POST /runs/{run_id}/tool_calls/{tool_use_id}/result` (SPEC §13): a §6 answer. */
export const ToolCallResultSchema = Type.Object({
  content: Type.Union([Type.String(), Type.Array(Type.Unsafe<Record<string, unknown>>({ type: 'object', additionalProperties: true }), { maxItems: 100 })], { description: 'A string, or `text` and `image` blocks, as a webhook\'s answer (SPEC §6).' }),
  is_error: Type.Optional(Type.Boolean({ description: '`true`: the call failed; the model is told so.' }))
}, { additionalProperties: false, title: 'ToolCallResult' })

export type ToolCallResult = Static<typeof ToolCallResultSchema>

export const ToolCallParams = Type.Object({
  id: Type.String({ pattern: '^run_[0-9A-Z]{26}$', description: 'The run, `run_…`' }),
  tool_use_id: Type.String({ minLength: 1, maxLength: 256, description: 'The call\'s `tool_use_id`, as in its webhook body.' })
})

/** The body of `POST /runs/{id}/approvals` (SPEC §12). */
export const ApprovalsSchema = Type.Object({
  decisions: Type.Array(Type.Object({
    tool_use_id: Type.String({ minLength: 1, maxLength: 256 }),
    approve: Type.Boolean({ description: '`true`: the call is made; `false`: it is not, and the model is told the reviewer denied it.' }),
    reason: Type.Optional(Type.String({ maxLength: 2000, pattern: NO_NUL, description: 'Why: in the event, and for a denial in the result the model reads.' }))
  }, { additionalProperties: false }), { minItems: 1, maxItems: 128, description: 'Some or all of the calls in `required_action`; the step goes on once every call is decided.' }),
  background: Type.Optional(Type.Boolean({ default: false, description: '`true`: answer 202 at once.' })),
  stream: Type.Optional(Type.Boolean({ default: false, description: '`true`: answer with the run\'s next events as Server-Sent Events.' }))
}, { additionalProperties: false, title: 'Approvals' })

export type Approvals = Static<typeof ApprovalsSchema>

/** What `GET /callbacks` shows: never the secret itself. */
export const CallbackSettingsSchema = Type.Object({
  object: Type.Literal('callback_settings'),
  has_signing_secret: Type.Boolean(),
  previous_secret_expires_at: Type.Union([ISODate, Type.Null()])
}, { title: 'CallbackSettings' })

export const CallbackSecretSchema = Type.Object({
  ...CallbackSettingsSchema.properties,
  signing_secret: Type.String({ description: 'Standard Webhooks secret (`whsec_…`) that signs completion callbacks. Shown this once.' })
}, { title: 'CallbackSecret' })
