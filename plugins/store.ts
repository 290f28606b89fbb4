import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { createStore, type Store } from '../src/store/index.js'

declare module 'fastify' {
  interface FastifyInstance {
    store: Store
  }
}

/**
 * Opens the configured storage (PostgreSQL with DATABASE_URL, else SQLite in DATA_DIR), runs its
 * migrations, and closes it when the app closes. A store passed in is used as is and left open.
 */
export default fp(async function storePlugin (app: FastifyInstance, options: { store?: Store | undefined }) {
  const owned = options.store === undefined
  const store = options.store ?? await createStore({
    databaseUrl: app.config.DATABASE_URL,
    dataDir: app.config.DATA_DIR,
    leaseMs: app.config.RUN_LEASE_MS,
    log: app.log
  })
  app.decorate('store', store)
  app.log.info({ storage: store.kind }, 'storage ready')
  if (owned) app.addHook('onClose', async () => store.close())
}, { name: 'store', dependencies: ['config'] })
