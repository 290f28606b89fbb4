import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { auth, startApp, TENANT_A, type StartedApp } from '../support/app.js'
import { backends } from '../support/backends.js'
import { freePort } from '../support/process.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

interface Service { readonly url: string, readonly child: ChildProcess, output: () => string }

/** Starts a demo service as docker-compose.yml does: a process of its own, told PORT and HOST. */
async function startService (script: string, env: Record<string, string> = {}): Promise<Service> {
  const port = await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', PORT: String(port), HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 30_000
  while (!output.includes(url)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${script} exited:\n${output}`)
    if (Date.now() > deadline) throw new Error(`${script} did not say it listens on ${url} within 30 s:\n${output}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return { url, child, output: () => output }
}

async function stop (service: Service | undefined): Promise<void> {
  if (service === undefined || service.child.exitCode !== null) return
  const exited = new Promise((resolve) => service.child.once('exit', resolve))
  service.child.kill('SIGTERM')
  await exited
}

const WEATHER = {
  description: 'Current weather for a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  effect: 'read_only'
}

describe('the demo tool server and fake Messages API on their own, as the compose stack runs them', () => {
  let tools: Service | undefined
  let model: Service | undefined
  beforeAll(async () => {
    [tools, model] = await Promise.all([startService('demo/tool-server.ts'), startService('demo/model-server.ts')])
  })
  afterAll(async () => {
    await Promise.all([stop(tools), stop(model)])
  })

  for (const backend of backends) {
    describe.skipIf(backend.skip)(backend.name, () => {
      let started: StartedApp | undefined
      beforeAll(async () => {
        started = await startApp(backend, { env: { ANTHROPIC_BASE_URL: model!.url, ANTHROPIC_API_KEY: 'offline-demo' } })
      })
      afterAll(async () => { await started?.close() })

      async function api (method: 'GET' | 'PUT' | 'POST', url: string, payload?: unknown) {
        const res = await started!.app.inject({ method, url, headers: auth(TENANT_A), ...(payload === undefined ? {} : { payload: payload as object }) })
        return { status: res.statusCode, body: res.json() }
      }

      it('a run gets its answer from the model service, with the tool server answering each call', async () => {
        const tool = await api('PUT', '/tools/get_weather', { ...WEATHER, url: `${tools!.url}/tools/get_weather` })
        expect(tool.status, JSON.stringify(tool.body)).toBe(201)
        const run = await api('POST', '/runs', { input: 'What is the weather in Paris and Tokyo?', tools: ['get_weather'] })
        expect(run.status, JSON.stringify(run.body)).toBe(200)
        expect(run.body.status).toBe('completed')
        expect(run.body.tool_calls).toEqual({ total: 2, errors: 0 })
        expect(run.body.output_text).toContain('Paris: 14 °C, light rain')
        expect(run.body.output_text).toContain('Tokyo: 19 °C, clear skies')
      })

      it('?delay_ms on a tool URL makes the tool that slow: past its timeout_ms, the call times out', async () => {
        const tool = await api('PUT', '/tools/get_weather', { ...WEATHER, url: `${tools!.url}/tools/get_weather?delay_ms=5000`, timeout_ms: 300, max_attempts: 1 })
        expect(tool.status, JSON.stringify(tool.body)).toBeLessThan(300)
        const run = await api('POST', '/runs', { input: 'What is the weather in Paris?', tools: ['get_weather'] })
        expect(run.body.status).toBe('completed')
        expect(run.body.tool_calls).toEqual({ total: 1, errors: 1 })
        expect(run.body.output_text).toMatch(/a tool failed: Tool get_weather timed out after 300 ms/)
      })

      it('get_forecast answers later, as in the compose stack: the server registers it itself to sign its result, and posts it to SWITCHBOARD_URL, not the address the run was created through', async () => {
        const switchboard = await started!.app.listen({ port: 0, host: '127.0.0.1' })
        const later = await startService('demo/tool-server.ts', { SWITCHBOARD_URL: switchboard, SWITCHBOARD_API_KEYS: started!.config.API_KEYS })
        try {
          for (let i = 0; i < 300 && !later.output().includes('registered get_forecast'); i++) await new Promise((resolve) => setTimeout(resolve, 50))
          expect(later.output()).toContain(`registered get_forecast with ${switchboard}`)
          // Created through another address than the tools reach (inject's http://localhost:80).
          const run = await api('POST', '/runs', { input: 'What is the forecast for Paris?', tools: ['get_forecast'] })
          expect(run.body).toMatchObject({ status: 'running', pending_tool_calls: [{ name: 'get_forecast' }] })
          let done = run.body
          for (let i = 0; i < 300 && done.status === 'running'; i++) {
            await new Promise((resolve) => setTimeout(resolve, 50))
            done = (await api('GET', `/runs/${String(run.body.id)}`)).body
          }
          expect(done).toMatchObject({ status: 'completed', tool_calls: { total: 1, errors: 0 } })
          expect(done.output_text).toContain('Paris')
        } finally {
          await stop(later)
        }
      })
    })
  }
})
