import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { startServerProcess } from '../support/process.js'
import { TENANT_A } from '../support/app.js'

const dirs: string[] = []
function dataDir (): string {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-e2e-'))
  dirs.push(dir)
  return dir
}
afterAll(() => { for (const dir of dirs) rmSync(dir, { recursive: true, force: true }) })

describe('the server process', () => {
  it('stops with a non-zero exit and a message naming the variable when a setting is bad', async () => {
    const server = await startServerProcess({ PORT: 'abc', DATA_DIR: dataDir() })
    const { code } = await server.exited
    expect(code).not.toBe(0)
    expect(server.output()).toContain('invalid configuration: PORT must be integer')
  })

  it('refuses to start in production without API keys', async () => {
    const server = await startServerProcess({ NODE_ENV: 'production', DATA_DIR: dataDir() })
    const { code } = await server.exited
    expect(code).toBe(1)
    expect(server.output()).toContain('API_KEYS is empty but NODE_ENV=production')
  })

  it('serves, keeps its data in DATA_DIR, demands keys when configured, and exits 0 on SIGTERM', async () => {
    const dir = dataDir()
    const server = await startServerProcess({ DATA_DIR: dir, API_KEYS: `${TENANT_A.id}:${TENANT_A.key}`, HOST: '127.0.0.1' })
    await server.ready()
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200)
    expect(await (await fetch(`${server.url}/readyz`)).json()).toEqual({ status: 'ready' })
    const denied = await fetch(`${server.url}/tools`)
    expect(denied.status).toBe(401)
    expect(((await denied.json()) as { code: string }).code).toBe('AUTH_ERR_MISSING_KEY')
    const allowed = await fetch(`${server.url}/tools`, { headers: { authorization: `Bearer ${TENANT_A.key}` } })
    expect(allowed.status).toBe(200)
    expect(readdirSync(dir)).toContain('switchboard.db')

    server.child.kill('SIGTERM')
    const { code } = await server.exited
    expect(code).toBe(0)
    expect(server.output()).toContain('"shutting down"')
  })

  it('announces open mode and binds to loopback', async () => {
    const server = await startServerProcess({ DATA_DIR: dataDir() })
    await server.ready()
    expect(server.output()).toContain('open mode')
    expect(server.output()).toContain('Server listening at http://127.0.0.1:')
    server.child.kill('SIGTERM')
    expect((await server.exited).code).toBe(0)
  })

  it('refuses to share a DATA_DIR with another running process', async () => {
    const dir = dataDir()
    const first = await startServerProcess({ DATA_DIR: dir })
    await first.ready()
    try {
      const second = await startServerProcess({ DATA_DIR: dir })
      const { code } = await second.exited
      expect(code).toBe(1)
      expect(second.output()).toContain('is in use by another Switchboard process')
      // The first one is unharmed.
      expect((await fetch(`${first.url}/readyz`)).status).toBe(200)
    } finally {
      first.child.kill('SIGTERM')
      await first.exited
    }
  })

  it('reopens a DATA_DIR whose process was killed with SIGKILL: the lock dies with the process', async () => {
    const dir = dataDir()
    const first = await startServerProcess({ DATA_DIR: dir })
    await first.ready()
    first.child.kill('SIGKILL')
    await first.exited
    const second = await startServerProcess({ DATA_DIR: dir })
    await second.ready()
    second.child.kill('SIGTERM')
    expect((await second.exited).code).toBe(0)
  })
})
