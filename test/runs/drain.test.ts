import { afterEach, describe, expect, it } from 'vitest'
import { setTimeout as sleep } from 'node:timers/promises'
import { toolsThenAnswer } from '../support/fake-messages-api.js'
import { startHarness, type Harness } from '../support/harness.js'
import { TENANT_A } from '../support/app.js'

describe('a drain longer than a lease', () => {
  let h: Harness | undefined
  afterEach(async () => {
    await h?.close()
    h = undefined
  })

  it('keeps the runs it lets finish: their leases are renewed until they end', async () => {
    h = await startHarness(undefined, { env: { RUN_LEASE_MS: '1000', SHUTDOWN_GRACE_MS: '5000' } })
    h.model.respond = toolsThenAnswer([{ name: 'slow', input: { q: 'x' } }])
    await h.registerTool('slow', '/delay/3000', { effect: 'read_only', timeout_ms: 10_000 })
    const { body: run } = await h.startRun({ input: 'x', tools: ['slow'], background: true })
    await expect.poll(() => h!.tools.calls.length).toBeGreaterThan(0)
    const { app } = h
    const closing = app.close()
    // Two leases into the drain, the step still runs here: the run is still this replica's, so
    // no other replica could take it (and call its tools a second time).
    await sleep(2000)
    const stored = await app.store.getRun(TENANT_A.id, run.id)
    expect(stored?.status).toBe('running')
    expect(stored!.lease_expires_at).toBeGreaterThan(Date.now())
    await closing
    // The step was let finish within the grace period: its call was answered, not cut short.
    expect(h.tools.calls.map((c) => c.aborted)).toEqual([false])
  })
})
