// DNS discovery (layer 3 adapter): re-resolves one name (a headless Service) every `interval`
// and reports the upstreams: one per A/AAAA address, or per SRV target named after its host (a
// StatefulSet's pod names). The only file that talks DNS. It owns the refresh loop only: never
// checks health, places, edits config or starts itself, never empties the pool on a bad answer.
import { Resolver } from 'node:dns/promises'
import { isIP, isIPv6 } from 'node:net'
import { monotonicNow, systemClock, systemTimers, type Clock, type Timers } from '../clock.js'
import { keptFamilies, type DiscoveredUpstream, type KeptEmptyFamily } from './upstream-set.js'
import { keptUrl, listedAddresses, nameId, sameAddresses, upstreamId, upstreamUrl } from './address.js'

export { upstreamId, upstreamUrl }

/**
 * One discovered upstream; the same shape as a configured upstream (`UpstreamConfig`), so the
 * composition root can feed both through one membership path. From A/AAAA records the id is
 * `address:port` (`[address]:port` for IPv6), stable while the pod keeps its address; from SRV
 * records it is the target's first label (a pod name), stable across address changes. The url
 * is `http://address:port`; the weight is always 1 (SRV priority and weight are not used).
 * Example: `{ id: '10.0.0.1:8080', url: 'http://10.0.0.1:8080', weight: 1 }`.
 */
export type { DiscoveredUpstream } from './upstream-set.js'

/**
 * What changed between two sets, as ids in sorted order: `changed` are ids kept with another
 * url, weight or list of addresses (an SRV target whose pod got a new address, or one more).
 * Example: `{ added: ['10.0.0.3:8080'], removed: ['10.0.0.1:8080'], changed: [] }`.
 */
export interface UpstreamDiff {
  readonly added: readonly string[]
  readonly removed: readonly string[]
  readonly changed: readonly string[]
}

/** Which record types to ask for: A and AAAA ('any'), A only ('ipv4'), AAAA only ('ipv6'). */
export type DnsFamily = 'any' | 'ipv4' | 'ipv6'

export interface DnsDiscoveryOptions {
  /** Name to resolve, e.g. `app-headless.default.svc.cluster.local`. Queried as is (no search list). */
  readonly name: string
  /**
   * Port of every upstream (headless Services publish addresses, not ports). 1..65535; null
   * (only with `srv`) takes each SRV record's port.
   */
  readonly port: number | null
  /**
   * Ask for SRV records (`_http._tcp.web.default.svc.cluster.local`) and resolve each target:
   * ids are the targets' first labels (a StatefulSet's pod names). Default false.
   */
  readonly srv?: boolean | undefined
  /** Milliseconds between the end of one resolution and the start of the next. > 0. */
  readonly interval: number
  readonly family: DnsFamily
  /** DNS servers as `ip`, `ip:port` or `[ipv6]:port`, e.g. `['127.0.0.1:5353']`. Default (also for []): the system resolver's. */
  readonly servers?: readonly string[] | undefined
  /**
   * Deadline of one resolution (the SRV query, then every A/AAAA query together), in ms; a query
   * without an answer by then failed with ETIMEOUT (the others' answers count). Default 2000.
   */
  readonly timeout?: number | undefined
  /**
   * With `srv` and family 'any': how long, in ms, a target's family that answers empty keeps
   * the addresses it had while the target's other family answers (or fails and keeps) every
   * address it had, maybe more (the same pod; see `DnsDiscovery`). The composition root passes
   * `affinity.drain_timeout`. Default 0: an empty answer applies at once.
   */
  readonly emptyFamilyGrace?: number | undefined
}

export interface DnsDiscoveryHooks {
  /**
   * Called with the new set (sorted by id, deduplicated, frozen) whenever it differs from the
   * previous one, including the first successful resolution (previous = empty). Never called
   * with an empty set. Must not throw (an exception is rethrown asynchronously, and the loop goes on).
   */
  onChange(upstreams: readonly DiscoveredUpstream[], diff: UpstreamDiff): void
  /**
   * Called after each failed, partly failed or empty resolution. A failed or empty one keeps the
   * last known set. A partly failed one (some A/AAAA queries, of the name or of some SRV targets,
   * failed while others answered; `err.partial`) is applied: the queries that answered give
   * their addresses, each failed one keeps the addresses it gave to the last applied resolution
   * (none if it never answered), and `onChange` runs first if that changed the set.
   * `consecutiveFailures` is 1 for the first failure and resets after a fully successful resolution.
   */
  onError?(err: DnsDiscoveryError, consecutiveFailures: number): void
  /**
   * Called (with the set applied) when, with `srv` and family 'any', a target's family that
   * answered empty begins to keep its addresses (see `DnsDiscovery`), and when it goes after
   * `emptyFamilyGrace`: not errors, but worth a line (its url may point at an address DNS no
   * longer lists). A family kept again and again (a cache flapping) is noted once per
   * `emptyFamilyGrace`. E.g. "AAAA of web-0.web.default.svc.cluster.local answered empty while its
   * A is unchanged: keeping its last addresses (fd00::5) for up to 900000 ms".
   */
  onNote?(message: string): void
  /** Called after a fully successful resolution that follows failed, partly failed or empty ones. */
  onRecover?(): void
  /**
   * The set the proxy uses now, maybe made before this resolver ran (with workers, by the lead
   * before it) or holding an upstream that left its list and still drains: an upstream keeps
   * its url from it, as from this resolver's own last set, while that address is still listed.
   * With `srv`, the addresses it lists for a target (its `addresses`, or its url) are what that
   * target's queries had when this resolver has nothing of its own for them: a failed or
   * kept-empty query of its first resolution, or of a target back in the SRV answer while it
   * still drains here (it left one answer), keeps them; and such a target keeps the time its
   * empty family has been kept (see `DnsDiscovery`).
   */
  previous?(): readonly DiscoveredUpstream[]
}

