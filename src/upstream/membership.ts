// Membership: the current upstreams, from the static list in proxy.yaml and from discovery
// sources (DNS, Kubernetes). One gone from discovery drains (no new users), then leaves after
// `drain_timeout`; one a source reports draining (a terminating pod) drains while listed. Layer 2
// state owner: publishes one frozen snapshot per change, no proxying, no I/O; timers injected.
import type { UpstreamConfig } from '../config/schema.js'
import { systemTimers, type Timers } from '../clock.js'
import { goneByUnready, keptFields, onlyKeptChanged, upstreamSet, type DiscoveredUpstream, type ListedUpstream, type UpstreamSet } from './upstream-set.js'

const NOTHING_GONE: ReadonlySet<string> = new Set()

/**
 * Which source's entry an id listed by several takes (its url, weight, addresses, uid), first
 * first: Kubernetes (it knows the pod: its uid, whether it terminates) over DNS; any other
 * source after these, by name. A fixed order, not the order the sources reported in, so that
 * every Tether replica, and a worker that starts and gets the lists in another order, holds
 * the same url for the id.
 */
const SOURCE_PRECEDENCE: readonly string[] = ['kubernetes', 'dns']

/** Orders source names by SOURCE_PRECEDENCE. Example: ['dns', 'kubernetes'].sort(bySourcePrecedence) -> ['kubernetes', 'dns']. */
export function bySourcePrecedence(a: string, b: string): number {
  const rank = (s: string): number => { const i = SOURCE_PRECEDENCE.indexOf(s); return i < 0 ? SOURCE_PRECEDENCE.length : i }
  return rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0)
}

/**
 * An upstream another worker's membership drains since it left a discovery listing: `remaining`
 * ms of its `drain_timeout` are left (see Membership.setDiscovered).
 */
export interface LeavingUpstream {
  /** Its `drainingSince`, when set, is when its drain began (it was terminating before it left). */
  readonly upstream: DiscoveredUpstream
  /** When it left (ms since the epoch): its drain began then unless `upstream.drainingSince` says earlier (told to the `drain` hook). */
  readonly since: number
  /** What is left of its stay in the set (`drain_timeout` from `since`), in ms. */
  readonly remaining: number
}

export interface MembershipHooks {
  /**
   * The effective set changed. `gone`: ids that left it at once because the pod they were is
   * gone (another listed pod has its address, or its name is listed not ready under another
   * pod uid): not a planned removal (their users move as from a dead upstream, not a drained one).
   */
  onChange(upstreams: UpstreamSet, gone: ReadonlySet<string>): void
  /**
   * Start / stop draining an upstream (the health table owns the flag); `since`: the drain
   * began before now, on another worker (an upstream given as `leaving`).
   */
  drain(id: string, since?: number): void
  undrain(id: string): void
}

/**
 * Example: static [a]; discovery gives [b, c] -> set [a, b, c]; discovery then gives [c] ->
 * b drains, still in the set; `drainTimeout` later -> set [a, c]. If b comes back while
 * draining, it is undrained and stays. Discovery giving [c, d (draining)] -> d is in the set
 * and drains at once; d later listed without `draining` -> undrained. A reload replaces the
 * static list (setStatic). Several sources (`source` names them) are merged: an id listed
 * by two sources takes the entry of the first by SOURCE_PRECEDENCE (kubernetes, then dns),
 * whichever reported first, and is draining only if every source that lists it says so; static wins on an
 * id clash and is never drained by membership. Membership undrains only what it drained
 * (an admin's drain stays). A leaving upstream whose address a listed one now has leaves at
 * once: discovery [b] at 10.0.0.7, then [c] at 10.0.0.7 -> set [c]; so does one listed not
 * ready (`unready`) under another pod uid: [b uid 1], then [b uid 2 unready] -> set [] (b listed
 * not ready under its uid 1 drains). An unready entry is no upstream: its uid and addresses
 * count for these two rules only (another id listed not ready at a leaving one's address takes it).
 * An upstream that leaves at once by these rules is named in onChange's `gone`: its pod is gone
 * (its users move as from a dead upstream, not a drained one).
 */
