// The clock interface: every module that needs "now" takes a Clock (or a `now` argument) so
// timeouts are tested by advancing a fake clock, never by sleeping. Layer 0: no timers yet, and
// no module other than this one may call Date.now() for Tether's own time-keeping.

/** A source of wall-clock time, and of monotonic time for durations. */
export interface Clock {
  /**
   * Milliseconds since the Unix epoch, like `Date.now()`: for times told as dates and for
   * expiries stored across processes. NTP may step it back or forward.
   * Example: `clock.now()` -> `1764086400000`.
   */
  now(): number
  /**
   * Milliseconds from an arbitrary origin that never go backwards, like `performance.now()`:
   * for how long something lasts within this process. Optional: a clock without it (a test's
   * `{ now }`) measures durations with `now()`; read it through {@link monotonicNow}.
   * Example: `clock.monotonic()` -> `81234.5`.
   */
  monotonic?(): number
}

/**
 * The real clock, backed by `Date.now()` and `performance.now()`. Created once by the
 * composition root and passed down.
 * Example: `new AffinityTable(...)` callers pass `systemClock.now()` as `now`.
 */
export const systemClock: Clock = Object.freeze({ now: () => Date.now(), monotonic: () => performance.now() })

/**
 * The monotonic time of `clock` (its `now()` when it has none), for durations: a wall clock
 * stepped back by an hour would make a duration read 0 (or negative) for that hour.
 * Example: `const t0 = monotonicNow(clock); ...; const ms = monotonicNow(clock) - t0`.
 */
export function monotonicNow(clock: Clock): number {
  return clock.monotonic !== undefined ? clock.monotonic() : clock.now()
}

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