/**
 * A failed, partly failed or empty resolution. `code` is the resolver's code: 'ETIMEOUT',
 * 'ESERVFAIL', 'ECONNREFUSED', 'EREFUSED', ... for failures (of the first failed query when
 * several failed); 'ENOTFOUND' (NXDOMAIN) or 'ENODATA' (no records of the asked types) for an
 * empty answer. The resolver's own error, if any, is `cause`. A partial failure's message names
 * each failed query (at most 5) by type and name.
 * Example messages: "DNS discovery of app.default.svc.cluster.local (A+AAAA) failed: ESERVFAIL; keeping the last 3 upstreams",
 * "DNS discovery of app.default.svc.cluster.local (A+AAAA) failed in part (AAAA of app.default.svc.cluster.local: ESERVFAIL);
 * using the answers that came and the last known addresses of what failed: 2 upstreams".
 */
export class DnsDiscoveryError extends Error {
  readonly code: string
  /** The name that was resolved. */
  readonly hostname: string
  /**
   * True when only some queries failed: the set was still updated from the others (see
   * `DnsDiscoveryHooks.onError`); false when the whole last set was kept.
   */
  readonly partial: boolean
  constructor(message: string, code: string, hostname: string, cause?: unknown, partial = false) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'DnsDiscoveryError'
    this.code = code
    this.hostname = hostname
    this.partial = partial
  }
}

/**
 * The upstream set of some addresses: deduplicated, sorted by id (UTF-16 code unit order, the
 * order placement sorts ids in), weight 1, deeply frozen. Addresses are compared as text, so
 * pass them as the resolver returns them (IPv6 in canonical form, e.g. `fd00::1`).
 * Example: `upstreamsFromAddresses(['10.0.0.2', '10.0.0.1', '10.0.0.2'], 80)` ->
 * `[{ id: '10.0.0.1:80', url: 'http://10.0.0.1:80', weight: 1 }, { id: '10.0.0.2:80', ... }]`.
 */
export function upstreamsFromAddresses(addresses: Iterable<string>, port: number): readonly DiscoveredUpstream[] {
  const byId = new Map<string, DiscoveredUpstream>()
  for (const address of addresses) {
    const id = upstreamId(address, port)
    if (!byId.has(id)) byId.set(id, Object.freeze({ id, url: upstreamUrl(address, port), weight: 1 }))
  }
  return Object.freeze([...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)))
}

/**
 * Ids added, removed and changed (same id, another url, weight or `addresses`) from `previous` to `next`.
 * The set changed iff any list is non-empty.
 * Example: previous [a, b], next [b, c] -> `{ added: ['c'], removed: ['a'], changed: [] }`.
 */
export function diffUpstreams(
  previous: readonly DiscoveredUpstream[],
  next: readonly DiscoveredUpstream[],
): UpstreamDiff {
  const before = new Map(previous.map((u) => [u.id, u]))
  const after = new Map(next.map((u) => [u.id, u]))
  const changed = (id: string): boolean => {
    const [a, b] = [before.get(id)!, after.get(id)!]
    return a.url !== b.url || a.weight !== b.weight || !sameAddresses(a.addresses, b.addresses) ||
      JSON.stringify(keptFamilies(a)) !== JSON.stringify(keptFamilies(b))
  }
  return {
    added: [...after.keys()].filter((id) => !before.has(id)).sort(),
    removed: [...before.keys()].filter((id) => !after.has(id)).sort(),
    changed: [...after.keys()].filter((id) => before.has(id) && changed(id)).sort(),
  }
}

/** One SRV record as node:dns gives it. */
export interface SrvRecord {
  readonly name: string
  readonly port: number
  readonly priority: number
  readonly weight: number
}

/**
 * The upstream id of an SRV target: its first label, lower-cased (DNS names compare without
 * case; `none` is `_none`: see nameId). Example: `srvTargetId('web-0.web.default.svc.cluster.local')` -> `'web-0'`.
 */
export function srvTargetId(target: string): string {
  return nameId(target.replace(/\.$/, '').split('.')[0]!.toLowerCase())
}

