import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { AppError } from '../../src/errors.js'
import { ToolCallParams, ToolCallResultSchema } from '../../src/schemas/runs.js'

/**
 * Results a run's tool posts more than once a second, on each replica: far more than a tool posts
 * for one run's calls, few enough that a caller without the tool's secret learns nothing fast.
 */
const RESULTS_PER_RUN_PER_MINUTE = 600

declare module 'fastify' {
  interface FastifyRequest {
    /** The body as received, for routes that check a signature over it. */
    rawBody?: string
  }
}

/**
 * Results of tool calls answered `202 Accepted`, posted later by the tool (SPEC §13). No API key:
 * each is signed with the tool's own secret, checked by the engine; a context of its own, with a
 * JSON parser that keeps the body's bytes for that check, and a rate limit per run.
 */
export default async function toolResultRoutes (fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const bodyLimit = app.config.TOOL_MAX_RESPONSE_BYTES

  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit }, (request: FastifyRequest, body: string | Buffer, done) => {
    const text = body.toString()
    request.rawBody = text
    try {
      done(null, JSON.parse(text))
    } catch {
      done(new AppError('REQUEST_ERR_INVALID_JSON', 'The body is not valid JSON.'), undefined)
    }
  })

  // `:id`, as every route under /runs/ names the run: the router keeps one name per parameter.
  app.post('/runs/:id/tool_calls/:tool_use_id/result', {
    bodyLimit,
    config: {
      rateLimit: {
        max: RESULTS_PER_RUN_PER_MINUTE,
        timeWindow: 60_000,
        keyGenerator: (request: FastifyRequest) => `result:${(request.params as { id?: string }).id ?? ''}`,
        allowList: () => false
      }
    },
    schema: {
      tags: ['runs'],
      operationId: 'postToolCallResult',
      summary: 'Post the result of a call your tool answered 202 Accepted',
      description: 'For tools, not callers: a tool that answered a call `202 Accepted` posts its result here, at the call\'s `result_url`, as `{ content, is_error? }` (a webhook\'s answer, SPEC §6). No API key: sign the request with Standard Webhooks headers and the tool\'s signing secret, as Switchboard signs calls. Once the step\'s last pending call has its result, the run goes on.',
      params: ToolCallParams,
      body: ToolCallResultSchema,
      response: {
        204: Type.Null({ description: 'Stored: the run goes on (or waits for the step\'s other pending calls).' }),
        400: Type.Ref('Error'),
        401: Type.Ref('Error'),
        404: Type.Ref('Error'),
        409: Type.Ref('Error'),
        413: Type.Ref('Error'),
        429: Type.Ref('Error')
      }
    }
  }, async (request, reply) => {
    await app.engine.postToolResult({
      runId: request.params.id,
      toolUseId: request.params.tool_use_id,
      rawBody: request.rawBody ?? '',
      body: request.body,
      headers: request.headers as Record<string, string | string[] | undefined>
    })
    request.log.info({ runId: request.params.id, toolUseId: request.params.tool_use_id }, 'tool call result posted')
    return await reply.code(204).send(null)
  })
}
