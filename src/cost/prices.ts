import { readFileSync } from 'node:fs'
import { ConfigError } from '../errors.js'

/** What a model family costs, in US dollars per million tokens, by kind of token. */
export interface Prices {
  readonly input: number
  readonly output: number
  /** Tokens written to the cache with a 5-minute lifetime (the default). */
  readonly cache_write_5m: number
  /** Tokens written to the cache with a 1-hour lifetime. */
  readonly cache_write_1h: number
  /** Tokens read from the cache (hits and refreshes). */
  readonly cache_read: number
}

/** A family's prices for requests whose prompt is over `aboveTokens` (0: every request). */
export interface PriceTier extends Prices {
  readonly aboveTokens: number
}

/**
 * The built-in table, as lines of the MODEL_PRICES_FILE format (see parsePriceLines).
 *
 * Source: Anthropic's pricing page, https://platform.claude.com/docs/en/about-claude/pricing
 * ("Model pricing" and "Long context pricing"), and the Claude Sonnet 5 model page
 * (https://platform.claude.com/docs/en/models/sonnet-5/overview), as read on 2026-12-06.
 * Families whose figures we could not confirm there are left out on purpose, so that their runs
 * say `cost_usd: null` rather than a wrong number: Claude Sonnet 5.5 (its cache-read price changed
 * on 2026-10-07), Opus 5.5, Haiku 5.5 (priced by prompt length), Fable 5.1 and the Mythos models.
 * Give them, or any other model, in MODEL_PRICES_FILE.
 */
export const PRICES_DATE = '2026-12-06'
export const PRICES_SOURCE = 'https://platform.claude.com/docs/en/about-claude/pricing'

const DEFAULT_PRICE_LINES = `
# family              input  output  cache_write_5m  cache_write_1h  cache_read  [prompt>N]
claude-fable-5        10     50      12.50           20              1
claude-opus-5         5      25      6.25            10              0.50
claude-opus-4-8       5      25      6.25            10              0.50
claude-opus-4-7       5      25      6.25            10              0.50
claude-opus-4-6       5      25      6.25            10              0.50
claude-opus-4-5       5      25      6.25            10              0.50
claude-opus-4-1       15     75      18.75           30              1.50
claude-opus-4         15     75      18.75           30              1.50
claude-opus-4-0       15     75      18.75           30              1.50
claude-3-opus         15     75      18.75           30              1.50
claude-sonnet-5       2      10      2.50            4               0.20
claude-sonnet-4-6     3      15      3.75            6               0.30
claude-sonnet-4-5     3      15      3.75            6               0.30
claude-sonnet-4-5     6      22.50   7.50            12              0.60        prompt>200000
claude-sonnet-4       3      15      3.75            6               0.30
claude-sonnet-4       6      22.50   7.50            12              0.60        prompt>200000
claude-sonnet-4-0     3      15      3.75            6               0.30
claude-sonnet-4-0     6      22.50   7.50            12              0.60        prompt>200000
claude-3-7-sonnet     3      15      3.75            6               0.30
claude-haiku-4-5      1      5       1.25            2               0.10
claude-3-5-haiku      0.80   4       1               1.60            0.08
claude-3-haiku        0.25   1.25    0.30            0.50            0.03
`

const NUMBER = /^(?:0|[1-9]\d*)(?:\.\d+)?$/
const FAMILY = /^[a-z0-9][a-z0-9._-]{0,127}$/
const TIER = /^prompt>([1-9]\d*)$/
/** A date after a family's name in a model id: `-20250929` (Vertex's `@20250929`). */
const DATE_SUFFIX = /^[-@]\d{8}$/

/**
 * Model prices by family. A model id has the prices of the family it names: the family itself
 * (`claude-sonnet-4-5`) or the family with a date or `-latest` after it
 * (`claude-sonnet-4-5-20250929`). Any other id, `claude-sonnet-4-7` say, has no price: it is not
 * taken for a neighbouring family, whose price may be wrong for it.
 */
export class PriceTable {
  readonly #families: ReadonlyMap<string, readonly PriceTier[]>

  constructor (families: ReadonlyMap<string, readonly PriceTier[]>) {
    this.#families = families
  }

