// Starts the admin listener on the parts of a running Tether: readiness, the upstream table,
// metrics, drains (told to the other replicas when health is shared). Layer 5 wiring helper of
// the composition root.
import type { Config } from '../config/schema.js'
import type { HealthTable } from '../health/health-table.js'
import type { SharedHealth } from '../health/shared-health.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import type { UpstreamSet } from '../upstream/upstream-set.js'
import { startAdmin, type AdminServer } from './admin-server.js'
import { sessionsCounted, upstreamRow } from './upstream-row.js'

export interface AdminParts {
  readonly logger: Logger
  readonly health: HealthTable
  readonly peers: SharedHealth | null
  readonly metrics: Metrics
  readonly upstreams: () => UpstreamSet
  readonly inFlight: (id: string) => number
  readonly websockets: (id: string) => number
  readonly sessions: (id: string) => number
  readonly draining: () => boolean
  readonly degraded: () => string[]
}

/** Start the admin listener; rejects with a message naming the address when the port is taken. */
export async function createAdmin(config: Config, p: AdminParts): Promise<AdminServer> {
  const counted = sessionsCounted(config.affinity)
  const { host, port } = config.admin.listen
  return startAdmin(host, port, {
    token: config.admin.token,
    logger: p.logger,
    notReady: () => [
      ...(p.draining() ? ['shutting down'] : []),
      ...(p.upstreams().ids.some((id) => p.health.ready(id)) ? [] : ['no healthy upstream']),
    ],
    upstreams: () => p.health.snapshot().map((e) => upstreamRow(e, {
      url: p.upstreams().get(e.id)?.url ?? null,
      weight: p.upstreams().get(e.id)?.weight ?? null,
      in_flight: p.inFlight(e.id),
      websockets: p.websockets(e.id),
      sessions: counted ? p.sessions(e.id) : null,
    })),
    degraded: p.degraded,
    metrics: () => p.metrics.render(),
    metricsContentType: p.metrics.contentType,
    drain: (id) => p.health.drain(id) && (p.peers?.tell('drain', id), true),
    undrain: (id) => p.health.undrain(id) && (p.peers?.tell('undrain', id), true),
  }).catch((err: NodeJS.ErrnoException) => {
    throw Object.assign(new Error(`cannot listen on ${host}:${port} (admin): ${err.code ?? err.message}`), { code: err.code })
  })
}