/**
 * The upstream set of SRV records whose targets resolved to `addresses` (target -> addresses as
 * the resolver returned them): one upstream per target first label, at the target's first
 * address in text order, on `port` or else the record's port; records are taken by priority,
 * then target, then port, and a later record with an id already taken is dropped (one pod
 * named twice). Targets with no address are left out. Sorted by id, weight 1, deeply frozen.
 * A target in `previous` (the set in use) keeps its url while that address is still among its
 * target's (a target with A and AAAA records, or several, is not moved by a new address that
 * sorts first: a url change is a pod re-created elsewhere, whose users are rehydrated). A
 * target with several addresses carries them all in `addresses`.
 * Example: `[{ name: 'web-1.web.ns.svc.cluster.local', port: 8080, ... }]` with
 * `web-1... -> ['10.0.0.7']` -> `[{ id: 'web-1', url: 'http://10.0.0.7:8080', weight: 1 }]`;
 * then with `['10.0.0.3', '10.0.0.7']` and that set as `previous` -> web-1 stays at 10.0.0.7,
 * with `addresses: ['http://10.0.0.3:8080', 'http://10.0.0.7:8080']`.
 */
export function upstreamsFromSrv(
  records: readonly SrvRecord[],
  addresses: ReadonlyMap<string, readonly string[]>,
  port: number | null,
  previous: readonly DiscoveredUpstream[] = [],
): readonly DiscoveredUpstream[] {
  const had = new Map(previous.map((u) => [u.id, u.url]))
  const byId = new Map<string, DiscoveredUpstream>()
  for (const [id, r] of srvTargets(records, addresses)) {
    const urls = [...addresses.get(r.name)!].sort().map((a) => upstreamUrl(a, port ?? r.port))
    const listed = listedAddresses(urls)
    byId.set(id, Object.freeze({ id, url: keptUrl(had.get(id), urls), weight: 1, ...(listed === undefined ? {} : { addresses: listed }) }))
  }
  return Object.freeze([...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)))
}

/** SRV records by priority, then target, then port: the order in which a record takes its id. */
function srvOrder(records: readonly SrvRecord[]): SrvRecord[] {
  return [...records].sort((a, b) => a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) || a.port - b.port)
}

/**
 * The record that makes each id's upstream (see upstreamsFromSrv): the first, in `srvOrder`,
 * of those whose target has an address. Two targets with one first label (`web-0.a.` and
 * `web-0.b.`) share the id: the later one is dropped, and nothing of it (its kept empty
 * family) may be taken for the id's. The target that takes the id's addresses from the set in
 * use is the one that makes it (see DnsDiscovery's #inheritor).
 */
function srvTargets(records: readonly SrvRecord[], addresses: ReadonlyMap<string, readonly string[]>): Map<string, SrvRecord> {
  const byId = new Map<string, SrvRecord>()
  for (const r of srvOrder(records)) {
    const id = srvTargetId(r.name)
    if (id !== '' && (addresses.get(r.name)?.length ?? 0) > 0 && !byId.has(id)) byId.set(id, r)
  }
  return byId
}

const EMPTY_CODES = new Set(['ENODATA', 'ENOTFOUND'])
const FAMILIES = { any: [4, 6], ipv4: [4], ipv6: [6] } as const satisfies Record<DnsFamily, readonly (4 | 6)[]>

/**
 * A resolution: a set (with the addresses of each query it was built from, and `error` when some
 * queries failed and kept their last known addresses), or a failure that keeps the last set.
 */
type Resolution =
  | {
    ok: true
    upstreams: readonly DiscoveredUpstream[]
    known: ReadonlyMap<string, readonly string[]>
    /** Queries answering empty that kept their last addresses, and since when. */
    emptySince: ReadonlyMap<string, KeptSince>
    /** For `onNote`: families that began to be kept, or went after the grace. */
    notes: readonly string[]
    error?: DnsDiscoveryError
  }
  | { ok: false; error: DnsDiscoveryError }

