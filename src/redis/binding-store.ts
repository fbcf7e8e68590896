// Shared affinity bindings in Redis (`affinity.shared: redis`): key -> "<epoch> <upstream>" with
// the idle TTL, written by a script that never lowers the epoch, so a move made by one Tether
// replica wins over an older binding written later by another. Layer 3 adapter over the shared
// RedisConnection; never rejects, never waits longer than the connection's timeout.
import type { BindingSink, SharedBindings } from '../affinity/session-table.js'
import { FAILED, type RedisConnection } from './connection.js'

/**
 * A binding write that never lowers the epoch: KEYS[1] = the binding, ARGV = epoch, upstream,
 * ttlMs. Returns 1 when written (TTL renewed), 0 when a higher epoch is stored, or the same
 * epoch on a smaller upstream id: two replicas that moved a user at once (each its own move
 * at the same epoch) agree on one, as workers do (SessionTable.applyRemote).
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
local cur = redis.call('GET', KEYS[1])
if cur then
  local e, up = string.match(cur, '^(%d+) (.*)$')
  e = tonumber(e)
  local want = tonumber(ARGV[1])
  if e and (e > want or (e == want and less(up, ARGV[2]))) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
return 1
`
const SET_SCRIPT = 'tetherSetBinding'

/**
 * Example: `bindings.set('PHPSESSID-value', 'app-1', 2, 3_600_000)` -> stored as
 * `tether:af:{PHPSESSID-value}` = "2 app-1"; `await bindings.lookup('PHPSESSID-value')` ->
 * `{ upstream: 'app-1', epoch: 2 }`.
 */
export class RedisBindings implements SharedBindings {
  readonly #redis: RedisConnection
  readonly #ttl: number

  /** `ttlMs`: the affinity idle timeout (a binding unused that long is gone). */
  constructor(redis: RedisConnection, ttlMs: number) {
    this.#redis = redis
    this.#ttl = ttlMs
    redis.defineScript(SET_SCRIPT, SET_BINDING_LUA, 1)
  }

  /** The binding of `key`: null when none, 'unavailable' when Redis did not answer in time. */
  async lookup(key: string): Promise<{ upstream: string; epoch: number } | null | 'unavailable'> {
    const k = this.#key(key)
    const reply = await this.#redis.run(k, (c) => c.get(k))
    if (reply === FAILED) return 'unavailable'
    if (typeof reply !== 'string') return null
    const space = reply.indexOf(' ')
    const epoch = Number(reply.slice(0, space))
    return space > 0 && Number.isInteger(epoch) ? { upstream: reply.slice(space + 1), epoch } : null
  }

  /**
   * Store a binding with the TTL, unless the stored one has a higher epoch (another replica
   * moved the user since: that move wins). False when Redis did not answer or kept the newer one.
   */
  async set(key: string, upstream: string, epoch: number): Promise<boolean> {
    return (await this.write(key, upstream, epoch)) === 'written'
  }

  /**
   * {@link set} with its outcome told apart: 'written', 'kept' (a higher epoch, or the same
   * epoch on a smaller upstream id, is stored: it stays) or 'failed' (Redis did not answer).
   * `ttlMs`: how long the binding lives unused (default the idle timeout; a binding written
   * back after a lost keyspace keeps the idle time it has left). Idempotent: writing the same
   * binding twice, or from two replicas at once, leaves one binding.
   */
  async write(key: string, upstream: string, epoch: number, ttlMs = this.#ttl): Promise<'written' | 'kept' | 'failed'> {
    const reply = await this.#redis.runScript(SET_SCRIPT, this.#key(key), String(epoch), upstream, String(Math.max(1, Math.ceil(ttlMs))))
    return reply === FAILED ? 'failed' : Number(reply) === 1 ? 'written' : 'kept'
  }

  /** The Redis key of `key`'s binding, e.g. `tether:af:{PHPSESSID-value}` (which Cluster node holds it). */
  keyOf(key: string): string {
    return this.#key(key)
  }

  async delete(key: string): Promise<void> {
    const k = this.#key(key)
    await this.#redis.run(k, (c) => c.del(k))
  }

  /** The session table's write-through sink (fire and forget). */
  sink(): BindingSink {
    return {
      bound: (key, upstream, epoch) => void this.set(key, upstream, epoch),
      unbound: (key) => void this.delete(key),
    }
  }

  #key(key: string): string {
    return `${this.#redis.keyPrefix}af:{${key}}`
  }
}
