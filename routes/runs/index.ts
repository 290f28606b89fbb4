import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { AppError } from '../../src/errors.js'
import { toEventObject, toRunObject } from '../../src/runs/run-object.js'
import { commonErrors, ListOf } from '../../src/schemas/common.js'
import { ApprovalsSchema, CreateRunSchema, EventSchema, GetRunQuerySchema, ListRunsQuerySchema, RunIdParams, RunSchema, ToolOutputsSchema, type Run } from '../../src/schemas/runs.js'
import type { RunRecord } from '../../src/runs/engine.js'
import { TenantSlots } from '../../src/tenants/tenant-slots.js'
import { wantsEventStream, writeRunEvents } from './sse-writer.js'
import timelineRoutes from './timeline.js'
import toolResultRoutes from './tool-results.js'

const errors = { ...commonErrors, 404: Type.Ref('Error'), 409: Type.Ref('Error'), 503: Type.Ref('Error') }
const METADATA_FILTER = /^metadata\[(.+)\]$/
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/

const EventsQuerySchema = Type.Object({
  after: Type.Integer({ minimum: 0, maximum: 2_147_483_647, default: 0, description: 'Events after this number (for a stream, `Last-Event-ID` wins).' }),
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Events per page, 1 to 100.' })
}, { additionalProperties: false })

const CreateRunHeaders = Type.Object({
  'idempotency-key': Type.Optional(Type.String({ description: 'The same key and body return the same run instead of starting another (1 to 255 printable characters).' }))
})

/** A run as the API answers it, with a freshly signed link to its timeline. */
function runObject (app: FastifyInstance, run: RunRecord, messages?: MessageParam[]): Run {
  return toRunObject(run, messages, app.timelineLinks.url(run))
}

/**
 * Answers a started (or resumed) run the way the caller asked: a stream of its events from
 * `after` on, 202 at once, or (by default) the run once it ends or waits for the caller.
 */
async function answerRun (app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, run: RunRecord, mode: { stream?: boolean | undefined, background?: boolean | undefined }, after: number): Promise<unknown> {
  if (mode.stream === true) return await writeRunEvents(app, request, reply, run, after)
  if (mode.background === true) {
    return reply.code(202).header('location', `/runs/${run.id}`).send(runObject(app, run))
  }
  // Waiting may take minutes: stop waiting (not the run) if the caller goes away.
  const gone = new AbortController()
  reply.raw.on('close', () => { if (!reply.raw.writableFinished) gone.abort() })
  try {
    return runObject(app, await app.engine.settled(run.tenant_id, run.id, gone.signal))
  } catch (err) {
    if (!gone.signal.aborted) throw err
    request.log.info({ runId: run.id }, 'caller went away; the run goes on')
    return reply.hijack()
  }
}

/**
 * Runs: SPEC §4; their timeline pages (SPEC §10) and the results tools post later (SPEC §13), each
 * in a context of its own beside the others, since they take a signed link or signature in place of the key.
 */
export default async function runRoutes (fastify: FastifyInstance) {
  await fastify.register(timelineRoutes)
  await fastify.register(toolResultRoutes)
  await fastify.register(keyedRunRoutes)
}

