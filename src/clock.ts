// The clock interface: every module that needs "now" takes a Clock (or a `now` argument) so
// timeouts are tested by advancing a fake clock, never by sleeping. Layer 0: no timers yet, and
// no module other than this one may call Date.now() for Tether's own time-keeping.

/** A source of wall-clock time. */
export interface Clock {
  /**
   * Milliseconds since the Unix epoch, like `Date.now()`.
   * Example: `clock.now()` -> `1764086400000`.
   */
  now(): number
}

/**
 * The real clock, backed by `Date.now()`. Created once by the composition root and passed down.
 * Example: `new AffinityTable(...)` callers pass `systemClock.now()` as `now`.
 */
export const systemClock: Clock = Object.freeze({ now: () => Date.now() })

/** Injectable timers (the global ones by default), so tests can drive background work by hand. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

/** The global timers, unref'd: background work never keeps the process alive by itself. */
export const systemTimers: Timers = Object.freeze({
  setTimeout: (fn: () => void, ms: number): unknown => setTimeout(fn, ms).unref(),
  clearTimeout: (handle: unknown): void => clearTimeout(handle as NodeJS.Timeout),
})
