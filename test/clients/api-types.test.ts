import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { openapiDocument } from '../../scripts/openapi-document.js'
import { API_TYPES_FILE, GENERATE_COMMAND, generateApiTypes } from '../../clients/typescript/scripts/generate.js'

describe('the TypeScript client\'s generated types', () => {
  it('are those of the OpenAPI document the service answers now', async () => {
    const fresh = await generateApiTypes(await openapiDocument())
    const stored = await readFile(API_TYPES_FILE, 'utf8')
    // A failure here means a route or schema changed: regenerate the client's types.
    expect(stored === fresh, `clients/typescript/src/api-types.ts is stale: run \`${GENERATE_COMMAND}\``).toBe(true)
  })
})
