// Builds upstream health as `health:` describes it: the health table, the active checker (whose
// probe timeouts count double when live traffic agrees) and health shared with other Tether
// replicas. Layer 5 wiring helper of the composition root: constructs, starts nothing.
import type { Clock, Timers } from '../clock.js'
import type { Config } from '../config/schema.js'
import type { Logger } from '../observability/logger.js'
import type { PeerChannel } from '../peers/peer-channel.js'
import { ActiveChecker } from './active-checker.js'
import { HealthTable } from './health-table.js'
import { SharedHealth } from './shared-health.js'

export interface Health {
  readonly table: HealthTable
  readonly checker: ActiveChecker | null
  readonly peers: SharedHealth | null
  /** Apply an active probe's result (from this process's checker, or another worker's). */
  readonly reportActive: (id: string, ok: boolean, timedOut: boolean, suspected: boolean) => void
}

/**
 * `longestWait(id)`: how long the oldest request still waiting on upstream `id`'s answer head
 * has waited (ms). `channel`: where peers talk (`health.shared: redis`, or the other workers),
 * or null. `probed`: told each result of this process's checker (for the other workers).
 */
export function createHealth(
  config: Config, clock: Clock, timers: Timers, logger: Logger, longestWait: (id: string) => number, channel: PeerChannel | null,
  probed: ((id: string, ok: boolean, timedOut: boolean, suspected: boolean) => void) | null = null,
): Health {
  const h = config.health
  const table = new HealthTable({ active: h.active, passive: h.passive.enabled ? h.passive : null, slow_start: h.slow_start }, clock)
  // a probe timeout is enough on its own when requests are stuck waiting on that upstream (or a
  // client just gave up waiting on it) and another upstream answers its probes
  const reportActive = (id: string, ok: boolean, timedOut = false, suspected = false): void =>
    table.reportActive(id, ok, !ok && timedOut && (suspected || longestWait(id) > h.active.timeout) && table.anotherPassing(id))
  const sink = {
    reportActive: (id: string, ok: boolean, timedOut = false, suspected = false) => {
      reportActive(id, ok, timedOut, suspected)
      probed?.(id, ok, timedOut, suspected)
    },
  }
  const checker = h.active.enabled ? new ActiveChecker({ ...h.active, jitter: 0.1 }, sink, { clock, timers }) : null
  const peers = channel !== null ? new SharedHealth(channel, table, logger) : null
  return { table, checker, peers, reportActive }
}
