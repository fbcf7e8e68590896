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
   * upstream or one listed at one address. Not its identity: only a change of `uid`, or of `url`
   * without a uid on both sides, is a replacement (another process; see isReplacement), a
   * change of this list is not.
   */
  readonly addresses: readonly string[]
  /**
   * The pod's uid when discovery names one (an EndpointSlice endpoint's `targetRef.uid`):
   * a pod re-created with the same name, even at the same address, has another one. Absent for
   * configured upstreams, DNS and endpoints without a targetRef.
   */
  readonly uid?: string
  /** DNS SRV discovery: a family of its addresses kept while DNS answers it empty (see KeptEmptyFamily). */
  readonly keptEmpty?: KeptEmptyFamily
  /** DNS SRV discovery: the other family, when both are kept at once (see KeptEmptyFamily). */
  readonly keptEmptyAlso?: KeptEmptyFamily
}

/**
 * An SRV target's address family (4: A, 6: AAAA) that answers empty while DNS discovery keeps
 * its last addresses (its empty-family grace, `affinity.drain_timeout`), and since when, in ms
 * since the epoch (wall time: the list travels to the other workers, and a new lead goes on
 * counting from it), and `base`, the other family's addresses when it began to be kept (it is
 * the same pod while they are all still listed: a new lead judges that as its predecessor did).
 * Example: `{ family: 6, since: 1796292000000, base: ['10.0.0.5'] }`.
 */
export interface KeptEmptyFamily {
  readonly family: 4 | 6
  readonly since: number
  /** Absent from an older Tether's lead (then the other family's addresses in the set in use count). */
  readonly base?: readonly string[]
}

/**
 * Both families can be kept at once: one kept whose query then fails keeps its addresses, and
 * the other answering empty meanwhile is kept on them (they are what the pod had). Then
 * `keptEmpty` is the one kept first (what an older Tether, which reads that field only, goes
 * on with) and `keptEmptyAlso` the other. Example: `keptFamilies({ keptEmpty: { family: 6, since: 1 },
 * keptEmptyAlso: { family: 4, since: 2 } })` -> both, in that order; `keptFamilies({})` -> [].
 */
export function keptFamilies(u: { readonly keptEmpty?: KeptEmptyFamily | undefined; readonly keptEmptyAlso?: KeptEmptyFamily | undefined }): KeptEmptyFamily[] {
  return [u.keptEmpty, u.keptEmptyAlso].filter((k): k is KeptEmptyFamily => k !== undefined)
}

/** `{ keptEmpty, keptEmptyAlso }` of an upstream as given, the absent ones left out (to spread into a copy). */
export function keptFields(u: { readonly keptEmpty?: KeptEmptyFamily | undefined; readonly keptEmptyAlso?: KeptEmptyFamily | undefined }): { keptEmpty?: KeptEmptyFamily; keptEmptyAlso?: KeptEmptyFamily } {
  return { ...(u.keptEmpty === undefined ? {} : { keptEmpty: u.keptEmpty }), ...(u.keptEmptyAlso === undefined ? {} : { keptEmptyAlso: u.keptEmptyAlso }) }
}

/**
 * An upstream as a discovery source reports it: the configured shape, plus `draining` for one
 * that still serves its users but takes no new ones (a Kubernetes pod that is terminating),
 * and `addresses` when its id is listed at more than one address (sorted; `url`, the one kept,
 * among them), and `uid`, its pod's uid when known. Example: `{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, draining: true, uid: '5f1c…' }`;
 * `{ id: 'web-1', url: 'http://[fd00::6]:8080', weight: 1, addresses: ['http://10.0.0.6:8080', 'http://[fd00::6]:8080'] }`.
 */
export interface DiscoveredUpstream extends ListedUpstream {
  readonly draining?: boolean
  /**
   * Listed but neither serving nor draining (a Kubernetes endpoint not ready, e.g. a pod
   * re-created under its name that has not started yet): not an upstream, no users; its `uid`
   * and addresses tell membership the pod it knew under that id, or at that address, is gone.
   */
  readonly unready?: boolean
  /**
   * Since when it drains elsewhere (ms since the epoch), if before now: the other workers' drain
   * of a terminating pod, given to a worker that starts (see Membership.setDiscovered).
   */
  readonly drainingSince?: number
}

/** An upstream as configured, or discovered with `addresses` (absent: `url` alone) and its pod's `uid`. */
export interface ListedUpstream extends UpstreamConfig {
  readonly addresses?: readonly string[]
  readonly uid?: string
  readonly keptEmpty?: KeptEmptyFamily
  readonly keptEmptyAlso?: KeptEmptyFamily
}

