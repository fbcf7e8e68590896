// The requests waiting on each upstream, by upstream id: counted for the admin API, averaged
// over time for spill under overload, and stoppable when health takes the upstream out while
// they wait for its answer's head (a frozen replica must not hold its users for
// `response_headers`). Layer 2 state owner: no I/O.
import type { ErrorCode } from '../errors.js'
import type { Attempt } from './exchange.js'

/**
 * What the set holds: an attempt, or another request of Tether's own to the upstream (the
 * rehydration hook). `uploading`: its request body is still arriving from the client, so the
 * upstream is not keeping it waiting yet (absent: never).
 */
export type Waiting = Pick<Attempt, 'answered' | 'stop'> & { readonly uploading?: boolean }

/** In the set: an attempt seen with its body still arriving; its wait starts when it is first seen complete. */
const UPLOADING = Infinity

/** Time constant (ms) of the averaged in-flight counts: a burst shorter than this barely shows. */
export const IN_FLIGHT_AVERAGE_MS = 1_000

/**
 * A count's exponentially weighted time average (time constant {@link IN_FLIGHT_AVERAGE_MS}):
 * the count is constant between changes, so at time t the average is
 * `count + (avg - count) * exp(-(t - at) / tau)`. O(1), one Math.exp per change or read.
 */
class TimeAverage {
  count = 0
  #avg = 0
  #at = 0
  /** The average at `now` (without changing anything). */
  at(now: number): number {
    return this.count + (this.#avg - this.count) * Math.exp(-Math.max(0, now - this.#at) / IN_FLIGHT_AVERAGE_MS)
  }
  /** The count changes by `delta` at `now`. */
  change(delta: number, now: number): void {
    this.#avg = this.at(now)
    this.#at = now
    this.count += delta
  }
}

/**
 * Example: `inFlight.add(attempt, 'app-0')` when an attempt starts, `remove(attempt, 'app-0')`
 * when it ends; `inFlight.stopWaiting('app-0', 'TETHER_UPSTREAM_UNAVAILABLE')` when app-0 is
 * marked down; `inFlight.loadOf('app-0')` -> 7.3: about 7 requests in flight over the last second.
 */
export class InFlight {
  /** Attempts by upstream, with when each was sent (performance.now()). */
  readonly #byUpstream = new Map<string, Map<Waiting, number>>()
  /** Time averages by upstream (kept after the last attempt ends, until {@link sweep}) and of all. */
  readonly #averages = new Map<string, TimeAverage>()
  readonly #all = new TimeAverage()
  readonly #now: () => number
  readonly #averaged: boolean

  /**
   * `now`: a monotonic clock in ms (default performance.now). `averaged`: keep the time
   * averages (only `affinity.spill` reads them; without it, {@link loadOf} is the count now).
   */
  constructor(now: () => number = () => performance.now(), averaged = true) {
    this.#now = now
    this.#averaged = averaged
  }

  /** Count `attempt` on `upstream`; returns when it was added (the clock's time), for a caller timing the attempt: one clock read for both. */
  add(attempt: Waiting, upstream: string): number {
    let set = this.#byUpstream.get(upstream)
    if (set === undefined) this.#byUpstream.set(upstream, (set = new Map()))
    const now = this.#now()
    if (!set.has(attempt)) this.#change(upstream, 1, now)
    set.set(attempt, now)
    return now
  }

  /** The time by this table's monotonic clock (ms), to measure from what {@link add} returned. */
  now(): number {
    return this.#now()
  }

  remove(attempt: Waiting, upstream: string): void {
    const set = this.#byUpstream.get(upstream)
    if (set === undefined) return
    // the time is read only for the averages (without affinity.spill, none: no clock read a request)
    if (set.delete(attempt) && this.#averaged) this.#change(upstream, -1, this.#now())
    if (set.size === 0) this.#byUpstream.delete(upstream)
  }

  #change(upstream: string, delta: number, now: number): void {
    if (!this.#averaged) return
    let avg = this.#averages.get(upstream)
    if (avg === undefined) this.#averages.set(upstream, (avg = new TimeAverage()))
    avg.change(delta, now)
    this.#all.change(delta, now)
  }

  /**
   * Attempts in progress on `upstream`, averaged over time (about the last second): what
   * `affinity.spill` compares. O(1). Example: 10 requests in flight for a second, then 0 ->
   * about 3.7 a second later.
   */
  loadOf(upstream: string): number {
    if (!this.#averaged) return this.#byUpstream.get(upstream)?.size ?? 0
    return this.#averages.get(upstream)?.at(this.#now()) ?? 0
  }

  /** {@link loadOf} over all upstreams (O(1) when averaged). */
  get totalLoad(): number {
    if (!this.#averaged) return [...this.#byUpstream.values()].reduce((n, s) => n + s.size, 0)
    return this.#all.at(this.#now())
  }

  /** Forget the averages of upstreams with nothing in flight and an average under 0.01 (the owned background sweep). */
  sweep(): void {
    const now = this.#now()
    for (const [id, avg] of this.#averages) if (avg.count === 0 && avg.at(now) < 0.01) this.#averages.delete(id)
  }

  /** Attempts in progress on `upstream`. */
  count(upstream: string): number {
    return this.#byUpstream.get(upstream)?.size ?? 0
  }

  /**
   * How long (ms) the oldest attempt still waiting for `upstream`'s answer head has waited; 0
   * when none. An attempt whose request body is still arriving from the client (a slow upload)
   * is not waiting on the upstream: its wait counts from the first look that finds the body in
   * (as `timeouts.response_headers` counts), so a long upload does not make a healthy upstream
   * look stuck (the watch would have it probed, and one probe timing out in a short pause take
   * it out at once).
   */
  longestWait(upstream: string): number {
    const set = this.#byUpstream.get(upstream)
    if (set === undefined) return 0
    const now = this.#now()
    let oldest = Infinity
    for (const [a, at] of set) {
      if (a.answered) continue
      if (a.uploading === true) {
        set.set(a, UPLOADING) // (an existing key: the iteration goes on unchanged)
        continue
      }
      const since = at === UPLOADING ? now : at
      if (at === UPLOADING) set.set(a, now)
      if (since < oldest) oldest = since
    }
    return oldest === Infinity ? 0 : now - oldest
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
