// The Redis checkpoint store (standalone, Sentinel or Cluster), shared by every Tether replica.
// Layer 3 adapter and the ONLY file that imports ioredis. It must never make the request path
// wait longer than `timeout` nor reject: every failure becomes 'unavailable'. It logs nothing:
// status changes go to onStatus listeners. Durability across Redis restarts is Redis's job.
import { Cluster, Redis } from 'ioredis'
import type { ClusterOptions, RedisOptions } from 'ioredis'
import type {
  Checkpoint,
  CheckpointStore,
  CheckpointStoreStatus,
  GetResult,
  PutResult,
} from './checkpoint-store.js'

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
export interface RedisCheckpointStoreOptions {
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
  /** Longest wait of a put, get or delete in ms (default 50); later replies are ignored. */
  readonly timeout?: number
  /** Largest `value.length` accepted (default 64 KiB); larger ones are `'too_large'`. */
  readonly maxBytes?: number
  /** Longest wait for a TCP (and TLS) connection in ms (default 2000). */
  readonly connectTimeout?: number
  /** Cap of the exponential reconnect back-off in ms (default 2000); reconnects never stop. */
  readonly maxReconnectDelay?: number
}

/** Defaults of {@link RedisCheckpointStoreOptions}. */
export const REDIS_CHECKPOINT_DEFAULTS = Object.freeze({
  keyPrefix: 'tether:',
  timeout: 50,
  maxBytes: 64 * 1024,
  connectTimeout: 2000,
  maxReconnectDelay: 2000,
})

/**
 * A binding write that never lowers the epoch: KEYS[1] = the binding, ARGV = epoch, upstream,
 * ttlMs. Returns 1 when written (TTL renewed), 0 when a higher epoch is stored.
 */
const SET_BINDING_LUA = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local e = tonumber(string.match(cur, '^(%d+) '))
  if e and e > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
return 1
`

/**
 * The put, in one atomic step: compare versions, write every field, set the TTL.
 * KEYS[1] = the checkpoint hash; ARGV = value, version ('' = none), upstream, epoch, writtenAt,
 * ttlMs. Returns 1 when stored, 0 when stale. The version rule is CheckpointStore.put's:
 * refuse only when both versions exist and incoming <= stored. Versions are compared as Lua
 * numbers (doubles): exact for safe integers.
 */
export const PUT_CHECKPOINT_LUA = `
local incoming = ARGV[2]
if incoming ~= '' then
  local stored = redis.call('HGET', KEYS[1], 'version')
  if stored and stored ~= '' and tonumber(incoming) <= tonumber(stored) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'version', incoming, 'upstream', ARGV[3], 'epoch', ARGV[4], 'writtenAt', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
