import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { AppError } from '../src/errors.js'
import { OPEN_MODE_TENANT } from '../src/tenants/api-keys.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hook for routes that need an API key: sets `request.tenantId` or answers 401. */
    authenticate: (request: FastifyRequest) => Promise<void>
  }
  interface FastifyRequest {
    tenantId: string
    /** Set when a signed timeline link, not a key, let the request in: the run it was for. */
    linkRunId: string
  }
}

const BEARER = /^Bearer\s+(\S+)\s*$/i

/**
 * Decorates the app with `authenticate`. The hook is not global: route plugins that need a key
 * add it to their own encapsulated context, so /healthz, /readyz and /docs stay open.
 */
export default fp(async function authPlugin (app: FastifyInstance) {
  const keyring = app.config.keyring
  app.decorateRequest('tenantId', '')
  app.decorateRequest('linkRunId', '')

  app.decorate('authenticate', async function authenticate (request: FastifyRequest) {
    if (keyring.size === 0) {
      request.tenantId = OPEN_MODE_TENANT
      return
    }
    const header = request.headers.authorization
    if (header === undefined || header === '') {
      throw new AppError('AUTH_ERR_MISSING_KEY', 'No API key: send it as the header `Authorization: Bearer <api key>`.')
    }
    const match = BEARER.exec(header)
    if (match === null) {
      throw new AppError('AUTH_ERR_INVALID_KEY', 'The Authorization header is not of the form `Bearer <api key>`.')
    }
    const tenantId = keyring.authenticate(match[1]!)
    if (tenantId === null) {
      throw new AppError('AUTH_ERR_INVALID_KEY', 'The API key is not valid: check that it is one of the keys configured in API_KEYS.')
    }
    request.tenantId = tenantId
    request.log = request.log.child({ tenantId })
  })
}, { name: 'auth', dependencies: ['config'] })
