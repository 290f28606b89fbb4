import { pipeline, type Readable } from 'node:stream'
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib'
import { Agent, type Dispatcher } from 'undici'

/** What the SDK's `fetch` option is given: a fetch function. */
export type SdkFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>

/**
 * A fetch for the Anthropic SDK over undici's `request`, with a connection pool of its own.
 *
 * Node's global fetch hands the body over as a web ReadableStream: every SSE chunk of a model
 * answer then passes through the web streams machinery and fetch's own bookkeeping, which cost
 * about as much CPU as everything else a model call does (bench/RESULTS.md). The SDK reads a
 * streamed body with `for await`, which a Node stream answers natively, so a successful answer's
 * body is undici's own Readable. Everything else is a real Response: an error answer is read
 * (the SDK reads it as text or JSON) up to {@link MAX_ERROR_BODY_BYTES}, and the status and
 * headers are the answer's.
 *
 * Requests whose body is not a string or bytes (a file upload, which Switchboard never sends)
 * go through the global fetch. No `accept-encoding` is sent, so answers come uncompressed; one
 * compressed anyway is decompressed.
 */
export function undiciFetch (): { fetch: SdkFetch, close: () => Promise<void> } {
  const agent = new Agent({
    // The SDK's timeout covers the wait for headers and the model client's idle timer the body:
    // undici's own defaults (300 s each) would only cut in behind them.
    headersTimeout: 0,
    bodyTimeout: 0
  })

  async function fetch (input: string | URL | Request, init: RequestInit = {}): Promise<Response> {
    const body = init.body
    if (input instanceof Request || !(body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array)) {
      return await globalThis.fetch(input, init)
    }
    const url = typeof input === 'string' ? new URL(input) : input
    const headers: Record<string, string> = {}
    // The SDK hands over a Headers; copying it into another first would be work for nothing.
    const given = init.headers instanceof Headers ? init.headers : new Headers(init.headers)
    given.forEach((value, name) => { headers[name] = value })
    const answer = await agent.request({
      origin: url.origin,
      path: `${url.pathname}${url.search}`,
      method: (init.method ?? 'GET') as Dispatcher.HttpMethod,
      headers,
      body: body ?? null,
      signal: init.signal ?? undefined
    })
    if (answer.statusCode < 200 || answer.statusCode > 599) {
      discard(answer.body)
      throw new TypeError(`the server answered with HTTP status ${answer.statusCode}, which is not a response`)
    }
    const responseHeaders = new Headers()
    const decoded = decode(answer.body, answer.headers['content-encoding'])
    for (const [name, value] of Object.entries(answer.headers)) {
      if (decoded !== undefined && (name === 'content-encoding' || name === 'content-length')) continue
      if (Array.isArray(value)) for (const one of value) responseHeaders.append(name, one)
      else if (value !== undefined) responseHeaders.set(name, value)
    }
    const responseInit = { status: answer.statusCode, headers: responseHeaders }
    const stream = decoded ?? answer.body
    if (NULL_BODY_STATUSES.has(answer.statusCode)) {
      discard(stream)
      return new Response(null, responseInit)
    }
    // An error answer is read whole by the SDK: a real Response carries it, cut at
    // MAX_ERROR_BODY_BYTES, the rest never downloaded.
    if (answer.statusCode >= 300) return new Response(await head(stream, answer.body, MAX_ERROR_BODY_BYTES), responseInit)
    // A successful one is streamed: its body is the Node stream itself, and read whole, it
    // answers as a Response's body would.
    return Object.defineProperties(new Response(null, responseInit), {
      body: { value: stream, enumerable: true },
      text: { value: async () => await text(stream) },
      json: { value: async () => JSON.parse(await text(stream)) as unknown }
    })
  }

  // Called once every run has stopped: whatever is still open is cut rather than waited for.
  return { fetch, close: async () => await agent.destroy() }
}

const NULL_BODY_STATUSES = new Set([204, 205, 304])

/**
 * The most bytes of an error answer's body that are read. The API's own errors are a few hundred
 * bytes, a gateway's error page a few KiB; a broken or hostile endpoint (ANTHROPIC_BASE_URL may be
 * anything) could send megabytes, or never end, and each failed call, retried, would hold it all.
 */
export const MAX_ERROR_BODY_BYTES = 64 * 1024

/** The body decompressed, for an answer compressed although nothing asked for it; else undefined. */
function decode (body: Readable, encoding: string | string[] | undefined): Readable | undefined {
  const name = (Array.isArray(encoding) ? encoding.join(',') : encoding ?? '').trim().toLowerCase()
  if (name === '' || name === 'identity') return undefined
  const decoder = name === 'gzip' || name === 'x-gzip' ? createGunzip() : name === 'deflate' ? createInflate() : name === 'br' ? createBrotliDecompress() : undefined
  if (decoder === undefined) {
    discard(body)
    throw new TypeError(`the answer is compressed with ${name}, which is not supported`)
  }
  return pipeline(body, decoder, () => {})
}

/** Drops a body unread; undici reports that as an error, which nobody is waiting for here. */
function discard (body: Readable): void {
  body.on('error', () => {})
  body.destroy()
}

async function text (stream: Readable): Promise<string> {
  let out = ''
  stream.setEncoding('utf8')
  for await (const chunk of stream) out += chunk as string
  return out
}

/**
 * The first `limit` bytes of `stream`. A longer body is cut there and dropped with its connection
 * (`source`, the answer's own body, when `stream` decompresses it), so the rest is never read.
 */
async function head (stream: Readable, source: Readable, limit: number): Promise<Buffer> {
  // Dropping the body mid-way makes undici report an abort, possibly after the loop has let go.
  stream.on('error', () => {})
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of stream) {
    const bytes = chunk as Buffer
    if (size + bytes.length > limit) {
      chunks.push(bytes.subarray(0, limit - size))
      size = limit
      discard(stream)
      if (source !== stream) discard(source)
      break
    }
    chunks.push(bytes)
    size += bytes.length
  }
  return Buffer.concat(chunks, size)
}
