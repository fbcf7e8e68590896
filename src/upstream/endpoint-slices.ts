// From Kubernetes EndpointSlices to upstreams: which pods take new users, which drain, their
// ids (pod names) and weights. Layer 1, pure: reads already-parsed JSON defensively (a field
// of the wrong type is treated as absent), no I/O, no clock. The watch loop and the API client
// live in kubernetes-discovery.ts and kubernetes-api.ts.
import type { DiscoveredUpstream } from './upstream-set.js'
import { keptUrl, listedAddresses, nameId, sameAddresses, upstreamId, upstreamUrl } from './address.js'

/**
 * The part of a `discovery.k8s.io/v1` EndpointSlice that discovery reads (the API's own field
 * names). Example: `{ metadata: { name: 'web-x7k2p' }, addressType: 'IPv4', endpoints: [{
 * addresses: ['10.0.0.5'], conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'web-0' } }],
 * ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] }`.
 */
export interface EndpointSlice {
  readonly metadata?: { readonly name?: string; readonly resourceVersion?: string }
  readonly addressType?: string
  readonly endpoints?: readonly Endpoint[] | null
  readonly ports?: readonly EndpointPort[] | null
}

export interface Endpoint {
  readonly addresses?: readonly string[]
  readonly conditions?: { readonly ready?: boolean | null; readonly serving?: boolean | null; readonly terminating?: boolean | null }
  readonly targetRef?: { readonly kind?: string; readonly name?: string; readonly uid?: string } | null
}

export interface EndpointPort {
  readonly name?: string | null
  readonly port?: number | null
  readonly protocol?: string | null
}

/** Weights from the Service annotation: one for every pod, and some by pod name. */
export interface Weights {
  readonly byPod: ReadonlyMap<string, number>
  readonly others: number
}

/** Every pod weight 1 (no annotation). */
export const EQUAL_WEIGHTS: Weights = Object.freeze({ byPod: new Map<string, number>(), others: 1 })

/** How an endpoint counts, after the API's rules for conditions left unset. */
export type EndpointRole = 'serving' | 'draining' | 'out'

/**
 * The role of one endpoint: `serving` (ready, not terminating: takes new users), `draining`
 * (terminating but still serving: keeps its users, no new ones), `out` (neither). Unset
 * conditions are read as the API documents them: `ready` unknown means ready, `serving`
 * unknown means as `ready`, `terminating` unknown means false.
 * Example: `{ ready: false, serving: true, terminating: true }` -> 'draining'.
 */
export function endpointRole(conditions: Endpoint['conditions']): EndpointRole {
  const ready = bool(conditions?.ready) ?? true
  const serving = bool(conditions?.serving) ?? ready
  const terminating = bool(conditions?.terminating) ?? false
  if (terminating) return serving ? 'draining' : 'out'
  return ready ? 'serving' : 'out'
}

/**
 * Parses the weight annotation: `"3"` (every pod), or comma-separated `pod=weight` pairs with
 * `*=weight` for pods not named (default 1). Weights are integers 1..1000; spaces are ignored.
 * Example: `parseWeights('web-0=3, *=2')` -> `{ ok: true, weights: { byPod: {web-0: 3}, others: 2 } }`;
 * `parseWeights('web-0=x')` -> `{ ok: false, message: 'web-0=x: the weight must be an integer 1..1000' }`.
 */
export function parseWeights(text: string): { ok: true; weights: Weights } | { ok: false; message: string } {
  const weight = (s: string): number | null => (/^\d{1,4}$/.test(s) && Number(s) >= 1 && Number(s) <= 1000 ? Number(s) : null)
  const trimmed = text.trim()
  if (/^\d+$/.test(trimmed)) {
    const w = weight(trimmed)
    return w === null ? { ok: false, message: `${trimmed}: the weight must be an integer 1..1000` } : { ok: true, weights: { byPod: new Map(), others: w } }
  }
  const byPod = new Map<string, number>()
  let others = 1
  for (const part of trimmed.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const m = /^([^=\s]+)\s*=\s*(\S+)$/.exec(part)
    if (m === null) return { ok: false, message: `${part}: expected pod=weight (or *=weight, or a single weight)` }
    const w = weight(m[2]!)
    if (w === null) return { ok: false, message: `${part}: the weight must be an integer 1..1000` }
    if (m[1] === '*') others = w
    else byPod.set(m[1]!, w)
  }
  return { ok: true, weights: { byPod, others } }
}

