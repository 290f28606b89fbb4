import { createHash } from 'node:crypto'
import type { Message, ToolResultBlockParam, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import type { Log } from '../logger.js'
import type { ModelRequest } from '../model/model-client.js'
import { messageJson } from '../model/message-json.js'
import type { EstimateBasis, RunRecord, Usage, UsageEntry, UsageStore } from '../store/index.js'
import { addCall, callCost, nanoUsdOf, NO_TOKENS, promptTokens, toNanoUsd, toUsd, type CallCost } from './call-cost.js'
import type { CostMetrics } from './cost-metrics.js'
import type { PriceTable } from './prices.js'
import { budgetWindow, type TenantBudget } from './tenant-budgets.js'

/** A run's own budget (SPEC §17), as given at its create. */
export interface RunBudget {
  readonly max_cost_usd?: number | undefined
  readonly max_input_tokens?: number | undefined
  readonly max_output_tokens?: number | undefined
}

/** Why a run may not make its next model call. */
export interface BudgetExhausted {
  /** Whose budget: the run's own, or its tenant's (TENANT_BUDGETS). */
  readonly scope: 'run' | 'tenant'
  /** Which limit: `max_cost_usd`, `max_input_tokens`, `max_output_tokens`, or the tenant's `day` or `month`. */
  readonly limit: string
  /** Spent so far, in the limit's unit (USD or tokens). */
  readonly spent: number
  /** What the next call was estimated to take, in the same unit. */
  readonly estimate: number
  readonly max: number
}

/** The share of a run budget at which `run.budget_warning` is emitted. */
export const WARNING_SHARE = 0.8

/** What every run's guard shares. */
export interface BudgetGuardDeps {
  readonly prices: PriceTable
  readonly tenantBudgets: readonly TenantBudget[]
  readonly usage: UsageStore
  readonly metrics: CostMetrics
  readonly log: Log
}

/** A model call's cost, its run's usage with it, and the warnings it crossed. */
export interface CallAccount {
  readonly cost: CallCost
  readonly usage: Usage
  /** Data of each `run.budget_warning` to emit: a limit of the run's budget this call took past 80%. */
  readonly warnings: Array<Record<string, unknown>>
}

/**
 * The budget guard of one run's driver (SPEC §17). Before each model call, `check` compares what
 * the run (and its tenant, in storage, across replicas) has spent plus an estimate of the call
 * with the budgets: a run never starts a call its budget cannot afford. After it, `account` prices
 * the call; `entries` makes the step's usage line, with its tool calls as counts, which the driver stores
 * with the step (for the tenant's usage and budgets).
 *
 * The estimate: the next prompt is the last one, plus the last answer, plus what was appended
 * since (four characters a token); priced as the last prompt was (cache reads and all), the new
 * part at the input price. Before the run's first call, the whole request at four characters a
 * token and the input price. The answer is estimated as the longest the run has had so far (none
 * before its first call): a call may still spend up to its max_tokens. What the estimate starts
 * from is stored with each step (Usage.estimate_basis), so replicas and restarts agree.
 */
export class BudgetGuard {
  readonly #deps: BudgetGuardDeps
  readonly #budget: RunBudget
  readonly #tenantBudgets: readonly TenantBudget[]

  constructor (deps: BudgetGuardDeps, run: RunRecord) {
    this.#deps = deps
    this.#budget = (run.params.budget ?? {}) as RunBudget
    this.#tenantBudgets = deps.tenantBudgets.filter((b) => b.tenant === run.tenant_id)
  }

  /** Whether the run has any budget to keep to: without one, `check` costs nothing. */
  get guarded (): boolean {
    const b = this.#budget
    return b.max_cost_usd !== undefined || b.max_input_tokens !== undefined || b.max_output_tokens !== undefined || this.#tenantBudgets.length > 0
  }

  /** Null when the run may make the call `request`; otherwise which budget it would overspend. */
  async check (run: RunRecord, request: ModelRequest, now = Date.now()): Promise<BudgetExhausted | null> {
    if (!this.guarded) return null
    const estimate = this.#estimate(run.model, run.usage.estimate_basis, request)
    const { usage } = run
    const budget = this.#budget
    const spentInput = usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
    if (budget.max_input_tokens !== undefined && spentInput + estimate.promptTokens > budget.max_input_tokens) {
      return { scope: 'run', limit: 'max_input_tokens', spent: spentInput, estimate: estimate.promptTokens, max: budget.max_input_tokens }
    }
    if (budget.max_output_tokens !== undefined && usage.output_tokens + estimate.outputTokens > budget.max_output_tokens) {
      return { scope: 'run', limit: 'max_output_tokens', spent: usage.output_tokens, estimate: estimate.outputTokens, max: budget.max_output_tokens }
    }
    const spent = usage.cost_usd
    if (budget.max_cost_usd !== undefined) {
      // A run with a USD budget has a priced model (refused at create otherwise); a cost that went
      // unknown since (a call at a speed without a price) cannot be kept to a budget: it stops.
      if (spent === undefined || spent === null || estimate.nanoUsd === null) {
        return { scope: 'run', limit: 'max_cost_usd', spent: spent ?? 0, estimate: 0, max: budget.max_cost_usd }
      }
      if (toNanoUsd(spent) + estimate.nanoUsd > toNanoUsd(budget.max_cost_usd)) {
        return { scope: 'run', limit: 'max_cost_usd', spent, estimate: toUsd(estimate.nanoUsd), max: budget.max_cost_usd }
      }
    }
    for (const tenantBudget of this.#tenantBudgets) {
      const window = budgetWindow(tenantBudget.period, now)
      let tenantSpent: number
      try {
        tenantSpent = await this.#deps.usage.spentSince(run.tenant_id, window.start)
      } catch (err) {
        // Storage that cannot answer now fails the step's own write soon enough; the call goes on.
        this.#deps.log.warn({ err, runId: run.id }, 'tenant spending could not be read')
        continue
      }
      if (tenantSpent + (estimate.nanoUsd ?? 0) > tenantBudget.limitNanoUsd) {
        return { scope: 'tenant', limit: tenantBudget.period, spent: toUsd(tenantSpent), estimate: toUsd(estimate.nanoUsd ?? 0), max: toUsd(tenantBudget.limitNanoUsd) }
      }
    }
    return null
  }

  /**
   * Prices the model call that answered `message`, sent a history of `messages` messages, and adds
   * it to the run's usage `before`, with what the next estimate starts from (stored with the step,
   * so that a replica taking the run over estimates as this one would); counts its tokens and
   * cost in the metrics.
   */
  account (run: RunRecord, before: Usage, message: Message, messages: number): CallAccount {
    const cost = callCost(run.model, message.usage, this.#deps.prices)
    this.#deps.metrics.count(run.tenant_id, run.model, cost)
    const prompt = promptTokens(cost.tokens)
    const promptPrices = this.#deps.prices.pricesOf(run.model, prompt)
    const basis: EstimateBasis = {
      prompt_tokens: prompt,
      prompt_cost_usd: promptPrices === undefined ? null : toUsd(nanoUsdOf({ ...cost.tokens, output: 0 }, promptPrices)),
      output_tokens: cost.tokens.output,
      messages,
      longest_output_tokens: Math.max(before.estimate_basis?.longest_output_tokens ?? 0, cost.tokens.output)
    }
    const usage = { ...addCall(before, cost), estimate_basis: basis }
    return { cost, usage, warnings: this.#warnings(run.steps + 1, before, usage) }
  }

  /**
   * The usage line of a step: its model call, and the calls of its tools that were answered, as
   * counts (all, errors, and per tool), for the tenant's usage and budgets. One line whatever the
   * number of calls. Stored by the driver with the step's own write (RunWrite.usage), in its
   * transaction: exactly when the step is, at no cost of a write of its own.
   */
  entries (run: RunRecord, message: Message, cost: CallCost, toolUses: readonly ToolUseBlock[], results: readonly ToolResultBlockParam[]): UsageEntry[] {
    const names = new Map(toolUses.map((u) => [u.id, u.name]))
    const tools: Record<string, [number, number]> = {}
    let errors = 0
    for (const result of results) {
      const counts = (tools[names.get(result.tool_use_id) ?? 'unknown'] ??= [0, 0])
      counts[0]++
      if (result.is_error === true) {
        counts[1]++
        errors++
      }
    }
    return [{
      tenant_id: run.tenant_id,
      run_id: run.id,
      // The same answer, read back by a replica that took the run over, has the same key; another
      // answer to the same step (the model asked again) has another.
      key: `model:${run.steps + 1}:${createHash('sha256').update(JSON.stringify(message.content)).digest('base64url').slice(0, 22)}`,
      at: Date.now(),
      model: run.model,
      input_tokens: cost.tokens.input,
      output_tokens: cost.tokens.output,
      cache_write_5m_tokens: cost.tokens.cacheWrite5m,
      cache_write_1h_tokens: cost.tokens.cacheWrite1h,
      cache_read_tokens: cost.tokens.cacheRead,
      cost_nano_usd: cost.nanoUsd,
      tool_calls: results.length,
      tool_errors: errors,
      tools
    }]
  }

  #estimate (model: string, last: EstimateBasis | undefined, request: ModelRequest): { promptTokens: number, outputTokens: number, nanoUsd: number | null } {
    const outputTokens = last?.longest_output_tokens ?? 0
    let promptTokens: number
    let promptNanoUsd: number | null
    if (last !== undefined && request.messages.length > last.messages) {
      // After the last prompt: its answer (counted as its output) and what followed it.
      const added = request.messages.slice(last.messages + 1).reduce((chars, m) => chars + messageJson(m).length, 0)
      const addedTokens = Math.ceil(added / 4) + last.output_tokens
      promptTokens = last.prompt_tokens + addedTokens
      const prices = this.#deps.prices.pricesOf(model, promptTokens)
      promptNanoUsd = last.prompt_cost_usd === null || prices === undefined ? null : toNanoUsd(last.prompt_cost_usd) + nanoUsdOf({ ...NO_TOKENS, input: addedTokens }, prices)
    } else {
      const chars = JSON.stringify(request.system ?? '').length + JSON.stringify(request.tools ?? []).length +
        request.messages.reduce((sum, m) => sum + messageJson(m).length, 0)
      promptTokens = Math.ceil(chars / 4)
      const prices = this.#deps.prices.pricesOf(model, promptTokens)
      promptNanoUsd = prices === undefined ? null : nanoUsdOf({ ...NO_TOKENS, input: promptTokens }, prices)
    }
    const outputPrices = this.#deps.prices.pricesOf(model, promptTokens)
    const nanoUsd = promptNanoUsd === null || outputPrices === undefined ? null : promptNanoUsd + nanoUsdOf({ ...NO_TOKENS, output: outputTokens }, outputPrices)
    return { promptTokens, outputTokens, nanoUsd }
  }

  /** A warning for each limit of the run's budget that the usage crossed 80% of, from `before` to `after`. */
  #warnings (step: number, before: Usage, after: Usage): Array<Record<string, unknown>> {
    const budget = this.#budget
    const out: Array<Record<string, unknown>> = []
    const crossed = (limit: string, max: number | undefined, was: number, now: number): void => {
      if (max === undefined) return
      const at = WARNING_SHARE * max
      if (was < at && now >= at) out.push({ step, limit, spent: now, max, share: Math.round((now / max) * 1000) / 1000 })
    }
    const input = (u: Usage): number => u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens
    crossed('max_input_tokens', budget.max_input_tokens, input(before), input(after))
    crossed('max_output_tokens', budget.max_output_tokens, before.output_tokens, after.output_tokens)
    if (typeof before.cost_usd === 'number' && typeof after.cost_usd === 'number') crossed('max_cost_usd', budget.max_cost_usd, before.cost_usd, after.cost_usd)
    return out
  }
}
