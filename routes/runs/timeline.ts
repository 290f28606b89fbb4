import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { AppError } from '../../src/errors.js'
import { renderTimelinePage, TIMELINE_CSP } from '../../src/runs/timeline-page.js'
import { commonErrors } from '../../src/schemas/common.js'
import { RunIdParams } from '../../src/schemas/runs.js'

const TimelineQuerySchema = Type.Object({
  expires: Type.Optional(Type.String({ maxLength: 20, description: 'From `timeline_url`: when the link stops working (Unix seconds).' })),
  sig: Type.Optional(Type.String({ maxLength: 100, description: 'From `timeline_url`: the link\'s signature, which stands in for the API key.' }))
})

/**
 * The timeline page of a run (SPEC §10). It takes the signed link of `timeline_url` in place of the
 * API key, for that one run; without a valid signature it wants the key like every other route.
 */
export default async function timelineRoutes (fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()

  app.addHook('onRequest', async (request: FastifyRequest) => {
    const { id } = request.params as { id?: string }
    const { expires, sig } = request.query as Record<string, unknown>
    const check = app.timelineLinks.check(String(id), expires, sig)
    if (check?.ok === true) {
      request.tenantId = check.tenantId
      request.linkRunId = String(id)
      request.log = request.log.child({ tenantId: check.tenantId })
      return
    }
    // A bad link with no key to fall back on says what is wrong with the link.
    if (check !== null && request.headers.authorization === undefined && app.config.keyring.size > 0) {
      throw check.reason === 'expired'
        ? new AppError('AUTH_ERR_LINK_EXPIRED', 'This timeline link has expired (links last an hour): read the run again (GET /runs/{id}) for a fresh timeline_url, or send the API key.')
        : new AppError('AUTH_ERR_INVALID_LINK', 'This timeline link is not valid for this run: use the timeline_url of the run as GET /runs/{id} answers it, whole, or send the API key.')
    }
    await app.authenticate(request)
  })

  app.get('/runs/:id/timeline', {
    schema: {
      tags: ['runs'],
      operationId: 'getRunTimeline',
      summary: 'A run\'s timeline: an HTML page',
      description: 'A waterfall of the run drawn from its stored events: each model call and each tool call attempt a bar on one time axis, errors and timeouts marked, and how much time running the calls side by side saved. While the run goes on, the page reloads every 2 s. Open the run\'s `timeline_url` in a browser (signed, for an hour, no key needed), or call this with the API key.',
      params: RunIdParams,
      querystring: TimelineQuerySchema,
      response: {
        200: { description: 'The page.', content: { 'text/html': { schema: Type.String() } } },
        ...commonErrors,
        404: Type.Ref('Error')
      }
    }
  }, async (request, reply) => {
    // The run first, then its events: they then reach at least as far as its status.
    const run = await app.engine.get(request.tenantId, request.params.id)
    const page = renderTimelinePage(await app.engine.timeline(run))
    return reply
      .headers({
        'content-security-policy': TIMELINE_CSP,
        'cache-control': 'no-store',
        // The address carries the signature: it must not leave in a Referer header.
        'referrer-policy': 'no-referrer',
        'x-content-type-options': 'nosniff'
      })
      .type('text/html; charset=utf-8')
      .send(page)
  })
}
