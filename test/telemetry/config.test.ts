import { describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/config.js'
import { configError } from '../support/config.js'

describe('observability settings', () => {
  it('tracing is off without OTEL variables, and with OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none', () => {
    expect(loadConfig({}).tracesExporter).toBeNull()
    expect(loadConfig({ OTEL_SERVICE_NAME: 'x' }).tracesExporter).toBeNull()
    expect(loadConfig({ OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }).tracesExporter).toBeNull()
    expect(loadConfig({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }).tracesExporter).toBeNull()
  })

  it('an endpoint turns it on: the general one gets /v1/traces, the traces one is used as is', () => {
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' }).tracesExporter?.url).toBe('http://collector:4318/v1/traces')
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://traces.example/ingest' }).tracesExporter?.url).toBe('https://traces.example/ingest')
    expect(loadConfig({ OTEL_TRACES_EXPORTER: 'otlp' }).tracesExporter?.url).toBe('http://localhost:4318/v1/traces')
  })

  it('collector headers: key=value pairs, percent-decoded, the traces ones over the general ones', () => {
    const config = loadConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      OTEL_EXPORTER_OTLP_HEADERS: 'x-team=agents,authorization=Basic%20abc',
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'authorization=Bearer%20t0ken'
    })
    expect(config.tracesExporter?.headers).toEqual({ 'x-team': 'agents', authorization: 'Bearer t0ken' })
    expect(loadConfig({ OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=prod,team=a%2Cb' }).resourceAttributes).toEqual({ 'deployment.environment': 'prod', team: 'a,b' })
  })

  it('refuses what it cannot honour, naming the variable', () => {
    expect(configError({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4317', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toMatch(/^OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported: .*http\/json/)
    expect(configError({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/protobuf' })).toMatch(/^OTEL_EXPORTER_OTLP_TRACES_PROTOCOL/)
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }).tracesExporter).not.toBeNull()
    expect(configError({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' })).toMatch(/^OTEL_EXPORTER_OTLP_ENDPOINT/)
    expect(configError({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c', OTEL_EXPORTER_OTLP_HEADERS: 'novalue' })).toMatch(/^OTEL_EXPORTER_OTLP_HEADERS/)
    expect(configError({ OTEL_SDK_DISABLED: 'yes' })).toMatch(/^OTEL_SDK_DISABLED/)
    expect(configError({ OTEL_TRACES_EXPORTER: 'zipkin' })).toMatch(/^OTEL_TRACES_EXPORTER/)
    expect(configError({ METRICS_TOKEN: 'short' })).toMatch(/^METRICS_TOKEN must NOT have fewer than 16 characters/)
  })
})
