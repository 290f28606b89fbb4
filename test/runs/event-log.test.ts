import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EventLog, STOPPED_WRITE_BUDGET_MS, STORAGE_BACKOFF, type EventLogOptions } from '../../src/runs/event-log.js'
import type { RunWrite, Store } from '../../src/store/index.js'
import { backends, openTestStore } from '../support/backends.js'
import { silentLog } from '../support/log.js'
import { newRun } from '../support/runs.js'

// A window no test waits out: what is stored before it closes was stored for another reason.
const LONG = 60_000

for (const backend of backends) {
  describe.skipIf(backend.skip)(`a run's event log: ${backend.name}`, () => {
    let store: Store
    let close: () => Promise<void>
    beforeAll(async () => {
      ({ store, close } = await openTestStore(backend))
    })
    afterAll(async () => close?.())

    /**
     * A log of a new run, and the writes it made, seen on their way to the real store; while
     * `down()`, each write fails as it would with the database gone, before reaching it.
     */
    async function newLog (options: EventLogOptions, down = () => false): Promise<{ log: EventLog, writes: RunWrite[], stored: () => Promise<string[]> }> {
      const { run } = await store.createRun(newRun('events', { status: 'running' }))
      const writes: RunWrite[] = []
      const writeRun: Store['writeRun'] = async (r, lease, write) => {
        writes.push(write)
        if (down()) throw Object.assign(new Error('connection terminated unexpectedly'), { code: 'ECONNRESET' })
        return await store.writeRun(r, lease, write)
      }
      const seen = new Proxy(store, {
        get: (target, key) => {
          if (key === 'writeRun') return writeRun
          const value: unknown = Reflect.get(target, key)
          return typeof value === 'function' ? value.bind(target) : value
        }
      })
      const log = new EventLog(seen, run, { owner: 'replica-a', token: run.lease_token }, silentLog, options)
      const stored = async (): Promise<string[]> => (await store.listEvents(run.id, 1, 100)).map((e) => e.type)
      return { log, writes, stored }
    }

    async function until (check: () => Promise<boolean>): Promise<void> {
      for (let i = 0; i < 500 && !(await check()); i++) await sleep(10)
    }

    it('nobody following: a step\'s events wait for the write that ends the step, and go in it', async () => {
      const { log, writes, stored } = await newLog({ watched: () => false, windowsMs: { watched: 5, unwatched: LONG } })
      log.emit('step.started', { step: 1 })
      log.emit('tool_call.started', { step: 1, tool_use_id: 'a' })
      log.emit('tool_call.completed', { step: 1, tool_use_id: 'a' })
      await sleep(50)
      expect(writes).toHaveLength(0)
      expect(await stored()).toEqual([])
      await log.commit({ messages: [{ role: 'assistant', content: 'done' }], patch: { steps: 1 } })
      expect(writes).toHaveLength(1)
      expect(writes[0]!.events!.map((e) => e.type)).toEqual(['step.started', 'tool_call.started', 'tool_call.completed'])
      expect(await stored()).toEqual(['step.started', 'tool_call.started', 'tool_call.completed'])
      expect(log.run.steps).toBe(1)
    })

    it('nobody following: events are still stored without the step ending, in a write of their own', async () => {
      const { log, writes, stored } = await newLog({ watched: () => false })
      log.emit('tool_call.started', { step: 1, tool_use_id: 'a' })
      await until(async () => (await stored()).length > 0)
      expect(await stored()).toEqual(['tool_call.started'])
      expect(writes).toHaveLength(1)
      expect(writes[0]!.messages).toBeUndefined()
    })

    it('someone following: events are stored at once, before the step ends', async () => {
      const { log, writes, stored } = await newLog({ watched: () => true, windowsMs: { watched: 5, unwatched: LONG } })
      log.emit('tool_call.started', { step: 1, tool_use_id: 'a' })
      log.emit('tool_call.started', { step: 1, tool_use_id: 'b' })
      await until(async () => (await stored()).length === 2)
      expect(await stored()).toEqual(['tool_call.started', 'tool_call.started'])
      // The two, emitted together, went in one write.
      expect(writes).toHaveLength(1)
    })

    it('hurry: events waiting out the long window are stored within the short one', async () => {
      // What a stream that begins following does, and a side_effecting call's result.
      const { log, writes, stored } = await newLog({ watched: () => false, windowsMs: { watched: 5, unwatched: LONG } })
      log.emit('tool_call.started', { step: 1, tool_use_id: 'a' })
      await sleep(50)
      expect(writes).toHaveLength(0)
      log.hurry()
      await until(async () => (await stored()).length > 0)
      expect(await stored()).toEqual(['tool_call.started'])
      expect(writes).toHaveLength(1)
    })

    it('storage down: the run\'s signal ends a write\'s retries at once, failing it with the error it had', async () => {
      const controller = new AbortController()
      const { log, writes, stored } = await newLog({ signal: controller.signal }, () => true)
      log.emit('step.started', { step: 1 })
      const writing = log.flush()
      writing.catch(() => {})
      // Six attempts in (after waits of 125 + 250 + 500 + 1000 + 2000 ms, less their jitter): the
      // sixth fails and is followed by a wait of at least 3.2 s, the window's rest being 27 s.
      await expect.poll(() => writes.length, { timeout: 15_000, interval: 10 }).toBeGreaterThanOrEqual(6)
      controller.abort(new Error('the run was cancelled'))
      const aborted = performance.now()
      await expect(writing).rejects.toThrow('connection terminated unexpectedly')
      expect(performance.now() - aborted).toBeLessThan(1_500)
      const attempts = writes.length
      await sleep(300)
      expect(writes).toHaveLength(attempts)
      expect(log.failure?.message).toBe('connection terminated unexpectedly')
      expect(await stored()).toEqual([])
    })

    it('storage down, the run stopped: a write begun after the stop retries only within its short budget; the last word is still stored', async () => {
      let down = true
      const { log, writes, stored } = await newLog({ signal: AbortSignal.abort(new Error('shutting down')) }, () => down)
      log.emit('step.started', { step: 1 })
      const started = performance.now()
      await expect(log.flush()).rejects.toThrow('connection terminated unexpectedly')
      // A few tries within STOPPED_WRITE_BUDGET_MS, far from the half minute of a running run's.
      expect(performance.now() - started).toBeLessThan(STOPPED_WRITE_BUDGET_MS + 2_000)
      expect(writes.length).toBeGreaterThan(1)
      expect(writes.length).toBeLessThan(STORAGE_BACKOFF.maxRetries + 1)
      const tries = writes.length
      // As the run driver does: accept writes again for the end of the run, which makes its try
      // although the signal aborted long ago, and with storage back, is stored with what waited.
      down = false
      log.recover()
      log.emit('run.cancelled', { reason: 'shutting down' })
      await log.commit({ patch: { status: 'cancelled' } })
      expect(writes).toHaveLength(tries + 1)
      expect(await stored()).toEqual(['step.started', 'run.cancelled'])
      expect(log.run.status).toBe('cancelled')
    })
  })
}
