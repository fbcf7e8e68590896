// The connection to Redis (standalone, Sentinel or Cluster) that Tether's Redis roles share
// (checkpoints, shared affinity bindings, peer events), and the health of each node behind it.
// Layer 3 adapter and the ONLY file that imports ioredis. Every command is raced against
// `timeout` and never rejects (a failure is FAILED); status and node changes go to listeners,
// nothing is logged here. Connects only in start(). What needs no ioredis is beside it: the
// options (connection-options.ts), what error replies mean (reply-errors.ts, auth-hint.ts,
// error-hints.ts), the ACL refusals (acl-refusals.ts), the nodes and their events (node-set.ts,
// node-health.ts) and the Sentinel switch watches (sentinel-watch.ts); each imports none of this file.
import { Cluster, Redis, ReplyError } from 'ioredis'
import type { ClusterOptions, RedisOptions } from 'ioredis'
import { systemTimers, type Timers } from '../clock.js'
import { withDeadline } from '../deadline.js'
import { CLUSTER_SLOTS, keySlot } from './key-slot.js'
import { NodeHealth, slotRanges, type RedisNodeHealth, type RedisNodeRole } from './node-health.js'
import { REDIS_DEFAULTS, hostPort, parseRedisUrl, positive, type RedisAddress, type RedisConnectionOptions } from './connection-options.js'
import { NODE_FAULT, NOPERM, RECONNECT_ON, REFUSED, SCRIPT_NODE_FAULT, SENTINEL_ROUND_FAILED, commandOf, describe, writesRefusedBy, type RedisReplyError, type WritesRefusedReason } from './reply-errors.js'
import { tellAll } from './listener-set.js'
import { NodeSet, type RedisNodeEvent } from './node-set.js'
import { AclRefusals, type RedisRefusal } from './acl-refusals.js'
import { ErrorHints } from './error-hints.js'
import { SENTINEL_SILENT_MS, SentinelWatch, type RedisSentinelEvent } from './sentinel-watch.js'

export type { RedisNodeHealth, RedisNodeRole, RedisNodeStatus } from './node-health.js'
export type { WritesRefusedReason } from './reply-errors.js'
// (the options are the connection's: who builds one imports them with it)
export { REDIS_DEFAULTS, type RedisAddress, type RedisConnectionOptions } from './connection-options.js'
export type { RedisRefusal, RefusalKind } from './acl-refusals.js'
export type { RedisSentinelEvent } from './sentinel-watch.js'
export type { RedisNodeEvent } from './node-set.js'

/** Whether Redis answers now. */
export type RedisStatus = 'ready' | 'degraded'

/**
 * The longest wait of stop() for Redis to answer its QUIT (ms), whatever `timeout` is: a live
 * Redis answers in a round trip, and its routine stalls (a fork for a snapshot, about 10-20 ms a
 * GB) stay far below 1 s, the default `state.confirm_timeout`; a frozen one (a stopped process, a
 * partition) would otherwise hold a graceful stop up to `state.timeout` past its grace end,
 * which a Kubernetes `terminationGracePeriodSeconds` does not count on.
 */
export const STOP_WAIT_MS = 1_000

/** While a node is suspect (reachable, with failures in its window), it is probed this often (ms). */
export const PROBE_INTERVAL_MS = 500

/**
 * Each subscriber connection (standalone, Sentinel or Cluster) PINGs Redis this often (ms). A subscribed
 * connection sends nothing by itself, so the stall timeout (`socketTimeout`, armed by a command
 * waiting) never watched it: one that went silent without a FIN or a RST (a NAT's or
 * conntrack's entry dropped, a host gone) missed every peer message until TCP keepalive noticed
 * (minutes). With a PING waiting, such a connection is closed after `stallTimeout` and made
 * again, its SUBSCRIBE with it (and `onSubscribed` re-reads what was missed): at most this plus
 * `stallTimeout` after it went silent. A Cluster's subscriber is a connection ioredis's Cluster
 * makes itself (ClusterSubscriber, without the stall timeout): its PING is raced against
 * `stallTimeout` here, and a silent one is disconnected, which makes ioredis pick a node again.
 */
export const SUBSCRIBER_PING_MS = 5_000

/**
 * The writes probe of a node that refuses writes (the room probe of a full one): a script that
 * writes nothing but, declared with a shebang and no flags (so it may write), is refused as a
 * whole by Redis 7+ before it runs, as any write would be (server.c, processCommand: `OOM
 * command not allowed when used memory > 'maxmemory'`, `MISCONF ...`, `NOREPLICAS ...`), and
 * answers 1 once writes are taken again, without a key touched. Redis before 7.0 cannot
 * compile it (no shebang): its answer tells nothing (see REFUSED_QUIET_MS).
 */
export const ROOM_PROBE_LUA = '#!lua\nreturn 1'

/** The marker of a failed or timed-out command. */
export const FAILED: unique symbol = Symbol('failed')
export type Failed = typeof FAILED

/** The commands the roles use (a narrow view of the ioredis client). */
export interface RedisCommands {
  get(key: string): Promise<string | null>
  mget(...keys: string[]): Promise<(string | null)[]>
  del(...keys: string[]): Promise<number>
  exists(key: string): Promise<number>
  hgetall(key: string): Promise<Record<string, string>>
  eval(script: string, numKeys: number, ...args: string[]): Promise<unknown>
  publish(channel: string, message: string): Promise<number>
  hset(key: string, field: string, value: string): Promise<number>
  hdel(key: string, field: string): Promise<number>
  pexpire(key: string, ms: number): Promise<number>
}

type Client = Redis | Cluster

/**
 * One client, its status, the health of each node and reconnects. Failure behaviour: commands
 * are never queued while disconnected (`enableOfflineQueue: false`), never retried nor resent
 * after a reconnect (`maxRetriesPerRequest: 0`, `autoResendUnfulfilledCommands: false`), and
 * each call is raced against `timeout`: a late reply is ignored (a stalled server may still
 * apply it when it resumes; a Cluster client re-sends after a MOVED on its own). The client
 * speaks RESP2 (`protocol: 2`): ioredis 6 defaults to RESP3, which Redis < 6 and some proxies refuse.
 * A READONLY, LOADING or MASTERDOWN reply (the server is not the primary, or not yet) fails its
 * command and remakes a standalone or Sentinel connection, which then reaches what the endpoint
 * or Sentinel names now.
 *
 * Nodes: the standalone server, the Sentinel master (named by its master name), or each Cluster
 * master (from the slot map; the seed addresses until it is known). Every call counts for the
 * node that owns its key's slot (a keyless call, like PUBLISH on a Cluster, for none); a node is
 * down while the client cannot reach it or while its calls fail (see {@link NodeHealth}: 5 in
 * a row over 250 ms, or at least 5 and at least half of its calls in the last 5 s), so a dead
 * Cluster master is seen although ioredis keeps the Cluster 'ready' and the other masters'
 * calls succeed (and no other node's success hides it). A call fails its node only when it got
 * no reply or a reply that says the node cannot serve (see {@link failsNode}); an error reply
 * about the call only (an ACL refusal, a key of the wrong type) is an answer. A suspect
 * node is probed (PING, or EXISTS on a key of its slots) every {@link PROBE_INTERVAL_MS} ms, so
 * it recovers without traffic.
 *
 * Status: 'ready' when every node is up, else 'degraded' (the detail names the first node
 * down). start() connects to every Cluster master (a PING each) before it resolves, so the
 * first calls do not pay for connection set-up within their `timeout`.
 *
 * Example:
 * ```ts
 * const redis = new RedisConnection({ nodes: [{ host: 'redis-0', port: 6379 }], keyPrefix: 'tether:' })
 * redis.onStatus((s, detail) => log.warn({ detail }, `redis ${s}`))
 * redis.onNode((e) => metrics.redisNodeUp(e.node.address, e.node.status === 'up'))
 * await redis.start()   // resolves even while Redis is down
 * await redis.run('tether:x', (c) => c.get('tether:x'))  // the reply, or FAILED
 * redis.nodes()   // [{ address: '10.0.0.5:6379', role: 'shard', slots: '0-5460', status: 'up', ... }, ...]
 * ```
 */
