// Duration values in proxy.yaml: "500ms", "5s", "3m", "3h", "7d", "2w", or a plain number of seconds.
// Pure: no I/O. Every duration in the code is held in milliseconds (see schema.ts `Millis`).

// d and w as nginx reads them (HAProxy has d, not w): affinity lifetimes of days are common. No
// months or years: nginx's M and y are 30 and 365 days, a calendar's are not, and M beside m
// (minutes) is one typo from a 43200-fold error.
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const
const WITH_UNIT = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/
const SECONDS = /^\d+(?:\.\d+)?$/

/**
 * Parses a duration to whole milliseconds (rounded), or throws a `TypeError` whose message is
 * one line fit for a config error.
 *
 * Accepts `"<n><unit>"` with unit ms|s|m|h|d|w (n may be fractional), or a number of seconds
 * (a YAML number or a numeric string, fractional allowed, >= 0).
 * Examples: `"500ms"` -> 500, `"1.5s"` -> 1500, `"3h"` -> 10800000, `"7d"` -> 604800000,
 * `2` -> 2000, `0.25` -> 250.
 */
export function parseDuration(value: unknown): number {
  let ms: number | undefined
  if (typeof value === 'number') {
    if (Number.isFinite(value) && value >= 0) ms = value * 1000
  } else if (typeof value === 'string') {
    const unit = WITH_UNIT.exec(value)
    if (unit) ms = Number(unit[1]) * UNIT_MS[unit[2] as keyof typeof UNIT_MS]
    else if (SECONDS.test(value)) ms = Number(value) * 1000
  }
  if (ms === undefined || !Number.isFinite(ms)) {
    throw new TypeError(
      `expected a duration like "500ms", "5s", "3h" or a number of seconds, got ${describeValue(value)}`,
    )
  }
  return Math.round(ms)
}

/**
 * Formats milliseconds with the largest unit up to h that divides them exactly: 10800000 -> "3h",
 * 2592000000 -> "720h". Never d or w: what `tether import` writes, and the bounds errors quote,
 * must load in a Tether from before d and w were read (a rolling upgrade, a pinned image).
 */
export function formatDuration(ms: number): string {
  for (const unit of ['h', 'm', 's'] as const) {
    if (ms !== 0 && ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`
  }
  return `${ms}ms`
}

/** Short rendering of a config value for "got ..." in error messages. */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value)
  if (value === null || value === undefined) return 'null'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'a map'
  return String(value)
}
