import { describe, expect, it } from 'vitest'
import { openapiDocument } from '../../scripts/openapi-document.js'

interface Operation { operationId?: string, responses: Record<string, unknown> }
type Document = { servers?: unknown[], info: { license?: { name: string } }, paths: Record<string, Record<string, Operation>> }

// What generators and linters expect of the document (npm run lint:openapi checks the rest).
describe('the OpenAPI document, as client generators read it', async () => {
  const doc = await openapiDocument() as unknown as Document
  const operations = Object.entries(doc.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, operation]) => ({ route: `${method.toUpperCase()} ${path}`, operation })))

  it('names every operation with a camelCase verbNoun operationId, each its own', () => {
    const ids = operations.map(({ route, operation }) => {
      expect(operation.operationId, `${route} has no operationId`).toMatch(/^[a-z]+[A-Z][A-Za-z]*$/)
      return operation.operationId
    })
    expect(new Set(ids).size).toBe(ids.length)
    expect(ids).toEqual(expect.arrayContaining(['createRun', 'getRun', 'listRuns', 'cancelRun', 'submitToolOutputs', 'listRunEvents', 'getRunTimeline', 'putTool', 'getTool', 'listTools', 'deleteTool', 'rotateToolSecret']))
  })

  it('says where the API is and under what license', () => {
    expect(doc.servers).toEqual([{ url: '/', description: expect.any(String) }])
    expect(doc.info.license?.name).toEqual(expect.any(String))
  })

  it('lists a 4xx answer for every operation but the probes', () => {
    for (const { route, operation } of operations) {
      if (route === 'GET /healthz' || route === 'GET /readyz') continue
      expect(Object.keys(operation.responses).some((status) => status.startsWith('4')), route).toBe(true)
    }
  })
})
