import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { callCost, parsePriceLines, parseTenantBudgets, budgetWindow, PriceTable } from '../../src/cost/index.js'
import { configError } from '../support/config.js'
import { loadConfig } from '../../src/config.js'
import { BASE_ENV } from '../support/app.js'

const table = PriceTable.withDefaults()

function pricesFile (text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'switchboard-prices-')), 'prices.txt')
  writeFileSync(path, text)
  return path
}

describe('the price table', () => {
  it('prices a model by its family, dated or not, and never by a neighbouring family', () => {
    expect(table.pricesOf('claude-sonnet-4-5', 10)).toMatchObject({ input: 3, output: 15, cache_write_5m: 3.75, cache_write_1h: 6, cache_read: 0.3 })
    expect(table.pricesOf('claude-sonnet-4-5-20250929', 10)).toMatchObject({ input: 3 })
    expect(table.pricesOf('claude-opus-4-1-20250805', 10)).toMatchObject({ input: 15, output: 75 })
    expect(table.pricesOf('claude-3-5-haiku-latest', 10)).toMatchObject({ input: 0.8, output: 4 })
    // Not Opus 4's price, nor anyone's: a model the table does not know has none.
    expect(table.has('claude-opus-4-9')).toBe(false)
    expect(table.has('claude-sonnet-4-5-extra')).toBe(false)
    expect(table.has('gpt-4o')).toBe(false)
  })

  it('charges a long prompt at its tier: Sonnet 4.5 past 200,000 prompt tokens', () => {
    expect(table.pricesOf('claude-sonnet-4-5', 200_000)).toMatchObject({ input: 3 })
    expect(table.pricesOf('claude-sonnet-4-5', 200_001)).toMatchObject({ input: 6, output: 22.5, cache_read: 0.6 })
  })

  it('a file replaces a family\'s prices and adds new families; the rest stay built in', () => {
    const file = parsePriceLines('# ours\nclaude-sonnet-4-5  1 2 3 4 0.5\nacme-model-1 0.25 1.25 0.3 0.5 0.03  # an in-house model\n', 'f')
    const merged = PriceTable.withDefaults(file)
    expect(merged.pricesOf('claude-sonnet-4-5', 300_000)).toMatchObject({ input: 1, output: 2 })
    expect(merged.pricesOf('acme-model-1', 1)).toMatchObject({ input: 0.25 })
    expect(merged.pricesOf('claude-haiku-4-5', 1)).toMatchObject({ input: 1 })
  })
})

describe('MODEL_PRICES_FILE: a bad file stops start-up, naming the line', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['too few prices', 'claude-x 1 2 3\n', /line 1: expected a model family and five prices.*got 4 fields/],
    ['a price that is no number', '# comment\n\nclaude-x 1 2 3 4 cheap\n', /line 3: cache_read of claude-x is "cheap"/],
    ['a negative price', 'claude-x 1 -2 3 4 5\n', /line 1: output of claude-x is "-2"/],
    ['a bad tier', 'claude-x 1 2 3 4 5 over200k\n', /line 1: "over200k" should be prompt>N/],
    ['a family given twice', 'claude-x 1 2 3 4 5\nclaude-x 1 2 3 4 5\n', /line 2: claude-x already has prices/],
    ['only a long-prompt tier', 'claude-x 1 2 3 4 5 prompt>1000\n', /claude-x has prices only for long prompts/],
    ['a family that is no name', 'Claude-X 1 2 3 4 5\n', /line 1: "Claude-X" is not a model family/]
  ]
  for (const [name, text, message] of cases) {
    it(name, () => {
      const path = pricesFile(text)
      const error = configError({ ...BASE_ENV, MODEL_PRICES_FILE: path })
      expect(error).toContain(`MODEL_PRICES_FILE ${path}`)
      expect(error).toMatch(message)
    })
  }

  it('a file that cannot be read', () => {
    expect(configError({ ...BASE_ENV, MODEL_PRICES_FILE: '/nonexistent/prices.txt' })).toMatch(/MODEL_PRICES_FILE \/nonexistent\/prices.txt cannot be read/)
  })

  it('a good file is taken', () => {
    const config = loadConfig({ ...BASE_ENV, MODEL_PRICES_FILE: pricesFile('claude-in-house 2 8 2.5 4 0.2\n') })
    expect(config.prices.pricesOf('claude-in-house', 5)).toMatchObject({ input: 2, output: 8 })
  })
})

