import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'

export interface Lifecycle {
  /** True from the moment shutdown begins: /readyz fails and no new run is taken. */
  readonly draining: boolean
  startDraining (): void
}

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: Lifecycle
  }
}

/** Tracks whether the process is shutting down. Closing the app starts draining too. */
export default fp(async function lifecyclePlugin (app: FastifyInstance) {
  let draining = false
  const lifecycle: Lifecycle = {
    get draining () { return draining },
    startDraining () { draining = true }
  }
  app.decorate('lifecycle', lifecycle)
  app.addHook('preClose', async () => lifecycle.startDraining())
}, { name: 'lifecycle' })
