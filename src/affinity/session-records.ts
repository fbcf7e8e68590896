// Session records: what this Tether process saw of each user beyond their pin, for operators
// and for drains that migrate: when the user was last answered (and by which upstream, at which
// epoch), their last move, a move an admin ordered, and the logged forms of their keys once
// something logged them. Layer 2 state owner: bounded, no I/O, no clock (every call takes `now`;
// the lookup's pauses are the caller's); never decides routing.
import type { RequestKey } from './key.js'
import type { Decision, MoveReason } from '../routing/decision.js'
import type { AffinityEntry } from './store.js'
import { AffinityTable, TIME_MAX, TIME_SLACK } from './table.js'
import { KeySlots, growCapacity } from './key-slots.js'
import { HASHED_PREFIX, SessionIds } from './session-id.js'
import { BoundedMap } from './bounded-map.js'
import type { WireRecord as RecordCopy } from '../workers/messages.js'

/** How many last moves and orders are kept (oldest out). */
export const RECORDS_SIDE_MAX = 100_000
/** Bytes of a logged form's digest: the 32 hex digits after `h:`. */
const DIGEST_BYTES = 16
/** Digest slots allocated at first use, at most (as the table's columns: untouched pages cost no RSS). */
const PREALLOCATED = 1 << 22
/** Keys a lookup by logged form hashes between pauses (~10 ms of HMACs). */
const RESOLVE_SLICE = 2048

/** A user's last move, as the lookup shows it. */
export interface MoveRecord {
  readonly from: string
  readonly to: string
  readonly reason: MoveReason
  readonly at: number
}

/** A move an admin ordered, done at the user's next request: to an upstream, or (null) wherever the hash now places them. */
export interface MoveOrder {
  readonly to: string | null
  readonly at: number
}

export interface SessionRecordsOptions {
  /** Most users recorded (least recently answered out): `affinity.max_entries`. */
  readonly maxEntries: number
  /** A user not answered for this long is forgotten: `affinity.idle_timeout`. */
  readonly idleTimeout: number
  /** `log.session_secret` (null: random per process). */
  readonly secret: string | null
  /** The key index shared with the session table (each user's key held once); default: a private one. */
  readonly slots?: KeySlots
  /**
   * The session table's bindings, on `slots`: a table key it holds is recorded as an answer time
   * by slot (4 bytes) and read with the binding (upstream, epoch, first pin) instead of as an
   * entry of its own (22 bytes a slot: at a million users and two workers, 36 MB). Absent: every
   * user is recorded as an entry of its own.
   */
  readonly pins?: AffinityTable
}

/**
 * Example: after app-1 answered a user whose cookie holds session id 'Qk3x', `records.seen('Qk3x', now)`
 * -> `{ upstream: 'app-1', epoch: 0, createdAt, lastSeen }`; an admin's `records.order('Qk3x', 'app-2', now)`
 * makes `records.ordered('Qk3x')` -> `{ to: 'app-2', at }` until an answer from app-2 for that user.
 */
export class SessionRecords {
  /** Names sessions for the access log and the lookup. */
  readonly ids: SessionIds
  /**
   * Users answered here lately that {@link #pins} does not hold (Tether's cookie sessions, or
   * every user without `pins`): upstream, epoch, first and last answer (bounded, LRU).
   */
  readonly #seen: AffinityTable
  /** The session table's bindings (null: none given). */
  readonly #pins: AffinityTable | null
  /**
   * By slot of the key index: when a key #pins holds was last answered here (ms after
   * #answerBase, plus one; 0: not since the slot was taken). Allocated at the first such answer;
   * cleared when the slot is freed, so a slot taken anew never shows the previous key's time.
   */
  #answered = new Uint32Array(0)
  /** The time #answered counts from; NaN until the first write. */
  #answerBase = NaN
  /** The key index of #seen: side maps hold its copies of keys, never a request's own strings. */
  readonly #slots: KeySlots
  readonly #moves = new BoundedMap<string, MoveRecord>(RECORDS_SIDE_MAX)
  readonly #orders = new BoundedMap<string, MoveOrder>(RECORDS_SIDE_MAX)
  #orderDone: ((key: string, at: number) => void) | null = null
  /**
   * By slot of #seen: the logged form's 16 bytes of a table key (computed at its first logging,
   * so the access log runs the HMAC once per user; the lookup compares them before hashing), and
   * whether they are computed for the key #seen holds there (cleared when #seen takes the slot
   * anew). Allocated at the first logging only: with the access log off, nothing is computed or
   * kept per user. Columns instead of a map of strings: no object per user on the V8 heap.
   */
  #digests: Buffer = Buffer.alloc(0)
  #digested = new Uint8Array(0)
  readonly #maxEntries: number
  /** Scans by logged form in progress, by form: a second lookup of the same form joins the first. */
  readonly #scans = new Map<string, Promise<string | null>>()

