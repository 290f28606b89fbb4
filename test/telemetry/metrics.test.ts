import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, startApp, TENANT_A, type StartedApp } from '../support/app.js'
import { sqliteBackend, startHarness, type Harness } from '../support/harness.js'
import { turnNumber } from '../support/fake-messages-api.js'
import { Metrics } from '../../src/telemetry/index.js'

const METRICS_TOKEN = 'metrics-token-0123456789abcdef'
const MODEL = 'claude-sonnet-4-6'

/** Prometheus text as `name{labels}` → value, labels in the order given. */
function parse (text: string): Map<string, number> {
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    samples.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return samples
}

async function scrape (app: StartedApp['app'], headers: Record<string, string> = { authorization: `Bearer ${METRICS_TOKEN}` }) {
  return await app.inject({ method: 'GET', url: '/metrics', headers })
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`metrics: ${backend.name}`, () => {
    let h: Harness
    let run: Record<string, any>
    let text: string
    let samples: Map<string, number>

    beforeAll(async () => {
      h = await startHarness(backend, { env: { METRICS_TOKEN } })
      await h.registerTool('good', '/ok', { effect: 'read_only' })
      await h.registerTool('broken', '/status/500', { effect: 'read_only' })
      await h.registerTool('slow', '/hang', { effect: 'read_only', timeout_ms: 200, max_attempts: 1 })
      await h.registerTool('picky', '/ok', { effect: 'read_only', input_schema: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] } })
      await h.registerTool('flaky', '/flaky/1/503', { effect: 'read_only', max_attempts: 2 })
      // The first model call is overloaded and retried; the second asks for five tools at once.
      h.model.respond = (request) => {
        if (request.index === 0) return { kind: 'error', status: 529, type: 'overloaded_error', headers: { 'retry-after-ms': '0' } }
        return turnNumber(request) === 1
          ? {
              content: ['good', 'broken', 'slow', 'picky', 'flaky'].map((name) => ({ type: 'tool_use' as const, name, input: { q: 'x' } }))
            }
          : { content: [{ type: 'text', text: 'done' }] }
      }
      run = (await h.startRun({ input: 'go', tools: ['good', 'broken', 'slow', 'picky', 'flaky'], model: MODEL })).body
      const res = await scrape(h.app)
      expect(res.statusCode).toBe(200)
      expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
      text = res.body
      samples = parse(text)
    })
    afterAll(async () => h?.close())

    it('counts the run, its steps, and its model calls with their retries, durations and tokens', async () => {
      expect(run.status).toBe('completed')
      expect(samples.get('switchboard_runs_started_total')).toBe(1)
      expect(samples.get('switchboard_runs_ended_total{status="completed",stop_reason="end_turn"}')).toBe(1)
      expect(samples.get('switchboard_steps_total')).toBe(2)
      expect(samples.get(`switchboard_model_calls_total{model="${MODEL}",outcome="ok"}`)).toBe(2)
      expect(samples.get(`switchboard_model_calls_total{model="${MODEL}",outcome="error"}`)).toBe(1)
      expect(samples.get(`switchboard_model_call_retries_total{model="${MODEL}"}`)).toBe(1)
      expect(samples.get(`switchboard_model_call_duration_seconds_count{model="${MODEL}",outcome="ok"}`)).toBe(2)
      expect(samples.get(`switchboard_model_call_duration_seconds_bucket{le="+Inf",model="${MODEL}",outcome="error"}`)).toBe(1)
      expect(samples.get(`switchboard_model_tokens_total{model="${MODEL}",type="input"}`)).toBe(run.usage.input_tokens)
      expect(samples.get(`switchboard_model_tokens_total{model="${MODEL}",type="output"}`)).toBe(run.usage.output_tokens)
      expect(samples.get('switchboard_model_calls_in_flight')).toBe(0)
    })

    it('counts tool calls by tool and outcome, with durations of those sent and their attempts', async () => {
      const calls = (tool: string, outcome: string) => samples.get(`switchboard_tool_calls_total{tool="${tool}",outcome="${outcome}"}`)
      expect(calls('good', 'ok')).toBe(1)
      expect(calls('broken', 'error')).toBe(1)
      expect(calls('slow', 'timeout')).toBe(1)
      expect(calls('picky', 'refused')).toBe(1)
      expect(calls('flaky', 'ok')).toBe(1)
      expect(samples.get('switchboard_tool_call_attempts_total{tool="flaky"}')).toBe(2)
      expect(samples.get('switchboard_tool_call_attempts_total{tool="good"}')).toBe(1)
      // A call refused before it was sent has no duration and no attempt.
      expect(samples.get('switchboard_tool_call_attempts_total{tool="picky"}')).toBeUndefined()
      expect(samples.get('switchboard_tool_call_duration_seconds_count{tool="picky",outcome="refused"}')).toBeUndefined()
      expect(samples.get('switchboard_tool_call_duration_seconds_count{tool="slow",outcome="timeout"}')).toBe(1)
      expect(samples.get('switchboard_tool_call_duration_seconds_bucket{le="0.1",tool="slow",outcome="timeout"}')).toBe(0)
      expect(samples.get('switchboard_tool_call_duration_seconds_count{tool="good",outcome="ok"}')).toBe(1)
      expect(samples.get('switchboard_tool_calls_in_flight')).toBe(0)
    })

    it('shows the runs this replica drives, the unfinished runs in storage, and the process', async () => {
      expect(samples.get('switchboard_runs_driving')).toBe(0)
      for (const status of ['queued', 'running', 'requires_action']) {
        expect(samples.get(`switchboard_runs_unfinished{status="${status}"}`)).toBe(0)
      }
      expect(samples.get('process_cpu_user_seconds_total')).toBeGreaterThan(0)
      expect(samples.get('nodejs_heap_size_used_bytes')).toBeGreaterThan(0)
    })

    it('never names a run, a URL, a tenant (but in the cost counters), a key or a payload', async () => {
      // The cost counters alone count by tenant (SPEC §17), a tenant of API_KEYS.
      const tenantFree = text.split('\n').filter((line) => !line.startsWith('switchboard_tenant_')).join('\n')
      expect(tenantFree).not.toContain(TENANT_A.id)
      for (const secret of [run.id, h.tools.url, '127.0.0.1', TENANT_A.key, METRICS_TOKEN, 'sk-ant-test-key-000', '"q"', 'done']) {
        expect(text).not.toContain(secret)
      }
      // Every label value of ours is from a small fixed set or a tool or model name.
      const allowed = new Set(['good', 'broken', 'slow', 'picky', 'flaky', MODEL, 'ok', 'error', 'timeout', 'refused', 'cancelled', 'completed', 'failed', 'end_turn', 'input', 'output', 'cache_creation_input', 'cache_read_input', 'queued', 'running', 'requires_action'])
      const costTypes = new Set(['input', 'output', 'cache_write_5m', 'cache_write_1h', 'cache_read'])
      for (const [series] of samples) {
        if (!series.startsWith('switchboard_')) continue
        for (const [, name, value] of series.matchAll(/(\w+)="([^"]*)"/g)) {
          if (name === 'le') continue
          if (series.startsWith('switchboard_tenant_') && name === 'tenant') expect(value).toBe(TENANT_A.id)
          else if (series.startsWith('switchboard_tenant_') && name === 'type') expect(costTypes).toContain(value)
          else expect(allowed, `${series}`).toContain(value)
        }
      }
    })
  })
}