/**
 * Discovery of the upstreams behind one DNS name, re-resolved every `interval` ms.
 *
 * - `start()` resolves once and then re-resolves `interval` ms after each resolution ends, so
 *   queries never overlap. It resolves with the initial set, which is empty when the first
 *   resolution failed (reported through `onError`); it rejects only when called twice or after
 *   `stop()`. It never throws for DNS reasons.
 * - A failure (timeout, SERVFAIL, network error) of every query, of the SRV query, or an empty
 *   answer keeps the last known set and calls `onError`. Each family and each SRV target is its
 *   own query: when only some fail, the others' answers apply and a failed one keeps its last
 *   known addresses (`onError` with `err.partial`). `onChange` is called only when the set
 *   actually changes.
 * - With `srv` and family 'any', a target's A or AAAA query that answers empty while the
 *   target's other family answers (or fails and keeps) every address it had, not none, maybe
 *   with more (its old addresses still answer: the same pod), keeps its last addresses, as a
 *   failed query does, for up to `emptyFamilyGrace` ms from its first empty answer: the same pod, whose url must not move (a DNS cache serving
 *   one family a stale NODATA). After that, or once the other family loses an address too
 *   (a pod re-created elsewhere; an address it had when the family began to be kept: one
 *   listed since then may leave again), the empty answer applies. This is not reported as an error.
 *   A kept family whose query fails meanwhile stays kept from that first empty answer (a
 *   failure says nothing of it: the time does not start again).
 * - With `srv`, a target missing from one SRV answer leaves the set (the proxy drains it); back
 *   while the set in use (`previous`) still has it, it is the same target: it keeps its url,
 *   its queries that fail or answer empty keep the addresses listed for it there (as above),
 *   and an empty family kept before it left keeps the time of its first empty answer.
 * - `stop()` clears the timer, cancels the in-flight queries and resolves once the loop has ended;
 *   no hook is called after that. Timers are unref'd: discovery never keeps the process alive.
 *
 * Example:
 *   const discovery = new DnsDiscovery(
 *     { name: 'app-headless.default.svc.cluster.local', port: 8080, interval: 5000, family: 'any' },
 *     { onChange: (upstreams) => membership.replace(upstreams), onError: (err, n) => log.warn({ err, n }) },
 *   )
 *   const initial = await discovery.start() // [{ id: '10.0.0.1:8080', url: 'http://10.0.0.1:8080', weight: 1 }, ...]
 *   await discovery.stop()
 */
export class DnsDiscovery {
  readonly #name: string
  readonly #port: number | null
  readonly #srv: boolean
  readonly #interval: number
  readonly #timeout: number
  readonly #family: DnsFamily
  readonly #hooks: DnsDiscoveryHooks
  readonly #timers: Timers
  readonly #clock: Clock
  readonly #emptyFamilyGrace: number
  readonly #resolver: Resolver
  #state: 'new' | 'running' | 'stopped' = 'new'
  #current: readonly DiscoveredUpstream[] = Object.freeze([])
  /** The addresses each query (`queryKey`) gave to the resolution that set #current; a query that fails later keeps them. */
  #known: ReadonlyMap<string, readonly string[]> = new Map()
  /** Queries (`queryKey`) of #known that answered empty and kept their addresses: since when. */
  #emptySince: ReadonlyMap<string, KeptSince> = new Map()
  /**
   * When each query's family was last noted as newly kept (monotonic ms): a cache flapping
   * between a stale NODATA and the answer is noted once per `emptyFamilyGrace`, not per flap.
   */
  readonly #noted = new Map<string, number>()
  #failures = 0
  #timer: unknown = undefined
  /** The resolution in progress (or the last one), awaited by stop(). */
  #run: Promise<void> = Promise.resolve()

  /** Validates the options (throws TypeError or RangeError); does no I/O. */
  constructor(options: DnsDiscoveryOptions, hooks: DnsDiscoveryHooks, timers: Timers = systemTimers, clock: Clock = systemClock) {
    const { name, port, interval, family, servers, timeout = 2000, srv = false, emptyFamilyGrace = 0 } = options
    if (typeof name !== 'string' || name.length === 0 || /\s/.test(name)) {
      throw new TypeError(`DnsDiscovery: name must be a non-empty DNS name, got ${JSON.stringify(name)}`)
    }
    if (!(port === null && srv) && (!Number.isInteger(port) || port! < 1 || port! > 65535)) {
      throw new RangeError(`DnsDiscovery: port must be an integer 1..65535${srv ? ' or null' : ''}, got ${port}`)
    }
    if (!(Number.isFinite(interval) && interval > 0)) {
      throw new RangeError(`DnsDiscovery: interval must be a positive number of ms, got ${interval}`)
    }
    if (!(Number.isFinite(timeout) && timeout > 0)) {
      throw new RangeError(`DnsDiscovery: timeout must be a positive number of ms, got ${timeout}`)
    }
    if (!(Number.isFinite(emptyFamilyGrace) && emptyFamilyGrace >= 0)) {
      throw new RangeError(`DnsDiscovery: emptyFamilyGrace must be a number of ms >= 0, got ${emptyFamilyGrace}`)
    }
    if (!Object.hasOwn(FAMILIES, family)) {
      throw new TypeError(`DnsDiscovery: family must be 'any', 'ipv4' or 'ipv6', got ${JSON.stringify(family)}`)
    }
    this.#name = name
    this.#port = port
    this.#srv = srv
    this.#interval = interval
    this.#timeout = timeout
    this.#family = family
    this.#hooks = hooks
    this.#timers = timers
    this.#clock = clock
    this.#emptyFamilyGrace = emptyFamilyGrace
    // c-ares' own timeout is a backstop (it rounds small values up); our deadline governs. It
    // is twice ours: at the same value its timer and our deadline raced, and a c-ares ETIMEOUT
    // that came first was told without "no answer within <timeout> ms" (seen in CI under load).
    this.#resolver = new Resolver({ timeout: 2 * Math.ceil(timeout), tries: 1 })
    if (servers !== undefined && servers.length > 0) { // an empty list would leave c-ares with no server at all
      try {
        this.#resolver.setServers([...servers])
      } catch (err) {
        throw new TypeError(`DnsDiscovery: invalid servers ${JSON.stringify(servers)}: ${(err as Error).message}`, {
          cause: err,
        })
      }
    }
  }