/** What the slices gave, and why some endpoints were left out (for a log line). */
export interface SliceUpstreams {
  /**
   * Sorted by id, deduplicated, deeply frozen; `draining: true` for terminating pods that still
   * serve (unless none is ready); `unready: true` for pods listed that neither serve nor drain
   * (not ready yet, or terminating and no longer serving): they take no users, but their uid
   * and addresses tell membership that a pod it knew under that name, or at that address, is gone.
   */
  readonly upstreams: readonly DiscoveredUpstream[]
  /** Slices that lack the wanted port name (their endpoints are left out). */
  readonly slicesWithoutPort: readonly string[]
}

const FAMILY_ORDER: Record<string, number> = { IPv4: 0, IPv6: 1, FQDN: 2 }
/** Endpoint roles, best last: an endpoint listed in two slices takes its best. */
const RANK = { out: 0, draining: 1, serving: 2 } as const

/**
 * The upstreams of a Service's EndpointSlices. Each endpoint that is serving or draining
 * becomes one upstream (one that is neither is listed `unready`, for its uid and addresses): id = its pod name (`targetRef` of kind Pod; `_none` for a pod named `none`: see nameId), or `address:port` without
 * one (of its first address in text order, a function of the listing alone, so that every replica
 * names it the same: `['10.0.0.6', '10.0.0.5']` -> `10.0.0.5:8080`); url = `http://<first address>:<port>`. `port` is a Service port name (looked up in each
 * slice's TCP ports) or the pods' port number. A pod listed twice (two slices during a
 * rebalance, or IPv4 and IPv6 slices of a dual-stack Service) counts once, with its best role
 * (serving over draining) among the listings of the pod uid at its url (a pod re-created under
 * its name is another pod) and the address of its first slice by IPv4, IPv6, FQDN, then slice
 * name, whatever its role there: the two families' slices are updated one after the other,
 * and the url stays the same meanwhile (it flipped with the role). A pod in `previous` (the
 * set in use) keeps its url while that address is still listed for it, in any slice
 * or position: a slice update that reorders or adds addresses does not move it (a url change
 * is a pod re-created elsewhere, whose users are rehydrated). A pod listed at more than one
 * address carries them all in `addresses` (a peer's `down` about any of them is about it), and
 * `uid`, the `targetRef.uid` of the endpoint that listed its url (the one in `previous` when
 * several did and it is among them; a pod re-created with its name at the same address is
 * told apart by it). When no endpoint is
 * serving, the draining ones are not draining: they take new users (kube-proxy's fallback to
 * serving-terminating endpoints), so the pool never answers 503 while pods still serve.
 * Example: a slice with web-0 ready at 10.0.0.5 and web-1 terminating (serving) at 10.0.0.6,
 * port 'http' = 8080 -> `[{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1 },
 * { id: 'web-1', url: 'http://10.0.0.6:8080', weight: 1, draining: true }]`; with web-1 alone
 * -> `[{ id: 'web-1', url: 'http://10.0.0.6:8080', weight: 1 }]`. With `previous` giving web-0
 * 'http://[fd00::5]:8080' and slices listing it at 10.0.0.5 (IPv4) and fd00::5 (IPv6), web-0
 * stays at 'http://[fd00::5]:8080'.
 * With `reads` (the caller's, kept across calls), a slice object read before is not read
 * again: a watch event replaces one slice and re-reads it alone (the merge of every pod's
 * listings still runs here; SliceMerge merges again only the pods of the changed slices). The result is the same.
 */