describe('the cost of one model call', () => {
  it('adds input, output, 5-minute and 1-hour cache writes and cache reads, each at its price', () => {
    // Sonnet 4.5: 1000 × $3 + 500 × $15 + 2000 × $3.75 + 400 × $6 + 10,000 × $0.30, per million.
    const cost = callCost('claude-sonnet-4-5-20250929', {
      input_tokens: 1000,
      output_tokens: 500,
      cache_creation_input_tokens: 2400,
      cache_creation: { ephemeral_5m_input_tokens: 2000, ephemeral_1h_input_tokens: 400 },
      cache_read_input_tokens: 10_000
    }, table)
    expect(cost.tokens).toEqual({ input: 1000, output: 500, cacheWrite5m: 2000, cacheWrite1h: 400, cacheRead: 10_000 })
    expect(cost.nanoUsd! / 1e9).toBe(0.0234)
  })

  it('counts cache writes without a split as 5-minute writes', () => {
    const cost = callCost('claude-haiku-4-5', { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 1_000_000 }, table)
    expect(cost.nanoUsd! / 1e9).toBe(1.25)
  })

  it('sums the iterations when the API lists them: compaction is billed though not in the top-level counts', () => {
    const cost = callCost('claude-sonnet-4-5', {
      input_tokens: 3000,
      output_tokens: 200,
      iterations: [
        { type: 'compaction', input_tokens: 150_000, output_tokens: 3000, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
        { type: 'message', input_tokens: 3000, output_tokens: 200, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 }
      ]
    }, table)
    // (150,000 + 3000) × $3 + (3000 + 200) × $15, per million.
    expect(cost.tokens).toMatchObject({ input: 153_000, output: 3200 })
    expect(cost.nanoUsd! / 1e9).toBe(0.507)
  })

  it('prices an iteration of another model (an advisor) at that model\'s prices', () => {
    const cost = callCost('claude-haiku-4-5', {
      input_tokens: 100,
      output_tokens: 10,
      iterations: [
        { type: 'message', input_tokens: 1000, output_tokens: 100, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
        { type: 'advisor_message', model: 'claude-opus-4-5', input_tokens: 1000, output_tokens: 100, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 }
      ]
    }, table)
    // Haiku 4.5: 1000 × $1 + 100 × $5; Opus 4.5: 1000 × $5 + 100 × $25, per million.
    expect(cost.nanoUsd! / 1e9).toBe(0.009)
  })

  it('has no cost, rather than a wrong one, for a model without a price, an iteration of one, or a fast call', () => {
    expect(callCost('claude-unknown-9', { input_tokens: 10, output_tokens: 10 }, table).nanoUsd).toBeNull()
    expect(callCost('claude-haiku-4-5', { input_tokens: 10, output_tokens: 10, iterations: [{ type: 'fallback_message', model: 'claude-new-1', input_tokens: 10, output_tokens: 10 }] }, table).nanoUsd).toBeNull()
    expect(callCost('claude-haiku-4-5', { input_tokens: 10, output_tokens: 10, speed: 'fast' }, table).nanoUsd).toBeNull()
    expect(callCost('claude-haiku-4-5', { input_tokens: 10, output_tokens: 10, speed: 'standard' }, table).nanoUsd).toBe(60_000)
  })
})

describe('TENANT_BUDGETS', () => {
  it('parses a budget per day and per month', () => {
    expect(parseTenantBudgets('acme:100usd/day, acme:2000usd/month,globex:0.25usd/day')).toEqual([
      { tenant: 'acme', limitNanoUsd: 100e9, period: 'day' },
      { tenant: 'acme', limitNanoUsd: 2000e9, period: 'month' },
      { tenant: 'globex', limitNanoUsd: 0.25e9, period: 'day' }
    ])
  })

  it('a bad entry stops start-up, naming it', () => {
    expect(configError({ ...BASE_ENV, TENANT_BUDGETS: 'acme:100dollars/day' })).toMatch(/TENANT_BUDGETS entry "acme:100dollars\/day" should be/)
    expect(configError({ ...BASE_ENV, TENANT_BUDGETS: 'acme:1usd/week' })).toMatch(/TENANT_BUDGETS entry "acme:1usd\/week"/)
    expect(configError({ ...BASE_ENV, TENANT_BUDGETS: 'acme:1usd/day,acme:2usd/day' })).toMatch(/two budgets per day/)
  })

  it('windows are calendar days and months in UTC', () => {
    const at = Date.parse('2026-12-31T23:59:59.000Z')
    expect(budgetWindow('day', at)).toEqual({ start: Date.parse('2026-12-31T00:00:00Z'), end: Date.parse('2027-01-01T00:00:00Z') })
    expect(budgetWindow('month', at)).toEqual({ start: Date.parse('2026-12-01T00:00:00Z'), end: Date.parse('2027-01-01T00:00:00Z') })
  })
})
