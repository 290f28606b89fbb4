import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'

const encodings = new WeakMap<MessageParam, string>()

/**
 * A message's JSON text, made once per message object: the text a step's messages are stored in is
 * the one their run's driver sends to the model, rather than each making its own. A message is
 * never changed once made (a run's history is only appended to), so its text stays true.
 */
export function messageJson (message: MessageParam): string {
  let json = encodings.get(message)
  if (json === undefined) {
    json = JSON.stringify(message)
    encodings.set(message, json)
  }
  return json
}
