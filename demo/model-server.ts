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
import { connect, createServer, type Socket } from 'node:net'
import { FakeMessagesApi } from '../test/support/fake-messages-api.js'
import { demoAgent } from './demo-agent.js'

const port = Number(process.env.PORT ?? 4010)
const host = process.env.HOST ?? '127.0.0.1'

// The fake listens where the tests want it, on a free loopback port; connections to PORT and HOST
// are relayed to it byte for byte (streams included).
const model = await new FakeMessagesApi(demoAgent).start()
const inner = Number(new URL(model.url).port)
const sockets = new Set<Socket>()
const relay = createServer((client) => {
  const upstream = connect(inner, '127.0.0.1')
  for (const [socket, other] of [[client, upstream], [upstream, client]] as const) {
    sockets.add(socket)
    socket.on('error', () => other.destroy())
    socket.on('close', () => { sockets.delete(socket); other.destroy() })
  }
  client.pipe(upstream).pipe(client)
})
await new Promise<void>((resolve) => relay.listen(port, host, resolve))
process.stdout.write(`demo Messages API (offline fake) on http://${host}:${port}/v1/messages\n`)

// The fake keeps what it was sent, for tests to look at; a service that runs for days keeps only
// the latest, and says when a request was refused (a client sending what the real API refuses).
const housekeeping = setInterval(() => {
  for (const refusal of model.refusals.splice(0)) process.stdout.write(`refused a request: ${refusal.message}\n`)
  if (model.requests.length > 100) model.requests.splice(0, model.requests.length - 100)
  model.aborted.splice(0)
}, 1000)
housekeeping.unref()

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    relay.close()
    for (const socket of sockets) socket.destroy()
    model.close().then(() => process.exit(0), () => process.exit(1))
  })
}
