import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ToolHost, type ToolHostOptions } from './tool-host.js'

export type SwitchboardToolsOptions = ToolHostOptions

/**
 * A Fastify plugin that hosts `tools` under its prefix: `POST /` and `POST /<anything>` take the
 * calls (a call goes to the tool its body names). Register it encapsulated, with a prefix:
 * `app.register(switchboardTools, { prefix: '/tools', secrets, tools })`, with `secrets` a ToolSecrets
 * that registerTools fills. Its JSON parser keeps the raw body the signature covers, and touches no
 * other route.
 */
export async function switchboardTools (app: FastifyInstance, options: SwitchboardToolsOptions): Promise<void> {
  const host = new ToolHost(options)
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: host.maxBodyBytes }, (_request, body, done) => { done(null, body) })
  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const hangUp = new AbortController()
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) hangUp.abort() })
    const answer = await host.answer(typeof request.body === 'string' ? request.body : '', request.headers, hangUp.signal, request.url)
    return await reply.code(answer.status).send(answer.body)
  }
  app.post('/', handler)
  app.post('/*', handler)
}
