import type { MessageParam, TextBlockParam } from '@anthropic-ai/sdk/resources/messages'

type Block = { type: string, [key: string]: unknown }

/** Most blocks with `cache_control` one Messages API request may hold (tools, system and messages together). */
export const MAX_CACHE_BREAKPOINTS = 4

/**
 * The content blocks the Messages API takes in a history, without betas (the SDK's
 * ContentBlockParam): anything else is refused whole, so it is refused here first.
 */
const BLOCK_TYPES = new Set([
  'text', 'image', 'document', 'search_result', 'thinking', 'redacted_thinking', 'tool_use', 'tool_result',
  'server_tool_use', 'web_search_tool_result', 'web_fetch_tool_result', 'code_execution_tool_result',
  'bash_code_execution_tool_result', 'text_editor_code_execution_tool_result', 'tool_search_tool_result', 'container_upload',
  // Blocks of betas the run may use (context management, the MCP connector): sent back as the model wrote them.
  'compaction', 'mcp_tool_use', 'mcp_tool_result'
])
/** What a tool_result's content may hold (the SDK's ToolResultBlockParam). */
const TOOL_RESULT_BLOCK_TYPES = new Set(['text', 'image', 'document', 'search_result', 'tool_reference', 'browser_state'])
/**
 * The fields the Messages API takes on the blocks whose shape is checked here (the SDK's
 * TextBlockParam, ToolUseBlockParam, …): any other is refused ("Extra inputs are not permitted").
 */
const FIELDS: Readonly<Record<string, readonly string[]>> = {
  text: ['type', 'text', 'cache_control', 'citations'],
  tool_use: ['type', 'id', 'name', 'input', 'cache_control', 'caller', 'toolset_name'],
  tool_result: ['type', 'tool_use_id', 'content', 'is_error', 'cache_control', 'toolset_name'],
  thinking: ['type', 'thinking', 'signature'],
  redacted_thinking: ['type', 'data']
}
/** Blocks only the model writes, so only an assistant message holds them. */
const ASSISTANT_ONLY = new Set(['tool_use', 'server_tool_use', 'mcp_tool_use', 'compaction', 'thinking', 'redacted_thinking'])
const TOOL_USE_ID = /^[a-zA-Z0-9_-]+$/
const SERVER_TOOL_USE_ID = /^srvtoolu_[a-zA-Z0-9_]+$/
// What the API takes as a tool's name: a history's tool_use names a tool the request must define.
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,128}$/
const CACHE_TTLS = new Set(['5m', '1h'])

function blocks (message: MessageParam | undefined): Block[] {
  return message !== undefined && Array.isArray(message.content) ? message.content as unknown as Block[] : []
}

/**
 * What is wrong with a history a caller sent, before any model call is spent on it: the last
 * message must be the user's; every message has content, each block of a type the Messages API
 * takes, in the shape it takes (text that is not blank, tool_use ids and names of the API's
 * pattern with an object for input, thinking blocks with their signature, a valid
 * `cache_control`); and every tool_use must be answered by exactly one tool_result at the start of
 * the next message. Null when it is fine. Breakpoints are counted apart, with the system prompt's
 * (see cacheBreakpoints).
 */
