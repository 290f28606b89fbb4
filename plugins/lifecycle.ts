import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { AppError } from '../src/errors.js'

export interface Lifecycle {
  /** True from the moment shutdown begins: /readyz fails and no new run is taken. */
  readonly draining: boolean
  startDraining (): void
}

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: Lifecycle
  }
  interface FastifyContextConfig {
    /** The route still answers while the process drains (the probes); every other one is refused. */
    answersWhileDraining?: boolean
  }
}

/** What a client should wait before it sends a refused request again (to another replica, by then). */
const DRAINING_RETRY_AFTER_S = 1

/**
 * Tracks whether the process is shutting down; closing the app starts draining too. While it
 * drains, a new request (one on a connection kept alive, or a new connection while the steps in
 * progress finish) is answered 503 `SERVICE_ERR_DRAINING` in the error shape, before it is
 * authenticated or counted, with `retry-after` and its request id: Fastify's own answer
 * (`return503OnClosing`) is a bare body without either. Requests already in flight go on; the
 * routes marked `answersWhileDraining` (/healthz) answer as always.
 */
export default fp(async function lifecyclePlugin (app: FastifyInstance) {
  let draining = false
  const lifecycle: Lifecycle = {
    get draining () { return draining },
    startDraining () { draining = true }
  }
  app.decorate('lifecycle', lifecycle)
  app.addHook('preClose', async () => lifecycle.startDraining())
  app.addHook('onRequest', async (request) => {
    if (!draining || request.routeOptions.config.answersWhileDraining === true) return
    throw new AppError('SERVICE_ERR_DRAINING', 'This replica is shutting down: send the request to another one (retry after the retry-after header).', {
      headers: { 'retry-after': String(DRAINING_RETRY_AFTER_S) }
    })
  })
}, { name: 'lifecycle' })
