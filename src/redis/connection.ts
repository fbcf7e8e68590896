// The connection to Redis (standalone, Sentinel or Cluster) that Tether's Redis roles share:
// checkpoints, shared affinity bindings and peer events. Layer 3 adapter and the ONLY file that
// imports ioredis. Every command is raced against `timeout` and never rejects (a failure is
// FAILED); status changes go to listeners, nothing is logged here. Connects only in start().
import { Cluster, Redis } from 'ioredis'
import type { ClusterOptions, RedisOptions } from 'ioredis'

/** Whether Redis answers now. */
export type RedisStatus = 'ready' | 'degraded'

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
  /** Sentinel addresses; the master is found by `name` and followed across failovers. */
  readonly sentinels?: readonly RedisAddress[]
  /** The Sentinel master name, e.g. `"mymaster"`; required with `sentinels`. */
  readonly name?: string
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
}

/** Defaults of {@link RedisConnectionOptions}. */
export const REDIS_DEFAULTS = Object.freeze({
  keyPrefix: 'tether:',
  timeout: 50,
  connectTimeout: 2000,
  maxReconnectDelay: 2000,
})

/** Cluster only: this many failed calls in a row, with no success between, mean degraded. */
export const CLUSTER_FAILURE_STREAK = 20

/** The marker of a failed or timed-out command. */
export const FAILED: unique symbol = Symbol('failed')
export type Failed = typeof FAILED

/** The commands the roles use (a narrow view of the ioredis client). */
export interface RedisCommands {
  get(key: string): Promise<string | null>
  del(key: string): Promise<number>
  hgetall(key: string): Promise<Record<string, string>>
  eval(script: string, numKeys: number, ...args: string[]): Promise<unknown>
  publish(channel: string, message: string): Promise<number>
}

type Client = Redis | Cluster

/**
 * One client, its status and reconnects. Failure behaviour: commands are never queued while
 * disconnected (`enableOfflineQueue: false`), never retried nor resent after a reconnect
 * (`maxRetriesPerRequest: 0`, `autoResendUnfulfilledCommands: false`), and each call is raced
 * against `timeout`: a late reply is ignored (a stalled server may still apply it when it
 * resumes; a Cluster client re-sends after a MOVED on its own). The client speaks RESP2
 * (`protocol: 2`): ioredis 6 defaults to RESP3, which Redis < 6 and some proxies refuse.
 *
 * Status: standalone and Sentinel follow the client's 'ready' / 'close' / 'reconnecting' /
 * 'end' events. A Cluster client stays 'ready' while nodes die, so it also turns degraded
 * after {@link CLUSTER_FAILURE_STREAK} failed calls in a row.
 *
 * Example:
 * ```ts
 * const redis = new RedisConnection({ url: 'redis://redis:6379', keyPrefix: 'tether:' })
 * redis.onStatus((s, detail) => log.warn({ detail }, `redis ${s}`))
 * await redis.start()   // resolves even while Redis is down
 * await redis.run((c) => c.get('tether:x'))  // the reply, or FAILED
 * ```
 */
export class RedisConnection {
  readonly #options: RedisConnectionOptions
  /** Prefix of every key and channel. */
  readonly keyPrefix: string
  readonly #timeout: number
  readonly #connectTimeout: number
  readonly #maxReconnectDelay: number
  readonly #listeners = new Set<(status: RedisStatus, detail: string) => void>()
  #client: Client | null = null
  readonly #subscribers = new Set<Client>()
  #status: RedisStatus = 'degraded'
  #lastError = ''
  /** Cluster only: calls failed in a row since the last success. */
  #failStreak = 0
  /** Lua scripts the roles use, defined on the client as commands (EVALSHA, EVAL on NOSCRIPT). */
  readonly #scripts = new Map<string, { lua: string; keys: number }>()

  /** Validates the options; throws a RangeError naming the problem. */
  constructor(options: RedisConnectionOptions) {
    const targets = [options.url !== undefined, options.sentinels !== undefined, options.nodes !== undefined]
    if (targets.filter(Boolean).length !== 1) {
      throw new RangeError('RedisCheckpointStore: set exactly one of url, sentinels (with name) or nodes')
    }
    if (options.url !== undefined) parseRedisUrl(options.url)
    if (options.sentinels !== undefined && (options.sentinels.length === 0 || !options.name)) {
      throw new RangeError('RedisCheckpointStore: sentinels needs at least one address and a master name')
    }
    if (options.nodes !== undefined && options.nodes.length === 0) {
      throw new RangeError('RedisCheckpointStore: nodes needs at least one address')
    }
    const d = REDIS_DEFAULTS
    this.keyPrefix = options.keyPrefix ?? d.keyPrefix
    if (/[{}]/.test(this.keyPrefix)) {
      throw new RangeError(`RedisCheckpointStore: keyPrefix must not contain { or } (it would break the Cluster hash tag), got ${JSON.stringify(this.keyPrefix)}`)
    }
    this.#timeout = positive('timeout', options.timeout ?? d.timeout)
    this.#connectTimeout = positive('connectTimeout', options.connectTimeout ?? d.connectTimeout)
    this.#maxReconnectDelay = positive('maxReconnectDelay', options.maxReconnectDelay ?? d.maxReconnectDelay)
    this.#options = options
  }