/** Every route of runs that needs the API key. */
async function keyedRunRoutes (fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addHook('onRequest', app.authenticate)

  // Event streams each tenant holds open on this replica, whichever route opened them.
  const streams = new TenantSlots(app.config.TENANT_MAX_SSE_STREAMS)
  /** Takes a stream slot for the request's tenant, or refuses (429) before anything is sent or started. */
  const takeStreamSlot = (request: FastifyRequest): () => void => {
    const release = streams.take(request.tenantId)
    if (release !== null) return release
    throw new AppError('RUN_ERR_TOO_MANY_STREAMS', `This tenant already has ${streams.limit} event streams open on this replica, the most TENANT_MAX_SSE_STREAMS allows: close one you no longer read, or follow runs with GET /runs/{id} or a callback_url, then retry.`, { headers: { 'retry-after': '1' } })
  }

  app.post('/runs', {
    schema: {
      tags: ['runs'],
      operationId: 'createRun',
      summary: 'Start a run',
      description: 'By default the answer comes when the run ends (or waits for client tool outputs): 200 with the run. With `background: true`, 202 at once with a `Location` to poll. With `stream: true`, Server-Sent Events. A client that disconnects does not stop the run. A repeated `Idempotency-Key` with the same body returns the same run (header `idempotent-replayed: true`); with another body, 409.',
      headers: CreateRunHeaders,
      body: CreateRunSchema,
      response: { 200: RunSchema, 202: RunSchema, ...errors }
    }
  }, async (request, reply) => {
    const key = request.headers['idempotency-key']
    if (key !== undefined && !IDEMPOTENCY_KEY.test(key)) {
      throw new AppError('REQUEST_ERR_VALIDATION', 'The Idempotency-Key header must be 1 to 255 printable ASCII characters (a UUID, say).')
    }
    // A stream's slot is taken before the run is created: a refused stream starts no run.
    const release = request.body.stream === true ? takeStreamSlot(request) : undefined
    try {
      const { run, created } = await app.engine.create(request.tenantId, request.body, { idempotencyKey: key, origin: `${request.protocol}://${request.host}` })
      if (!created) reply.header('idempotent-replayed', 'true')
      return await answerRun(app, request, reply, run, request.body, 0)
    } finally {
      release?.()
    }
  })

  app.get('/runs', {
    schema: {
      tags: ['runs'],
      operationId: 'listRuns',
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
    return { object: 'list' as const, data: page.items.map((r) => runObject(app, r)), has_more: page.nextCursor !== null, next_cursor: page.nextCursor }
  })

  app.get('/runs/:id', {
    schema: {
      tags: ['runs'],
      operationId: 'getRun',
      summary: 'Read a run',
      params: RunIdParams,
      querystring: GetRunQuerySchema,
      response: { 200: RunSchema, ...errors }
    }
  }, async (request) => {
    const run = await app.engine.get(request.tenantId, request.params.id)
    if (request.query.include === 'messages') return runObject(app, run, await app.engine.messages(run.id))
    return runObject(app, run)
  })

  app.get('/runs/:id/events', {
    schema: {
      tags: ['runs'],
      operationId: 'listRunEvents',
      summary: 'A run\'s events, oldest first; or a live stream of them',
      description: 'Events are numbered 1, 2, 3… within the run; page with `after` (an event number). With `Accept: text/event-stream`: Server-Sent Events from `Last-Event-ID` (or `after`) on, live until the run\'s last event.',
      params: RunIdParams,
      querystring: EventsQuerySchema,
      response: {
        200: Type.Object({ object: Type.Literal('list'), data: Type.Array(EventSchema), has_more: Type.Boolean(), next_cursor: Type.Union([Type.String(), Type.Null()]) }),
        ...errors
      }
    }
  }, async (request, reply) => {
    const run = await app.engine.get(request.tenantId, request.params.id)
    if (wantsEventStream(request)) {
      const lastEventId = request.headers['last-event-id']
      let after = request.query.after
      if (lastEventId !== undefined) {
        after = Number(lastEventId)
        if (!/^\d{1,10}$/.test(String(lastEventId)) || after > 2_147_483_647) {
          throw new AppError('REQUEST_ERR_VALIDATION', 'Last-Event-ID must be the number of an event (the `id:` of the last one received).')
        }
      }
      const release = takeStreamSlot(request)
      try {
        return await writeRunEvents(app, request, reply, run, after)
      } finally {
        release()
      }
    }
    const page = await app.engine.eventPage(run, request.query.after, request.query.limit)
    return { object: 'list' as const, data: page.items.map(toEventObject), has_more: page.nextCursor !== null, next_cursor: page.nextCursor }
  })

  app.post('/runs/:id/cancel', {
    schema: {
      tags: ['runs'],
      operationId: 'cancelRun',
      summary: 'Cancel a run',
      description: 'Aborts the model call and every tool call in flight; each open tool_use gets an `is_error` "cancelled" result; the run ends `cancelled`. A run that already ended is a 409.',
      params: RunIdParams,
      response: { 200: RunSchema, ...errors }
    }
  }, async (request) => runObject(app, await app.engine.cancel(request.tenantId, request.params.id)))

  app.post('/runs/:id/tool_outputs', {
    schema: {
      tags: ['runs'],
      operationId: 'submitToolOutputs',
      summary: 'Answer the client tool calls a run waits on',
      description: 'One output for each call in `required_action.tool_calls`; a missing, unknown or repeated id is a 400. The run then goes on, answered like POST /runs: by default when it ends, or with `background`/`stream`.',
      params: RunIdParams,
      body: ToolOutputsSchema,
      response: { 200: RunSchema, 202: RunSchema, ...errors }
    }
  }, async (request, reply) => {
    const release = request.body.stream === true ? takeStreamSlot(request) : undefined
    try {
      const { run, resumedAfter } = await app.engine.submitToolOutputs(request.tenantId, request.params.id, request.body)
      return await answerRun(app, request, reply, run, request.body, resumedAfter)
    } finally {
      release?.()
    }
  })

  app.post('/runs/:id/approvals', {
    schema: {
      tags: ['runs'],
      operationId: 'approveToolCalls',
      summary: 'Approve or deny the tool calls a run waits on',
      description: 'Decisions on some or all of the calls in `required_action.tool_calls` (type `approve_tool_calls`); an unknown or repeated id is a 400, a run not waiting for approvals a 409. With calls left undecided, the run waits on and is answered at once. Once every call is decided, approved calls are made, denied ones answered `Not run: denied by the reviewer: {reason}`, and the run goes on, answered like POST /runs: by default when it ends or waits again, or with `background`/`stream`.',
      params: RunIdParams,
      body: ApprovalsSchema,
      response: { 200: RunSchema, 202: RunSchema, ...errors }
    }
  }, async (request, reply) => {
    const release = request.body.stream === true ? takeStreamSlot(request) : undefined
    try {
      const { run, resumedAfter } = await app.engine.approve(request.tenantId, request.params.id, request.body)
      return await answerRun(app, request, reply, run, request.body, resumedAfter)
    } finally {
      release?.()
    }
  })
}
