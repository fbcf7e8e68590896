// The JSON answer of `GET /status`, what the status page polls: readiness, every upstream's row
// of `GET /upstreams` with its recent traffic and countdowns, moves per minute, the request
// rate history; and the sum of several processes' views (workers). Pure: no I/O, no clock (the
// time comes in), computed from what it is given.
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

/**
 * One view from the views of several processes serving the same upstreams (workers of one
 * Tether): the first (leading) view's health, readiness and sessions (they hold the same
 * table), a draining upstream's `sessions_remaining` the most any view counts, with the traffic added up: `in_flight`, `queued`, `websockets`, `requests_per_second`, moves and
 * the history summed, `error_rate` weighted by each one's requests, and `p99_ms` the largest
 * (an upper bound: the 99th percentile of the union is never above every part's).
 * Example: `combineStatus([lead, other])` where each has `app-0` at 10 req/s, error rates 0 and
 * 0.2 -> `app-0` at 20 req/s, error rate 0.1.
 */
export function combineStatus(views: readonly StatusView[]): StatusView {
  const [lead, ...others] = views
  if (lead === undefined) throw new Error('combineStatus needs at least one view')
  const upstreams = lead.upstreams.map((u) => {
    const parts = [u, ...others.map((v) => v.upstreams.find((o) => o.id === u.id)).filter((o) => o !== undefined)]
    const rps = parts.reduce((n, p) => n + p.requests_per_second, 0)
    const counted = parts.filter((p) => p.error_rate !== null && p.requests_per_second > 0)
    const weight = counted.reduce((n, p) => n + p.requests_per_second, 0)
    const p99s = parts.flatMap((p) => (p.p99_ms === null ? [] : [p.p99_ms]))
    // a drain's users left: the most any worker counts (cookie users are counted by the worker
    // that served them), as the primary's GET /upstreams gives it
    const remaining = parts.flatMap((p) => (typeof p.sessions_remaining === 'number' ? [p.sessions_remaining] : []))
    return {
      ...u,
      sessions_remaining: remaining.length === 0 ? u.sessions_remaining : Math.max(...remaining),
      in_flight: parts.reduce((n, p) => n + p.in_flight, 0),
      queued: parts.reduce((n, p) => n + p.queued, 0),
      websockets: parts.reduce((n, p) => n + p.websockets, 0),
      requests_per_second: Math.round(rps * 100) / 100,
      error_rate: weight === 0 ? u.error_rate : Math.round(counted.reduce((n, p) => n + p.error_rate! * p.requests_per_second, 0) / weight * 10_000) / 10_000,
      p99_ms: p99s.length === 0 ? null : Math.max(...p99s),
    }
  })
  const moves = { ...lead.moves_per_minute }
  for (const v of others) for (const k of Object.keys(moves) as MoveReason[]) moves[k] += v.moves_per_minute[k] ?? 0
  const history = lead.requests_per_second.map((n, i) => others.reduce((sum, v) => sum + (v.requests_per_second[i] ?? 0), n))
  return { ...lead, upstreams, moves_per_minute: moves, requests_per_second: history }
}
