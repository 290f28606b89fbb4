import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** Starts `server` on a free port of 127.0.0.1 and answers its base URL (`http://127.0.0.1:<port>`). */
export async function listenLocal (server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** Ends `server` now: its open connections too, so that a test's end never waits on a keep-alive socket. */
export async function closeLocal (server: Server): Promise<void> {
  server.closeAllConnections()
  await new Promise<void>((resolve) => server.close(() => resolve()))
}
