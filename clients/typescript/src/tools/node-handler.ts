import type { IncomingMessage, ServerResponse } from 'node:http'
import { ToolHost, type HostReply, type ToolHostOptions } from './tool-host.js'
import type { ToolSecrets } from './tool-secrets.js'

/** A `(req, res)` listener for node:http that answers Switchboard's tool calls. */
export interface ToolHandler {
  (req: IncomingMessage, res: ServerResponse): void
  /** The secrets it verifies with: give them to registerTools to keep the secrets it gets. */
  readonly secrets: ToolSecrets
}

/**
 * A request listener for Node's `http` (or anything that takes one: Express, Connect) that hosts
 * `tools`. A call goes to the tool its body names, whatever the path, so every tool may share one
 * URL: `http.createServer(createToolHandler({ secrets, tools })).listen(4000)`.
 */
export function createToolHandler (options: ToolHostOptions): ToolHandler {
  const host = new ToolHost(options)
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    serve(host, req, res).catch(() => { if (!res.headersSent) res.destroy() })
  }
  return Object.assign(handler, { secrets: host.secrets })
}

async function serve (host: ToolHost, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'POST') return send(res, { status: 405, body: { error: 'Tool calls are POSTs.' } })
  const hangUp = new AbortController()
  res.on('close', () => { if (!res.writableFinished) hangUp.abort() })
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > host.maxBodyBytes) return send(res, { status: 413, body: { error: `The body is over ${host.maxBodyBytes} bytes.` } })
    chunks.push(chunk as Buffer)
  }
  send(res, await host.answer(Buffer.concat(chunks).toString('utf8'), req.headers, hangUp.signal, req.url ?? '/'))
}

function send (res: ServerResponse, reply: HostReply): void {
  if (res.destroyed || res.headersSent) return
  const body = JSON.stringify(reply.body)
  res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}
