import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../src/config.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

/** Makes the validated configuration available as `app.config`. */
export default fp(async function configPlugin (app: FastifyInstance, options: { config: Config }) {
  app.decorate('config', options.config)
}, { name: 'config' })
