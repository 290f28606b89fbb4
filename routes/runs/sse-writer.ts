import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { RunRecord } from '../../src/runs/engine.js'
import { toEventObject } from '../../src/runs/run-object.js'

// Proxies and load balancers drop connections that stay silent; an SSE comment keeps them open.
const HEARTBEAT_MS = 15_000

/**
 * Writes a run's events as Server-Sent Events, from event number `after` on (what to send, and
 * when to end, is the engine's: see EventStream.follow). Each event carries `id:`, its number, so
 * that a client that reconnects with `Last-Event-ID` misses nothing and sees nothing twice. A
 * client that goes away stops the stream, never the run; a replica shutting down ends it, and
 * the client reconnects to another.
 */
export async function writeRunEvents (app: FastifyInstance, request: FastifyRequest, reply: FastifyReply, run: RunRecord, after: number): Promise<void> {
  const gone = new AbortController()
  const events = app.engine.followEvents(run, { after, signal: gone.signal, stopping: () => app.lifecycle.draining })
  // Nothing will come: 204 also tells a browser's EventSource not to reconnect.
  if (events === null) return await reply.code(204).send()
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
  res.on('close', () => gone.abort())
  const heartbeat = setInterval(() => { if (!res.destroyed) res.write(': keep-alive\n\n') }, HEARTBEAT_MS)
  try {
    for await (const event of events) {
      const payload = JSON.stringify(toEventObject(event))
      if (!res.write(`id: ${event.seq}\nevent: ${event.type}\ndata: ${payload}\n\n`)) await drained(res, gone.signal)
    }
  } catch (err) {
    // Storage failed mid-stream: end it; the client reconnects with Last-Event-ID.
    request.log.warn({ err, runId: run.id }, 'event stream ended early')
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
