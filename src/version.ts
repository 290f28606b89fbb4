import { readFileSync } from 'node:fs'

/** This release's version, from package.json (found from source and from the built dist/ alike). */
export const VERSION: string = (() => {
  for (const relative of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(relative, import.meta.url), 'utf8')) as { name?: string, version?: string }
      if (pkg.name === 'switchboard' && typeof pkg.version === 'string') return pkg.version
    } catch {}
  }
  return '0.0.0'
})()
