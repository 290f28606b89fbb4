/** Why a run was stopped from outside its loop; the abort reason of its signal. */
export class RunStop extends Error {
  override name = 'RunStop'
  constructor (readonly reason: 'timeout' | 'cancelled' | 'shutdown' | 'lease_lost', message: string) {
    super(message)
  }
}
