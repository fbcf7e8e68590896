// Peer events over Redis pub/sub on `<prefix>events`. Layer 3 adapter over the shared
// RedisConnection: publish is fire and forget, bounded by the connection's timeout.
import type { PeerChannel } from '../peers/peer-channel.js'
import { FAILED, type RedisConnection } from './connection.js'

/** How long a named set outlives its last write (a drain nobody ended is forgotten after that). */
const SET_TTL_MS = 7 * 24 * 3_600_000

/** Example: `new RedisPeerChannel(redis).publish('{"kind":"drain","id":"app-1"}')`. */
export class RedisPeerChannel implements PeerChannel {
  readonly #redis: RedisConnection
  readonly #channel: string

  constructor(redis: RedisConnection) {
    this.#redis = redis
    this.#channel = `${redis.keyPrefix}events`
  }

  async publish(message: string): Promise<boolean> {
    return (await this.#redis.run(null, (c) => c.publish(this.#channel, message))) !== FAILED
  }

  subscribe(onMessage: (message: string) => void, onSubscribed?: () => void): Promise<void> {
    return this.#redis.subscribe(this.#channel, onMessage, onSubscribed)
  }

  /** A hash `<prefix>peers:<set>` of id -> value; it expires a week after its last write. */
  async remember(set: string, id: string, value: string | null): Promise<boolean> {
    const key = this.#setKey(set)
    // (both sent in one go: a command sent after an await is not seen accepted again after a NOPERM)
    const reply = await this.#redis.run(key, async (c) => value !== null
      ? (await allReplies([c.hset(key, id, value), c.pexpire(key, SET_TTL_MS)])).reduce((a, b) => a + b)
      : c.hdel(key, id))
    return reply !== FAILED
  }

  /**
   * Read when a replica starts (and when its subscription is back): bounded by the connection's
   * connectTimeout, as the start's other waits, not by the request path's `timeout` (a slow
   * Redis's reply, too late for a request, still applies the drains before the port listens).
   */
  async members(set: string): Promise<Map<string, string> | null> {
    const key = this.#setKey(set)
    const reply = await this.#redis.runWithin(this.#redis.connectTimeout, key, (c) => c.hgetall(key))
    return reply === FAILED ? null : new Map(Object.entries(reply))
  }

  #setKey(set: string): string {
    return `${this.#redis.keyPrefix}peers:${set}`
  }
}

/**
 * Every reply of `calls`, or, when some fail, the failure: one as it is, several as an
 * AggregateError of all of them (each refusal told, see RedisConnection's call errors), never a
 * rejection left unexamined as Promise.all leaves all but the first.
 */
async function allReplies<T>(calls: Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(calls)
  const failures = settled.flatMap((s) => s.status === 'rejected' ? [s.reason as unknown] : [])
  if (failures.length === 1) throw failures[0]
  if (failures.length > 1) throw new AggregateError(failures, failures.map((f) => f instanceof Error ? f.message : String(f)).join('; '))
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value)
}
