import { afterEach, describe, expect, it } from 'vitest'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildApp } from '../../app.js'
import { loadConfig } from '../../src/config.js'
import { createStore, type Store } from '../../src/store/index.js'
import { BASE_ENV, TENANT_A } from '../support/app.js'
import { backends, type StorageLocation } from '../support/backends.js'
import { silentLog } from '../support/log.js'
import { newRun } from '../support/runs.js'

for (const backend of backends) {
  describe.skipIf(backend.skip)(`start-up: ${backend.name}`, () => {
    let cleanup: Array<() => Promise<void>> = []
    afterEach(async () => {
      for (const fn of cleanup.reverse()) await fn().catch(() => {})
      cleanup = []
    })

    async function storeWithQueuedRun (): Promise<{ location: StorageLocation, store: Store, runId: string }> {
      const location = await backend.location()
      const store = await createStore({ dataDir: location.dataDir, databaseUrl: location.databaseUrl, log: silentLog })
      cleanup.push(async () => { await store.close(); await location.destroy() })
      // Queued, held by nobody: the first sweep of a replica takes it up.
      const { run } = await store.createRun(newRun(TENANT_A.id, {}, null))
      return { location, store, runId: run.id }
    }

    function configFor (location: StorageLocation) {
      return loadConfig({ ...BASE_ENV, SHUTDOWN_GRACE_MS: '100', DATA_DIR: location.dataDir, ...(location.databaseUrl === undefined ? {} : { DATABASE_URL: location.databaseUrl }) })
    }

    it('a replica whose start-up fails after the engine loaded never claims a run', async () => {
      const { location, store, runId } = await storeWithQueuedRun()
      const app = await buildApp({ config: configFor(location), logger: silentLog, store })
      cleanup.push(async () => { await app.close() })
      // A plugin after the engine's fails (a bad setting found late, say): the process will exit.
      app.register(async () => {
        await sleep(50)
        throw new Error('a later plugin failed')
      })
      await expect(app.ready()).rejects.toThrow('a later plugin failed')
      // Time enough for a sweep, had one been started.
      await sleep(1500)
      expect(await store.getRun(TENANT_A.id, runId)).toMatchObject({ status: 'queued', lease_owner: null })
    })

    it('a replica that starts takes up the queued run at once', async () => {
      const { location, store, runId } = await storeWithQueuedRun()
      const app = await buildApp({ config: configFor(location), logger: silentLog, store })
      cleanup.push(async () => { await app.close() })
      await app.ready()
      // Taken up and driven: with no model configured, the run fails rather than stay queued.
      await expect.poll(async () => (await store.getRun(TENANT_A.id, runId))?.status, { timeout: 10_000 }).not.toBe('queued')
    })
  })
}