export function upstreamsFromSlices(
  slices: Iterable<EndpointSlice>,
  port: string | number,
  weights: Weights = EQUAL_WEIGHTS,
  previous: readonly DiscoveredUpstream[] = [],
  reads: SliceReads | null = null,
): SliceUpstreams {
  const ordered = [...slices].sort(sliceOrder)
  // per endpoint: its address from the first slice (by family) that lists it, whatever its role
  // there, and its best role over the slices listing that pod uid; the slices of two families are updated one after
  // the other, and an address chosen by role flipped between them at each readiness change
  // `uids[i]`: the pod uid of the endpoint that listed `urls[i]` (undefined: none given)
  // `roles[i]`: the role of the endpoint that listed `urls[i]`
  const byId = new Map<string, { urls: string[]; uids: (string | undefined)[]; roles: EndpointRole[]; weight: number }>()
  const slicesWithoutPort: string[] = []
  const had = new Map(previous.map((u) => [u.id, u]))
  for (const slice of ordered) {
    const number = typeof port === 'number' ? port : namedPort(slice, port)
    if (number === null) {
      if (list(slice.endpoints).length > 0) slicesWithoutPort.push(slice.metadata?.name ?? '?')
      continue
    }
    for (const { id, pod, urls, uids, roles } of sliceEndpoints(slice, number, reads)) {
      const seen = byId.get(id)
      if (seen !== undefined) {
        seen.urls.push(...urls)
        seen.uids.push(...uids)
        seen.roles.push(...roles)
        continue
      }
      const weight = pod === null ? weights.others : (weights.byPod.get(pod) ?? weights.others)
      byId.set(id, { urls: [...urls], uids: [...uids], roles: [...roles], weight })
    }
  }
  const found: DiscoveredUpstream[] = []
  for (const [id, e] of byId) found.push(merged(id, e.urls, e.uids, e.roles, e.weight, had.get(id)))
  return { upstreams: finished(found.sort((a, b) => compare(a.id, b.id))), slicesWithoutPort: Object.freeze(slicesWithoutPort) }
}

/** The order slices are read in: by address family (IPv4, IPv6, FQDN, others), then name. */
function sliceOrder(a: EndpointSlice, b: EndpointSlice): number {
  return (FAMILY_ORDER[a.addressType ?? ''] ?? 3) - (FAMILY_ORDER[b.addressType ?? ''] ?? 3) || compare(a.metadata?.name ?? '', b.metadata?.name ?? '')
}

/**
 * The upstream of one id from all its listings, in slice order (`urls[i]` listed by pod uid
 * `uids[i]` with role `roles[i]`), its weight and `before`, its entry in the set in use (only
 * its url and uid are read). Frozen; its draining flag may still be dropped by finished().
 */
function merged(id: string, urls: readonly string[], uids: readonly (string | undefined)[], roles: readonly EndpointRole[], weight: number, before: DiscoveredUpstream | undefined): DiscoveredUpstream {
  const addresses = listedAddresses(urls)
  const url = keptUrl(before?.url, urls)
  // the uid of the pod at the url kept (its first listing): while a pod is re-created, one
  // family's slice may list the new pod and the other's still the old one. The uid known
  // when it is listed at that url too: a stale listing of the pod it replaced at the same
  // address, in another slice, must not pass for it (nor lend it its role)
  const uid = before?.uid !== undefined && urls.some((u, i) => u === url && uids[i] === before.uid) ? before.uid : uids[urls.indexOf(url)]
  // its best role over the listings of that pod (another uid is another pod: while a pod is
  // re-created, the old one still serving in one family must not make the new one, not ready
  // at the url kept, serve or drain there); a listing without a uid counts as the same pod
  const role = roles.reduce<EndpointRole>((best, r, i) => (RANK[r] > RANK[best] && (uid === undefined || uids[i] === undefined || uids[i] === uid) ? r : best), 'out')
  return Object.freeze({ id, url, weight, ...(addresses === undefined ? {} : { addresses }), ...(uid === undefined ? {} : { uid }), ...(role === 'draining' ? { draining: true } : {}), ...(role === 'out' ? { unready: true } : {}) })
}

