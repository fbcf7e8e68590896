// The last seconds of traffic for the admin status page: per upstream the request rate, error
// rate and p99 latency over a short window, moves per minute by reason, and total requests per
// second for a sparkline. Layer 2 state owner: per-second ring slots, O(1) and allocation-free
// per request once an upstream is known; time comes from the injected `now`, never a timer.
import type { MoveReason } from '../routing/decision.js'
import type { ProxyEvents } from './events.js'

/** The window of the per-upstream figures, seconds. */
export const WINDOW_SECONDS = 10
/** The length of the request-rate history and of the moves window, seconds. */
export const HISTORY_SECONDS = 60
/** Every move reason, in the order the status page shows them. */
export const MOVE_REASONS: readonly MoveReason[] = ['dead', 'drain', 'rebalance', 'spill', 'admin', 'restart']

/**
 * Latency buckets: bucket 0 holds durations up to 0.25 ms, bucket i up to 0.25 * 1.25^i ms
 * (the last, 63, up to ~317 s, holds everything longer). A p99 is reported as the upper bound
 * of its bucket: at most 25% above the true value.
 */
const BUCKETS = 64
const FIRST_BOUND_MS = 0.25
const GROWTH = 1.25
const LOG_GROWTH = Math.log(GROWTH)
/** Columns of an upstream's slot: requests, errors, then the latency buckets. */
const REQUESTS = 0
const ERRORS = 1
const FIRST_BUCKET = 2

/** The recent figures of one upstream; null where no request ended in the window. */
export interface UpstreamTraffic {
  /** Requests answered per second over the window. */
  readonly requests_per_second: number
  /** Share of them in (0..1) that failed: a 5xx or no status sent; null without requests. */
  readonly error_rate: number | null
  /** 99th percentile of their total duration, ms (a bucket's upper bound); null without requests. */
  readonly p99_ms: number | null
}

/** Everything the status page shows about recent traffic. */
export interface TrafficSnapshot {
  readonly window_seconds: number
  readonly upstreams: Readonly<Record<string, UpstreamTraffic>>
  /** Moves away from an upstream over the last {@link HISTORY_SECONDS}, by reason. */
  readonly moves_per_minute: Readonly<Record<MoveReason, number>>
  /** Requests answered (every upstream, and none) in each of the last complete seconds, oldest first. */
  readonly requests_per_second: readonly number[]
}

/**
 * Per-second slots in a ring, each `width` numbers wide; a slot is cleared when it is reused
 * for a newer second, so nothing runs on a timer.
 */
class SecondSlots {
  readonly data: Float64Array
  readonly #seconds: Float64Array
  readonly #slots: number
  readonly #width: number

  constructor(slots: number, width: number) {
    this.#slots = slots
    this.#width = width
    this.data = new Float64Array(slots * width)
    this.#seconds = new Float64Array(slots).fill(-1)
  }

