/**
 * The hand-written baseline loop as a process of its own, for measurements that need its CPU time
 * apart from the fakes' (bench/growth.ts): the SDK's messages.create, then one Promise.all over
 * undici requests to the tools, until the model answers without tool_use. Started with the fake
 * Messages API's and the tool's URLs as arguments; runs one loop per line it reads on stdin (the
 * run's first user message), answering `done` on stdout after each. Exits when stdin closes.
 */
import { createInterface } from 'node:readline'
import Anthropic from '@anthropic-ai/sdk'
import type { ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import { request } from 'undici'

const [modelUrl, toolUrl] = process.argv.slice(2)
if (modelUrl === undefined || toolUrl === undefined) throw new Error('usage: hand-loop.ts <model url> <tool url>')
const client = new Anthropic({ baseURL: modelUrl, apiKey: 'bench', maxRetries: 0 })
const echoTool = { name: 'echo', description: 'Echoes', input_schema: { type: 'object' as const, properties: { i: { type: 'integer' } } } }

async function callTool (use: ToolUseBlock): Promise<string> {
  const res = await request(toolUrl!, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ run_id: 'baseline', tool_use_id: use.id, tool: use.name, input: use.input, attempt: 1 })
  })
  return JSON.stringify(await res.body.json())
}

async function handLoop (input: string): Promise<void> {
  const messages: Anthropic.MessageParam[] = [{ role: 'user', content: input }]
  for (;;) {
    const message = await client.messages.create({ model: 'bench', max_tokens: 1024, messages, tools: [echoTool] })
    messages.push({ role: 'assistant', content: message.content })
    const uses = message.content.filter((b): b is ToolUseBlock => b.type === 'tool_use')
    if (uses.length === 0) return
    const results = await Promise.all(uses.map(callTool))
    messages.push({ role: 'user', content: uses.map((u, i) => ({ type: 'tool_result' as const, tool_use_id: u.id, content: results[i]! })) })
  }
}

process.stdout.write('ready\n')
for await (const line of createInterface({ input: process.stdin })) {
  await handLoop(line)
  process.stdout.write('done\n')
}
