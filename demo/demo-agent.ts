import type { RecordedRequest, Respond } from '../test/support/fake-messages-api.js'
import { toolResults, resultText, turnNumber } from '../test/support/fake-messages-api.js'

const KNOWN_CITIES = ['Paris', 'Tokyo', 'New York', 'London', 'Sydney', 'São Paulo']

function userText (request: RecordedRequest): string {
  const first = request.body.messages[0]
  return typeof first.content === 'string' ? first.content : first.content.filter((b: { type: string }) => b.type === 'text').map((b: { text: string }) => b.text).join(' ')
}

/**
 * Plays the model offline, for the demo: on the first turn it asks for weather and local time of
 * every city the question names, all at once, as Claude does with parallel tool use; on the next,
 * it answers from the results. Only what the demo needs, but through the same strict fake API.
 */
export const demoAgent: Respond = (request) => {
  const available = new Set((request.body.tools ?? []).map((t: { name: string }) => t.name))
  if (turnNumber(request) === 1) {
    const question = userText(request)
    const cities = KNOWN_CITIES.filter((c) => question.toLowerCase().includes(c.toLowerCase()))
    // A forecast comes from a tool that answers later (SPEC §13): the run waits for it.
    if (/forecast/i.test(question) && available.has('get_forecast') && cities.length > 0) {
      const days = Number(/(\d) days/.exec(question)?.[1] ?? 3)
      return { content: [{ type: 'text', text: `Let me get the forecast for ${cities.join(', ')}.` }, ...cities.map((city) => ({ type: 'tool_use' as const, name: 'get_forecast', input: { city, days } }))] }
    }
    const calls = cities.flatMap((city) => [
      ...(available.has('get_weather') ? [{ type: 'tool_use' as const, name: 'get_weather', input: { city } }] : []),
      ...(available.has('get_local_time') ? [{ type: 'tool_use' as const, name: 'get_local_time', input: { city } }] : [])
    ])
    if (/\b(\d+)\s*(usd|eur|gbp|jpy|aud|brl)\b.*\b(usd|eur|gbp|jpy|aud|brl)\b/i.test(question) && available.has('convert_currency')) {
      const [, amount, from, to] = /\b(\d+)\s*(usd|eur|gbp|jpy|aud|brl)\b.*\b(usd|eur|gbp|jpy|aud|brl)\b/i.exec(question)!
      calls.push({ type: 'tool_use' as const, name: 'convert_currency', input: { amount: Number(amount), from: from!.toUpperCase(), to: to!.toUpperCase() } as never })
    }
    if (calls.length === 0) return { content: [{ type: 'text', text: 'I can look up weather, local time and exchange rates: name a city or two.' }] }
    return { content: [{ type: 'text', text: `Let me check ${cities.join(', ')} at once.` }, ...calls], blockDelayMs: 40 }
  }
  const lines = toolResults(request).map((result) => {
    const text = resultText(result)
    if (result.is_error === true) return `- (a tool failed: ${text})`
    try {
      const data = JSON.parse(text) as Record<string, unknown>
      if ('temperature_c' in data) return `- ${String(data.city)}: ${String(data.temperature_c)} °C, ${String(data.conditions)}`
      if ('local_time' in data) return `- ${String(data.city)}: it is ${String(data.local_time)} there`
      if ('result' in data) return `- ${String(data.amount)} ${String(data.from)} is ${String(data.result)} ${String(data.to)}`
      if (Array.isArray(data.forecast)) {
        const days = data.forecast as Array<{ temperature_c: number, conditions: string }>
        const temperatures = days.map((d) => d.temperature_c)
        return `- ${String(data.city)}, next ${days.length} days: ${Math.min(...temperatures)} to ${Math.max(...temperatures)} °C, ${days[0]?.conditions ?? ''}`
      }
    } catch {}
    return `- ${text}`
  })
  return { content: [{ type: 'text', text: `Here is what I found:\n${lines.join('\n')}` }] }
}
