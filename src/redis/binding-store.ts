// Shared affinity bindings in Redis (`affinity.shared: redis`): key -> "<epoch> <upstream>" with
// the idle TTL, written by a script that never lowers the epoch, so a move made by one Tether
// replica wins over an older binding written later by another; beside it, in the same slot,
// the binding's placement time. Layer 3 adapter over the shared RedisConnection; never
// rejects, never waits longer than the connection's timeout.
import type { BindingSink, SharedBinding, SharedBindings } from '../affinity/session-table.js'
import { FAILED, type RedisCommands, type RedisConnection } from './connection.js'
import { isKeyRefusal } from './reply-errors.js'
import { keySlot } from './key-slot.js'

/** While Redis refuses the placement-time keys, how often a binding write tries them again (ms). */
export const TIMES_RETRY_MS = 60_000

export interface RedisBindingsOptions {
  /**
   * The wall clock (ms): the retries while the placement-time keys are refused, and where a
   * binding's absolute timeout cuts its TTL; default `Date.now`.
   */
  readonly now?: () => number
  /**
   * `affinity.absolute_timeout` (ms; null or absent: none): a binding's key expires no later
   * than its placement time + this, however often it is renewed (see SET_BINDING_LUA).
   */
  readonly absoluteTimeoutMs?: number | null
  /**
   * Told when Redis refuses the placement-time keys (`<prefix>ap:`) to the ACL user while it
   * allows the bindings (`error`: Redis's, with the grant to add), once, and when a binding
   * write stores a placement time again (`error` null; `forMs`: since the refusal).
   */
  readonly onPlacementTimes?: (error: string | null, forMs: number) => void
}

/**
 * A binding write that never lowers the epoch: KEYS[1] = the binding, KEYS[2] = its placement
 * time; ARGV = epoch, upstream, ttlMs, placedAt ('' = unknown), now (the writer's clock, ms),
 * absoluteMs (the absolute timeout, '' = none; ARGV[5] and ARGV[6] absent, as an older
 * Tether's call of its own script would be: not cut). Returns 1 when written (TTL
 * renewed), 0 when a higher epoch is stored, or the same epoch on a smaller upstream id: two
 * replicas that moved a user at once (each its own move at the same epoch) agree on one, as
 * workers do (SessionTable.applyRemote).
 *
 * The placement time is KEYS[2] = "<placedAt> <binding value>": it counts only while the
 * binding is that value (a Tether from before it, during a rolling upgrade, rewrites KEYS[1]
 * only; it reads KEYS[1] alone, whose value is as it always was). It only grows for one
 * binding: written again (a renewal, another replica that placed the same upstream), it keeps
 * the later of the two times; of two upstreams at one epoch, the one kept takes the later
 * placement time of the two, as workers do, so the checkpoints of the upstream the user settles
 * on, which carry it, are not refused for the other placement's.
 *
 * KEYS[2] never outlives KEYS[1]: it is written (before it) with the TTL the binding gets, or,
 * beside a rival binding kept (not renewed here), with that binding's remaining TTL (PTTL, Redis
 * 2.6+; SET ... KEEPTTL, 6.0+, would keep KEYS[2]'s own); a write without a placement time
 * keeps the stored one of the same binding (with the binding's TTL) and deletes one of another
 * binding. KEYS[2] = KEYS[1] (no placement-time key in the binding's slot): the binding alone.
 * A renewal (the binding as stored, its placement time as stored or none) only sets the TTLs
 * again (PEXPIRE), which a full Redis (maxmemory, noeviction) allows: an active user's binding
 * lives on there, while a new binding or a move, which need a SET, fail until there is room.
 *
 * Every TTL set is cut at the binding's absolute timeout (placement time + absoluteMs, on the
 * writer's clock, as the replicas judge it: no Redis TIME, whose clock may differ): a binding
 * placed longer than absolute_timeout ago is over on every replica, and so ends in Redis too,
 * whoever renews it (the user busy) rather than lingering until a replica reads it. A binding
 * of unknown placement time (none stored) is not cut: its readers take it as placed when they
 * adopt it. An older Tether (a rolling upgrade) renews with the idle TTL alone: its keys may
 * outlive the cut; every replica then takes such a binding as placed just then (SessionTable.sync),
 * as the older ones do.
 */
