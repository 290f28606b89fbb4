import fp from 'fastify-plugin'
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { AppError } from '../src/errors.js'
import { Metrics } from '../src/telemetry/index.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

const BEARER = /^Bearer\s+(\S+)\s*$/i

/**
 * The app's Prometheus metrics (a registry of its own), served at GET /metrics in the Prometheus
 * text format. Metrics span every tenant, so a tenant's API key is not enough: with API_KEYS,
 * /metrics wants `Authorization: Bearer <METRICS_TOKEN>`, and answers 401 until METRICS_TOKEN is
 * set. In open mode without a token it is open, like everything else.
 */
export default fp(async function metricsPlugin (app: FastifyInstance) {
  const metrics = new Metrics()
  app.decorate('metrics', metrics)

  const token = app.config.METRICS_TOKEN
  const tokenDigest = token === undefined ? null : digest(token)
  const openMode = app.config.keyring.size === 0

  async function authorize (request: FastifyRequest): Promise<void> {
    if (tokenDigest === null) {
      if (openMode) return
      throw new AppError('AUTH_ERR_NO_METRICS_TOKEN', 'Metrics span every tenant, so an API key does not give access to them: set METRICS_TOKEN and scrape /metrics with `Authorization: Bearer <METRICS_TOKEN>`.')
    }
    const header = request.headers.authorization
    if (header === undefined || header === '') {
      throw new AppError('AUTH_ERR_MISSING_KEY', 'No token: scrape /metrics with the header `Authorization: Bearer <METRICS_TOKEN>`.')
    }
    const match = BEARER.exec(header)
    // Digests of equal length, compared in constant time: the answer's timing says nothing of the token.
    if (match === null || !timingSafeEqual(digest(match[1]!), tokenDigest)) {
      throw new AppError('AUTH_ERR_INVALID_KEY', 'The token is not METRICS_TOKEN: scrape /metrics with `Authorization: Bearer <METRICS_TOKEN>` (an API key is not accepted here).')
    }
  }

  // Scraped every few seconds: logged only when something is wrong.
  app.get('/metrics', { logLevel: 'warn', onRequest: authorize, schema: { hide: true } }, async (_request, reply) => {
    const text = await metrics.scrape()
    return await reply.type(metrics.contentType).send(text)
  })
}, { name: 'metrics', dependencies: ['config', 'error-handler'] })

function digest (value: string): Buffer {
  return createHash('sha256').update(value).digest()
}
