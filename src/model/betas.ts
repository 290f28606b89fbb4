/**
 * The `anthropic-beta` header a request needs for what it holds, or none. Context management is a
 * beta of the Messages API (the SDK lists its names in AnthropicBeta): clearing old tool results
 * or thinking is `context-management-2025-06-27`, compaction `compact-2026-01-12`.
 */
export function betaHeader (request: object): string | undefined {
  const management = (request as { context_management?: { edits?: Array<{ type?: unknown }> } }).context_management
  if (management === undefined) return undefined
  const betas = new Set<string>()
  for (const edit of management.edits ?? []) {
    betas.add(typeof edit.type === 'string' && edit.type.startsWith('compact_') ? 'compact-2026-01-12' : 'context-management-2025-06-27')
  }
  if (betas.size === 0) betas.add('context-management-2025-06-27')
  return [...betas].join(',')
}
