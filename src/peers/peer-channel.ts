// The port through which Tether replicas tell each other things (an upstream found down, an
// admin drain): a broadcast channel, and small named sets a replica that starts later reads. Layer 0 vocabulary: an interface only; the Redis pub/sub
// implementation is src/redis/peer-channel.ts.

/** A broadcast channel between Tether replicas; every replica receives every message, its own included. */
export interface PeerChannel {
  /** Send `message` to every replica (fire and forget; false when it could not be sent). */
  publish(message: string): Promise<boolean>
  /**
   * Receive every message (call once, after the channel's connection started); resolves once
   * receiving, or after the channel's connect timeout when it cannot subscribe yet.
   * `onSubscribed` is called each time the subscription is (again) in place: messages sent
   * while it was not were missed, and the named sets may say what they were.
   */
  subscribe(onMessage: (message: string) => void, onSubscribed?: () => void): Promise<void>
  /**
   * Record `id` with a value (null: clear it) in the named set that replicas starting later
   * read with {@link members} (e.g. the upstreams drained through an admin API). Fire and forget.
   */
  remember(set: string, id: string, value: string | null): Promise<boolean>
  /**
   * The ids recorded in the named set, with their values (empty when none); null when they
   * could not be read (unreachable, no reply within the channel's connect timeout, refused).
   */
  members(set: string): Promise<Map<string, string> | null>
}
