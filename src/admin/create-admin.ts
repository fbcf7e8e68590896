// Starts the admin listener on the parts of a running Tether: readiness, the upstream table,
// metrics, drains (told to the other replicas when health is shared), the session lookup.
// Layer 5 wiring helper of the composition root.
import type { Config, RequireUpstream } from '../config/schema.js'
import type { HealthTable } from '../health/health-table.js'
import type { SharedHealth } from '../health/shared-health.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import type { RecentTraffic } from '../observability/recent-traffic.js'
import type { UpstreamSet } from '../upstream/upstream-set.js'
import type { SessionRecords } from '../affinity/session-records.js'
import type { SessionTable, SharedBindings } from '../affinity/session-table.js'
import type { CheckpointStore } from '../state/checkpoint-store.js'
import { ListenError } from '../listen.js'
import { ADMIN_LIMITS, startAdmin, type AdminServer } from './admin-server.js'
import { SessionLookup } from './session-lookup.js'
import { sessionsCounted, upstreamRow } from './upstream-row.js'

export interface AdminParts {
  readonly logger: Logger
  readonly health: HealthTable
  readonly peers: SharedHealth | null
  readonly metrics: Metrics
  /** Recent traffic for the status page. */
  readonly traffic: RecentTraffic
  readonly upstreams: () => UpstreamSet
  readonly inFlight: (id: string) => number
  /** Of those, the requests waiting for a connection to it (see Forwarder.queuedFor). */
  readonly queued?: (id: string) => number
  readonly websockets: (id: string) => number
  readonly sessions: SessionTable
  readonly records: SessionRecords
  /** With workers: tell the others a move an admin ordered here (see SessionLookupParts.ordered). */
  readonly ordered?: (key: string, to: string | null, at: number) => Promise<void> | null
  readonly shared: SharedBindings | null
  readonly store: CheckpointStore | null
  readonly now: () => number
  readonly draining: () => boolean
  /**
   * What the start still waits for (discovery's first list, Redis), null once it has ended:
   * `/readyz` answers 503 `starting: waiting for <it>` until then (the admin port listens
   * before those waits, so `/healthz` answers at once). Absent: started.
   */
  readonly starting?: () => string | null
  readonly degraded: () => string[]
  /**
   * With workers: whether a worker of the group saw a healthy upstream (`known`: before this one
   * started, or another one since), and what tells the others when this one sees its first (`saw`).
   */
  readonly upstreamSeen?: { known(): boolean; saw(): void }
}

/** Where a worker's private admin listener listens (its primary owns `admin.listen`): loopback, port 0, not shared. */
export interface AdminAddress {
  readonly host: string
  readonly port: number
}

const NO_UPSTREAM = 'no healthy upstream'
/** The `/readyz` reason while the start waits for `what`. */
const startingReason = (what: string | null): string[] => (what === null ? [] : [`starting: waiting for ${what}`])
const NO_UPSTREAM_DEGRADED = `${NO_UPSTREAM}: requests get 503 with Retry-After until one is healthy again`

/**
 * What `/readyz` makes of having no healthy upstream (`admin.readiness.require_upstream`):
 * `not ready` before the first healthy upstream since start (a new replica takes no traffic
 * before discovery and checks found the app) and, with `always`, at any time; `degraded` once
 * one was seen (`startup`): this replica is fine, the app is not, and Tether's own 503 with
 * `Retry-After` beats the connection error of a load balancer with no ready replica left.
 * `null` while one is healthy. With active checks (`checks`), an upstream is seen healthy once
 * it passes a probe: a new upstream starts healthy before any, so being listed (static, or by
 * discovery) is no evidence, and a replica whose upstreams are down or misaddressed from the
 * start stays out. Without them, being listed and ready is all there is. The first is noticed
 * as it happens (a passed probe, a health transition) and on each call, so one healthy only
 * between two `/readyz` calls still counts.
 */
