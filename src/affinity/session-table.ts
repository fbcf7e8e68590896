// The session table: which upstream each table-keyed user is pinned to (application cookie,
// client IP, header), with learning and rotation of application cookies and reconciliation
// with the bindings other Tether replicas made. Layer 2 state owner: no I/O of its own (shared
// bindings are written through the injected sink), no clock (every call takes `now`).
import type { AffinityEntry } from './store.js'
import type { Binding } from '../routing/decision.js'
import { AffinityTable } from './table.js'
import { ownCopy, type KeySlots } from './key-slots.js'
import { BoundedMap } from './bounded-map.js'

/** Where pins are written through for other Tether replicas (`affinity.shared`); absent: local only. */
export interface BindingSink {
  /**
   * `renewal`: a binding published again to renew it (see {@link SessionTable.sync}) while the
   * others still hold it, so no answer need wait for it (unless another table evicted it for
   * room, which this one cannot know). `createdAt`: the binding's creation time here (ms), so
   * an absolute timeout ends it at the same time everywhere.
   */
  bound(key: string, upstream: string, epoch: number, renewal: boolean, createdAt: number): void
  unbound(key: string): void
  /**
   * An application cookie value replaced (`grace`: where it still routes) or deleted (null);
   * absent: told as unbound. `createdAt`: the creation time of the binding the value held (null:
   * none, a value never pinned), which ends the grace with the user's affinity (absolute_timeout).
   */
  retired?(key: string, grace: Grace | null, createdAt: number | null): void
}

/** A binding as the shared store holds it. */
export interface SharedBinding {
  readonly upstream: string
  readonly epoch: number
  /**
   * When it was placed (ms; the creation time of the pin its writer held, see
   * {@link BindingSink.bound}); null or absent: unknown (a Tether from before it wrote it).
   */
  readonly placedAt?: number | null
}

/** Bindings other Tether replicas made (`affinity.shared`), looked up before routing (bounded). */
export interface SharedBindings {
  /** The binding of `key`; null when none; 'unavailable' when the store did not answer in time. */
  lookup(key: string): Promise<SharedBinding | null | 'unavailable'>
}

export interface SessionTableOptions {
  readonly maxEntries: number
  readonly idleTimeout: number
  readonly absoluteTimeout: number | null
  readonly sink?: BindingSink | null
  /** The key index shared with the session records (each user's key held once); default: a private one. */
  readonly slots?: KeySlots
}

/** How long an application cookie value replaced by a new one still routes (ms), and how many are kept. */
export const ROTATION_GRACE = 60_000
const ROTATED_MAX = 10_000

/** A binding that expired from the table or was rotated away but still routes for a while. */
export interface Grace {
  readonly upstream: string
  readonly epoch: number
}

/**
 * Example: `sessions.pin('10.0.0.5', 'app-1', 0, now)`; later `sessions.get('10.0.0.5', now)`
 * -> `{ upstream: 'app-1', epoch: 0, ... }`. An application that rotates its cookie
 * (`retire('old', { upstream: 'app-1', epoch: 0 }, now)`, then `pin('new', ...)`) leaves one
 * entry per user, and 'old' still routes to app-1 for {@link ROTATION_GRACE} ms.
 */
export class SessionTable {
  /** The bindings (also read by metrics and the admin API). */
  readonly table: AffinityTable
  readonly #sink: BindingSink | null
  readonly #syncPeriod: number
  readonly #idleTimeout: number
  readonly #absoluteTimeout: number
  /** Application cookie values replaced by a new one, still routed for ROTATION_GRACE (bounded, oldest first out). */
  readonly #rotated = new BoundedMap<string, Grace & { readonly until: number; readonly createdAt: number | null }>(ROTATED_MAX)
  /**
   * The same for values that were not pinned here (routed by their hash: a value Tether never
   * learned, such as garbage cookies an application replaces): kept apart, so a flood of them
   * cannot push the graces of pinned users out of {@link #rotated}.
   */
  readonly #rotatedUnpinned = new BoundedMap<string, Grace & { readonly until: number; readonly createdAt: number | null }>(ROTATED_MAX)
  /**
   * Placements decided but not answered yet (a pin is recorded only when the upstream answers):
   * counted as load, so concurrent new users respect `balance_factor`. Bounded by the requests
   * in flight: each is settled when its pin is recorded or its attempt ends.
   */
  readonly #reserved = new Set<Binding>()
  readonly #reservedBy = new Map<string, number>()
  /** Keys to reconcile with the shared store at their next request, whatever the sync period (see {@link resync}; bounded, oldest first out). */
  readonly #resync = new BoundedMap<string, true>(ROTATED_MAX)