  get status(): RedisStatus {
    return this.#status
  }

  onStatus(fn: (status: RedisStatus, detail: string) => void): () => void {
    this.#listeners.add(fn)
    return () => {
      this.#listeners.delete(fn)
    }
  }

  /**
   * Creates the client and connects. Resolves once Redis is ready or the first attempt failed
   * (at most about `connectTimeout`); after a failure the client keeps reconnecting in the
   * background with back-off. Calling it again while started does nothing.
   */
  async start(): Promise<void> {
    if (this.#client) return
    const client = this.#createClient()
    this.#client = client
    for (const [name, { lua, keys }] of this.#scripts) client.defineCommand(name, { numberOfKeys: keys, lua })
    this.#failStreak = 0
    client.on('ready', () => {
      this.#lastError = ''
      this.#setStatus('ready', 'connected')
    })
    client.on('error', (err: unknown) => {
      this.#lastError = describe(err)
    })
    // A Cluster reports trouble with one node as 'node error'; the client stays usable for the
    // other slots, so it only feeds the detail of the next status change.
    client.on('node error', (err: unknown) => {
      this.#lastError = describe(err)
    })
    for (const event of ['close', 'reconnecting', 'end'] as const) {
      client.on(event, () => {
        if (this.#client === client) this.#setStatus('degraded', this.#lastError || `connection ${event === 'end' ? 'ended' : 'closed'}`)
      })
    }
    try {
      await client.connect()
      // ioredis emits 'ready' on a later tick than connect() resolves: report it now.
      if (this.#client === client && client.status === 'ready') this.#setStatus('ready', 'connected')
    } catch (err) {
      this.#lastError ||= describe(err)
      if (this.#client === client) this.#setStatus('degraded', this.#lastError)
    }
  }

  /**
   * Closes the connections (QUIT when connected, waiting at most `timeout`), stops reconnecting
   * and reports 'degraded' with detail "stopped". Later calls answer FAILED.
   */
  async stop(): Promise<void> {
    for (const sub of this.#subscribers) {
      sub.removeAllListeners()
      sub.on('error', () => undefined)
      sub.on('node error', () => undefined)
      sub.disconnect()
    }
    this.#subscribers.clear()
    const client = this.#client
    if (!client) return
    this.#client = null
    if (client.status === 'ready') await this.#race(client, (c) => c.quit())
    client.disconnect()
    client.removeAllListeners()
    // Swallow errors the closing sockets may still emit (an 'error' with no listener throws).
    client.on('error', () => {})
    client.on('node error', () => {})
    this.#setStatus('degraded', 'stopped')
  }

  /** Run one command, bounded by `timeout`: its reply, or FAILED. Never rejects. */
  run<T>(work: (c: RedisCommands) => Promise<T>): Promise<T | Failed> {
    return this.#race(this.#client, work as (c: Client) => Promise<T>)
  }

  /**
   * Register a Lua script as command `name` with `keys` key arguments (call before start()).
   * ioredis runs it by EVALSHA and falls back to EVAL on NOSCRIPT (e.g. after a Redis restart).
   */
  defineScript(name: string, lua: string, keys: number): void {
    this.#scripts.set(name, { lua, keys })
  }

  /** Run script `name` with its keys and arguments, bounded by `timeout`: its reply, or FAILED. */
  runScript(name: string, ...args: string[]): Promise<unknown> {
    return this.#race(this.#client, (c) => {
      const run = (c as unknown as Record<string, (...a: string[]) => Promise<unknown>>)[name]
      if (run === undefined) return Promise.reject(new Error(`script ${name} is not defined`))
      return run.apply(c, args)
    })
  }

  /**
   * Receive every message published on `channel`, on a dedicated connection that re-subscribes
   * after each reconnect. Call after start(); stop() ends it.
   */
  subscribe(channel: string, onMessage: (message: string) => void): void {
    if (this.#client === null) return
    const sub = (this.#client as unknown as { duplicate(): Client }).duplicate()
    this.#subscribers.add(sub)
    sub.on('error', () => undefined) // status is reported by the main connection
    sub.on('node error', () => undefined)
    sub.on('message', (ch: string, message: string) => {
      if (ch === channel) onMessage(message)
    })
    sub.on('ready', () => void sub.subscribe(channel).catch(() => undefined))
    void sub.connect().catch(() => undefined)
  }

  /**
   * Cluster only, since an ioredis Cluster stays 'ready' even when every node is down (it
   * reports trouble per node): {@link CLUSTER_FAILURE_STREAK} failed calls in a row with no
   * success in between mean degraded, and the next success means ready again.
   */
  #observe(client: Client | null, ok: boolean): void {
    if (!(client instanceof Cluster) || client !== this.#client) return
    if (ok) {
      this.#failStreak = 0
      if (client.status === 'ready') this.#setStatus('ready', 'connected')
    } else if (++this.#failStreak >= CLUSTER_FAILURE_STREAK) {
      this.#setStatus('degraded', this.#lastError || `${this.#failStreak} calls in a row failed`)
    }
  }

  #setStatus(status: RedisStatus, detail: string): void {
    if (status === this.#status) return
    this.#status = status
    for (const fn of [...this.#listeners]) {
      try {
        fn(status, detail)
      } catch {
        // A failing listener must not break the connection nor the other listeners.
      }
    }
  }

  /**
   * Runs `work` on `client`, resolving its reply, or FAILED when there is no client, it
   * throws, rejects or has not replied within `timeout` ms. Never rejects; a late outcome
   * is dropped.
   */
  #race<T>(client: Client | null, work: (c: Client) => Promise<T>): Promise<T | Failed> {
    if (!client) return Promise.resolve(FAILED)
    return new Promise((resolve) => {
      let done = false
      const finish = (value: T | Failed): void => {
        if (done) return
        done = true
        clearTimeout(timer)
        this.#observe(client, value !== FAILED)
        resolve(value)
      }
      const timer = setTimeout(() => finish(FAILED), this.#timeout)
      try {
        work(client).then(finish, () => finish(FAILED))
      } catch {
        finish(FAILED)
      }
    })
  }

  #createClient(): Client {
    const o = this.#options
    const backoff = (times: number): number => Math.min(this.#maxReconnectDelay, 50 * 2 ** Math.min(times - 1, 16))
    const common: RedisOptions = {
      lazyConnect: true,
      protocol: 2,
      connectionName: 'tether',
      connectTimeout: this.#connectTimeout,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // Untyped ioredis option (default 2000): how long disconnect() waits for a socket to
      // close. ioredis arms it even for a socket that is already dead, and the timer would keep
      // the process alive after stop(); 100 ms is plenty for a QUIT that was answered.
      ...{ disconnectTimeout: 100 },
    }
    const password = o.password === null ? undefined : o.password
    if (o.nodes) {
      const clusterOptions: ClusterOptions = {
        lazyConnect: true,
        enableOfflineQueue: false,
        clusterRetryStrategy: backoff,
        slotsRefreshTimeout: this.#connectTimeout,
        redisOptions: { ...common, ...(password === undefined ? {} : { password }) },
      }
      return new Cluster(o.nodes.map((n) => ({ host: n.host, port: n.port })), clusterOptions)
    }
    const base: RedisOptions = { ...common, enableOfflineQueue: false, retryStrategy: backoff }
    if (o.sentinels) {
      return new Redis({
        ...base,
        sentinels: o.sentinels.map((s) => ({ host: s.host, port: s.port })),
        ...(o.name === undefined ? {} : { name: o.name }),
        ...(password === undefined ? {} : { password }),
        sentinelRetryStrategy: backoff,
      })
    }
    const target = parseRedisUrl(o.url as string)
    const auth = o.password === undefined ? target.password : password
    return new Redis({
      ...base,
      host: target.host,
      port: target.port,
      db: target.db,
      ...(target.username === undefined ? {} : { username: target.username }),
      ...(auth === undefined ? {} : { password: auth }),
      ...(target.tls ? { tls: {} } : {}),
    })
  }
}

/** The parts of a `redis://` or `rediss://` URL. */
interface RedisUrl {
  readonly host: string
  readonly port: number
  readonly db: number
  readonly tls: boolean
  readonly username?: string
  readonly password?: string
}

/** Parses a Redis URL; throws a RangeError naming the problem. */
function parseRedisUrl(url: string): RedisUrl {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw new RangeError(`RedisCheckpointStore: url is not a URL: ${JSON.stringify(url)}`)
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new RangeError(`RedisCheckpointStore: url must start with redis:// or rediss://, got ${JSON.stringify(u.protocol)}`)
  }
  if (!u.hostname) throw new RangeError('RedisCheckpointStore: url has no host')
  const path = u.pathname.replace(/^\//, '')
  if (path !== '' && !/^\d+$/.test(path)) {
    throw new RangeError(`RedisCheckpointStore: the url path must be a db number, got ${JSON.stringify(u.pathname)}`)
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

function positive(name: string, value: number): number {
  if (!(Number.isFinite(value) && value > 0)) {
    throw new RangeError(`RedisCheckpointStore: ${name} must be a number > 0 (ms), got ${value}`)
  }
  return value
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
