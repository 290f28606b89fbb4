import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { commonErrors } from '../../src/schemas/common.js'
import { UsageQuerySchema, UsageReportSchema } from '../../src/schemas/usage.js'

/** A tenant's usage: SPEC §17. */
export default async function usageRoutes (fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addHook('onRequest', app.authenticate)

  app.get('/usage', {
    schema: {
      tags: ['usage'],
      operationId: 'getUsage',
      summary: 'What the tenant\'s runs used and cost',
      description: 'Tokens by kind, cost, runs, model calls, tool calls and errors of the tenant\'s runs in a period (`from` included, `to` excluded), grouped by UTC day, model or tool, with the period\'s totals. Read from storage, so every replica answers the same.',
      querystring: UsageQuerySchema,
      response: { 200: UsageReportSchema, ...commonErrors }
    }
  }, async (request) => await app.engine.cost.report(request.tenantId, { from: request.query.from, to: request.query.to, groupBy: request.query.group_by }))
}
