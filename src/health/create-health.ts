// Builds upstream health as `health:` describes it: the health table, the active checker (whose
// probe timeouts count double when live traffic agrees), the watch that has an upstream probed
// at once when a request waits on it too long, and health shared with other Tether replicas.
// Layer 5 wiring helper of the composition root: constructs, starts nothing.
import type { Clock, Timers } from '../clock.js'
import type { Config } from '../config/schema.js'
import type { Logger } from '../observability/logger.js'
import type { PeerChannel } from '../peers/peer-channel.js'
import { ActiveChecker } from './active-checker.js'
import type { HealthCopy } from './health-copy.js'
import { HealthTable } from './health-table.js'
import { LongWaitWatch } from './long-wait-watch.js'
import { SharedHealth, type AddressesOf, type GroupRelay } from './shared-health.js'

export interface Health {
  readonly table: HealthTable
  readonly checker: ActiveChecker | null
  /** Suspects an upstream on which a request of this process waits too long (null: active checks off). */
  readonly watch: LongWaitWatch | null
  readonly peers: SharedHealth | null
  /**
   * Apply another worker's probe result as that worker decided it (`severe`: a timeout that
   * marks the upstream unhealthy at once), so every worker's table takes the same step; not
   * told to the other replicas (the worker that probed told them).
   */
  readonly applyProbe: (id: string, ok: boolean, severe: boolean, cause?: string | null) => void
  /** This process's view of each upstream, for a worker that starts (see HealthTable.copies). */
  readonly copies: () => HealthCopy[]
  /**
   * Take a sibling worker's view (this worker starts, see HealthTable.copy): the upstreams it
   * shows down are not told to the others (they know).
   */
  readonly copy: (rows: readonly HealthCopy[]) => void
}

/**
 * `longestWait(id)`: how long the oldest request still waiting on upstream `id`'s answer head
 * has waited (ms). `channel`: where peers talk (`health.shared: redis`, or the other workers),
 * or null. `suspect(id)`: probe `id` now (this process's checker, or the worker running the
 * checks). `probed`: told each result of this process's checker as applied here (for the other
 * workers). `addressesOf(id)`: the id's url and listed addresses in the current set (a peer's
 * `down` about none of them is ignored). `group`: the id this process shares with the workers
 * that apply the same lead's probe results (see SharedHealth), null when it is alone; `relay`:
 * their own channel, when `channel` is Redis (see SharedHealth).
 * Example: `createHealth(config, clock, timers, logger, (id) => inFlight.longestWait(id), null, (id) => checker.probeSoon(id))`.
 */
export function createHealth(
  config: Config, clock: Clock, timers: Timers, logger: Logger, longestWait: (id: string) => number, channel: PeerChannel | null,
  suspect: (id: string) => void,
  probed: ((id: string, ok: boolean, severe: boolean, cause: string | null) => void) | null = null,
  addressesOf: AddressesOf = () => undefined,
  group: string | null = null,
  relay: GroupRelay | null = null,
): Health {
  const h = config.health
  const table = new HealthTable({ active: h.active, passive: h.passive.enabled ? h.passive : null, slow_start: h.slow_start }, clock)
  // a probe timeout is enough on its own when requests are stuck waiting on that upstream (here,
  // or on another worker, whose watch asked for this probe: `suspected`; or a client just gave
  // up waiting on it) and another upstream answers its probes. Decided once, here, where the
  // checks run: the other workers apply the verdict as it is, so no worker's view lags.
  const sink = {
    reportActive: (id: string, ok: boolean, timedOut = false, suspected = false, cause: string | null = null) => {
      const severe = !ok && timedOut && (suspected || longestWait(id) > h.active.timeout) && table.anotherPassing(id)
      table.reportActive(id, ok, severe, cause)
      probed?.(id, ok, severe, cause)
    },
  }
  const checker = h.active.enabled ? new ActiveChecker({ ...h.active, jitter: 0.1 }, sink, { clock, timers }) : null
  const watch = h.active.enabled ? new LongWaitWatch(h.active, { ids: () => table.ids(), longestWait, suspect, timers, now: () => clock.now() }) : null
  const peers = channel !== null ? new SharedHealth(channel, table, logger, addressesOf, group, relay, timers, () => clock.now()) : null
  // another worker's probe result is not news to tell: the lead told the other replicas (once)
  const applyProbe = (id: string, ok: boolean, severe: boolean, cause: string | null = null): void => {
    if (peers === null) return table.reportActive(id, ok, severe, cause)
    peers.quietly(() => table.reportActive(id, ok, severe, cause))
    if (ok) peers.passed(id)
  }
  return {
    table, checker, watch, peers, applyProbe,
    copies: () => table.copies(),
    copy: (rows) => (peers === null ? table.copy(rows) : peers.quietly(() => table.copy(rows))),
  }
}
