/**
 * Every error the client throws is a SwitchboardError. An answer of the API that is not a 2xx is an
 * APIError (a subclass per status) carrying the body's stable `code`: branch on it, never on
 * `message`. No answer at all is an APIConnectionError.
 */
export class SwitchboardError extends Error {
  override name = 'SwitchboardError'
}

/** The body of every error answer of the API. */
export interface ErrorBody {
  readonly statusCode: number
  readonly code: string
  readonly error: string
  readonly message: string
  readonly requestId: string
}

export class APIError extends SwitchboardError {
  override name = 'APIError'
  /** The HTTP status. */
  readonly statusCode: number
  /** The API's stable code (`RUN_ERR_NOT_FOUND`), or `HTTP_<status>` for an answer not in the API's error shape (a proxy's, say). */
  readonly code: string
  /** The request's id (the body's `requestId`, or the `x-request-id` header): quote it when reporting a problem. */
  readonly requestId: string | null
  /** The error body as answered (parsed JSON, or the text). */
  readonly body: unknown
  readonly headers: Headers

  constructor (statusCode: number, body: unknown, headers: Headers) {
    const parsed = isErrorBody(body) ? body : null
    const text = typeof body === 'string' ? body.slice(0, 500) : ''
    super(parsed?.message ?? `HTTP ${statusCode}${text === '' ? '' : `: ${text}`}`)
    this.statusCode = statusCode
    this.code = parsed?.code ?? `HTTP_${statusCode}`
    this.requestId = parsed?.requestId ?? headers.get('x-request-id')
    this.body = body
    this.headers = headers
  }

  /** The error of the right class for an answer's status. */
  static of (statusCode: number, body: unknown, headers: Headers): APIError {
    const Class = statusCode === 400
      ? BadRequestError
      : statusCode === 401
        ? AuthenticationError
        : statusCode === 403
          ? PermissionDeniedError
          : statusCode === 404
            ? NotFoundError
            : statusCode === 409
              ? ConflictError
              : statusCode === 429
                ? RateLimitError
                : statusCode === 503
                  ? ServiceUnavailableError
                  : statusCode >= 500 ? InternalServerError : APIError
    return new Class(statusCode, body, headers)
  }
}

export class BadRequestError extends APIError { override name = 'BadRequestError' }
export class AuthenticationError extends APIError { override name = 'AuthenticationError' }
export class PermissionDeniedError extends APIError { override name = 'PermissionDeniedError' }
export class NotFoundError extends APIError { override name = 'NotFoundError' }
export class ConflictError extends APIError { override name = 'ConflictError' }
/** A 429: the client already waited `retry-after` and retried `maxRetries` times. */
export class RateLimitError extends APIError { override name = 'RateLimitError' }
export class InternalServerError extends APIError { override name = 'InternalServerError' }
/** A 503 (a replica shutting down, storage down): the client already retried `maxRetries` times. */
export class ServiceUnavailableError extends InternalServerError { override name = 'ServiceUnavailableError' }

/** No answer: the connection failed, or broke before the answer was read. */
export class APIConnectionError extends SwitchboardError {
  override name = 'APIConnectionError'
  readonly code: string = 'CONNECTION_ERROR'
  constructor (message = 'Could not reach Switchboard.', options?: { cause?: unknown }) {
    super(message, options)
  }
}

/** No answer within the request's `timeout`. */
export class APIConnectionTimeoutError extends APIConnectionError {
  override name = 'APIConnectionTimeoutError'
  override readonly code = 'CONNECTION_TIMEOUT'
  constructor (message = 'Switchboard did not answer in time.', options?: { cause?: unknown }) {
    super(message, options)
  }
}

/** The caller's own AbortSignal ended the request. */
export class APIUserAbortError extends SwitchboardError {
  override name = 'APIUserAbortError'
  readonly code = 'ABORTED'
  constructor (message = 'The request was aborted.') {
    super(message)
  }
}

function isErrorBody (body: unknown): body is ErrorBody {
  return typeof body === 'object' && body !== null &&
    typeof (body as ErrorBody).code === 'string' && typeof (body as ErrorBody).message === 'string'
}