export class RedisConnection {
  readonly #options: RedisConnectionOptions
  /** Prefix of every key and channel. */
  readonly keyPrefix: string
  /** The database of a standalone url (`redis://host/2` -> 2); 0 with Sentinel or Cluster. */
  readonly database: number
  readonly #timeout: number
  readonly #connectTimeout: number
  readonly #maxReconnectDelay: number
  readonly #stallTimeout: number
  readonly #maxWaiting: number
  /** Commands sent and not answered yet (their callers may have stopped waiting), by node address ('' for keyless Cluster calls). */
  readonly #waiting = new Map<string, number>()
  /**
   * While stop() waits for QUIT (null otherwise): commands that failed with no reply from Redis
   * (their connection closed: the stall timeout of a frozen Redis, or a frozen Cluster shard's)
   * and so stay unanswered, though they no longer wait.
   */
  #failedUnanswered: number | null = null
  readonly #now: () => number
  readonly #timers: Timers
  readonly #listeners = new Set<(status: RedisStatus, detail: string) => void>()
  readonly #replyErrorListeners = new Set<(e: RedisReplyError) => void>()
  /** The ACL refusals told and open, and what ends each (see {@link refusals}). */
  readonly #acl: AclRefusals
  /** How Redis's and the Sentinels' errors are told (the settings to fix, the server's version). */
  readonly #hints: ErrorHints
  #client: Client | null = null
  readonly #subscribers = new Set<Client>()
  /** Told when the main connection is ready again (a subscription's onSubscribed waits for it: its reads go there). */
  readonly #onClientReady = new Set<() => void>()
  #status: RedisStatus = 'degraded'
  #lastError = ''
  /** Whether the client is connected ('ready' seen since the last close). */
  #clientUp = false
  /** Cluster: whether this client was ever ready (before, each close is a failed ready check or connect). */
  #clusterWasReady = false
  /** Cluster: the question to the seeds on why the ready check failed ({@link #tellWhyUnready}) under way, or null. */
  #askingWhy: Promise<void> | null = null
  /** The short-lived connections of {@link #whyUnready} (closed by stop() too). */
  readonly #checks = new Set<Redis>()
  /** The nodes by address: one for standalone and Sentinel; the masters (or seeds) of a Cluster. */
  readonly #nodes = new NodeSet(() => this.#recompute())
  /** Cluster: per master, a hash tag whose slot it serves (for probes). */
  readonly #probeTags = new Map<string, string>()
  /**
   * Cluster: masters whose calls got an error reply about the call only since the last probe
   * round (not counted against them, see {@link failsNode}): each is probed once in the next
   * round all the same, with an EXISTS on a key of its slots. A master that no longer serves
   * a slot still refuses, by its ACL, a call for it (Redis checks the ACL before it redirects),
   * so those refusals alone would never show the slot moved; the probe's MOVED does, and
   * ioredis refreshes its slot map.
   */
  readonly #recheck = new Set<NodeHealth>()
  #probeTimer: unknown = null
  /** Lua scripts the roles use, defined on the client as commands (EVALSHA, EVAL on NOSCRIPT). */
  readonly #scripts = new Map<string, { lua: string; keys: number }>()

