// The discovery sources configured in proxy.yaml (DNS, Kubernetes), built and run as one for
// the composition root: each feeds Membership as its own source, logs its problems, counts
// them in metrics and says when it keeps a stale set (for /readyz `degraded`). Layer 3 glue:
// it decides nothing about upstreams (membership does) and starts nothing by itself.
import { systemClock, type Clock, type Timers } from '../clock.js'
import type { DiscoveryConfig } from '../config/schema.js'
import { listedIds, type Logger } from '../observability/logger.js'
import type { DiscoveryStatus, Metrics } from '../observability/metrics.js'
import { ProblemLog, withoutNumbers } from '../observability/problem-log.js'
import { DnsDiscovery, type DnsDiscoveryError } from './dns-discovery.js'
import { KubernetesDiscovery, type KubernetesDiscoveryError, type KubernetesProblemArea } from './kubernetes-discovery.js'
import type { Membership } from './membership.js'

/** The info line when a Kubernetes discovery problem of an area is over. */
const KUBERNETES_RECOVERED: Readonly<Record<KubernetesProblemArea, string>> = {
  EndpointSlices: 'Kubernetes discovery: the API server answers again',
  Service: 'Kubernetes discovery: the API server answers again',
  endpoints: 'Kubernetes discovery: the Service has serving endpoints again',
  weights: 'Kubernetes discovery: the weight annotation is valid again',
}

/**
 * When two reports of one area are the same problem for the log: the same code and status,
 * and the same message but for its numbers (which count or date things that change while the
 * problem lasts: "410 Gone 5 times in a row", "keeping the last 3 upstreams", versions).
 */
function sameProblem(err: KubernetesDiscoveryError): string {
  return `${err.code} ${err.status ?? ''} ${withoutNumbers(err.message)}`
}

export interface DiscoveryDeps {
  /**
   * `current()`: the set in use, whose urls discovery keeps while still listed (with those of
   * upstreams still draining after they left a list, and with workers those a new lead's
   * predecessor reported): Kubernetes discovery's, as it takes an id DNS lists too (see below).
   * DNS discovery takes `listedBy('dns')` instead: its own part of that set, so a static or
   * Kubernetes upstream with an SRV target's id lends it nothing.
   */
  readonly membership: Pick<Membership, 'setDiscovered'> & Partial<Pick<Membership, 'current' | 'listedBy'>>
  readonly logger: Logger
  readonly metrics: Pick<Metrics, 'discoveryError' | 'setDiscoveryStatus'>
  /** For KUBERNETES_SERVICE_HOST/PORT. */
  readonly env: Readonly<Record<string, string | undefined>>
  readonly timers: Timers
  /**
   * `affinity.drain_timeout`: how long an SRV target's family answering empty keeps its last
   * addresses while its other family still lists every address it had (`DnsDiscoveryOptions.emptyFamilyGrace`).
   */
  readonly drainTimeout: number
  /** For the log's pacing of lasting problems and Kubernetes discovery's; default the system clock. */
  readonly clock?: Clock
  /** The service account mount (tests); default the standard one. */
  readonly serviceAccountDir?: string
}

/** The running discovery sources. */
export interface Discovery {
  /** Starts every source; resolves once each has made its first attempt (never rejects for network reasons). */
  start(): Promise<void>
  /** Stops every source; resolves when their loops ended. */
  stop(): Promise<void>
  /** What is degraded now, one sentence per problem; [] when every source's last answer was good. */
  degraded(): string[]
  /** Per source, whether its last answer was good (for `tether_discovery_up`). */
  statuses(): DiscoveryStatus[]
}

/**
 * Builds the sources of `config` (none, DNS, Kubernetes, or both). Throws
 * KubernetesCredentialsError when Kubernetes discovery has no usable credentials, before
 * anything starts. Registers `tether_discovery_up` with `metrics`.
 * Example:
 *   const discovery = createDiscovery(config.discovery, { membership, logger, metrics, env, timers, drainTimeout: config.affinity.drain_timeout })
 *   await discovery.start(); ...; await discovery.stop()
 */