export class Membership {
  #static: readonly UpstreamConfig[]
  readonly #drainTimeout: number
  readonly #hooks: MembershipHooks
  readonly #timers: Timers
  /** The last report of each discovery source. */
  readonly #sources = new Map<string, readonly DiscoveredUpstream[]>()
  /** The merged discovered upstreams (all sources), by id. */
  #discovered = new Map<string, ListedUpstream>()
  /** Discovered ids reported draining (terminating) by every source that lists them. */
  #terminating = new Set<string>()
  /** Of those, since when they drain elsewhere, where a list said (`drainingSince`: a worker that starts). */
  #terminatingSince = new Map<string, number>()
  /** Ids this membership told the health table to drain (so it undrains only those). */
  readonly #drained = new Set<string>()
  /** Upstreams gone from discovery, still draining: id -> (config, the removal it waits for). */
  readonly #leaving = new Map<string, { upstream: ListedUpstream; removal: Removal; since?: number; sources: readonly string[] }>()
  /** Pending removals (one timer for the upstreams that left in one answer: they go in one set). */
  readonly #removals = new Set<Removal>()
  #current: UpstreamSet

  constructor(staticUpstreams: readonly UpstreamConfig[], drainTimeout: number, hooks: MembershipHooks, timers: Timers = systemTimers) {
    this.#static = staticUpstreams
    this.#drainTimeout = drainTimeout
    this.#hooks = hooks
    this.#timers = timers
    this.#current = this.#compute()
  }

  /** The effective set: static, discovered and leaving upstreams (static wins on an id clash). */
  current(): UpstreamSet {
    return this.#current
  }

