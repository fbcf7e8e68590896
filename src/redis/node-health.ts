// The health of one Redis node as seen from its calls: a 5 s sliding window of outcomes and the
// up/down verdict with hysteresis, plus whether the client reaches it at all and whether it
// refuses writes (full, cannot persist, too few replicas: answers, not failures). Pure: no I/O,
// no timers, no clock of its own (time comes in as arguments); the connection owns one per node.
import { WRITES_REFUSED_BY_RESTRICTION, writesRefusedCause, type WritesRefusedReason } from './reply-errors.js'

/** The window over which a node's calls are judged, in ms. */
export const NODE_WINDOW_MS = 5_000
/** A node turns failing at this many failed calls: in a row (over NODE_STREAK_MS), or in the window (and at least half failed). */
export const NODE_MIN_FAILURES = 5
/**
 * Failures in a row count only once they span this long (ms): a dead node fails every call for
 * as long as it is dead, while an event-loop stall times out a burst of calls at one instant.
 */
export const NODE_STREAK_MS = 250
/** A node turns failing when at least this share of its calls in the window failed. */
export const NODE_FAIL_RATIO = 0.5
/** A failing node recovers once fewer than this share (or fewer than NODE_MIN_FAILURES) failed. */
export const NODE_RECOVER_RATIO = 0.25

/** What a node is to the connection: a Cluster master (with slots), a seed before the slot map is known, a standalone server or a Sentinel-managed master. */
export type RedisNodeRole = 'shard' | 'seed' | 'standalone' | 'sentinel'

/**
 * A node that refuses writes is taken to take them again no sooner than this after its last
 * refusal when it cannot be asked (its writes probe answers neither OK nor a refusal: a Redis
 * before 7.0, an ACL user without EVAL), ms. A reason it refuses writes for, among several at
 * once, is dropped once not seen for this long.
 */
export const REFUSED_QUIET_MS = NODE_WINDOW_MS

/** A node's verdict: 'up' while reachable and not failing. */
export type RedisNodeStatus = 'up' | 'down'

/**
 * A frozen snapshot of one node's health.
 *
 * Example:
 * ```ts
 * { address: '127.0.0.1:7001', role: 'shard', slots: '0-5460', status: 'down', calls: 20, failed: 12,
 *   lastError: 'no reply within 50 ms',
 *   summary: 'redis shard 127.0.0.1:7001 (slots 0-5460) failing: 12 of 20 calls in the last 5 s failed (last error: no reply within 50 ms)' }
 * ```
 */
export interface RedisNodeHealth {
  /** `host:port`, or for Sentinel the master name. */
  readonly address: string
  readonly role: RedisNodeRole
  /** The slot ranges a Cluster master serves, e.g. `"0-5460"` or `"0-100,5000-5460"`; null otherwise or before the slot map is known. */
  readonly slots: string | null
  readonly status: RedisNodeStatus
  /** Calls to it, and how many of them failed (error or timeout), in the last 5 s. */
  readonly calls: number
  readonly failed: number
  /** The most telling recent error: a connection error of the node when there was one in the last second, else the last failed call's; null when none. */
  readonly lastError: string | null
  /**
   * Why it refuses every write (see {@link WritesRefusedReason}), or null while it takes them: it
   * still answers and serves reads, so it is not down for it. While it refuses writes for
   * several reasons at once (full and MISCONF: some calls get one reply, some the other), the
   * one that refuses more (see WRITES_REFUSED_BY_RESTRICTION: MISCONF and NOREPLICAS refuse
   * renewals too), until that one is not seen for {@link REFUSED_QUIET_MS}.
   */
  readonly writesRefused: WritesRefusedReason | null
  /**
   * The reply of its last refusal for the reason `writesRefused` names (null while it takes
   * writes): told with that reason, never another reason's reply (`lastError` is the last call's
   * error, which under full and MISCONF at once may be the other one's).
   */
  readonly writesRefusedError: string | null
  /**
   * Whether it refuses writes for want of memory (`writesRefused` 'oom': `maxmemory` reached
   * under `maxmemory-policy noeviction`): TTL renewals (PEXPIRE) go on too.
   */
  readonly full: boolean
  /** One line for people: what the node is and how it is doing (see the example). */
  readonly summary: string
}