export function createDiscovery(config: DiscoveryConfig, deps: DiscoveryDeps): Discovery {
  const { membership, logger, metrics, timers } = deps
  const clock = deps.clock ?? systemClock
  const problems = new ProblemLog(logger, clock)
  const d = config.dns
  let dnsError: DnsDiscoveryError | null = null
  const dns = d === null ? null : new DnsDiscovery({ ...d, servers: d.servers.length > 0 ? d.servers : undefined, emptyFamilyGrace: deps.drainTimeout }, {
    onChange: (found) => membership.setDiscovered(found, 'dns'),
    // counted each time; logged as one problem while it lasts (as Kubernetes discovery's below)
    onError: (err, failures) => {
      dnsError = err
      metrics.discoveryError('dns')
      problems.report('dns', `${err.partial === true ? 'partial ' : ''}${err.code} ${withoutNumbers(err.message)}`, { err: err.message, code: err.code, failures }, err.partial
        ? 'DNS discovery failed in part; using the answers that came, the failed queries keep their last known addresses'
        : 'DNS discovery failed; keeping the last known upstreams')
    },
    onRecover: () => void problems.resolve('dns', {}, 'DNS discovery: resolving again'),
    // a family kept, or let go, by the empty-family grace: no error, but the url may point at an address DNS no longer lists
    onNote: (message) => logger.info({ name: d.name, note: message }, 'DNS discovery: an empty family of an SRV target'),
    // its own upstreams only: an id is unique within a source, not across sources (static wins)
    previous: () => membership.listedBy?.('dns') ?? [],
  }, timers, clock)
  const k = config.kubernetes
  const kubernetes = k === null ? null : new KubernetesDiscovery(k, {
    onChange: (found) => {
      membership.setDiscovered(found, 'kubernetes')
      logger.info({ upstreams: listedIds(found.map((u) => (u.draining === true ? `${u.id} (draining)` : u.unready === true ? `${u.id} (not ready)` : u.id))), count: found.length }, 'Kubernetes discovery: endpoints changed')
    },
    // every report is counted, but a problem that lasts (an API server down, a crash-looping
    // Deployment whose slices keep changing with no pod ready) is logged when it starts or
    // changes, then every 30 s at most with a count, and its end once (ProblemLog)
    onError: (err, failures) => {
      metrics.discoveryError('kubernetes')
      problems.report(`kubernetes ${err.area}`, sameProblem(err), { err: err.message, code: err.code, status: err.status, failures }, 'Kubernetes discovery: keeping the last known upstreams')
    },
    onRecover: (area) => void problems.resolve(`kubernetes ${area}`, { area }, KUBERNETES_RECOVERED[area]),
    // the whole set in use, not listedBy('kubernetes'): Kubernetes takes an id DNS lists too
    // (Membership's precedence), so it keeps the url DNS gave it when that address is listed for
    // the pod (else the id moved at once, and again never back); it takes only that url, and a
    // uid only Kubernetes sets, so unlike DNS (which keeps addresses and families) it borrows nothing else
    previous: () => membership.current?.().list ?? [],
  }, { env: deps.env, timers, clock, ...(deps.serviceAccountDir === undefined ? {} : { serviceAccountDir: deps.serviceAccountDir }) })
  const statuses = (): DiscoveryStatus[] => [
    ...(dns === null ? [] : [{ source: 'dns', up: dns.failures === 0 }]),
    ...(kubernetes === null ? [] : [{ source: 'kubernetes', up: kubernetes.status().length === 0 }]),
  ]
  metrics.setDiscoveryStatus(statuses)
  return {
    async start() {
      if (kubernetes !== null) logger.info({ service: kubernetes.target, credentials: kubernetes.source }, 'Kubernetes discovery: watching EndpointSlices')
      await Promise.all([dns?.start(), kubernetes?.start()])
    },
    async stop() {
      await Promise.all([dns?.stop(), kubernetes?.stop()])
    },
    degraded() {
      const out = kubernetes?.status() ?? []
      const n = dns?.failures ?? 0
      if (dns !== null && n > 0) {
        out.unshift(dnsError?.partial === true
          ? `${dnsError.message} (${n} failed or partly failed resolution${n === 1 ? '' : 's'} in a row)`
          : `DNS discovery of ${dns.name}: ${n} failed or empty resolution${n === 1 ? '' : 's'} in a row; keeping the last ${dns.current().length} upstreams`)
      }
      return out
    },
    statuses,
  }
}
