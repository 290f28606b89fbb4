import type fc from 'fast-check'

/**
 * fast-check settings for the property tests: `numRuns` runs, a seed from FC_SEED (and FC_PATH)
 * to replay a failure, and a report that fits on a screen: the seed, how to replay it, and the
 * start of the counterexample and of the error (generated bodies can be megabytes long).
 */
export function propertyOptions<T> (numRuns: number): fc.Parameters<T> {
  const seed = process.env.FC_SEED === undefined ? undefined : Number(process.env.FC_SEED)
  return {
    numRuns: Number(process.env.FC_RUNS ?? numRuns),
    ...(seed === undefined ? {} : { seed, path: process.env.FC_PATH }),
    endOnFailure: true,
    reporter: (details) => {
      if (!details.failed) return
      const example = JSON.stringify(details.counterexample, (_key, value: unknown) =>
        typeof value === 'string' && value.length > 300 ? `${value.slice(0, 300)}…(${value.length} characters)` : value)
      const error = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)
      throw new Error(`Property failed after ${details.numRuns} runs; replay with FC_SEED=${details.seed} FC_PATH=${details.counterexamplePath ?? ''}\n` +
        `counterexample: ${(example ?? 'undefined').slice(0, 3000)}\nerror: ${error.slice(0, 2000)}`)
    }
  }
}