export function findTranscriptProblem (messages: readonly MessageParam[]): string | null {
  if (messages[0]?.role !== 'user') return 'messages[0] must have role "user": a history starts with the user.'
  const last = messages[messages.length - 1]!
  if (last.role !== 'user') return `messages[${messages.length - 1}] must have role "user": the model answers the last user message.`
  for (let i = 1; i < messages.length; i++) {
    if (messages[i]!.role === messages[i - 1]!.role) return `messages[${i}] has the same role as the message before it: roles must alternate between "user" and "assistant".`
  }
  for (const [i, message] of messages.entries()) {
    const problem = contentProblem(message, `messages[${i}]`)
    if (problem !== null) return problem
  }
  for (const [i, message] of messages.entries()) {
    if (message.role !== 'assistant') continue
    const uses = blocks(message).filter((b) => b.type === 'tool_use').map((b) => String(b.id))
    if (uses.length === 0) continue
    if (new Set(uses).size !== uses.length) return `messages[${i}] has two tool_use blocks with the same id: each needs an id of its own.`
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

function contentProblem (message: MessageParam, where: string): string | null {
  const { content } = message
  if (typeof content === 'string') {
    return isBlank(content) ? `${where} has empty content: the Messages API refuses a message without text (spaces alone count as none); write the message, or leave it out.` : null
  }
  if (content.length === 0) return `${where} has no content blocks: the Messages API refuses an empty message; give it a block, or leave it out.`
  for (const [j, block] of (content as unknown as Block[]).entries()) {
    const problem = blockProblem(block, message.role, `${where}.content[${j}]`)
    if (problem !== null) return problem
  }
  return null
}

function blockProblem (block: Block, role: MessageParam['role'], where: string): string | null {
  if (!BLOCK_TYPES.has(block.type)) {
    return `${where} has type "${block.type}", which the Messages API does not take in a message: use one of ${[...BLOCK_TYPES].join(', ')}.`
  }
  if (ASSISTANT_ONLY.has(block.type) && role !== 'assistant') return `${where} is a ${block.type} block in a user message: only the model writes those, in an assistant message.`
  if (block.type === 'tool_result' && role !== 'user') return `${where} is a tool_result block in an assistant message: tool results go in the user message after the tool_use.`
  const extra = Object.keys(block).find((key) => FIELDS[block.type]?.includes(key) === false)
  if (extra !== undefined) return `${where} is a ${block.type} block with a field "${extra}", which the Messages API does not take: leave it out.`
  const cache = cacheControlProblem(block.cache_control, `${where}.cache_control`)
  if (cache !== null) return cache
  switch (block.type) {
    case 'text':
      return textProblem(block, where)
    case 'tool_use':
      if (typeof block.id !== 'string' || !TOOL_USE_ID.test(block.id)) {
        return `${where} is a tool_use whose id ${JSON.stringify(block.id) ?? 'is missing'}${typeof block.id === 'string' ? ' is malformed' : ''}: the Messages API takes ids of letters, digits, _ and - (such as "toolu_01A"); use the id the model gave.`
      }
      if (typeof block.name !== 'string' || !TOOL_NAME.test(block.name)) {
        return `${where} is a tool_use whose name ${JSON.stringify(block.name) ?? 'is missing'}${typeof block.name === 'string' ? ' is malformed' : ''}: a tool's name is 1 to 128 letters, digits, _ and -.`
      }
      if (typeof block.input !== 'object' || block.input === null || Array.isArray(block.input)) {
        return `${where} is a tool_use whose input is not a JSON object: the Messages API takes an object (\`{}\` for none).`
      }
      return null
    case 'server_tool_use':
      if (typeof block.id !== 'string' || !SERVER_TOOL_USE_ID.test(block.id)) {
        return `${where} is a server_tool_use whose id ${JSON.stringify(block.id) ?? 'is missing'}${typeof block.id === 'string' ? ' is malformed' : ''}: the Messages API takes "srvtoolu_" and letters, digits or _; use the id the model gave.`
      }
      return null
    case 'tool_result':
      return toolResultProblem(block, where)
    case 'thinking':
      if (typeof block.thinking !== 'string') return `${where} is a thinking block without its thinking text: pass the model's thinking blocks back unchanged.`
      if (typeof block.signature !== 'string' || block.signature === '') {
        return `${where} is a thinking block without a signature: the Messages API refuses it; pass the model's thinking blocks back unchanged, signature included, or leave them out.`
      }
      return null
    case 'redacted_thinking':
      if (typeof block.data !== 'string' || block.data === '') {
        return `${where} is a redacted_thinking block without its data: pass the model's redacted_thinking blocks back unchanged, or leave them out.`
      }
      return null
    default:
      return null
  }
}

function toolResultProblem (block: Block, where: string): string | null {
  if (block.is_error !== undefined && typeof block.is_error !== 'boolean') return `${where}.is_error must be true or false.`
  const { content } = block
  if (content !== undefined && typeof content !== 'string' && !Array.isArray(content)) {
    return `${where}.content must be a string or a list of blocks (text, image, document, search_result).`
  }
  if (block.is_error === true && (content === undefined || content === '' || (content as unknown[]).length === 0)) {
    return `${where} is an is_error tool_result without content: the Messages API refuses it; say in its content what went wrong.`
  }
  if (!Array.isArray(content)) return null
  for (const [k, inner] of (content as unknown[]).entries()) {
    const at = `${where}.content[${k}]`
    if (typeof inner !== 'object' || inner === null || typeof (inner as Block).type !== 'string') return `${at} is not a content block: give it a \`type\`.`
    const b = inner as Block
    if (!TOOL_RESULT_BLOCK_TYPES.has(b.type)) {
      return `${at} has type "${b.type}", which the Messages API does not take in a tool_result: use one of ${[...TOOL_RESULT_BLOCK_TYPES].join(', ')}.`
    }
    if (b.type === 'text') {
      // A result's text is its text and a breakpoint at most: its citations would cite nothing of the request.
      const extra = Object.keys(b).find((key) => !['type', 'text', 'cache_control'].includes(key) && !(key === 'citations' && b.citations === null))
      if (extra !== undefined) return `${at} is a text block with a field "${extra}", which the Messages API does not take in a tool_result: leave it out.`
    }
    const problem = cacheControlProblem(b.cache_control, `${at}.cache_control`) ?? (b.type === 'text' ? textProblem(b, at) : null)
    if (problem !== null) return problem
  }
  return null
}

function textProblem (block: Block, where: string): string | null {
  if (typeof block.text !== 'string') return `${where} is a text block without text: give it \`text\`, a string.`
  if (isBlank(block.text)) return `${where} is an empty text block: the Messages API refuses text blocks without text (spaces alone count as none); give it text, or leave the block out.`
  return null
}

function isBlank (text: string): boolean {
  return text.trim() === ''
}

/**
 * What is wrong with a block's `cache_control`, as the Messages API checks it: absent or null is
 * no breakpoint; otherwise `{ "type": "ephemeral" }` with an optional `ttl` of "5m" or "1h", and
 * nothing else. Null when it is fine.
 */
export function cacheControlProblem (value: unknown, where: string): string | null {
  if (value === undefined || value === null) return null
  const fix = 'write `{ "type": "ephemeral" }`, with `"ttl": "5m"` or `"1h"` if you like, or leave it out.'
  if (typeof value !== 'object' || Array.isArray(value)) return `${where} is not an object: ${fix}`
  const { type, ttl, ...rest } = value as Record<string, unknown>
  if (type !== 'ephemeral') return `${where} has type ${JSON.stringify(type) ?? 'missing'}: the Messages API takes only "ephemeral"; ${fix}`
  if (ttl !== undefined && !CACHE_TTLS.has(ttl as string)) return `${where} has ttl ${JSON.stringify(ttl)}: the Messages API takes "5m" or "1h"; ${fix}`
  const extra = Object.keys(rest)
  if (extra.length > 0) return `${where} has ${extra.map((k) => `"${k}"`).join(', ')}, which the Messages API does not take: ${fix}`
  return null
}

/** Whether a block (or anything shaped like one) sets a cache breakpoint. */
export function isBreakpoint (block: unknown): boolean {
  return typeof block === 'object' && block !== null && (block as Block).cache_control !== undefined && (block as Block).cache_control !== null
}

/**
 * Where the cache breakpoints of a system prompt and messages are (`system[0]`,
 * `messages[2].content[0].content[1]`, …): every block with a `cache_control`, a tool_result's
 * own blocks included. The Messages API refuses a request with more than MAX_CACHE_BREAKPOINTS.
 */
export function cacheBreakpoints (messages: readonly MessageParam[], system?: string | readonly TextBlockParam[]): string[] {
  const out: string[] = []
  if (Array.isArray(system)) for (const [i, block] of system.entries()) if (isBreakpoint(block)) out.push(`system[${i}]`)
  for (const [i, message] of messages.entries()) {
    for (const [j, block] of blocks(message).entries()) {
      if (isBreakpoint(block)) out.push(`messages[${i}].content[${j}]`)
      if (block.type === 'tool_result' && Array.isArray(block.content)) {
        for (const [k, inner] of (block.content as unknown[]).entries()) if (isBreakpoint(inner)) out.push(`messages[${i}].content[${j}].content[${k}]`)
      }
    }
  }
  return out
}

/**
 * What is wrong with a system prompt given as blocks: each a text block that is not blank, with a
 * valid `cache_control`. Null when it is fine.
 */
export function findSystemProblem (system: string | readonly TextBlockParam[] | undefined): string | null {
  if (!Array.isArray(system)) return null
  for (const [i, block] of (system as unknown as Block[]).entries()) {
    // Text blocks, as the schema says: checked as a message's are.
    const problem = blockProblem(block, 'user', `system[${i}]`)
    if (problem !== null) return problem
  }
  return null
}