  /** Offset in `data` of second `sec`'s slot, cleared first when it held an older second. */
  at(sec: number): number {
    const slot = sec % this.#slots
    const offset = slot * this.#width
    if (this.#seconds[slot] !== sec) {
      this.#seconds[slot] = sec
      this.data.fill(0, offset, offset + this.#width)
    }
    return offset
  }

  /** Offset of second `sec`'s slot, or -1 when the ring no longer (or never) held that second. */
  find(sec: number): number {
    const slot = sec % this.#slots
    return this.#seconds[slot] === sec ? slot * this.#width : -1
  }

  /** The newest second recorded (-1: none). */
  newest(): number {
    let max = -1
    for (const s of this.#seconds) if (s > max) max = s
    return max
  }
}

/**
 * Recent traffic, fed by the request path's events (`observeRequest`, `failover`) and read by
 * the admin listener's `GET /status`.
 *
 * Example:
 * ```ts
 * const traffic = new RecentTraffic(() => clock.now())
 * traffic.observeRequest('app-0', 'GET', 200, 0.012)
 * traffic.failover('app-1', 'dead')
 * traffic.snapshot(['app-0', 'app-1']).upstreams['app-0']  // { requests_per_second: 0.1, error_rate: 0, p99_ms: 12.4 }
 * ```
 */
export class RecentTraffic implements Pick<ProxyEvents, 'observeRequest' | 'failover'> {
  readonly #now: () => number
  readonly #started: number
  readonly #upstreams = new Map<string, SecondSlots>()
  /** Total requests per second (one column). */
  readonly #total = new SecondSlots(HISTORY_SECONDS + 1, 1)
  /** Moves per second, one column per reason. */
  readonly #moves = new SecondSlots(HISTORY_SECONDS + 1, MOVE_REASONS.length)

  constructor(now: () => number) {
    this.#now = now
    this.#started = now()
  }

  /** One client request finished (same arguments as {@link ProxyEvents.observeRequest}). O(1). */
  observeRequest(upstream: string | null, _method: string | undefined, status: number | null, seconds: number): void {
    const sec = Math.floor(this.#now() / 1000)
    this.#total.data[this.#total.at(sec)]!++
    if (upstream === null) return
    let slots = this.#upstreams.get(upstream)
    if (slots === undefined) {
      slots = new SecondSlots(WINDOW_SECONDS + 1, FIRST_BUCKET + BUCKETS)
      this.#upstreams.set(upstream, slots)
    }
    const at = slots.at(sec)
    const data = slots.data
    data[at + REQUESTS]!++
    if (status === null || !(status >= 100 && status < 500)) data[at + ERRORS]!++
    data[at + FIRST_BUCKET + bucketOf(seconds * 1000)]!++
  }

  /** A user was moved away from `from` for `reason`. O(1). */
  failover(_from: string, reason: MoveReason): void {
    const sec = Math.floor(this.#now() / 1000)
    this.#moves.data[this.#moves.at(sec) + MOVE_REASONS.indexOf(reason)]!++
  }

  /**
   * The figures now, for the upstreams in `ids` (others that had no request within the window
   * are forgotten). The window is the last {@link WINDOW_SECONDS} complete seconds plus the
   * current one, shortened to the time since this object was made.
   */
  snapshot(ids: readonly string[]): TrafficSnapshot {
    const now = this.#now()
    const sec = Math.floor(now / 1000)
    const span = Math.max(1, Math.min(WINDOW_SECONDS + (now % 1000) / 1000, (now - this.#started) / 1000))
    const upstreams: Record<string, UpstreamTraffic> = {}
    for (const id of ids) upstreams[id] = this.#upstream(id, sec, span)
    this.#forget(ids, sec)
    const moves = {} as Record<MoveReason, number>
    MOVE_REASONS.forEach((reason, i) => {
      let n = 0
      for (let s = sec - HISTORY_SECONDS + 1; s <= sec; s++) {
        const at = this.#moves.find(s)
        if (at >= 0) n += this.#moves.data[at + i]!
      }
      moves[reason] = n
    })
    const rate: number[] = []
    for (let s = sec - HISTORY_SECONDS; s < sec; s++) {
      const at = this.#total.find(s)
      rate.push(at < 0 ? 0 : this.#total.data[at]!)
    }
    return { window_seconds: WINDOW_SECONDS, upstreams, moves_per_minute: moves, requests_per_second: rate }
  }

  /** How many upstreams' seconds are held (for tests). */
  get held(): number {
    return this.#upstreams.size
  }

  /**
   * Forget the upstreams not in `ids` (the current ones) that had no request within the
   * window: the owner's upkeep calls it, so removed upstreams (pods of past rollouts) are not
   * kept for as long as nobody opens the status page. O(upstreams held).
   */
  sweep(ids: readonly string[]): void {
    if (this.#upstreams.size !== 0) this.#forget(ids, Math.floor(this.#now() / 1000))
  }

  #forget(ids: readonly string[], sec: number): void {
    let keep: Set<string> | null = null
    for (const [id, slots] of this.#upstreams) {
      if (slots.newest() >= sec - WINDOW_SECONDS) continue
      keep ??= new Set(ids)
      if (!keep.has(id)) this.#upstreams.delete(id)
    }
  }

  #upstream(id: string, sec: number, span: number): UpstreamTraffic {
    const slots = this.#upstreams.get(id)
    const histogram = new Float64Array(BUCKETS)
    let requests = 0
    let errors = 0
    if (slots !== undefined) {
      for (let s = sec - WINDOW_SECONDS; s <= sec; s++) {
        const at = slots.find(s)
        if (at < 0) continue
        requests += slots.data[at + REQUESTS]!
        errors += slots.data[at + ERRORS]!
        for (let b = 0; b < BUCKETS; b++) histogram[b]! += slots.data[at + FIRST_BUCKET + b]!
      }
    }
    if (requests === 0) return { requests_per_second: 0, error_rate: null, p99_ms: null }
    return { requests_per_second: round(requests / span, 2), error_rate: round(errors / requests, 4), p99_ms: round(percentileBound(histogram, requests, 0.99), 3) }
  }
}

/** The latency bucket of a duration in ms (see {@link BUCKETS}); a negative or NaN duration goes to bucket 0. */
export function bucketOf(ms: number): number {
  if (!(ms > FIRST_BOUND_MS)) return 0
  return Math.min(BUCKETS - 1, Math.ceil(Math.log(ms / FIRST_BOUND_MS) / LOG_GROWTH - 1e-9))
}

/** The upper bound of the bucket holding the `q` quantile of `count` durations. */
function percentileBound(histogram: Float64Array, count: number, q: number): number {
  const rank = Math.ceil(q * count)
  let seen = 0
  for (let b = 0; b < BUCKETS; b++) {
    seen += histogram[b]!
    if (seen >= rank) return FIRST_BOUND_MS * GROWTH ** b
  }
  return FIRST_BOUND_MS * GROWTH ** (BUCKETS - 1)
}

function round(x: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}
