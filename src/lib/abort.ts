/** A controller that aborts when its parent signal does; `dispose` unhooks it from the parent. */
export interface LinkedController {
  readonly controller: AbortController
  readonly signal: AbortSignal
  dispose (): void
}

/**
 * A child of `parent`: aborted (with the parent's reason) when the parent is, and abortable on its
 * own. Used instead of `AbortSignal.any` for short-lived children of long-lived signals (a tool
 * call attempt of a run): on Node 20 every signal made by `any` stays referenced from its parent
 * until the parent goes, so a long run would pile them up. Call `dispose` when the child is done.
 * A child that will have many listeners (a step's, one per call in flight) needs `setMaxListeners`.
 */
export function linkedController (parent: AbortSignal): LinkedController {
  const controller = new AbortController()
  if (parent.aborted) {
    controller.abort(parent.reason)
    return { controller, signal: controller.signal, dispose: () => {} }
  }
  const onAbort = (): void => controller.abort(parent.reason)
  parent.addEventListener('abort', onAbort, { once: true })
  return { controller, signal: controller.signal, dispose: () => parent.removeEventListener('abort', onAbort) }
}

/** `promise`, or a rejection with the signal's reason as soon as `signal` aborts. */
export async function abortable<T> (promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return await promise
  signal.throwIfAborted()
  let onAbort!: () => void
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}
