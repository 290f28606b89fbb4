import type { Usage } from '../store/index.js'
import type { PriceTable, Prices } from './prices.js'

/** The tokens of one model call, by kind, as the Messages API bills them. */
export interface CallTokens {
  readonly input: number
  readonly output: number
  readonly cacheWrite5m: number
  readonly cacheWrite1h: number
  readonly cacheRead: number
}

/** One model call: its tokens, and what they cost in billionths of a dollar (null: no price). */
export interface CallCost {
  readonly tokens: CallTokens
  readonly nanoUsd: number | null
}

export const NO_TOKENS: CallTokens = { input: 0, output: 0, cacheWrite5m: 0, cacheWrite1h: 0, cacheRead: 0 }

/**
 * What one model call of `model` cost, from the usage its answer reports. When the answer lists
 * `usage.iterations` (a server-side tool loop, compaction, an advisor or a fallback model), each
 * iteration is priced on its own, at its own model's prices (an iteration without a model is the
 * call's), and the call is their sum: compaction's tokens are not in the top-level counts, so the
 * iterations are the whole bill. Otherwise the top-level counts are. Each part is priced at the
 * tier of its prompt's length (input, cache writes and reads). Null, rather than a wrong figure,
 * when a part's model has no price, or the call ran at a speed the table does not price (`fast`).
 */
export function callCost (model: string, usage: unknown, prices: PriceTable): CallCost {
  const top = isObject(usage) ? usage : {}
  const iterations = Array.isArray(top.iterations) && top.iterations.length > 0 ? top.iterations.filter(isObject) : null
  const parts = iterations === null ? [{ model, tokens: tokensOf(top) }] : iterations.map((it) => ({ model: typeof it.model === 'string' ? it.model : model, tokens: tokensOf(it) }))
  const tokens = parts.reduce((sum, part) => addTokens(sum, part.tokens), NO_TOKENS)
  if (top.speed !== undefined && top.speed !== null && top.speed !== 'standard') return { tokens, nanoUsd: null }
  let nanoUsd: number | null = 0
  for (const part of parts) {
    const partPrices = prices.pricesOf(part.model, promptTokens(part.tokens))
    if (partPrices === undefined) {
      nanoUsd = null
      break
    }
    nanoUsd += nanoUsdOf(part.tokens, partPrices)
  }
  return { tokens, nanoUsd }
}

/** Tokens at `prices` (USD per million tokens), in billionths of a dollar: a whole number. */
export function nanoUsdOf (tokens: CallTokens, prices: Prices): number {
  // A price per million tokens times 1000 is the price of one token in billionths of a dollar.
  return Math.round(1000 * (
    tokens.input * prices.input +
    tokens.output * prices.output +
    tokens.cacheWrite5m * prices.cache_write_5m +
    tokens.cacheWrite1h * prices.cache_write_1h +
    tokens.cacheRead * prices.cache_read
  ))
}

/** The prompt's length of a call: every input token, cached or not. */
export function promptTokens (tokens: CallTokens): number {
  return tokens.input + tokens.cacheWrite5m + tokens.cacheWrite1h + tokens.cacheRead
}

/** Billionths of a dollar as dollars (exact to the billionth: the division is correctly rounded). */
export function toUsd (nanoUsd: number): number {
  return nanoUsd / 1e9
}

/** Dollars (as stored, a whole number of billionths) as billionths. */
export function toNanoUsd (usd: number): number {
  return Math.round(usd * 1e9)
}

/**
 * A run's usage with one more model call: its tokens, and its cost (null from the first call
 * that has none, or for a run stored before costs were kept, since its earlier calls are unknown).
 */
export function addCall (total: Usage, call: CallCost): Usage {
  const before = total.cache_creation ?? { ephemeral_5m_input_tokens: total.cache_creation_input_tokens, ephemeral_1h_input_tokens: 0 }
  const spent = total.cost_usd
  return {
    input_tokens: total.input_tokens + call.tokens.input,
    output_tokens: total.output_tokens + call.tokens.output,
    cache_creation_input_tokens: total.cache_creation_input_tokens + call.tokens.cacheWrite5m + call.tokens.cacheWrite1h,
    cache_read_input_tokens: total.cache_read_input_tokens + call.tokens.cacheRead,
    cache_creation: {
      ephemeral_5m_input_tokens: before.ephemeral_5m_input_tokens + call.tokens.cacheWrite5m,
      ephemeral_1h_input_tokens: before.ephemeral_1h_input_tokens + call.tokens.cacheWrite1h
    },
    cost_usd: spent === undefined || spent === null || call.nanoUsd === null ? null : toUsd(toNanoUsd(spent) + call.nanoUsd)
  }
}

function tokensOf (usage: Record<string, unknown>): CallTokens {
  const cacheWrites = count(usage.cache_creation_input_tokens)
  const split = isObject(usage.cache_creation) ? usage.cache_creation : null
  const cacheWrite1h = split === null ? 0 : count(split.ephemeral_1h_input_tokens)
  let cacheWrite5m = split === null ? cacheWrites : count(split.ephemeral_5m_input_tokens)
  // The split is a breakdown of the total: whatever it leaves out is billed as 5-minute writes
  // (the default lifetime).
  if (cacheWrite5m + cacheWrite1h < cacheWrites) cacheWrite5m = cacheWrites - cacheWrite1h
  return { input: count(usage.input_tokens), output: count(usage.output_tokens), cacheWrite5m, cacheWrite1h, cacheRead: count(usage.cache_read_input_tokens) }
}

function addTokens (a: CallTokens, b: CallTokens): CallTokens {
  return { input: a.input + b.input, output: a.output + b.output, cacheWrite5m: a.cacheWrite5m + b.cacheWrite5m, cacheWrite1h: a.cacheWrite1h + b.cacheWrite1h, cacheRead: a.cacheRead + b.cacheRead }
}

function count (value: unknown): number {
  return Number.isSafeInteger(value) && (value as number) > 0 ? value as number : 0
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
