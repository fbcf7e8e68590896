// The retry rule: whether a failed attempt may be sent again to another upstream. Pure: no
// I/O; the request path also bounds attempts by `retries.attempts` and `retries.try_duration`.
import type { Outcome } from './outcome.js'

/** RFC 9110 section 9.2.2 idempotent methods that Tether retries after a dropped connection. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])

/** Is `method` idempotent (RFC 9110 section 9.2.2)? Example: isIdempotent('PUT') -> true. */
export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method)
}

/**
 * A request that never reached the upstream (connect failure) is always retried; an
 * idempotent one whose connection dropped before the response head, or whose upstream was
 * found dead while it waited for the head (TETHER_UPSTREAM_UNAVAILABLE), is retried; a
 * non-idempotent one that may have reached the upstream never is. Either way the body must
 * be replayable (none, or still within the replay buffer). Timeouts are not retried: a slow
 * upstream is not a dead one, and a retry would double its load.
 *
 * Example: POST + ECONNREFUSED -> true; POST + reset before headers -> false; GET + reset -> true.
 */
export function shouldRetry(outcome: Outcome, method: string, bodyReplayable: boolean): boolean {
  if (outcome.kind !== 'error' || !bodyReplayable) return false
  if (outcome.connect) return true
  return (outcome.code === 'TETHER_UPSTREAM_RESET' || outcome.code === 'TETHER_UPSTREAM_UNAVAILABLE') && IDEMPOTENT.has(method)
}
