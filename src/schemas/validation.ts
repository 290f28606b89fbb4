import { Ajv, type Options } from 'ajv'
import addFormats from 'ajv-formats'
import { AppError } from '../errors.js'
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
    return /^\d+$/.test(key) ? `[${key}]` : pathSegment(key)
  }).join('')
}

/** One step of a path to show: `[0]` for an index, `.name`, or `["odd key"]`; a key longer than `maxChars` cut short. */
function pathSegment (key: string | number, maxChars = Number.POSITIVE_INFINITY): string {
  if (typeof key === 'number') return `[${key}]`
  if (/^[A-Za-z_$][\w$]*$/.test(key) && key.length <= maxChars) return `.${key}`
  return `[${JSON.stringify(key.length > maxChars ? `${key.slice(0, maxChars)}…` : key)}]`
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

/** The JSON keys secure-json-parse (Fastify's JSON parser) refuses, as it refuses them. */
function forbiddenKeyOf (node: object): '__proto__' | 'constructor' | null {
  if (Object.hasOwn(node, '__proto__')) return '__proto__'
  const ctor = Object.hasOwn(node, 'constructor') ? (node as { constructor: unknown }).constructor : undefined
  if (typeof ctor === 'object' && ctor !== null && Object.hasOwn(ctor, 'prototype')) return 'constructor'
  return null
}

/** `body.messages[0].content`, each key cut short: a path to show, not to be read back. */
function pathOf (keys: ReadonlyArray<string | number>): string {
  const parts = keys.map((key) => pathSegment(key, 40))
  const shown = parts.length > 12 ? [...parts.slice(0, 4), '…', ...parts.slice(-7)] : parts
  return `body${shown.join('')}`
}

/**
 * Why a JSON body that Fastify's parser refused was refused, if it was for a key that could
 * rewrite objects' prototypes rather than for its syntax: the refusal, saying where that key is.
 * Only a refused body comes here, so the walk (breadth first, shallowest key first) costs
 * nothing on the way of a good one.
 */
export function forbiddenKeyError (body: string): AppError | null {
  let value: unknown
  try {
    value = JSON.parse(body.charCodeAt(0) === 0xfeff ? body.slice(1) : body)
  } catch {
    return null
  }
  const queue: Array<{ node: object, up: number, key: string | number }> = []
  if (typeof value === 'object' && value !== null) queue.push({ node: value, up: -1, key: '' })
  for (let at = 0; at < queue.length; at++) {
    const { node } = queue[at]!
    const key = forbiddenKeyOf(node)
    if (key !== null) {
      const keys: Array<string | number> = [key]
      for (let i = at; i > 0; i = queue[i]!.up) keys.unshift(queue[i]!.key)
      const what = key === '__proto__' ? 'a key named __proto__' : 'a key named constructor that holds a prototype'
      return new AppError('REQUEST_ERR_FORBIDDEN_KEY', `${pathOf(keys)}: ${what} could rewrite the prototype of the objects the body is read into, so bodies that hold one are refused. Rename the key.`)
    }
    const isArray = Array.isArray(node)
    for (const [name, child] of Object.entries(node)) {
      if (typeof child === 'object' && child !== null) queue.push({ node: child, up: at, key: isArray ? Number(name) : name })
    }
  }
  return null
}
