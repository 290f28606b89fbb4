import { describe, expect, it } from 'vitest'
import { StepDispatcher, ToolConcurrency, type ScheduleOptions } from '../../src/tools/dispatcher.js'
import { Semaphore, type Release } from '../../src/tools/semaphore.js'

interface Deferred<T> {
  readonly promise: Promise<T>
  readonly resolve: (value: T) => void
  readonly reject: (reason: unknown) => void
}

function deferred<T = void> (): Deferred<T> {
  let resolveIt!: (value: T) => void
  let rejectIt!: (reason: unknown) => void
  const promise = new Promise<T>((resolve, reject) => {
    resolveIt = resolve
    rejectIt = reject
  })
  return { promise, resolve: resolveIt, reject: rejectIt }
}

/** Lets every pending promise chain run (they do not involve timers). */
async function settle (): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve))
}

/** Where a promise stands, without waiting for it. */
function track<T> (promise: Promise<T>): { state: 'pending' | 'fulfilled' | 'rejected', value?: T, reason?: unknown } {
  const status: { state: 'pending' | 'fulfilled' | 'rejected', value?: T, reason?: unknown } = { state: 'pending' }
  promise.then((value) => {
    status.state = 'fulfilled'
    status.value = value
  }, (reason: unknown) => {
    status.state = 'rejected'
    status.reason = reason
  })
  return status
}

/**
 * Fake tool calls finished by hand. Records `start X` and `end X` in the order they happen, and
 * how many calls were in flight at most (overall and per group).
 */
class Calls {
  readonly log: string[] = []
  readonly #pending = new Map<string, Deferred<void>>()
  #inFlight = new Set<string>()
  maxInFlight = 0

