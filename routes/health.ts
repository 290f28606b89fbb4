import type { FastifyInstance } from 'fastify'
import Type from 'typebox'
import { AppError } from '../src/errors.js'

const StatusSchema = Type.Object({ status: Type.String() })
const errors = { 503: Type.Ref('Error') }

/** Probes for orchestrators; no API key needed. */
export default async function healthRoutes (app: FastifyInstance) {
  // Orchestrators poll these every few seconds: log them only when something is wrong.
  app.get('/healthz', {
    logLevel: 'warn',
    // Alive while draining too: an orchestrator must not kill a process that is finishing its steps.
    config: { answersWhileDraining: true },
    schema: { tags: ['health'], operationId: 'getHealth', summary: 'The process is alive', security: [], response: { 200: StatusSchema } }
  }, async () => ({ status: 'ok' }))

  app.get('/readyz', {
    logLevel: 'warn',
    // While draining, the lifecycle plugin answers it SERVICE_ERR_DRAINING, as every other route.
    schema: {
      tags: ['health'],
      operationId: 'getReadiness',
      summary: 'Ready for traffic: storage answers and the process is not shutting down',
      security: [],
      response: { 200: StatusSchema, ...errors }
    }
  }, async () => {
    try {
      await app.store.ping()
    } catch (err) {
      throw new AppError('SERVICE_ERR_STORE_UNAVAILABLE', 'Storage does not answer.', { cause: err })
    }
    return { status: 'ready' }
  })
}