  constructor(options: SessionRecordsOptions) {
    this.ids = new SessionIds(options.secret)
    const { maxEntries, idleTimeout } = options
    this.#maxEntries = maxEntries
    this.#slots = options.slots ?? new KeySlots({ capacity: maxEntries })
    this.#seen = new AffinityTable({ maxEntries, idleTimeout, slots: this.#slots })
    this.#pins = options.pins ?? null
    this.#slots.onFree((slot) => {
      if (slot < this.#digested.length) this.#digested[slot] = 0
      if (slot < this.#answered.length) this.#answered[slot] = 0
    })
  }

  /** The key records are held under: Tether's session id, or the table key's value; null: no session. */
  static keyOf(key: RequestKey, d: Decision | null): string | null {
    return key.kind === 'table' ? key.value : key.kind === 'cookie' ? d?.sessionKey ?? null : null
  }

  /**
   * Upstream `d.upstream` answered a request of `key`: the user is recorded there, a move
   * recorded, a fulfilled order dropped. Computes no logged form (see {@link logged}).
   */
  answered(key: RequestKey, d: Decision, now: number, held = false): void {
    const k = SessionRecords.keyOf(key, d)
    if (k !== null) this.record(k, key.kind === 'table', d.upstream, d.epoch, d.moved, now, false, held)
  }

