// The state protocol: checkpoints that upstreams attach to answers (X-Tether-State, with an
// optional -Version) are stored under the user's session key; a user who moves to another
// upstream gets the newest one delivered (X-Tether-Rehydrate, or a POST to a hook first).
// Layer 2: talks to a CheckpointStore, never waits longer than its budgets; with best-effort
// durability it never fails a request.
import { systemTimers, type Clock, type Timers } from '../clock.js'
import { withDeadline } from '../deadline.js'
import { BoundedMap } from '../affinity/bounded-map.js'
import type { Checkpoint, CheckpointStore, GetResult, PutResult } from './checkpoint-store.js'

const UNAVAILABLE: GetResult = Object.freeze({ status: 'unavailable' })

export interface StateOptions {
  /** Response header carrying a checkpoint, e.g. `X-Tether-State`. */
  readonly header: string
  /** Largest checkpoint accepted, in the bytes the store holds it in ({@link CheckpointStore.valueBytes}). */
  readonly maxBytes: number
  /** Longest wait on the store, ms. */
  readonly timeout: number
  /** Checkpoint lifetime: the affinity idle timeout, ms. */
  readonly ttl: number
  /**
   * `best_effort` (default): an answer waits at most `timeout` for its checkpoint write, then
   * goes out stored or not. `confirmed`: it waits up to `confirmTimeout` and is refused (503)
   * when the checkpoint was not stored, so no update is acknowledged that is not stored.
   */
  readonly durability?: 'best_effort' | 'confirmed'
  /** Longest wait for a confirmed write, ms (default 1000). */
  readonly confirmTimeout?: number
}

export interface StateEvents {
  /** A checkpoint's outcome; `bytes`: its size as the store holds it ({@link CheckpointStore.valueBytes}). */
  checkpoint(result: PutResult, sessionKey: string, bytes: number): void
  rehydration(result: 'delivered' | 'no_state' | 'error'): void
  /** How long a store operation took (also when it gave up). */
  operation(op: 'get' | 'put', seconds: number): void
}

/** What an upstream attached to one answer. */
export interface RawCheckpoint {
  readonly value: string
  readonly version: number | null
}

/** A version: decimal digits, at most 16 (every safe integer has at most 16; checked safe below). */
const INTEGER = /^\d{1,16}$/

/** Sessions whose state started again kept at most (the oldest are forgotten first). */
export const RESTARTED_MAX = 10_000

/**
 * Example: an answer from app-1 with `X-Tether-State: eyJjIjozfQ` and
 * `X-Tether-State-Version: 7` -> `write('9f86…', { value: 'eyJjIjozfQ', version: 7 }, 'app-1', 2)`;
 * later the user moves to app-2 -> `fetch('9f86…')` -> that checkpoint, delivered to app-2.
 */
export class StateProtocol {
  readonly #store: CheckpointStore
  readonly #opts: StateOptions
  readonly #clock: Clock
  /** The newest `writtenAt` this process gave a checkpoint (they never go back). */
  #lastWrittenAt = 0
  readonly #events: StateEvents
  readonly #name: string
  readonly #versionName: string
  readonly #timers: Timers
  readonly #confirmed: boolean
  #seen = false
  /** Session key -> the epoch at which the user's state started again, and the upstreams it did so on (see {@link restarted}). */
  readonly #restarted = new BoundedMap<string, { readonly epoch: number; readonly upstreams: string[] }>(RESTARTED_MAX)
  /** Session key -> when its last checkpoint the store did not take was written (see {@link behind}), oldest first. */
  readonly #unsaved = new BoundedMap<string, number>(RESTARTED_MAX)

  constructor(store: CheckpointStore, opts: StateOptions, clock: Clock, events: StateEvents, timers: Timers = systemTimers) {
    this.#store = store
    this.#opts = opts
    this.#clock = clock
    this.#events = events
    this.#timers = timers
    this.#confirmed = opts.durability === 'confirmed'
    this.#name = opts.header.toLowerCase()
    this.#versionName = `${this.#name}-version`
  }

  get store(): CheckpointStore {
    return this.#store
  }

  /**
   * Whether an upstream has handed in a checkpoint since this process started. Until then
   * there is nothing to carry over on a re-key, so an app that never checkpoints (one using
   * Tether for stickiness only) pays no store call for its rotating cookie.
   */
  get seenCheckpoint(): boolean {
    return this.#seen
  }

