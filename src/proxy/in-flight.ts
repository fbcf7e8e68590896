// The requests waiting on each upstream, by upstream id: counted for the admin API, and
// stoppable when health takes the upstream out while they wait for its answer's head (a
// frozen replica must not hold its users for `response_headers`). Layer 2 state owner: no I/O.
import type { ErrorCode } from '../errors.js'
import type { Attempt } from './exchange.js'

/**
 * Example: `inFlight.add(attempt, 'app-0')` when an attempt starts, `remove(attempt, 'app-0')`
 * when it ends; `inFlight.stopWaiting('app-0', 'TETHER_UPSTREAM_UNAVAILABLE')` when app-0 is
 * marked down.
 */
export class InFlight {
  /** Attempts by upstream, with when each was sent (performance.now()). */
  readonly #byUpstream = new Map<string, Map<Attempt, number>>()
  #total = 0

  add(attempt: Attempt, upstream: string): void {
    let set = this.#byUpstream.get(upstream)
    if (set === undefined) this.#byUpstream.set(upstream, (set = new Map()))
    if (!set.has(attempt)) this.#total++
    set.set(attempt, performance.now())
  }

  remove(attempt: Attempt, upstream: string): void {
    const set = this.#byUpstream.get(upstream)
    if (set === undefined) return
    if (set.delete(attempt)) this.#total--
    if (set.size === 0) this.#byUpstream.delete(upstream)
  }

  /** Attempts in progress on all upstreams (O(1): what `affinity.spill` compares each upstream's count with). */
  get total(): number {
    return this.#total
  }

  /** Attempts in progress on `upstream`. */
  count(upstream: string): number {
    return this.#byUpstream.get(upstream)?.size ?? 0
  }

  /** How long (ms) the oldest attempt still waiting for `upstream`'s answer head has waited; 0 when none. */
  longestWait(upstream: string): number {
    const set = this.#byUpstream.get(upstream)
    if (set === undefined) return 0
    let oldest = Infinity
    for (const [a, at] of set) if (!a.answered && at < oldest) oldest = at
    return oldest === Infinity ? 0 : performance.now() - oldest
  }

  /** Stop every attempt on `upstream` still waiting for its answer's head; returns how many. */
  stopWaiting(upstream: string, code: ErrorCode): number {
    const set = this.#byUpstream.get(upstream)
    if (set === undefined) return 0
    let n = 0
    for (const a of [...set.keys()]) {
      if (a.answered) continue
      a.stop(code)
      n++
    }
    return n
  }
}
