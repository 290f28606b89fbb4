import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { isSettled, isStalled, toEventObject } from '../../src/runs/run-object.js'
import { FINAL_STATUSES } from '../../src/schemas/runs.js'
import type { RunRecord } from '../../src/store/index.js'

// A run's stream ends with its last event: a final one (`run.completed` and so on), or
// `run.requires_action` when nothing follows it yet (the caller has to answer before there is more).
const FINAL_EVENTS = new Set([...FINAL_STATUSES].map((status) => `run.${status}`))
const BATCH = 200
// How often a stream looks for events stored by another replica; this one's wake it at once.
const POLL_MS = 500
// Proxies and load balancers drop connections that stay silent; an SSE comment keeps them open.
const HEARTBEAT_MS = 15_000

/**
 * Streams a run's events as Server-Sent Events, from event number `after` on: every stored event
 * once, in order, each with `id:` set to its number so that a client that reconnects with
 * `Last-Event-ID` misses nothing and sees nothing twice. Ends when the run has nothing more to
 * send (it ended, waits for its caller, or nobody drives it past its deadline) or this replica is
 * shutting down; a client that goes away stops the stream, never the run.
 */
export async function streamRunEvents (app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, run: RunRecord, after: number): Promise<void> {
  if (isSettled(run) && after >= run.event_count) {
    // Nothing will come: 204 also tells a browser's EventSource not to reconnect.
    return await reply.code(204).send()
  }
  reply.hijack()
  const res = reply.raw
  res.writeHead(200, {
    ...(reply.getHeaders() as OutgoingHttpHeaders),
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    'x-request-id': String(request.id)
  })
  res.flushHeaders()
  const gone = new AbortController()
  res.on('close', () => gone.abort())
  const heartbeat = setInterval(() => { if (!res.destroyed) res.write(': keep-alive\n\n') }, HEARTBEAT_MS)
  let last = after
  try {
    for (;;) {
      const events = await app.store.listEvents(run.id, last, BATCH)
      for (const event of events) {
        const payload = JSON.stringify(toEventObject(event))
        if (!res.write(`id: ${event.seq}\nevent: ${event.type}\ndata: ${payload}\n\n`)) await drained(res, gone.signal)
        if (gone.signal.aborted) return
        last = event.seq
        if (FINAL_EVENTS.has(event.type)) return
      }
      if (gone.signal.aborted) return
      if (events.length === BATCH) continue
      if (events.length === 0) {
        // Nothing new: is more to come? Not from a run that ended or waits, not from one nobody
        // drives past its deadline, and not here once this replica is draining (the client
        // reconnects to another with Last-Event-ID).
        const current = await app.store.getRun(run.tenant_id, run.id)
        if (current === null || app.lifecycle.draining) return
        if (isSettled(current) && last >= current.event_count) return
        if (isStalled(current, app.config.RUN_LEASE_MS)) return
      }
      await app.engine.waitForEvents(run.id, POLL_MS, gone.signal)
      if (gone.signal.aborted) return
    }
  } catch (err) {
    // Storage failed mid-stream: end it; the client reconnects with Last-Event-ID.
    request.log.warn({ err: { message: (err as Error).message }, runId: run.id }, 'event stream ended early')
  } finally {
    clearInterval(heartbeat)
    if (!res.writableEnded) res.end()
  }
}

/** Whether the client asked for a stream (`Accept: text/event-stream`). */
export function wantsEventStream (request: FastifyRequest): boolean {
  return (request.headers.accept ?? '').includes('text/event-stream')
}

function drained (res: ServerResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    // A client already gone: no 'drain' and no 'abort' will come (waiting would hold the stream,
    // and its tenant's stream slot, for ever).
    if (signal.aborted || res.destroyed) {
      resolve()
      return
    }
    const done = (): void => {
      res.off('drain', done)
      signal.removeEventListener('abort', done)
      resolve()
    }
    res.on('drain', done)
    signal.addEventListener('abort', done, { once: true })
  })
}