  /** Validates the options; throws a RangeError naming the problem. */
  constructor(options: RedisConnectionOptions) {
    const targets = [options.url !== undefined, options.sentinels !== undefined, options.nodes !== undefined]
    if (targets.filter(Boolean).length !== 1) {
      throw new RangeError('RedisCheckpointStore: set exactly one of url, sentinels (with name) or nodes')
    }
    const url = options.url === undefined ? null : parseRedisUrl(options.url)
    if (options.sentinels !== undefined && (options.sentinels.length === 0 || !options.name)) {
      throw new RangeError('RedisCheckpointStore: sentinels needs at least one address and a master name')
    }
    if (options.nodes !== undefined && options.nodes.length === 0) {
      throw new RangeError('RedisCheckpointStore: nodes needs at least one address')
    }
    const d = REDIS_DEFAULTS
    this.keyPrefix = options.keyPrefix ?? d.keyPrefix
    this.database = url?.db ?? 0
    if (/[{}]/.test(this.keyPrefix)) {
      throw new RangeError(`RedisCheckpointStore: keyPrefix must not contain { or } (it would break the Cluster hash tag), got ${JSON.stringify(this.keyPrefix)}`)
    }
    this.#timeout = positive('timeout', options.timeout ?? d.timeout)
    this.#connectTimeout = positive('connectTimeout', options.connectTimeout ?? d.connectTimeout)
    this.#maxReconnectDelay = positive('maxReconnectDelay', options.maxReconnectDelay ?? d.maxReconnectDelay)
    this.#stallTimeout = positive('stallTimeout', options.stallTimeout ?? this.#connectTimeout)
    this.#maxWaiting = positive('maxWaiting', options.maxWaiting ?? d.maxWaiting)
    this.#now = options.now ?? (() => performance.now())
    this.#timers = options.timers ?? systemTimers
    this.#acl = new AclRefusals(this.#now, (error) => this.#hints.data(error), (node) => this.#nodes.has(node))
    this.#switchWatch = options.sentinels === undefined || options.name === undefined ? null : new SentinelWatch({
      sentinels: options.sentinels,
      name: options.name,
      maxReconnectDelay: this.#maxReconnectDelay,
      now: this.#now,
      timers: this.#timers,
      connect: (s, retry) => this.#sentinelConnection(s, retry),
      errorOf: (error) => this.#hints.sentinel(error),
      tell: (event) => this.#emitSentinel(event),
      onSwitch: () => this.#followSwitch(),
    })
    this.#options = options
    this.#hints = new ErrorHints(options, url, this.keyPrefix)
    if (url !== null) this.#addNode(hostPort(url.host, url.port), 'standalone')
    else if (options.sentinels !== undefined) this.#addNode(options.name as string, 'sentinel')
    else for (const n of options.nodes ?? []) this.#addNode(hostPort(n.host, n.port), 'seed')
  }

  get status(): RedisStatus {
    return this.#status
  }

  /** Commands sent and not answered yet, including those whose callers stopped waiting (at most `maxWaiting` a node). */
  get waiting(): number {
    let n = 0
    for (const w of this.#waiting.values()) n += w
    return n
  }

  onStatus(fn: (status: RedisStatus, detail: string) => void): () => void {
    this.#listeners.add(fn)
    return () => {
      this.#listeners.delete(fn)
    }
  }

  /** Be told of every node's health changes (see {@link RedisNodeEvent}); returns the unsubscribe function. */
  onNode(fn: (event: RedisNodeEvent) => void): () => void {
    return this.#nodes.onNode(fn)
  }

  /**
   * Be told of each call Redis refused with `NOPERM` (see {@link RedisRefusal}: every one, the
   * listener rate-limits), and of the first reply to such a command after its refusal (`error`
   * null); returns the unsubscribe function.
   */
  onRefused(fn: (refusal: RedisRefusal) => void): () => void {
    return this.#acl.onRefused(fn)
  }

  /**
   * The ACL refusals told and not ended since, one line each, for people (in /readyz): see
   * {@link AclRefusals.refusals}.
   */
  refusals(): string[] {
    return this.#acl.refusals()
  }

  /**
   * Be told of each call that failed on an error reply about that call only, other than an ACL
   * refusal (see {@link RedisReplyError}: every one, the listener rate-limits); returns the
   * unsubscribe function.
   */
  onReplyError(fn: (e: RedisReplyError) => void): () => void {
    this.#replyErrorListeners.add(fn)
    return () => {
      this.#replyErrorListeners.delete(fn)
    }
  }

  /**
   * Whether the node a call for `key` goes to is up now: connected, and (Cluster) the master of
   * its slot known and up, so a Cluster with one shard down still answers for the others' keys.
   * Example: a Cluster whose master of slot 12182 died -> `upFor('tether:cp:{a}')` -> false,
   * while `status` is 'degraded' and the other shards' keys are still `true`.
   */
  upFor(key: string): boolean {
    const client = this.#client
    if (client === null || !this.#clientUp) return false
    const node = client instanceof Cluster
      ? (() => { const address = client.slots[keySlot(key)]?.[0]; return address === undefined ? undefined : this.#nodes.get(address) })()
      : this.#single()
    return node?.status === 'up'
  }

  /**
   * The health of every node now, in address order. Example: after a Cluster master died,
   * `redis.nodes().filter((n) => n.status === 'down').map((n) => n.summary)` ->
   * `['redis shard 127.0.0.1:7001 (slots 0-5460) failing: 12 of 20 calls in the last 5 s failed (last error: ...)']`.
   */
  nodes(): RedisNodeHealth[] {
    return this.#nodes.snapshots(this.#now())
  }

  /**
   * Creates the client and connects. Resolves once Redis is ready (for a Cluster: once every
   * master answered a PING, or `connectTimeout` passed) or the first attempt failed (at most
   * about `connectTimeout`; with Sentinel, once every Sentinel was asked, each question within
   * {@link SENTINEL_SILENT_MS}; for a Cluster, also when its ready check fails: cluster_state
   * fail, a BUSY node asked, once the seeds said why, at most `connectTimeout` more:
   * {@link #tellWhyUnready}), or stop() is called; after a failure the client keeps
   * reconnecting in the background with back-off. Calling it again while started does nothing.
   */
  async start(): Promise<void> {
    if (this.#client) return
    const client = this.#createClient()
    this.#client = client
    this.#clusterWasReady = false
    this.#switchWatch?.start()
    for (const [name, { lua, keys }] of this.#scripts) client.defineCommand(name, { numberOfKeys: keys, lua })
    const cluster = client instanceof Cluster
    client.on('ready', () => {
      this.#hints.roundStarted()
      // after a Sentinel switch, landed on the old master (see #offSwitch): ask again
      if (this.#offSwitch(client)) {
        this.#redoing.add(client)
        return void (client as Redis).disconnect(true)
      }
      this.#redoing.delete(client)
      if (this.#client === client) this.#clientReady(client)
    })
    const sentinel = this.#options.sentinels !== undefined
    client.on('error', (err: unknown) => {
      const error = describe(err)
      // (the master's own refusal is not the Sentinels')
      this.#lastError = sentinel && error.startsWith(SENTINEL_ROUND_FAILED) ? this.#hints.sentinelRound(error) : this.#hints.data(error)
      if (!cluster && this.#client === client) this.#nodeError(this.#single(), this.#lastError)
      // every Sentinel was asked and none named the master: start() stops waiting
      if (sentinel && this.#lastError.startsWith(SENTINEL_ROUND_FAILED)) this.#gaveUp()
    })
    // each Sentinel that failed in a round: "failed to connect to sentinel <host:port> because <error>"
    if (sentinel) {
      client.on('sentinelError', (err: unknown) => {
        const failed = /^failed to connect to sentinel (\S+) because (.*)$/s.exec(describe(err))
        if (failed !== null && (REFUSED.test(failed[2]!) || NOPERM.test(failed[2]!))) this.#hints.sentinelRefused(failed[1]!, failed[2]!)
      })
    }
    // A Cluster reports trouble with one node as 'node error' (with the node's address); the
    // client stays usable for the other slots.
    client.on('node error', (err: unknown, address: unknown) => {
      this.#lastError = this.#hints.data(describe(err))
      if (this.#client === client && typeof address === 'string') this.#nodeError(this.#nodes.get(address), this.#lastError)
    })
    if (client instanceof Cluster) {
      client.on('refresh', () => {
        if (this.#client === client) this.#refreshTopology(client)
      })
    }
    for (const event of ['close', 'reconnecting', 'end'] as const) {
      client.on(event, () => {
        if (this.#client !== client) return
        // the server behind the address may be another one when it comes back (an older
        // version): its version is unknown until the next ready check reads it
        this.#hints.forgetVersion()
        // (a Cluster never ready yet whose slot map was read: its masters are told down once the
        // seeds said why its ready check failed, at most connectTimeout later: #tellWhyUnready)
        if (client instanceof Cluster && event !== 'end' && this.#tellWhyUnready(client)) return
        this.#clientDown(event === 'end' ? 'connection ended' : 'connection closed')
      })
    }
    // ioredis's connect() with Sentinel waits, asking them round after round, until one names
    // the master: start() waits for it, the first failed round, or stop(), whichever is first
    // A Cluster whose first attempt fails after the slot map was read (its ready check, CLUSTER
    // INFO, says cluster_state:fail or gets an error such as BUSY) reconnects, and ioredis leaves
    // that attempt's connect() promise unsettled for good: the wait ends at its 'close' instead
    // (before, start() never resolved, and Tether never listened, not even once the Cluster was
    // whole and the connection ready)
    let attemptFailed = (): void => undefined
    const failedAttempt = new Promise<void>((resolve) => { attemptFailed = resolve })
    if (cluster) client.once('close', attemptFailed)
    const connecting = client.connect()
    // later, the connection goes on in the background (a rejection after stop() is nobody's)
    connecting.catch(() => undefined)
    const gaveUp = new Promise<void>((resolve) => { this.#gaveUp = resolve })
    try {
      const first = await Promise.race([connecting.then(() => 'connected' as const), gaveUp.then(() => 'gave up' as const), failedAttempt.then(() => 'failed' as const)])
      client.off('close', attemptFailed)
      // (a Cluster's failed first attempt: start() also waits for the seeds' answer on why, at
      // most connectTimeout more, so that the status it leaves says it; stop() ends that wait)
      if (first === 'failed' && this.#askingWhy !== null) await Promise.race([this.#askingWhy, gaveUp])
      this.#gaveUp = () => undefined
      // (the failed round was reported by the 'error' listener; stop() reports itself)
      if (first !== 'connected') return
      // ioredis emits 'ready' on a later tick than connect() resolves: take it now.
      if (this.#client === client && client.status === 'ready' && !this.#redoing.has(client)) this.#clientReady(client)
      if (client instanceof Cluster) await this.#warm(client)
    } catch (err) {
      client.off('close', attemptFailed)
      this.#gaveUp = () => undefined
      this.#lastError ||= describe(err)
      if (this.#client === client) this.#clientDown(this.#lastError)
    }
  }

  /** Ends start()'s wait for the first connection (a failed Sentinel round, stop()). */
  #gaveUp: () => void = () => undefined

  /**
   * Closes the connections (QUIT when connected, waiting at most `timeout` and at most
   * {@link STOP_WAIT_MS}), stops reconnecting and probing, and reports 'degraded' with detail
   * "stopped" (no node events). Later calls answer FAILED. Resolves to the number of commands
   * sent and still unanswered when the wait for QUIT ended (0 when QUIT was answered: Redis
   * answers in order, so every command sent before it was answered too), counting those a
   * closed connection failed during the wait (the stall timeout, a frozen Cluster shard); their
   * writes may be lost, and the caller reports them.
   */
  async stop(): Promise<number> {
    if (this.#probeTimer !== null) this.#timers.clearTimeout(this.#probeTimer)
    this.#probeTimer = null
    for (const sub of this.#subscribers) {
      sub.removeAllListeners()
      sub.on('error', () => undefined)
      sub.on('node error', () => undefined)
      sub.disconnect()
    }
    this.#subscribers.clear()
    for (const timer of this.#subscribeRetries) this.#timers.clearTimeout(timer)
    this.#subscribeRetries.clear()
    if (this.#subscriberPing !== null) this.#timers.clearTimeout(this.#subscriberPing)
    this.#subscriberPing = null
    this.#switchWatch?.stop()
    for (const c of this.#checks) c.disconnect()
    this.#checks.clear()
    this.#gaveUp()
    this.#onClientReady.clear()
    const client = this.#client
    if (!client) return 0
    this.#client = null
    this.#clientUp = false
    for (const node of this.#nodes.values()) {
      node.reachable = false
      node.reported = 'down'
    }
    // (a command its closed connection failed during the wait was not answered either: counted)
    this.#failedUnanswered = 0
    // (a Cluster's QUIT also resolves when a node's connection closed unanswered)
    const ready = client.status === 'ready'
    const answered = ready && await this.#quitWithin(client, Math.min(this.#timeout, STOP_WAIT_MS))
    const unanswered = ready ? (answered ? 0 : this.waiting) + this.#failedUnanswered : 0
    this.#failedUnanswered = null
    client.disconnect()
    client.removeAllListeners()
    // Swallow errors the closing sockets may still emit (an 'error' with no listener throws).
    client.on('error', () => {})
    client.on('node error', () => {})
    this.#setStatus('degraded', 'stopped')
    return unanswered
  }

  /** QUIT, answered within `ms` (true), or not: failed, or a frozen Redis (false). Not counted as waiting. */
  #quitWithin(client: Client, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      // a late timer after a stall of this process defers to pending I/O, as in #race
      const timer = this.#timers.setTimeout(() => setImmediate(() => resolve(false)), ms)
      const done = (answered: boolean): void => { this.#timers.clearTimeout(timer); resolve(answered) }
      client.quit().then(() => done(true), () => done(false))
    })
  }

  /**
   * Run one command, bounded by `timeout`: its reply, or FAILED. Never rejects. `key` is the
   * key the command works on (it tells which Cluster node answers for it), or null for a
   * keyless command such as PUBLISH. Send every command of `work` before its first await: one
   * sent after it is not seen answered, so its NOPERM refusal is never told ended ({@link onRefused}).
   */
  run<T>(key: string | null, work: (c: RedisCommands) => Promise<T>): Promise<T | Failed> {
    return this.#race(this.#client, key, work as (c: Client) => Promise<T>)
  }

  /** {@link run} bounded by `ms` instead of `timeout` (a read at the start, which waits as long as the connection's start may). */
  runWithin<T>(ms: number, key: string | null, work: (c: RedisCommands) => Promise<T>): Promise<T | Failed> {
    return this.#race(this.#client, key, work as (c: Client) => Promise<T>, ms)
  }

  /** The longest wait for a connection, a ready check or a subscription (`connectTimeout`, ms). */
  get connectTimeout(): number {
    return this.#connectTimeout
  }

  /**
   * One key named `<keyPrefix><name>` per node, by node address: the standalone or Sentinel
   * master's, or with a Cluster one per master, `<keyPrefix><name>:{<tag>}` with a hash tag in
   * that master's slots (the same tag for every Tether replica). Empty before a Cluster's slot
   * map is known. Example: standalone -> `Map { '127.0.0.1:6379' => 'tether:keyspace' }`;
   * Cluster -> `Map { '127.0.0.1:7000' => 'tether:keyspace:{probe-3}', ... }`.
   */
  keysPerNode(name: string): Map<string, string> {
    const client = this.#client
    const keys = new Map<string, string>()
    if (!(client instanceof Cluster)) {
      const node = this.#single()
      if (node !== undefined) keys.set(node.address, `${this.keyPrefix}${name}`)
      return keys
    }
    for (const node of this.#nodes.values()) {
      if (node.role !== 'shard') continue
      const tag = this.#tagOf(client, node.address)
      if (tag !== null) keys.set(node.address, `${this.keyPrefix}${name}:{${tag}}`)
    }
    return keys
  }

  /**
   * The address of the node that answers for `key` (as {@link keysPerNode} names nodes): the
   * one node of a standalone or Sentinel connection; a Cluster's master of its slot, null while
   * unknown.
   */
  nodeOf(key: string): string | null {
    const client = this.#client
    if (client instanceof Cluster) return client.slots[keySlot(key)]?.[0] ?? null
    return this.#single()?.address ?? null
  }

  /**
   * `INFO <section>` of each node (the standalone server, the Sentinel master, each Cluster
   * master), by address (as {@link nodes} names them), for checks outside the request path:
   * each within `connectTimeout`, counted in no node's health and told to no {@link onRefused}
   * listener; a node that did not answer within it is there as null (busy, or frozen: its
   * connection may still serve), one that refused (an ACL user without INFO) or failed is left
   * out. `only`: ask just the node of that address (as a {@link RedisNodeEvent} names it).
   * Example: `await redis.info('memory')` -> `Map { '127.0.0.1:6379' => '# Memory\r\nused_memory:1052384\r\n...' }`.
   */
  async info(section: string, only?: string): Promise<Map<string, string | null>> {
    const client = this.#client
    const found = new Map<string, string | null>()
    if (client === null || client.status !== 'ready') return found
    // (a Cluster master named as the slot map, so {@link nodes} and node events, name it: an
    // IPv6 host without brackets there)
    const all: [string, Redis][] = client instanceof Cluster
      ? client.nodes('master').map((n) => [`${n.options.host ?? ''}:${n.options.port ?? 0}`, n])
      : [[this.#single()?.address ?? '', client]]
    const asked = only === undefined ? all : all.filter(([address]) => address === only)
    await Promise.all(asked.map(async ([address, c]) => {
      // (undefined: refused or failed; null: no reply in time)
      const reply = await withDeadline(c.info(section).catch(() => undefined), this.#connectTimeout, null, this.#timers)
      if (reply !== undefined) found.set(address, reply)
    }))
    return found
  }

  /**
   * Cluster: which of the 16,384 slots `address` serves now (1), slots of no known master
   * counted as its too; null without Cluster (every key is the one node's). A snapshot: the
   * slots that node's keys were in, wherever a failover or a resharding takes them later.
   */
  slotsServedBy(address: string): Uint8Array | null {
    const client = this.#client
    if (!(client instanceof Cluster)) return null
    const mine = new Uint8Array(CLUSTER_SLOTS)
    for (let slot = 0; slot < CLUSTER_SLOTS; slot++) {
      const at = client.slots[slot]?.[0]
      if (at === undefined || at === address) mine[slot] = 1
    }
    return mine
  }

  /**
   * Register a Lua script as command `name` with `keys` key arguments (call before start()).
   * ioredis runs it by EVALSHA and falls back to EVAL on NOSCRIPT (e.g. after a Redis restart).
   */
  defineScript(name: string, lua: string, keys: number): void {
    this.#scripts.set(name, { lua, keys })
  }

  /**
   * Run script `name` with its keys and then its arguments, bounded by `timeout`: its reply,
   * or FAILED. The first key tells which Cluster node answers for it.
   */
  runScript(name: string, ...args: string[]): Promise<unknown> {
    return this.runScriptWithin(this.#timeout, name, ...args)
  }

  /** {@link runScript} bounded by `ms` instead of `timeout` (a write the caller waits longer for). */
  runScriptWithin(ms: number, name: string, ...args: string[]): Promise<unknown> {
    return this.#script(ms, name, args)
  }

  /**
   * {@link runScript} whose outcome is what `then` makes of the call's own (its reply, or its
   * rejection: e.g. an ACL refusal) with `again`, the script run again with other arguments on
   * the same connection, within the same `timeout`: `then`'s rejection fails the call (counted
   * for the node of `args[0]` and told to {@link onRefused} listeners as any other). Example:
   * `runScriptThen('tetherSetBinding', args, (first, again) => first.catch(() => again(...fewerKeys)))`.
   */
  runScriptThen(name: string, args: readonly string[], then: (first: Promise<unknown>, again: (...args: string[]) => Promise<unknown>) => Promise<unknown>): Promise<unknown> {
    return this.#script(this.#timeout, name, args, then)
  }

  #script(ms: number, name: string, args: readonly string[], then?: (first: Promise<unknown>, again: (...args: string[]) => Promise<unknown>) => Promise<unknown>): Promise<unknown> {
    const key = (this.#scripts.get(name)?.keys ?? 0) > 0 ? args[0] ?? null : null
    return this.#race(this.#client, key, (c) => {
      const run = (c as unknown as Record<string, (...a: readonly string[]) => Promise<unknown>>)[name]
      if (run === undefined) return Promise.reject(new Error(`script ${name} is not defined`))
      const first = run.call(c, ...args)
      return then === undefined ? first : then(first, (...again) => run.call(c, ...again))
    }, ms, name)
  }

  /**
   * Redis's key refusal `error` (see {@link isKeyRefusal}) as told to an operator, with the
   * grant of `<keyPrefix><kind>*` it needs (the prefix's glob characters escaped) and the
   * settings to check. Example: `keyRefusal('NOPERM No permissions to access a key', 'ap:')` ->
   * `"NOPERM No permissions to access a key (Redis's ACL user may not access the keys: grant
   * them (ACL SETUSER <user> ~tether:ap:*), or check state.redis.username)"`.
   */
  keyRefusal(error: string, kind: string): string {
    return this.#hints.data(error, kind)
  }

  /**
   * Receive every message published on `channel`, on a dedicated connection that re-subscribes
   * after each reconnect. `onSubscribed` is called once the subscription is (again) in place
   * and the main connection (where reads go) is ready too: whichever of the two comes back
   * last calls it. Call after start(); stop() ends it.
   */
  subscribe(channel: string, onMessage: (message: string) => void, onSubscribed?: () => void): Promise<void> {
    if (this.#client === null) return Promise.resolve()
    // Tether subscribes again itself on each 'ready' (below, with its failure caught), so
    // ioredis's own re-subscription is turned off: it runs unguarded in ioredis's ready handler,
    // and with maxRetriesPerRequest 0 a connection dropped before its SUBSCRIBE is answered
    // (Sentinel's CLIENT KILL of a demoted master's clients) rejects with nobody to catch it.
    // A Cluster's duplicate takes other arguments, and its subscriber connection does not
    // reconnect by itself (it picks a node again, and catches its own re-subscription).
    const seen = { at: '' }
    const sub = this.#client instanceof Cluster
      ? this.#client.duplicate()
      : this.#client.duplicate({ autoResubscribe: false, ...(this.#options.sentinels === undefined ? {} : this.#noteNamed(seen)) })
    if (this.#options.sentinels !== undefined) this.#named.set(sub, seen)
    this.#subscribers.add(sub)
    sub.on('error', () => undefined) // status is reported by the main connection
    sub.on('node error', () => undefined)
    sub.on('message', (ch: string, message: string) => {
      if (ch === channel) onMessage(message)
    })
    // resolves once the first SUBSCRIBE is in place, or after the connect timeout (Redis down:
    // the subscription comes when it is back)
    let subscribed: () => void = () => undefined
    const first = new Promise<void>((resolve) => { subscribed = resolve })
    let listening = false
    const both = (): void => { if (listening && this.#clientUp) onSubscribed?.() }
    // a SUBSCRIBE the ACL user may not send (NOPERM: the channel, or the command) is told like a
    // refused call, and asked again every maxReconnectDelay while the connection stays up (the
    // ACL fixed, the subscription comes without a reconnect); its success ends a SUBSCRIBE refusal.
    // One retry at a time: a close, or a SUBSCRIBE sent on a new 'ready', cancels the pending one
    // (else each reconnect within the delay would start one more retry loop)
    let retry: unknown = null
    const cancelRetry = (): void => {
      if (retry === null) return
      this.#timers.clearTimeout(retry)
      this.#subscribeRetries.delete(retry)
      retry = null
    }
    sub.on('close', () => {
      listening = false
      cancelRetry()
    })
    const listen = (): void => {
      cancelRetry()
      void sub.subscribe(channel).then(() => {
        listening = true
        this.#acl.subscribeAccepted()
        subscribed()
        both()
      }, (err: unknown) => {
        if (!NOPERM.test(describe(err)) || !this.#subscribers.has(sub)) return
        this.#acl.subscribeRefused(err)
        cancelRetry()
        const timer = retry = this.#timers.setTimeout(() => {
          this.#subscribeRetries.delete(timer)
          retry = null
          if (this.#subscribers.has(sub) && sub.status === 'ready' && !listening) listen()
        }, this.#maxReconnectDelay)
        this.#subscribeRetries.add(timer)
      })
    }
    sub.on('ready', () => this.#offSwitch(sub) ? (sub as Redis).disconnect(true) : listen())
    // a Cluster's subscriber connection given up as silent (see #pingSubscribers): its 'close'
    // is not the Cluster's, so the subscription is asked again here, once ioredis made the next
    // one (it does so on the old one's 'end', before this listener runs), and onSubscribed re-reads
    if (sub instanceof Cluster) this.#clusterSilent.set(sub, () => { listening = false; listen() })
    if (onSubscribed !== undefined) this.#onClientReady.add(both)
    void sub.connect().catch(() => undefined)
    this.#pingSubscribers()
    return withDeadline(first, this.#connectTimeout, undefined, this.#timers)
  }

  /** The timer of the subscribers' next PING (see {@link SUBSCRIBER_PING_MS}); null when none is due. */
  #subscriberPing: unknown = null

  /** Cluster subscriptions: what to do once their subscriber connection was given up as silent (see {@link subscribe}). */
  readonly #clusterSilent = new WeakMap<Cluster, () => void>()

  /**
   * Every {@link SUBSCRIBER_PING_MS}, a PING on each ready subscriber connection: a standalone
   * or Sentinel one is then watched by the stall timeout. A Cluster's is the connection
   * ioredis's ClusterSubscriber made (`getInstance()`; a PING through the Cluster would go to a
   * data node instead), which has no stall timeout: a PING of it unanswered within
   * `stallTimeout` disconnects it (ioredis picks a node again on its 'end' and subscribes its
   * channels there), and the subscription is asked again there (see {@link subscribe}).
   */
  #pingSubscribers(): void {
    if (this.#subscriberPing !== null) return
    this.#subscriberPing = this.#timers.setTimeout(() => {
      this.#subscriberPing = null
      if (this.#subscribers.size === 0) return
      for (const sub of this.#subscribers) {
        if (!(sub instanceof Cluster)) {
          if (sub.status === 'ready') void sub.ping().catch(() => undefined)
          continue
        }
        const inner = clusterSubscriber(sub)
        if (inner === null || inner.status !== 'ready') continue
        void settle(inner.ping(), this.#stallTimeout, this.#timers).then((error) => {
          // (a reply that is an error, or a connection that closed meanwhile, is no silence)
          if (error === null || !error.startsWith('no reply within') || !this.#subscribers.has(sub) || clusterSubscriber(sub) !== inner) return
          inner.once('end', () => { if (this.#subscribers.has(sub)) this.#clusterSilent.get(sub)?.() })
          inner.disconnect()
        })
      }
      this.#pingSubscribers()
    }, SUBSCRIBER_PING_MS)
  }

  /** The timers of refused SUBSCRIBEs asked again (see {@link subscribe}); cleared by stop(). */
  readonly #subscribeRetries = new Set<unknown>()

  #addNode(address: string, role: RedisNodeRole): NodeHealth {
    return this.#nodes.add(address, role, this.#clientUp)
  }

  /** The one node of a standalone or Sentinel connection. */
  #single(): NodeHealth | undefined {
    return this.#nodes.single()
  }

  #clientReady(client: Client): void {
    this.#clientUp = true
    if (client instanceof Cluster) this.#clusterWasReady = true
    this.#lastError = ''
    for (const fn of this.#onClientReady) fn()
    if (client instanceof Cluster) {
      // Reachable again; each master's calls in its window (which stay) still judge it.
      for (const node of this.#nodes.values()) node.reachable = true
      this.#refreshTopology(client)
      // A master still failing from before (its window keeps the outage's failures) is probed
      // until judged again: without calls to it (no traffic to its slots) nothing else would.
      this.#probeSoon()
    } else {
      this.#single()?.connected()
      // a node that refused writes before the reconnect is asked again whether it takes them (a
      // restart may have emptied it, another server may be behind the address)
      if (this.#single()?.writesRefused != null) this.#probeSoon()
    }
    this.#sync()
  }

  #clientDown(detail: string): void {
    this.#clientUp = false
    const now = this.#now()
    for (const node of this.#nodes.values()) {
      if (node.lastError(now) === null) node.noteError(detail, now)
      const wasReachable = node.reachable
      node.reachable = false
      // Each failed reconnect attempt is news for a node that is already down.
      if (!wasReachable) this.#nodes.report(node, now, true)
    }
    this.#sync()
  }

  /**
   * Cluster closed before it was ever ready, after its slot map was read: ioredis tells why only
   * in its debug output (its ready check, CLUSTER INFO to one node, said cluster_state:fail or
   * got an error reply such as BUSY), and every master was shown "unreachable: connection
   * closed". So the seeds are asked CLUSTER INFO ({@link #whyUnready}: one question at a time,
   * on short-lived connections, within `connectTimeout`), and the masters are told down once
   * they answered, a reason found as each master's error (its summary: /readyz, the status
   * detail, the down line), e.g. `connection closed: the Cluster's ready check fails:
   * 127.0.0.1:7000 says cluster_state:fail (1 slot served by no master)`. None is found when no
   * seed answers (each node's own connect error says why) or each says cluster_state:ok. True
   * when the question is under way (the close is told by its end), false when none is asked.
   */
  #tellWhyUnready(client: Cluster): boolean {
    if (this.#askingWhy !== null) return true
    if (this.#clusterWasReady || this.#options.nodes === undefined || !client.slots.some((owners) => owners !== undefined && owners.length > 0)) return false
    this.#askingWhy = this.#whyUnready(this.#options.nodes).catch(() => null).then((why) => {
      this.#askingWhy = null
      if (this.#client !== client || this.#clientUp) return
      if (why !== null) {
        this.#lastError = `connection closed: the Cluster's ready check fails: ${why}`
        for (const node of this.#nodes.values()) node.noteError(this.#lastError, this.#now())
      }
      this.#clientDown('connection closed')
    })
    return true
  }

  /**
   * Asks every seed CLUSTER INFO at once, each on its own plain connection (no retry, no ready
   * check, closed after), all within `connectTimeout`; the first seed (in order) whose answer
   * tells why a Cluster's ready check fails: `<seed> says cluster_state:fail (<n> slots served
   * by no master)` (or `... (<n> slots of failed masters)`), or `<seed> answers CLUSTER INFO with
   * <error reply>` (BUSY, LOADING, ...). Null when none does (no answer, or cluster_state:ok).
   */
  async #whyUnready(seeds: readonly RedisAddress[]): Promise<string | null> {
    const password = this.#options.password ?? undefined
    const username = this.#options.username ?? undefined
    const asked = seeds.map((seed) => {
      const c = new Redis({
        host: seed.host, port: seed.port, lazyConnect: true, protocol: 2, connectionName: 'tether-cluster-check',
        connectTimeout: this.#connectTimeout, commandTimeout: this.#connectTimeout, retryStrategy: () => null,
        maxRetriesPerRequest: 0, enableReadyCheck: false, ...{ disconnectTimeout: 100 },
        ...(username === undefined ? {} : { username }),
        ...(password === undefined ? {} : { password }),
      })
      c.on('error', () => undefined)
      this.#checks.add(c)
      const address = hostPort(seed.host, seed.port)
      const answer = c.connect().then(() => c.cluster('INFO')).then(
        (info) => unreadyReason(String(info)),
        (err: unknown) => err instanceof ReplyError ? `answers CLUSTER INFO with ${this.#hints.data(describe(err))}` : null,
      ).then((reason) => reason === null ? null : `${address} ${reason}`)
      return { c, answer }
    })
    // the first reason any seed gives, without waiting for the others: a seed that takes the
    // connection and never answers held the wait to its deadline and the others' reasons were
    // lost (review R7); null once every seed answered without one, or at the deadline
    const first = new Promise<string | null>((resolve) => {
      let left = asked.length
      if (left === 0) resolve(null)
      for (const { answer } of asked) void answer.then((reason) => { if (reason !== null) resolve(reason); else if (--left === 0) resolve(null) })
    })
    try {
      return await withDeadline(first, this.#connectTimeout, null, this.#timers)
    } finally {
      for (const { c } of asked) {
        this.#checks.delete(c)
        c.disconnect()
      }
    }
  }

  /** A connection-level error of `node`: remembered for its summary, reported while it is down. */
  #nodeError(node: NodeHealth | undefined, error: string): void {
    if (node === undefined) return
    const now = this.#now()
    node.noteError(error, now)
    this.#nodes.report(node, now, true)
  }

  /** Cluster: the masters and their slot ranges from the client's slot map (after each refresh). */
  #refreshTopology(client: Cluster): void {
    const owners = new Array<string | undefined>(CLUSTER_SLOTS)
    for (let slot = 0; slot < CLUSTER_SLOTS; slot++) owners[slot] = client.slots[slot]?.[0]
    const ranges = slotRanges(owners)
    if (ranges.size === 0) return // no slot map yet
    const now = this.#now()
    for (const [address, slots] of ranges) {
      const node = this.#nodes.get(address) ?? this.#addNode(address, 'shard')
      node.role = 'shard'
      node.slots = slots
    }
    for (const [address, node] of this.#nodes) {
      if (ranges.has(address)) continue
      this.#nodes.delete(address)
      this.#probeTags.delete(address)
      this.#nodes.emit({ kind: 'removed', node: node.snapshot(now) })
    }
    // Before 'ready' the new masters are not reachable yet: they are first reported then.
    if (this.#clientUp) this.#sync()
    else this.#recompute()
  }

  /**
   * Cluster: connects to every master and PINGs it (all at once, at most `connectTimeout`), so
   * that the first calls find open connections. An unanswered PING counts as a failed call. A
   * PING refused with MISCONF is followed by a read of the master's keyspace marker, as the
   * standalone probe does ({@link #ping}): a master both BUSY and MISCONF fails it (before, it was
   * shown up, refusing writes, and never probed, while every read of its slots got BUSY).
   */
  async #warm(client: Cluster): Promise<void> {
    await Promise.all(client.nodes('master').map(async (node) => {
      const address = hostPort(node.options.host ?? '', node.options.port ?? 0)
      let ofNode = true
      const tag = this.#tagOf(client, address)
      const ping = this.#ping(node, tag === null ? null : `${this.keyPrefix}keyspace:{${tag}}`)
      const error = await settle(ping.catch((err: unknown) => { ofNode = failsNode(err); throw err }), this.#connectTimeout, this.#timers)
      if (this.#client !== client) return
      const health = this.#nodes.get(address)
      if (health === undefined) return
      const now = this.#now()
      // (a refusal with its hint, the user's name left out: not told to onRefused, as no call
      // through run() sends PING on a Cluster to end it; like any error reply about the call
      // only, an answer of the node; MISCONF refuses PING too: a node that refuses writes)
      const refused = error === null ? null : writesRefusedBy(error)
      if (error !== null && refused !== null) health.refusedWrites(refused, this.#hints.data(error), now)
      else if (error !== null && !ofNode) health.answeredWithError(this.#hints.data(error), now)
      else health.record(error === null, now, error === null ? undefined : this.#hints.data(error))
      this.#nodes.report(health, now, error !== null && ofNode)
      // (a failed master is probed until judged, as after any failed call)
      if (error !== null && ofNode) this.#probeSoon()
    }))
  }

  /**
   * Counts the outcome of one call for the node that owns `key` (see the class comment). A
   * failed call's `reply`: a {@link WritesRefusedReason}, it failed for a refusal of writes (OOM,
   * MISCONF, NOREPLICAS), an answer of a live node: counted as an answer and the node marked as
   * refusing writes for that reason, probed until it takes them again;
   * `'call'`, an error reply that concerns that call only ({@link failsNode} false: an ACL
   * refusal, a key of the wrong type): counted as an answer, and told to the
   * {@link onReplyError} listeners unless it is a refusal (told to {@link onRefused}'s);
   * `'node'` (default): a failure of the node.
   */
  #observe(client: Client, key: string | null, ok: boolean, error: string | undefined, reply: 'node' | 'call' | WritesRefusedReason = 'node', command?: string, script?: string): void {
    if (client !== this.#client) return
    let node: NodeHealth | undefined
    if (client instanceof Cluster) {
      if (key === null) return
      const address = client.slots[keySlot(key)]?.[0]
      if (address === undefined) return
      // A master the slot map did not have yet (a MOVED after a failover) joins at once.
      node = this.#nodes.get(address) ?? this.#addNode(address, 'shard')
    } else {
      node = this.#single()
    }
    if (node === undefined) return
    const now = this.#now()
    if (!ok && reply !== 'node' && reply !== 'call') node.refusedWrites(reply, error ?? reply.toUpperCase(), now)
    else if (!ok && reply === 'call') node.answeredWithError(error ?? 'an error reply', now)
    else node.record(ok, now, error)
    this.#nodes.report(node, now, !ok && reply === 'node')
    if (!ok && reply !== 'call') this.#probeSoon()
    // (a probe's own error reply asks for no other probe: a user that may not send it is not probed on and on)
    if (!ok && reply === 'call' && client instanceof Cluster && !(key as string).startsWith(`${this.keyPrefix}probe:`)) {
      this.#recheck.add(node)
      this.#probeSoon()
    }
    if (!ok && reply === 'call' && error !== undefined && !NOPERM.test(error)) {
      tellAll(this.#replyErrorListeners, { node: node.address, command: command ?? null, ...(script === undefined ? {} : { script }), error })
    }
  }

  /** Reports every node whose status changed, then the overall status. */
  #sync(): void {
    const now = this.#now()
    this.#nodes.reportAll(now)
    this.#recompute()
  }

  /** The overall status: ready when connected and every node is up. */
  #recompute(): void {
    const down = this.#nodes.firstDown()
    if (this.#client !== null && this.#clientUp && this.#nodes.size > 0 && down === undefined) this.#setStatus('ready', 'connected')
    else if (this.#client !== null) this.#setStatus('degraded', down?.snapshot(this.#now()).summary ?? (this.#lastError || 'not connected'))
  }

  /** Arms the probe timer (unless armed): every suspect node gets one probe call per round. */
  #probeSoon(): void {
    if (this.#probeTimer !== null || this.#client === null) return
    this.#probeTimer = this.#timers.setTimeout(() => {
      this.#probeTimer = null
      this.#probe()
    }, PROBE_INTERVAL_MS)
  }

  #probe(): void {
    const client = this.#client
    if (client === null) return
    const now = this.#now()
    let suspects = 0
    const recheck = [...this.#recheck]
    this.#recheck.clear()
    for (const node of this.#nodes.values()) {
      if (node.writesRefused !== null && node.reachable) {
        suspects++
        void this.#probeWrites(client, node)
      }
      if (!node.suspect(now) && !(recheck.includes(node) && node.reachable)) continue
      suspects++
      if (client instanceof Cluster) {
        const key = this.#probeKey(client, node.address)
        if (key !== null) void this.#race(client, key, (c) => c.exists(key))
      } else {
        void this.#race(client, null, (c) => this.#ping(c))
      }
    }
    if (suspects > 0) this.#probeSoon()
  }

  /**
   * The suspect-node probe of a standalone or Sentinel node, and the Cluster's start-up PING of
   * each master ({@link #warm}): PING. Under MISCONF Redis refuses PING (an answer of a live node
   * that refuses writes) before it checks for a script that blocks it (BUSY: server.c,
   * processCommand), so a refused PING is followed by a read (PTTL of `marker`, the node's
   * keyspace marker, a key Tether's ACL user must have; harmless, O(1); null: a Cluster master
   * whose slots are not known, no read): the node's failure that read gets (BUSY, LOADING, no
   * reply in time) is the PING's outcome, else the MISCONF. Before, such a node was shown up
   * while every read and script of Tether's got BUSY.
   */
  async #ping(c: Redis | Cluster, marker: string | null = `${this.keyPrefix}keyspace`): Promise<unknown> {
    try {
      return await c.ping()
    } catch (err) {
      if (writesRefusal(err) !== 'misconf' || marker === null) throw err
      const read = await c.pttl(marker).then(() => null, (e: unknown) => e)
      throw read !== null && failsNode(read) ? read : err
    }
  }

  /**
   * Asks node `node`, which refuses writes, whether it takes them again ({@link ROOM_PROBE_LUA},
   * on that node's own connection, within `timeout`): a script no Redis replica or worker needs
   * a key for, counted for no node's health (a Redis before 7.0 answers it with a compile error,
   * which is not a failure of that node), nor told to the refusal listeners. A refusal for
   * another reason than before (full, then MISCONF) is told as such. With it goes a
   * `PEXPIREAT <marker> 1 GT`: a write (so MISCONF and NOREPLICAS
   * refuse it) that is not denyoom (a full node takes it: Redis checks maxmemory first and
   * answers the script OOM whatever else holds), so a full node's MISCONF is seen without
   * traffic, and its end too (see NodeHealth.renewalsProbed). It never changes anything: GT sets
   * an expiry only later than the key's own (none counts as infinite), and 1 ms after the epoch
   * is before every live key's; answered 0. Its key is the node's keyspace marker, inside the key
   * grant docs/redis.md asks for (before, `<prefix>probe`: outside it, so NOPERM, and a plain
   * PEXPIRE that set a 500 ms TTL on such a key of the application's). A Redis before 7.0 (no GT)
   * answers it with an error: 'unknown', which tells nothing. Checked on redis-server 7.0.15:
   * COMMAND INFO pexpireat: write fast (not denyoom); on a key with and without a TTL: 0, PTTL
   * and rdb_changes_since_last_save unchanged; full: script OOM, PEXPIREAT 0; full and MISCONF:
   * OOM, MISCONF; full and NOREPLICAS: OOM, NOREPLICAS.
   */
  async #probeWrites(client: Client, node: NodeHealth): Promise<void> {
    const target = client instanceof Cluster
      ? client.nodes('master').find((n) => hostPort(n.options.host ?? '', n.options.port ?? 0) === node.address)
      : client
    if (target === undefined) return
    const tag = client instanceof Cluster ? this.#tagOf(client, node.address) : null
    const key = client instanceof Cluster ? (tag === null ? null : `${this.keyPrefix}keyspace:{${tag}}`) : `${this.keyPrefix}keyspace`
    const [error, renewal] = await Promise.all([
      settle(target.eval(ROOM_PROBE_LUA, 0), this.#timeout, this.#timers),
      key === null ? Promise.resolve(undefined) : settle(target.pexpireat(key, 1, 'GT'), this.#timeout, this.#timers),
    ])
    if (this.#client !== client || this.#nodes.get(node.address) !== node) return
    const now = this.#now()
    node.writesProbed(error === null ? 'taken' : writesRefusedBy(error) ?? 'unknown', now, error === null ? null : this.#hints.data(error))
    if (renewal !== undefined) node.renewalsProbed(renewal === null ? 'taken' : writesRefusedBy(renewal) ?? 'unknown', now, renewal === null ? null : this.#hints.data(renewal))
    this.#nodes.report(node, now, false)
  }

  /** Cluster: a key (never written) whose slot `address` serves now, or null if none was found. */
  #probeKey(client: Cluster, address: string): string | null {
    const tag = this.#tagOf(client, address)
    return tag === null ? null : `${this.keyPrefix}probe:{${tag}}`
  }

  /**
   * Cluster: a hash tag whose slot `address` serves now (the first `probe-<i>` found, so the
   * same for every Tether replica and again after a failover hands the slots to another
   * address), or null if none was found.
   */
  #tagOf(client: Cluster, address: string): string | null {
    let tag = this.#probeTags.get(address)
    if (tag === undefined || client.slots[keySlot(tag)]?.[0] !== address) {
      tag = undefined
      for (let i = 0; i < 100_000 && tag === undefined; i++) {
        if (client.slots[keySlot(`probe-${i}`)]?.[0] === address) tag = `probe-${i}`
      }
      if (tag === undefined) return null
      this.#probeTags.set(address, tag)
    }
    return tag
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
   * is dropped. The outcome counts for the node of `key`.
   */
  #race<T>(client: Client | null, key: string | null, work: (c: Client) => Promise<T>, ms: number = this.#timeout, script?: string): Promise<T | Failed> {
    if (!client) return Promise.resolve(FAILED)
    const node = this.#waitKey(client, key)
    const waiting = this.#waiting.get(node) ?? 0
    if (waiting >= this.#maxWaiting) {
      this.#observe(client, key, false, `${waiting} commands already wait for its replies`)
      return Promise.resolve(FAILED)
    }
    return new Promise((resolve) => {
      let done = false
      const finish = (value: T | Failed, error?: string, reply: 'node' | 'call' | WritesRefusedReason = 'node', command?: string): void => {
        if (done) return
        done = true
        this.#timers.clearTimeout(timer)
        this.#observe(client, key, value !== FAILED, error, reply, command, script)
        // (refusals open: one not seen again for REFUSAL_QUIET_MS ends; one size check otherwise)
        if (this.#acl.anyOpen) this.#acl.endUnseen()
        resolve(value)
      }
      // a late timer after a stall of this process defers to pending I/O: a reply already on
      // the socket wins (setImmediate runs after the poll phase)
      const timer = this.#timers.setTimeout(() => setImmediate(() => finish(FAILED, `no reply within ${ms} ms`)), ms)
      try {
        // (while a command is refused, which command a call sends is noted: one size check otherwise)
        // (the commands a call sent, noted while a key is refused: its refusal is by command)
        const sent = this.#acl.keyRefused ? new Set<string>() : undefined
        const reply = !this.#acl.commandRefused && sent === undefined ? work(client) : this.#acl.noting(client, work, node, sent)
        this.#waiting.set(node, (this.#waiting.get(node) ?? 0) + 1)
        // the reply (or its failure) comes: one fewer waits, whether or not its caller still does
        reply.then((value) => {
          this.#answered(node)
          // (while a key or a script is refused, a success may end it: one size check otherwise)
          if (this.#acl.otherRefused) this.#acl.acceptedOther(node, key, script, sent)
          finish(value)
        }, (err: unknown) => {
          this.#answered(node)
          if (this.#failedUnanswered !== null && !replied(err)) this.#failedUnanswered++
          // (an error reply about this call only, a NOPERM or a WRONGTYPE, is an answer of the node)
          finish(FAILED, this.#acl.callError(err, node, key, script), writesRefusal(err) ?? (failsNode(err) ? 'node' : 'call'), commandOf(err))
        })
      } catch (err) {
        finish(FAILED, describe(err))
      }
    })
  }

  /** A command sent to `node` got its reply or failed. */
  #answered(node: string): void {
    const left = (this.#waiting.get(node) ?? 1) - 1
    if (left === 0) this.#waiting.delete(node)
    else this.#waiting.set(node, left)
  }

  /** Which node a call for `key` waits on: its slot's master in a Cluster ('' when unknown or keyless), the one node otherwise. */
  #waitKey(client: Client, key: string | null): string {
    if (!(client instanceof Cluster)) return ''
    return key === null ? '' : client.slots[keySlot(key)]?.[0] ?? ''
  }

  /** With Sentinel: the `+switch-master` watches (null otherwise). */
  readonly #switchWatch: SentinelWatch | null

  /**
   * Whether `c` landed elsewhere than the master a Sentinel announced lately, and is to be made
   * again (see {@link SentinelWatch.offSwitch}); never without Sentinel.
   */
  #offSwitch(c: Client): boolean {
    return this.#switchWatch !== null && c instanceof Redis && this.#switchWatch.offSwitch(c, this.#named.get(c)?.at)
  }

  /** A `+switch-master` watch's connection to Sentinel `s`, reconnecting by `retryStrategy` (see {@link SentinelWatch}). */
  #sentinelConnection(s: RedisAddress, retryStrategy: (times: number) => number | null): Redis {
    const password = this.#options.sentinelPassword ?? undefined
    const username = this.#options.sentinelUsername ?? undefined
    return new Redis({
      host: s.host, port: s.port, lazyConnect: true, protocol: 2, connectionName: 'tether-switch-watch',
      connectTimeout: this.#connectTimeout, retryStrategy, maxRetriesPerRequest: 0,
      autoResubscribe: false, enableOfflineQueue: false, ...{ disconnectTimeout: 100 },
      // no INFO ready check: SUBSCRIBE is its first question, under the silence rule
      enableReadyCheck: false,
      ...(username === undefined ? {} : { username }),
      ...(password === undefined ? {} : { password }),
    })
  }

  /** A switch was announced: the connections that are ready elsewhere are made again. */
  #followSwitch(): void {
    // (a client still connecting is checked once ready: made again there, it would end)
    for (const c of [this.#client, ...this.#subscribers]) {
      if (c !== null && c.status === 'ready' && this.#offSwitch(c)) (c as Redis).disconnect(true)
    }
  }

  /** Sentinel mode: the master address Sentinel last named to each client (`host:port`), seen through ioredis's natMap. */
  readonly #named = new WeakMap<Client, { at: string }>()
  /** Clients whose last 'ready' made them again (start() must not take them as ready). */
  readonly #redoing = new WeakSet<Client>()

  /** Sentinel options that note the master address Sentinel names to the client into `seen` (ioredis's natMap hook, mapping nothing). */
  #noteNamed(seen: { at: string }): Pick<RedisOptions, 'natMap'> {
    // ioredis asks natMap of each Sentinel it learns, then of the master: the last call is the master
    return { natMap: ((key: string) => { seen.at = key; return null }) as unknown as RedisOptions['natMap'] }
  }

  /** Be told when a `+switch-master` watch gives its Sentinel up or hears it again (see {@link RedisSentinelEvent}). */
  onSentinel(fn: (event: RedisSentinelEvent) => void): () => void {
    this.#sentinelListeners.add(fn)
    return () => {
      this.#sentinelListeners.delete(fn)
    }
  }

  readonly #sentinelListeners = new Set<(event: RedisSentinelEvent) => void>()

  #emitSentinel(event: RedisSentinelEvent): void {
    tellAll(this.#sentinelListeners, event)
  }

  /**
   * The major version of the standalone server or Sentinel master as known now (see
   * {@link ErrorHints.serverMajor}): a test pins that ioredis's private ready check still gives it.
   */
  get serverMajor(): number | null {
    return this.#hints.serverMajor
  }

  /** Remakes of the connection for a READONLY-like reply in a row, and when the last was (performance.now()). */
  #remakes = 0
  #remadeAt = -Infinity

  /**
   * Whether a READONLY, LOADING or MASTERDOWN reply remakes the connection (1) or only fails
   * its command (false): at most once per back-off (50 ms doubling to maxReconnectDelay), which
   * starts again once no remake was asked for two maxReconnectDelays. A connection's retry
   * count starts again at each 'ready', and a replica is ready: an endpoint that stays
   * read-only (a misconfigured reader endpoint, a DNS answer still cached after a failover) was
   * remade after each write, every 50 ms, each remake failing the reads in flight too.
   */
  #remakeOnError(err: Error): 1 | false {
    if (!RECONNECT_ON.test(err.message)) return false
    const now = performance.now()
    const since = now - this.#remadeAt
    if (since > 2 * this.#maxReconnectDelay) this.#remakes = 0
    else if (since < Math.min(this.#maxReconnectDelay, 50 * 2 ** Math.min(this.#remakes - 1, 16))) return false
    this.#remakes++
    this.#remadeAt = now
    return 1
  }

  #createClient(): Client {
    const o = this.#options
    const backoff = (times: number): number => Math.min(this.#maxReconnectDelay, 50 * 2 ** Math.min(times - 1, 16))
    const common: RedisOptions = {
      lazyConnect: true,
      protocol: 2,
      connectionName: 'tether',
      connectTimeout: this.#connectTimeout,
      // a connection that stops answering is closed (its commands fail) and made again
      socketTimeout: this.#stallTimeout,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // Untyped ioredis option (default 2000): how long disconnect() waits for a socket to
      // close. ioredis arms it even for a socket that is already dead, and the timer would keep
      // the process alive after stop(); 100 ms is plenty for a QUIT that was answered.
      ...{ disconnectTimeout: 100 },
    }
    const password = o.password === null ? undefined : o.password
    const username = o.username === null ? undefined : o.username
    const user = username === undefined ? {} : { username }
    if (o.nodes) {
      const clusterOptions: ClusterOptions = {
        lazyConnect: true,
        enableOfflineQueue: false,
        clusterRetryStrategy: backoff,
        slotsRefreshTimeout: this.#connectTimeout,
        redisOptions: { ...common, ...user, ...(password === undefined ? {} : { password }) },
      }
      return new Cluster(o.nodes.map((n) => ({ host: n.host, port: n.port })), clusterOptions)
    }
    const base: RedisOptions = {
      ...common,
      enableOfflineQueue: false,
      retryStrategy: backoff,
      // A reply that means this server is no longer (or not yet) the primary remakes the
      // connection (the command still fails, unsent again): a managed Redis's failover demotes
      // the old primary behind the same endpoint while the connection to it stays open, and
      // its every write would be refused with READONLY for good; a new connection reaches what
      // the endpoint (or Sentinel) names now. Not for a Cluster: there a failover answers MOVED,
      // which its client follows with a slot refresh.
      reconnectOnError: (err: Error) => this.#remakeOnError(err),
    }
    if (o.sentinels) {
      const seen = { at: '' }
      const client = new Redis({
        ...base,
        sentinels: o.sentinels.map((s) => ({ host: s.host, port: s.port })),
        ...(o.name === undefined ? {} : { name: o.name }),
        ...user,
        ...(password === undefined ? {} : { password }),
        sentinelRetryStrategy: backoff,
        // ioredis's own questions to a Sentinel (the master's address, the other Sentinels)
        sentinelCommandTimeout: SENTINEL_SILENT_MS,
        ...(o.sentinelPassword == null ? {} : { sentinelPassword: o.sentinelPassword }),
        ...(o.sentinelUsername == null ? {} : { sentinelUsername: o.sentinelUsername }),
        ...this.#noteNamed(seen),
      })
      this.#named.set(client, seen)
      this.#hints.noteVersion(client)
      return client
    }
    const target = parseRedisUrl(o.url as string)
    const auth = o.password === undefined ? target.password : password
    const name = o.username === undefined ? target.username : username
    const client = new Redis({
      ...base,
      host: target.host,
      port: target.port,
      db: target.db,
      ...(name === undefined ? {} : { username: name }),
      ...(auth === undefined ? {} : { password: auth }),
      ...(target.tls ? { tls: {} } : {}),
    })
    this.#hints.noteVersion(client)
    return client
  }
}

/**
 * The connection a Cluster's ClusterSubscriber made for pub/sub (ioredis 5 and 6:
 * `cluster.subscriber.getInstance()`, not in its typings), or null when there is none now or the
 * shape is not there (another ioredis: then it is not PINGed, as before).
 */
function clusterSubscriber(cluster: Cluster): Redis | null {
  const subscriber = (cluster as unknown as { subscriber?: { getInstance?: () => unknown } }).subscriber
  const inner = typeof subscriber?.getInstance === 'function' ? subscriber.getInstance() : null
  return inner instanceof Redis ? inner : null
}

/**
 * Why a call's error is a live node's refusal of writes (OOM, MISCONF, NOREPLICAS: see
 * {@link writesRefusedBy}; for several commands, the first such), or null when it is none.
 */
function writesRefusal(err: unknown): WritesRefusedReason | null {
  if (err instanceof AggregateError) {
    for (const e of err.errors) {
      const reason = writesRefusal(e)
      if (reason !== null) return reason
    }
    return null
  }
  return err instanceof ReplyError ? writesRefusedBy(describe(err)) : null
}

/**
 * Whether a call's failure counts against its node: no reply (a timeout, a closed connection,
 * any error that is not a Redis reply), or an error reply that says the node cannot serve
 * ({@link NODE_FAULT}: `LOADING`, `READONLY`, `BUSY`, ...); for several commands, any of them.
 * Any other error reply concerns that call only (an ACL refusal of its command or key:
 * `NOPERM`; `WRONGTYPE`, `ERR ...`, `NOSCRIPT`, `EXECABORT`, `CROSSSLOT`, `BUSYKEY`): the node
 * answered. A refusal of writes (`OOM`, `MISCONF`, `NOREPLICAS`) is neither: it tells the node
 * refusing writes (see {@link writesRefusal}). Examples:
 * `failsNode(new ReplyError('BUSY Redis is busy running a script...'))` -> true;
 * `failsNode(new ReplyError('NOPERM No permissions to access a key'))` -> false.
 */
export function failsNode(err: unknown): boolean {
  if (err instanceof AggregateError) return err.errors.length === 0 || err.errors.some(failsNode)
  if (!(err instanceof ReplyError)) return true
  const error = describe(err)
  return NODE_FAULT.test(error) || SCRIPT_NODE_FAULT.test(error)
}

/** Whether a command's failure is Redis's reply (an error reply), not its connection's end. */
function replied(err: unknown): boolean {
  if (err instanceof AggregateError) return err.errors.length > 0 && err.errors.every(replied)
  return err instanceof ReplyError
}

/** Null when `promise` fulfils within `ms`, else the error (or "no reply within ms"). */
/**
 * Why a CLUSTER INFO answer `info` fails ioredis's ready check, or null (cluster_state:ok).
 * Example: `cluster_state:fail\r\ncluster_slots_assigned:16383\r\n...` ->
 * `says cluster_state:fail (1 slot served by no master)`.
 */
export function unreadyReason(info: string): string | null {
  const field = (name: string): string | undefined => new RegExp(`^${name}:(\\S*)`, 'm').exec(info)?.[1]
  const state = field('cluster_state')
  if (state === undefined || state === 'ok') return null
  const count = (n: number, what: string): string => `${n} slot${n === 1 ? '' : 's'} ${what}`
  const unassigned = CLUSTER_SLOTS - Number(field('cluster_slots_assigned') ?? CLUSTER_SLOTS)
  const failed = Number(field('cluster_slots_fail') ?? 0)
  const detail = unassigned > 0 ? count(unassigned, 'served by no master') : failed > 0 ? count(failed, 'of failed masters') : null
  return `says cluster_state:${state}${detail === null ? '' : ` (${detail})`}`
}

function settle(promise: Promise<unknown>, ms: number, timers: Timers): Promise<string | null> {
  return new Promise((resolve) => {
    const timer = timers.setTimeout(() => resolve(`no reply within ${ms} ms`), ms)
    promise.then(
      () => { timers.clearTimeout(timer); resolve(null) },
      (err: unknown) => { timers.clearTimeout(timer); resolve(describe(err)) },
    )
  })
}

