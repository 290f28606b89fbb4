/** Where spans go: an OTLP/HTTP endpoint (JSON encoding), with the headers it wants. */
export interface OtlpSettings {
  /** The traces URL itself, `…/v1/traces`. */
  readonly url: string
  readonly headers: Readonly<Record<string, string>>
}

/**
 * Reads OTLP exporter settings from the standard variables: on when OTEL_TRACES_EXPORTER is
 * `otlp` or an OTLP endpoint is set; off when OTEL_SDK_DISABLED is true or OTEL_TRACES_EXPORTER
 * is `none`. The traces endpoint is used as is; the general one gets `/v1/traces` appended.
 * Throws a message naming the variable for what cannot be honoured.
 */
export function otlpSettings (env: {
  OTEL_SDK_DISABLED: boolean
  OTEL_TRACES_EXPORTER?: string | undefined
  OTEL_EXPORTER_OTLP_ENDPOINT?: string | undefined
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?: string | undefined
  OTEL_EXPORTER_OTLP_HEADERS?: string | undefined
  OTEL_EXPORTER_OTLP_TRACES_HEADERS?: string | undefined
  OTEL_EXPORTER_OTLP_PROTOCOL?: string | undefined
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL?: string | undefined
}): OtlpSettings | null {
  if (env.OTEL_SDK_DISABLED || env.OTEL_TRACES_EXPORTER === 'none') return null
  const general = env.OTEL_EXPORTER_OTLP_ENDPOINT
  const specific = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  if (env.OTEL_TRACES_EXPORTER !== 'otlp' && general === undefined && specific === undefined) return null
  const [protocolVariable, protocol] = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL !== undefined
    ? ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL]
    : ['OTEL_EXPORTER_OTLP_PROTOCOL', env.OTEL_EXPORTER_OTLP_PROTOCOL]
  if (protocol !== undefined && protocol !== 'http/json') {
    throw new Error(`${protocolVariable}=${protocol} is not supported: Switchboard sends traces as OTLP/HTTP with JSON, which every OTLP/HTTP receiver accepts. Set it to http/json (or unset it) and point the endpoint at the collector's HTTP port (4318).`)
  }
  const url = specific ?? (general !== undefined ? `${general.replace(/\/+$/, '')}/v1/traces` : 'http://localhost:4318/v1/traces')
  return {
    url,
    headers: { ...parseKeyValues(env.OTEL_EXPORTER_OTLP_HEADERS, 'OTEL_EXPORTER_OTLP_HEADERS'), ...parseKeyValues(env.OTEL_EXPORTER_OTLP_TRACES_HEADERS, 'OTEL_EXPORTER_OTLP_TRACES_HEADERS') }
  }
}

/** `key1=value1,key2=value2`, values percent-encoded (W3C Baggage style), as the OTEL_* variables use. */
export function parseKeyValues (value: string | undefined, variable: string): Record<string, string> {
  const out: Record<string, string> = {}
  if (value === undefined) return out
  for (const pair of value.split(',')) {
    if (pair.trim() === '') continue
    const at = pair.indexOf('=')
    const key = at < 0 ? '' : pair.slice(0, at).trim()
    if (key === '') throw new Error(`${variable} must be a comma-separated list of key=value pairs; one entry has no key.`)
    try {
      out[key] = decodeURIComponent(pair.slice(at + 1).trim())
    } catch {
      throw new Error(`${variable}: the value of ${key} is not valid percent-encoding.`)
    }
  }
  return out
}
