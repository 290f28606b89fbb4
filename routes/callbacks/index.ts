import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { commonErrors } from '../../src/schemas/common.js'
import { CallbackSecretSchema, CallbackSettingsSchema } from '../../src/schemas/runs.js'
import type { SigningSecret } from '../../src/runs/engine.js'
import { secretStatus } from '../../src/tools/tool-object.js'

function settings (secrets: readonly SigningSecret[]) {
  return { object: 'callback_settings' as const, ...secretStatus(secrets) }
}

/** The tenant's completion callbacks: the secret that signs them. */
export default async function callbackRoutes (fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addHook('onRequest', app.authenticate)

  app.get('/callbacks', {
    schema: {
      tags: ['runs'],
      operationId: 'getCallbackSettings',
      summary: 'Callback settings',
      description: 'Whether a callback signing secret exists (never the secret itself).',
      response: { 200: CallbackSettingsSchema, ...commonErrors }
    }
  }, async (request) => settings(await app.engine.callbackSecrets(request.tenantId)))

  app.post('/callbacks/rotate-secret', {
    schema: {
      tags: ['runs'],
      operationId: 'rotateCallbackSecret',
      summary: 'Make (or replace) the callback signing secret',
      description: 'Answers the new `signing_secret`, shown this once. Runs with a `callback_url` need one. During the rotation window the previous secret signs every callback too.',
      response: { 200: CallbackSecretSchema, ...commonErrors }
    }
  }, async (request) => {
    const { secret, secrets } = await app.engine.rotateCallbackSecret(request.tenantId)
    request.log.info('callback secret rotated')
    return { ...settings(secrets), signing_secret: secret }
  })
}