/** A connection error of the node (refused, reset) is preferred over call errors while this fresh (ms): it names the cause. */
const NODE_ERROR_FRESH_MS = 1_000

const BUCKETS = 5
const BUCKET_MS = NODE_WINDOW_MS / BUCKETS

/**
 * Call outcomes of the last {@link NODE_WINDOW_MS} ms in five 1 s buckets (O(1) per call, no
 * allocation). Times are monotonic ms (e.g. `performance.now()`); a time that goes backwards
 * counts into the current bucket.
 *
 * Example: `w.record(true, 0); w.record(false, 1200); w.calls(1500)` -> 2, `w.failed(6500)` -> 0.
 */
export class OutcomeWindow {
  readonly #ok = new Uint32Array(BUCKETS)
  readonly #bad = new Uint32Array(BUCKETS)
  /** Index (time / BUCKET_MS) of the newest bucket. */
  #head = -Infinity

  record(ok: boolean, now: number): void {
    this.#advance(now)
    const i = this.#head % BUCKETS
    if (ok) this.#ok[i]!++
    else this.#bad[i]!++
  }

  calls(now: number): number {
    this.#advance(now)
    return sum(this.#ok) + sum(this.#bad)
  }

  failed(now: number): number {
    this.#advance(now)
    return sum(this.#bad)
  }

  clear(): void {
    this.#ok.fill(0)
    this.#bad.fill(0)
  }

  #advance(now: number): void {
    const index = Math.floor(now / BUCKET_MS)
    if (index <= this.#head) return
    if (index - this.#head >= BUCKETS) this.clear()
    else for (let b = this.#head + 1; b <= index; b++) {
      this.#ok[b % BUCKETS] = 0
      this.#bad[b % BUCKETS] = 0
    }
    this.#head = index
  }
}

function sum(a: Uint32Array): number {
  let s = 0
  for (const n of a) s += n
  return s
}

/**
 * One node's health. `reachable` follows the client's connection events (false before the
 * first connect and while disconnected); `failing` is the verdict of its calls, with
 * hysteresis. It turns failing when {@link NODE_MIN_FAILURES} or more calls failed in a row
 * over at least {@link NODE_STREAK_MS} (a dead node under load: seen within about 250 ms plus
 * one timeout, however many successes the window still holds), or when at least
 * NODE_MIN_FAILURES of its calls in the last 5 s failed and they are at least
 * {@link NODE_FAIL_RATIO} of them (a node failing part of its calls). It recovers on a
 * successful call once fewer than NODE_MIN_FAILURES of the window's calls failed or they are
 * under {@link NODE_RECOVER_RATIO}. Up = reachable and not failing.
 *
 * Examples: 12 of 20 calls failed in 5 s -> down; then 40 successes (12 of 60) -> up again.
 * 500 successes, then 6 failures in a row over 300 ms -> down; the next success -> up.
 */
export class NodeHealth {
  readonly address: string
  role: RedisNodeRole
  slots: string | null = null
  reachable = false
  failing = false
  /** The status last reported to listeners (null: never; the first verdict is always news), and when (ms). */
  reported: RedisNodeStatus | null = null
  reportedAt = -Infinity
  readonly #window = new OutcomeWindow()
  /** Failed calls in a row, and when the first of them failed. */
  #streak = 0
  #streakSince = 0
  #callError: string | null = null
  #nodeError: string | null = null
  #nodeErrorAt = -Infinity
  /** See {@link RedisNodeHealth.writesRefused}; `reportedWritesRefused`: as last told to listeners. */
  writesRefused: WritesRefusedReason | null = null
  reportedWritesRefused: WritesRefusedReason | null = null
  /** Per reason, the last refusal of a write for it (its reply) and when (ms; -Infinity: none in this spell). */
  readonly #refusedError = new Map<WritesRefusedReason, string>()
  readonly #refusedAt = new Map<WritesRefusedReason, number>()

  constructor(address: string, role: RedisNodeRole) {
    this.address = address
    this.role = role
  }

  get status(): RedisNodeStatus {
    return this.reachable && !this.failing ? 'up' : 'down'
  }

  /** See {@link RedisNodeHealth.full}. */
  get full(): boolean {
    return this.writesRefused === 'oom'
  }

  /** Counts one call's outcome (with its error when it failed) and re-judges `failing`. */
  record(ok: boolean, now: number, error?: string): void {
    this.#window.record(ok, now)
    if (ok) this.#streak = 0
    else {
      if (this.#streak++ === 0) this.#streakSince = now
      if (error !== undefined) this.#callError = error
    }
    const failed = this.#window.failed(now)
    const calls = this.#window.calls(now)
    if (!this.failing) {
      this.failing = (this.#streak >= NODE_MIN_FAILURES && now - this.#streakSince >= NODE_STREAK_MS) ||
        (failed >= NODE_MIN_FAILURES && failed >= NODE_FAIL_RATIO * calls)
    } else if (ok && (failed < NODE_MIN_FAILURES || failed < NODE_RECOVER_RATIO * calls)) {
      this.failing = false
    }
  }

  /**
   * It answered a call with an error about that call only (`error`: an ACL refusal, a key of the
   * wrong type; see connection.ts failsNode): an answer, not a failure; kept as the last call
   * error (shown while the node is unreachable or failing for other calls).
   */
  answeredWithError(error: string, now: number): void {
    this.record(true, now)
    this.#callError = error
  }

  /**
   * It refused a write (or, under MISCONF, a PING) for `reason` (`error`, its reply: OOM,
   * MISCONF, NOREPLICAS): it refuses writes, and that is an answer (not a failure).
   */
  refusedWrites(reason: WritesRefusedReason, error: string, now: number): void {
    this.record(true, now)
    this.#callError = error
    this.#refused(reason, error, now)
  }

  /**
   * What its writes probe found: `'taken'` (a write would be taken) ends `writesRefused`, every
   * reason; a reason (with its reply `error`) keeps it, for that reason or one that refuses more
   * seen within {@link REFUSED_QUIET_MS}; `'unknown'` (another reply, or none) ends it only after
   * REFUSED_QUIET_MS without a refusal.
   */
  writesProbed(found: 'taken' | WritesRefusedReason | 'unknown', now: number, error: string | null = null): void {
    if (found === 'taken') {
      this.#refusedAt.clear()
      this.#refusedError.clear()
      this.writesRefused = null
    } else if (found !== 'unknown') this.#refused(found, error ?? found.toUpperCase(), now)
    else this.#judgeRefused(now)
  }

  /**
   * What its renewals probe found (`PEXPIREAT <marker> 1 GT`, which never applies, sent with the writes
   * probe): Redis refuses it for MISCONF and NOREPLICAS, as every write, but not for memory (not
   * a denyoom command: a full node answers 0). A reason (with its reply `error`) is seen as by
   * {@link writesProbed}; `'taken'` ends `misconf` and `noreplicas` at once (not `oom`, which the
   * PEXPIREAT cannot tell); `'unknown'` (another reply: an ACL refusal, MOVED, a Redis < 7 without GT) tells nothing.
   * Without it a node full and MISCONF at once with no traffic showed only OOM to its probe (Redis
   * checks maxmemory first), and turned "full" (renewals unaffected) after REFUSED_QUIET_MS.
   */
  renewalsProbed(found: 'taken' | WritesRefusedReason | 'unknown', now: number, error: string | null = null): void {
    if (found === 'taken') {
      for (const reason of ['misconf', 'noreplicas'] as const) {
        this.#refusedAt.delete(reason)
        this.#refusedError.delete(reason)
      }
      this.#judgeRefused(now)
    } else if (found !== 'unknown') this.#refused(found, error ?? found.toUpperCase(), now)
  }

  #refused(reason: WritesRefusedReason, error: string, now: number): void {
    this.#refusedError.set(reason, error)
    this.#refusedAt.set(reason, now)
    this.#judgeRefused(now)
  }

  /** `writesRefused`: of the reasons seen within REFUSED_QUIET_MS, the one that refuses more; the others are forgotten. */
  #judgeRefused(now: number): void {
    this.writesRefused = null
    for (const reason of WRITES_REFUSED_BY_RESTRICTION) {
      const at = this.#refusedAt.get(reason)
      if (at === undefined) continue
      if (now - at >= REFUSED_QUIET_MS) {
        this.#refusedAt.delete(reason)
        this.#refusedError.delete(reason)
      } else this.writesRefused ??= reason
    }
  }

  /** Calls failed in a row since the last success. */
  get streak(): number {
    return this.#streak
  }

  /** A connection-level error of this node (refused, reset, auth): preferred over call errors while recent. */
  noteError(error: string, now: number): void {
    this.#nodeError = error
    this.#nodeErrorAt = now
  }

  /** The client reached the node afresh: earlier outcomes (from before the reconnect) are forgotten. */
  connected(): void {
    this.reachable = true
    this.failing = false
    this.#streak = 0
    this.#window.clear()
  }

  lastError(now: number): string | null {
    // unreachable: the connection's own error (WRONGPASS, a refused connect, no reply to the
    // ready check) says why; the calls it fails meanwhile only say that it is not connected
    if (!this.reachable && this.#nodeError !== null) return this.#nodeError
    return now - this.#nodeErrorAt <= NODE_ERROR_FRESH_MS ? this.#nodeError : this.#callError ?? this.#nodeError
  }

  /** Whether a probe would tell something: reachable with a failure in the window. */
  suspect(now: number): boolean {
    return this.reachable && (this.failing || this.#window.failed(now) > 0)
  }

  snapshot(now: number): RedisNodeHealth {
    const calls = this.#window.calls(now)
    const failed = this.#window.failed(now)
    const lastError = this.lastError(now)
    const writesRefusedError = this.writesRefused === null ? null : this.#refusedError.get(this.writesRefused) ?? null
    return Object.freeze({
      address: this.address, role: this.role, slots: this.slots, status: this.status, calls, failed, lastError,
      writesRefused: this.writesRefused, writesRefusedError, full: this.full,
      summary: `${title(this)} ${this.writesRefused !== null && this.status === 'up' ? refusing(this.writesRefused, writesRefusedError) : verdict(this, calls, failed, lastError)}`,
    })
  }
}

/**
 * How a node that refuses writes is told: full, with Redis's own OOM words (they name
 * maxmemory); for another reason, that reason and what to do (see writesRefusedCause).
 */
function refusing(reason: WritesRefusedReason, error: string | null): string {
  return reason === 'oom' ? `full: it refuses writes (${error ?? 'OOM'})` : `refuses writes (${writesRefusedCause(reason, error)})`
}

function title(n: NodeHealth): string {
  switch (n.role) {
    case 'shard': return `redis shard ${n.address}${n.slots === null ? '' : ` (slots ${n.slots})`}`
    case 'seed': return `redis seed node ${n.address}`
    case 'standalone': return `redis ${n.address}`
    case 'sentinel': return `redis master ${n.address} (Sentinel)`
  }
}

function verdict(n: NodeHealth, calls: number, failed: number, lastError: string | null): string {
  if (!n.reachable) return `unreachable: ${lastError ?? 'not connected'}`
  const tally = `${failed} of ${calls} calls in the last ${NODE_WINDOW_MS / 1000} s failed`
  if (n.failing) {
    const row = n.streak > 1 ? `, the last ${n.streak} in a row` : ''
    return `failing: ${tally}${row}${lastError === null ? '' : ` (last error: ${lastError})`}`
  }
  return `up: ${tally}`
}

/**
 * Slot ranges from a slot -> owner table, per owner: `"0-5460"`, or `"0-100,5000-5460"`.
 *
 * Example: `slotRanges(['a', 'a', 'b', undefined, 'a'])` -> `Map { 'a' => '0-1,4', 'b' => '2' }`.
 */
export function slotRanges(owners: ArrayLike<string | undefined>): Map<string, string> {
  const ranges = new Map<string, string[]>()
  let start = 0
  for (let slot = 1; slot <= owners.length; slot++) {
    const owner = owners[start]
    if (slot < owners.length && owners[slot] === owner) continue
    if (owner !== undefined) {
      let list = ranges.get(owner)
      if (list === undefined) ranges.set(owner, (list = []))
      list.push(start === slot - 1 ? String(start) : `${start}-${slot - 1}`)
    }
    start = slot
  }
  return new Map([...ranges].map(([owner, list]) => [owner, list.join(',')]))
}
