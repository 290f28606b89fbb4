import { afterAll, afterEach, beforeAll, beforeEach, expect } from 'vitest'
import { backends, type Backend, type StorageLocation } from './backends.js'
import { TENANT_A } from './app.js'
import { startFakeMessagesApi, type FakeMessagesApi } from './fake-messages-api.js'
import { startServerProcess, type ServerProcess } from './process.js'
import { startWebhookServer, type WebhookServer } from './webhook-server.js'

/**
 * Replicas of Switchboard as real processes (`server.ts`, started as Switchboard is started), for the
 * tests that prove a run outlives the process driving it (SPEC §7): several replicas on one store,
 * one killed with SIGKILL, stopped with SIGTERM or frozen with SIGSTOP, another (or a restart) taking
 * its runs over.
 *
 * ```ts
 * const replicas = useReplicas()
 *
 * it('…', async () => {
 *   const store = await replicas.store(postgres)          // or replicas.store() for SQLite
 *   const [a, b] = await replicas.startMany(2, store)
 *   await a.api('PUT', '/tools/slow', { …, url: `${replicas.tools.url}/delay/3000` })
 *   replicas.model.respond = (request) => …
 *   const run = await a.api('POST', '/runs', { input: 'go', tools: ['slow'], background: true })
 *   await a.kill()                                        // kill -9, and wait for the exit
 *   const done = await b.waitForRunStatus(run.id, 'completed')
 *   const again = await replicas.restart(b)               // the same settings, a new process
 * })
 * ```
 *
 * Every replica and every store is ended after each test (kill -9, then the folder removed or the
 * database dropped), whatever the test did; the fakes' records are cleared before each test.
 */