`

/**
 * The Redis key of a session's checkpoint: `${keyPrefix}cp:{${sessionKey}}`. The braces are a
 * Cluster hash tag: every key of one session hashes to one slot (the slot of the session key).
 *
 * Example: `checkpointKey('tether:', '9f86d0')` -> `"tether:cp:{9f86d0}"`.
 */
export function checkpointKey(keyPrefix: string, sessionKey: string): string {
  return `${keyPrefix}cp:{${sessionKey}}`
}

/** Cluster only: this many failed calls in a row, with no success between, mean degraded. */
export const CLUSTER_FAILURE_STREAK = 20

/** The name under which the put script is defined on the ioredis client. */
const PUT_COMMAND = 'tetherPutCheckpoint'

type Client = Redis | Cluster
type PutCommand = (key: string, ...args: string[]) => Promise<number>

/** The marker of a failed or timed-out call. */
const FAILED: unique symbol = Symbol('failed')

/**
 * CheckpointStore in Redis. A checkpoint is a hash with the fields `value`, `version` (`''` for
 * none), `upstream`, `epoch` and `writtenAt`, under {@link checkpointKey}, expiring `ttlMs` after
 * the last stored put (PEXPIRE). Puts run {@link PUT_CHECKPOINT_LUA} through EVALSHA (ioredis
 * falls back to EVAL on NOSCRIPT, e.g. after a restart of Redis).
 *
 * Failure behaviour: commands are never queued while disconnected (`enableOfflineQueue: false`),
 * never retried nor resent after a reconnect (`maxRetriesPerRequest: 0`,
 * `autoResendUnfulfilledCommands: false`), and each call is raced against `timeout`: a late
 * reply is ignored. A put resolves `'stored'` only after Redis replied to the script; a
 * timed-out put is `'unavailable'` even if Redis applied it later (a stalled server runs it when
 * it resumes; a Cluster client re-sends commands after a MOVED or a node failure on its own).
 * Versioned puts stay safe under such late writes; a late versionless put may overwrite a newer
 * one. The client speaks RESP2 (`protocol: 2`): ioredis 6 defaults to RESP3 (HELLO 3), which
 * Redis < 6 and some Redis-compatible proxies refuse, and nothing here needs RESP3.
 *
 * Status: standalone and Sentinel follow the client's 'ready' / 'close' / 'reconnecting' / 'end'
 * events (a dead server is noticed at once, calls fail at once). A Cluster client stays 'ready'
 * while nodes die, and calls to a dead node wait for `timeout`; the store therefore also turns
 * degraded after {@link CLUSTER_FAILURE_STREAK} failed calls in a row.
 *
 * Durability: 'stored' means the Redis primary accepted the write. Surviving a Redis restart or
 * failover is Redis's job (AOF/RDB, replicas); an empty Redis means checkpoints are 'missing'.
 *
 * Example:
 * ```ts
 * const store = new RedisCheckpointStore({ url: 'redis://redis:6379', keyPrefix: 'tether:' })
 * store.onStatus((s, detail) => log.warn({ detail }, `checkpoint store ${s}`))
 * await store.start()   // resolves even while Redis is down
 * ```
 */
export class RedisCheckpointStore implements CheckpointStore {
  readonly #options: RedisCheckpointStoreOptions
  readonly #keyPrefix: string
  readonly #timeout: number
  readonly #maxBytes: number
  readonly #connectTimeout: number
  readonly #maxReconnectDelay: number
  readonly #listeners = new Set<(status: CheckpointStoreStatus, detail: string) => void>()
  #client: Client | null = null
  #subscriber: Client | null = null
  #status: CheckpointStoreStatus = 'degraded'
  #lastError = ''
  /** Cluster only: calls failed in a row since the last success (see #observe). */
  #failStreak = 0

  /** Validates the options; throws a RangeError naming the problem. Connects only in start(). */
  constructor(options: RedisCheckpointStoreOptions) {
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
    const d = REDIS_CHECKPOINT_DEFAULTS
    this.#keyPrefix = options.keyPrefix ?? d.keyPrefix
    if (/[{}]/.test(this.#keyPrefix)) {
      throw new RangeError(`RedisCheckpointStore: keyPrefix must not contain { or } (it would break the Cluster hash tag), got ${JSON.stringify(this.#keyPrefix)}`)
    }
    this.#timeout = positive('timeout', options.timeout ?? d.timeout)
    this.#connectTimeout = positive('connectTimeout', options.connectTimeout ?? d.connectTimeout)
    this.#maxReconnectDelay = positive('maxReconnectDelay', options.maxReconnectDelay ?? d.maxReconnectDelay)
    this.#maxBytes = options.maxBytes ?? d.maxBytes
    if (!Number.isSafeInteger(this.#maxBytes) || this.#maxBytes < 0) {
      throw new RangeError(`RedisCheckpointStore: maxBytes must be an integer >= 0, got ${this.#maxBytes}`)
    }
    this.#options = options
  }

  get status(): CheckpointStoreStatus {
    return this.#status
  }

  onStatus(fn: (status: CheckpointStoreStatus, detail: string) => void): () => void {
    this.#listeners.add(fn)
    return () => {
      this.#listeners.delete(fn)
    }
  }

  /**
   * Creates the client and connects. Resolves once Redis is ready or the first attempt failed
   * (at most about `connectTimeout`); after a failure the client keeps reconnecting in the
   * background with back-off, and status turns 'ready' when it succeeds. Calling it again
   * while started does nothing.
   */
  async start(): Promise<void> {
    if (this.#client) return
    const client = this.#createClient()
    this.#client = client
    client.defineCommand(PUT_COMMAND, { numberOfKeys: 1, lua: PUT_CHECKPOINT_LUA })
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
   * Closes the connection (QUIT when connected, waiting at most `timeout`), stops reconnecting
   * and reports 'degraded' with detail "stopped". Later calls answer 'unavailable'.
   */
  /**
   * Cluster-wide events between Tether replicas (health and drain changes): publish one on
   * `<prefix>events`. Fire and forget, bounded by `timeout`; false when Redis did not take it.
   */
  async publish(message: string): Promise<boolean> {
    const reply = await this.#race(this.#client, (c) => c.publish(`${this.#keyPrefix}events`, message))
    return reply !== FAILED
  }

  /**
   * Receive every message published on `<prefix>events` (this replica's own included), on a
   * dedicated connection that re-subscribes after each reconnect. Call after start().
   */
  subscribe(onMessage: (message: string) => void): void {
    if (this.#client === null || this.#subscriber !== null) return
    const channel = `${this.#keyPrefix}events`
    const sub = (this.#client as unknown as { duplicate(): Client }).duplicate()
    this.#subscriber = sub
    sub.on('error', () => undefined) // status is reported by the main connection
    sub.on('node error', () => undefined)
    sub.on('message', (ch: string, message: string) => {
      if (ch === channel) onMessage(message)
    })
    sub.on('ready', () => void sub.subscribe(channel).catch(() => undefined))
    void sub.connect().catch(() => undefined)
  }

  async stop(): Promise<void> {
    const sub = this.#subscriber
    this.#subscriber = null
    if (sub !== null) {
      sub.removeAllListeners()
      sub.on('error', () => undefined)
      sub.on('node error', () => undefined)
      sub.disconnect()
    }
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

  /**
   * Cluster only, since an ioredis Cluster stays 'ready' even when every node is down (it
   * reports trouble per node): {@link CLUSTER_FAILURE_STREAK} failed calls in a row with no
   * success in between mean degraded, and the next success means ready again. One dead node
   * out of three fails about a third of calls, so its sessions' failures are interleaved with
   * successes and the status does not flap.
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

  async put(sessionKey: string, cp: Checkpoint, ttlMs: number): Promise<PutResult> {
    if (cp.value.length > this.#maxBytes) return 'too_large'
    const ttl = String(Math.max(1, Math.ceil(ttlMs) || 1))
    const reply = await this.#race(this.#client, (c) => {
      const run = (c as unknown as Record<typeof PUT_COMMAND, PutCommand>)[PUT_COMMAND]
      return run.call(
        c,
        checkpointKey(this.#keyPrefix, sessionKey),
        cp.value,
        cp.version === null ? '' : String(cp.version),
        cp.upstream,
        String(cp.epoch),
        String(cp.writtenAt),
        ttl,
      )
    })
    if (reply === FAILED) return 'unavailable'
    return Number(reply) === 1 ? 'stored' : 'stale'
  }

  async get(sessionKey: string): Promise<GetResult> {
    const reply = await this.#race(this.#client, (c) => c.hgetall(checkpointKey(this.#keyPrefix, sessionKey)))
    if (reply === FAILED) return { status: 'unavailable' }
    const checkpoint = parseCheckpoint(reply)
    return checkpoint ? { status: 'found', checkpoint } : { status: 'missing' }
  }

  async delete(sessionKey: string): Promise<void> {
    await this.#race(this.#client, (c) => c.del(checkpointKey(this.#keyPrefix, sessionKey)))
  }

  /**
   * Shared affinity (`affinity.shared: redis`): the binding of an affinity key, stored as
   * `<prefix>af:{<key>}` = "<epoch> <upstream>". Null when there is none; 'unavailable' when
   * Redis did not answer in time. Never rejects.
   */
  async getBinding(key: string): Promise<{ upstream: string; epoch: number } | null | 'unavailable'> {
    const reply = await this.#race(this.#client, (c) => c.get(`${this.#keyPrefix}af:{${key}}`))
    if (reply === FAILED) return 'unavailable'
    if (typeof reply !== 'string') return null
    const space = reply.indexOf(' ')
    const epoch = Number(reply.slice(0, space))
    return space > 0 && Number.isInteger(epoch) ? { upstream: reply.slice(space + 1), epoch } : null
  }

  /**
   * Store a binding with a TTL (the affinity idle timeout), unless the stored one has a higher
   * epoch (another replica moved the user since: that move wins). False when Redis did not
   * answer or kept the newer binding.
   */
  async setBinding(key: string, upstream: string, epoch: number, ttlMs: number): Promise<boolean> {
    const ttl = String(Math.max(1, Math.ceil(ttlMs)))
    const reply = await this.#race(this.#client, (c) =>
      c.eval(SET_BINDING_LUA, 1, `${this.#keyPrefix}af:{${key}}`, String(epoch), upstream, ttl) as Promise<unknown>)
    return reply !== FAILED && Number(reply) === 1
  }

  async deleteBinding(key: string): Promise<void> {
    await this.#race(this.#client, (c) => c.del(`${this.#keyPrefix}af:{${key}}`))
  }

  #setStatus(status: CheckpointStoreStatus, detail: string): void {
    if (status === this.#status) return
    this.#status = status
    for (const fn of [...this.#listeners]) {
      try {
        fn(status, detail)
      } catch {
        // A failing listener must not break the store nor the other listeners.
      }
    }
  }

  /**
   * Runs `work` on `client`, resolving its reply, or FAILED when there is no client, it
   * throws, rejects or has not replied within `timeout` ms. Never rejects; a late outcome
   * is dropped.
   */
  #race<T>(client: Client | null, work: (c: Client) => Promise<T>): Promise<T | typeof FAILED> {
    if (!client) return Promise.resolve(FAILED)
    return new Promise((resolve) => {
      let done = false
      const finish = (value: T | typeof FAILED): void => {
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
      connectionName: 'tether-checkpoints',
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

/** A checkpoint from an HGETALL reply, or null when the hash is empty or not one of ours. */
function parseCheckpoint(hash: Record<string, string>): Checkpoint | null {
  const { value, version, upstream, epoch, writtenAt } = hash
  if (value === undefined || version === undefined || upstream === undefined || epoch === undefined || writtenAt === undefined) {
    return null
  }
  const v = version === '' ? null : Number(version)
  const e = Number(epoch)
  const w = Number(writtenAt)
  if ((v !== null && !Number.isFinite(v)) || !Number.isFinite(e) || !Number.isFinite(w)) return null
  return Object.freeze({ value, version: v, upstream, epoch: e, writtenAt: w })
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
