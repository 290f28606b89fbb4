import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { chromium, type Browser } from 'playwright-core'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { auth, TENANT_A } from '../support/app.js'
import { turnNumber } from '../support/fake-messages-api.js'
import { startHarness, type Harness } from '../support/harness.js'

/** What getComputedStyle answers in the page; this project's types know no DOM. */
interface Window { getComputedStyle: (element: unknown) => { fill: string } }

const CHROMIUM = '/usr/bin/chromium'
const RESULTS = fileURLToPath(new URL('../../.ci/results', import.meta.url))

// Eight calls the model asks for at once, each taking its own time; one times out, one fails.
const CALLS: Array<{ name: string, path: string, input: Record<string, string>, fields?: Record<string, unknown> }> = [
  { name: 'get_weather', path: '/delay/420', input: { q: 'Paris' } },
  { name: 'get_weather', path: '/delay/420', input: { q: 'Tokyo' } },
  { name: 'get_local_time', path: '/delay/180', input: { q: 'Paris' } },
  { name: 'convert_currency', path: '/delay/300', input: { q: 'EUR→JPY' } },
  { name: 'search_flights', path: '/delay/950', input: { q: 'CDG→HND' } },
  { name: 'find_hotels', path: '/delay/640', input: { q: 'Shinjuku' } },
  { name: 'lookup_order', path: '/slow-502', input: { q: 'o_42' }, fields: { max_attempts: 1 } },
  { name: 'check_visa', path: '/hang', input: { q: 'FR→JP' }, fields: { timeout_ms: 760, max_attempts: 1, effect: 'read_only' } }
]

let h: Harness
let browser: Browser | undefined
let base: string

beforeAll(async () => {
  h = await startHarness()
  h.tools.on('/slow-502', async (_req, res) => {
    await sleep(520)
    res.writeHead(502, { 'content-type': 'text/plain' })
    res.end('bad gateway: the order service is down')
  })
  const names = new Set<string>()
  for (const call of CALLS) {
    if (names.has(call.name)) continue
    names.add(call.name)
    await h.registerTool(call.name, call.path, { effect: 'read_only', ...call.fields })
  }
  // Step 2 retries once: the first attempt answers 503.
  await h.registerTool('book_table', '/flaky/1/503', { effect: 'idempotent' })
  base = await h.app.listen({ port: 0, host: '127.0.0.1' })
})

afterAll(async () => {
  await browser?.close()
  await h?.close()
})

it('draws the eight parallel calls of a finished run as overlapping bars in a real browser', async () => {
  // Not skipped when it is missing: CI installs it (.ci/run), and a skipped test proves nothing.
  expect(existsSync(CHROMIUM), `Chromium is missing at ${CHROMIUM}: apt-get install -y --no-install-recommends chromium`).toBe(true)

  // The same tool may be registered at one path only: the two get_weather calls share /delay/420.
  h.model.respond = (request) => {
    const turn = turnNumber(request)
    if (turn === 1) return { content: [{ type: 'text', text: 'Let me look all of that up at once.' }, ...CALLS.map((c) => ({ type: 'tool_use' as const, name: c.name, input: c.input }))] }
    if (turn === 2) return { content: [{ type: 'tool_use', name: 'book_table', input: { q: 'Tokyo, 8 pm' } }] }
    return { content: [{ type: 'text', text: 'All set.' }] }
  }
  const created = await fetch(`${base}/runs`, {
    method: 'POST',
    headers: { ...auth(TENANT_A), 'content-type': 'application/json' },
    body: JSON.stringify({ input: 'Plan my trip to Tokyo', tools: [...new Set([...CALLS.map((c) => c.name), 'book_table'])] })
  })
  const run = await created.json() as { status: string, timeline_url: string, tool_calls: { total: number } }
  expect(created.status, JSON.stringify(run)).toBe(200)
  expect(run.status).toBe('completed')
  expect(run.tool_calls.total).toBe(9)
  expect(run.timeline_url).toMatch(/^\/runs\/run_\w+\/timeline\?expires=\d+&sig=[\w-]+$/)

  // Playwright passes --headless and a fresh --user-data-dir itself.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  const context = await browser.newContext({ viewport: { width: 1280, height: 640 } })
  const page = await context.newPage()
  const blocked: string[] = []
  page.on('console', (message) => { if (/Content Security Policy/i.test(message.text())) blocked.push(message.text()) })
  // No API key: the signed link alone opens the page.
  const response = await page.goto(`${base}${run.timeline_url}`)
  expect(response?.status()).toBe(200)

  const bars = page.locator('g.row[data-step="1"] rect.bar.tool')
  await expect.poll(async () => await bars.count()).toBe(8)
  const boxes = []
  for (const bar of await bars.all()) {
    expect(await bar.isVisible()).toBe(true)
    const box = await bar.boundingBox()
    expect(box).not.toBeNull()
    expect(box!.width).toBeGreaterThan(4)
    boxes.push(box!)
  }
  // They ran together: some moment on screen lies within every one of the eight bars.
  const latestStart = Math.max(...boxes.map((b) => b.x))
  const earliestEnd = Math.min(...boxes.map((b) => b.x + b.width))
  expect(latestStart).toBeLessThan(earliestEnd)

  // Marked as a person sees it: the one that held the step up, the timeout, the error, the retry.
  await expect.poll(async () => await page.locator('g.row[data-step="1"] rect.bar.held').getAttribute('data-tool')).toBe('search_flights')
  const text = await page.locator('svg').textContent()
  expect(text).toContain('◆ held step up')
  expect(text).toContain('✕ timed out')
  expect(text).toContain('✕ error 502')
  expect(text).toContain('↻ 2 attempts')
  expect(await page.locator('.summary').textContent()).toMatch(/running them side by side saved \d/)
  // Nothing was refused by the page's Content-Security-Policy: its style sheet applied.
  expect(blocked).toEqual([])
  expect(await page.locator('rect.bar.tool.timeout').evaluate((el) => (globalThis as unknown as Window).getComputedStyle(el).fill)).toBe('rgb(232, 137, 28)')

  mkdirSync(RESULTS, { recursive: true })
  await page.screenshot({ path: join(RESULTS, 'timeline.png'), fullPage: true })
})
