import type { Message, ToolResultBlockParam, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import type { EventRecord } from '../store/index.js'
import { toolResult, type ToolResultContent } from '../tools/tool-result.js'

/**
 * What a replica taking over a run found of the step in progress, from its stored events. With
 * `message` (its `step.completed` was stored), the step resumes after the model call; without,
 * the model is asked again.
 */
export interface ResumedStep {
  readonly step: number
  readonly message?: Pick<Message, 'content' | 'stop_reason' | 'usage'> & { readonly container?: Message['container'] }
  /** Calls with a stored result: never called again. */
  readonly results: ReadonlyMap<string, ToolResultBlockParam>
  /** Calls that were sent but have no result: in flight when the replica stopped. */
  readonly inFlight: ReadonlyMap<string, { effect: string | undefined }>
  /** tool_use blocks whose input was incomplete (never sent); null when the event did not say. */
  readonly incomplete: ReadonlySet<string> | null
  /** Calls a reviewer approved (SPEC §12): they no longer wait for a decision. */
  readonly approved?: ReadonlySet<string>
  /** Calls their tool answered `202 Accepted` (SPEC §13), without a result yet: they wait for it, never sent again. */
  readonly accepted?: ReadonlyMap<string, AcceptedCall>
}

/** A call whose tool answered `202 Accepted`, as its `tool_call.accepted` event says. */
export interface AcceptedCall {
  readonly name: string
  /** When it stops waiting for its result (ms since the epoch). */
  readonly deadline_at: number
}

/**
 * What the stored events say of step `step` in progress: its model answer if `step.completed` was
 * stored, the calls with a result (a call cut short by a shutdown or a cancel has none), and the
 * calls that were sent without one.
 */
export function resumedStep (step: number, events: readonly EventRecord[]): ResumedStep {
  const ofStep = events.filter((e) => e.data.step === step)
  const completed = [...ofStep].reverse().find((e) => e.type === 'step.completed')
  const results = new Map<string, ToolResultBlockParam>()
  const sent = new Map<string, { effect: string | undefined }>()
  const approved = new Set<string>()
  const accepted = new Map<string, AcceptedCall>()
  for (const event of ofStep) {
    const id = event.data.tool_use_id as string
    if (event.type === 'tool_call.approved') approved.add(id)
    if (event.type === 'tool_call.accepted') accepted.set(id, { name: event.data.name as string, deadline_at: event.data.deadline_at as number })
    if (event.type === 'tool_call.started') sent.set(id, { effect: event.data.effect as string | undefined })
    if (event.type === 'tool_call.completed' && event.data.outcome !== 'cancelled') {
      results.set(id, toolResult(id, event.data.content as ToolResultContent, event.data.is_error === true))
    }
  }
  for (const id of results.keys()) accepted.delete(id)
  const inFlight = new Map([...sent].filter(([id]) => !results.has(id) && !accepted.has(id)))
  if (completed === undefined) return { step, results, inFlight, incomplete: null, approved, accepted }
  const incomplete = Array.isArray(completed.data.incomplete) ? new Set(completed.data.incomplete as string[]) : null
  type Answer = NonNullable<ResumedStep['message']>
  const message: Answer = {
    content: completed.data.content as Answer['content'],
    stop_reason: completed.data.stop_reason as Answer['stop_reason'],
    usage: completed.data.usage as Answer['usage'],
    // The container the answer's code runs in (SPEC §16), if any: the step's write stores it.
    ...(typeof completed.data.container_id === 'string' ? { container: { id: completed.data.container_id, expires_at: completed.data.container_expires_at } as Message['container'] } : {})
  }
  return { step, message, results, inFlight, incomplete, approved, accepted }
}

/**
 * What becomes of one tool_use of a step taken over after its model call:
 * - `stored`: its result was stored; used as it is, never called again;
 * - `never_sent`: its input was never complete, so it was never sent (answered like any such block);
 * - `client`: a client tool's call, for the run's caller to answer;
 * - `unknown`: a side_effecting call that was in flight: it may have happened, so it is not sent
 *   again, and the model is told its outcome is unknown;
 * - `pending`: its tool answered `202 Accepted`: it waits for its result (SPEC §13), never sent again;
 * - `send`: sent now: never sent before, or a read_only or idempotent call that was in flight
 *   (sent again with the same tool_use id, so the same idempotency key).
 */
export type ResumedCall =
  | { readonly action: 'stored', readonly toolUse: ToolUseBlock, readonly result: ToolResultBlockParam }
  | { readonly action: 'never_sent' | 'client' | 'unknown' | 'pending', readonly toolUse: ToolUseBlock }
  | { readonly action: 'send', readonly toolUse: ToolUseBlock, readonly index: number }

/** How the run's tools look to a step taken over. */
export interface ResumedTools {
  /** Whether the name is one of the run's client tools (and not a registered tool of it). */
  readonly isClientTool: (name: string) => boolean
  /** The effect class of a registered tool of the run now, if it has one. */
  readonly effectOf: (name: string) => string | undefined
}

/** What becomes of each tool_use of a step taken over after its model call (see {@link ResumedCall}). */
export function resumedCalls (resumed: ResumedStep, tools: ResumedTools): ResumedCall[] {
  const message = resumed.message!
  const toolUses = message.content.filter((b): b is ToolUseBlock => b.type === 'tool_use')
  // Which blocks were never complete: as the step said; for events of before it said, the last
  // block of a max_tokens message.
  const incomplete = resumed.incomplete ?? new Set(message.stop_reason === 'max_tokens' && toolUses.length > 0 ? [toolUses[toolUses.length - 1]!.id] : [])
  return toolUses.map((toolUse, index): ResumedCall => {
    const stored = resumed.results.get(toolUse.id)
    if (stored !== undefined) return { action: 'stored', toolUse, result: stored }
    if (resumed.accepted?.has(toolUse.id) === true) return { action: 'pending', toolUse }
    const inFlight = resumed.inFlight.get(toolUse.id)
    if (inFlight === undefined && incomplete.has(toolUse.id)) return { action: 'never_sent', toolUse }
    if (tools.isClientTool(toolUse.name)) return { action: 'client', toolUse }
    // The effect the call was sent with, not the tool's effect now (it may have been edited).
    if (inFlight !== undefined && (inFlight.effect ?? tools.effectOf(toolUse.name) ?? 'side_effecting') === 'side_effecting') {
      return { action: 'unknown', toolUse }
    }
    return { action: 'send', toolUse, index }
  })
}
