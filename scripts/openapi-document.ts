/**
 * The OpenAPI document exactly as a running service answers it at /openapi.json, without
 * listening: buildApp() on a throwaway SQLite folder, in open mode.
 *
 *   npx tsx scripts/openapi-document.ts [FILE]    writes it to FILE (stdout without one)
 *
 * `npm run lint:openapi` lints what this writes; the TypeScript client's types are generated from
 * it (`npm run generate -w clients/typescript`).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { pathToFileURL } from 'node:url'
import pino from 'pino'
import { buildApp } from '../app.js'
import { loadConfig } from '../src/config.js'

/** The document /openapi.json answers, as a plain object. */
export async function openapiDocument (): Promise<Record<string, unknown>> {
  const dataDir = await mkdtemp(join(tmpdir(), 'switchboard-openapi-'))
  try {
    const config = loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: 'silent' })
    const app = await buildApp({ config, logger: pino({ level: 'silent' }) })
    try {
      await app.ready()
      const res = await app.inject({ method: 'GET', url: '/openapi.json' })
      if (res.statusCode !== 200) throw new Error(`GET /openapi.json answered ${res.statusCode}: ${res.body}`)
      return res.json()
    } finally {
      await app.close()
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const text = `${JSON.stringify(await openapiDocument(), null, 2)}\n`
  const file = process.argv[2]
  if (file === undefined) process.stdout.write(text)
  else {
    await mkdir(dirname(file), { recursive: true })
    await writeFile(file, text)
  }
}