const SET_BINDING_LUA = `
-- byte order, as JavaScript orders these ids (Lua's < follows the server's locale)
local function less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- the placement time stored for binding value v, or nil
local function placed(v)
  local p = redis.call('GET', KEYS[2])
  if not p then return nil end
  local at, of = string.match(p, '^(%d+) (.*)$')
  if of ~= v then return nil end
  return tonumber(at)
end
-- the TTL (ms, ARGV[3] or a rival's PTTL) of a binding placed at t, cut at its absolute
-- timeout: t + ARGV[6] on the writer's clock ARGV[5] (ARGV[6] '', or t unknown: not cut); at
-- least 1 ms (a binding already over ends at once)
local function life(ttl, t)
  ttl = tonumber(ttl)
  local abs, now = tonumber(ARGV[6]), tonumber(ARGV[5])
  if abs and now and t and t + abs - now < ttl then ttl = t + abs - now end
  if ttl < 1 then ttl = 1 end
  return string.format('%d', math.floor(ttl))
end
local value = ARGV[1] .. ' ' .. ARGV[2]
local at = tonumber(ARGV[4])
local times = KEYS[2] ~= KEYS[1]
local cur = redis.call('GET', KEYS[1])
if cur then
  local e, up = string.match(cur, '^(%d+) (.*)$')
  e = tonumber(e)
  local want = tonumber(ARGV[1])
  if e and (e > want or (e == want and less(up, ARGV[2]))) then
    -- a rival of the same epoch kept: it takes the later placement time of the two, for the
    -- time the kept binding has left (it is not renewed here)
    if e == want and at then
      local was = placed(cur)
      if not was or was < at then
        local left = redis.call('PTTL', KEYS[1])
        if left > 0 then
          -- (cut at the absolute timeout: set by an older Tether, it may have only the idle TTL)
          left = life(left, at)
          redis.call('SET', KEYS[2], ARGV[4] .. ' ' .. cur, 'PX', left)
          -- (Redis's clock runs on within a script: the binding's TTL set again after its
          -- time's, so it never ends before it; the same ms, or one later)
          redis.call('PEXPIRE', KEYS[1], left)
        end
      end
    end
    return 0
  end
  -- the same binding again, or a rival of the same epoch replaced: the later time of the two
  -- (a writer that does not know it keeps the same binding's)
  if e == want and times then
    local was = placed(cur)
    if was and ((at and was > at) or (not at and cur == value)) then at = was end
  end
  -- the same binding renewed, its stored time (or none) kept: its TTL alone, by PEXPIRE (not a
  -- denyoom command: a full Redis under noeviction, which refuses SET, keeps an active user's
  -- binding living)
  if cur == value then
    local was = nil
    if times then was = placed(cur) end
    if at == was then
      local ttl = life(ARGV[3], at)
      if at then redis.call('PEXPIRE', KEYS[2], ttl) elseif times then redis.call('DEL', KEYS[2]) end
      redis.call('PEXPIRE', KEYS[1], ttl)
      return 1
    end
  end
end
-- the time first: with the same TTL it never ends after the binding
local ttl = life(ARGV[3], at)
if at then redis.call('SET', KEYS[2], string.format('%d', at) .. ' ' .. value, 'PX', ttl) end
redis.call('SET', KEYS[1], value, 'PX', ttl)
-- (after a SET: a script that has written is let write on by a full Redis (OOM), and DEL
-- always may: first, it would let this SET past maxmemory)
if not at and times then
  -- a placement time of another binding (or left by a Tether that deleted the binding alone)
  redis.call('DEL', KEYS[2])
end
return 1
`
const SET_SCRIPT = 'tetherSetBinding'


/**
 * Example: `bindings.set('PHPSESSID-value', 'app-1', 2, 1764086400000)` -> stored as
 * `tether:af:{PHPSESSID-value}` = "2 app-1" and `tether:ap:{PHPSESSID-value}` =
 * "1764086400000 2 app-1"; `await bindings.lookup('PHPSESSID-value')` ->
 * `{ upstream: 'app-1', epoch: 2, placedAt: 1764086400000 }`.
 */
export class RedisBindings implements SharedBindings {
  readonly #redis: RedisConnection
  readonly #ttl: number
  readonly #now: () => number
  /** The absolute timeout as the script's ARGV[6] ('' = none). */
  readonly #absolute: string
  readonly #told: ((error: string | null, forMs: number) => void) | undefined
  /** Since when Redis refuses the placement-time keys (`#now`), or null. */
  #refusedSince: number | null = null
  /** While refused: when a binding write next tries them again. */
  #retryAt = 0

