/** One Server-Sent Event as received. */
export interface SseEvent {
  readonly id: string | undefined
  readonly event: string | undefined
  readonly data: any
}

/**
 * Reads a `text/event-stream` response, event by event, until the stream ends, `until` says stop
 * (the connection is then dropped, as a client that goes away does), or `signal` aborts.
 */
export async function readEvents (response: Response, options: { until?: (event: SseEvent) => boolean, abort?: AbortController } = {}): Promise<{ events: SseEvent[], comments: number, ended: boolean }> {
  const events: SseEvent[] = []
  let comments = 0
  const reader = response.body!.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  for (;;) {
    let chunk: Awaited<ReturnType<typeof reader.read>>
    try {
      chunk = await reader.read()
    } catch {
      return { events, comments, ended: false }
    }
    if (chunk.done) return { events, comments, ended: true }
    buffer += decoder.decode(chunk.value, { stream: true })
    let split: number
    while ((split = buffer.indexOf('\n\n')) !== -1) {
      const block = buffer.slice(0, split)
      buffer = buffer.slice(split + 2)
      if (block.startsWith(':')) {
        comments++
        continue
      }
      const fields: Record<string, string> = {}
      for (const line of block.split('\n')) {
        const colon = line.indexOf(':')
        if (colon > 0) fields[line.slice(0, colon)] = (fields[line.slice(0, colon)] ?? '') + line.slice(colon + 1).replace(/^ /, '')
      }
      const event: SseEvent = { id: fields.id, event: fields.event, data: fields.data === undefined ? undefined : JSON.parse(fields.data) }
      events.push(event)
      if (options.until?.(event) === true) {
        options.abort?.abort()
        await reader.cancel().catch(() => {})
        return { events, comments, ended: false }
      }
    }
  }
}
