// One membership snapshot: the upstreams as every part reads them (placement, pools, health,
// probes, upgrades, the admin API). Layer 0/1: a frozen value built once per change, pure.
import type { UpstreamConfig, UpstreamTlsConfig } from '../config/schema.js'

/** An upstream as configured or discovered, plus what is derived from it once. */
export interface Upstream extends UpstreamConfig {
  /** host[:port] of its URL (the Host sent with `preserve_host: false`). */
  readonly host: string
  /** TLS settings of an https:// upstream; null for http://. */
  readonly tls: UpstreamTlsConfig | null
}

/**
 * An upstream as a discovery source reports it: the configured shape, plus `draining` for one
 * that still serves its users but takes no new ones (a Kubernetes pod that is terminating).
 * Example: `{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, draining: true }`.
 */
export interface DiscoveredUpstream extends UpstreamConfig {
  readonly draining?: boolean
}

/** The current upstreams, sorted by id. Example: `set.get('app-0')?.url` -> 'http://10.0.0.5:8080'. */
export interface UpstreamSet {
  readonly list: readonly Upstream[]
  readonly ids: readonly string[]
  get(id: string): Upstream | undefined
}

/** Freeze `upstreams` (any order) into a snapshot sorted by id. */
export function upstreamSet(upstreams: readonly UpstreamConfig[]): UpstreamSet {
  const list = Object.freeze(
    [...upstreams]
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map((u) => Object.freeze({ id: u.id, url: u.url, weight: u.weight, host: new URL(u.url).host, tls: u.tls ?? null })),
  )
  const byId = new Map(list.map((u) => [u.id, u]))
  return Object.freeze({ list, ids: Object.freeze(list.map((u) => u.id)), get: (id: string) => byId.get(id) })
}

/** The empty snapshot. */
export const NO_UPSTREAMS: UpstreamSet = upstreamSet([])
