import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { loadTimelineLinks, type TimelineLinks } from '../src/runs/timeline-link.js'
import { OPEN_MODE_TENANT } from '../src/tenants/api-keys.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Signs and checks the links of run timelines (`timeline_url`). */
    timelineLinks: TimelineLinks
  }
}

/**
 * Loads the key of timeline links from storage (making it on the first start of the first
 * replica), so that every replica signs and accepts the same links. The key is never logged.
 */
export default fp(async function timelinePlugin (app: FastifyInstance) {
  const { keyring, PUBLIC_URL } = app.config
  const tenants = keyring.size === 0 ? [OPEN_MODE_TENANT] : keyring.tenants()
  app.decorate('timelineLinks', await loadTimelineLinks(app.store, tenants, PUBLIC_URL ?? ''))
}, { name: 'timeline', dependencies: ['config', 'store'] })
