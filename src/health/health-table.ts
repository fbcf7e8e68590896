// The health table: the ONE owner of upstream health. It keeps per-upstream flags from
// independent sources (active checks, passive outlier detection, drain, admin) and emits
// transitions. Layer 2 state owner: no I/O, no timers, no Date.now; time comes from the
// injected clock and ejection expiry is noticed lazily. Checkers report; placement reads ready().

import type { HealthCopy } from './health-copy.js'

/** What metrics, logs and the admin API show for an upstream, most severe flag first. */
export type HealthState = 'healthy' | 'unhealthy' | 'ejected' | 'draining' | 'disabled'

/** Why a transition happened: a bounded set, fit for a metric label. */
export type TransitionReason =
  | 'added' | 'removed'
  | 'active_failed' | 'active_recovered'
  | 'ejected' | 'ejection_expired'
  | 'drain' | 'undrain'
  | 'disable' | 'enable'

/**
 * One state change of one upstream. `from` is null when the upstream was just added, `to` is
 * null when it was removed. `at` is when it happened (for `ejection_expired`: the ejection's
 * end, which may be earlier than when it was noticed). `detail` is a human sentence for logs.
 */
export interface HealthTransition {
  readonly id: string
  readonly from: HealthState | null
  readonly to: HealthState | null
  readonly reason: TransitionReason
  readonly detail: string
  readonly at: number
}

/** Passive outlier detection settings (Envoy's `outlier_detection`, consecutive errors only). */
export interface PassiveHealthOptions {
  /** Consecutive failures that eject an upstream (>= 1). */
  readonly consecutive_failures: number
  /** Whether 5xx answers count as failures; when false a 5xx counts as a success. */
  readonly count_5xx: boolean
  /** Ejection time of the first ejection, ms; the n-th ejection lasts n times this. */
  readonly base_ejection: number
  /** Cap on one ejection's duration, ms (>= base_ejection). */
  readonly max_ejection: number
  /** At most this percentage (0..100) of upstreams is ejected at once, but at least one. */
  readonly max_ejection_percent: number
}

/** Settings of the health table; parsed and validated config hands these over. */
export interface HealthOptions {
  /** `enabled: false`: no active checks here (absent: they run; see HealthTable.reportPassive's `untilPass`). */
  readonly active: { readonly healthy_threshold: number; readonly unhealthy_threshold: number; readonly enabled?: boolean }
  /** null: passive outlier detection is off and reportPassive() is ignored. */
  readonly passive: PassiveHealthOptions | null
  /** Slow start window, ms; 0 = off. */
  readonly slow_start: number
}

/**
 * Outcome of one forwarded request, as the outcome classifier sees it. `connect_refused`
 * (nothing listens: the pod is gone) ejects at once, without waiting for a run of failures;
 * `connect_failure` (another connection error, a reset) and `timeout` (no connection, head or
 * body byte in time) count alike toward a run, and name its ejection apart.
 */
export type PassiveResult = 'success' | 'connect_failure' | 'connect_refused' | 'timeout' | 'server_error'

/**
 * Why an upstream is ejected: the failure that ejected it (the last of the run) or what another
 * replica or worker told of it. `refused`: a refused connection (nothing listens); `error`: a
 * connection error or reset (no usable answer); `timeout`: no connection within
 * timeouts.connect, no answer head within timeouts.response_headers, or an answer silent for
 * timeouts.body_idle (both count alike toward a run, as Envoy's locally originated errors do);
 * `5xx`: a 5xx answer (or
 * one no HTTP client can read), with `count_5xx`; `probes`: another replica's active checks
 * found it down; `unknown`: another replica's ejection whose `down` does not say or says what
 * this Tether does not know (a Tether from before `reason`, or before `timeout`, shows a
 * newer one's `timeout` so).
 */
export type EjectionReason = 'refused' | 'error' | 'timeout' | '5xx' | 'probes' | 'unknown'

/**
 * How long another replica's ejection lasts, as its `down` tells it: `ms` from when it was sent
 * (the receiver adds it to its own clock: no clock of two replicas is compared) and `count`, its
 * ejection count there (which ejection of that upstream this is: the n-th lasts n times
 * base_ejection). See {@link HealthTable.reportPassive}.
 */
export interface ToldLength {
  readonly ms: number
  readonly count: number
}

/** The reasons a `down` message may carry (an ejection found on live traffic). */
export const TOLD_REASONS: readonly EjectionReason[] = ['refused', 'error', 'timeout', '5xx']

/**
 * The ejection in force, as the admin API shows it: why, when its time ends, and what ends it.
 * `ends`: `probes` when passed active checks here end it (`passesLeft` more in a row), `until`
 * at the latest; `time` when it runs until `until` whatever the probes say.
 */
export interface EjectionView {
  reason: EjectionReason
  until: number
  ends: 'probes' | 'time'
  /** With `ends: 'probes'`: passed active checks in a row still needed; null with `time`. */
  passesLeft: number | null
}

/** One row of {@link HealthTable.snapshot}: plain JSON for the admin API. */
export interface HealthSnapshotEntry {
  id: string
  state: HealthState
  ready: boolean
  acceptsNew: boolean
  activeFailed: boolean
  activeSuccesses: number
  activeFailures: number
  passiveFailures: number
  ejectedUntil: number | null
  /** The ejection in force (ejectedUntil non-null), or null. */
  ejection: EjectionView | null
  timesEjected: number
  draining: boolean
  drainingSince: number | null
  /** The drain migrates its users. */
  migrating: boolean
  disabled: boolean
  slowStartWeight: number
}

/** Minimum slow start factor, as Envoy's default `min_weight_percent` of 10%. */
const SLOW_START_MIN = 0.1

