/** How many secrets a tool keeps: the current one and those it replaced, for a rotation. */
const KEPT = 3

/**
 * The signing secrets (`whsec_…`) a tool host verifies calls with, per tool. During a rotation a
 * tool holds several: a call signed with any of them passes. Secrets given without a tool name
 * (a string or a list) hold for every tool.
 */
export class ToolSecrets {
  readonly #byTool = new Map<string, string[]>()
  readonly #shared: string[]

  constructor (initial?: string | readonly string[] | Readonly<Record<string, string | readonly string[] | undefined>>) {
    if (typeof initial === 'string') this.#shared = [initial]
    else if (Array.isArray(initial)) this.#shared = [...initial as readonly string[]]
    else {
      this.#shared = []
      for (const [tool, secrets] of Object.entries(initial ?? {})) {
        if (secrets !== undefined) this.set(tool, secrets)
      }
    }
  }

  /** Adds a tool's new secret (from a create or a rotation), keeping the ones it replaces. */
  add (tool: string, secret: string): void {
    const secrets = (this.#byTool.get(tool) ?? []).filter((s) => s !== secret)
    this.#byTool.set(tool, [secret, ...secrets].slice(0, KEPT))
  }

  /** Replaces a tool's secrets. */
  set (tool: string, secrets: string | readonly string[]): void {
    this.#byTool.set(tool, typeof secrets === 'string' ? [secrets] : [...secrets])
  }

  /** The secrets a call of `tool` may be signed with: its own, newest first, then the shared ones. */
  for (tool: string): string[] {
    return [...this.#byTool.get(tool) ?? [], ...this.#shared]
  }

  /** Whether the tool has a secret of its own. */
  has (tool: string): boolean {
    return (this.#byTool.get(tool)?.length ?? 0) > 0
  }
}
