/**
 * What known models refuse in a Messages API request (SPEC §15): one table, so that a run asking
 * a known model for what it refuses is a 400 at create (RUN_ERR_MODEL_UNSUPPORTED) rather than a
 * run that fails at its first model call. A model not in the table passes: the API decides.
 *
 * A model is matched by its id, or its id followed by a dated snapshot (`claude-opus-4-5-20251101`).
 */

/** What a run asks of its model that some models refuse. */
export interface ModelAsk {
  readonly tool_choice?: { readonly type: string } | undefined
  readonly thinking?: { readonly type: string } | undefined
  readonly temperature?: number | undefined
  readonly top_p?: number | undefined
  readonly top_k?: number | undefined
  readonly output_config?: { readonly effort?: string | null | undefined } | undefined
  readonly code_execution?: boolean | undefined
}

interface Refusals {
  /** `tool_choice` of type `any` or `tool` (forced tool use), with or without thinking. */
  readonly forcedToolChoice?: boolean
  /** `thinking: { type: "enabled", budget_tokens }`: only adaptive thinking is taken. */
  readonly budgetThinking?: boolean
  /** `thinking: { type: "adaptive" }`: only the budget form is known. */
  readonly adaptiveThinking?: boolean
  /** `temperature`, `top_p`, `top_k`. */
  readonly sampling?: boolean
  /** `output_config.effort` levels refused; `all` for a model without effort. */
  readonly effort?: readonly string[] | 'all'
  /** The code execution tool with programmatic tool calling (SPEC §16). */
  readonly codeExecution?: boolean
}

// Sources, as of 2026-12:
// - Claude Opus 4.7 takes only adaptive thinking (`thinking.type.enabled` is a 400 "is not
//   supported for this model. Use thinking.type.adaptive and output_config.effort") and no sampling
//   parameters; `xhigh` effort came with it: Anthropic's "What's new in Claude Opus 4.7" and
//   migration guide (platform.claude.com/docs/en/about-claude/models/migration-guide), Bedrock's
//   model card (docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-opus-4-7.md),
//   NousResearch/hermes-agent#11137.
// - Claude Opus 5.5 (like Mythos and Fable) refuses forced tool use outright: 400 `tool_choice: type
//   "tool" and "any" are not supported for this model` (can1357/oh-my-pi#12939, vercel/ai#21364).
// - Claude Sonnet 5 refuses budget thinking (observed 400, @memberjunction/ai-anthropic's
//   UsesAdaptiveThinking notes).
// - Adaptive thinking came with the 4.6 models; effort with Opus 4.5 (the effort docs); models
//   before take neither (the adaptive thinking and effort docs).
// - Programmatic tool calling (code execution with allowed_callers) came with Claude Opus 4.5 and
//   Sonnet 4.5; Haiku 4.5 and the models before do not take it (Anthropic's programmatic tool
//   calling docs, model compatibility; LiteLLM's Anthropic programmatic tool calling page).
const NEWEST: Refusals = { forcedToolChoice: true, budgetThinking: true, sampling: true }
const TABLE: ReadonlyArray<readonly [string, Refusals]> = [
  ['claude-opus-5-5', NEWEST],
  ['claude-mythos-5', NEWEST],
  ['claude-fable-5', NEWEST],
  ['claude-sonnet-5', { budgetThinking: true }],
  ['claude-opus-4-8', { budgetThinking: true, sampling: true }],
  ['claude-opus-4-7', { budgetThinking: true, sampling: true }],
  ['claude-opus-4-6', { effort: ['xhigh'] }],
  ['claude-sonnet-4-6', { effort: ['xhigh', 'max'] }],
  ['claude-opus-4-5', { adaptiveThinking: true, effort: ['xhigh', 'max'] }],
  ['claude-sonnet-4-5', { adaptiveThinking: true, effort: 'all' }],
  ['claude-haiku-4-5', { adaptiveThinking: true, effort: 'all', codeExecution: true }],
  ['claude-opus-4-1', { adaptiveThinking: true, effort: 'all', codeExecution: true }],
  ['claude-opus-4', { adaptiveThinking: true, effort: 'all', codeExecution: true }],
  ['claude-sonnet-4', { adaptiveThinking: true, effort: 'all', codeExecution: true }],
  ['claude-3-7-sonnet', { adaptiveThinking: true, effort: 'all', codeExecution: true }],
  ['claude-3-5-haiku', { adaptiveThinking: true, effort: 'all', codeExecution: true }]
]
const SNAPSHOT = /^-\d{8}$/

function refusalsOf (model: string): Refusals | undefined {
  for (const [id, refusals] of TABLE) {
    if (model === id || (model.startsWith(id) && SNAPSHOT.test(model.slice(id.length)))) return refusals
  }
  return undefined
}

/**
 * The first option of `ask` that `model` is known to refuse, as `{ option, why }` (the option as a
 * run names it: `tool_choice`, `thinking.budget_tokens`, `temperature`, `output_config.effort`…);
 * null when nothing is known to be refused (an unknown model always).
 */
export function modelRefusal (model: string, ask: ModelAsk): { option: string, why: string } | null {
  const refusals = refusalsOf(model)
  if (refusals === undefined) return null
  const forced = ask.tool_choice?.type
  if (refusals.forcedToolChoice === true && (forced === 'any' || forced === 'tool')) {
    return { option: 'tool_choice', why: `a tool_choice of type "${forced}" (forced tool use); use "auto" and say in the prompt which tool to call` }
  }
  if (refusals.budgetThinking === true && ask.thinking?.type === 'enabled') {
    return { option: 'thinking.budget_tokens', why: 'thinking with a budget (type "enabled"); use `{ "type": "adaptive" }` and output_config.effort' }
  }
  if (refusals.adaptiveThinking === true && ask.thinking?.type === 'adaptive') {
    return { option: 'thinking', why: 'adaptive thinking; use `{ "type": "enabled", "budget_tokens": … }`' }
  }
  if (refusals.sampling === true) {
    for (const option of ['temperature', 'top_p', 'top_k'] as const) {
      if (ask[option] !== undefined) return { option, why: `sampling parameters (${option}); leave them out` }
    }
  }
  if (refusals.codeExecution === true && ask.code_execution === true) {
    return { option: 'code_execution', why: 'programmatic tool calling (the code execution tool calling the run\'s tools); leave code_execution out' }
  }
  const effort = ask.output_config?.effort
  if (refusals.effort !== undefined && effort !== undefined && effort !== null && (refusals.effort === 'all' || refusals.effort.includes(effort))) {
    return { option: 'output_config.effort', why: refusals.effort === 'all' ? 'an effort level; leave output_config.effort out' : `effort "${effort}"; use a level it takes (low, medium, high)` }
  }
  return null
}
