/**
 * The fake Messages API (scripted by bench/support.ts's scriptedTurn) and the webhook test server,
 * as a process of their own: started by startFakesProcess, so that a benchmark measuring CPU time
 * counts neither fake against either side. Prints `{ model, tools }` (their base URLs) as one JSON
 * line, then serves until its stdin closes.
 */
import { startFakeMessagesApi } from '../test/support/fake-messages-api.js'
import { startWebhookServer } from '../test/support/webhook-server.js'
import { scriptedTurn } from './support.js'

const model = await startFakeMessagesApi(scriptedTurn)
const tools = await startWebhookServer()
// The fakes keep what they saw (for tests); here nobody reads it, and it would only grow.
setInterval(() => {
  model.requests.length = 0
  tools.calls.length = 0
}, 1000).unref()
process.stdout.write(`${JSON.stringify({ model: model.url, tools: tools.url })}\n`)

process.stdin.resume()
process.stdin.on('end', () => {
  Promise.all([model.close(), tools.close()]).finally(() => process.exit(0))
})
