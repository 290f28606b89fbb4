import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { toRunObject } from '../../src/runs/run-object.js'
import { commonErrors, isoDate, ListOf } from '../../src/schemas/common.js'
import { CreateRunSchema, EventSchema, GetRunQuerySchema, ListRunsQuerySchema, RunIdParams, RunSchema } from '../../src/schemas/runs.js'

const errors = { ...commonErrors, 404: Type.Ref('Error'), 409: Type.Ref('Error'), 503: Type.Ref('Error') }
const METADATA_FILTER = /^metadata\[(.+)\]$/

const EventsQuerySchema = Type.Object({
  after: Type.Integer({ minimum: 0, maximum: 2_147_483_647, default: 0, description: 'Events after this number.' }),
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Events per page, 1 to 100.' })
}, { additionalProperties: false })

/** Runs: SPEC §4. */
export default async function runRoutes (fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addHook('onRequest', app.authenticate)

  app.post('/runs', {
    schema: {
      tags: ['runs'],
      summary: 'Start a run',
      description: 'By default the answer comes when the run ends: 200 with the run. With `background: true`, 202 at once with a `Location` to poll. A client that disconnects does not stop the run.',
      body: CreateRunSchema,
      response: { 200: RunSchema, 202: RunSchema, ...errors }
    }
  }, async (request, reply) => {
    const run = await app.engine.create(request.tenantId, request.body)
    if (request.body.background === true) {
      return reply.code(202).header('location', `/runs/${run.id}`).send(toRunObject(run))
    }
    // Waiting may take minutes: stop waiting (not the run) if the caller goes away.
    const gone = new AbortController()
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) gone.abort() })
    try {
      return toRunObject(await app.engine.settled(request.tenantId, run.id, gone.signal))
    } catch (err) {
      if (!gone.signal.aborted) throw err
      request.log.info({ runId: run.id }, 'caller went away; the run goes on')
      return reply.hijack()
    }
  })

  app.get('/runs', {
    schema: {
      tags: ['runs'],
      summary: 'List runs, newest first',
      querystring: ListRunsQuerySchema,
      response: { 200: ListOf(RunSchema, 'RunList'), ...errors }
    }
  }, async (request) => {
    const { limit, after, status, ...rest } = request.query as Record<string, string | number | undefined>
    const metadata: Record<string, string> = {}
    for (const [key, value] of Object.entries(rest)) {
      const match = METADATA_FILTER.exec(key)
      if (match !== null) metadata[match[1]!] = String(value)
    }
    const page = await app.engine.list(request.tenantId, { limit: limit as number, after: after as string | undefined, status: status as never, metadata })
    return { object: 'list' as const, data: page.items.map((r) => toRunObject(r)), has_more: page.nextCursor !== null, next_cursor: page.nextCursor }
  })

  app.get('/runs/:id', {
    schema: {
      tags: ['runs'],
      summary: 'Read a run',
      params: RunIdParams,
      querystring: GetRunQuerySchema,
      response: { 200: RunSchema, ...errors }
    }
  }, async (request) => {
    const run = await app.engine.get(request.tenantId, request.params.id)
    if (request.query.include === 'messages') return toRunObject(run, await app.engine.messages(run.id))
    return toRunObject(run)
  })

  app.get('/runs/:id/events', {
    schema: {
      tags: ['runs'],
      summary: 'List a run\'s events, oldest first',
      description: 'Events are numbered 1, 2, 3… within the run; page with `after` (an event number).',
      params: RunIdParams,
      querystring: EventsQuerySchema,
      response: { 200: Type.Object({ object: Type.Literal('list'), data: Type.Array(EventSchema), has_more: Type.Boolean(), next_cursor: Type.Union([Type.String(), Type.Null()]) }), ...errors }
    }
  }, async (request) => {
    const run = await app.engine.get(request.tenantId, request.params.id)
    const events = await app.store.listEvents(run.id, request.query.after, request.query.limit + 1)
    const page = events.slice(0, request.query.limit)
    const hasMore = events.length > request.query.limit
    return {
      object: 'list' as const,
      data: page.map((e) => ({ id: e.seq, type: e.type, run_id: e.run_id, at: isoDate(e.at), data: e.data })),
      has_more: hasMore,
      next_cursor: hasMore ? String(page[page.length - 1]!.seq) : null
    }
  })
}
