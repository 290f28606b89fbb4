import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { commonErrors, DeletedSchema, ListOf, PageQuerySchema } from '../../src/schemas/common.js'
import { ToolDefinitionSchema, ToolNameSchema, ToolSchema, ToolStatsQuerySchema, ToolStatsSchema, ToolWithSecretSchema } from '../../src/schemas/tools.js'
import { toToolObject } from '../../src/tools/tool-object.js'

const NameParams = Type.Object({ name: ToolNameSchema })
const errors = { ...commonErrors, 404: Type.Ref('Error'), 409: Type.Ref('Error') }

/** The tool registry: SPEC §3. */
export default async function toolRoutes (fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addHook('onRequest', app.authenticate)

  app.put('/tools/:name', {
    schema: {
      tags: ['tools'],
      operationId: 'putTool',
      summary: 'Create or replace a tool',
      description: 'Idempotent. A create answers 201 with `signing_secret`, shown this once; a replace answers 200 and keeps the secret. Headers are replaced as a whole.',
      params: NameParams,
      body: ToolDefinitionSchema,
      response: { 200: ToolSchema, 201: ToolWithSecretSchema, ...errors }
    }
  }, async (request, reply) => {
    const { tool, created, signingSecret } = await app.tools.put(request.tenantId, request.params.name, request.body)
    if (created) {
      request.log.info({ tool: tool.name }, 'tool created')
      return reply.code(201).send({ ...toToolObject(tool), signing_secret: signingSecret! })
    }
    request.log.info({ tool: tool.name }, 'tool replaced')
    return reply.code(200).send(toToolObject(tool))
  })

  app.get('/tools', {
    schema: {
      tags: ['tools'],
      operationId: 'listTools',
      summary: 'List tools, newest first',
      querystring: PageQuerySchema,
      response: { 200: ListOf(ToolSchema, 'ToolList'), ...errors }
    }
  }, async (request) => {
    const page = await app.tools.list(request.tenantId, { limit: request.query.limit, after: request.query.after })
    return { object: 'list' as const, data: page.items.map((t) => ({ ...toToolObject(t), circuit: app.engine.toolHealth.circuit(t) })), has_more: page.nextCursor !== null, next_cursor: page.nextCursor }
  })

  app.get('/tools/:name', {
    schema: { tags: ['tools'], operationId: 'getTool', summary: 'Read a tool', params: NameParams, response: { 200: ToolSchema, ...errors } }
  }, async (request) => {
    const tool = await app.tools.get(request.tenantId, request.params.name)
    return { ...toToolObject(tool), circuit: app.engine.toolHealth.circuit(tool) }
  })

  app.delete('/tools/:name', {
    schema: { tags: ['tools'], operationId: 'deleteTool', summary: 'Remove a tool', params: NameParams, response: { 200: DeletedSchema('tool'), ...errors } }
  }, async (request) => {
    await app.tools.delete(request.tenantId, request.params.name)
    request.log.info({ tool: request.params.name }, 'tool deleted')
    return { id: request.params.name, object: 'tool' as const, deleted: true as const }
  })

  app.post('/tools/:name/rotate-secret', {
    schema: {
      tags: ['tools'],
      operationId: 'rotateToolSecret',
      summary: 'Issue a new signing secret',
      description: 'Answers the new `signing_secret`, shown this once. During the rotation window (SECRET_ROTATION_WINDOW_MS, 24 h by default) the previous secret signs every call too, so the tool can switch without missing one.',
      params: NameParams,
      response: { 200: ToolWithSecretSchema, ...errors }
    }
  }, async (request) => {
    const { tool, signingSecret } = await app.tools.rotateSecret(request.tenantId, request.params.name)
    request.log.info({ tool: tool.name }, 'tool secret rotated')
    return { ...toToolObject(tool), signing_secret: signingSecret! }
  })

  app.get('/tools/:name/stats', {
    schema: {
      tags: ['tools'],
      operationId: 'getToolStats',
      summary: 'Read a tool\'s statistics',
      description: 'How the tool\'s calls went over the last `window` (1h by default, at most 7d), on every replica: calls by outcome, errors by kind, p50/p95/p99 latency of the calls sent, and each replica\'s circuit breaker. Calls of other replicas show up within about a second.',
      params: NameParams,
      querystring: ToolStatsQuerySchema,
      response: { 200: ToolStatsSchema, ...errors }
    }
  }, async (request) => {
    const tool = await app.tools.get(request.tenantId, request.params.name)
    return await app.engine.toolHealth.stats(tool, request.query.window)
  })
}
