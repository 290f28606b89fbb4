import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

/**
 * The house reads one way (CONTRIBUTING.md): routes -> plugins -> src, and no circles. Checked on
 * every import, types included, since a type import is a dependency a reader follows too.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url))

function sources (dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(join(ROOT, dir))) {
    const path = join(dir, name)
    if (statSync(join(ROOT, path)).isDirectory()) out.push(...sources(path))
    else if (name.endsWith('.ts')) out.push(path)
  }
  return out
}

/** The project files a file imports, as paths from the root. */
function importsOf (file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8')
  const specifiers = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => m[1]!)
  return specifiers.map((s) => relative(ROOT, resolve(ROOT, dirname(file), s)).replace(/\.js$/, '.ts'))
}

const files = [...sources('src'), ...sources('plugins'), ...sources('routes'), 'app.ts', 'server.ts']
const graph = new Map(files.map((f) => [f, importsOf(f)]))
const area = (file: string): string => file.split('/')[0]!

describe('the layout of the code', () => {
  it('finds the files and their imports (the check below has something to check)', () => {
    expect(files.length).toBeGreaterThan(50)
    expect(graph.get('src/runs/engine.ts')).toContain('src/runs/run-driver.ts')
  })

  it('src/ imports nothing of plugins/, routes/ or the app', () => {
    const wrong = [...graph].flatMap(([file, deps]) => area(file) === 'src' ? deps.filter((d) => area(d) !== 'src').map((d) => `${file} -> ${d}`) : [])
    expect(wrong).toEqual([])
  })

  it('plugins/ imports nothing of routes/; routes/ nothing of src/store (they speak the engine\'s and the schemas\' words)', () => {
    const wrong = [...graph].flatMap(([file, deps]) => deps
      .filter((d) => (area(file) === 'plugins' && area(d) === 'routes') || (area(file) === 'routes' && d.startsWith('src/store/')))
      .map((d) => `${file} -> ${d}`))
    expect(wrong).toEqual([])
  })

  it('has no import cycles', () => {
    const cycles: string[] = []
    const state = new Map<string, 'open' | 'done'>()
    const visit = (file: string, path: string[]): void => {
      if (state.get(file) === 'done') return
      if (state.get(file) === 'open') {
        cycles.push([...path.slice(path.indexOf(file)), file].join(' -> '))
        return
      }
      state.set(file, 'open')
      for (const dep of graph.get(file) ?? []) visit(dep, [...path, file])
      state.set(file, 'done')
    }
    for (const file of files) visit(file, [])
    expect(cycles).toEqual([])
  })
})
