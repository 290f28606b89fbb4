import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect, it } from 'vitest'
import { freePort } from '../support/process.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

it('npm run demo answers its question offline, with the tool calls run side by side', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-demo-'))
  try {
    const child = spawn(process.execPath, ['--import', 'tsx', 'demo/run.ts', '--once'], {
      cwd: ROOT,
      // No ANTHROPIC_API_KEY: the demo must work offline.
      env: { PATH: process.env.PATH ?? '', PORT: String(await freePort()), DATA_DIR: dataDir },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
    expect(code, output).toBe(0)
    expect(output).toContain('model: offline fake of the Messages API')
    expect(output).toMatch(/step 1: the model asked for 6 tools/)
    for (const city of ['Paris', 'Tokyo', 'New York']) expect(output).toContain(`get_weather {"city":"${city}"}`)
    expect(output).toMatch(/A: Here is what I found:\n- Paris: 14 °C, light rain/)
    expect(output).toMatch(/6 tool calls \(0 errors\)/)
    const [timeline] = /http:\/\/127\.0\.0\.1:\d+\/runs\/run_\w+\/timeline\?expires=\d+&sig=[\w-]+/.exec(output) ?? []
    expect(timeline, output).toBeDefined()
    const [, together, alone] = /the calls took (\d+) ms side by side; one after another they would have taken (\d+) ms/.exec(output)!
    expect(Number(together)).toBeLessThan(Number(alone))
    // The forecast's tool answers later: the request answered with the run waiting, the result came after.
    expect(output).toMatch(/run running, waiting for get_forecast/)
    expect(output).toMatch(/A: Here is what I found:\n- Paris, next 3 days: 13 to 15 °C, light rain/)
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
  }
})
