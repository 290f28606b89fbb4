import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServerProcess } from '../support/process.js'
import { startFakeMessagesApi, turnNumber, type FakeMessagesApi } from '../support/fake-messages-api.js'
import { startWebhookServer, type WebhookServer } from '../support/webhook-server.js'

describe('SIGTERM with runs in flight', () => {
  let model: FakeMessagesApi
  let tools: WebhookServer
  let dataDir: string
  beforeAll(async () => {
    model = await startFakeMessagesApi((request) => turnNumber(request) === 1
      ? { content: [{ type: 'tool_use', name: 'slow', input: {} }] }
      : { content: [{ type: 'text', text: 'finished' }] })
    tools = await startWebhookServer()
    dataDir = mkdtempSync(join(tmpdir(), 'switchboard-shutdown-'))
  })
  afterAll(async () => {
    await Promise.all([model.close(), tools.close()])
    rmSync(dataDir, { recursive: true, force: true })
  })

  async function start (graceMs: number) {
    const server = await startServerProcess({
      DATA_DIR: dataDir, ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test', TOOL_EGRESS_ALLOW: '127.0.0.1', SHUTDOWN_GRACE_MS: String(graceMs)
    })
    await server.ready()
    return server
  }

  async function register (url: string, path: string): Promise<void> {
    const res = await fetch(`${url}/tools/slow`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ description: 'slow', input_schema: { type: 'object' }, url: `${tools.url}${path}`, timeout_ms: 120_000 })
    })
    expect(res.status).toBeLessThan(300)
  }

  it('lets the step in progress finish and be stored, hands the run back before the next, exits 0; a restart finishes it', async () => {
    const server = await start(10_000)
    await register(server.url, '/delay/1500')
    const pending = fetch(`${server.url}/runs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input: 'x', tools: ['slow'] }) })
    await expect.poll(() => tools.callsTo('/delay/1500').length).toBe(1)
    server.child.kill('SIGTERM')
    const res = await pending
    expect(res.status).toBe(503)
    expect(((await res.json()) as { code: string }).code).toBe('SERVICE_ERR_DRAINING')
    const location = res.headers.get('location')!
    expect((await server.exited).code).toBe(0)
    // The step was not cut: its call finished, and its result was stored.
    const call = tools.callsTo('/delay/1500')[0]!
    expect(call.aborted).toBe(false)
    const restarted = await start(10_000)
    try {
      await expect.poll(async () => ((await (await fetch(`${restarted.url}${location}`)).json()) as { status: string }).status, { timeout: 15_000 }).toBe('completed')
      const run = (await (await fetch(`${restarted.url}${location}`)).json()) as { output_text: string, steps: number }
      expect(run).toMatchObject({ output_text: 'finished', steps: 2 })
      // Resumed from the stored step: the tool was not called again.
      expect(tools.callsTo('/delay/1500')).toHaveLength(1)
    } finally {
      restarted.child.kill('SIGTERM')
      await restarted.exited
    }
  })

  it('while draining, answers new requests 503 SERVICE_ERR_DRAINING in the error shape with retry-after; /healthz answers, /readyz fails', async () => {
    const server = await start(10_000)
    await register(server.url, '/delay/4000')
    const pending = fetch(`${server.url}/runs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input: 'x', tools: ['slow'] }) })
    await expect.poll(() => tools.callsTo('/delay/4000').length).toBe(1)
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200)
    server.child.kill('SIGTERM')
    // The drain has begun once /readyz fails; the run's step still holds the process open.
    await expect.poll(async () => (await fetch(`${server.url}/readyz`)).status).toBe(503)

    for (const [method, path] of [['GET', '/tools'], ['POST', '/runs'], ['GET', '/runs/run_00000000000000000000000000'], ['GET', '/nowhere']] as const) {
      const res = await fetch(`${server.url}${path}`, {
        method,
        headers: { 'content-type': 'application/json', 'x-request-id': `drain-${method}-${path.length}` },
        ...(method === 'POST' ? { body: JSON.stringify({ input: 'x' }) } : {})
      })
      expect(res.status, path).toBe(503)
      expect(res.headers.get('retry-after'), path).toBe('1')
      expect(res.headers.get('x-request-id'), path).toBe(`drain-${method}-${path.length}`)
      expect(res.headers.get('connection'), path).toBe('close')
      expect(await res.json()).toEqual({
        statusCode: 503,
        code: 'SERVICE_ERR_DRAINING',
        error: 'Service Unavailable',
        message: 'This replica is shutting down: send the request to another one (retry after the retry-after header).',
        requestId: `drain-${method}-${path.length}`
      })
    }
    const ready = await fetch(`${server.url}/readyz`, { headers: { 'x-request-id': 'drain-ready' } })
    expect(ready.status).toBe(503)
    expect(await ready.json()).toMatchObject({ statusCode: 503, code: 'SERVICE_ERR_DRAINING', requestId: 'drain-ready' })
    const alive = await fetch(`${server.url}/healthz`)
    expect(alive.status).toBe(200)
    expect(await alive.json()).toEqual({ status: 'ok' })

    // The run in flight was not disturbed: its step finished within the grace period.
    expect((await pending).status).toBe(503)
    expect((await server.exited).code).toBe(0)
    expect(tools.callsTo('/delay/4000')[0]!.aborted).toBe(false)
  })

  it('past the grace period, hands the run back, answers its sync caller 503 with a Location, and still exits 0', async () => {
    const server = await start(500)
    await register(server.url, '/delay/60000')
    const pending = fetch(`${server.url}/runs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input: 'x', tools: ['slow'] }) })
    await expect.poll(() => tools.callsTo('/delay/60000').length).toBe(1)
    server.child.kill('SIGTERM')
    const res = await pending
    expect(res.status).toBe(503)
    const body = await res.json() as { code: string, message: string }
    expect(body.code).toBe('SERVICE_ERR_DRAINING')
    expect(res.headers.get('location')).toMatch(/^\/runs\/run_/)
    // 0, not the 1 of close-with-grace forcing the exit: nothing was left hanging.
    expect((await server.exited).code).toBe(0)
    expect(server.output()).toContain('"run handed back"')
    // The tool's connection was closed, not left hanging.
    await expect.poll(() => tools.callsTo('/delay/60000')[0]!.aborted).toBe(true)
  })
})
