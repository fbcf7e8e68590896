// A bounded wait that does not count the process's own stalls against the work it waits for.
// Layer 0/1: timers come injected; no I/O of its own.
import { systemTimers, type Timers } from './clock.js'

/**
 * `work`'s result, or `fallback` once `ms` have passed (a late result is ignored; `work`
 * rejecting also gives `fallback`). When the deadline timer fires, the fallback waits one
 * turn of the event loop (setImmediate runs after pending I/O): if this process itself stalled
 * (a GC pause, CPU throttling in a container) while the reply was already on its socket, the
 * reply wins, so a stall of Tether does not turn a store that answered in time into "unavailable".
 *
 * Example: `await withDeadline(store.get(key), 50, { status: 'unavailable' })`.
 */
export function withDeadline<T>(work: Promise<T>, ms: number, fallback: T, timers: Timers = systemTimers): Promise<T> {
  return new Promise<T>((resolve) => {
    let done = false
    const finish = (value: T): void => {
      if (done) return
      done = true
      timers.clearTimeout(timer)
      resolve(value)
    }
    const timer = timers.setTimeout(() => setImmediate(() => finish(fallback)), ms)
    work.then(finish, () => finish(fallback))
  })
}