/** The set from every id's upstream, sorted by id: the fallback below applied, frozen. */
function finished(found: DiscoveredUpstream[]): readonly DiscoveredUpstream[] {
  // No endpoint ready but some terminating ones still serving (every pod of a Deployment
  // replaced at once, a one-replica rollout with maxSurge 0): they take new users, as kube-proxy
  // falls back to serving-terminating endpoints. Draining them all would answer every new user
  // 503 while the pods still answer; the first ready pod makes them draining again.
  if (found.every((u) => u.draining === true || u.unready === true)) found = found.map(({ draining: _, ...u }) => Object.freeze(u))
  return Object.freeze(found)
}

/**
 * True when two upstream lists are the same (same ids, urls, pod uids, weights, draining and unready flags
 * and listed addresses, in order). Example: `sameUpstreams(a, a)` -> true.
 */
export function sameUpstreams(a: readonly DiscoveredUpstream[], b: readonly DiscoveredUpstream[]): boolean {
  return a.length === b.length && a.every((u, i) => {
    const v = b[i]!
    return u.id === v.id && u.url === v.url && u.uid === v.uid && u.weight === v.weight && (u.draining === true) === (v.draining === true) && (u.unready === true) === (v.unready === true) && sameAddresses(u.addresses, v.addresses)
  })
}

/** One endpoint of a slice as upstreamsFromSlices reads it: its id, pod name, urls and, per url, the pod uid and role. */
interface SliceEndpoint {
  readonly id: string
  readonly pod: string | null
  readonly urls: readonly string[]
  readonly uids: readonly (string | undefined)[]
  readonly roles: readonly EndpointRole[]
}

/**
 * What upstreamsFromSlices read of each slice object, by port, kept by its caller across calls
 * so that a watch event re-reads only the slice it replaced. The slice objects must not be
 * changed in place (ListWatch never does: an event brings a new object); weak, so a slice
 * gone from the listing is forgotten. At 10 000 endpoints in 100 slices, reading them was
 * about three quarters of an event's cost (the merge is the rest: see SliceMerge).
 * Example: `const reads = new SliceReads(); upstreamsFromSlices(slices, 'http', w, prev, reads)`.
 */
export class SliceReads {
  readonly #read = new WeakMap<EndpointSlice, { readonly port: number; readonly endpoints: readonly SliceEndpoint[] }>()

  /** The endpoints of `slice` on `port` read before, or undefined. */
  get(slice: EndpointSlice, port: number): readonly SliceEndpoint[] | undefined {
    const read = this.#read.get(slice)
    return read !== undefined && read.port === port ? read.endpoints : undefined
  }

  set(slice: EndpointSlice, port: number, endpoints: readonly SliceEndpoint[]): void {
    if (typeof slice === 'object' && slice !== null) this.#read.set(slice, { port, endpoints })
  }
}

/** What SliceMerge keeps of one slice object. */
interface SliceState {
  /** Its place in the reading order (sliceOrder). */
  readonly family: number
  readonly name: string
  /** Its name as slicesWithoutPort gives it, when it lacks the port (else null). */
  readonly withoutPort: string | null
  readonly endpoints: readonly SliceEndpoint[]
}

/** What SliceMerge keeps of one id: its listings in reading order, and its last upstream and the inputs it came from. */
interface MergedId {
  readonly id: string
  readonly listings: { readonly slice: SliceState; readonly endpoint: SliceEndpoint }[]
  upstream: DiscoveredUpstream | null
  beforeUrl: string | undefined
  beforeUid: string | undefined
}