  /**
   * `ttlMs`: the affinity idle timeout (a binding unused that long is gone). An ACL user whose
   * key patterns allow the bindings but not their placement times (a grant naming each kind,
   * without `~<prefix>ap:*`): each call refused for it is made again without them (so bindings
   * are still shared, with placement times unknown), told once to `onPlacementTimes`; calls go
   * without them from then on, but for one binding write a minute that tries them again.
   */
  constructor(redis: RedisConnection, ttlMs: number, options: RedisBindingsOptions = {}) {
    this.#redis = redis
    this.#ttl = ttlMs
    this.#now = options.now ?? Date.now
    const absolute = options.absoluteTimeoutMs ?? null
    if (absolute !== null && !(absolute > 0 && Number.isFinite(absolute))) throw new RangeError(`RedisBindings: absoluteTimeoutMs must be a positive number of ms or null, got ${absolute}`)
    this.#absolute = absolute === null ? '' : String(Math.ceil(absolute))
    this.#told = options.onPlacementTimes
    redis.defineScript(SET_SCRIPT, SET_BINDING_LUA, 2)
  }

  /**
   * The binding of `key` (one MGET of the binding and its placement time, one slot): null when
   * none, 'unavailable' when Redis did not answer in time. `placedAt` null: unknown (written by
   * a Tether from before it, or the binding was rewritten by one since).
   */
  async lookup(key: string): Promise<SharedBinding | null | 'unavailable'> {
    const k = this.#key(key)
    const p = this.#refusedSince === null ? this.#placedKey(key, k) : null
    const alone = (c: RedisCommands): Promise<(string | null)[]> => c.get(k).then((v) => [v, null])
    const reply = await this.#redis.run(k, (c) => (p === null ? alone(c) : c.mget(k, p).catch((err: unknown) => this.#without(err, () => alone(c)))))
    if (reply === FAILED) return 'unavailable'
    const [value, placed] = reply
    if (typeof value !== 'string') return null
    const space = value.indexOf(' ')
    const epoch = Number(value.slice(0, space))
    if (space <= 0 || !Number.isInteger(epoch)) return null
    const at = typeof placed === 'string' ? placed.indexOf(' ') : -1
    const placedAt = at > 0 && placed!.slice(at + 1) === value ? Number(placed!.slice(0, at)) : NaN
    return { upstream: value.slice(space + 1), epoch, placedAt: Number.isSafeInteger(placedAt) ? placedAt : null }
  }

