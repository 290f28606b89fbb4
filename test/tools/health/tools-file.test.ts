import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { sqliteBackend } from '../../support/harness.js'
import { auth, startApp, TENANT_A } from '../../support/app.js'

const dir = mkdtempSync(join(tmpdir(), 'switchboard-health-file-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function toolsFile (name: string, fields: string): string {
  const path = join(dir, name)
  writeFileSync(path, `
tenants:
  ${TENANT_A.id}:
    get_weather:
      description: Current weather for a city
      url: http://127.0.0.1:9/weather
      input_schema: { type: object }
${fields}`)
  return path
}

describe('TOOLS_FILE: tool health fields', () => {
  it('takes circuit_breaker and cache_ttl_ms as PUT /tools does', async () => {
    const path = toolsFile('good.yaml', '      effect: read_only\n      cache_ttl_ms: 60000\n      circuit_breaker: { failures: 3, open_ms: 10000 }\n')
    const started = await startApp(sqliteBackend, { env: { TOOLS_FILE: path } })
    try {
      const tool = (await started.app.inject({ method: 'GET', url: '/tools/get_weather', headers: auth(TENANT_A) })).json()
      expect(tool).toMatchObject({ source: 'file', cache_ttl_ms: 60_000, circuit_breaker: { failures: 3, window_ms: 60_000, open_ms: 10_000 }, circuit: { state: 'closed' } })
    } finally {
      await started.close()
    }
  })

  it('refuses to start on a cache for a tool that is not read_only, or a breaker field it does not know', async () => {
    await expect(startApp(sqliteBackend, { env: { TOOLS_FILE: toolsFile('writer.yaml', '      effect: idempotent\n      cache_ttl_ms: 1000\n') } }))
      .rejects.toThrow(/tool "get_weather" of tenant "acme": cache_ttl_ms is only for read_only tools/)
    await expect(startApp(sqliteBackend, { env: { TOOLS_FILE: toolsFile('typo.yaml', '      circuit_breaker: { failure: 3 }\n') } }))
      .rejects.toThrow(/tool "get_weather" of tenant "acme": .*circuit_breaker/)
  })
})
