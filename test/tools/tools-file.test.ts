import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { backends } from '../support/backends.js'
import { auth, startApp, TENANT_A, TENANT_B } from '../support/app.js'
import { startServerProcess } from '../support/process.js'

const dir = mkdtempSync(join(tmpdir(), 'switchboard-tools-file-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

let files = 0
function toolsFile (text: string, extension = 'yaml'): string {
  const path = join(dir, `tools-${++files}.${extension}`)
  writeFileSync(path, text)
  return path
}

const SECRET = 'whsec_' + Buffer.alloc(32, 7).toString('base64')

const YAML = `
tenants:
  ${TENANT_A.id}:
    get_weather:
      description: Current weather for a city
      url: http://127.0.0.1:9/weather
      effect: read_only
      timeout_ms: 5000
      input_schema:
        type: object
        properties: { city: { type: string } }
        required: [city]
      headers:
        authorization: "Bearer \${WEATHER_TOKEN}"
      signing_secret: \${WEATHER_SECRET}
    get_time:
      description: The time in a timezone
      url: http://127.0.0.1:9/time
      input_schema: { type: object }
  ${TENANT_B.id}:
    lookup:
      description: Look a customer up
      url: http://127.0.0.1:9/lookup
      input_schema: { type: object }
`

for (const backend of backends) {
  describe.skipIf(backend.skip)(`TOOLS_FILE: ${backend.name}`, () => {
    it('registers the file\'s tools per tenant, with variables from the environment, read-only to the API', async () => {
      const path = toolsFile(YAML)
      const started = await startApp(backend, { env: { TOOLS_FILE: path, WEATHER_TOKEN: 'tok-from-env-55', WEATHER_SECRET: SECRET } })
      try {
        const weather = await started.app.inject({ method: 'GET', url: '/tools/get_weather', headers: auth(TENANT_A) })
        expect(weather.statusCode).toBe(200)
        expect(weather.json()).toMatchObject({ source: 'file', effect: 'read_only', timeout_ms: 5000, header_names: ['authorization'], parallel: true, max_attempts: 3 })
        const stored = await started.app.store.getTool(TENANT_A.id, 'get_weather')
        expect(stored!.headers).toEqual({ authorization: 'Bearer tok-from-env-55' })
        expect(stored!.signing_secrets[0]!.secret).toBe(SECRET)
        expect((await started.app.inject({ method: 'GET', url: '/tools/lookup', headers: auth(TENANT_B) })).statusCode).toBe(200)
        expect((await started.app.inject({ method: 'GET', url: '/tools/lookup', headers: auth(TENANT_A) })).statusCode).toBe(404)

        const put = await started.app.inject({ method: 'PUT', url: '/tools/get_weather', headers: auth(TENANT_A), payload: { description: 'x', url: 'http://127.0.0.1:9/', input_schema: { type: 'object' } } })
        expect(put.statusCode).toBe(409)
        expect(put.json()).toMatchObject({ code: 'TOOL_ERR_READ_ONLY' })
        expect(put.json().message).toContain('declared in TOOLS_FILE')
        const del = await started.app.inject({ method: 'DELETE', url: '/tools/get_weather', headers: auth(TENANT_A) })
        expect(del.statusCode).toBe(409)
      } finally {
        await started.close()
      }
    })

    it('makes the registry follow the file across restarts, leaving API tools alone', async () => {
      const location = await backend.location()
      try {
        const env = { WEATHER_TOKEN: 't', WEATHER_SECRET: SECRET }
        const first = await startApp(backend, { location, env: { ...env, TOOLS_FILE: toolsFile(YAML) } })
        await first.app.inject({ method: 'PUT', url: '/tools/from_api', headers: auth(TENANT_A), payload: { description: 'x', url: 'http://127.0.0.1:9/', input_schema: { type: 'object' } } })
        await first.close()

        const smaller = toolsFile(`{"tenants": {"${TENANT_A.id}": {"get_time": {"description": "The time, v2", "url": "http://127.0.0.1:9/time", "input_schema": {"type": "object"}}}}}`, 'json')
        const second = await startApp(backend, { location, env: { TOOLS_FILE: smaller } })
        try {
          const names = (await second.app.inject({ method: 'GET', url: '/tools', headers: auth(TENANT_A) })).json().data.map((t: { name: string }) => t.name).sort()
          expect(names).toEqual(['from_api', 'get_time'])
          expect((await second.app.inject({ method: 'GET', url: '/tools/get_time', headers: auth(TENANT_A) })).json().description).toBe('The time, v2')
          expect((await second.app.inject({ method: 'GET', url: '/tools/lookup', headers: auth(TENANT_B) })).statusCode).toBe(404)
        } finally {
          await second.close()
        }
      } finally {
        await location.destroy()
      }
    })
  })
}

describe('TOOLS_FILE refusals', () => {
  const sqlite = backends[0]!
  async function startError (text: string, env: Record<string, string> = {}, extension = 'yaml'): Promise<string> {
    try {
      const started = await startApp(sqlite, { env: { TOOLS_FILE: toolsFile(text, extension), ...env } })
      await started.close()
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError)
      return (err as Error).message
    }
    throw new Error('expected start-up to fail')
  }
  const tool = (fields: string) => `tenants:\n  ${TENANT_A.id}:\n    get_weather:\n${fields}`
  const base = '      description: d\n      url: http://127.0.0.1:9/\n      input_schema: { type: object }\n'

  it('names the tool and the field of a bad value', async () => {
    expect(await startError(tool(base + '      timeout_ms: 0\n'))).toMatch(/TOOLS_FILE .*: tool "get_weather" of tenant "acme": tool.timeout_ms must be >= 1\./)
    expect(await startError(tool('      url: http://127.0.0.1:9/\n      input_schema: { type: object }\n'))).toMatch(/tool "get_weather" of tenant "acme": tool is missing the required field "description"/)
    expect(await startError(tool(base + '      retries: 2\n'))).toMatch(/tool "get_weather" .*unknown field "retries"/)
  })

  it('checks tools as the API does', async () => {
    expect(await startError(tool('      description: d\n      url: http://127.0.0.1:9/\n      input_schema: { type: object, properties: { a: { type: nope } } }\n'))).toMatch(/tool "get_weather" of tenant "acme": input_schema does not compile/)
    expect(await startError(tool('      description: d\n      url: http://169.254.169.254/\n      input_schema: { type: object }\n'))).toMatch(/tool "get_weather" of tenant "acme": url is refused/)
  })

  it('refuses unknown tenants, missing variables, bad secrets and broken files', async () => {
    expect(await startError(`tenants:\n  nobody:\n    t:\n${base}`)).toMatch(/tenant "nobody" has no key in API_KEYS/)
    // eslint-disable-next-line no-template-curly-in-string -- the file's own ${VAR} syntax
    expect(await startError(tool(base + '      headers: { x-key: "${NOT_SET_ANYWHERE}" }\n'))).toMatch(/refers to \$\{NOT_SET_ANYWHERE\}, which is not set/)
    expect(await startError(tool(base + '      signing_secret: hunter2\n'))).toMatch(/signing_secret must be a Standard Webhooks secret/)
    expect(await startError('tenants: [')).toMatch(/is not valid YAML/)
    expect(await startError('{"tenants":', {}, 'json')).toMatch(/is not valid JSON/)
    expect(await startError('tools: []')).toMatch(/must hold a "tenants" mapping/)
  })

  it('stops the server process with the message', async () => {
    const server = await startServerProcess({ DATA_DIR: join(dir, 'data-process'), TOOLS_FILE: toolsFile(`tenants:\n  default:\n    get_weather:\n${base}      max_attempts: 99\n`) })
    const { code } = await server.exited
    expect(code).toBe(1)
    expect(server.output()).toMatch(/invalid configuration: TOOLS_FILE .*tool "get_weather" of tenant "default": tool.max_attempts must be <= 10/)
  })
})
