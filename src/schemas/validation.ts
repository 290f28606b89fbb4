import { Ajv, type Options } from 'ajv'
import addFormats from 'ajv-formats'
import { NO_NUL } from './common.js'

/**
 * The validator of request parts. Bodies are JSON and checked strictly as sent: no type coercion
 * (`"5"` is not 5) and no silent removal of unknown fields (they are refused). Query strings and
 * path parameters arrive as text, so their numbers and booleans are coerced.
 */
export function createRequestValidators (): { body: Ajv, text: Ajv } {
  const common: Options = { useDefaults: true, removeAdditional: false, allErrors: false, strict: false }
  const body = new Ajv({ ...common, coerceTypes: false })
  const text = new Ajv({ ...common, coerceTypes: 'array' })
  for (const ajv of [body, text]) addFormats.default(ajv)
  return { body, text }
}

/** What ajv reports of one problem. */
export interface ValidationIssue {
  keyword: string
  instancePath: string
  message?: string
  params: Record<string, unknown>
}

/** `/messages/0/role` under `body` → `body.messages[0].role`. */
export function fieldPath (root: string, instancePath: string): string {
  return root + instancePath.split('/').slice(1).map((part) => {
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~')
    return /^\d+$/.test(key) ? `[${key}]` : /^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`
  }).join('')
}

/** One clause per problem, naming the field: `body.max_steps must be <= 1000`. */
export function describeValidation (root: string, issues: readonly ValidationIssue[]): string {
  const clauses = issues.map((issue) => {
    const where = fieldPath(root, issue.instancePath)
    switch (issue.keyword) {
      case 'required':
        return `${where} is missing the required field "${String(issue.params.missingProperty)}"`
      case 'additionalProperties':
        return `${where} has an unknown field "${String(issue.params.additionalProperty)}"; remove it (field names are snake_case)`
      case 'enum':
        return `${where} must be one of ${(issue.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`
      case 'const':
        return `${where} must be ${JSON.stringify(issue.params.allowedValue)}`
      case 'pattern':
        if (issue.params.pattern === NO_NUL) return `${where} must not hold the NUL character (\\u0000)`
        return `${where} ${issue.message ?? 'is invalid'}`
      default:
        return `${where} ${issue.message ?? 'is invalid'}`
    }
  })
  return [...new Set(clauses)].join('; ')
}
