// Log lines about problems that are reported over and over while they last (a discovery source
// that keeps failing, a Service with no ready pod whose slices keep changing), for people: a
// warn when a problem starts or changes, then at most one warn per interval while it lasts (with
// how many reports it stands for), and one info line when it is over. The same rule as the
// Redis node log (redis-health-log.ts), for any source. Layer 3 observability subscriber: owns no
// timer, takes time from the injected Clock (its monotonic time: a wall clock stepped back must
// neither hold a warn back nor make `for_ms` read 0); counting for metrics and /readyz stays with
// the caller, which must not depend on what is logged.
import { monotonicNow, type Clock } from '../clock.js'
import type { Logger } from './logger.js'

/**
 * `text` with its numbers masked (`#`), as a report()'s identity: an error that tells a count, a
 * port or a time in ms ("timed out after 512 ms") changes with each report while it is one problem.
 */
export function withoutNumbers(text: string): string {
  return text.replace(/\d+/g, '#')
}

/** Default least time between two warn lines about one lasting problem, ms. */
export const PROBLEM_WARN_INTERVAL_MS = 30_000

interface Spell {
  /** What makes two reports the same problem (see report()). */
  identity: string
  /** When this problem (this identity) was first reported (monotonic ms). */
  since: number
  /** When the last warn about it was written (monotonic ms). */
  lastWarnAt: number
  /** Reports since that warn that were not logged. */
  unlogged: number
}

/**
 * Rules, per `key` (one concern of one source, e.g. "kubernetes EndpointSlices"):
 * - `report()` with no problem open, or with another `identity` than the open one: warn `msg`
 *   with `fields` (a new or changed problem is always told at once);
 * - `report()` with the same identity: counted, and warned again (with `repeated`: the reports
 *   since the last warn, this one included, and `for_ms`: since when it lasts) once
 *   `intervalMs` passed since the last warn;
 * - `resolve()` with a problem open: info `msg` with `fields`, `for_ms` and, when some reports
 *   were not logged, `unlogged`; without one: nothing (its recovery was told, or nothing was wrong).
 *
 * Example:
 * ```ts
 * const problems = new ProblemLog(logger, systemClock)
 * problems.report('kubernetes endpoints', 'EEMPTY no endpoint is ready', { err: message }, 'Kubernetes discovery: keeping the last known upstreams') // warn
 * problems.report('kubernetes endpoints', 'EEMPTY no endpoint is ready', { err: message }, '...') // 10 s later: nothing
 * problems.resolve('kubernetes endpoints', {}, 'Kubernetes discovery: the Service has serving endpoints again') // info, unlogged: 1
 * ```
 */
export class ProblemLog {
  readonly #logger: Logger
  readonly #clock: Clock
  readonly #interval: number
  readonly #open = new Map<string, Spell>()

  constructor(logger: Logger, clock: Clock, intervalMs = PROBLEM_WARN_INTERVAL_MS) {
    this.#logger = logger
    this.#clock = clock
    this.#interval = intervalMs
  }

  /** Reports problem `key` (see the class); returns whether a line was written. */
  report(key: string, identity: string, fields: Readonly<Record<string, unknown>>, msg: string): boolean {
    const now = monotonicNow(this.#clock)
    const spell = this.#open.get(key)
    if (spell === undefined || spell.identity !== identity) {
      this.#open.set(key, { identity, since: now, lastWarnAt: now, unlogged: 0 })
      this.#logger.warn(fields, msg)
      return true
    }
    // a clock without monotonic time that stepped back (now before the last warning) counts as the interval passed
    if (now >= spell.lastWarnAt && now - spell.lastWarnAt < this.#interval) {
      spell.unlogged++
      return false
    }
    this.#logger.warn({ ...fields, repeated: spell.unlogged + 1, for_ms: Math.max(0, now - spell.since) }, msg)
    spell.lastWarnAt = now
    spell.unlogged = 0
    return true
  }

  /**
   * Forgets, without a line, the problems whose key `keep` refuses (keys of things that are
   * gone, e.g. upstreams removed from the set): the keys stay bounded by what exists, and a
   * key that comes back is a new problem (warned at once). Example:
   * `problems.retain((id) => set.get(id) !== undefined)`.
   */
  retain(keep: (key: string) => boolean): void {
    for (const key of this.#open.keys()) if (!keep(key)) this.#open.delete(key)
  }

  /** How many problems are open (reported, not resolved nor forgotten). */
  get size(): number {
    return this.#open.size
  }

  /** Problem `key` is over (see the class); returns whether a line was written. */
  resolve(key: string, fields: Readonly<Record<string, unknown>>, msg: string): boolean {
    const spell = this.#open.get(key)
    if (spell === undefined) return false
    this.#open.delete(key)
    const forMs = Math.max(0, monotonicNow(this.#clock) - spell.since)
    this.#logger.info(spell.unlogged > 0 ? { ...fields, for_ms: forMs, unlogged: spell.unlogged } : { ...fields, for_ms: forMs }, msg)
    return true
  }
}
