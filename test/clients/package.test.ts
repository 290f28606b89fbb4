import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { toolsThenAnswer } from '../support/fake-messages-api.js'

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('../..', import.meta.url))

// What a user of the package writes, run by plain Node (no TypeScript loader) against the package
// as built (`npm run build:clients`), imported by its name.
const USER_CODE = `
import { createServer } from 'node:http'
import { createToolHandler, registerTools, Switchboard, ToolSecrets, NotFoundError } from '@switchboard/client'

const client = new Switchboard()   // SWITCHBOARD_BASE_URL and SWITCHBOARD_API_KEY
const tools = {
  get_weather: {
    description: 'Current weather for a city',
    input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    effect: 'read_only',
    handler: async ({ city }) => ({ city, temperature_c: 14 })
  }
}
const secrets = new ToolSecrets()
const server = createServer(createToolHandler({ secrets, tools }))
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
await registerTools(client, { url: 'http://127.0.0.1:' + server.address().port + '/', tools, secrets })
const types = []
const stream = client.runs.stream({ input: 'Weather in Paris?', tools: ['get_weather'] })
for await (const event of stream) types.push(event.type)
const missing = await client.runs.get('run_00000000000000000000000000').catch((err) => err)
console.log(JSON.stringify({ runId: stream.runId, types, notFound: missing instanceof NotFoundError, code: missing.code }))
server.close()
`

describe('the client package, built and imported by its name in plain Node', () => {
  let h: Harness
  let base: string
  beforeAll(async () => {
    h = await startHarness()
    base = await h.app.listen({ port: 0, host: '127.0.0.1' })
    h.model.respond = toolsThenAnswer([{ name: 'get_weather', input: { city: 'Paris' } }])
    await run('npm', ['run', 'build:clients'], { cwd: ROOT })
  })
  afterAll(async () => { await h?.close() })

  it('starts a run, follows it and hosts its tool', async () => {
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', USER_CODE], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', SWITCHBOARD_BASE_URL: base, SWITCHBOARD_API_KEY: TENANT_A.key }
    })
    const out = JSON.parse(stdout.trim().split('\n').at(-1)!)
    expect(out.types[0]).toBe('run.created')
    expect(out.types).toContain('tool_call.completed')
    expect(out.types.at(-1)).toBe('run.completed')
    expect(out).toMatchObject({ notFound: true, code: 'RUN_ERR_NOT_FOUND' })
    const completed = (await h.events(out.runId)).find((e) => e.type === 'tool_call.completed')!
    expect(completed.data).toMatchObject({ name: 'get_weather', is_error: false })
    expect(JSON.parse(completed.data.content as string)).toEqual({ city: 'Paris', temperature_c: 14 })
  })
})
