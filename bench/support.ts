import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Agent, request } from 'undici'
import { freePort } from '../test/support/process.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

export interface BenchOptions {
  readonly quick: boolean
  readonly log: (line: string) => void
}

export function median (values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export interface Switchboard {
  readonly url: string
  readonly child: ChildProcess
  api: (method: string, path: string, body?: unknown) => Promise<any>
  stop: () => Promise<void>
}

/**
 * Switchboard as its own process, built as it ships (`dist/server.js`, so `npm run build` first),
 * in open mode on a free loopback port with SQLite in a temporary folder, or on PostgreSQL when
 * DATABASE_URL is given. `nodeArgs` (by default BENCH_NODE_ARGS, split on spaces) go to node before
 * the script: `BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=prof' npm run bench` profiles the service.
 */
export async function startSwitchboard (env: Record<string, string>, nodeArgs: readonly string[] = process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? []): Promise<Switchboard> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-'))
  const port = await freePort()
  const child = spawn(process.execPath, [...nodeArgs, 'dist/server.js'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn', ANTHROPIC_API_KEY: 'bench', TOOL_EGRESS_ALLOW: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`switchboard exited:\n${output}`)
    try {
      const res = await fetch(`${url}/readyz`)
      if (res.status === 200) break
    } catch {}
    if (Date.now() > deadline) throw new Error(`switchboard not ready:\n${output}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const agent = new Agent({ connections: 512, keepAliveTimeout: 30_000 })
  return {
    url,
    child,
    api: async (method, path, body) => {
      const res = await request(`${url}${path}`, {
        dispatcher: agent,
        method: method as 'GET',
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: 600_000,
        bodyTimeout: 600_000
      })
      const json = await res.body.json()
      if (res.statusCode >= 400) throw new Error(`${method} ${path}: ${res.statusCode} ${JSON.stringify(json)}`)
      return json
    },
    stop: async () => {
      await agent.close()
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
}