  /** The checkpoint in an upstream answer's (unfiltered, lower-case) headers, or null. */
  read(headers: Record<string, string | string[] | undefined>): RawCheckpoint | null {
    const raw = headers[this.#name]
    const value = Array.isArray(raw) ? raw[raw.length - 1] : raw
    if (value === undefined || value === '') return null
    const v = headers[this.#versionName]
    const text = (Array.isArray(v) ? v[v.length - 1] : v)?.trim()
    // a safe integer (a counter, or a clock in ms or µs), exact as a Lua number in Redis; anything
    // else (negative, fractional, beyond 2^53 - 1) counts as none
    const version = text !== undefined && INTEGER.test(text) ? Number(text) : NaN
    return { value, version: Number.isSafeInteger(version) ? version : null }
  }

  /** With `confirmed` durability, an answer whose checkpoint was not stored must be refused. */
  get confirmed(): boolean {
    return this.#confirmed
  }

  /**
   * The user of `sessionKey` moved at `epoch` to `upstream`, which got no state (the store did
   * not answer, the state was over its header limit, its hook did not take it): the state there
   * starts again, and so may its versions. That upstream's first checkpoint at that epoch
   * replaces the stored one whatever the versions: else every checkpoint of the new state would
   * be refused as `stale` until its version passed the old one's, and a later move would bring
   * the old state back. The mark is that upstream's: another one answering the same move with
   * the state (a hedge, or another request of a burst whose fetch found it) has its checkpoints
   * ordered by version as any, and cannot take or withdraw it. Kept by this process (at most
   * {@link RESTARTED_MAX} sessions; a mark at a later epoch replaces the session's older ones).
   */
  restarted(sessionKey: string, epoch: number, upstream: string): void {
    const m = this.#restarted.get(sessionKey)
    if (m === undefined || m.epoch !== epoch) this.#restarted.set(sessionKey, { epoch, upstreams: [upstream] }) // newest last; past RESTARTED_MAX the oldest goes
    else if (!m.upstreams.includes(upstream)) m.upstreams.push(upstream)
  }

  /**
   * Whether `fetched` (what {@link fetch} found for `sessionKey`) is older than the user's state:
   * a checkpoint their upstream handed in was lost (the store did not answer in time), and the
   * store holds neither it (a write that landed late) nor a newer one. A move by choice must then
   * wait (a forced one goes on with what there is). Lost checkpoints are kept by this process
   * (at most {@link RESTARTED_MAX} sessions), until one of the session is stored or found.
   */
  behind(sessionKey: string, fetched: GetResult): boolean {
    if (this.#unsaved.size === 0) return false
    const lostAt = this.#unsaved.get(sessionKey)
    if (lostAt === undefined) return false
    if (fetched.status === 'found' && fetched.checkpoint.writtenAt >= lostAt) {
      this.#unsaved.delete(sessionKey)
      return false
    }
    return true
  }

  /** The user of `sessionKey` moved: a checkpoint lost on their old upstream no longer holds them. */
  moved(sessionKey: string): void {
    if (this.#unsaved.size !== 0) this.#unsaved.delete(sessionKey)
  }

  /**
   * Store a checkpoint written by `upstream` at `epoch`, by a request routed by a table binding
   * placed at `placedAt` (null: Tether's cookie, round robin); resolves when stored or given up
   * (after `timeout`, or `confirmTimeout` with confirmed durability), with the outcome.
   */
  async write(sessionKey: string, cp: RawCheckpoint, upstream: string, epoch: number, placedAt: number | null = null): Promise<PutResult> {
    this.#seen = true
    let result: PutResult
    // the bytes the store holds it in (Redis: UTF-8, two bytes a latin1 character from 0x80)
    const bytes = this.#store.valueBytes(cp.value)
    if (bytes > this.#opts.maxBytes) result = 'too_large'
    else {
      // never earlier than this process's last write (a clock stepped back would make a newer
      // versionless checkpoint look older than the one it follows)
      const writtenAt = Math.max(this.#lastWrittenAt, this.#clock.now())
      this.#lastWrittenAt = writtenAt
      const checkpoint: Checkpoint = { value: cp.value, version: cp.version, upstream, epoch, writtenAt, placedAt }
      // the mark is taken by this write (a parallel answer of the same move is ordered by
      // version after it: the store replaces only a checkpoint of another epoch)
      const mark = this.#restarted.size !== 0 ? this.#restarted.get(sessionKey) : undefined
      const replace = mark !== undefined && mark.epoch === epoch && mark.upstreams.includes(upstream)
      if (replace) {
        mark.upstreams.splice(mark.upstreams.indexOf(upstream), 1)
        if (mark.upstreams.length === 0) this.#restarted.delete(sessionKey)
      }
      const t0 = performance.now()
      const budget = this.#confirmed ? this.#opts.confirmTimeout ?? 1_000 : this.#opts.timeout
      // a confirmed write waits for the store's reply up to its own budget (not the per-call timeout)
      const put = this.#store.put(sessionKey, checkpoint, this.#opts.ttl, this.#confirmed ? budget : undefined, replace)
      result = await withDeadline(put, budget, 'unavailable', this.#timers)
      this.#events.operation('put', (performance.now() - t0) / 1000)
      if (result === 'unavailable') {
        // lost, or landing late (a paused store): a move by choice waits until the store has it or newer
        this.#unsaved.set(sessionKey, checkpoint.writtenAt)
      } else if (this.#unsaved.size !== 0 && (result === 'stored' || result === 'stale' || result === 'superseded')) this.#unsaved.delete(sessionKey) // 'stale', 'superseded': the store holds newer
      // not stored (the store is down): the next checkpoint of that epoch replaces instead
      if (replace && result === 'unavailable' && (this.#restarted.get(sessionKey)?.epoch ?? epoch) === epoch) this.restarted(sessionKey, epoch, upstream)
    }
    this.#events.checkpoint(result, sessionKey, bytes)
    return result
  }

  /**
   * A checkpoint that is not stored because the answer carrying it comes from an epoch the user
   * has left (counted as 'stale', logged by the caller's events).
   */
  discard(sessionKey: string, cp: RawCheckpoint, _upstream: string, _epoch: number): void {
    this.#seen = true
    this.#events.checkpoint('stale', sessionKey, this.#store.valueBytes(cp.value))
  }

  /**
   * The session key changed (an application cookie the upstream rotated, as Laravel does on
   * every answer): copy the newest checkpoint of `from` to `to`, unchanged and with a fresh
   * TTL, under the store's version rule, so a user moved later still finds it under the value
   * their browser now holds. `from` keeps its copy until it expires: concurrent requests
   * carrying the same old value each rotate it, and each new value needs the copy. Bounded
   * by `timeout` as a whole; never rejects.
   *
   * Example: checkpoint v7 under 'eyJpdiI6…A', the answer sets 'eyJpdiI6…B' without a
   * checkpoint -> `rekey('eyJpdiI6…A', 'eyJpdiI6…B')` -> 'copied'; `fetch('eyJpdiI6…B')` -> v7.
   */
  rekey(from: string, to: string): Promise<'copied' | 'missing' | 'stale' | 'unavailable'> {
    const copy = async (): Promise<'copied' | 'missing' | 'stale' | 'unavailable'> => {
      let t0 = performance.now()
      const found = await this.#store.get(from)
      this.#events.operation('get', (performance.now() - t0) / 1000)
      if (found.status !== 'found') return found.status
      t0 = performance.now()
      const put = await this.#store.put(to, found.checkpoint, this.#opts.ttl)
      this.#events.operation('put', (performance.now() - t0) / 1000)
      return put === 'stored' ? 'copied' : put === 'stale' || put === 'superseded' ? 'stale' : 'unavailable'
    }
    return this.#bounded(copy(), 'unavailable')
  }

  /**
   * The newest checkpoint of a session: found, missing (none stored), or unavailable (the
   * store did not answer in time), so the upstream can tell "no state" from "state not fetched".
   */
  async fetch(sessionKey: string): Promise<GetResult> {
    const t0 = performance.now()
    let r = await this.#bounded(this.#store.get(sessionKey), UNAVAILABLE)
    // one more try within a budget of its own, unless the store is known to be down for this
    // key (a Cluster with another shard down answers it): a lost reply or a stall must not make
    // a moved user start from an empty session
    if (r.status === 'unavailable' && this.#store.answers(sessionKey)) r = await this.#bounded(this.#store.get(sessionKey), UNAVAILABLE)
    this.#events.operation('get', (performance.now() - t0) / 1000)
    return r
  }

  /**
   * A moved user's request was answered by the upstream their state was for: what that upstream
   * got (`delivered`; `no_state`: none stored; `error`: not fetched, refused by its hook, or over
   * its header limit). Counted by the request path once per such answer, not per fetch (a hedge
   * not sent or that lost, a hook that could not be reached, fetch what no user was answered with).
   */
  rehydrated(result: 'delivered' | 'no_state' | 'error'): void {
    this.#events.rehydration(result)
  }

  /** `work`, or `fallback` once `timeout` has passed (the late answer is ignored; a stall of this process does not count). */
  #bounded<T>(work: Promise<T>, fallback: T): Promise<T> {
    return withDeadline(work, this.#opts.timeout, fallback, this.#timers)
  }
}