  /** Resolves the name once, then keeps re-resolving; resolves with the initial set (maybe empty). */
  async start(): Promise<readonly DiscoveredUpstream[]> {
    if (this.#state !== 'new') throw new Error(`DnsDiscovery: start() after ${this.#state === 'running' ? 'start()' : 'stop()'}`)
    this.#state = 'running'
    this.#run = this.#refresh()
    await this.#run
    return this.#current
  }

  /** Stops the loop: clears the timer, cancels in-flight queries, waits for the loop to end. Idempotent. */
  async stop(): Promise<void> {
    if (this.#state !== 'stopped') {
      this.#state = 'stopped'
      if (this.#timer !== undefined) this.#timers.clearTimeout(this.#timer)
      this.#timer = undefined
      this.#resolver.cancel()
    }
    await this.#run
  }

  /** The name resolved. */
  get name(): string {
    return this.#name
  }

  /** Consecutive failed, partly failed or empty resolutions (0 after a full success): > 0 means the set may be stale. */
  get failures(): number {
    return this.#failures
  }

  /** The last known set: sorted by id, deduplicated, frozen; empty until a resolution succeeds. */
  current(): readonly DiscoveredUpstream[] {
    return this.#current
  }

  /** One resolution, its report, and the scheduling of the next one. Never rejects. */
  async #refresh(): Promise<void> {
    const result = await this.#resolve()
    if (this.#state !== 'running') return
    if (result.ok) {
      this.#known = result.known
      this.#emptySince = result.emptySince
      const next = result.upstreams
      const diff = diffUpstreams(this.#current, next)
      if (diff.added.length > 0 || diff.removed.length > 0 || diff.changed.length > 0) {
        this.#current = next
        callHook(() => this.#hooks.onChange(next, diff))
      }
      for (const note of result.notes) {
        if (this.#state === 'running') callHook(() => this.#hooks.onNote?.(note)) // onChange may have called stop()
      }
      const error = result.error
      if (error === undefined) {
        const recovered = this.#failures > 0
        this.#failures = 0
        if (recovered) callHook(() => this.#hooks.onRecover?.())
      } else if (this.#state === 'running') { // onChange may have called stop()
        this.#failures++
        const failures = this.#failures
        callHook(() => this.#hooks.onError?.(error, failures))
      }
    } else {
      this.#failures++
      const failures = this.#failures
      callHook(() => this.#hooks.onError?.(result.error, failures))
    }
    if (this.#state !== 'running') return // a hook may have called stop()
    this.#timer = this.#timers.setTimeout(() => {
      this.#timer = undefined
      this.#run = this.#refresh()
    }, this.#interval)
    unref(this.#timer)
  }

  /** Queries every family of the option at once (SRV first, then its targets), under one deadline; waits for all of them to settle. Never rejects. */
  async #resolve(): Promise<Resolution> {
    let timedOut = false
    const deadline = this.#timers.setTimeout(() => {
      timedOut = true
      this.#resolver.cancel()
    }, this.#timeout)
    unref(deadline)
    try {
      return await this.#lookup(() => timedOut)
    } finally {
      this.#timers.clearTimeout(deadline)
    }
  }

  async #lookup(timedOut: () => boolean): Promise<Resolution> {
    const families = FAMILIES[this.#family]
    const types = families.map((f) => (f === 4 ? 'A' : 'AAAA')).join('+')
    const what = `DNS discovery of ${this.#name} (${this.#srv ? `SRV, targets ${types}` : types})`
    const keeping = `keeping the last ${this.#current.length} upstream${this.#current.length === 1 ? '' : 's'}`
    const fail = (message: string, code: string, cause?: unknown): Resolution => ({
      ok: false,
      error: new DnsDiscoveryError(`${what} ${message}; ${keeping}`, code, this.#name, cause),
    })
    const timeout = (): Resolution => fail(`timed out after ${this.#timeout} ms: ETIMEOUT`, 'ETIMEOUT')
    const empty = (code: string, noun: string): Resolution =>
      fail(`returned no ${noun} (${code === 'ENOTFOUND' ? 'no such name' : 'no records'}): ${code}`, code)

    let records: SrvRecord[] = []
    const names = [this.#name]
    if (this.#srv) {
      try {
        records = await this.#resolver.resolveSrv(this.#name)
      } catch (err) {
        if (timedOut()) return timeout()
        const code = errorCode(err)
        return EMPTY_CODES.has(code) ? empty(code, 'SRV records') : fail(`failed: ${code}`, code, err)
      }
      if (timedOut()) return timeout()
      if (records.length === 0) return empty('ENODATA', 'SRV records')
      names.splice(0, 1, ...new Set(records.map((r) => r.name)))
    }
    // Each (name, family) query on its own: an answer (maybe empty) or a failure. A query still
    // in flight at the deadline was cancelled by it: a timeout of that query only.
    const queries = await Promise.all(names.flatMap((name) => families.map(async (f): Promise<Query> => {
      const key = queryKey(name, f)
      try {
        return { key, name, family: f, addresses: await (f === 4 ? this.#resolver.resolve4(name) : this.#resolver.resolve6(name)) }
      } catch (err) {
        const code = errorCode(err)
        if (EMPTY_CODES.has(code)) return { key, name, family: f, addresses: [], empty: code }
        if (timedOut() && code === 'ECANCELLED') return { key, name, family: f, failed: 'ETIMEOUT' }
        return { key, name, family: f, failed: code, cause: err }
      }
    })))
    const failed = queries.filter((q): q is Query & { failed: string } => q.failed !== undefined)
    if (failed.length === queries.length) {
      // Nothing answered: the whole last set stays, as it was.
      if (timedOut()) return timeout()
      return fail(`failed: ${failed[0]!.failed}`, failed[0]!.failed, failed[0]!.cause)
    }
    // What answered, and for what failed its addresses of the last resolution that gave a set.
    const known = new Map<string, readonly string[]>()
    const addresses = new Map<string, string[]>()
    const inUse = this.#hooks.previous?.() ?? []
    const inherits = this.#srv ? this.#inheritor(records, queries, inUse) : () => true
    const had = this.#had(inUse, inherits)
    const notes: string[] = []
    const emptySince = this.#srv && families.length === 2 ? this.#keptEmpty(queries, had, this.#inherited(names.filter(inherits), inUse), notes) : new Map<string, KeptSince>()
    let emptyCode = 'ENODATA'
    for (const q of queries) {
      const found = q.failed === undefined && !emptySince.has(q.key) ? q.addresses! : had(q)
      if (q.empty === 'ENOTFOUND') emptyCode = q.empty
      if (found === undefined) continue
      known.set(q.key, found)
      addresses.set(q.name, [...(addresses.get(q.name) ?? []), ...found])
    }
    const upstreams = this.#srv
      ? withKeptEmpty(upstreamsFromSrv(records, addresses, this.#port, [...inUse, ...this.#current]), emptySince, srvTargets(records, addresses))
      : upstreamsFromAddresses(addresses.get(this.#name) ?? [], this.#port!)
    const list = failed.slice(0, 5).map((q) => `${q.family === 4 ? 'A' : 'AAAA'} of ${q.name}: ${q.failed === 'ETIMEOUT' && q.cause === undefined ? `ETIMEOUT (no answer within ${this.#timeout} ms)` : q.failed}`)
    if (failed.length > 5) list.push(`and ${failed.length - 5} more`)
    if (upstreams.length === 0) {
      if (failed.length === 0) return empty(emptyCode, this.#srv ? 'target addresses' : 'addresses')
      return fail(`failed in part (${list.join(', ')}) and the rest returned no addresses`, failed[0]!.failed, failed[0]!.cause)
    }
    if (failed.length === 0) return { ok: true, upstreams, known, emptySince, notes }
    const n = `${upstreams.length} upstream${upstreams.length === 1 ? '' : 's'}`
    return {
      ok: true,
      upstreams,
      known,
      emptySince,
      notes,
      error: new DnsDiscoveryError(
        `${what} failed in part (${list.join(', ')}); using the answers that came and the last known addresses of what failed: ${n}`,
        failed[0]!.failed, this.#name, failed[0]!.cause, true,
      ),
    }
  }

  /**
   * Which target may take its id's addresses from the set in use (`inUse`, which speaks of a
   * target by id only): of targets with one first label, the one that makes the id's upstream
   * (see srvTargets): the first in SRV order that may have an address (a query answered some, or
   * failed and has some to keep: its own, or the id's in the set in use of that family). The
   * first target in SRV order takes them as before; a later one (the first answered empty) only
   * when one of the addresses it answered is the id's in the set in use: else that set's
   * upstream was another target's (the first's), whose addresses are not this one's. Likewise
   * the first takes nothing when it answered addresses, none of them the id's in the set in
   * use, while a later target answered one that is (that set was the later one's, made while
   * the first answered empty).
   * Example: `web-0.a.` answers empty, `web-0.b.` answers A 10.0.0.5 and its AAAA fails, the set
   * in use has web-0 at [fd00::5] and 10.0.0.5: `web-0.b.` keeps [fd00::5] (the url stays).
   */
  #inheritor(records: readonly SrvRecord[], queries: readonly Query[], inUse: readonly DiscoveredUpstream[]): (name: string) => boolean {
    const listed = new Map<string, string[]>()
    for (const u of inUse) {
      if (!listed.has(u.id)) listed.set(u.id, (u.addresses ?? [u.url]).map(urlHost).filter((h): h is string => h !== undefined))
    }
    const answered = new Map<string, string[]>()
    const keeps = new Set<string>()
    for (const q of queries) {
      if (q.failed === undefined) {
        if ((q.addresses?.length ?? 0) > 0) answered.set(q.name, [...(answered.get(q.name) ?? []), ...q.addresses!])
      } else if ((this.#known.get(q.key)?.length ?? 0) > 0 || (listed.get(srvTargetId(q.name)) ?? []).some((a) => (isIPv6(a) ? 6 : 4) === q.family)) {
        keeps.add(q.name)
      }
    }
    const first = new Map<string, string>()
    const makes = new Map<string, string>()
    for (const r of srvOrder(records)) {
      const id = srvTargetId(r.name)
      if (!first.has(id)) first.set(id, r.name)
      if (!makes.has(id) && (answered.has(r.name) || keeps.has(r.name))) makes.set(id, r.name)
    }
    const owns = (name: string): boolean => (answered.get(name) ?? []).some((a) => listed.get(srvTargetId(name))?.includes(a) === true)
    // ids one of whose targets answered an address the set in use lists for it: that set was its
    const claimed = new Set([...answered.keys()].filter(owns).map(srvTargetId))
    return (name) => {
      const id = srvTargetId(name)
      // the first, unless it answered addresses of its own, none listed, while another target
      // of the id answered one that is: then the set in use was that one's, not the first's
      if (first.get(id) === name) return !answered.has(name) || owns(name) || !claimed.has(id)
      return makes.get(id) === name && owns(name)
    }
  }

  /**
   * The addresses each query had: those it gave to the last applied resolution; else, with
   * `srv`, those of its target in the set in use (`inUse`, from `previous`), by family: before
   * this resolver applied any (with workers, a new lead: its predecessor's), or for a target
   * back in the SRV answer after it left one (still draining in the set in use). So a failed or
   * kept-empty query there keeps them too instead of moving the target's url. Only a target
   * that `inherits` its id's (`#inheritor`: the one that makes the id) takes them.
   */
  #had(inUse: readonly DiscoveredUpstream[], inherits: (name: string) => boolean): (q: Query) => readonly string[] | undefined {
    const known = this.#known
    if (!this.#srv) return (q) => known.get(q.key)
    const listed = new Map<string, readonly string[]>()
    for (const u of inUse) {
      if (!listed.has(u.id)) listed.set(u.id, (u.addresses ?? [u.url]).map(urlHost).filter((h): h is string => h !== undefined))
    }
    return (q) => known.get(q.key) ?? (inherits(q.name) ? listed.get(srvTargetId(q.name))?.filter((a) => (isIPv6(a) ? 6 : 4) === q.family) : undefined)
  }

  /**
   * Since when the set in use (`inUse`) has kept an empty family (`keptEmpty`) of each target in
   * `names` whose query of that family this resolver knows nothing of, by query key: a new lead
   * (workers) goes on counting the grace from its predecessor's first empty answer, and a target
   * back in the SRV answer (it left one, and drains in the set in use) from its own.
   */
  #inherited(names: readonly string[], inUse: readonly DiscoveredUpstream[]): Map<string, KeptSince> {
    const byId = new Map(inUse.map((u) => [u.id, keptFamilies(u)]))
    const inherited = new Map<string, KeptSince>()
    const [now, wall] = [monotonicNow(this.#clock), this.#clock.now()]
    for (const name of names) {
      for (const kept of byId.get(srvTargetId(name)) ?? []) {
        if (this.#known.has(queryKey(name, kept.family))) continue
        inherited.set(queryKey(name, kept.family), { at: now - Math.max(0, wall - kept.since), wall: kept.since, ...(kept.base === undefined ? {} : { base: kept.base }) })
      }
    }
    return inherited
  }

  /**
   * Of an SRV resolution's queries (family 'any'), those that answered empty and keep their last
   * addresses (see the class doc), with the time of their first such answer: the target had
   * addresses of that family, its other family answered, or failed, with every address it had
   * when the family began to be kept (not none; more is fine), and `emptyFamilyGrace` has not passed since that first empty answer;
   * and those of them that fail now (they keep their addresses as failed, and their time).
   */
  #keptEmpty(queries: readonly Query[], hadOf: (q: Query) => readonly string[] | undefined, inherited: ReadonlyMap<string, KeptSince>, notes: string[]): Map<string, KeptSince> {
    const now = monotonicNow(this.#clock)
    const byKey = new Map(queries.map((q) => [q.key, q]))
    const kept = new Map<string, KeptSince>()
    for (const q of queries) {
      // a kept family whose query fails now keeps its addresses (as any failed query) and its
      // time: a failure says nothing of the family, so the grace does not start again at its
      // next empty answer, and the set (which says since when) does not change
      const carried = q.failed === undefined ? undefined : this.#emptySince.get(q.key) ?? inherited.get(q.key)
      if (carried !== undefined) kept.set(q.key, carried)
      if (q.empty === undefined || (hadOf(q)?.length ?? 0) === 0) continue
      const other = byKey.get(queryKey(q.name, q.family === 4 ? 6 : 4))
      const had = other === undefined ? undefined : hadOf(other)
      const has = other?.failed === undefined ? other?.addresses : had
      if (had === undefined || has === undefined || had.length === 0) continue
      // the other family still lists every address it had when this one began to be kept (one
      // more is the same pod too: its old address still answers; one of those lost is what a
      // re-created pod looks like; one listed since then that leaves again is neither)
      const known = this.#emptySince.get(q.key) ?? inherited.get(q.key)
      const base = known?.base ?? had
      if (!base.every((a) => has.includes(a))) continue
      const grew = has.some((a) => !base.includes(a))
      const since = known ?? { at: now, wall: this.#clock.now(), base: had }
      const [type, otherType] = q.family === 4 ? ['A', 'AAAA'] : ['AAAA', 'A']
      const list = hadOf(q)!.join(', ')
      if (now - since.at < this.#emptyFamilyGrace) {
        kept.set(q.key, since)
        if (known === undefined && !this.#notedRecently(q.key, now)) notes.push(`${type} of ${q.name} answered empty while its ${otherType} ${grew ? 'still lists its addresses' : 'is unchanged'}: keeping its last addresses (${list}) for up to ${this.#emptyFamilyGrace} ms`)
      } else if (known !== undefined) {
        notes.push(`${type} of ${q.name} answered empty for ${this.#emptyFamilyGrace} ms: its addresses (${list}) go`)
      }
    }
    return kept
  }

  /** True when `key`'s family was noted as newly kept less than `emptyFamilyGrace` ago (else notes it now). */
  #notedRecently(key: string, now: number): boolean {
    for (const [k, at] of this.#noted) if (now - at >= this.#emptyFamilyGrace) this.#noted.delete(k)
    if (this.#noted.has(key)) return true
    this.#noted.set(key, now)
    return false
  }
}

/** When a query began to answer empty while keeping its addresses: monotonic ms (to count the grace), and the wall time it travels as (KeptEmptyFamily). */
interface KeptSince {
  readonly at: number
  readonly wall: number
  /**
   * The other family's addresses when this one began to be kept: while they are all still
   * listed, it is the same pod. Taken over from the set in use (a new lead, a returning target)
   * with the rest (KeptEmptyFamily.base); absent only when the set in use had none (an older
   * Tether's lead): then its other family's addresses listed there.
   */
  readonly base?: readonly string[]
}

/**
 * `upstreams` (SRV) with `keptEmpty` set on each whose target has a family in `emptySince`:
 * the target that made the upstream (`targets`, by id), not another with the same first label.
 */
function withKeptEmpty(upstreams: readonly DiscoveredUpstream[], emptySince: ReadonlyMap<string, KeptSince>, targets: ReadonlyMap<string, SrvRecord>): readonly DiscoveredUpstream[] {
  if (emptySince.size === 0) return upstreams
  const byId = new Map<string, KeptEmptyFamily[]>()
  for (const [id, { name }] of targets) {
    const kept = ([4, 6] as const).flatMap((family) => {
      const k = emptySince.get(queryKey(name, family))
      return k === undefined ? [] : [Object.freeze({ family, since: k.wall, ...(k.base === undefined ? {} : { base: k.base }) })]
    })
    // the one kept first is `keptEmpty` (an older Tether reads that one only)
    if (kept.length > 0) byId.set(id, kept.sort((a, b) => a.since - b.since || a.family - b.family))
  }
  return Object.freeze(upstreams.map((u) => {
    const [keptEmpty, keptEmptyAlso] = byId.get(u.id) ?? []
    return keptEmpty === undefined ? u : Object.freeze({ ...u, keptEmpty, ...(keptEmptyAlso === undefined ? {} : { keptEmptyAlso }) })
  }))
}

/** One A or AAAA query of a resolution: its addresses (`empty` for an empty answer), or `failed` with its code. */
interface Query {
  readonly key: string
  readonly name: string
  readonly family: 4 | 6
  readonly addresses?: readonly string[]
  readonly empty?: string
  readonly failed?: string
  readonly cause?: unknown
}

/** The address of an upstream url (IPv6 without brackets), or undefined. Example: `urlHost('http://[fd00::5]:8080')` -> `'fd00::5'`. */
function urlHost(url: string): string | undefined {
  try {
    const host = new URL(url).hostname.replace(/^\[(.*)\]$/, '$1')
    return isIP(host) === 0 ? undefined : host
  } catch {
    return undefined
  }
}

function queryKey(name: string, family: 4 | 6): string {
  return `${family} ${name.toLowerCase()}`
}

function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : 'EUNKNOWN'
}

function unref(handle: unknown): void {
  if (typeof handle === 'object' && handle !== null && 'unref' in handle && typeof handle.unref === 'function') {
    handle.unref()
  }
}

/** Runs a hook; an exception is rethrown on a later tick (loud, like an EventEmitter listener) so the loop survives. */
function callHook(hook: () => void): void {
  try {
    hook()
  } catch (err) {
    process.nextTick(() => {
      throw err
    })
  }
}
