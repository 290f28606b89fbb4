import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** A free TCP port on 127.0.0.1 (free when asked; good enough for a test). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

export interface ServerProcess {
  readonly child: ChildProcess
  readonly port: number
  readonly url: string
  /** Everything the process wrote so far, stdout and stderr. */
  output (): string
  /** Resolves with the exit code (or signal) once the process has ended. */
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Resolves when the process logs that it is ready; rejects if it exits first. */
  ready (): Promise<void>
}

/**
 * Starts `server.ts` as a real process (through tsx, as `npm run dev` would), with only the given
 * environment plus PATH. Nothing is inherited from the test's own environment.
 */
export async function startServerProcess (env: Record<string, string>, script = 'server.ts'): Promise<ServerProcess> {
  const port = env.PORT !== undefined ? Number(env.PORT) : await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info', PORT: String(port), ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
  })
  return {
    child,
    port,
    url: `http://127.0.0.1:${port}`,
    output: () => output,
    exited,
    ready: async () => {
      const deadline = Date.now() + 30_000
      while (!output.includes('"switchboard ready"')) {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`server exited before it was ready:\n${output}`)
        if (Date.now() > deadline) throw new Error(`server not ready after 30 s:\n${output}`)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
  }
}
