// The JSON answer of `GET /status`, what the status page polls: readiness, every upstream's row
// of `GET /upstreams` with its recent traffic and countdowns, moves per minute, the request
// rate history. Pure: no I/O, no clock (the time comes in), computed from what it is given.
import type { MoveReason } from '../routing/decision.js'
import type { TrafficSnapshot, UpstreamTraffic } from '../observability/recent-traffic.js'
import { rfc3339, type UpstreamRow } from './upstream-row.js'

/** One upstream on the status page: its `GET /upstreams` row plus recent traffic. */
export interface StatusUpstream extends UpstreamRow, UpstreamTraffic {
  /** Ms until the current ejection ends; null when not ejected. */
  readonly ejection_remaining_ms: number | null
  /** Ms since the drain began; null when not draining. */
  readonly draining_for_ms: number | null
}

/** The answer of `GET /status`. */
export interface StatusView {
  /** When this was computed (RFC 3339, UTC). */
  readonly time: string
  readonly ready: boolean
  /** Why not ready (as `GET /readyz`). */
  readonly reasons: readonly string[]
  readonly degraded: readonly string[]
  /** `GET /sessions/<key>` can answer (false with `affinity.key: none`). */
  readonly session_lookup: boolean
  /** The window of `requests_per_second`, `error_rate` and `p99_ms` of each upstream, seconds. */
  readonly window_seconds: number
  readonly upstreams: readonly StatusUpstream[]
  /** Users moved away from an upstream in the last 60 s, by reason. */
  readonly moves_per_minute: Readonly<Record<MoveReason, number>>
  /** Requests answered in each of the last 60 complete seconds, oldest first. */
  readonly requests_per_second: readonly number[]
}

/** What {@link statusView} is computed from. */
export interface StatusParts {
  readonly now: number
  readonly notReady: readonly string[]
  readonly degraded: readonly string[]
  readonly rows: readonly UpstreamRow[]
  readonly traffic: TrafficSnapshot
  readonly sessionLookup: boolean
}

/**
 * Joins the upstream rows with their traffic and turns the absolute times into countdowns.
 * Example: a row with `ejected_until: '2025-11-25T16:00:30.000Z'` at `now` 16:00:20 gets
 * `ejection_remaining_ms: 10000`; an upstream without requests in the window gets
 * `requests_per_second: 0, error_rate: null, p99_ms: null`.
 */
export function statusView(p: StatusParts): StatusView {
  const idle: UpstreamTraffic = { requests_per_second: 0, error_rate: null, p99_ms: null }
  return {
    time: rfc3339(p.now)!,
    ready: p.notReady.length === 0,
    reasons: p.notReady,
    degraded: p.degraded,
    session_lookup: p.sessionLookup,
    window_seconds: p.traffic.window_seconds,
    upstreams: p.rows.map((row) => ({
      ...row,
      ...(p.traffic.upstreams[row.id] ?? idle),
      ejection_remaining_ms: since(row.ejected_until, p.now, -1),
      draining_for_ms: since(row.draining_since, p.now, 1),
    })),
    moves_per_minute: p.traffic.moves_per_minute,
    requests_per_second: p.traffic.requests_per_second,
  }
}

/** `sign` 1: ms elapsed since `time`; -1: ms left until it; never negative; null stays null. */
function since(time: string | null, now: number, sign: 1 | -1): number | null {
  if (time === null) return null
  return Math.max(0, sign * (now - Date.parse(time)))
}
