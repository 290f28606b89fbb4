/**
 * The demo's offline stand-in for Claude, as a service of its own (the compose stack's `model`):
 * the strict fake Messages API of the tests, answering as the demo agent does (weather and local
 * time of the cities a question names, all at once, then an answer from the results).
 *
 *   node dist/demo/model-server.js      or   npx tsx demo/model-server.ts
 *
 * Listens on PORT (4010) and HOST (127.0.0.1); point Switchboard's ANTHROPIC_BASE_URL at it, with any
 * ANTHROPIC_API_KEY. A request the real API would refuse is refused here too, and printed.
 */
import { FakeMessagesApi } from '../test/support/fake-messages-api.js'
import { demoAgent } from './demo-agent.js'

const model = await new FakeMessagesApi(demoAgent).start(Number(process.env.PORT ?? 4010), process.env.HOST ?? '127.0.0.1')
process.stdout.write(`demo Messages API (offline fake) on ${model.url}/v1/messages\n`)

// The fake keeps what it was sent, for tests to look at; a service that runs for days keeps only
// the latest, and says when a request was refused (a client sending what the real API refuses).
const housekeeping = setInterval(() => {
  for (const refusal of model.refusals.splice(0)) process.stdout.write(`refused a request: ${refusal.message}\n`)
  if (model.requests.length > 100) model.requests.splice(0, model.requests.length - 100)
  model.aborted.splice(0)
}, 1000)
housekeeping.unref()

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => { model.close().then(() => process.exit(0), () => process.exit(1)) })
}
