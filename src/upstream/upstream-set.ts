// One membership snapshot: the upstreams as every part reads them (placement, pools, health,
// probes, upgrades, the admin API). Layer 0/1: a frozen value built once per change, pure.
import type { UpstreamConfig, UpstreamTlsConfig } from '../config/schema.js'

/** An upstream as configured or discovered, plus what is derived from it once. */
export interface Upstream extends UpstreamConfig {
  /** host[:port] of its URL (the Host sent with `preserve_host: false`). */
  readonly host: string
  /** TLS settings of an https:// upstream; null for http://. */
  readonly tls: UpstreamTlsConfig | null
  /**
   * Every address listed for its id now, as urls, `url` among them: one pod's addresses (a
   * dual-stack pod's IPv4 and IPv6, an SRV target's several records); `[url]` for a configured
   * upstream or one listed at one address. Not its identity: only a change of `url` is a
   * replacement (another process), a change of this list is not.
   */
  readonly addresses: readonly string[]
}

/**
 * An upstream as a discovery source reports it: the configured shape, plus `draining` for one
 * that still serves its users but takes no new ones (a Kubernetes pod that is terminating),
 * and `addresses` when its id is listed at more than one address (sorted; `url`, the one kept,
 * among them). Example: `{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, draining: true }`;
 * `{ id: 'web-1', url: 'http://[fd00::6]:8080', weight: 1, addresses: ['http://10.0.0.6:8080', 'http://[fd00::6]:8080'] }`.
 */
export interface DiscoveredUpstream extends ListedUpstream {
  readonly draining?: boolean
}

/** An upstream as configured, or discovered with `addresses` (absent: `url` alone). */
export interface ListedUpstream extends UpstreamConfig {
  readonly addresses?: readonly string[]
}

/** The current upstreams, sorted by id. Example: `set.get('app-0')?.url` -> 'http://10.0.0.5:8080'. */
export interface UpstreamSet {
  readonly list: readonly Upstream[]
  readonly ids: readonly string[]
  get(id: string): Upstream | undefined
}

/** Freeze `upstreams` (any order) into a snapshot sorted by id. */
export function upstreamSet(upstreams: readonly ListedUpstream[]): UpstreamSet {
  const list = Object.freeze(
    [...upstreams]
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map((u) => Object.freeze({ id: u.id, url: u.url, weight: u.weight, host: new URL(u.url).host, tls: u.tls ?? null, addresses: Object.freeze(u.addresses ?? [u.url]) })),
  )
  const byId = new Map(list.map((u) => [u.id, u]))
  return Object.freeze({ list, ids: Object.freeze(list.map((u) => u.id)), get: (id: string) => byId.get(id) })
}

/** The empty snapshot. */
export const NO_UPSTREAMS: UpstreamSet = upstreamSet([])