  /**
   * Apply a new answer of the discovery source `source` (its whole current list). Publishes
   * the new set, then drains what newly drains (gone or terminating) and undrains what came back.
   * `leaving`: upstreams that left this source's listing before this membership saw it (a worker
   * that starts gets them from the primary): each drains for its `remaining` ms, as on the
   * workers that saw it leave, unless listed (by any source) or gone by the rules above.
   * An upstream listed draining, or leaving, with `drainingSince` drains from then (the time
   * the other workers began its drain), not from now: its `drain_timeout` ends as on them.
   */
  setDiscovered(upstreams: readonly DiscoveredUpstream[], source = 'discovery', leaving: readonly LeavingUpstream[] = []): void {
    const before = new Map(this.#sources)
    this.#sources.set(source, upstreams)
    const next = new Map<string, ListedUpstream>()
    const terminating = new Set<string>()
    const serving = new Set<string>()
    const terminatingSince = new Map<string, number>()
    /** Pods listed that take no users (not ready): they hold their addresses, their uid names the pod. */
    const unready: DiscoveredUpstream[] = []
    // by precedence, not in report order: the first source listing an id gives its entry
    for (const [, list] of [...this.#sources].sort(([a], [b]) => bySourcePrecedence(a, b))) {
      for (const u of list) {
        if (u.unready === true) {
          unready.push(u)
          continue
        }
        if (!next.has(u.id)) next.set(u.id, listed(u))
        if (u.draining === true) terminating.add(u.id)
        else serving.add(u.id)
        if (u.draining === true && u.drainingSince !== undefined) terminatingSince.set(u.id, u.drainingSince)
      }
    }
    for (const id of serving) terminating.delete(id)
    // which sources listed each id (not unready) before this answer: one pass over each list,
    // not one per leaving id (a scale-down of thousands of pods at once would be quadratic)
    let listedBefore: Map<string, string[]> | null = null
    // the upstreams that leave now share one removal: their drain_timeouts end together, and a
    // set published per upstream (thousands after a scale-down) would rebuild it thousands of times
    let removal: Removal | null = null
    for (const [id, u] of this.#discovered) {
      if (next.has(id) || this.#isStatic(id) || this.#leaving.has(id)) continue
      removal ??= this.#removal(this.#drainTimeout)
      listedBefore ??= sourcesOf(before)
      const sources = listedBefore.get(id) ?? []
      removal.ids.add(id)
      this.#leaving.set(id, { upstream: u, removal, sources })
    }
    for (const id of next.keys()) {
      if (this.#leaving.has(id)) this.#stopLeaving(id)
    }
    // An address a listed upstream has now is no longer a leaving one's: its pod is gone and
    // the address went to another (Kubernetes hands out freed pod IPs again). Its users must
    // move now (with their state), not be served by that other pod until drain_timeout. Any
    // address listed for the other counts, not only the url it kept (a dual-stack pod seen in
    // its IPv6 slice first keeps that url while its IPv4 address is the leaving one's), and a
    // pod listed not ready counts too: the address is in its network namespace already.
    const taken = new Set([...next.values(), ...this.#static].flatMap((u: ListedUpstream) => u.addresses ?? [u.url]))
    // (not its own address listed for a pod that merely became not ready: that pod drains)
    // A leaving upstream's id listed not ready with another pod uid: the pod it was is gone (a
    // StatefulSet pod re-created under its name, often at its address, not started yet). Its
    // users must move now too, not reach the new pod's address until drain_timeout.
    const goneUnready = goneByUnready(unready)
    const gone = (upstream: ListedUpstream): boolean => taken.has(upstream.url) || goneUnready(upstream)
    // what a sibling drains since it left a listing this membership never saw (a worker that
    // starts): drains here too, until the same deadline; not what is listed, static, already
    // leaving or whose pod is gone by the rules above
    const removals = new Map<number, Removal>() // by remaining time: those that end together go together
    for (const { upstream, since, remaining } of leaving) {
      const u = listed(upstream)
      if (remaining <= 0 || next.has(u.id) || this.#isStatic(u.id) || this.#leaving.has(u.id) || gone(u)) continue
      const at = removals.get(remaining) ?? this.#removal(remaining)
      removals.set(remaining, at)
      at.ids.add(u.id)
      this.#leaving.set(u.id, { upstream: u, since: upstream.drainingSince ?? since, sources: [source], removal: at })
    }
    const left = new Set<string>()
    for (const [id, { upstream }] of this.#leaving) {
      if (!gone(upstream)) continue
      this.#stopLeaving(id)
      this.#drained.delete(id)
      left.add(id)
    }
    this.#discovered = next
    this.#terminating = terminating
    this.#terminatingSince = terminatingSince
    this.#publish(left)
    this.#syncDrains()
  }

  /**
   * What the discovery source `source` put in the effective set: the upstreams it lists now
   * (not those listed not ready) and those that left its listing and still drain, as it
   * reported them, minus ids a static upstream holds (static wins). Not another source's
   * upstream under the same id: a static `web-0`, or a Kubernetes pod `web-0`, is no SRV
   * target `web-0` (ids are only unique within a source; config validation cannot know
   * discovered names). Example: static [web-0], dns [web-0, web-1] -> `listedBy('dns')` = [web-1].
   */
  listedBy(source: string): readonly ListedUpstream[] {
    const own = (this.#sources.get(source) ?? []).filter((u) => u.unready !== true && !this.#isStatic(u.id)).map(listed)
    const ids = new Set(own.map((u) => u.id))
    const left = [...this.#leaving.values()].filter(({ upstream, sources }) => sources.includes(source) && !ids.has(upstream.id) && !this.#isStatic(upstream.id))
    return [...own, ...left.map(({ upstream }) => upstream)]
  }

  /** Replace the static upstreams (config reload); discovered ones stay. */
  setStatic(upstreams: readonly UpstreamConfig[]): void {
    this.#static = upstreams
    this.#publish()
    this.#syncDrains()
  }

  /** Cancel pending removals (on shutdown). */
  stop(): void {
    for (const { timer } of this.#removals) this.#timers.clearTimeout(timer)
    this.#removals.clear()
  }

  /** A removal of the upstreams added to its `ids`, `ms` from now. */
  #removal(ms: number): Removal {
    const removal: Removal = { ids: new Set(), timer: undefined }
    removal.timer = this.#timers.setTimeout(() => this.#leave(removal), ms)
    this.#removals.add(removal)
    return removal
  }

  /** `id` is no longer leaving (listed again, or gone at once): its removal forgets it. */
  #stopLeaving(id: string): void {
    const removal = this.#leaving.get(id)!.removal
    this.#leaving.delete(id)
    removal.ids.delete(id)
    if (removal.ids.size > 0) return
    this.#timers.clearTimeout(removal.timer)
    this.#removals.delete(removal)
  }

  /** The drain_timeout of `removal`'s upstreams ended: they leave the set, in one change. */
  #leave(removal: Removal): void {
    this.#removals.delete(removal)
    for (const id of removal.ids) {
      this.#leaving.delete(id)
      this.#drained.delete(id)
    }
    if (removal.ids.size > 0) this.#publish()
  }

  /** Drain what is leaving or terminating (once), undrain what membership drained and no longer is. */
  #syncDrains(): void {
    const shouldDrain = (id: string): boolean => !this.#isStatic(id) && (this.#leaving.has(id) || this.#terminating.has(id))
    for (const id of [...this.#leaving.keys(), ...this.#terminating]) {
      if (this.#drained.has(id) || !shouldDrain(id)) continue
      this.#drained.add(id)
      const since = this.#leaving.get(id)?.since ?? this.#terminatingSince.get(id)
      if (since === undefined) this.#hooks.drain(id)
      else this.#hooks.drain(id, since)
    }
    for (const id of this.#drained) {
      if (shouldDrain(id)) continue
      this.#drained.delete(id)
      if (this.#current.get(id) !== undefined) this.#hooks.undrain(id)
    }
  }

  /**
   * Publishes the new set; one that differs only in the empty families DNS discovery keeps (a
   * stale-NODATA cache flapping, each flap a `keptEmpty` on and off) is taken as current
   * without onChange: no rebuild, no `upstreams updated`.
   */
  #publish(gone: ReadonlySet<string> = NOTHING_GONE): void {
    const before = this.#current
    this.#current = this.#compute()
    if (gone.size === 0 && onlyKeptChanged(before, this.#current)) return
    this.#hooks.onChange(this.#current, gone)
  }

  #compute(): UpstreamSet {
    const all = new Map<string, ListedUpstream>()
    for (const { upstream } of this.#leaving.values()) all.set(upstream.id, upstream)
    for (const u of this.#discovered.values()) all.set(u.id, u)
    for (const u of this.#static) all.set(u.id, u)
    return upstreamSet([...all.values()])
  }

  #isStatic(id: string): boolean {
    return this.#static.some((u) => u.id === id)
  }
}

/** Upstreams leaving together: removed from the set when `timer` fires. */
interface Removal {
  readonly ids: Set<string>
  timer: unknown
}

/** The sources listing each id (not unready), in the sources' order. */
function sourcesOf(sources: ReadonlyMap<string, readonly DiscoveredUpstream[]>): Map<string, string[]> {
  const by = new Map<string, string[]>()
  for (const [name, list] of sources) {
    for (const u of list) {
      if (u.unready === true) continue
      const names = by.get(u.id)
      if (names === undefined) by.set(u.id, [name])
      else if (!names.includes(name)) names.push(name)
    }
  }
  return by
}

/** A discovered upstream as membership keeps it (its draining and unready flags left out). */
function listed(u: DiscoveredUpstream): ListedUpstream {
  return { id: u.id, url: u.url, weight: u.weight, ...(u.addresses === undefined ? {} : { addresses: u.addresses }), ...(u.uid === undefined ? {} : { uid: u.uid }), ...keptFields(u) }
}
