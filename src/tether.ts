// What a running Tether is and how it is started: the types of the composition root's API.
// Layer 5 vocabulary: types only.
import type { Config } from './config/schema.js'
import type { ConfigError } from './config/index.js'
import type { ReloadResult } from './config/reload.js'
import type { Clock, Timers } from './clock.js'
import type { Logger } from './observability/logger.js'
import type { Metrics } from './observability/metrics.js'
import type { Router } from './routing/router.js'
import type { SessionTable } from './affinity/session-table.js'
import type { HealthTable } from './health/health-table.js'
import type { Listener } from './proxy/listener.js'
import type { Upgrades } from './proxy/upgrade-transport.js'
import type { WorkerLink } from './workers/worker-link.js'
import type { InFlight } from './proxy/in-flight.js'
import type { Forwarder } from './proxy/forward.js'

export interface TetherOptions {
  /** Logger to use; default: pino on stdout at config/LOG_LEVEL level. */
  readonly logger?: Logger
  /** Environment for LOG_LEVEL; default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>
  /** Time source for affinity expiry, health and retries; default the system clock (tests inject a fake one). */
  readonly clock?: Clock
  /** Timers for background work; default the global ones (unref'd). */
  readonly timers?: Timers
  /** The config file: watched for changes (hot reload) and re-read by `reloadFile()`. */
  readonly configPath?: string
  /** The text `configPath` held when the config was read: an edit made before the watch starts is then applied. */
  readonly configText?: string
  /**
   * This process is one of several workers (`workers` > 1): bindings, shared health and the
   * memory checkpoint store go through `link` to the primary, the active checks run only while
   * the link says so, and the admin listener listens privately on loopback (the primary owns
   * `admin.listen`).
   */
  readonly worker?: WorkerLink
}

/** A running Tether: its addresses, its parts (for tests and tools), reload and stop. */
export interface Tether {
  /** The running config (a reload replaces what it applied). */
  readonly config: Config
  readonly url: string
  readonly port: number
  /** http://host:port of the `listen.redirect` listener, or null without one. */
  readonly redirectUrl: string | null
  readonly adminUrl: string
  readonly logger: Logger
  readonly router: Router
  readonly sessions: SessionTable
  readonly health: HealthTable
  readonly metrics: Metrics
  readonly listener: Listener
  readonly upgrades: Upgrades
  /** The HTTP transport: its upstreams' queues and undici pools (see Forwarder.poolStats). */
  readonly forwarder: Forwarder
  /** Requests in progress per upstream (what `affinity.spill` reads). */
  readonly inFlight: InFlight
  /** Apply a new validated config (hot reload); says what was applied and what needs a restart. */
  reload(next: Config): ReloadResult
  /** Re-read `configPath` (SIGHUP, file change): a valid file is applied, an invalid one rejected with located errors. */
  reloadFile(): ReloadResult | ConfigError
  /** Graceful stop: readiness false, stop accepting, in-flight requests finish (Connection: close), the rest is cut after `graceMs`. */
  close(graceMs?: number): Promise<void>
}