describe('who may read /metrics', () => {
  const apps: StartedApp[] = []
  afterAll(async () => { await Promise.all(apps.map(async (a) => await a.close())) })
  async function start (env: Record<string, string | null>) {
    const started = await startApp(sqliteBackend, { env })
    apps.push(started)
    return started.app
  }

  it('with API_KEYS and no METRICS_TOKEN: refused, even with a tenant\'s key, saying to set METRICS_TOKEN', async () => {
    const app = await start({})
    for (const headers of [{}, auth(TENANT_A)]) {
      const res = await scrape(app, headers)
      expect(res.statusCode).toBe(401)
      expect(res.json()).toMatchObject({ statusCode: 401, code: 'AUTH_ERR_NO_METRICS_TOKEN', error: 'Unauthorized', requestId: expect.any(String) })
      expect(res.json().message).toContain('set METRICS_TOKEN')
    }
  })

  it('with METRICS_TOKEN: only that token, as a bearer token', async () => {
    const app = await start({ METRICS_TOKEN })
    const missing = await scrape(app, {})
    expect(missing.statusCode).toBe(401)
    expect(missing.json().code).toBe('AUTH_ERR_MISSING_KEY')
    for (const headers of [auth(TENANT_A), { authorization: `Bearer ${METRICS_TOKEN}x` }, { authorization: METRICS_TOKEN }]) {
      const res = await scrape(app, headers)
      expect(res.statusCode).toBe(401)
      expect(res.json().code).toBe('AUTH_ERR_INVALID_KEY')
      expect(res.body).not.toContain('switchboard_')
    }
    const ok = await scrape(app)
    expect(ok.statusCode).toBe(200)
    expect(ok.body).toContain('# TYPE switchboard_runs_started_total counter')
  })

  it('in open mode without METRICS_TOKEN: open', async () => {
    const app = await start({ API_KEYS: null })
    const res = await scrape(app, {})
    expect(res.statusCode).toBe(200)
    expect(res.body).toContain('switchboard_tool_calls_in_flight 0')
  })
})

describe('label values stay bounded', () => {
  it('tool and model names past the cap are counted as `other`', () => {
    const metrics = new Metrics()
    const tools = Array.from({ length: 250 }, (_, i) => metrics.toolLabel(`tool_${i}`))
    expect(new Set(tools).size).toBe(201)
    expect(tools.at(-1)).toBe('other')
    expect(metrics.toolLabel('tool_0')).toBe('tool_0')
    const models = Array.from({ length: 60 }, (_, i) => metrics.modelLabel(`model-${i}`))
    expect(models.filter((m) => m === 'other')).toHaveLength(10)
  })
})
