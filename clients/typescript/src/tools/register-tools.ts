import type { Switchboard } from '../client.js'
import type { Tool, ToolDefinition } from '../types.js'
import type { HostedTools } from './tool-host.js'
import type { ToolSecrets } from './tool-secrets.js'

export interface RegisterToolsOptions {
  /** The URL Switchboard calls: one for every tool (the handler routes on the body's `tool`), or one per tool. */
  readonly url: string | ((name: string) => string)
  readonly tools: HostedTools
  /** Where the signing secrets answered are kept: the ToolSecrets the handler verifies with. */
  readonly secrets?: ToolSecrets | undefined
}

export interface RegisteredTools {
  readonly tools: Tool[]
  /** The signing secret of each tool whose secret was made now (a create, or a rotation). */
  readonly secrets: Record<string, string>
}

/**
 * PUTs each tool's definition (`PUT /tools/{name}`: a create or a replace) and keeps the signing
 * secret a create answers in `secrets`. A tool that already existed answers no secret: if
 * `secrets` has none for it either, its secret is rotated to get one (the old one keeps signing
 * calls for the rotation window, so other hosts of the tool miss nothing).
 */
export async function registerTools (client: Switchboard, options: RegisterToolsOptions): Promise<RegisteredTools> {
  const tools: Tool[] = []
  const secrets: Record<string, string> = {}
  for (const [name, hosted] of Object.entries(options.tools)) {
    const { handler: _handler, ...fields } = hosted
    const definition: ToolDefinition = { ...fields, url: typeof options.url === 'function' ? options.url(name) : options.url }
    const tool = await client.tools.put(name, definition)
    let secret = 'signing_secret' in tool ? tool.signing_secret : undefined
    if (secret === undefined && options.secrets?.has(name) !== true) secret = (await client.tools.rotateSecret(name)).signing_secret
    if (secret !== undefined) {
      secrets[name] = secret
      options.secrets?.add(name, secret)
    }
    tools.push(tool)
  }
  return { tools, secrets }
}
