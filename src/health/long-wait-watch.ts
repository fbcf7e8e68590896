// Watches how long this process's requests have waited on each upstream's answer head and raises
// a suspicion (probe that upstream now) when one has waited longer than the probe timeout, at
// most once per upstream per probe interval. With workers every worker watches its own requests,
// so the worker running the checks hears of a stuck request on any worker. Layer 2 state owner:
// reads waits through a function, owns one timer (injected Timers); decides no health.
import type { Timers } from '../clock.js'

/** What the watch reads and where its suspicions go. */
export interface LongWaitWatchDeps {
  /** The upstream ids to watch (the health table's). */
  readonly ids: () => readonly string[]
  /** How long (ms) the oldest request still waiting on `id`'s answer head has waited; 0: none. */
  readonly longestWait: (id: string) => number
  /** Probe `id` now (here, or through the worker that runs the checks). */
  readonly suspect: (id: string) => void
  readonly timers: Timers
  /** Now, in ms (the injected clock). */
  readonly now: () => number
}

/**
 * Checks every `timeout / 2` ms: an upstream with a request waiting longer than `timeout` (the
 * probe timeout) is suspected, again no sooner than `interval` (the probe interval) later. A
 * probe that times out while suspected marks the upstream unhealthy at once (two independent
 * signals agree), wherever the waiting request is.
 *
 * Example (timeout 500 ms, interval 2 s): a request waits 600 ms on app-1 -> `suspect('app-1')`;
 * it still waits 1 s later -> nothing; 2 s after the first suspicion -> `suspect('app-1')` again.
 * ```ts
 * const watch = new LongWaitWatch({ timeout: 500, interval: 2_000 }, { ids, longestWait, suspect, timers, now })
 * watch.start()   // after the proxy listens
 * watch.stop()    // at shutdown
 * ```
 */
export class LongWaitWatch {
  readonly #timeout: number
  readonly #interval: number
  readonly #d: LongWaitWatchDeps
  /** When each upstream was last suspected from here. */
  readonly #suspected = new Map<string, number>()
  #timer: unknown = null

  constructor(options: { readonly timeout: number; readonly interval: number }, deps: LongWaitWatchDeps) {
    if (!(options.timeout > 0) || !(options.interval > 0)) throw new RangeError(`LongWaitWatch: timeout and interval must be > 0, got ${options.timeout}, ${options.interval}`)
    this.#timeout = options.timeout
    this.#interval = options.interval
    this.#d = deps
  }

  /** Start checking (idempotent). */
  start(): void {
    if (this.#timer !== null) return
    const tick = (): void => {
      this.check()
      this.#timer = this.#d.timers.setTimeout(tick, this.#timeout / 2)
    }
    this.#timer = this.#d.timers.setTimeout(tick, this.#timeout / 2)
  }

  /** Stop checking (start() may be called again). */
  stop(): void {
    if (this.#timer !== null) this.#d.timers.clearTimeout(this.#timer)
    this.#timer = null
  }

  /** One pass over the upstreams (what each tick does). Returns the upstreams suspected. */
  check(): string[] {
    const now = this.#d.now()
    const raised: string[] = []
    for (const [id, at] of this.#suspected) if (now - at >= this.#interval) this.#suspected.delete(id)
    for (const id of this.#d.ids()) {
      if (this.#suspected.has(id) || !(this.#d.longestWait(id) > this.#timeout)) continue
      this.#suspected.set(id, now)
      raised.push(id)
      this.#d.suspect(id)
    }
    return raised
  }
}