  /**
   * `upstream` answered session `k` (`table`: a table key) at `epoch`, having moved the user
   * (`moved`) or not: what {@link answered} records, and (`remote`) what another worker tells of
   * its answers (see {@link shared}; an order it fulfils is dropped by {@link dropOrder}). An answer at
   * an epoch older than the one recorded (a slow answer from where the user was before a move)
   * changes nothing. `held`: the answer of a request whose moves were held (Router.decide's
   * `hold`): it fulfils no order.
   */
  record(k: string, table: boolean, upstream: string, epoch: number, moved: Decision['moved'], now: number, remote = false, held = false): void {
    const pins = table ? this.#pins : null
    // a table key pinned where it was answered: its answer time by slot, the rest is the pin's
    const slot = pins === null ? undefined : pins.slotBoundTo(k, upstream, epoch, now)
    if (slot !== undefined) {
      this.#answer(slot, now)
      if (this.#seen.size !== 0) this.#seen.delete(k)
    } else {
      // answered elsewhere than pinned (the pin moved while this request was in flight), or a
      // cookie session: an entry of its own (and no answer time by slot that would hide it)
      if (pins !== null && (pins.peek(k, now)?.epoch ?? -1) > epoch) return
      if (!this.#seen.setUnlessNewer(k, upstream, epoch, now)) return
      const held = pins === null ? undefined : this.#slots.slotOf(k)
      if (held !== undefined && held < this.#answered.length) this.#answered[held] = 0
    }
    // a rehydration in place (its upstream restarted) after a move there is no move between
    // upstreams: the record of that move stays (its reason and time decide what old cookies do)
    if (moved !== null && (moved.from !== upstream || this.#moves.get(k)?.to !== upstream)) {
      this.#moves.set(this.#slots.stored(k), { from: moved.from, to: upstream, reason: moved.reason, at: now })
    }
    if (remote || held || this.#orders.size === 0) return
    const order = this.#orders.get(k)
    if (order === undefined || (order.to !== null && order.to !== upstream)) return
    this.#orders.delete(k)
    // with workers, every worker holds the order: the others drop it too (see onOrderDone)
    this.#orderDone?.(k, order.at)
  }

  /**
   * Is the answer of `d` one every worker records (`workers` > 1)? When it moved the user
   * (whatever the reason), requests sent with the cookie from before the move follow it on every
   * worker, as on the one that made it; when its upstream drains and migrates (`migrating`), a
   * drain's `min_idle` counts the user's answers from any worker. Other answers stay with the
   * worker that gave them.
   */
  static shared(d: Decision, migrating: (id: string) => boolean): boolean {
    return d.moved !== null || migrating(d.upstream)
  }

  /**
   * The logged form of session `k` (`key` tells its kind), for a log line: a recorded table key's
   * digest is kept from its first logging on, so the access log hashes each user once.
   */
  logged(key: RequestKey, k: string): string {
    if (key.kind !== 'table') return k
    const slot = this.#slots.slotOf(k)
    if (slot === undefined) return this.ids.hash(k)
    const at = slot * DIGEST_BYTES
    if (slot >= this.#digested.length) this.#grow(slot)
    if (this.#digested[slot] === 0) {
      this.ids.digest(k).copy(this.#digests, at, 0, DIGEST_BYTES)
      this.#digested[slot] = 1
    }
    return HASHED_PREFIX + this.#digests.toString('hex', at, at + DIGEST_BYTES)
  }

  /** What was last answered for `key` (without counting it as a use), or null. */
  seen(key: string, now: number): AffinityEntry | null {
    const at = this.#answeredAt(key)
    if (at === null) return this.#seen.peek(key, now)
    const pin = this.#pins!.peek(key, now)
    return pin === null ? null : { upstream: pin.upstream, epoch: pin.epoch, createdAt: pin.createdAt, lastSeen: at }
  }

  /** When `key` was last answered (ms), or null when not recorded here. */
  lastSeen(key: string, now: number): number | null {
    const at = this.#answeredAt(key)
    if (at === null) return this.#seen.peek(key, now)?.lastSeen ?? null
    return this.#pins!.peek(key, now) === null ? null : at
  }

  /** When `upstream` last answered `key`, if it gave the last answer recorded here (ms); else null. */
  lastSeenOn(key: string, upstream: string, now: number): number | null {
    const e = this.seen(key, now)
    return e !== null && e.upstream === upstream ? e.lastSeen : null
  }

  /**
   * What was last answered for `key` if this process moved that user lately (an answer at a
   * later epoch than an out-of-date cookie says), else null. Before any move: no lookup at all.
   */
  moved(key: string, now: number): (AffinityEntry & { readonly movedAt: number; readonly reason: MoveReason }) | null {
    if (this.#moves.size === 0) return null
    const move = this.#moves.get(key)
    if (move === undefined) return null
    const e = this.seen(key, now)
    return e === null ? null : { upstream: e.upstream, epoch: e.epoch, createdAt: e.createdAt, lastSeen: e.lastSeen, movedAt: move.at, reason: move.reason }
  }

  lastMove(key: string): MoveRecord | null {
    return this.#moves.get(key) ?? null
  }

  /** Order a move of `key`, done at its next request (`to` null: wherever its hash now places it). */
  order(key: string, to: string | null, now: number): void {
    this.#orders.set(key, { to, at: now })
  }

  /** Tell `fn` each order (key, when ordered) an answer here fulfilled (with workers: so the others drop their copy). */
  onOrderDone(fn: (key: string, at: number) => void): void {
    this.#orderDone = fn
  }

  /** Drop the order for `key` made at `at` (another worker fulfilled it); a newer one stays. */
  dropOrder(key: string, at: number): void {
    if (this.#orders.get(key)?.at === at) this.#orders.delete(key)
  }

  /**
   * What a router reads of these records, for a starting worker to copy ({@link copy}): the
   * answers with their times (entries of their own, the most recently answered first; then the
   * answer times of pinned keys), the last moves and the orders not done, oldest first. Nothing
   * may change the records while this is iterated.
   */
  *copies(now: number): IterableIterator<RecordCopy> {
    for (const e of this.#seen.byRecency(now)) yield ['s', e.key, e.upstream, e.epoch, e.createdAt, e.lastSeen]
    if (this.#pins !== null && this.#answered.length !== 0) {
      for (const e of this.#pins.entries(now)) {
        const t = e.slot < this.#answered.length ? this.#answered[e.slot]! : 0
        if (t !== 0) yield ['t', e.key, this.#answerBase + t - 1]
      }
    }
    for (const [k, m] of this.#moves) yield ['m', k, m.from, m.to, m.reason, m.at]
    for (const [k, o] of this.#orders) yield ['o', k, o.to, o.at]
  }

  /**
   * Take in what a sibling's {@link copies} listed (in its order, after the session table took
   * the sibling's bindings): what is recorded here already (written since by another worker) is
   * newer and stays.
   */
  copy(r: RecordCopy, now: number): void {
    switch (r[0]) {
      case 's':
        if (this.#answeredAt(r[1]) === null) this.#seen.append(r[1], r[2], r[3], r[4], r[5], now)
        return
      case 't': {
        const slot = this.#pins?.slotOf(r[1])
        // an answer time older than the Uint32 window is no use: no binding stays idle that long
        if (slot === undefined || this.#answeredAt(r[1]) !== null || this.#seen.slotOf(r[1]) !== undefined || now - r[2] >= TIME_SLACK) return
        return this.#answer(slot, Math.min(r[2], now))
      }
      case 'm':
        if (this.#moves.get(r[1]) === undefined) this.#moves.set(this.#slots.stored(r[1]), { from: r[2], to: r[3], reason: r[4], at: r[5] })
        return
      case 'o':
        if (this.#orders.get(r[1]) === undefined) this.#orders.set(this.#slots.stored(r[1]), { to: r[2], at: r[3] })
    }
  }

  /** The move an admin ordered for `key` and not yet done, if any. */
  ordered(key: string): MoveOrder | undefined {
    return this.#orders.size === 0 ? undefined : this.#orders.get(key)
  }

  /**
   * The raw key a lookup names: anything but a logged form (`h:...`) is taken as the raw key; a
   * logged form is resolved among every key this process holds (recorded here or pinned in the
   * session table sharing the key index), null when none matches. A key whose digest was kept
   * for the access log is compared as it is; every other key is hashed now (an HMAC, ~3-5 us:
   * seconds at a million users with the access log off), `slice` keys at a time with
   * `await pause()` between slices, so the caller can let other work run. Lookups of the same
   * form while one scans share its scan (and its pauses): an operator's retries or several
   * dashboards asking at once cost one scan, not one each.
   * Example: `await records.resolve('h:5c1f...', () => new Promise(setImmediate))` -> '10.0.0.5'.
   */
  resolve(named: string, pause: () => Promise<void>, slice = RESOLVE_SLICE): Promise<string | null> {
    if (!named.startsWith(HASHED_PREFIX)) return Promise.resolve(named)
    if (!/^h:[0-9a-f]{32}$/.test(named)) return Promise.resolve(null)
    const running = this.#scans.get(named)
    if (running !== undefined) return running
    const scan = this.#scan(named, pause, slice).finally(() => this.#scans.delete(named))
    this.#scans.set(named, scan)
    return scan
  }

  async #scan(named: string, pause: () => Promise<void>, slice: number): Promise<string | null> {
    const want = Buffer.from(named.substring(HASHED_PREFIX.length), 'hex')
    const slots = this.#slots
    for (let slot = 0, hashed = 0; slot < slots.used; slot++) {
      if (!slots.taken(slot)) continue
      if (slot < this.#digested.length && this.#digested[slot] === 1) {
        if (this.#digests.compare(want, 0, DIGEST_BYTES, slot * DIGEST_BYTES, (slot + 1) * DIGEST_BYTES) === 0) return slots.keyAt(slot)
        continue
      }
      const key = slots.keyAt(slot)
      if (this.ids.digest(key).compare(want, 0, DIGEST_BYTES, 0, DIGEST_BYTES) === 0) return key
      if (++hashed % slice === 0) await pause()
    }
    return null
  }

  /** Every user answered here within the idle timeout: key, upstream, first answer (O(users)). */
  *users(now: number): Iterable<{ readonly key: string; readonly upstream: string; readonly createdAt: number }> {
    yield* this.#seen.entries(now)
    if (this.#pins === null) return
    const answered = this.#answered
    for (const e of this.#pins.entries(now)) if (e.slot < answered.length && answered[e.slot] !== 0) yield e
  }

  /**
   * Users last answered by `upstream` within the idle timeout, among those recorded as entries of
   * their own: every user without `pins`, Tether's cookie sessions with it (the session table
   * counts the users it pins). Bounded: exact up to maxEntries users.
   */
  countByUpstream(upstream: string): number {
    return this.#seen.countByUpstream(upstream)
  }

  /** Remove up to `budget` expired records (the owned background sweep). */
  sweep(now: number, budget: number): number {
    return this.#seen.sweep(now, budget)
  }

  /** When `key`, held by #pins, was last answered here (ms); null: not recorded by slot. */
  #answeredAt(key: string): number | null {
    if (this.#pins === null || this.#answered.length === 0) return null
    const slot = this.#pins.slotOf(key)
    if (slot === undefined || slot >= this.#answered.length || this.#answered[slot] === 0) return null
    return this.#answerBase + this.#answered[slot]! - 1
  }

  /**
   * Records an answer at `now` for the key #pins holds at `slot`. Times are whole ms after
   * #answerBase, plus one (0: none), in the table's Uint32 window: a `now` outside it moves the
   * base to TIME_SLACK (24.8 days) before it; an answer older than that is forgotten (no binding
   * lives that long idle: idle_timeout is at most 24 hours).
   */
  #answer(slot: number, now: number): void {
    if (slot >= this.#answered.length) {
      const n = this.#answered.length
      const capacity = n === 0 ? Math.max(slot + 1, Math.min(this.#maxEntries, PREALLOCATED)) : growCapacity(n, slot, this.#maxEntries)
      const answered = new Uint32Array(capacity)
      answered.set(this.#answered)
      this.#answered = answered
    }
    let t = Math.floor(now) - this.#answerBase + 1
    if (!(t >= 1 && t <= TIME_MAX)) {
      const base = Math.floor(now) - TIME_SLACK
      if (this.#answerBase === this.#answerBase) {
        const shift = base - this.#answerBase
        const a = this.#answered
        for (let i = 0; i < a.length; i++) if (a[i] !== 0) a[i] = a[i]! > shift ? Math.min(TIME_MAX, a[i]! - shift) : 0
      }
      this.#answerBase = base
      t = TIME_SLACK + 1
    }
    this.#answered[slot] = t
  }

  /** Grows the digest columns to cover `slot` (allocated at first use). */
  #grow(slot: number): void {
    const n = this.#digested.length
    const capacity = n === 0 ? Math.max(slot + 1, Math.min(this.#maxEntries, PREALLOCATED)) : growCapacity(n, slot, this.#maxEntries)
    const digests = Buffer.alloc(capacity * DIGEST_BYTES)
    this.#digests.copy(digests)
    const digested = new Uint8Array(capacity)
    digested.set(this.#digested)
    this.#digests = digests
    this.#digested = digested
  }
}
