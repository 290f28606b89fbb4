import { createServer, type Server } from 'node:http'
import { gunzipSync } from 'node:zlib'
import { closeLocal, listenLocal } from './local-server.js'

/** A span as an OTLP/HTTP JSON export carries it, with its attributes made plain values. */
export interface CollectedSpan {
  readonly traceId: string
  readonly spanId: string
  /** '' for a root span. */
  readonly parentSpanId: string
  readonly name: string
  readonly kind: number
  readonly attributes: Record<string, unknown>
  readonly status: { code?: number, message?: string }
  readonly resource: Record<string, unknown>
}

/**
 * An OpenTelemetry collector on 127.0.0.1 that accepts OTLP/HTTP JSON exports at /v1/traces, as
 * a real one does, and keeps every span it was sent.
 */
export class OtlpCollector {
  readonly spans: CollectedSpan[] = []
  /** Requests received, whatever their path. */
  requests = 0
  readonly #server: Server
  #url = ''

  constructor () {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (chunk: Buffer) => chunks.push(chunk))
      req.on('end', () => {
        this.requests++
        if (req.method !== 'POST' || req.url !== '/v1/traces' || !String(req.headers['content-type']).startsWith('application/json')) {
          res.writeHead(415, { 'content-type': 'application/json' }).end('{"message":"only OTLP/HTTP JSON at /v1/traces"}')
          return
        }
        let body = Buffer.concat(chunks)
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body)
        this.#collect(JSON.parse(body.toString('utf8')))
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      })
    })
  }

  /** The base URL, for OTEL_EXPORTER_OTLP_ENDPOINT. */
  get url (): string {
    return this.#url
  }

  async start (): Promise<this> {
    this.#url = await listenLocal(this.#server)
    return this
  }

  async close (): Promise<void> {
    await closeLocal(this.#server)
  }

  #collect (request: { resourceSpans?: Array<{ resource?: { attributes?: OtlpAttribute[] }, scopeSpans?: Array<{ spans?: OtlpSpan[] }> }> }): void {
    for (const resourceSpans of request.resourceSpans ?? []) {
      const resource = plain(resourceSpans.resource?.attributes)
      for (const scope of resourceSpans.scopeSpans ?? []) {
        for (const span of scope.spans ?? []) {
          this.spans.push({
            traceId: span.traceId,
            spanId: span.spanId,
            parentSpanId: span.parentSpanId ?? '',
            name: span.name,
            kind: span.kind,
            attributes: plain(span.attributes),
            status: span.status ?? {},
            resource
          })
        }
      }
    }
  }
}

interface OtlpSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  attributes?: OtlpAttribute[]
  status?: { code?: number, message?: string }
}

interface OtlpAttribute { key: string, value: OtlpValue }
interface OtlpValue { stringValue?: string, intValue?: string | number, doubleValue?: number, boolValue?: boolean, arrayValue?: { values?: OtlpValue[] } }

function plain (attributes: OtlpAttribute[] | undefined): Record<string, unknown> {
  return Object.fromEntries((attributes ?? []).map((a) => [a.key, value(a.value)]))
}

function value (v: OtlpValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue
  if (v.intValue !== undefined) return Number(v.intValue)
  if (v.doubleValue !== undefined) return v.doubleValue
  if (v.boolValue !== undefined) return v.boolValue
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(value)
  return undefined
}

export async function startOtlpCollector (): Promise<OtlpCollector> {
  return await new OtlpCollector().start()
}
