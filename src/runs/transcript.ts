import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'

type Block = { type: string, [key: string]: unknown }

function blocks (message: MessageParam | undefined): Block[] {
  return message !== undefined && Array.isArray(message.content) ? message.content as unknown as Block[] : []
}

/**
 * What is wrong with a history a caller sent, before any model call is spent on it: the last
 * message must be the user's, and every tool_use must be answered by exactly one tool_result at
 * the start of the next message (as the Messages API requires). Null when it is fine.
 */
export function findTranscriptProblem (messages: readonly MessageParam[]): string | null {
  if (messages[0]?.role !== 'user') return 'messages[0] must have role "user": a history starts with the user.'
  const last = messages[messages.length - 1]!
  if (last.role !== 'user') return `messages[${messages.length - 1}] must have role "user": the model answers the last user message.`
  for (let i = 1; i < messages.length; i++) {
    if (messages[i]!.role === messages[i - 1]!.role) return `messages[${i}] has the same role as the message before it: roles must alternate between "user" and "assistant".`
  }
  for (const [i, message] of messages.entries()) {
    if (message.role !== 'assistant') continue
    const uses = blocks(message).filter((b) => b.type === 'tool_use').map((b) => String(b.id))
    if (uses.length === 0) continue
    const results = blocks(messages[i + 1])
    const leading: string[] = []
    for (const block of results) {
      if (block.type !== 'tool_result') break
      leading.push(String(block.tool_use_id))
    }
    if (results.slice(leading.length).some((b) => b.type === 'tool_result')) {
      return `messages[${i + 1}]: tool_result blocks must come before any other content.`
    }
    for (const id of uses) {
      const count = leading.filter((r) => r === id).length
      if (count !== 1) return `messages[${i + 1}] must answer tool_use ${id} of messages[${i}] with exactly one tool_result (found ${count}).`
    }
    const stray = leading.find((r) => !uses.includes(r))
    if (stray !== undefined) return `messages[${i + 1}] has a tool_result for ${stray}, which messages[${i}] did not ask for.`
  }
  for (const [i, message] of messages.entries()) {
    if (message.role !== 'user' || !Array.isArray(message.content)) continue
    const asked = blocks(messages[i - 1]).filter((b) => b.type === 'tool_use').map((b) => String(b.id))
    const stray = blocks(message).find((b) => b.type === 'tool_result' && !asked.includes(String(b.tool_use_id)))
    if (stray !== undefined) return `messages[${i}] has a tool_result for ${String(stray.tool_use_id)}, which no tool_use just before it asked for.`
  }
  return null
}