/**
 * upstreamsFromSlices kept up to date across calls, for a watch: each call gives every slice
 * (as upstreamsFromSlices), but only the ids listed in the slice objects that are new or gone
 * since the last call are merged again (their listings are kept per id in reading order);
 * the others keep their upstream unless their entry in `previous` has another url or uid (the
 * only fields the merge reads of it). A change of port or weights, slices that are not objects,
 * or two slices of one family and name (which ListWatch never gives: it keys them by name)
 * make a call merge everything. The result is the same as upstreamsFromSlices' (a seeded test
 * compares them over random event sequences). The slice objects must not be changed in place
 * (ListWatch never does: an event brings a new object). At 10,000 pods in 100 slices an event
 * that replaces one slice cost 2.5 ms of CPU against 16 ms merging every pod (bench/slice-events.mjs).
 * Example: `const merge = new SliceMerge(); merge.upstreams(slices.values(), 'http', w, previous)`.
 */
export class SliceMerge {
  #port: string | number | null = null
  #weights: Weights | null = null
  readonly #reads = new SliceReads()
  #slices = new Map<EndpointSlice, SliceState>()
  #ids = new Map<string, MergedId>()
  /** Every id, sorted. */
  #order: MergedId[] = []

  /** What upstreamsFromSlices(slices, port, weights, previous) gives. */
  upstreams(slices: Iterable<EndpointSlice>, port: string | number, weights: Weights = EQUAL_WEIGHTS, previous: readonly DiscoveredUpstream[] = []): SliceUpstreams {
    const given = [...slices]
    const keys = new Set<string>()
    for (const slice of given) {
      const family = typeof slice === 'object' && slice !== null ? FAMILY_ORDER[slice.addressType ?? ''] : null
      const name = typeof slice === 'object' && slice !== null ? slice.metadata?.name ?? '' : null
      const key = `${family ?? 3}/${name}`
      // what the incremental view does not model: entry in full (and the view starts over)
      if (name === null || typeof name !== 'string' || (family !== undefined && typeof family !== 'number') || keys.has(key)) {
        this.#reset()
        return upstreamsFromSlices(given, port, weights, previous, this.#reads)
      }
      keys.add(key)
    }
    if (port !== this.#port || weights !== this.#weights) {
      this.#reset()
      this.#port = port
      this.#weights = weights
    }
    const dirty = new Set<MergedId>()
    const present = new Set(given)
    for (const [slice, state] of this.#slices) {
      if (present.has(slice)) continue
      this.#slices.delete(slice)
      for (const endpoint of state.endpoints) {
        const entry = this.#ids.get(endpoint.id)!
        const kept = entry.listings.filter((l) => l.slice !== state)
        entry.listings.length = 0
        entry.listings.push(...kept)
        dirty.add(entry)
      }
    }
    for (const slice of given) {
      if (this.#slices.has(slice)) continue
      const number = typeof port === 'number' ? port : namedPort(slice, port)
      const state: SliceState = {
        family: FAMILY_ORDER[slice.addressType ?? ''] ?? 3,
        name: slice.metadata?.name ?? '',
        withoutPort: number === null && list(slice.endpoints).length > 0 ? slice.metadata?.name ?? '?' : null,
        endpoints: number === null ? [] : sliceEndpoints(slice, number, this.#reads),
      }
      this.#slices.set(slice, state)
      for (const endpoint of state.endpoints) {
        let entry = this.#ids.get(endpoint.id)
        if (entry === undefined) {
          entry = { id: endpoint.id, listings: [], upstream: null, beforeUrl: undefined, beforeUid: undefined }
          this.#ids.set(endpoint.id, entry)
          this.#order.splice(this.#position(endpoint.id), 0, entry)
        }
        // after the listings of the slices read before this one, and this one's listed before it
        let i = entry.listings.length
        while (i > 0 && stateOrder(state, entry.listings[i - 1]!.slice) < 0) i--
        entry.listings.splice(i, 0, { slice: state, endpoint })
        dirty.add(entry)
      }
    }
    for (const entry of dirty) {
      if (entry.listings.length > 0) continue
      this.#ids.delete(entry.id)
      this.#order.splice(this.#position(entry.id), 1)
    }
    const had = new Map<string, DiscoveredUpstream>()
    for (const u of previous) had.set(u.id, u) // the last of an id wins, as in upstreamsFromSlices
    const found: DiscoveredUpstream[] = new Array(this.#order.length)
    for (let i = 0; i < this.#order.length; i++) {
      const entry = this.#order[i]!
      const before = had.get(entry.id)
      if (entry.upstream === null || dirty.has(entry) || before?.url !== entry.beforeUrl || before?.uid !== entry.beforeUid) {
        const urls: string[] = []
        const uids: (string | undefined)[] = []
        const roles: EndpointRole[] = []
        for (const { endpoint } of entry.listings) {
          urls.push(...endpoint.urls)
          uids.push(...endpoint.uids)
          roles.push(...endpoint.roles)
        }
        const pod = entry.listings[0]!.endpoint.pod
        const weight = pod === null ? weights.others : (weights.byPod.get(pod) ?? weights.others)
        entry.upstream = merged(entry.id, urls, uids, roles, weight, before)
        entry.beforeUrl = before?.url
        entry.beforeUid = before?.uid
      }
      found[i] = entry.upstream!
    }
    const withoutPort = [...this.#slices.values()].filter((s) => s.withoutPort !== null).sort(stateOrder).map((s) => s.withoutPort!)
    return { upstreams: finished(found), slicesWithoutPort: Object.freeze(withoutPort) }
  }

  #reset(): void {
    this.#port = null
    this.#weights = null
    this.#slices = new Map()
    this.#ids = new Map()
    this.#order = []
  }

  /** Where `id` is in #order, or would be inserted. */
  #position(id: string): number {
    let lo = 0
    let hi = this.#order.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.#order[mid]!.id < id) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

/** sliceOrder for SliceMerge's slices. */
function stateOrder(a: SliceState, b: SliceState): number {
  return a.family - b.family || compare(a.name, b.name)
}

/** The endpoints of `slice` that have an address, on `port` (from `reads` when read before). */
function sliceEndpoints(slice: EndpointSlice, port: number, reads: SliceReads | null): readonly SliceEndpoint[] {
  const known = reads?.get(slice, port)
  if (known !== undefined) return known
  const endpoints: SliceEndpoint[] = []
  for (const endpoint of objects(slice.endpoints)) {
    const role = endpointRole(endpoint.conditions)
    const addresses = list(endpoint.addresses).filter((a) => typeof a === 'string' && a !== '')
    if (addresses.length === 0) continue
    const pod = endpoint.targetRef?.kind === 'Pod' && typeof endpoint.targetRef.name === 'string' && endpoint.targetRef.name !== '' ? endpoint.targetRef.name : null
    // without a pod, the id of its first address in text order, whatever order the slice lists
    // them in: a reordered listing is not another upstream. Never from `previous`: the id is the
    // upstream's identity in placement and cookies, and two Tether replicas (or one restarted)
    // must name the same listing the same, whatever listings each saw before
    const id = pod !== null ? nameId(pod) : upstreamId([...addresses].sort()[0]!, port)
    const urls = addresses.map((a) => upstreamUrl(a, port))
    const uid = pod !== null && typeof endpoint.targetRef?.uid === 'string' && endpoint.targetRef.uid !== '' ? endpoint.targetRef.uid : undefined
    endpoints.push({ id, pod, urls, uids: urls.map(() => uid), roles: urls.map(() => role) })
  }
  reads?.set(slice, port, endpoints)
  return endpoints
}

function namedPort(slice: EndpointSlice, name: string): number | null {
  const p = objects(slice.ports).find((p) => p.name === name && (p.protocol ?? 'TCP') === 'TCP')
  const n = p?.port
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535 ? n : null
}

function list<T>(value: readonly T[] | null | undefined): readonly T[] {
  return Array.isArray(value) ? value : []
}

/** The entries of a list that are objects (a null or a string in it is skipped, as a wrong type). */
function objects<T extends object>(value: readonly T[] | null | undefined): readonly T[] {
  return list(value).filter((v) => typeof v === 'object' && v !== null)
}

function bool(value: unknown): boolean | null {
  return typeof value === 'boolean' ? value : null
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
