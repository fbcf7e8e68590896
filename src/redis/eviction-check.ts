// Whether the Redis that Tether writes to evicts Tether's keys when it is full (`maxmemory` with
// a `maxmemory-policy` other than `noeviction`), read from a node's `INFO memory` each time it
// comes up (start-up, each reconnect, a Cluster master that joins) and once a minute after.
// Layer 3 adapter over connection.ts (no ioredis here); tells findings to a ProblemLog, logs
// nothing itself. INFO, not CONFIG GET: managed Redis services (ElastiCache, Memorystore) refuse CONFIG.
import { systemTimers, type Timers } from '../clock.js'
import type { ProblemLog } from '../observability/problem-log.js'
import type { RedisConnection, RedisNodeEvent } from './connection.js'

/** What a policy that evicts does to Tether's keys, and what to do instead. */
export interface EvictionRisk {
  readonly policy: string
  /** `maxmemory` in bytes (> 0). */
  readonly maxmemory: number
  readonly effect: string
  readonly hint: string
}

/**
 * How often (ms) a node that answered its last INFO is asked again, to see a `maxmemory` or
 * `maxmemory-policy` changed live with `CONFIG SET`: one INFO per node a minute costs Redis
 * nothing measurable (even from a hundred replicas), and eviction bites only once Redis is full,
 * which takes far longer than a minute to reach after the change.
 */
export const EVICTION_RECHECK_MS = 60_000

const HINT = 'set maxmemory-policy noeviction (a full Redis then refuses new writes and loses nothing stored), with maxmemory sized for the sessions of one affinity.idle_timeout, or give Redis more memory'

/**
 * The risk `INFO memory`'s text tells, or null when Redis evicts none of Tether's keys (no
 * `maxmemory`, `noeviction`, or the fields are absent). Every key Tether writes but the keyspace
 * marker has a TTL, so a `volatile-*` policy evicts them too; an `allkeys-*` one (or one of
 * another name) evicts the marker as well. Example: `evictionRisk('maxmemory:104857600\r\nmaxmemory_policy:allkeys-lru\r\n')`
 * -> `{ policy: 'allkeys-lru', maxmemory: 104857600, effect: 'when Redis is full it evicts ...', hint: 'set maxmemory-policy noeviction ...' }`.
 */
export function evictionRisk(info: string): EvictionRisk | null {
  const field = (name: string): string | undefined => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim()
  const maxmemory = Number(field('maxmemory') ?? 0)
  const policy = field('maxmemory_policy')
  if (!(maxmemory > 0) || policy === undefined || policy === 'noeviction') return null
  // (a policy named otherwise, from a later Redis or a look-alike server, is taken as the worst)
  const effect = !policy.startsWith('volatile-')
    ? "when Redis is full it evicts any key: Tether's shared bindings (users silently lose stickiness), checkpoints (moved users lose their state) and the keyspace marker (every replica then takes it for a lost keyspace and writes its bindings back into the full Redis)"
    : "when Redis is full it evicts keys with a TTL, and every Tether key but the keyspace marker has one: shared bindings (users silently lose stickiness) and checkpoints (moved users lose their state)"
  return { policy, maxmemory, effect, hint: HINT }
}

/** Options of {@link watchEviction}. */
export interface EvictionWatchOptions {
  /** Told after each check how many nodes answered (0 or 1). */
  readonly checked?: (answered: number) => void
  /** The timers of the periodic re-check (unref'd system timers by default). */
  readonly timers?: Timers
  /** The period of the re-check (ms); default {@link EVICTION_RECHECK_MS}. */
  readonly everyMs?: number
}

