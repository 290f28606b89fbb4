import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyInstance } from 'fastify'
import { ErrorSchema } from '../src/schemas/common.js'
import { VERSION } from '../src/version.js'

const DESCRIPTION = `Switchboard runs Claude agent loops for your backend: POST a run with messages and the
names of registered tools; each time the model asks for tools, Switchboard calls their webhooks, all of a
turn's calls at once, and hands the results back, until the model is done.

Authenticate with \`Authorization: Bearer <api key>\`. Errors answer
\`{ statusCode, code, error, message, requestId }\`; branch on \`code\`.`

/**
 * The OpenAPI 3.1 document, generated from the same TypeBox schemas that validate requests, at
 * /openapi.json, and rendered at /docs (Swagger UI, served from this process: no external assets).
 * Must be registered before the routes it documents.
 */
export default fp(async function openapiPlugin (app: FastifyInstance) {
  app.addSchema(ErrorSchema)
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Switchboard', version: VERSION, description: DESCRIPTION, license: { name: 'Proprietary: all rights reserved', identifier: 'LicenseRef-Proprietary' } },
      // Where the API is reached: PUBLIC_URL when set, otherwise the address this document was
      // fetched from ('/', relative to it), which is what generated clients and "Try it out" use.
      servers: [app.config.PUBLIC_URL === undefined
        ? { url: '/', description: 'The service that answered this document' }
        : { url: app.config.PUBLIC_URL, description: 'This service (PUBLIC_URL)' }],
      components: {
        securitySchemes: {
          apiKey: { type: 'http', scheme: 'bearer', description: 'An API key from API_KEYS.' }
        }
      },
      security: [{ apiKey: [] }],
      tags: [
        { name: 'tools', description: 'Webhooks the model may call' },
        { name: 'runs', description: 'Agent loops' },
        { name: 'health', description: 'Probes for orchestrators' },
        { name: 'usage', description: 'What a tenant\'s runs used and cost' }
      ]
    },
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => typeof json.$id === 'string' ? json.$id : `def-${i}`
    }
  })
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    uiConfig: { deepLinking: true, defaultModelsExpandDepth: 0 },
    staticCSP: true
  })
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
}, { name: 'openapi', dependencies: ['config'] })
