// Where and how to reach Redis: the options of a RedisConnection, their defaults and their
// checks (a `redis://` URL parsed, durations > 0), and how a node's address is written.
// Pure: no I/O, no ioredis (connection.ts turns these into its clients' options).
import type { Timers } from '../clock.js'

/** A host and port of a Sentinel or Cluster node. */
export interface RedisAddress {
  readonly host: string
  readonly port: number
}

/**
 * Where and how to reach Redis. Exactly one of `url`, `sentinels` (with `name`) or `nodes`.
 *
 * Examples:
 * ```ts
 * { url: 'redis://:s3cret@redis.tether.svc:6379/2' }              // standalone, password, db 2
 * { url: 'rediss://redis.example.com:6380' }                       // standalone over TLS
 * { sentinels: [{ host: 'sentinel-0', port: 26379 }], name: 'mymaster', password: 's3cret' }
 * { nodes: [{ host: 'redis-0', port: 6379 }, { host: 'redis-1', port: 6379 }] }  // Cluster
 * ```
 */
export interface RedisConnectionOptions {
  /**
   * `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS (server certificate
   * checked against the system CAs). Port 6379 and db 0 by default.
   */
  readonly url?: string
  /**
   * The Redis password (of the master for Sentinel, of every node for Cluster). A string
   * replaces the one in `url`; null means none even if `url` has one; undefined keeps `url`'s.
   */
  readonly password?: string | null
  /**
   * The Redis 6+ ACL user (of the master for Sentinel, of every node for Cluster). Like
   * `password`: a string replaces the one in `url`; null means none (the `default` user) even if
   * `url` has one; undefined keeps `url`'s.
   */
  readonly username?: string | null
  /**
   * How a refusal by Redis itself (NOAUTH, WRONGPASS, NOPERM) names the settings to fix
   * (defaults `"username"` and `"password"`; Tether's config passes `"state.redis.username"`...).
   */
  readonly usernameSetting?: string
  readonly passwordSetting?: string
  /**
   * How such a refusal names `url` when the user or password it refused came from there
   * (`password` / `username` not given; default `"url"`; Tether's config passes
   * `"state.redis.url"`). The URL itself is never told.
   */
  readonly urlSetting?: string
  /** Sentinel addresses; the master is found by `name` and followed across failovers. */
  readonly sentinels?: readonly RedisAddress[]
  /** The Sentinel master name, e.g. `"mymaster"`; required with `sentinels`. */
  readonly name?: string
  /**
   * The Sentinels' own password (their `requirepass`, distinct from the master's `password`),
   * for ioredis's questions to them and Tether's `+switch-master` watches; null or undefined: none.
   */
  readonly sentinelPassword?: string | null
  /**
   * How a refusal by a Sentinel (NOAUTH, WRONGPASS, invalid password) names the setting to fix
   * (default `"sentinelPassword"`; Tether's config passes `"state.redis.sentinel_password"`).
   */
  readonly sentinelPasswordSetting?: string
  /**
   * The Sentinels' own ACL user (Redis 6.2+ Sentinels), for ioredis's questions to them and the
   * `+switch-master` watches; null or undefined: the `default` user.
   */
  readonly sentinelUsername?: string | null
  /** How a Sentinel's refusal names the username setting (default `"sentinelUsername"`). */
  readonly sentinelUsernameSetting?: string
  /** Redis Cluster seed nodes; the slot map is discovered from them. */
  readonly nodes?: readonly RedisAddress[]
  /** Prefix of every key, e.g. `"tether:"` (the default). Must not contain `{` or `}`. */
  readonly keyPrefix?: string
  /** Longest wait of one command in ms (default 50); later replies are ignored. */
  readonly timeout?: number
  /** Longest wait for a TCP (and TLS) connection in ms (default 2000). */
  readonly connectTimeout?: number
  /** Cap of the exponential reconnect back-off in ms (default 2000); reconnects never stop. */
  readonly maxReconnectDelay?: number
  /**
   * A connection on which commands wait and no byte arrives for this long (ms) is closed and
   * made again, and its waiting commands fail (default `connectTimeout`): a frozen Redis (a
   * stopped process, a paused VM, a partition that drops packets) keeps the TCP connection
   * up, and every command sent to it would be held, with its value, until it answered. It
   * also bounds the ready check of a new connection (ioredis waits for it without a limit).
   * Longer than any call's own timeout.
   */
  readonly stallTimeout?: number
  /**
   * The most commands sent to one node and not yet answered (default 1000), counting those
   * whose caller stopped waiting: beyond it, a call for that node fails at once, unsent (a slow
   * Redis must not turn into unbounded memory here; a frozen Cluster shard must not take the
   * other shards' room).
   */
  readonly maxWaiting?: number
  /** Monotonic time in ms for the node health windows (default `performance.now()`); tests pass their own. */
  readonly now?: () => number
  /** Timers for command deadlines and node probes (default the system's, unref'd); tests pass fake ones. */
  readonly timers?: Timers
}

/** Defaults of {@link RedisConnectionOptions}. */
export const REDIS_DEFAULTS = Object.freeze({
  keyPrefix: 'tether:',
  timeout: 50,
  connectTimeout: 2000,
  maxReconnectDelay: 2000,
  maxWaiting: 1000,
})
/** `host:port`, with brackets around an IPv6 host: `hostPort('::1', 6380)` -> `"[::1]:6380"`. */
export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

/** The parts of a `redis://` or `rediss://` URL. */
export interface RedisUrl {
  readonly host: string
  readonly port: number
  readonly db: number
  readonly tls: boolean
  readonly username?: string
  readonly password?: string
}

/** Parses a Redis URL; throws a RangeError naming the problem. */
export function parseRedisUrl(url: string): RedisUrl {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    // (not shown: it may hold a password)
    throw new RangeError('RedisCheckpointStore: url is not a URL')
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new RangeError(`RedisCheckpointStore: url must start with redis:// or rediss://, got ${JSON.stringify(u.protocol)}`)
  }
  if (!u.hostname) throw new RangeError('RedisCheckpointStore: url has no host')
  // (as config validation: a ?password= would be ignored, and AUTH refused; not shown)
  if (u.search !== '') throw new RangeError('RedisCheckpointStore: url must have no query (?...): none of its parameters is read; the db is the path (redis://host:6379/1), the password the password option or redis://user:password@host')
  const path = u.pathname.replace(/^\//, '')
  if (path !== '' && !/^\d+$/.test(path)) {
    // (shown unless it may be the end of a password with a / in it)
    throw new RangeError(`RedisCheckpointStore: the url path must be a db number${u.pathname.includes('@') ? '' : `, got ${JSON.stringify(u.pathname)}`}`)
  }
  const username = u.username ? decodeURIComponent(u.username) : undefined
  const password = u.password ? decodeURIComponent(u.password) : undefined
  return {
    host: u.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: u.port ? Number(u.port) : 6379,
    db: path === '' ? 0 : Number(path),
    tls: u.protocol === 'rediss:',
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password }),
  }
}

export function positive(name: string, value: number): number {
  if (!(Number.isFinite(value) && value > 0)) {
    throw new RangeError(`RedisCheckpointStore: ${name} must be a number > 0 (ms), got ${value}`)
  }
  return value
}
