import Type, { type Static, type TSchema } from 'typebox'

/** The body of every error answer. */
export const ErrorSchema = Type.Object({
  statusCode: Type.Integer({ description: 'The HTTP status, repeated.' }),
  code: Type.String({ description: 'Stable, machine-readable: branch on this, never on `message`.', examples: ['RUN_ERR_NOT_FOUND'] }),
  error: Type.String({ description: 'The HTTP status text.' }),
  message: Type.String({ description: 'What was wrong and how to fix it.' }),
  requestId: Type.String({ description: 'Quote it when reporting a problem; it is also the `x-request-id` header.' })
}, { $id: 'Error', title: 'Error' })

export type ErrorBody = Static<typeof ErrorSchema>

/**
 * A pattern for text stored as is: PostgreSQL text cannot hold the NUL character, so it is refused
 * with a 400 on every storage backend alike (text inside JSON documents is escaped and may hold it).
 */
export const NO_NUL = '^[^\\u0000]*$'

/** The answers every authenticated route may give besides its own. */
export const commonErrors = {
  400: Type.Ref('Error'),
  401: Type.Ref('Error'),
  429: Type.Ref('Error'),
  500: Type.Ref('Error')
} as const

/** `limit` and `after` of every list. */
export const PageQuerySchema = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Items per page, 1 to 100.' }),
  after: Type.Optional(Type.String({ minLength: 1, maxLength: 512, description: 'The `next_cursor` of the previous page.' }))
})

/** `{ data, has_more, next_cursor }` around a list of `item`. */
export function ListOf<T extends TSchema> (item: T, title: string) {
  return Type.Object({
    object: Type.Literal('list'),
    data: Type.Array(item),
    has_more: Type.Boolean(),
    next_cursor: Type.Union([Type.String(), Type.Null()], { description: 'Pass as `after` for the next page; null on the last one.' })
  }, { title })
}

/** The answer of a DELETE. */
export function DeletedSchema (object: string) {
  return Type.Object({
    id: Type.String(),
    object: Type.Literal(object),
    deleted: Type.Literal(true)
  })
}

export const ISODate = Type.String({ format: 'date-time', description: 'ISO 8601, UTC.' })
export const NullableISODate = Type.Union([ISODate, Type.Null()])

/** ms since the epoch → ISO 8601 UTC; null stays null. */
export function isoDate (ms: number): string
export function isoDate (ms: number | null): string | null
export function isoDate (ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString()
}