  constructor(options: SessionTableOptions) {
    const { maxEntries, idleTimeout, absoluteTimeout, slots } = options
    this.table = new AffinityTable({ maxEntries, idleTimeout, absoluteTimeout, slots })
    this.#sink = options.sink ?? null
    this.#syncPeriod = Math.min(options.idleTimeout / 10, 5_000)
    this.#idleTimeout = idleTimeout
    this.#absoluteTimeout = absoluteTimeout ?? Infinity
  }

  /** The live binding of `key` (a use: slides its idle expiry), or null. */
  get(key: string, now: number): AffinityEntry | null {
    return this.table.get(key, now)
  }

  /** The live binding of `key` without counting it as a use, or null. */
  peek(key: string, now: number): AffinityEntry | null {
    return this.table.peek(key, now)
  }

  /** Pin `key` to `upstream` at `epoch`, here and (written through) for the other replicas. */
  pin(key: string, upstream: string, epoch: number, now: number): void {
    this.table.set(key, upstream, epoch, now)
    if (this.#sink !== null) this.#sink.bound(key, upstream, epoch, false, this.table.peek(key, now)!.createdAt)
  }

  /**
   * As {@link pin}, for a binding that continues another one created at `createdAt` (an
   * application cookie value replacing the one the request carried): the new binding keeps that
   * creation time, so `absolute_timeout` ends the user's affinity however often the application
   * rotates its cookie. Not made, false returned, when `createdAt` is longer than the absolute
   * timeout ago: the affinity it continues is over (its next request is placed afresh, as one
   * carrying the expired value would be).
   * Example, absolute 120 s: `continuePin('v2', 'app-1', 0, t0 + 90_000, t0)` -> true, 'v2' expires at t0 + 120 s.
   */
  continuePin(key: string, upstream: string, epoch: number, now: number, createdAt: number): boolean {
    if (now - createdAt > this.#absoluteTimeout) return false
    this.table.setCreated(key, upstream, epoch, now, createdAt)
    if (this.#sink !== null) this.#sink.bound(key, upstream, epoch, false, this.table.peek(key, now)!.createdAt)
    return true
  }

  /**
   * The creation time of the binding `key` holds (live), or of the one it held before it was
   * rotated away (while its grace runs, when it was pinned here), else null.
   */
  createdAt(key: string, now: number): number | null {
    const held = this.table.peek(key, now)
    if (held !== null) return held.createdAt
    const g = this.#rotated.get(key)
    return g !== undefined && g.until > now ? g.createdAt : null
  }

  /**
   * As {@link pin}, for the answer to a request that placed or moved `key`, routed at
   * `placedAt`: the pin is created at `placedAt` (the placement that request's checkpoint
   * carries; now when that is past the absolute timeout). Not made, false returned, when the key
   * holds a live pin at `epoch` on another upstream placed later: the key was placed again
   * while this request was out (its pin expired or was evicted), and the store refuses this
   * answer's checkpoint for that placement's (`superseded`), so the user must stay there.
   */
  place(key: string, upstream: string, epoch: number, now: number, placedAt: number): boolean {
    const held = this.table.peek(key, now)
    if (held !== null && held.epoch === epoch && held.upstream !== upstream && held.createdAt > placedAt) return false
    this.table.setCreated(key, upstream, epoch, now, now - placedAt > this.#absoluteTimeout ? now : placedAt)
    if (this.#sink !== null) this.#sink.bound(key, upstream, epoch, false, this.table.peek(key, now)!.createdAt)
    return true
  }

  /** Record `key` on `upstream` locally only (a cookie session counted for bounded loads). */
  count(key: string, upstream: string, epoch: number, now: number): void {
    this.table.set(key, upstream, epoch, now)
  }

  /** Forget `key`, here and for the other replicas. */
  unpin(key: string): void {
    this.table.delete(key)
    this.#sink?.unbound(key)
  }

  /**
   * Where a recently rotated application cookie value still routes, or null: its grace is over,
   * or the binding it was rotated from was created longer than the absolute timeout ago (the
   * user's affinity is over, as that binding's would be; a grace without a creation time, of a
   * value that was not pinned, runs its whole time).
   * Example, absolute 120 s: a value pinned at t0 and replaced at t0 + 110 s routes until t0 + 120 s, not t0 + 170 s.
   */
  rotated(key: string, now: number): Grace | null {
    const g = this.#rotated.get(key)
    if (g !== undefined && this.#graceRuns(g, now)) return g
    const u = this.#rotatedUnpinned.size === 0 ? undefined : this.#rotatedUnpinned.get(key)
    return u !== undefined && this.#graceRuns(u, now) ? u : null
  }

  #graceRuns(g: { readonly until: number; readonly createdAt: number | null }, now: number): boolean {
    return g.until > now && (g.createdAt === null || now - g.createdAt <= this.#absoluteTimeout)
  }

  /**
   * An application cookie value the upstream replaced (Laravel re-encrypts its cookie on every
   * answer) or deleted: `from` is forgotten, but a replaced one (`grace` given) still routes to
   * the same upstream for {@link ROTATION_GRACE} ms, since requests already in flight carry it.
   */
  retire(from: string, grace: Grace | null, now: number): void {
    const createdAt = this.table.peek(from, now)?.createdAt ?? null
    if (this.#sink?.retired === undefined) this.unpin(from)
    // (retired again, by a parallel answer: the creation time its grace has)
    else this.#sink.retired(from, grace, createdAt ?? this.#rotated.get(from)?.createdAt ?? null)
    this.#retired(from, grace, now, createdAt)
  }

  /**
   * The rotation graces still running (key, where it routes, until when, whether it was pinned,
   * the creation time of the binding it was rotated from or null), oldest first in each kind: a
   * starting worker's copy.
   */
  *rotations(now: number): IterableIterator<readonly [key: string, upstream: string, epoch: number, until: number, pinned: boolean, createdAt: number | null]> {
    for (const [key, g] of this.#rotatedUnpinned) if (this.#graceRuns(g, now)) yield [key, g.upstream, g.epoch, g.until, false, g.createdAt]
    for (const [key, g] of this.#rotated) if (this.#graceRuns(g, now)) yield [key, g.upstream, g.epoch, g.until, true, g.createdAt]
  }

  /**
   * A rotation grace copied from a sibling (see {@link rotations}); one held here already is
   * newer and stays. `createdAt`: the creation time of the binding it was rotated from (at most
   * now), so a value rotated again from it continues that binding and the grace ends with the
   * user's affinity, as on the sibling; null (unknown: a sibling of an older build): a value
   * rotated from it starts a binding afresh, and the grace runs its whole time.
   * Example, absolute 120 s: `copyRotation('v1', 'app-1', 0, t0 + 150_000, t0 + 100_000, true, t0 + 20_000)`
   * routes 'v1' until t0 + 140 s.
   */
  copyRotation(key: string, upstream: string, epoch: number, until: number, now: number, pinned = true, createdAt: number | null = null): void {
    const created = createdAt === null ? null : Math.min(createdAt, now)
    if (!this.#graceRuns({ until, createdAt: created }, now) || this.rotated(key, now) !== null) return
    ;(pinned ? this.#rotatedUnpinned : this.#rotated).delete(key)
    ;(pinned ? this.#rotated : this.#rotatedUnpinned).set(ownCopy(key), { upstream, epoch, until, createdAt: created })
  }

  /**
   * A retirement another worker made (see {@link retire}): applied here only. `createdAt`: the
   * creation time of the binding `from` held there (null: none, or unknown, from a worker of an
   * older build): taken over the one held here, so the grace ends as it does there, also where
   * the binding was not held (evicted for room).
   */
  applyRetired(from: string, grace: Grace | null, now: number, createdAt: number | null = null): void {
    this.#retired(from, grace, now, createdAt === null ? this.table.peek(from, now)?.createdAt ?? null : Math.min(createdAt, now))
  }

  /** `createdAt`: the creation time of the binding `from` held here (live), null when it held none. */
  #retired(from: string, grace: Grace | null, now: number, createdAt: number | null): void {
    this.table.delete(from)
    if (grace === null) return
    // a pinned value's grace (or one it has already: a parallel answer retiring it again) is
    // kept apart from the others' (see #rotatedUnpinned)
    const before = this.#rotated.get(from)
    const kept = createdAt !== null || before !== undefined
    const into = kept ? this.#rotated : this.#rotatedUnpinned
    if (kept && this.#rotatedUnpinned.size !== 0) this.#rotatedUnpinned.delete(from)
    // retired again (a parallel answer): the creation time it had when first retired stays
    into.set(ownCopy(from), { upstream: grace.upstream, epoch: grace.epoch, until: now + ROTATION_GRACE, createdAt: createdAt ?? before?.createdAt ?? null })
  }

  /**
   * A pin another worker made, applied here only: a higher epoch wins; at the same epoch the
   * smaller upstream id, so two workers that placed a user at once agree on one. The binding
   * takes the writer's creation time `createdAt`; of two upstreams at one epoch, the one kept
   * takes the later creation time of the two (so its checkpoints, which carry it, are not
   * refused for the other placement's: see {@link place}). Example: local app-2 at epoch 1,
   * `applyRemote('k', 'app-1', 1, now, created)` -> app-1; `applyRemote('k', 'app-3', 0, now, created)` -> unchanged.
   * A pin at a lower epoch than the one held comes from a worker that did not know this user's
   * later move (it had evicted the binding for room, or it expired there a little earlier, or
   * its copy at start ended short) or, at the same epoch, one placed afresh there elsewhere (an
   * upstream added since): the binding held here is told to the others again, so that worker
   * routes the user as this one does from then on (no answer waits for it); `resend` false: a
   * pin of this worker's own, applied again (WorkerLink), tells nothing.
   */
  applyRemote(key: string, upstream: string, epoch: number, now: number, createdAt: number, resend = true): void {
    const local = this.table.peek(key, now)
    // two placements of one epoch on two upstreams: whichever routing keeps takes the later
    // creation time of the two, as checkpoints carry it (`placedAt`) and the store keeps the
    // later placement's: else the kept upstream's checkpoints would be refused `superseded`
    // for as long as the other's is stored
    const rival = local !== null && epoch === local.epoch && upstream !== local.upstream
    if (local === null || epoch > local.epoch || (epoch === local.epoch && upstream <= local.upstream)) {
      this.table.setCreated(key, upstream, epoch, now, rival ? Math.max(createdAt, local.createdAt) : createdAt)
    } else {
      if (rival && createdAt > local.createdAt) this.table.setCreated(key, local.upstream, local.epoch, now, createdAt)
      if (!resend || this.#sink === null) return
      // after the writes that came with this one (an unpin of the user, or a later move sent
      // by its own maker, among them: no re-send)
      const sink = this.#sink
      const refusing = local
      queueMicrotask(() => {
        const held = this.table.peek(key, now)
        if (held !== null && held.upstream === refusing.upstream && held.epoch === refusing.epoch) sink.bound(key, held.upstream, held.epoch, true, held.createdAt)
      })
    }
  }

  /**
   * A binding from a sibling's snapshot (a starting worker), with its times there (a time that
   * is not a number, from a worker of an older build, counts as now); the snapshot lists the
   * most recently used first, and each is added behind those held (see AffinityTable.append).
   * Other workers' writes are applied after the snapshot (WorkerLink.attach), so nothing held
   * here is older than the copy: a key held is left as it is.
   */
  applyCopy(key: string, upstream: string, epoch: number, createdAt: number, lastSeen: number, now: number): void {
    const seen = Number.isFinite(lastSeen) ? lastSeen : now
    this.table.append(key, upstream, epoch, Number.isFinite(createdAt) ? createdAt : seen, seen, now)
  }

  /**
   * With shared bindings: must `key` be checked against the shared store before routing?
   * Yes when there is no live local entry, or it was last used in an earlier sync period
   * (every min(idle_timeout / 10, 5 s) of use), so another replica's move is seen and the
   * shared TTL renewed.
   */
  needsSync(key: string, now: number): boolean {
    const entry = this.table.peek(key, now)
    return entry === null || Math.floor(entry.lastSeen / this.#syncPeriod) < Math.floor(now / this.#syncPeriod) ||
      (this.#resync.size !== 0 && this.#resync.get(key) !== undefined)
  }

  /**
   * Reconcile `key` with the shared store at its next request (see {@link needsSync}), not only
   * in its next sync period: the store kept another binding over the one written through (a
   * higher epoch, or a rival of the same epoch on a smaller upstream id), or a checkpoint of its
   * binding was refused as `superseded` (another replica placed the key at the same epoch on
   * another upstream): the store may hold a later placement time, or the other upstream, that
   * this pin has not taken yet.
   */
  resync(key: string): void {
    if (this.#sink !== null) this.#resync.set(ownCopy(key), true)
  }

  /**
   * Reconcile `key` with what the shared store holds (null: nothing): a binding with a higher
   * epoch (another replica moved the user), or the same epoch on a smaller upstream id (two
   * replicas moved the user at once: the store's script keeps that one too), replaces the local
   * one; a local one that is newer, or missing from the store, is published again (renewing its TTL).
   * The binding taken keeps the placement time the store holds (so every replica's checkpoints
   * of it carry the same `placedAt`; unknown: now, as before that time was stored); of two
   * upstreams at one epoch, the one kept takes the later of the two times, as in
   * {@link applyRemote}, and a local binding the store holds with a later time takes that time.
   */
  sync(key: string, shared: SharedBinding | null, now: number): void {
    if (this.#resync.size !== 0) this.#resync.delete(key)
    const local = this.table.peek(key, now)
    if (shared !== null && (local === null || shared.epoch > local.epoch || (shared.epoch === local.epoch && shared.upstream < local.upstream))) {
      const rival = local !== null && shared.epoch === local.epoch
      const placed = shared.placedAt ?? now
      const at = rival ? Math.max(placed, local.createdAt) : placed
      this.table.setCreated(key, shared.upstream, shared.epoch, now, now - at > this.#absoluteTimeout ? now : at)
    } else if (local !== null) {
      // a renewal, unless the others' copy may be close to expiring: it was renewed at the first
      // use of a sync period, up to one period before this table's last use, so up to one
      // period older; then it brings the binding back there (news, see BindingSink.bound). A
      // binding copied from a sibling at start has the times it had there (applyCopy).
      const margin = 2 * this.#syncPeriod
      const renewal = now - local.lastSeen < this.#idleTimeout - margin && now - local.createdAt < this.#absoluteTimeout - margin
      // the same binding, or a rival of its epoch, placed later elsewhere: this one takes that time
      const later = shared !== null && shared.epoch === local.epoch && shared.placedAt != null && shared.placedAt > local.createdAt
      if (later) this.table.setCreated(key, local.upstream, local.epoch, now, shared.placedAt!)
      this.#sink?.bound(key, local.upstream, local.epoch, renewal, later ? this.table.peek(key, now)!.createdAt : local.createdAt)
    }
  }

  /** Bindings held for `upstream`. */
  countByUpstream(upstream: string): number {
    return this.table.countByUpstream(upstream)
  }

  /** Count `binding` as load on its upstream until {@link settle} (a placement in flight). */
  reserve(binding: Binding): void {
    if (this.#reserved.has(binding)) return
    this.#reserved.add(binding)
    this.#reservedBy.set(binding.upstream, (this.#reservedBy.get(binding.upstream) ?? 0) + 1)
  }

  /** The placement of `binding` was recorded or abandoned (idempotent). */
  settle(binding: Binding): void {
    if (!this.#reserved.delete(binding)) return
    const n = this.#reservedBy.get(binding.upstream)! - 1
    if (n === 0) this.#reservedBy.delete(binding.upstream)
    else this.#reservedBy.set(binding.upstream, n)
  }

  /** The load bounded placement reads: bindings held for `upstream` plus placements in flight there. */
  loadOf(upstream: string): number {
    return this.table.countByUpstream(upstream) + (this.#reservedBy.get(upstream) ?? 0)
  }

  /** The total bounded placement reads: every binding plus every placement in flight. */
  get load(): number {
    return this.table.size + this.#reserved.size
  }

  get size(): number {
    return this.table.size
  }

  /** Remove up to `budget` expired bindings (called by the owned background sweep). */
  sweep(now: number, budget: number): number {
    return this.table.sweep(now, budget)
  }
}