/**
 * True when `after` is another process than `before` under the same id. With a pod uid on both
 * sides the uids decide, whatever the urls: another uid is another pod (also one re-created with
 * its name at the same address), the same uid is the same pod (a pod's addresses never change:
 * its url moved to another of its addresses, as while a dual-stack pod being deleted is still
 * listed in one family's slice only). Else another url is another process. A uid that appears
 * or disappears (an API server that starts or stops sending it, an endpoint without targetRef)
 * is not a replacement by itself. Example: `isReplacement({ url: 'http://10.0.0.5:80', uid: 'a' },
 * { url: 'http://10.0.0.5:80', uid: 'b' })` -> true; `({ url: 'http://10.0.0.5:80', uid: 'a' },
 * { url: 'http://[fd00::5]:80', uid: 'a' })` -> false; with `uid` absent on either side: the urls decide.
 */
export function isReplacement(before: { readonly url: string; readonly uid?: string | undefined }, after: { readonly url: string; readonly uid?: string | undefined }): boolean {
  return before.uid !== undefined && after.uid !== undefined ? before.uid !== after.uid : before.url !== after.url
}

/**
 * What pods listed not ready (`unready`) say about known upstreams: a predicate, true for one
 * whose pod is gone. That is one whose id is listed not ready under another pod uid (a
 * StatefulSet pod re-created under its name, not started yet), or whose url is among the
 * addresses of another id listed not ready (a freed pod IP handed out again: the address is in
 * that pod's network namespace already). Its own id listed not ready under its own uid (or
 * without one) is a pod that merely stopped being ready: not gone. Example: with unready
 * `[{ id: 'web-0', url: 'http://10.0.0.5:80', uid: 'b' }]`, `{ id: 'web-0', url: 'http://10.0.0.5:80', uid: 'a' }`
 * -> true; with uid 'b', or none -> false.
 */
export function goneByUnready(unready: readonly DiscoveredUpstream[]): (upstream: ListedUpstream) => boolean {
  const at = new Map<string, string[]>()
  for (const u of unready) for (const address of u.addresses ?? [u.url]) at.set(address, [...(at.get(address) ?? []), u.id])
  const uids = new Map(unready.flatMap((u) => (u.uid === undefined ? [] : [[u.id, u.uid] as const])))
  return (upstream) => (at.get(upstream.url) ?? []).some((id) => id !== upstream.id) ||
    (upstream.uid !== undefined && uids.has(upstream.id) && uids.get(upstream.id) !== upstream.uid)
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
      .map((u) => Object.freeze({ id: u.id, url: u.url, weight: u.weight, host: new URL(u.url).host, tls: u.tls ?? null, addresses: Object.freeze(u.addresses ?? [u.url]), ...(u.uid === undefined ? {} : { uid: u.uid }), ...(u.max_connections == null ? {} : { max_connections: u.max_connections }), ...keptFields(u) })),
  )
  const byId = new Map(list.map((u) => [u.id, u]))
  return Object.freeze({ list, ids: Object.freeze(list.map((u) => u.id)), get: (id: string) => byId.get(id) })
}

/**
 * True when `after` differs from `before` only in what DNS discovery keeps of empty families
 * (`keptEmpty`, `keptEmptyAlso`): the same ids, urls, weights, addresses, uids, TLS and bounds. Nothing
 * that routes, checks or pools reads those (they travel to a new discovery lead), so such a set
 * is published without a rebuild. Example: `[web-0 at 10.0.0.5]` -> `[web-0 at 10.0.0.5, keptEmpty
 * { family: 6, since }]` -> true; the same sets -> false (no difference at all).
 */
export function onlyKeptChanged(before: UpstreamSet, after: UpstreamSet): boolean {
  if (before.list.length !== after.list.length) return false
  let kept = false
  for (const [i, a] of before.list.entries()) {
    const b = after.list[i]!
    if (a.id !== b.id || a.url !== b.url || a.weight !== b.weight || a.uid !== b.uid || a.tls !== b.tls || a.max_connections !== b.max_connections ||
      a.addresses.length !== b.addresses.length || a.addresses.some((x, j) => x !== b.addresses[j])) return false
    if (JSON.stringify(keptFamilies(a)) !== JSON.stringify(keptFamilies(b))) kept = true
  }
  return kept
}

/** The empty snapshot. */
export const NO_UPSTREAMS: UpstreamSet = upstreamSet([])
