// Log lines about the Redis nodes, for people: a warn when a node goes down (its address and
// error), then at most one warn per node per interval while it stays down or flaps, and an info
// line when it is up again. Layer 3 observability subscriber: fed the connection's node events,
// it owns no timer and no connection, and takes time from the injected Clock (its monotonic
// time: a wall clock stepped back must neither hold a warn back nor make `down_for_ms` read 0).
import { monotonicNow, type Clock } from '../clock.js'
import type { RedisNodeEvent } from '../redis/connection.js'
import { writesRefusedCause, type WritesRefusedReason } from '../redis/reply-errors.js'
import type { Logger } from './logger.js'

/** Default least time between two warn lines about one node, ms. */
export const REDIS_WARN_INTERVAL_MS = 30_000

interface NodeLog {
  /** When the last warn about this node was written (monotonic ms; -Infinity: never). */
  lastWarnAt: number
  /** When the current down spell began (monotonic ms; null: up). */
  downSince: number | null
  /** Whether the current down spell was announced by a warn (else its recovery is not told either). */
  warned: boolean
  /** Down spells not announced since the last warn (a flapping node). */
  unannounced: number
  /**
   * When the current spell of refused writes began (monotonic ms; null: writes taken), for
   * which reason now, whether it was announced, and per reason when its last warn was.
   */
  refusedSince: number | null
  refusedReason: WritesRefusedReason | null
  refusedWarned: boolean
  readonly refusedWarnAt: Map<WritesRefusedReason, number>
}

/** The warn line of a full node (OOM), unchanged since it was the only reason. */
const FULL_WARN = 'redis node full: it refuses writes (OOM: maxmemory reached under maxmemory-policy noeviction); new checkpoints and shared bindings are not stored, reads (rehydration), renewals and routing unaffected'

/**
 * Turns node events into log lines. Rules, per node: `down` -> warn "redis node down" unless a
 * warn about it was written less than `intervalMs` ago (then it only counts as unannounced);
 * `still_down` -> warn "redis node still down" once `intervalMs` passed since the last warn;
 * `up` -> info "redis node up" the first time, "redis node up again" after an announced down
 * spell; `removed` -> info "redis node left the slot map" for a node it logged before;
 * `writes_refused` -> warn "redis node full" (OOM) or "redis node refuses writes (MISCONF: ...
 * what to do)" (a node that refuses writes is up: its own state, once a spell and again when the
 * reason changes; at most one warn per `intervalMs` per reason while it flaps, also
 * when its reason goes back and forth);
 * `writes_taken` -> info "redis node has room again" (after OOM) or "redis node takes writes
 * again" after an announced spell.
 *
 * Example:
 * ```ts
 * const log = new RedisHealthLog(logger, systemClock)
 * redis.onNode((e) => log.observe(e))
 * // {"level":40,"node":"127.0.0.1:7001","slots":"0-5460","error":"no reply within 50 ms","failed":12,"calls":20,
 * //  "msg":"redis node down: calls for its keys fail (checkpoints, shared affinity), routing unaffected"}
 * ```
 */
export class RedisHealthLog {
  readonly #logger: Logger
  readonly #clock: Clock
  readonly #interval: number
  readonly #nodes = new Map<string, NodeLog>()

  constructor(logger: Logger, clock: Clock, intervalMs = REDIS_WARN_INTERVAL_MS) {
    this.#logger = logger
    this.#clock = clock
    this.#interval = intervalMs
  }

  observe(event: RedisNodeEvent): void {
    const now = monotonicNow(this.#clock)
    const n = event.node
    let state = this.#nodes.get(n.address)
    if (event.kind === 'removed') {
      if (state === undefined) return
      this.#nodes.delete(n.address)
      this.#logger.info({ node: n.address, role: n.role }, 'redis node left the slot map (its slots moved to another node)')
      return
    }
    const first = state === undefined
    if (state === undefined) {
      state = { lastWarnAt: -Infinity, downSince: null, warned: false, unannounced: 0, refusedSince: null, refusedReason: null, refusedWarned: false, refusedWarnAt: new Map() }
      this.#nodes.set(n.address, state)
    }
    const fields = { node: n.address, role: n.role, slots: n.slots, error: n.lastError, failed: n.failed, calls: n.calls }
    switch (event.kind) {
      case 'up': {
        const downFor = state.downSince === null ? null : Math.max(0, now - state.downSince)
        const told = state.warned
        state.downSince = null
        state.warned = false
        if (first) this.#logger.info({ node: n.address, role: n.role, slots: n.slots }, 'redis node up')
        else if (told) this.#logger.info({ node: n.address, role: n.role, slots: n.slots, down_for_ms: downFor }, 'redis node up again')
        return
      }
      case 'down':
        state.downSince = now
        state.warned = false
        if (now - state.lastWarnAt < this.#interval) {
          state.unannounced++
          return
        }
        this.#warn(state, now, fields, 'redis node down: calls for its keys fail (checkpoints, shared affinity), routing unaffected')
        return
      case 'still_down':
        if (state.downSince === null) state.downSince = now
        if (now - state.lastWarnAt < this.#interval) return
        this.#warn(state, now, { ...fields, down_for_ms: now - state.downSince }, 'redis node still down')
        return
      case 'writes_refused': {
        const reason = n.writesRefused ?? 'oom'
        // (a new reason within a spell is news; the spell goes on)
        if (state.refusedSince === null) {
          state.refusedSince = now
          state.refusedWarned = false
        }
        state.refusedReason = reason
        // (per reason: a node whose reason goes back and forth warns at most once per reason per interval)
        if (now - (state.refusedWarnAt.get(reason) ?? -Infinity) < this.#interval) return
        state.refusedWarned = true
        state.refusedWarnAt.set(reason, now)
        // (the reply of this reason's refusal: the node's last call error may be another reason's,
        // an OOM next to reason misconf while it is full and MISCONF at once)
        const error = n.writesRefusedError ?? n.lastError
        const msg = reason === 'oom' ? FULL_WARN
          : `redis node refuses writes (${writesRefusedCause(reason, error)}); checkpoints and shared bindings are neither stored nor renewed (what active users hold expires after affinity.idle_timeout), reads (rehydration) and routing unaffected`
        this.#logger.warn({ node: n.address, role: n.role, slots: n.slots, reason, error }, msg)
        return
      }
      case 'writes_taken': {
        const refusedFor = state.refusedSince === null ? null : Math.max(0, now - state.refusedSince)
        const told = state.refusedWarned
        const reason = state.refusedReason
        state.refusedSince = null
        state.refusedReason = null
        state.refusedWarned = false
        if (!told) return
        const fields = { node: n.address, role: n.role, slots: n.slots, reason, refused_for_ms: refusedFor }
        if (reason === 'oom') this.#logger.info({ ...fields, full_for_ms: refusedFor }, 'redis node has room again: writes are taken')
        else this.#logger.info(fields, `redis node takes writes again (${reason === null ? 'its refusal' : reason.toUpperCase()} ended): checkpoints and shared bindings are stored again`)
        return
      }
    }
  }

  #warn(state: NodeLog, now: number, fields: Record<string, unknown>, msg: string): void {
    this.#logger.warn(state.unannounced > 0 ? { ...fields, unannounced_down_spells: state.unannounced } : fields, msg)
    state.lastWarnAt = now
    state.warned = true
    state.unannounced = 0
  }
}
