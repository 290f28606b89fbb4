/**
 * Every error code the API can answer, with its HTTP status. Codes are stable and never reused:
 * callers branch on them. Add new ones at the end of their area.
 */
export const ERROR_CODES = {
  // Requests in general
  REQUEST_ERR_VALIDATION: 400,
  REQUEST_ERR_INVALID_JSON: 400,
  REQUEST_ERR_BAD_REQUEST: 400,
  REQUEST_ERR_INVALID_CURSOR: 400,
  REQUEST_ERR_BODY_TOO_LARGE: 413,
  REQUEST_ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  REQUEST_ERR_RATE_LIMITED: 429,
  ROUTE_ERR_NOT_FOUND: 404,
  REQUEST_ERR_URL_TOO_LONG: 414,
  REQUEST_ERR_FORBIDDEN_KEY: 400,
  // Authentication
  AUTH_ERR_MISSING_KEY: 401,
  AUTH_ERR_INVALID_KEY: 401,
  AUTH_ERR_LINK_EXPIRED: 401,
  AUTH_ERR_INVALID_LINK: 401,
  AUTH_ERR_NO_METRICS_TOKEN: 401,
  // Tools
  TOOL_ERR_NOT_FOUND: 404,
  TOOL_ERR_INVALID_SCHEMA: 400,
  TOOL_ERR_INVALID_URL: 400,
  TOOL_ERR_URL_NOT_ALLOWED: 400,
  TOOL_ERR_READ_ONLY: 409,
  TOOL_ERR_CACHE_NOT_READ_ONLY: 400,
  TOOL_ERR_INVALID_WINDOW: 400,
  TOOL_ERR_RESERVED_NAME: 400,
  TOOL_ERR_INVALID_EXAMPLE: 400,
  TOOL_ERR_CALLERS_NOT_ALLOWED: 400,
  // MCP servers (SPEC §11)
  MCP_ERR_NOT_FOUND: 404,
  MCP_ERR_UNREACHABLE: 400,
  MCP_ERR_INVALID_URL: 400,
  MCP_ERR_URL_NOT_ALLOWED: 400,
  MCP_ERR_READ_ONLY: 409,
  MCP_ERR_UNKNOWN_TOOL: 400,
  // Runs
  RUN_ERR_NOT_FOUND: 404,
  RUN_ERR_UNKNOWN_TOOL: 400,
  RUN_ERR_INVALID_REQUEST: 400,
  RUN_ERR_INVALID_MESSAGES: 400,
  RUN_ERR_IDEMPOTENCY_CONFLICT: 409,
  RUN_ERR_NOT_ACTIVE: 409,
  RUN_ERR_STALLED: 503,
  RUN_ERR_NOT_WAITING: 409,
  RUN_ERR_INVALID_TOOL_OUTPUTS: 400,
  RUN_ERR_INVALID_APPROVALS: 400,
  RUN_ERR_CALLBACK_URL: 400,
  RUN_ERR_NO_CALLBACK_SECRET: 400,
  RUN_ERR_TOO_MANY_ACTIVE: 429,
  RUN_ERR_TOO_MANY_STREAMS: 429,
  RUN_ERR_BUDGET_EXHAUSTED: 429,
  RUN_ERR_MODEL_UNSUPPORTED: 400,
  // Results posted later by tools that answered 202 (SPEC §13)
  TOOL_RESULT_ERR_BAD_SIGNATURE: 401,
  TOOL_RESULT_ERR_NOT_FOUND: 404,
  TOOL_RESULT_ERR_NOT_PENDING: 409,
  TOOL_RESULT_ERR_INVALID: 400,
  // Usage and cost (SPEC §17)
  USAGE_ERR_INVALID_RANGE: 400,
  // The service itself
  SERVICE_ERR_DRAINING: 503,
  SERVICE_ERR_STORE_UNAVAILABLE: 503,
  SERVICE_ERR_MODEL_NOT_CONFIGURED: 503,
  INTERNAL_ERR: 500
} as const

export type ErrorCode = keyof typeof ERROR_CODES

/**
 * An error the API answers with its own status and stable code. The message is shown to the
 * caller as is: it says what was wrong and how to fix it, and never holds a secret.
 */
export class AppError extends Error {
  override name = 'AppError'
  readonly code: ErrorCode
  readonly statusCode: number
  /** Extra response headers, such as `retry-after`. */
  readonly headers: Readonly<Record<string, string>>

  constructor (code: ErrorCode, message: string, options: { cause?: unknown, headers?: Record<string, string> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.statusCode = ERROR_CODES[code]
    this.headers = options.headers ?? {}
  }
}

/** A setting that cannot be used; its message names the variable and what to do. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}