interface Entry {
  readonly id: string
  activeFailed: boolean
  activeSuccesses: number
  activeFailures: number
  passiveFailures: number
  /** End of the current ejection, or null when not ejected (cleared lazily when noticed). */
  ejectedUntil: number | null
  /** The current ejection also ends at the next passed active check here (see reportPassive). */
  untilPass: boolean
  /**
   * The current ejection is for a refused connection (here, or another replica's marked so):
   * with active checks here it also ends once `healthy_threshold` of them in a row passed
   * since it began (`upPasses` counts them), see reportPassive.
   */
  refused: boolean
  upPasses: number
  /** Why the current ejection is (see EjectionReason); null when not ejected. */
  reason: EjectionReason | null
  timesEjected: number
  /** End of the last ejection, for the decay of timesEjected. */
  lastEjectionEnd: number
  /**
   * With `untilPass`: timesEjected and lastEjectionEnd as they were before the current ejection
   * began, put back when a passed check here ends it (that ejection is then not counted).
   */
  before: { readonly times: number; readonly end: number } | null
  drainingSince: number | null
  /** When this table learned of the drain (drainingSince may be earlier: another replica's). */
  drainKnownSince: number | null
  /** The drain migrates its users (they move after an idle gap, not only at drain_timeout). */
  migrate: boolean
  /**
   * Who holds the drain: an admin (here, another replica's or worker's, a recorded one) and/or
   * discovery (a terminating pod, an address gone from DNS). Discovery ends only its own: an
   * address that comes back does not undo an operator's drain. `adminMigrate`: the admin's
   * drain migrates (what is left when discovery's ends).
   */
  adminDrain: boolean
  adminMigrate: boolean
  discoveryDrain: boolean
  /** Discovery's own drain: when it began and whether it migrates (what is left when an admin's ends). */
  discoverySince: number | null
  discoveryMigrate: boolean
  disabled: boolean
  /** When the upstream last became ready; slow start ramps from here. */
  readySince: number
  /** The last state emitted, so each change is emitted exactly once. */
  state: HealthState
}

type Listener = (e: HealthTransition) => void

/**
 * Per-upstream health, by upstream id.
 *
 * - Initial state is healthy: a new upstream takes traffic at once and active checks take it
 *   out after `unhealthy_threshold` failures (rather than no traffic until the first probes).
 * - State, most severe first: `disabled` (admin) > `unhealthy` (active checks) > `ejected`
 *   (passive) > `draining` > `healthy`. The flags are independent: enabling a disabled upstream
 *   that also failed its checks makes it `unhealthy`. Active successes end an ejection for a
 *   refused connection (`healthy_threshold` of them in a row since it began, as Envoy's
 *   `successful_active_health_check_uneject_host`), not one for 5xx, resets or timeouts: a
 *   probe (`OPTIONS *` passes on a 503) does not test what failed there (see reportPassive).
 * - Ejection expires lazily: any read (ready, acceptsNew, state, snapshot, slowStartWeight) or
 *   `tick()` compares now to `ejectedUntil` and emits `ejection_expired` when it first notices.
 *   Call `tick()` periodically (e.g. once a second) so the event is timely without traffic.
 * - Listeners run synchronously inside the call that caused the change; keep them cheap.
 *
 * Example:
 * ```ts
 * const health = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 },
 *   passive: null, slow_start: 0 }, systemClock)
 * health.setUpstreams(['app-0', 'app-1'])
 * health.reportActive('app-0', false); health.reportActive('app-0', false)
 * health.ready('app-0')  // -> false
 * health.state('app-0')  // -> 'unhealthy'
 * ```
 */
export class HealthTable {
  readonly #options: HealthOptions
  readonly #clock: { now(): number }
  readonly #entries = new Map<string, Entry>()
  readonly #listeners = new Set<Listener>()
  #initialized = false
  /** An upstream passed an active check while ready (see passedAny); the listeners waiting for the first. */
  #passed = false
  readonly #passListeners = new Set<() => void>()

  constructor(options: HealthOptions, clock: { now(): number }) {
    const { active, passive, slow_start } = options
    positiveInt('active.healthy_threshold', active.healthy_threshold)
    positiveInt('active.unhealthy_threshold', active.unhealthy_threshold)
    if (!(slow_start >= 0)) throw new RangeError(`HealthTable: slow_start must be >= 0, got ${slow_start}`)
    if (passive) {
      positiveInt('passive.consecutive_failures', passive.consecutive_failures)
      if (!(passive.base_ejection > 0)) throw new RangeError(`HealthTable: passive.base_ejection must be > 0, got ${passive.base_ejection}`)
      if (!(passive.max_ejection >= passive.base_ejection)) throw new RangeError(`HealthTable: passive.max_ejection must be >= base_ejection, got ${passive.max_ejection}`)
      if (!(passive.max_ejection_percent >= 0 && passive.max_ejection_percent <= 100)) throw new RangeError(`HealthTable: passive.max_ejection_percent must be within 0..100, got ${passive.max_ejection_percent}`)
    }
    this.#options = options
    this.#clock = clock
  }

