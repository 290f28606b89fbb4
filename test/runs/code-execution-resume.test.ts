import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { useReplicas } from '../support/replicas.js'
import { codeCalls, codeResult, startFakeMessagesApi, turnNumber, type FakeMessagesApi } from '../support/fake-messages-api.js'
import { startWebhookServer, type WebhookServer } from '../support/webhook-server.js'

/**
 * Programmatic tool calling survives its replica (SPEC §7, §16), with real processes: the replica
 * driving a run is killed with SIGKILL while its code's calls are in flight, and the replica that
 * takes the run over sends the container the run's code runs in with every request it makes.
 */

let model: FakeMessagesApi
let tools: WebhookServer

beforeAll(async () => {
  model = await startFakeMessagesApi()
  tools = await startWebhookServer()
})
afterAll(async () => {
  await Promise.all([model?.close(), tools?.close()])
})
const replicas = useReplicas({ modelUrl: () => model.url })

for (const backend of backends) {
  describe.skipIf(backend.skip)(`a run with code execution taken over after its replica is killed: ${backend.name}`, () => {
    beforeEach(() => {
      model.requests.length = 0
      model.refusals.length = 0
      model.containers.clear()
      tools.calls.length = 0
    })

    it('sends the stored container with every request of the run, the new replica\'s too', async () => {
      const first = await replicas.start(await replicas.store(backend))
      for (const [name, path] of [['quick', '/ok'], ['slow', '/delay/3000']]) {
        await first.api('PUT', `/tools/${name!}`, { description: name, input_schema: { type: 'object' }, url: `${tools.url}${path!}`, effect: 'read_only', callers: ['direct', 'code'], max_attempts: 1 })
      }
      // Step 1: the code calls the quick tool; step 2, the slow one (in flight at the kill); then the answer.
      model.respond = (request) => {
        const turn = turnNumber(request)
        if (turn === 1) return { content: codeCalls([{ name: 'quick', input: { q: 'a' } }, { name: 'quick', input: { q: 'b' } }]) }
        if (turn === 2) return { content: codeCalls([{ name: 'slow', input: { q: 'c' } }, { name: 'slow', input: { q: 'd' } }]) }
        return { content: [codeResult(request, 'done'), { type: 'text', text: 'all four' }] }
      }
      const run = await first.api('POST', '/runs', { input: 'go', tools: ['quick', 'slow'], code_execution: true, background: true })
      await expect.poll(() => tools.calls.filter((c) => c.path === '/delay/3000' && c.end === null).length, { timeout: 15_000, interval: 50 }).toBe(2)
      await first.kill()

      const second = await replicas.restart(first)
      const done = await second.waitForRunStatus(run.id, 'completed')
      expect(done.output_text).toBe('all four')
      expect(model.refusals).toEqual([])
      // One container, made by the first answer, named by every request after it, before and after the kill.
      expect(model.containers.size).toBe(1)
      const [container] = [...model.containers.keys()]
      expect(model.requests.length).toBeGreaterThanOrEqual(3)
      expect(model.requests.map((r) => r.body.container)).toEqual([undefined, ...model.requests.slice(1).map(() => container)])
      // The run object shows it too, as the replica that finished the run stored it.
      expect(done.container).toEqual({ id: container, expires_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) })
    }, 90_000)
  })
}
