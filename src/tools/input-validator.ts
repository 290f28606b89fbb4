import { Ajv, type AnySchema, type ErrorObject, type Options, type ValidateFunction } from 'ajv'
import { Ajv2019 } from 'ajv/dist/2019.js'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormats from 'ajv-formats'
import { fieldPath } from '../schemas/validation.js'

/** A compiled tool input schema: answers null for a valid input, else what is wrong with it. */
export type InputCheck = (input: unknown) => string | null

/** Why an input schema was refused; the message quotes the compiler. */
export class InvalidInputSchemaError extends Error {
  override name = 'InvalidInputSchemaError'
}

interface CacheEntry {
  readonly revision: string
  readonly check: InputCheck
}

// Report every problem of an input at once, so the model can fix them all in its next try; model
// inputs are small, so allErrors costs nothing that matters here.
const OPTIONS: Options = { allErrors: true, strict: false, validateFormats: true, addUsedSchema: false }
const MAX_REPORTED = 5

/**
 * Compiles tools' `input_schema`s (JSON Schema draft-07, 2019-09 or 2020-12, chosen by `$schema`;
 * draft-07 when absent) and keeps the compiled checks, keyed by tool and revision, for checking
 * the model's inputs before each call.
 */
export class InputValidators {
  readonly #draft07 = withFormats(new Ajv(OPTIONS))
  readonly #draft2019 = withFormats(new Ajv2019(OPTIONS))
  readonly #draft2020 = withFormats(new Ajv2020(OPTIONS))
  readonly #cache = new Map<string, CacheEntry>()

  /**
   * Compiles `schema`, throwing {@link InvalidInputSchemaError} with the compiler's complaint when
   * it does not compile. The compiled check is cached under `key` at `revision`.
   */
  compile (schema: Record<string, unknown>, cacheKey?: { key: string, revision: string }): InputCheck {
    if (cacheKey !== undefined) {
      const cached = this.#cache.get(cacheKey.key)
      if (cached?.revision === cacheKey.revision) return cached.check
    }
    if (schema.type !== 'object') {
      throw new InvalidInputSchemaError('input_schema must have `"type": "object"` at the top: the model\'s input to a tool is always an object.')
    }
    const ajv = this.#pick(schema.$schema)
    let validate: ValidateFunction
    try {
      validate = ajv.compile(schema as AnySchema)
    } catch (err) {
      throw new InvalidInputSchemaError(`input_schema does not compile: ${(err as Error).message}`)
    } finally {
      // The compiled function lives on in our cache; ajv's own would grow with every schema seen.
      ajv.removeSchema(schema as AnySchema)
    }
    const check: InputCheck = (input) => validate(input) ? null : describeErrors(validate.errors ?? [])
    if (cacheKey !== undefined) this.#cache.set(cacheKey.key, { revision: cacheKey.revision, check })
    return check
  }

  /** Forgets a tool's compiled check (it was deleted). */
  forget (key: string): void {
    this.#cache.delete(key)
  }

  #pick (dialect: unknown): Ajv {
    if (dialect === undefined) return this.#draft07
    const uri = String(dialect)
    if (uri.includes('2020-12')) return this.#draft2020
    if (uri.includes('2019-09')) return this.#draft2019
    if (uri.includes('draft-07')) return this.#draft07
    throw new InvalidInputSchemaError(`input_schema has an unsupported $schema "${uri}": use JSON Schema draft-07, 2019-09 or 2020-12, or leave $schema out (draft-07).`)
  }
}

function withFormats<T extends Ajv> (ajv: T): T {
  addFormats.default(ajv)
  return ajv
}

/** What is wrong with an input, one clause per problem: `input.location: must be string`. */
function describeErrors (errors: readonly ErrorObject[]): string {
  const clauses = errors.slice(0, MAX_REPORTED).map((e) => {
    const path = fieldPath('input', e.instancePath)
    if (e.keyword === 'required') return `${path}.${String(e.params.missingProperty)}: is required`
    if (e.keyword === 'additionalProperties') return `${path}: must not have the property "${String(e.params.additionalProperty)}"`
    if (e.keyword === 'enum') return `${path}: must be one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`
    return `${path}: ${e.message ?? 'is invalid'}`
  })
  const more = errors.length > MAX_REPORTED ? `; and ${errors.length - MAX_REPORTED} more` : ''
  return [...new Set(clauses)].join('; ') + more
}