  /**
   * Sets the upstream ids. New ids start healthy (emitting `added`); with slow start they ramp
   * from now, except on the first call (a fresh start ramps everyone equally, which is no ramp).
   * Removed ids are forgotten (emitting `removed`); kept ids keep their state.
   * Example: `health.setUpstreams(['app-0', 'app-1', 'app-2'])`.
   */
  setUpstreams(ids: readonly string[]): void {
    const now = this.#clock.now()
    const keep = new Set(ids)
    for (const [id, e] of this.#entries) {
      if (keep.has(id)) continue
      this.#entries.delete(id)
      this.#emit({ id, from: e.state, to: null, reason: 'removed', detail: 'removed from membership', at: now })
    }
    for (const id of keep) {
      if (this.#entries.has(id)) continue
      const e: Entry = {
        id, activeFailed: false, activeSuccesses: 0, activeFailures: 0, passiveFailures: 0,
        ejectedUntil: null, untilPass: false, refused: false, upPasses: 0, reason: null, timesEjected: 0, lastEjectionEnd: -Infinity, before: null, drainingSince: null, drainKnownSince: null,
        migrate: false, adminDrain: false, adminMigrate: false, discoveryDrain: false, discoverySince: null, discoveryMigrate: false, disabled: false, readySince: this.#initialized ? now : -Infinity, state: 'healthy',
      }
      this.#entries.set(id, e)
      this.#emit({ id, from: null, to: 'healthy', reason: 'added', detail: 'added to membership', at: now })
    }
    this.#initialized = true
  }

  /** The known upstream ids, in the order they were added. */
  ids(): string[] {
    return [...this.#entries.keys()]
  }

  /**
   * May `id` receive traffic at all (its existing sessions included)? False when unknown,
   * disabled, failing active checks or ejected. A draining upstream is ready.
   * Example: `placement.select(hash, (id) => health.ready(id))`.
   */
  ready(id: string): boolean {
    const e = this.#entries.get(id)
    if (!e) return false
    this.#expireNow(e)
    return e.state === 'healthy' || e.state === 'draining'
  }

  /** Ready and not draining: may `id` receive new sessions? Example: `health.acceptsNew('app-1')`. */
  acceptsNew(id: string): boolean {
    const e = this.#entries.get(id)
    if (!e) return false
    this.#expireNow(e)
    return e.state === 'healthy'
  }

  /** The state of `id`, or undefined when unknown. Example: `health.state('app-0')` -> 'ejected'. */
  state(id: string): HealthState | undefined {
    const e = this.#entries.get(id)
    if (!e) return undefined
    this.#expireNow(e)
    return e.state
  }

  /**
   * Does another upstream than `id` pass its active checks right now (its last probe passed
   * and it is healthy, or draining: it still answers)? Evidence that a probe timeout of `id`
   * is about `id`, not about this process being too busy to read answers.
   */
  anotherPassing(id: string): boolean {
    for (const e of this.#entries.values()) if (e.id !== id && e.activeSuccesses > 0 && (e.state === 'healthy' || e.state === 'draining')) return true
    return false
  }

  /** Notices expired ejections now (emitting their transitions). Call it periodically. */
  tick(): void {
    const now = this.#clock.now()
    for (const e of this.#entries.values()) this.#expire(e, now)
  }

  /**
   * Records one active check result. `unhealthy_threshold` failures in a row mark the upstream
   * unhealthy, `healthy_threshold` successes in a row mark it healthy again; a result of the
   * other kind restarts the count, so alternating results never flip it. A `severe` failure
   * (a probe timeout while requests are stuck waiting on the upstream) marks it unhealthy at
   * once. `cause`, why a failed check failed (`ECONNREFUSED`, `status 503`), ends the detail
   * of the transition it causes.
   * Example: `checker = new ActiveChecker(options, health)` calls `health.reportActive('app-0', true)`.
   */
  reportActive(id: string, ok: boolean, severe = false, cause: string | null = null): void {
    const e = this.#entries.get(id)
    if (!e) return
    const now = this.#clock.now()
    this.#expire(e, now)
    const { healthy_threshold, unhealthy_threshold } = this.#options.active
    // a failure confirmed by other evidence (requests stuck waiting on it) needs no second one
    if (!ok && severe && !e.activeFailed) e.activeFailures = Math.max(e.activeFailures, unhealthy_threshold - 1)
    if (ok) {
      // an ejection that lasts until an active check passes here (another replica's probes failed)
      if (e.ejectedUntil !== null && e.untilPass) {
        e.ejectedUntil = null
        e.untilPass = false
        e.reason = null
        // a verdict this replica's probe contradicted: not counted toward the next ejection's
        // length, as if it never was (the count and its decay as they were before it began;
        // without them, a copy from an older worker: one less, decaying from now)
        e.timesEjected = e.before?.times ?? Math.max(0, e.timesEjected - 1)
        e.lastEjectionEnd = e.before?.end ?? now
        e.before = null
        this.#update(e, 'ejection_expired', 'ejection ended: an active check passed here', now)
      }
      // an ejection for a refused connection: the process is back (a restarted pod) once it
      // passes as many checks in a row as an unhealthy one needs (before active_recovered, so an
      // upstream out for both comes back in one transition)
      if (e.ejectedUntil !== null && e.refused && this.#activeHere() && ++e.upPasses >= healthy_threshold) {
        e.ejectedUntil = null
        e.refused = false
        e.upPasses = 0
        e.reason = null
        // it was out (it refused): counted toward the next ejection, whose decay starts now
        e.lastEjectionEnd = now
        e.before = null
        this.#update(e, 'ejection_expired', `ejection ended: passed ${healthy_threshold} active checks in a row`, now)
      }
      e.activeSuccesses++
      e.activeFailures = 0
      if (e.activeFailed && e.activeSuccesses >= healthy_threshold) {
        e.activeFailed = false
        this.#update(e, 'active_recovered', `passed ${e.activeSuccesses} active checks in a row`, now)
      }
      if (e.state === 'healthy' || e.state === 'draining') this.#notePass()
    } else {
      e.upPasses = 0
      e.activeFailures++
      e.activeSuccesses = 0
      if (!e.activeFailed && e.activeFailures >= unhealthy_threshold) {
        e.activeFailed = true
        this.#update(e, 'active_failed', `failed ${e.activeFailures} active checks in a row${cause === null ? '' : `, last: ${cause}`}`, now)
      }
    }
  }

  /**
   * Records the outcome of one forwarded request (passive outlier detection, after Envoy's
   * consecutive-5xx / consecutive-gateway-failure detectors). `consecutive_failures` connect
   * failures (and 5xx, if `count_5xx`) in a row eject the upstream for
   * `min(base_ejection * n, max_ejection)`, n being its ejection count. The count decays by
   * one per full `base_ejection` that passes after an ejection ends without a new one. A
   * success (or a 5xx when not counted: the upstream answered) restarts the run. Reports while
   * ejected are ignored. The ejection is refused (the run continues, so the next failure tries
   * again) when it would exceed `max(1, floor(n * max_ejection_percent / 100))` ejected upstreams
   * out of n; with 0 percent nothing is ever ejected. Below 100 percent, it is refused too when
   * no other upstream is ready (healthy or draining), unless the failure is a refused connection
   * (see #lastReady).
   * `untilPass` (another replica's active checks found it down): the ejection also ends at the
   * next active check that passes here, when this table's active checks run; a `peer` refusal
   * reported without it during such an ejection (another replica's live traffic) keeps it for
   * its time, or as a refusal below when `refused`.
   * Such an ejection ended by a passed check does not count toward the next one's length.
   * `refused`: the ejection is for a refused connection (by default: a `connect_refused` seen
   * here; a `peer`'s when its message says so): when this table's active checks run, it also
   * ends once `healthy_threshold` of them in a row passed after it began (a crashed process
   * restarted: Envoy's `successful_active_health_check_uneject_host`), and it counts toward the
   * next ejection's length as any (a crash loop is ejected for longer each time), its decay from
   * when it ended. Ejections for 5xx, resets and timeouts run their time: a probe that passes
   * (`OPTIONS *` on any answer, a health path the failing pages do not use) does not show that
   * what failed works again.
   * `told`: a `peer`'s reason (see EjectionReason), when its message gives one.
   * `length`: how long the `peer`'s ejection lasts there and its count there, when its message
   * gives them (see ToldLength; an older Tether's does not: the ejection is then timed by this
   * table's own count, as before). Every replica then ends it at the same moment, whatever
   * its own count (a replica started later, or one that missed a `down`, counts fewer): it is
   * ejected for that time (at most max_ejection), not for the time its own count gives, and its
   * count becomes the higher of the two, so an ejection it starts next lasts as long as the
   * sender's would. One refused for max_ejection_percent is counted all the same (as if it ran
   * here until that end) without taking the upstream out.
   * A `peer`'s ejection heard while ejected here changes how this one ends: the one that ends
   * last holds (timed > refused > until a probe passes here; a later told end over an earlier
   * one). Out until a probe passes, it becomes theirs; out for a refusal, another's timed one
   * (5xx, errors, timeouts, an older Tether's) makes it timed; a timed one stays as it is, a
   * refusal told meanwhile too. Its time is its `length`'s end when that is later than this
   * one's (two replicas that ejected it before hearing each other end it alike), else
   * unchanged; its count is taken when higher.
   * Example (3 failures, base 30 s): three `reportPassive('app-0', 'connect_failure')` calls ->
   * ejected 30 s; ejected again right after -> 60 s.
   */
  reportPassive(id: string, result: PassiveResult, untilPass = false, peer = false, refused = !peer && result === 'connect_refused', told: EjectionReason | null = null, length: ToldLength | null = null): void {
    const passive = this.#options.passive
    const e = this.#entries.get(id)
    if (!passive || !e) return
    // a told count past the one whose time reaches max_ejection lengthens nothing: capped there
    // (a buggy or hostile peer's 2^53 would otherwise make every later ejection here, and every
    // replica this one tells, last max_ejection for good, the count decaying one a base_ejection)
    if (length !== null && passive.base_ejection > 0) length = { ms: length.ms, count: Math.min(length.count, Math.ceil(passive.max_ejection / passive.base_ejection)) }
    const failed = result === 'connect_failure' || result === 'connect_refused' || result === 'timeout' || (result === 'server_error' && passive.count_5xx)
    // an answer from an upstream not ejected (nearly every request's report): the run of
    // failures ends, with no clock read (nothing here depends on the time)
    if (!failed && e.ejectedUntil === null) {
      e.passiveFailures = 0
      return
    }
    const now = this.#clock.now()
    this.#expire(e, now)
    if (e.ejectedUntil !== null) {
      // another replica's (or worker's) ejection found on live traffic, heard while out here: the
      // one that ends last holds, so every process that has both ends it alike (only another's:
      // every worker hears it, where this worker's traffic is its own). Its time is not added
      if (peer && !untilPass && result === 'connect_refused') {
        const theirs: EjectionReason = refused ? 'refused' : told ?? 'unknown'
        if (e.untilPass) {
          // found refusing or failing (not only failing probes) while out until a probe passes here
          e.untilPass = false
          e.reason = theirs
          // refused there: an ejection for a refused connection here too, counted (it was real)
          if (refused) {
            e.refused = true
            e.upPasses = 0
            e.before = null
          }
        } else if (e.refused && !refused) {
          // out here for a refusal (passed probes end it), there for 5xx, errors or timeouts
          // (or an older Tether's, which runs every ejection its time): for the time, as there.
          // A probe that passes here does not show that what failed there works again
          e.refused = false
          e.upPasses = 0
          e.reason = theirs
        }
        // out here for 5xx, errors or timeouts: a refusal there changes nothing (the process
        // restarted is no evidence its answers are good again; still refused when the time is
        // up, it fails the probes here, and is ejected at once by the next refused request)
        // Its time: theirs when it ends later (both ejected it before hearing the other: each
        // takes the later end, so they end together), and its count when higher
        if (length !== null) {
          const end = now + Math.min(length.ms, passive.max_ejection)
          if (end > e.ejectedUntil) e.ejectedUntil = end
          e.lastEjectionEnd = Math.max(e.lastEjectionEnd, e.ejectedUntil)
          e.timesEjected = Math.max(e.timesEjected, length.count)
        }
      }
      return
    }
    if (!failed) {
      e.passiveFailures = 0
      return
    }
    e.passiveFailures++
    const enough = result === 'connect_refused' || e.passiveFailures >= passive.consecutive_failures
    // another replica's ejection that tells its length: counted here as there (see `length`)
    const theirs = peer && !untilPass && length !== null ? length : null
    const decay = Math.max(0, Math.floor((now - e.lastEjectionEnd) / passive.base_ejection))
    if (!enough || !this.#mayEject(passive, now) || (result !== 'connect_refused' && this.#lastReady(e, passive))) {
      // refused here (max_ejection_percent): counted all the same, as if it ran here until its end there
      if (enough && theirs !== null) {
        e.timesEjected = Math.max(Math.max(0, e.timesEjected - decay) + 1, theirs.count)
        e.lastEjectionEnd = Math.max(e.lastEjectionEnd, now + Math.min(theirs.ms, passive.max_ejection))
      }
      return
    }
    e.before = { times: e.timesEjected, end: e.lastEjectionEnd }
    e.timesEjected = Math.max(Math.max(0, e.timesEjected - decay) + 1, theirs?.count ?? 0)
    const duration = theirs !== null ? Math.min(theirs.ms, passive.max_ejection) : Math.min(passive.base_ejection * e.timesEjected, passive.max_ejection)
    e.ejectedUntil = now + duration
    e.untilPass = untilPass && this.#activeHere()
    e.refused = !e.untilPass && refused
    e.upPasses = 0
    e.reason = untilPass ? 'probes' : refused ? 'refused' : peer ? told ?? 'unknown' : REASONS[result]
    e.lastEjectionEnd = e.ejectedUntil
    const failures = e.passiveFailures
    e.passiveFailures = 0
    const or = e.untilPass ? ' or until an active check passes here' : e.refused && this.#activeHere() ? ` or until its active checks pass (${this.#options.active.healthy_threshold} in a row)` : ''
    this.#update(e, 'ejected', `ejected for ${duration} ms${or} after ${failures} consecutive failures (ejection ${e.timesEjected})`, now)
  }

  /**
   * Is `id` ejected for a refused connection (see reportPassive's `refused`), an ejection that
   * passed active checks end? False when not ejected (or unknown). Example: `health.ejectedRefusing('app-1')`.
   */
  ejectedRefusing(id: string): boolean {
    const e = this.#entries.get(id)
    if (!e) return false
    this.#expireNow(e)
    return e.ejectedUntil !== null && e.refused
  }

  /**
   * How long the ejection of `id` in force lasts from now and its ejection count, for a `down`
   * that tells it (see ToldLength); null when not ejected (or unknown) or ejected until a probe
   * passes here (another replica's failed probes: no time of its own to tell).
   * Example: `health.toldLength('app-1')` -> `{ ms: 60000, count: 2 }` right after its second ejection.
   */
  toldLength(id: string): ToldLength | null {
    const e = this.#entries.get(id)
    if (!e) return null
    const now = this.#clock.now()
    this.#expire(e, now)
    return e.ejectedUntil === null || e.untilPass ? null : { ms: e.ejectedUntil - now, count: e.timesEjected }
  }

  /**
   * The ejection of `id` in force: why, until when and what ends it (see EjectionView); null when
   * not ejected (or unknown). Example: `health.ejection('app-1')` -> `{ reason: 'refused', until:
   * 1764086430000, ends: 'probes', passesLeft: 2 }`.
   */
  ejection(id: string): EjectionView | null {
    const e = this.#entries.get(id)
    if (!e) return null
    this.#expireNow(e)
    return this.#ejectionView(e)
  }

  #ejectionView(e: Entry): EjectionView | null {
    if (e.ejectedUntil === null) return null
    const passesLeft = e.untilPass ? 1 : e.refused && this.#activeHere() ? Math.max(1, this.#options.active.healthy_threshold - e.upPasses) : null
    return { reason: e.reason ?? 'unknown', until: e.ejectedUntil, ends: passesLeft === null ? 'time' : 'probes', passesLeft }
  }

  /** When draining of `id` started (ms), or null when it is not draining (or unknown). */
  drainingSince(id: string): number | null {
    return this.#entries.get(id)?.drainingSince ?? null
  }

  /** When this table learned of the drain of `id` (see {@link drain}'s `since`), or null. */
  drainKnownSince(id: string): number | null {
    return this.#entries.get(id)?.drainKnownSince ?? null
  }

  /**
   * Stops new sessions to `id`; existing ones continue (until idle, or `drain_timeout`). With
   * `migrate`, they also move at their first request after an idle gap (the router reads
   * {@link drainMigrates}); a drain in progress can be made to migrate, never the reverse.
   * `since`: when the drain began, if before now (a drain another replica or worker made; its
   * `drain_timeout` and `min_idle` then count from the same moment there as here). A drain in
   * force that began later is moved back to it: the drains are one, from the first (a worker
   * that starts learns a terminating pod's drain from the lists, then an admin's recorded one).
   * `by`: an admin's drain (the default: here, or told by another replica or worker) or
   * discovery's (see {@link undrain}).
   * Returns false for an unknown id. Example: `health.drain('app-1', true)`.
   */
  drain(id: string, migrate = false, since?: number, by: 'admin' | 'discovery' = 'admin'): boolean {
    return this.#set(id, 'drain', migrate ? 'draining, users migrate' : 'draining', (e, now) => {
      const began = since !== undefined && Number.isFinite(since) ? Math.min(since, now) : now
      if (e.drainingSince === null) {
        e.drainingSince = began
        e.drainKnownSince = now
      } else if (began < e.drainingSince) e.drainingSince = began // (a starting worker: discovery's drain, then an admin's from before it)
      // an admin's drain joining a migrating one migrates too: its answer said so, and the
      // migration must not stop when discovery's drain ends
      if (by === 'admin') {
        e.adminDrain = true
        e.adminMigrate ||= migrate || e.migrate
      } else {
        if (!e.discoveryDrain || began < (e.discoverySince ?? Infinity)) e.discoverySince = began
        e.discoveryDrain = true
        e.discoveryMigrate ||= migrate
      }
      e.migrate ||= migrate
    })
  }

  /** Is `id` drained by an admin (here or elsewhere), migrating as the admin asked? Null: not by an admin. */
  adminDrain(id: string): { readonly migrate: boolean } | null {
    const e = this.#entries.get(id)
    return e !== undefined && e.drainingSince !== null && e.adminDrain ? { migrate: e.adminMigrate } : null
  }

  /** Does the drain of `id` migrate its users? False when not draining (or unknown). */
  drainMigrates(id: string): boolean {
    const e = this.#entries.get(id)
    return e !== undefined && e.drainingSince !== null && e.migrate
  }

  /**
   * Ends a drain: an admin's undrain ends it whoever drained; discovery's (the address is back,
   * the pod no longer terminating) ends only its own, so an admin's drain goes on (migrating as
   * the admin asked). Returns false for an unknown id.
   */
  undrain(id: string, by: 'admin' | 'discovery' = 'admin'): boolean {
    const e = this.#entries.get(id)
    if (by === 'discovery' && e !== undefined && e.adminDrain) {
      e.discoveryDrain = false
      e.discoverySince = null
      e.discoveryMigrate = false
      e.migrate = e.adminMigrate
      return true
    }
    return this.#set(id, 'undrain', 'drain ended', (e) => {
      e.drainingSince = null
      e.drainKnownSince = null
      e.migrate = false
      e.adminDrain = false
      e.adminMigrate = false
      e.discoveryDrain = false
      e.discoverySince = null
      e.discoveryMigrate = false
    })
  }

  /**
   * Ends an admin's drain of `id` and leaves discovery's as it is now, with its own start and
   * migration (a terminating pod listed meanwhile stays drained; one discovery ended since is not
   * brought back). Returns false for an unknown id. Example: `health.undrainAdmin('web-2')`.
   */
  undrainAdmin(id: string): boolean {
    const e = this.#entries.get(id)
    if (e === undefined) return false
    if (!e.discoveryDrain) return this.undrain(id)
    e.adminDrain = false
    e.adminMigrate = false
    e.migrate = e.discoveryMigrate
    if (e.drainingSince !== null && e.discoverySince !== null) e.drainingSince = e.discoverySince
    return true
  }

  /** Takes `id` out of all traffic (admin). Returns false for an unknown id. */
  disable(id: string): boolean {
    return this.#set(id, 'disable', 'disabled by an admin', (e) => { e.disabled = true })
  }

  /** Undoes disable(); the upstream ramps up again under slow start. Returns false if unknown. */
  enable(id: string): boolean {
    return this.#set(id, 'enable', 'enabled by an admin', (e) => { e.disabled = false })
  }

  /**
   * The slow start factor in (0, 1] to multiply `id`'s weight with: an upstream that became
   * ready at T (added after start-up, or recovered from unhealthy, ejected or disabled) gets
   * `max(0.1, (now - T) / slow_start)` until the window has passed, then 1. This is Envoy's
   * slow start with aggression 1 (linear) and min_weight_percent 10. 1 when slow start is off
   * or the id is unknown. Example (window 60 s): 30 s after recovery -> 0.5; after 3 s -> 0.1.
   */
  slowStartWeight(id: string, at?: number): number {
    const window = this.#options.slow_start
    const e = this.#entries.get(id)
    if (window <= 0 || !e) return 1
    const now = at ?? this.#clock.now() // read only with slow start on: asked for every candidate of a new key
    this.#expire(e, now)
    const elapsed = now - e.readySince
    if (elapsed >= window) return 1
    return Math.max(SLOW_START_MIN, elapsed / window)
  }

  /**
   * The upstream behind `id` is another process now (a reload or discovery gave it another address,
   * or discovery another pod uid, also at the same address; see isReplacement): as
   * one just added, healthy until checked, with what was counted against the old address
   * forgotten (an ejection or a failed active check of a replica that died, the reason it was
   * replaced); ready from now, so users last seen before are rehydrated on it
   * (`reason=restart`) and slow start ramps again. Drains and disables stay (an operator's).
   * Example: app-1's url changes from 10.0.0.5 to 10.0.0.9.
   */
  replaced(id: string): void {
    const e = this.#entries.get(id)
    if (e === undefined) return
    const now = this.#clock.now()
    e.activeFailed = false
    e.activeSuccesses = 0
    e.activeFailures = 0
    e.passiveFailures = 0
    e.ejectedUntil = null
    e.untilPass = false
    e.refused = false
    e.upPasses = 0
    e.reason = null
    e.timesEjected = 0
    e.lastEjectionEnd = -Infinity
    this.#update(e, 'added', 'replaced (a new address or a new pod)', now)
    e.readySince = now
  }

  /**
   * When `id` last became ready after not being ready (added after start-up, recovered from
   * unhealthy, an ejection ended, re-enabled), in ms; -Infinity when it has been ready since
   * start-up or is unknown. Users who have not been seen since are rehydrated on it.
   */
  readySince(id: string, now?: number): number {
    const e = this.#entries.get(id)
    if (!e) return -Infinity
    if (now === undefined) this.#expireNow(e)
    else this.#expire(e, now)
    return e.readySince
  }

  /**
   * This table's view of each upstream for a worker that starts (see {@link copy}): expired
   * ejections are noticed first. Example: `[{ id: 'app-1', ejectedUntil: 1_700_000_060_000, readySince: null, ... }]`.
   */
  copies(): HealthCopy[] {
    this.tick()
    return [...this.#entries.values()].map((e) => ({
      id: e.id,
      activeFailed: e.activeFailed,
      activeSuccesses: e.activeSuccesses,
      activeFailures: e.activeFailures,
      ejectedUntil: e.ejectedUntil,
      ...(e.ejectedUntil !== null && e.untilPass ? { untilPass: true, ...(e.before === null ? {} : { countBefore: e.before.times, endBefore: finiteOrNull(e.before.end) }) } : {}),
      ...(e.ejectedUntil !== null && e.refused ? { refused: true, upPasses: e.upPasses } : {}),
      ...(e.ejectedUntil !== null && e.reason !== null ? { reason: e.reason } : {}),
      timesEjected: e.timesEjected,
      lastEjectionEnd: finiteOrNull(e.lastEjectionEnd),
      readySince: finiteOrNull(e.readySince),
    }))
  }

  /**
   * Take a sibling's view (its {@link copies}) of the upstreams known here, before this table
   * decides anything (a worker that starts): the active check state and counts as they are
   * there (the probe results that follow are the same there and here), an ejection in force
   * until the same moment (an ejection here that ends later stays) and the same ejection count,
   * and when each last became ready, so a replica restarted in place before this worker
   * started is a restart here too and slow start ramps alike. Transitions are emitted as for
   * any change; times later than now count as now. Unknown ids and rows that are not plain
   * data are ignored. Drains are not copied: they are recorded (see SharedHealth).
   */
  copy(rows: readonly HealthCopy[]): void {
    const now = this.#clock.now()
    for (const row of rows) {
      const e = typeof row?.id === 'string' ? this.#entries.get(row.id) : undefined
      if (e === undefined) continue
      this.#expire(e, now)
      const failedBefore = e.activeFailed
      if (typeof row.activeFailed === 'boolean') e.activeFailed = row.activeFailed
      e.activeSuccesses = count(row.activeSuccesses, e.activeSuccesses)
      e.activeFailures = count(row.activeFailures, e.activeFailures)
      e.timesEjected = count(row.timesEjected, e.timesEjected)
      e.lastEjectionEnd = Math.max(e.lastEjectionEnd, time(row.lastEjectionEnd, now))
      // an ejection in force there ends at the same moment here (not capped: it is in the future)
      if (typeof row.ejectedUntil === 'number' && Number.isFinite(row.ejectedUntil) && row.ejectedUntil > now && (e.ejectedUntil === null || row.ejectedUntil > e.ejectedUntil)) {
        e.ejectedUntil = row.ejectedUntil
        e.untilPass = row.untilPass === true && this.#activeHere()
        e.before = e.untilPass && row.countBefore !== undefined ? { times: count(row.countBefore, 0), end: time(row.endBefore, now) } : null
        // for a refused connection, with the passes counted there (it ends at the same check)
        e.refused = !e.untilPass && row.refused === true
        e.upPasses = e.refused ? count(row.upPasses, 0) : 0
        // why (a copy from an older worker: what its flags say)
        e.reason = isReason(row.reason) ? row.reason : e.untilPass ? 'probes' : e.refused ? 'refused' : 'unknown'
        e.lastEjectionEnd = Math.max(e.lastEjectionEnd, row.ejectedUntil)
      }
      const reason: TransitionReason = e.activeFailed !== failedBefore ? (e.activeFailed ? 'active_failed' : 'active_recovered') : 'ejected'
      const detail = e.ejectedUntil === null ? 'as on a sibling worker' : `ejected until ${new Date(e.ejectedUntil).toISOString()}, as on a sibling worker`
      this.#update(e, reason, detail, now)
      e.readySince = time(row.readySince, now)
      // it passed its last check there (as anotherPassing reads it)
      if (e.activeSuccesses > 0 && (e.state === 'healthy' || e.state === 'draining')) this.#notePass()
    }
  }

  /** Plain JSON for the admin API, one row per upstream in the order added. */
  snapshot(): HealthSnapshotEntry[] {
    const now = this.#clock.now()
    this.tick()
    return [...this.#entries.values()].map((e) => ({
      id: e.id,
      state: e.state,
      ready: e.state === 'healthy' || e.state === 'draining',
      acceptsNew: e.state === 'healthy',
      activeFailed: e.activeFailed,
      activeSuccesses: e.activeSuccesses,
      activeFailures: e.activeFailures,
      passiveFailures: e.passiveFailures,
      ejectedUntil: e.ejectedUntil,
      ejection: this.#ejectionView(e),
      timesEjected: e.timesEjected,
      draining: e.drainingSince !== null,
      drainingSince: e.drainingSince,
      migrating: e.drainingSince !== null && e.migrate,
      disabled: e.disabled,
      slowStartWeight: this.slowStartWeight(e.id, now),
    }))
  }

  /**
   * Subscribes to transitions; returns the unsubscribe function.
   * Example: `const off = health.onTransition((e) => log.info(e, 'upstream health')); off()`.
   */
  onTransition(listener: (e: HealthTransition) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /**
   * Has an upstream passed an active check while ready (healthy or draining) since this table
   * was made, here or (a worker that starts) in a sibling's copy? Being added to membership
   * is no evidence: a new upstream starts healthy before any probe. Example: `health.passedAny()`.
   */
  passedAny(): boolean {
    return this.#passed
  }

  /**
   * Calls `listener` once, at the first passed check (see passedAny; never when it already
   * was). Returns the unsubscribe function. Example: `const off = health.onFirstPass(() => ...)`.
   */
  onFirstPass(listener: () => void): () => void {
    if (!this.#passed) this.#passListeners.add(listener)
    return () => { this.#passListeners.delete(listener) }
  }

  #notePass(): void {
    if (this.#passed) return
    this.#passed = true
    const listeners = [...this.#passListeners]
    this.#passListeners.clear()
    for (const listener of listeners) listener()
  }

  #set(id: string, reason: TransitionReason, detail: string, change: (e: Entry, now: number) => void): boolean {
    const e = this.#entries.get(id)
    if (!e) return false
    const now = this.#clock.now()
    this.#expire(e, now)
    change(e, now)
    this.#update(e, reason, detail, now)
    return true
  }

  /** Do active checks run here (or a sibling's, whose results this table applies)? */
  #activeHere(): boolean {
    return this.#options.active.enabled !== false
  }

  /** Would one more ejection stay within max_ejection_percent? Expires others first. */
  #mayEject(passive: PassiveHealthOptions, now: number): boolean {
    if (passive.max_ejection_percent <= 0) return false
    let ejected = 0
    for (const other of this.#entries.values()) {
      this.#expire(other, now)
      if (other.ejectedUntil !== null) ejected++
    }
    const limit = Math.max(1, Math.floor((this.#entries.size * passive.max_ejection_percent) / 100))
    return ejected + 1 <= limit
  }

  /**
   * Is `e` the last upstream that serves (every other one unhealthy, ejected or disabled), under a
   * max_ejection_percent below 100? Then failures that are answers or timeouts do not eject it:
   * its users would get a 503 instead of its answers, most of them fine, as nginx never takes
   * out a lone server. A refused connection still does (see reportPassive). Call after #mayEject
   * (which noticed expired ejections).
   */
  #lastReady(e: Entry, passive: PassiveHealthOptions): boolean {
    if (passive.max_ejection_percent >= 100) return false
    for (const other of this.#entries.values()) if (other !== e && (other.state === 'healthy' || other.state === 'draining')) return false
    return true
  }

  /**
   * {@link #expire} at the clock's time, read only when `e` is ejected (an ejection is the only
   * thing that expires): placement asks ready() of a candidate or two a request, and a clock
   * read each cost ~0.2% of a proxied request's CPU (issue 14's profile).
   */
  #expireNow(e: Entry): void {
    if (e.ejectedUntil !== null) this.#expire(e, this.#clock.now())
  }

  #expire(e: Entry, now: number): void {
    if (e.ejectedUntil === null || e.ejectedUntil > now) return
    const end = e.ejectedUntil
    e.ejectedUntil = null
    e.untilPass = false
    e.refused = false
    e.upPasses = 0
    e.reason = null
    this.#update(e, 'ejection_expired', 'ejection expired', end)
  }

  /** Derives the state from the flags and emits a transition if it changed. */
  #update(e: Entry, reason: TransitionReason, detail: string, at: number): void {
    const to: HealthState = e.disabled ? 'disabled'
      : e.activeFailed ? 'unhealthy'
      : e.ejectedUntil !== null ? 'ejected'
      : e.drainingSince !== null ? 'draining'
      : 'healthy'
    const from = e.state
    if (to === from) return
    const wasReady = from === 'healthy' || from === 'draining'
    const isReady = to === 'healthy' || to === 'draining'
    if (isReady && !wasReady) e.readySince = at
    e.state = to
    this.#emit({ id: e.id, from, to, reason, detail, at })
  }

  #emit(t: HealthTransition): void {
    for (const listener of this.#listeners) listener(t)
  }
}

/** The reason of an ejection this table starts for a failure of its own traffic. */
const REASONS: Readonly<Record<PassiveResult, EjectionReason>> = { success: 'unknown', connect_refused: 'refused', connect_failure: 'error', timeout: 'timeout', server_error: '5xx' }

/** Is `r` (a copied or told field: anything) one of the EjectionReason values? */
export function isReason(r: unknown): r is EjectionReason {
  return r === 'refused' || r === 'error' || r === 'timeout' || r === '5xx' || r === 'probes' || r === 'unknown'
}

/** -Infinity (never) as null, for JSON. */
function finiteOrNull(t: number): number | null {
  return Number.isFinite(t) ? t : null
}

/** A copied time: a number no later than `now`, or -Infinity (null: never; anything else too). */
function time(t: unknown, now: number): number {
  return typeof t === 'number' && Number.isFinite(t) ? Math.min(t, now) : -Infinity
}

/** A copied count: a whole number >= 0, else `fallback`. */
function count(n: unknown, fallback: number): number {
  return Number.isInteger(n) && (n as number) >= 0 ? (n as number) : fallback
}

function positiveInt(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`HealthTable: ${name} must be an integer >= 1, got ${value}`)
}
