import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { TENANT_A } from '../../support/app.js'
import { startServerProcess, type ServerProcess } from '../../support/process.js'
import { resultText, startFakeMessagesApi, toolResults, turnNumber, type FakeMessagesApi } from '../../support/fake-messages-api.js'
import { McpTestServer } from '../../support/mcp-server.js'
import { findTranscriptProblem } from '../../../src/runs/transcript.js'

/**
 * Crash recovery of MCP calls (SPEC §7, §11), with real processes: a replica (`server.ts`) is
 * killed with SIGKILL while its MCP calls are in flight, and another takes the run over.
 */

const headers = { authorization: `Bearer ${TENANT_A.key}`, 'content-type': 'application/json' }
const slow = async (): Promise<{ content: Array<{ type: 'text', text: string }> }> => {
  await sleep(1500)
  return { content: [{ type: 'text', text: 'slow ok' }] }
}

let model: FakeMessagesApi
let mcp: McpTestServer
const processes: ServerProcess[] = []

beforeAll(async () => {
  model = await startFakeMessagesApi()
  mcp = await new McpTestServer([
    { name: 'read_slow', annotations: { readOnlyHint: true }, run: slow },
    { name: 'write_slow', annotations: { destructiveHint: true }, run: slow }
  ]).start()
})
afterAll(async () => {
  await Promise.all([model.close(), mcp.close()])
})
afterEach(async () => {
  for (const p of processes.splice(0)) {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
    await p.exited
  }
})

async function replica (env: Record<string, string>): Promise<ServerProcess> {
  const p = await startServerProcess({
    API_KEYS: `${TENANT_A.id}:${TENANT_A.key}`,
    HOST: '127.0.0.1',
    ANTHROPIC_BASE_URL: model.url,
    ANTHROPIC_API_KEY: 'sk-test',
    TOOL_EGRESS_ALLOW: '127.0.0.1',
    RUN_LEASE_MS: '2000',
    LOG_LEVEL: 'info',
    ...env
  })
  processes.push(p)
  await p.ready()
  return p
}

async function api (server: ServerProcess, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`${server.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  return await res.json()
}

describe('MCP calls after a replica is killed mid-step', () => {
  it('a read_only call is sent again with the same idempotency key; a side_effecting one is reported as an unknown outcome', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-mcp-restart-'))
    try {
      const first = await replica({ DATA_DIR: dataDir })
      const registered = await api(first, 'PUT', '/mcp-servers/slow', { url: mcp.url, trust_annotations: true })
      expect(registered.tools.map((t: any) => [t.run_name, t.effect])).toEqual([['slow__read_slow', 'read_only'], ['slow__write_slow', 'side_effecting']])
      model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'slow__read_slow', input: { q: 'r' } }, { type: 'tool_use', name: 'slow__write_slow', input: { q: 'w' } }] }
        : { content: [{ type: 'text', text: toolResults(request).map((r) => `${r.is_error === true ? 'ERR' : 'OK'}: ${resultText(r)}`).join(' | ') }] }
      const run = await api(first, 'POST', '/runs', { input: 'go', mcp_servers: ['slow'], background: true })
      await expect.poll(() => mcp.calls.filter((c) => c.end === null).length, { timeout: 10_000 }).toBe(2)
      first.child.kill('SIGKILL')
      await first.exited

      const second = await replica({ DATA_DIR: dataDir })
      let done: any
      await expect.poll(async () => { done = await api(second, 'GET', `/runs/${run.id as string}?include=messages`); return done.status }, { timeout: 30_000, interval: 200 }).toBe('completed')
      expect(done.output_text).toBe('OK: slow ok | ERR: outcome unknown: the call was in flight when its replica stopped')
      expect(mcp.callsOf('write_slow')).toHaveLength(1)
      const reads = mcp.callsOf('read_slow')
      expect(reads).toHaveLength(2)
      expect(new Set(reads.map((c) => c.meta?.['switchboard/idempotency_key'])).size).toBe(1)
      // The resumed run sent the model the same tools as before the kill.
      const firstText = (content: unknown): unknown => typeof content === 'string' ? content : (content as Array<{ text?: string }>)[0]?.text
      const runRequests = model.requests.filter((r) => firstText(r.body.messages[0].content) === 'go')
      expect(runRequests.length).toBeGreaterThanOrEqual(2)
      for (const request of runRequests) expect(request.body.tools.map((t: any) => t.name)).toEqual(['slow__read_slow', 'slow__write_slow'])
      expect(done.messages.at(-1).role).toBe('assistant')
      expect(findTranscriptProblem(done.messages.slice(0, -1))).toBeNull()
      expect(model.refusals).toEqual([])
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  }, 90_000)
})
