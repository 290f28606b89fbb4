import Type, { type Static } from 'typebox'
import { ISODate, NO_NUL } from './common.js'

/** Any JSON object, typed as a record. */
export function JsonObject (description: string) {
  return Type.Unsafe<Record<string, unknown>>({ type: 'object', additionalProperties: true, description })
}

export const TOOL_NAME_PATTERN = '^[a-zA-Z0-9_-]{1,64}$'

export const ToolNameSchema = Type.String({ pattern: TOOL_NAME_PATTERN, description: 'What the model calls the tool: letters, digits, _ and -, at most 64.' })

const EFFECT_DESCRIPTION = 'Decides retries and crash recovery: only `read_only` and `idempotent` calls are retried after a timeout or a 408/429/502/503/504, or called again after a crash.'
function effectSchema (options: { default?: string } = {}) {
  return Type.Union([Type.Literal('read_only'), Type.Literal('idempotent'), Type.Literal('side_effecting')], { ...options, description: EFFECT_DESCRIPTION })
}

export const ToolEffectSchema = effectSchema()

/** The fields of a tool a caller writes (PUT /tools/{name}, TOOLS_FILE). */
export const ToolDefinitionSchema = Type.Object({
  description: Type.String({ minLength: 1, maxLength: 20_000, pattern: NO_NUL, description: 'Shown to the model: what the tool does and when to use it.' }),
  input_schema: JsonObject('JSON Schema (draft-07 or 2020-12) of the tool\'s input, `type: "object"` at the top. Shown to the model; every input is checked against it before a call.'),
  url: Type.String({ minLength: 1, maxLength: 2048, description: 'The webhook (http or https), checked against the egress policy now and on every call.' }),
  headers: Type.Optional(Type.Record(Type.String(), Type.String({ maxLength: 8192 }), { description: 'Sent with every call, e.g. the tool\'s own auth. Write-only: values are never returned or logged.', default: {} })),
  timeout_ms: Type.Optional(Type.Integer({ minimum: 1, maximum: 600_000, default: 30_000, description: 'Per attempt, from dispatch to the last byte of the response.' })),
  effect: Type.Optional(effectSchema({ default: 'side_effecting' })),
  parallel: Type.Optional(Type.Boolean({ default: true, description: '`false`: a call runs alone, after the calls listed before it and before those listed after it.' })),
  max_concurrency: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: 1_000_000 }), Type.Null()], { default: null, description: 'Most calls of this tool in flight at once in one replica; more wait their turn. null: no limit.' })),
  max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 10, default: 3, description: 'Attempts for a retryable failure.' }))
}, { additionalProperties: false })

export type ToolDefinition = Static<typeof ToolDefinitionSchema>

/** A tool as the API shows it: never its header values nor its secret. */
export const ToolSchema = Type.Object({
  object: Type.Literal('tool'),
  name: Type.String(),
  description: Type.String(),
  input_schema: JsonObject('JSON Schema of the tool\'s input.'),
  url: Type.String(),
  header_names: Type.Array(Type.String(), { description: 'The names of the configured headers; their values are write-only.' }),
  timeout_ms: Type.Integer(),
  effect: ToolEffectSchema,
  parallel: Type.Boolean(),
  max_concurrency: Type.Union([Type.Integer(), Type.Null()]),
  max_attempts: Type.Integer(),
  source: Type.Union([Type.Literal('api'), Type.Literal('file')], { description: '`file`: declared in TOOLS_FILE, so only the file can change or remove it.' }),
  has_signing_secret: Type.Boolean(),
  previous_secret_expires_at: Type.Union([ISODate, Type.Null()], { description: 'After a rotation: until when the previous secret also signs calls.' }),
  created_at: ISODate,
  updated_at: ISODate
}, { $id: 'Tool', title: 'Tool' })

export type Tool = Static<typeof ToolSchema>

/** A tool with its signing secret: the answer to a create and to a rotation, the only times it is shown. */
export const ToolWithSecretSchema = Type.Object({
  ...ToolSchema.properties,
  signing_secret: Type.String({ description: 'Standard Webhooks secret (`whsec_…`) to verify calls with. Shown this once: store it now.' })
}, { title: 'ToolWithSecret' })