  /** The built-in table, with the families of `overrides` (MODEL_PRICES_FILE) in place of its own. */
  static withDefaults (overrides?: PriceTable): PriceTable {
    const families = new Map(parsePriceLines(DEFAULT_PRICE_LINES, 'the built-in price table').#families)
    if (overrides !== undefined) for (const [family, tiers] of overrides.#families) families.set(family, tiers)
    return new PriceTable(families)
  }

  /** The tiers of the family `model` belongs to, lowest threshold first; undefined: no price. */
  tiersOf (model: string): readonly PriceTier[] | undefined {
    const exact = this.#families.get(model)
    if (exact !== undefined) return exact
    const dated = DATE_SUFFIX.test(model.slice(-9)) ? model.slice(0, -9) : model.endsWith('-latest') ? model.slice(0, -7) : null
    return dated === null ? undefined : this.#families.get(dated)
  }

  /** The prices of a request to `model` whose prompt (input and cache tokens) is `promptTokens`. */
  pricesOf (model: string, promptTokens: number): Prices | undefined {
    const tiers = this.tiersOf(model)
    if (tiers === undefined) return undefined
    let chosen: PriceTier | undefined
    for (const tier of tiers) if (promptTokens > tier.aboveTokens || tier.aboveTokens === 0) chosen = tier
    return chosen
  }

  /** Whether runs of `model` can be priced. */
  has (model: string): boolean {
    return this.tiersOf(model) !== undefined
  }

  get families (): string[] {
    return [...this.#families.keys()]
  }
}

/**
 * Parses the price format, one family (or one of its tiers) a line, in US dollars per million
 * tokens:
 *
 * ```
 * # family            input  output  cache_write_5m  cache_write_1h  cache_read  [prompt>N]
 * claude-sonnet-4-5   3      15      3.75            6               0.30
 * claude-sonnet-4-5   6      22.50   7.50            12              0.60        prompt>200000
 * ```
 *
 * A line ending with `prompt>N` gives the prices of requests whose prompt (input, cache writes
 * and cache reads) is over N tokens. `#` starts a comment. Throws a {@link ConfigError} naming
 * `where` and the line.
 */
export function parsePriceLines (text: string, where: string): PriceTable {
  const families = new Map<string, PriceTier[]>()
  const lines = text.split(/\r?\n/)
  for (const [index, raw] of lines.entries()) {
    const line = raw.replace(/#.*$/, '').trim()
    if (line === '') continue
    const at = `${where} line ${index + 1}`
    const fields = line.split(/\s+/)
    if (fields.length !== 6 && fields.length !== 7) {
      throw new ConfigError(`${at}: expected a model family and five prices (input, output, cache_write_5m, cache_write_1h, cache_read, in USD per million tokens), optionally then prompt>N; got ${fields.length} fields: "${raw.trim()}".`)
    }
    const [family, ...rest] = fields as [string, ...string[]]
    if (!FAMILY.test(family)) throw new ConfigError(`${at}: "${family}" is not a model family (lower-case letters, digits, . _ and -, like claude-sonnet-4-5).`)
    const numbers = rest.slice(0, 5).map((value, i) => {
      if (!NUMBER.test(value) || !Number.isFinite(Number(value))) {
        throw new ConfigError(`${at}: ${PRICE_NAMES[i]} of ${family} is "${value}", not a price in USD per million tokens (like 3 or 0.30).`)
      }
      return Number(value)
    })
    let aboveTokens = 0
    if (rest[5] !== undefined) {
      const tier = TIER.exec(rest[5])
      if (tier === null) throw new ConfigError(`${at}: "${rest[5]}" should be prompt>N, N a number of tokens (like prompt>200000).`)
      aboveTokens = Number(tier[1])
    }
    const tiers = families.get(family) ?? []
    if (tiers.some((t) => t.aboveTokens === aboveTokens)) {
      throw new ConfigError(`${at}: ${family} already has prices${aboveTokens === 0 ? '' : ` for prompts over ${aboveTokens} tokens`} (an earlier line): give each once.`)
    }
    const [input, output, cacheWrite5m, cacheWrite1h, cacheRead] = numbers as [number, number, number, number, number]
    tiers.push({ aboveTokens, input, output, cache_write_5m: cacheWrite5m, cache_write_1h: cacheWrite1h, cache_read: cacheRead })
    tiers.sort((a, b) => a.aboveTokens - b.aboveTokens)
    families.set(family, tiers)
  }
  for (const [family, tiers] of families) {
    if (tiers[0]!.aboveTokens !== 0) throw new ConfigError(`${where}: ${family} has prices only for long prompts (prompt>N): add a line with its prices for every request.`)
  }
  return new PriceTable(families)
}

const PRICE_NAMES = ['input', 'output', 'cache_write_5m', 'cache_write_1h', 'cache_read']

/**
 * The price table of a run's service: the built-in one, with MODEL_PRICES_FILE's families in
 * place of its own when the setting is given. A file that cannot be read, or a bad line, stops
 * start-up with a {@link ConfigError} naming the file and the line.
 */
export function loadPriceTable (path: string | undefined): PriceTable {
  if (path === undefined) return PriceTable.withDefaults()
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(`MODEL_PRICES_FILE ${path} cannot be read: ${(err as Error).message}`)
  }
  return PriceTable.withDefaults(parsePriceLines(text, `MODEL_PRICES_FILE ${path}`))
}
