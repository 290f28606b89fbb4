import Type, { type Static } from 'typebox'

/** `GET /usage`: the period and the grouping. */
export const UsageQuerySchema = Type.Object({
  from: Type.Optional(Type.String({ minLength: 10, maxLength: 40, description: 'Start of the period, included: a date (`2026-12-01`, midnight UTC) or a date and time with its offset. Default: 30 days before `to`.' })),
  to: Type.Optional(Type.String({ minLength: 10, maxLength: 40, description: 'End of the period, excluded, in the same form. Default: now. At most 366 days after `from`.' })),
  group_by: Type.Union([Type.Literal('day'), Type.Literal('model'), Type.Literal('tool')], { default: 'day', description: '`day` (UTC), `model`, or `tool` (tool calls only: tokens and cost belong to model calls).' })
}, { additionalProperties: false })

export type UsageQuery = Static<typeof UsageQuerySchema>

const UsageLineFields = {
  runs: Type.Integer({ description: 'Runs that made a model call or a tool call in the group.' }),
  model_calls: Type.Integer(),
  input_tokens: Type.Integer(),
  output_tokens: Type.Integer(),
  cache_creation_input_tokens: Type.Integer(),
  cache_creation: Type.Object({ ephemeral_5m_input_tokens: Type.Integer(), ephemeral_1h_input_tokens: Type.Integer() }, { description: 'Cache writes by lifetime.' }),
  cache_read_input_tokens: Type.Integer(),
  cost_usd: Type.Number({ description: 'What the model calls cost, at the price table\'s prices; calls of models without a price are not in it (see unpriced_model_calls).' }),
  unpriced_model_calls: Type.Integer({ description: 'Model calls whose model has no price: their cost is unknown, not zero.' }),
  tool_calls: Type.Integer({ description: 'Tool calls answered in the runs\' steps (caller-run tools aside).' }),
  errors: Type.Integer({ description: 'Tool calls answered with an is_error result.' })
}

/** What `GET /usage` answers: a tenant's usage in a period, by group, and the period's totals. */
export const UsageReportSchema = Type.Object({
  object: Type.Literal('usage'),
  from: Type.String(),
  to: Type.String(),
  group_by: Type.Union([Type.Literal('day'), Type.Literal('model'), Type.Literal('tool')]),
  data: Type.Array(Type.Object({
    key: Type.String({ description: 'The day (`2026-12-06`), the model or the tool.' }),
    ...UsageLineFields
  })),
  total: Type.Object(UsageLineFields)
}, { title: 'UsageReport' })