  /**
   * Store a binding placed at `placedAt` (ms; its pin's creation time; NaN: unknown) with the TTL, unless the
   * stored one has a higher epoch (another replica moved the user since: that move wins). False
   * when Redis did not answer or kept the newer one.
   */
  async set(key: string, upstream: string, epoch: number, placedAt = NaN): Promise<boolean> {
    return (await this.write(key, upstream, epoch, this.#ttl, placedAt)) === 'written'
  }

  /**
   * {@link set} with its outcome told apart: 'written', 'kept' (a higher epoch, or the same
   * epoch on a smaller upstream id, is stored: it stays) or 'failed' (Redis did not answer).
   * `ttlMs`: how long the binding lives unused (default the idle timeout; a binding written
   * back after a lost keyspace keeps the idle time it has left). Idempotent: writing the same
   * binding twice, or from two replicas at once, leaves one binding (with the later placement
   * time); `placedAt` as in {@link set}.
   */
  async write(key: string, upstream: string, epoch: number, ttlMs = this.#ttl, placedAt = NaN): Promise<'written' | 'kept' | 'failed'> {
    const k = this.#key(key)
    const p = this.#timesFor(key, k)
    const [e, ttl] = [String(epoch), String(Math.max(1, Math.ceil(ttlMs)))]
    // (the writer's clock and the absolute timeout: the TTL is cut at the placement time's end)
    const [now, abs] = [String(Math.floor(this.#now())), this.#absolute]
    // no placement-time key in the binding's slot (or refused): the script reads the binding twice, writes it once
    const reply = p === null ? await this.#redis.runScript(SET_SCRIPT, k, k, e, upstream, ttl, '', now, abs)
      : await this.#redis.runScriptThen(SET_SCRIPT, [k, p, e, upstream, ttl, Number.isFinite(placedAt) ? String(Math.max(0, Math.floor(placedAt))) : '', now, abs], (first, again) =>
        first.then((r) => { this.#accepted(); return r }, (err: unknown) => this.#without(err, () => again(k, k, e, upstream, ttl, '', now, abs))))
    return reply === FAILED ? 'failed' : Number(reply) === 1 ? 'written' : 'kept'
  }

  /** The Redis key of `key`'s binding, e.g. `tether:af:{PHPSESSID-value}` (which Cluster node holds it). */
  keyOf(key: string): string {
    return this.#key(key)
  }

  async delete(key: string): Promise<void> {
    const k = this.#key(key)
    const p = this.#refusedSince === null ? this.#placedKey(key, k) : null
    await this.#redis.run(k, (c) => (p === null ? c.del(k) : c.del(k, p).catch((err: unknown) => this.#without(err, () => c.del(k)))))
  }


  /**
   * The session table's write-through sink (fire and forget). `kept`: told of a binding Redis
   * kept another one over (a higher epoch, or a rival of the same epoch on a smaller upstream
   * id: another replica placed or moved the user), so the table reconciles the key at its
   * next request rather than in its next sync period.
   */
  sink(kept?: (key: string) => void): BindingSink {
    return {
      bound: (key, upstream, epoch, _renewal, createdAt) => {
        const written = this.write(key, upstream, epoch, this.#ttl, createdAt)
        if (kept !== undefined) void written.then((r) => { if (r === 'kept') kept(key) })
      },
      unbound: (key) => void this.delete(key),
    }
  }

  #key(key: string): string {
    return `${this.#redis.keyPrefix}af:{${key}}`
  }

  /** A binding write's placement-time key ({@link #placedKey}); while refused, null but once a {@link TIMES_RETRY_MS}. */
  #timesFor(key: string, k: string): string | null {
    const p = this.#placedKey(key, k)
    if (p === null || this.#refusedSince === null) return p
    const now = this.#now()
    if (now < this.#retryAt) return null
    this.#retryAt = now + TIMES_RETRY_MS
    return p
  }

  /** A binding write stored its placement time: told, when they were refused. */
  #accepted(): void {
    if (this.#refusedSince === null) return
    const forMs = this.#now() - this.#refusedSince
    this.#refusedSince = null
    this.#told?.(null, forMs)
  }

  /**
   * A call naming the placement-time key failed with `err`: when Redis refused one of its keys,
   * the call `alone` (the binding's key only) is made; when that one succeeds, the placement
   * times are what was refused (told once). Else the call fails with `err` when `alone` was
   * refused a key too (the binding's: told as the call's own command, the one whose success the
   * connection notes to end that refusal), or with `alone`'s own error (a user without `+get`,
   * a connection lost between the two), told as itself, not as a key refused.
   */
  #without<T>(err: unknown, alone: () => Promise<T>): Promise<T> {
    const error = err instanceof Error ? err.message : String(err)
    if (!isKeyRefusal(error)) return Promise.reject(err)
    return alone().then((reply) => {
      const now = this.#now()
      this.#retryAt = now + TIMES_RETRY_MS
      if (this.#refusedSince === null) {
        this.#refusedSince = now
        this.#told?.(this.#redis.keyRefusal(error, 'ap:'), 0)
      }
      return reply
    }, (again: unknown) => Promise.reject(isKeyRefusal(again instanceof Error ? again.message : String(again)) ? err : again))
  }

  /**
   * The Redis key of the placement time of `key`'s binding (Redis key `k`), e.g.
   * `tether:ap:{PHPSESSID-value}`; null when it would not be in `k`'s Cluster slot, so that a
   * call naming both would be refused (CROSSSLOT) and counted as the node's failure: a key that
   * begins with `}` (a header value or cookie a client chose; `af:{}x}` has no hash tag) or a
   * `key_prefix` with an unclosed `{`. Such a binding has no stored placement time (unknown, as
   * one written by a Tether from before it).
   */
  #placedKey(key: string, k: string): string | null {
    const p = `${this.#redis.keyPrefix}ap:{${key}}`
    return keySlot(p) === keySlot(k) ? p : null
  }
}
