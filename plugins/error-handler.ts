import fp from 'fastify-plugin'
import { STATUS_CODES } from 'node:http'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { AppError, type ErrorCode } from '../src/errors.js'
import type { ErrorBody } from '../src/schemas/common.js'
import { describeValidation, forbiddenKeyError, type ValidationIssue } from '../src/schemas/validation.js'

// Fastify's own client errors, as our stable codes.
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'REQUEST_ERR_INVALID_JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'REQUEST_ERR_INVALID_JSON',
  FST_ERR_CTP_BODY_TOO_LARGE: 'REQUEST_ERR_BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'REQUEST_ERR_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'REQUEST_ERR_BAD_REQUEST'
}

const FRIENDLY_MESSAGES: Partial<Record<ErrorCode, (app: FastifyInstance) => string>> = {
  REQUEST_ERR_INVALID_JSON: () => 'The body is not valid JSON: send a JSON document with `content-type: application/json`.',
  REQUEST_ERR_BODY_TOO_LARGE: (app) => `The body is larger than ${app.config.BODY_LIMIT_BYTES} bytes (BODY_LIMIT_BYTES): send less, or raise the limit.`,
  REQUEST_ERR_UNSUPPORTED_MEDIA_TYPE: () => 'Send the body as JSON with `content-type: application/json`.'
}

type JsonBodyParser = (request: FastifyRequest, body: string, done: (err: Error | null, body?: unknown) => void) => void

/**
 * Fastify's JSON parser, refusing `__proto__` and a `constructor` that holds a `prototype` as it
 * does, but saying so: Fastify answers those bodies as "not valid JSON", which sends a caller
 * looking for a syntax error that is not there.
 */
function jsonBodyParser (fastifyParser: JsonBodyParser): JsonBodyParser {
  return (request, body, done) => {
    fastifyParser(request, body, (err, value) => {
      if (err === null) done(null, value)
      else done(forbiddenKeyError(body) ?? err, undefined)
    })
  }
}

function send (reply: FastifyReply, request: FastifyRequest, statusCode: number, code: string, message: string, headers: Record<string, string> = {}): FastifyReply {
  const body: ErrorBody = { statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message, requestId: String(request.id) }
  return reply.code(statusCode).headers(headers).type('application/json; charset=utf-8').send(body)
}

/**
 * Fastify's own refusals of a URL it cannot route (a broken percent-encoding, a path parameter
 * longer than maxParamLength), given to Fastify as its `frameworkErrors` option: they come before
 * any route or hook, so they are answered here, in the same shape as every other error.
 */
export function answerFrameworkError (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const tooLong = error.code === 'FST_ERR_MAX_PARAM_LENGTH'
  const message = tooLong
    ? 'A path parameter of the URL is too long to be an id or a name: check the URL.'
    : 'The URL is not valid: a part of its path has a broken percent-encoding (UTF-8 cut short, or half of a UTF-16 surrogate pair). Encode each part as UTF-8.'
  reply.header('x-request-id', request.id)
  send(reply, request, tooLong ? 414 : 400, tooLong ? 'REQUEST_ERR_URL_TOO_LONG' : 'REQUEST_ERR_BAD_REQUEST', message)
}

/**
 * One shape for every error answer, `{ statusCode, code, error, message, requestId }`: our own
 * errors, Fastify's validation and parsing errors (a body refused for a `__proto__` or
 * `constructor` key among them: see jsonBodyParser), unknown routes, and anything unexpected, which
 * is logged in full and answered as a bare 500 that leaks nothing.
 */
export default fp(async function errorHandlerPlugin (app: FastifyInstance) {
  const fastifyJson = app.getDefaultJsonParser('error', 'error') as JsonBodyParser
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, jsonBodyParser(fastifyJson))

  app.setNotFoundHandler(async (request, reply) => send(reply, request, 404, 'ROUTE_ERR_NOT_FOUND',
    `No route ${request.method} ${request.url.split('?')[0]}: see /docs for the API.`))

  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    if (error instanceof AppError) {
      if (error.statusCode >= 500 && error.cause !== undefined) request.log.error({ err: error }, 'request failed')
      return send(reply, request, error.statusCode, error.code, error.message, { ...error.headers })
    }
    if (error.validation !== undefined) {
      const message = describeValidation(error.validationContext ?? 'request', error.validation as ValidationIssue[])
      return send(reply, request, 400, 'REQUEST_ERR_VALIDATION', `${message}.`)
    }
    const statusCode = error.statusCode ?? 500
    if (statusCode >= 400 && statusCode < 500) {
      const code = (error.code !== undefined ? FASTIFY_CODES[error.code] : undefined) ??
        (statusCode === 429 ? 'REQUEST_ERR_RATE_LIMITED' : statusCode === 404 ? 'ROUTE_ERR_NOT_FOUND' : 'REQUEST_ERR_BAD_REQUEST')
      const message = FRIENDLY_MESSAGES[code]?.(app) ?? error.message
      return send(reply, request, statusCode, code, message)
    }
    request.log.error({ err: error }, 'request failed')
    return send(reply, request, 500, 'INTERNAL_ERR', 'Something went wrong on our side. It has been logged; quote the requestId if you report it.')
  })
}, { name: 'error-handler', dependencies: ['config'] })