/**
 * Checks a node's `INFO memory` (see {@link RedisConnection.info}: the standalone server, the
 * Sentinel master, each Cluster master) each time it comes up (a {@link RedisNodeEvent} `up`:
 * start-up, each reconnect, a master that joins a Cluster by a failover or a resharding while
 * the Cluster stays ready, a node back from failing calls), then every `everyMs`
 * ({@link EVICTION_RECHECK_MS}) while it answers (a policy changed with `CONFIG SET`): one INFO
 * to that node only, none while one to it is unanswered (a node that comes up meanwhile is
 * asked again once that one ends). A node whose policy evicts Tether's
 * keys is reported to `problems` (key `redis eviction <node>`, identity the policy: a
 * ProblemLog with an infinite interval warns once a spell), and resolved by an info line once a
 * later check finds it safe, or once it is `removed` (it serves no Cluster slot any more). A
 * node that refuses INFO (an ACL user without it), fails it or goes `down` is not told of, nor
 * asked again until it next comes up; one re-checked that did not answer in time (busy) is
 * asked again at the next re-check. The re-check's one timer is armed only while some node
 * answered. Returns the stop (unsubscribes, clears the timer).
 *
 * Example: `const stop = watchEviction(redis, new ProblemLog(logger, clock, Infinity))` with
 * Redis started as `--maxmemory 100mb --maxmemory-policy allkeys-lru` logs one warn
 * `redis evicts Tether's keys when full (maxmemory-policy)` with `node`, `policy`, `maxmemory`,
 * `effect`, `hint`; after `CONFIG SET maxmemory-policy noeviction`, within a minute, one info
 * `redis no longer evicts Tether's keys (maxmemory-policy)`.
 */
export function watchEviction(redis: RedisConnection, problems: ProblemLog, options: EvictionWatchOptions = {}): () => void {
  const { checked = () => undefined, timers = systemTimers, everyMs = EVICTION_RECHECK_MS } = options
  const asking = new Set<string>()
  /** Nodes removed while an INFO to them was unanswered: its late reply is not told (a warn opened then would never end). */
  const removed = new Set<string>()
  /** Nodes whose last INFO was answered (and not down since): asked again at each re-check. */
  const answered = new Set<string>()
  /** Nodes that came up while an INFO to them was unanswered: asked again once it ends (its reply may be the old connection's failure). */
  const again = new Set<string>()
  let timer: unknown = null
  let stopped = false
  const arm = (): void => {
    if (timer === null && !stopped && answered.size > 0) timer = timers.setTimeout(recheck, everyMs)
  }
  const recheck = (): void => {
    timer = null
    // (settled, whatever each check did: one that threw does not end the re-checks)
    void Promise.allSettled([...answered].map((address) => check(address))).then(arm)
  }
  /** Tells `checked`: a listener that throws stops neither this check nor the next ones. */
  const tell = (answeredNow: number): void => {
    try {
      checked(answeredNow)
    } catch {
      // the listener's own failure
    }
  }
  const check = async (address: string): Promise<void> => {
    if (asking.has(address)) return
    asking.add(address)
    let infos: Map<string, string | null>
    try {
      infos = await redis.info('memory', address)
    } finally {
      asking.delete(address)
    }
    if (stopped) return
    if (again.delete(address)) void check(address)
    if (removed.delete(address)) return tell(0)
    if (infos.size === 0) answered.delete(address)
    let answeredNow = 0
    for (const [node, info] of infos) {
      // (no reply in time, Redis busy: nothing told; a node re-checked stays so, unless it went down meanwhile)
      if (info === null) continue
      answered.add(node)
      answeredNow++
      const risk = evictionRisk(info)
      if (risk === null) problems.resolve(`redis eviction ${node}`, { node }, "redis no longer evicts Tether's keys (maxmemory-policy)")
      else problems.report(`redis eviction ${node}`, risk.policy, { node, ...risk }, "redis evicts Tether's keys when full (maxmemory-policy)")
    }
    arm()
    tell(answeredNow)
  }
  const off = redis.onNode((e) => {
    if (e.kind === 'up') {
      removed.delete(e.node.address)
      if (asking.has(e.node.address)) again.add(e.node.address)
      else void check(e.node.address)
    } else if (e.kind === 'down') {
      answered.delete(e.node.address)
      again.delete(e.node.address)
    } else if (e.kind === 'removed') {
      answered.delete(e.node.address)
      again.delete(e.node.address)
      if (asking.has(e.node.address)) removed.add(e.node.address)
      problems.resolve(`redis eviction ${e.node.address}`, { node: e.node.address }, 'redis node serves no slot any more: its maxmemory-policy warn ends')
    }
  })
  return () => {
    stopped = true
    off()
    if (timer !== null) timers.clearTimeout(timer)
    timer = null
  }
}
