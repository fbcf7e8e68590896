// The documented JSON row of `GET /upstreams`: one upstream's health snapshot plus its live
// counters, in the admin API's one style (snake_case, RFC 3339 times, null = unknown).
// Pure: no I/O, no clock; the README "Admin listener" section documents every field.
import type { AffinityConfig } from '../config/schema.js'
import type { EjectionReason, HealthSnapshotEntry, HealthState } from '../health/health-table.js'

/** One row of `GET /upstreams`. Field order is the order the README documents them in. */
export interface UpstreamRow {
  readonly id: string
  /** `http://host:port`; null when the upstream is not in the current membership. */
  readonly url: string | null
  /** Configured weight; null when the upstream is not in the current membership. */
  readonly weight: number | null
  /** Discovered: its pod's uid (an EndpointSlice's `targetRef.uid`); absent when not known. */
  readonly uid?: string
  /** Discovered at more than one address: every one, as urls, `url` among them; absent otherwise. */
  readonly addresses?: readonly string[]
  readonly state: HealthState
  /** May take traffic at all (healthy or draining). */
  readonly ready: boolean
  /** May take new users (healthy). */
  readonly accepts_new: boolean
  readonly draining: boolean
  /** When the drain began (RFC 3339, UTC); null when not draining. */
  readonly draining_since: string | null
  readonly disabled: boolean
  readonly active_failed: boolean
  readonly active_successes: number
  readonly active_failures: number
  readonly passive_failures: number
  /** When the current ejection ends (RFC 3339, UTC); null when not ejected. */
  readonly ejected_until: string | null
  /** The ejection in force: why, when its time ends, what ends it; null when not ejected. */
  readonly ejection: UpstreamEjection | null
  readonly times_ejected: number
  /** Slow start factor in (0, 1] applied to `weight` for new users. */
  readonly slow_start_weight: number
  readonly in_flight: number
  /** Of in_flight, those waiting for a connection (limits.max_upstream_connections all busy). */
  readonly queued: number
  readonly websockets: number
  /** Affinity entries this process holds for it; null when the affinity key keeps no table. */
  readonly sessions: number | null
  /** The drain migrates its users (false when not draining). */
  readonly migrating: boolean
  /** Draining: its users not moved yet (see {@link UpstreamCounters}); null when not draining. */
  readonly sessions_remaining: number | null
}

/**
 * An ejection as `GET /upstreams` shows it. `ends`: `probes` when passed active checks of this
 * Tether end it (`passes_left` more in a row; `until` at the latest), `time` when it lasts until
 * `until` whatever the probes say (`passes_left` null).
 */
export interface UpstreamEjection {
  readonly reason: EjectionReason
  /** When its time ends (RFC 3339, UTC): `ejected_until`. */
  readonly until: string | null
  readonly ends: 'probes' | 'time'
  readonly passes_left: number | null
}

/** The live counters of one upstream that the health table does not own. */
export interface UpstreamCounters {
  readonly url: string | null
  readonly weight: number | null
  /** Its pod's uid when discovery names one. */
  readonly uid?: string | undefined
  /** Every address it is listed at (`[url]` or absent: the url's one only). */
  readonly addresses?: readonly string[] | undefined
  /** Requests being forwarded to it now. */
  readonly in_flight: number
  /** Of those, the ones waiting for a connection (limits.max_upstream_connections all busy); absent: 0. */
  readonly queued?: number
  /** Open proxied WebSockets. */
  readonly websockets: number
  /** Affinity table entries pointing at it; null: unknown (see {@link sessionsCounted}). */
  readonly sessions: number | null
  /**
   * Draining: users still pinned there (table keys), or for the signed cookie the users it
   * answered within `idle_timeout` that have not moved; null when not draining or `key: none`.
   */
  readonly sessions_remaining: number | null
}

/**
 * Builds the documented row from a health snapshot entry and the counters.
 * Example: `upstreamRow(health.snapshot()[0], { url: 'http://10.0.0.1:80', weight: 1,
 * in_flight: 0, websockets: 0, sessions: null })` -> `{ id: 'app-0', ..., ejected_until:
 * '2025-11-25T16:00:30.000Z', ..., sessions: null }`.
 */
export function upstreamRow(health: HealthSnapshotEntry, counters: UpstreamCounters): UpstreamRow {
  return {
    id: health.id,
    url: counters.url,
    weight: counters.weight,
    ...(counters.uid === undefined ? {} : { uid: counters.uid }),
    ...(counters.addresses === undefined || counters.addresses.length <= 1 ? {} : { addresses: counters.addresses }),
    state: health.state,
    ready: health.ready,
    accepts_new: health.acceptsNew,
    draining: health.draining,
    draining_since: rfc3339(health.drainingSince),
    disabled: health.disabled,
    active_failed: health.activeFailed,
    active_successes: health.activeSuccesses,
    active_failures: health.activeFailures,
    passive_failures: health.passiveFailures,
    ejected_until: rfc3339(health.ejectedUntil),
    ejection: health.ejection === null ? null : { reason: health.ejection.reason, until: rfc3339(health.ejection.until), ends: health.ejection.ends, passes_left: health.ejection.passesLeft },
    times_ejected: health.timesEjected,
    slow_start_weight: health.slowStartWeight,
    in_flight: counters.in_flight,
    queued: counters.queued ?? 0,
    websockets: counters.websockets,
    sessions: counters.sessions,
    migrating: health.migrating,
    sessions_remaining: counters.sessions_remaining,
  }
}

/**
 * Epoch milliseconds as an RFC 3339 UTC time with milliseconds; null (and any time a Date
 * cannot hold) stays null. Example: `rfc3339(1764086400000)` -> `'2025-11-25T16:00:00.000Z'`.
 */
export function rfc3339(ms: number | null): string | null {
  if (ms === null) return null
  const d = new Date(ms)
  return Number.isNaN(d.getTime()) ? null : d.toISOString()
}

/**
 * Does the affinity table count an upstream's users for this affinity key? Not for `none`
 * (round robin keeps no table) nor for `cookie` without `balance_factor` (the signed cookie
 * carries the upstream; the table then records nothing). Example:
 * `sessionsCounted({ key: 'cookie', balance_factor: null })` -> false.
 */
export function sessionsCounted(affinity: Pick<AffinityConfig, 'key' | 'balance_factor'>): boolean {
  if (affinity.key === 'none') return false
  return affinity.key !== 'cookie' || affinity.balance_factor !== null
}