function upstreamReadiness(require: RequireUpstream, checks: boolean, p: Pick<AdminParts, 'health' | 'upstreams' | 'upstreamSeen'>): { upstreamMissing(): 'not ready' | 'degraded' | null } {
  const anyReady = (): boolean => p.upstreams().ids.some((id) => p.health.ready(id))
  const evidence = (): boolean => (checks ? p.health.passedAny() : anyReady())
  const told = (): boolean => require === 'startup' && p.upstreamSeen?.known() === true
  let seen = told()
  const see = (): void => {
    seen = true
    off?.()
    p.upstreamSeen?.saw()
  }
  const off = require === 'always' || seen ? null
    : checks ? p.health.onFirstPass(() => { if (!seen) see() })
    : p.health.onTransition((t) => { if (!seen && t.to !== null && p.health.ready(t.id)) see() })
  if (off !== null && evidence()) see()
  return {
    upstreamMissing: () => {
      if (require === 'always') return anyReady() ? null : 'not ready'
      if (!seen && told()) {
        seen = true
        off?.()
      }
      if (!seen && evidence()) see()
      if (!seen) return 'not ready'
      return anyReady() ? null : 'degraded'
    },
  }
}

/** Start the admin listener (on `at` instead of `admin.listen` when given); rejects with a message naming the address when the port is taken. */
export async function createAdmin(config: Config, p: AdminParts, at: AdminAddress | null = null): Promise<AdminServer> {
  const counted = sessionsCounted(config.affinity)
  const { host, port } = at ?? config.admin.listen
  const keyKind = config.affinity.key
  const lookup = keyKind === 'none' ? null : new SessionLookup({
    keyKind, sessions: p.sessions, records: p.records, shared: p.shared, store: p.store, health: p.health, now: p.now, ordered: p.ordered,
    mayTake: (id) => p.upstreams().get(id) !== undefined && p.health.ready(id),
  })
  // a draining upstream's users not moved yet: its pins, or (cookie key, no table) the users it answered lately
  const remaining = (id: string): number | null =>
    keyKind === 'none' || p.health.drainingSince(id) === null ? null : counted ? p.sessions.countByUpstream(id) : p.records.countByUpstream(id)
  const readiness = upstreamReadiness(config.admin.readiness.require_upstream, config.health.active.enabled, p)
  return startAdmin(host, port, {
    token: config.admin.token,
    allowedHosts: config.admin.allowed_hosts,
    logger: p.logger,
    notReady: () => [
      ...(p.draining() ? ['shutting down'] : []),
      ...startingReason(p.starting?.() ?? null),
      ...(readiness.upstreamMissing() === 'not ready' ? [NO_UPSTREAM] : []),
    ],
    upstreams: () => p.health.snapshot().map((e) => upstreamRow(e, {
      url: p.upstreams().get(e.id)?.url ?? null,
      weight: p.upstreams().get(e.id)?.weight ?? null,
      uid: p.upstreams().get(e.id)?.uid,
      addresses: p.upstreams().get(e.id)?.addresses,
      in_flight: p.inFlight(e.id),
      queued: p.queued?.(e.id),
      websockets: p.websockets(e.id),
      sessions: counted ? p.sessions.countByUpstream(e.id) : null,
      sessions_remaining: remaining(e.id),
    })),
    degraded: () => [...p.degraded(), ...(readiness.upstreamMissing() === 'degraded' ? [NO_UPSTREAM_DEGRADED] : [])],
    metrics: () => p.metrics.render(),
    metricsContentType: p.metrics.contentType,
    traffic: (ids) => p.traffic.snapshot(ids),
    now: p.now,
    sessions: lookup,
    // the drain as it is now goes to the other replicas and the record (a plain drain of a
    // migrating upstream still migrates)
    drain: (id, migrate) => p.health.drain(id, migrate) && (p.peers?.tell('drain', id, p.health.adminDrain(id)?.migrate ?? migrate), true),
    undrain: (id) => p.health.undrain(id) && (p.peers?.tell('undrain', id), true),
    drainMigrates: (id) => p.health.drainMigrates(id),
  }, at === null ? undefined : { ...ADMIN_LIMITS, exclusive: true }).catch((err: NodeJS.ErrnoException) => {
    throw new ListenError(host, port, at === null ? 'admin.listen' : null, err)
  })
}