/** A replica: a running `server.ts`, called as tenant A (`TENANT_A`). */
export interface Replica extends ServerProcess {
  /** Everything it was started with beyond PATH (the shared settings, its store's, the test's own). */
  readonly env: Readonly<Record<string, string>>
  /** An authenticated request as tenant A; answers the JSON body. */
  api: (method: string, path: string, body?: unknown) => Promise<any>
  /** The same request, answering the HTTP status with the JSON body. */
  request: (method: string, path: string, body?: unknown) => Promise<{ statusCode: number, body: any }>
  /**
   * Polls `GET /runs/{id}?include=messages` until the run has `status`, 30 s at most (the takeover of
   * a killed replica's run waits for its lease to lapse); answers the run, its messages included.
   */
  waitForRunStatus: (runId: string, status: string) => Promise<any>
  /** kill -9: SIGKILL, then waits for the process to end. Nothing runs on its way out. */
  kill: () => Promise<void>
  /** SIGTERM, as an orchestrator stops a replica; answers its exit once it has ended. */
  terminate: () => Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

/** The settings of a store that replicas share: `DATA_DIR` (SQLite) or `DATABASE_URL` (PostgreSQL). */
export type StoreEnv = Readonly<Record<string, string>>

export interface Replicas {
  /** The strict fake Messages API that every replica calls, for the file; `refusals` cleared before each test. */
  readonly model: FakeMessagesApi
  /** A webhook tool server on 127.0.0.1, for the file; `calls` cleared before each test. */
  readonly tools: WebhookServer
  /**
   * A fresh, empty store of the backend's kind (SQLite unless told), for this test only: a data
   * directory or a new PostgreSQL database. Pass what it answers to `start` or `startMany`.
   */
  store: (backend?: Backend) => Promise<StoreEnv>
  /**
   * Starts a replica with the shared settings (tenant A's key, the fake Messages API, tools allowed
   * on 127.0.0.1, a 2 s run lease), then `env` (a store's settings and the test's own, which win);
   * resolves once it logs that it is ready.
   */
  start: (env: Record<string, string>) => Promise<Replica>
  /** `count` replicas with the same settings, started one after another. */
  startMany: (count: number, env: Record<string, string>) => Promise<Replica[]>
  /** Kills the replica (kill -9) if it still runs, then starts another with its settings and `env`. */
  restart: (replica: Replica, env?: Record<string, string>) => Promise<Replica>
  /** Kills every replica still running and destroys the stores (done after each test anyway). */
  stopAll: () => Promise<void>
}

const SQLITE = backends.find((b) => b.name === 'sqlite')!
const headers = { authorization: `Bearer ${TENANT_A.key}`, 'content-type': 'application/json' }

/**
 * The replicas of a test file, with the fakes they call. Call it at the top level of the file: it
 * registers the hooks that start the fakes, clear their records, end the replicas and close the fakes.
 * `model` and `tools` are there once the file's tests run (not when the file is loaded). A file that
 * runs a fake Messages API of its own passes its URL as `modelUrl` (read at each start).
 */
export function useReplicas (options: { modelUrl?: () => string } = {}): Replicas {
  const running: Replica[] = []
  const locations: StorageLocation[] = []
  let model: FakeMessagesApi | undefined
  let tools: WebhookServer | undefined
  beforeAll(async () => {
    [model, tools] = await Promise.all([startFakeMessagesApi(), startWebhookServer()])
  })
  afterAll(async () => {
    await Promise.all([model?.close(), tools?.close()])
  })
  beforeEach(() => {
    model!.refusals.length = 0
    tools!.calls.length = 0
  })

  const start = async (env: Record<string, string>): Promise<Replica> => {
    const settings = {
      API_KEYS: `${TENANT_A.id}:${TENANT_A.key}`,
      HOST: '127.0.0.1',
      ANTHROPIC_BASE_URL: options.modelUrl?.() ?? model!.url,
      ANTHROPIC_API_KEY: 'sk-test',
      TOOL_EGRESS_ALLOW: '127.0.0.1',
      // Short, so that another replica takes a killed one's runs within a test's patience.
      RUN_LEASE_MS: '2000',
      LOG_LEVEL: 'info',
      ...env
    }
    const replica = asReplica(await startServerProcess(settings), settings)
    running.push(replica)
    await replica.ready()
    return replica
  }

  const stopAll = async (): Promise<void> => {
    for (const replica of running.splice(0)) await replica.kill()
    // Only once no process holds them.
    for (const location of locations.splice(0)) await location.destroy()
  }
  afterEach(stopAll)

  return {
    get model () { return model! },
    get tools () { return tools! },
    store: async (backend = SQLITE): Promise<StoreEnv> => {
      const location = await backend.location()
      locations.push(location)
      if (location.databaseUrl === undefined) return { DATA_DIR: location.dataDir }
      return { DATABASE_URL: location.databaseUrl }
    },
    start,
    startMany: async (count, env) => {
      const started: Replica[] = []
      for (let i = 0; i < count; i++) started.push(await start(env))
      return started
    },
    restart: async (replica, env = {}) => {
      await replica.kill()
      return await start({ ...replica.env, ...env })
    },
    stopAll
  }
}

function asReplica (server: ServerProcess, env: Record<string, string>): Replica {
  const request = async (method: string, path: string, body?: unknown): Promise<{ statusCode: number, body: any }> => {
    const res = await fetch(`${server.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    const text = await res.text()
    return { statusCode: res.status, body: text === '' ? undefined : JSON.parse(text) }
  }
  const api = async (method: string, path: string, body?: unknown): Promise<any> => (await request(method, path, body)).body
  return {
    ...server,
    env,
    request,
    api,
    waitForRunStatus: async (runId, status) => {
      let run: any
      await expect.poll(async () => {
        run = await api('GET', `/runs/${runId}?include=messages`)
        return run.status
      }, { timeout: 30_000, interval: 200 }).toBe(status)
      return run
    },
    kill: async () => {
      if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL')
      await server.exited
    },
    terminate: async () => {
      server.child.kill('SIGTERM')
      return await server.exited
    }
  }
}
