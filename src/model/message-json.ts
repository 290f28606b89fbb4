import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'

const encodings = new WeakMap<MessageParam, string>()

/**
 * A message's JSON text, made once per message object: a run's history only grows, so each of its
 * messages is serialized once, when first stored or sent, rather than the whole history at every
 * step, and the model request and the store share the text. A message is never changed once made
 * (a run's history is only appended to), so its text stays true.
 */
export function messageJson (message: MessageParam): string {
  let json = encodings.get(message)
  if (json === undefined) {
    json = JSON.stringify(message)
    encodings.set(message, json)
  }
  return json
}
