// Peer events over Redis pub/sub on `<prefix>events`. Layer 3 adapter over the shared
// RedisConnection: publish is fire and forget, bounded by the connection's timeout.
import type { PeerChannel } from '../peers/peer-channel.js'
import { FAILED, type RedisConnection } from './connection.js'

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

  subscribe(onMessage: (message: string) => void): void {
    this.#redis.subscribe(this.#channel, onMessage)
  }
}
