import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ServerResponse } from 'node:http'
import { isoDate } from '../../src/schemas/common.js'

// A run's stream ends with its last event: a final one, or `run.requires_action` when nothing
// follows it yet (the caller has to answer before there is more).
const FINAL_EVENTS = new Set(['run.completed', 'run.failed', 'run.cancelled'])
const PAUSING_EVENT = 'run.requires_action'
const BATCH = 200
// How often a stream looks for events stored by another replica; this one's wake it at once.
const POLL_MS = 500
// Proxies and load balancers drop connections that stay silent; an SSE comment keeps them open.
const HEARTBEAT_MS = 15_000

/**
 * Streams a run's events as Server-Sent Events, from event number `after` on: every stored event
 * once, in order, each with `id:` set to its number so that a client that reconnects with
 * `Last-Event-ID` misses nothing and sees nothing twice. Ends after the run's last event; a
 * client that goes away stops the stream, never the run.
 */
export async function streamRunEvents (app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, runId: string, after: number): Promise<void> {
  reply.hijack()
  const res = reply.raw
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    'x-request-id': String(request.id)
  })
  const gone = new AbortController()
  res.on('close', () => gone.abort())
  const heartbeat = setInterval(() => { if (!res.destroyed) res.write(': keep-alive\n\n') }, HEARTBEAT_MS)
  let last = after
  try {
    for (;;) {
      const events = await app.store.listEvents(runId, last, BATCH)
      for (const event of events) {
        const payload = JSON.stringify({ id: event.seq, type: event.type, run_id: event.run_id, at: isoDate(event.at), data: event.data })
        if (!res.write(`id: ${event.seq}\nevent: ${event.type}\ndata: ${payload}\n\n`)) await drained(res, gone.signal)
        last = event.seq
        if (FINAL_EVENTS.has(event.type)) return
      }
      if (gone.signal.aborted) return
      if (events.length === BATCH) continue
      if (events.at(-1)?.type === PAUSING_EVENT) return
      await app.engine.waitForEvents(runId, POLL_MS, gone.signal)
      if (gone.signal.aborted) return
    }
  } catch (err) {
    // Storage failed mid-stream: end it; the client reconnects with Last-Event-ID.
    request.log.warn({ err: { message: (err as Error).message }, runId }, 'event stream ended early')
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
    const done = (): void => {
      res.off('drain', done)
      signal.removeEventListener('abort', done)
      resolve()
    }
    res.on('drain', done)
    signal.addEventListener('abort', done, { once: true })
  })
}
