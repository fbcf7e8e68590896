// Which workers have stopped answering their primary (`workers` > 1): a worker stuck in a loop,
// frozen (SIGSTOP, a stalled host) or deadlocked never exits, so the crash restart never comes;
// its keep-alive clients wait on it, and so does the connection node:cluster last handed it.
// The primary asks every worker for a sign of life each second (any message counts) and
// replaces one silent for WATCHDOG_TIMEOUT, as HAProxy's watchdog ends a stuck thread. Layer 2
// state owner: no I/O, no timers, no clock (every call takes `now`).

/** How long a ready worker may stay silent before it is killed and replaced (ms). */
export const WATCHDOG_TIMEOUT = 10_000
/** How often the primary asks each worker for a sign of life (ms). */
export const WATCHDOG_INTERVAL = 1_000
/**
 * How long a worker may stay silent before the admin listener stops passing it requests and
 * waiting for its metrics (ms): two signs of life missed. A frozen worker's admin listener still
 * accepts a connection (the kernel's backlog), and the request waited there until the watchdog
 * killed it.
 */
export const QUIET_AFTER = 2.5 * WATCHDOG_INTERVAL

/**
 * Example: `watch.heard(1, now)` on each message of worker 1; each second
 * `watch.tick(now, [1, 2])` -> `[2]` when worker 2 was last heard over WATCHDOG_TIMEOUT ago.
 */
export class SilenceWatch {
  readonly #timeout: number
  readonly #interval: number
  readonly #heard = new Map<number, number>()
  #lastTick = NaN

  constructor(timeout = WATCHDOG_TIMEOUT, interval = WATCHDOG_INTERVAL) {
    this.#timeout = timeout
    this.#interval = interval
  }

  /** Worker `id` sent something at `now`. */
  heard(id: number, now: number): void {
    this.#heard.set(id, now)
  }

  /** Has worker `id` been heard from (since it was last forgotten)? */
  known(id: number): boolean {
    return this.#heard.has(id)
  }

  /**
   * Has worker `id` been silent for longer than `ms` at `now` (false when not heard of)? A
   * worker that missed its last signs of life is frozen or stuck, or soon known to be: the
   * admin listener asks the others meanwhile (see QUIET_AFTER).
   */
  quiet(id: number, now: number, ms: number): boolean {
    const at = this.#heard.get(id)
    return at !== undefined && now - at > ms
  }

  /** Worker `id` is gone (exited, or retired). */
  forget(id: number): void {
    this.#heard.delete(id)
  }

  /**
   * The workers of `ids` silent for longer than the timeout at `now`. A worker not heard of yet
   * starts its count now; so does every worker at the first tick and when a tick comes over
   * three intervals late (this process itself stalled: the workers' answers may be unread yet).
   * Times are monotonic ms (performance.now()): a wall clock stepped back would hide a silence.
   */
  tick(now: number, ids: Iterable<number>): number[] {
    const stalled = !(now - this.#lastTick <= 3 * this.#interval)
    this.#lastTick = now
    const silent: number[] = []
    for (const id of ids) {
      const at = this.#heard.get(id)
      if (at === undefined || stalled) this.#heard.set(id, now)
      else if (now - at > this.#timeout) silent.push(id)
    }
    return silent
  }
}