  call (name: string): () => Promise<string> {
    return async () => {
      this.log.push(`start ${name}`)
      this.#inFlight.add(name)
      this.maxInFlight = Math.max(this.maxInFlight, this.#inFlight.size)
      const done = deferred()
      this.#pending.set(name, done)
      try {
        await done.promise
      } finally {
        this.#inFlight.delete(name)
        this.log.push(`end ${name}`)
      }
      return name
    }
  }

  running (): string[] {
    return [...this.#inFlight].sort()
  }

  started (name: string): boolean {
    return this.log.includes(`start ${name}`)
  }

  async finish (name: string): Promise<void> {
    const call = this.#pending.get(name)
    if (call === undefined) throw new Error(`${name} has not started`)
    call.resolve()
    await settle()
  }

  async fail (name: string, reason: unknown): Promise<void> {
    const call = this.#pending.get(name)
    if (call === undefined) throw new Error(`${name} has not started`)
    call.reject(reason)
    await settle()
  }
}

const parallel: ScheduleOptions = { parallel: true, limit: null }
const serial: ScheduleOptions = { parallel: false, limit: null }

describe('Semaphore', () => {
  it('grants at once under its limit, then queues', async () => {
    const semaphore = new Semaphore(2)
    await semaphore.acquire()
    await semaphore.acquire()
    expect(semaphore.held).toBe(2)
    const third = track(semaphore.acquire())
    await settle()
    expect(third.state).toBe('pending')
    expect(semaphore.waiting).toBe(1)
  })

  it('serves waiters first come, first served', async () => {
    const semaphore = new Semaphore(1)
    const first = await semaphore.acquire()
    const order: string[] = []
    const releases = new Map<string, Release>()
    for (const name of ['w1', 'w2', 'w3']) {
      semaphore.acquire().then((release) => {
        order.push(name)
        releases.set(name, release)
      })
    }
    await settle()
    expect(order).toEqual([])
    expect(semaphore.waiting).toBe(3)

    first()
    await settle()
    expect(order).toEqual(['w1'])
    releases.get('w1')!()
    await settle()
    expect(order).toEqual(['w1', 'w2'])
    releases.get('w2')!()
    await settle()
    expect(order).toEqual(['w1', 'w2', 'w3'])
    expect(semaphore.held).toBe(1)
    expect(semaphore.waiting).toBe(0)
  })

  it('follows a limit changed while slots are held', async () => {
    const semaphore = new Semaphore(2)
    const a = await semaphore.acquire()
    const b = await semaphore.acquire()
    const w1 = track(semaphore.acquire())
    const w2 = track(semaphore.acquire())

    semaphore.limit = 1
    expect(semaphore.limit).toBe(1)
    a()
    await settle()
    // Held 1 of a limit of 1: nobody else gets in.
    expect(semaphore.held).toBe(1)
    expect([w1.state, w2.state]).toEqual(['pending', 'pending'])

    b()
    await settle()
    expect(semaphore.held).toBe(1)
    expect([w1.state, w2.state]).toEqual(['fulfilled', 'pending'])

    // Raising the limit lets waiters in at once, without a release.
    semaphore.limit = 3
    await settle()
    expect(w2.state).toBe('fulfilled')
    expect(semaphore.held).toBe(2)
    expect(semaphore.waiting).toBe(0)
  })

  it('removes an aborted waiter from the queue and rejects with the signal\'s reason', async () => {
    const semaphore = new Semaphore(1)
    const holder = await semaphore.acquire()
    const controller = new AbortController()
    const aborted = track(semaphore.acquire(controller.signal))
    const next = track(semaphore.acquire())
    await settle()
    expect(semaphore.waiting).toBe(2)

    const reason = new Error('run cancelled')
    controller.abort(reason)
    await settle()
    expect(aborted.state).toBe('rejected')
    expect(aborted.reason).toBe(reason)
    expect(semaphore.waiting).toBe(1)

    holder()
    await settle()
    // The slot goes to the next waiter, not to the one that left.
    expect(next.state).toBe('fulfilled')
    expect(semaphore.held).toBe(1)
    expect(semaphore.waiting).toBe(0)
  })

  it('refuses at once with a signal already aborted, even when a slot is free', async () => {
    const semaphore = new Semaphore(1)
    const reason = new Error('too late')
    await expect(semaphore.acquire(AbortSignal.abort(reason))).rejects.toBe(reason)
    expect(semaphore.held).toBe(0)
    expect(semaphore.waiting).toBe(0)
  })

  it('is not affected by an abort after the slot was granted', async () => {
    const semaphore = new Semaphore(1)
    const holder = await semaphore.acquire()
    const controller = new AbortController()
    const waiter = track(semaphore.acquire(controller.signal))
    holder()
    await settle()
    expect(waiter.state).toBe('fulfilled')
    controller.abort()
    await settle()
    expect(waiter.state).toBe('fulfilled')
    expect(semaphore.held).toBe(1)
  })

  it('ignores a second release of the same slot', async () => {
    const semaphore = new Semaphore(1)
    const release = await semaphore.acquire()
    const w1 = track(semaphore.acquire())
    const w2 = track(semaphore.acquire())
    release()
    release()
    await settle()
    expect(w1.state).toBe('fulfilled')
    // A second release would have let w2 in as well.
    expect(w2.state).toBe('pending')
    expect(semaphore.held).toBe(1)

    const alone = new Semaphore(1)
    const r = await alone.acquire()
    r()
    r()
    expect(alone.held).toBe(0)
  })
})

describe('StepDispatcher', () => {
  it('runs calls concurrently up to the run\'s parallelism, in the order given', async () => {
    const calls = new Calls()
    const dispatcher = new StepDispatcher(2, new ToolConcurrency(), new AbortController().signal)
    const results = ['A', 'B', 'C', 'D'].map((name) => dispatcher.schedule(parallel, calls.call(name)))
    await settle()
    expect(calls.running()).toEqual(['A', 'B'])

    await calls.finish('B')
    expect(calls.running()).toEqual(['A', 'C'])
    await calls.finish('A')
    expect(calls.running()).toEqual(['C', 'D'])
    await calls.finish('C')
    await calls.finish('D')
    expect(await Promise.all(results)).toEqual(['A', 'B', 'C', 'D'])
    expect(calls.maxInFlight).toBe(2)
    expect(calls.log).toEqual(['start A', 'start B', 'end B', 'start C', 'end A', 'start D', 'end C', 'end D'])
  })

  it('starts every call at once when parallelism allows', async () => {
    const calls = new Calls()
    const dispatcher = new StepDispatcher(10, new ToolConcurrency(), new AbortController().signal)
    const results = ['A', 'B', 'C'].map((name) => dispatcher.schedule(parallel, calls.call(name)))
    await settle()
    expect(calls.running()).toEqual(['A', 'B', 'C'])
    for (const name of ['C', 'A', 'B']) await calls.finish(name)
    expect(await Promise.all(results)).toEqual(['A', 'B', 'C'])
  })

  it('runs a parallel: false call alone, after the calls before it and before the calls after it', async () => {
    const calls = new Calls()
    const dispatcher = new StepDispatcher(10, new ToolConcurrency(), new AbortController().signal)
    const results = [
      dispatcher.schedule(parallel, calls.call('A')),
      dispatcher.schedule(serial, calls.call('B')),
      dispatcher.schedule(parallel, calls.call('C')),
      dispatcher.schedule(parallel, calls.call('D'))
    ]
    await settle()
    expect(calls.running()).toEqual(['A'])

    await calls.finish('A')
    expect(calls.running()).toEqual(['B'])

    await calls.finish('B')
    // C and D overlap: both start before either ends.
    expect(calls.running()).toEqual(['C', 'D'])
    await calls.finish('D')
    await calls.finish('C')
    expect(await Promise.all(results)).toEqual(['A', 'B', 'C', 'D'])
    expect(calls.log).toEqual(['start A', 'end A', 'start B', 'end B', 'start C', 'start D', 'end D', 'end C'])
  })

  it('waits for every call before a serial one, whichever finishes last', async () => {
    const calls = new Calls()
    const dispatcher = new StepDispatcher(10, new ToolConcurrency(), new AbortController().signal)
    const results = [
      dispatcher.schedule(parallel, calls.call('A1')),
      dispatcher.schedule(parallel, calls.call('A2')),
      dispatcher.schedule(parallel, calls.call('A3')),
      dispatcher.schedule(serial, calls.call('B'))
    ]
    await settle()
    await calls.finish('A3')
    await calls.finish('A1')
    expect(calls.started('B')).toBe(false)
    await calls.finish('A2')
    expect(calls.running()).toEqual(['B'])
    await calls.finish('B')
    await Promise.all(results)
  })

  it('runs two serial calls in a row one after the other', async () => {
    const calls = new Calls()
    const dispatcher = new StepDispatcher(10, new ToolConcurrency(), new AbortController().signal)
    const results = [
      dispatcher.schedule(serial, calls.call('S1')),
      dispatcher.schedule(serial, calls.call('S2')),
      dispatcher.schedule(parallel, calls.call('C'))
    ]
    await settle()
    expect(calls.running()).toEqual(['S1'])
    await calls.finish('S1')
    expect(calls.running()).toEqual(['S2'])
    await calls.finish('S2')
    expect(calls.running()).toEqual(['C'])
    await calls.finish('C')
    expect(await Promise.all(results)).toEqual(['S1', 'S2', 'C'])
    expect(calls.log).toEqual(['start S1', 'end S1', 'start S2', 'end S2', 'start C', 'end C'])
  })

  it('goes on past failed calls, on either side of a serial call', async () => {
    const calls = new Calls()
    const dispatcher = new StepDispatcher(10, new ToolConcurrency(), new AbortController().signal)
    const a = track(dispatcher.schedule(parallel, calls.call('A')))
    const b = track(dispatcher.schedule(serial, calls.call('B')))
    const c = track(dispatcher.schedule(parallel, calls.call('C')))
    await settle()
    const boom = new Error('A failed')
    await calls.fail('A', boom)
    expect(a).toMatchObject({ state: 'rejected', reason: boom })
    expect(calls.running()).toEqual(['B'])
    await calls.fail('B', new Error('B failed'))
    expect(b.state).toBe('rejected')
    expect(calls.running()).toEqual(['C'])
    await calls.finish('C')
    expect(c).toMatchObject({ state: 'fulfilled', value: 'C' })
  })

  it('holds at most max calls of a tool in flight, leaving other tools alone', async () => {
    const calls = new Calls()
    const tools = new ToolConcurrency()
    const dispatcher = new StepDispatcher(10, tools, new AbortController().signal)
    const x = { parallel: true, limit: { key: 'tenant-1/x', max: 2 } }
    const y = { parallel: true, limit: { key: 'tenant-1/y', max: 5 } }
    const results = [
      dispatcher.schedule(x, calls.call('X1')),
      dispatcher.schedule(x, calls.call('X2')),
      dispatcher.schedule(x, calls.call('X3')),
      dispatcher.schedule(x, calls.call('X4')),
      dispatcher.schedule(y, calls.call('Y1')),
      dispatcher.schedule(y, calls.call('Y2'))
    ]
    await settle()
    expect(calls.running()).toEqual(['X1', 'X2', 'Y1', 'Y2'])
    expect(tools.size).toBe(2)

    await calls.finish('X2')
    expect(calls.running()).toEqual(['X1', 'X3', 'Y1', 'Y2'])
    await calls.finish('X1')
    expect(calls.running()).toEqual(['X3', 'X4', 'Y1', 'Y2'])
    for (const name of ['Y1', 'Y2', 'X3', 'X4']) await calls.finish(name)
    await Promise.all(results)
    expect(calls.log.filter((entry) => entry.startsWith('start X'))).toEqual(['start X1', 'start X2', 'start X3', 'start X4'])
  })

  it('shares a tool\'s limit between the runs of a process', async () => {
    const calls = new Calls()
    const tools = new ToolConcurrency()
    const runA = new StepDispatcher(10, tools, new AbortController().signal)
    const runB = new StepDispatcher(10, tools, new AbortController().signal)
    const x = { parallel: true, limit: { key: 'tenant-1/x', max: 1 } }
    const first = runA.schedule(x, calls.call('A-X'))
    const second = runB.schedule(x, calls.call('B-X'))
    const otherTenant = runB.schedule({ parallel: true, limit: { key: 'tenant-2/x', max: 1 } }, calls.call('B-X2'))
    await settle()
    expect(calls.running()).toEqual(['A-X', 'B-X2'])
    await calls.finish('A-X')
    expect(calls.running()).toEqual(['B-X', 'B-X2'])
    await calls.finish('B-X')
    await calls.finish('B-X2')
    await Promise.all([first, second, otherTenant])
    expect(tools.size).toBe(0)
  })

  it('does not hold a run slot for a call that waits for a busy tool', async () => {
    const calls = new Calls()
    const tools = new ToolConcurrency()
    const dispatcher = new StepDispatcher(2, tools, new AbortController().signal)
    const x = { parallel: true, limit: { key: 't/x', max: 1 } }
    const results = [
      dispatcher.schedule(x, calls.call('X1')),
      dispatcher.schedule(x, calls.call('X2')),
      dispatcher.schedule(parallel, calls.call('Y'))
    ]
    await settle()
    expect(calls.running()).toEqual(['X1', 'Y'])
    expect(calls.started('X2')).toBe(false)

    await calls.finish('X1')
    expect(calls.running()).toEqual(['X2', 'Y'])
    await calls.finish('Y')
    await calls.finish('X2')
    await Promise.all(results)
    expect(tools.size).toBe(0)
  })

  it('lets go of every tool semaphore once the calls are done', async () => {
    const calls = new Calls()
    const tools = new ToolConcurrency()
    const dispatcher = new StepDispatcher(1, tools, new AbortController().signal)
    const results = [
      track(dispatcher.schedule({ parallel: true, limit: { key: 'a', max: 1 } }, calls.call('A1'))),
      track(dispatcher.schedule({ parallel: true, limit: { key: 'a', max: 1 } }, calls.call('A2'))),
      track(dispatcher.schedule({ parallel: true, limit: { key: 'b', max: 3 } }, calls.call('B'))),
      track(dispatcher.schedule({ parallel: false, limit: { key: 'c', max: 1 } }, calls.call('C')))
    ]
    await settle()
    // A1 runs; A2 waits for tool a; B holds tool b and waits for the run's only slot.
    expect(calls.running()).toEqual(['A1'])
    expect(tools.size).toBe(2)
    await calls.finish('A1')
    // B was first in line for the run slot; A2 now holds tool a and waits behind it.
    expect(calls.running()).toEqual(['B'])
    expect(tools.size).toBe(2)
    await calls.fail('B', new Error('B failed'))
    expect(calls.running()).toEqual(['A2'])
    expect(tools.size).toBe(1)
    await calls.finish('A2')
    // Tools a and b are gone; only the serial call's tool c is alive.
    expect(calls.running()).toEqual(['C'])
    expect(tools.size).toBe(1)
    await calls.finish('C')
    expect(tools.size).toBe(0)
    expect(results.map((r) => r.state)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled'])
  })

  it('rejects calls not yet started when the run stops, and never runs them', async () => {
    const calls = new Calls()
    const tools = new ToolConcurrency()
    const controller = new AbortController()
    const dispatcher = new StepDispatcher(1, tools, controller.signal)
    const x = { parallel: true, limit: { key: 't/x', max: 1 } }
    const running = track(dispatcher.schedule(parallel, calls.call('A')))
    const waitingForRunSlot = track(dispatcher.schedule(parallel, calls.call('B')))
    const waitingForTool = track(dispatcher.schedule(x, calls.call('X1')))
    const waitingForTool2 = track(dispatcher.schedule(x, calls.call('X2')))
    const behindSerial = track(dispatcher.schedule(serial, calls.call('S')))
    const afterSerial = track(dispatcher.schedule(parallel, calls.call('D')))
    await settle()
    expect(calls.running()).toEqual(['A'])
    expect(tools.size).toBe(1)

    const reason = new Error('run cancelled')
    controller.abort(reason)
    await settle()
    // Calls waiting for a slot leave at once.
    expect(waitingForRunSlot).toMatchObject({ state: 'rejected', reason })
    expect(waitingForTool).toMatchObject({ state: 'rejected', reason })
    expect(waitingForTool2).toMatchObject({ state: 'rejected', reason })
    expect(tools.size).toBe(0)

    // The running call is the caller's to stop; once it ends, the rest reject without running.
    await calls.finish('A')
    expect(running).toMatchObject({ state: 'fulfilled', value: 'A' })
    expect(behindSerial).toMatchObject({ state: 'rejected', reason })
    expect(afterSerial).toMatchObject({ state: 'rejected', reason })
    expect(calls.log).toEqual(['start A', 'end A'])

    const late = dispatcher.schedule(parallel, calls.call('E'))
    await expect(late).rejects.toBe(reason)
    expect(calls.log).toEqual(['start A', 'end A'])
    expect(tools.size).toBe(0)
  })

  it('never runs a call scheduled after the run stopped', async () => {
    const calls = new Calls()
    const tools = new ToolConcurrency()
    const reason = new Error('stopped')
    const dispatcher = new StepDispatcher(4, tools, AbortSignal.abort(reason))
    await expect(dispatcher.schedule(parallel, calls.call('A'))).rejects.toBe(reason)
    await expect(dispatcher.schedule(serial, calls.call('B'))).rejects.toBe(reason)
    await expect(dispatcher.schedule({ parallel: true, limit: { key: 'k', max: 1 } }, calls.call('C'))).rejects.toBe(reason)
    expect(calls.log).toEqual([])
    expect(tools.size).toBe(0)
  })
})

describe('ToolConcurrency', () => {
  it('keeps one semaphore per key while it is held or waited for', async () => {
    const tools = new ToolConcurrency()
    const signal = new AbortController().signal
    const a1 = await tools.acquire('a', 1, signal)
    const a2 = track(tools.acquire('a', 1, signal))
    const b1 = await tools.acquire('b', 1, signal)
    await settle()
    expect(tools.size).toBe(2)
    expect(a2.state).toBe('pending')
    b1()
    expect(tools.size).toBe(1)
    a1()
    await settle()
    expect(a2.state).toBe('fulfilled')
    expect(tools.size).toBe(1)
    a2.value!()
    expect(tools.size).toBe(0)
  })

  it('takes the latest max for a key', async () => {
    const tools = new ToolConcurrency()
    const signal = new AbortController().signal
    const first = await tools.acquire('k', 1, signal)
    // Edited to 2 while the first call holds its slot: the second may go.
    const second = track(tools.acquire('k', 2, signal))
    await settle()
    expect(second.state).toBe('fulfilled')
    first()
    second.value!()
    expect(tools.size).toBe(0)
  })

  it('drops the semaphore when its only waiter aborts', async () => {
    const tools = new ToolConcurrency()
    const holder = await tools.acquire('k', 1, new AbortController().signal)
    const controller = new AbortController()
    const waiter = track(tools.acquire('k', 1, controller.signal))
    await settle()
    controller.abort(new Error('gone'))
    await settle()
    expect(waiter.state).toBe('rejected')
    expect(tools.size).toBe(1)
    holder()
    expect(tools.size).toBe(0)
    await expect(tools.acquire('other', 1, AbortSignal.abort())).rejects.toThrow()
    expect(tools.size).toBe(0)
  })
})
