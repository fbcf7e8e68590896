// Builds the checkpoint store and state protocol that `state:` describes, wired to metrics and
// logs (the Redis nodes' health included), and the store's lines for /readyz's `degraded`.
// Layer 5 wiring helper of the composition root: constructs, starts nothing. The Redis modules
// (ioredis: ~11 MB of RSS a process) are imported only when the config uses Redis.
import type { Clock, Timers } from '../clock.js'
import type { Config } from '../config/schema.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import { RedisHealthLog } from '../observability/redis-health-log.js'
import { ProblemLog } from '../observability/problem-log.js'
import type { RedisConnection } from '../redis/connection.js'
import type { CheckpointStore } from './checkpoint-store.js'
import { MemoryCheckpointStore } from './memory-store.js'
import { StateProtocol } from './protocol.js'

/** The Redis connection `state.redis` describes (null unless `state.store: redis`). */
export async function redisOf(config: Config, timers: Timers): Promise<RedisConnection | null> {
  const st = config.state
  if (st.store !== 'redis') return null
  const { RedisConnection, REDIS_DEFAULTS } = await import('../redis/connection.js')
  const address = (hp: string): { host: string; port: number } => {
    const i = hp.lastIndexOf(':')
    return { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hp.slice(i + 1)) }
  }
  const r = st.redis
  return new RedisConnection({
    ...(r.url !== null ? { url: r.url } : {}),
    ...(r.password !== null ? { password: r.password } : {}),
    ...(r.username !== null ? { username: r.username } : {}),
    usernameSetting: 'state.redis.username',
    passwordSetting: 'state.redis.password',
    urlSetting: 'state.redis.url',
    ...(r.sentinels.length > 0 ? { sentinels: r.sentinels.map(address), name: r.name ?? undefined } : {}),
    sentinelPassword: r.sentinel_password,
    sentinelPasswordSetting: 'state.redis.sentinel_password',
    sentinelUsername: r.sentinel_username,
    sentinelUsernameSetting: 'state.redis.sentinel_username',
    ...(r.nodes.length > 0 ? { nodes: r.nodes.map(address) } : {}),
    keyPrefix: r.key_prefix,
    timeout: st.timeout,
    // a Redis that answers nothing while commands wait: longer than any call's own wait
    stallTimeout: Math.max(REDIS_DEFAULTS.connectTimeout, st.timeout, st.durability === 'confirmed' ? st.confirm_timeout : 0),
    timers,
  })
}

/**
 * The checkpoint store and state protocol of `state.store` (none: both null); `shared` replaces
 * the in-process memory store. `stop` ends the background work wired here (with Redis, the
 * eviction check's periodic re-check on `timers`): the composition root calls it at close.
 */
export async function createState(
  config: Config, redis: RedisConnection | null, clock: Clock, timers: Timers, metrics: Metrics, logger: Logger, shared: CheckpointStore | null = null,
): Promise<{ store: CheckpointStore | null; state: StateProtocol | null; stop: () => void }> {
  const st = config.state
  let stop = (): void => undefined
  if (st.store === 'none') return { store: null, state: null, stop }
  // `shared`: the memory store the primary holds for all workers (`workers` > 1)
  const store: CheckpointStore = redis === null
    ? shared ?? new MemoryCheckpointStore({ maxEntries: config.affinity.max_entries, maxBytes: st.max_bytes, maxTotalBytes: st.memory.max_bytes, clock })
    : new (await import('../redis/checkpoint-store.js')).RedisCheckpointStore({ connection: redis, maxBytes: st.max_bytes })
  metrics.redisUp(redis !== null && store.status === 'ready')
  if (redis !== null) {
    // The overall status is the gauge; each node's changes are its own gauge and the log lines
    // (a warn per node going down, rate-limited while it stays down, an info when it is back).
    store.onStatus((status) => metrics.redisUp(status === 'ready'))
    const log = new RedisHealthLog(logger, clock)
    for (const n of redis.nodes()) {
      metrics.redisNodeUp(n.address, n.status === 'up')
      metrics.redisNodeWritesRefused(n.address, n.writesRefused)
    }
    // a node that refuses writes (full: OOM under noeviction; MISCONF: it cannot persist;
    // NOREPLICAS) stays up: its own gauges, a warn naming why, an info once it takes writes again
    redis.onNode((e) => {
      if (e.kind === 'removed') metrics.redisNodeRemoved(e.node.address)
      else if (e.kind === 'writes_refused' || e.kind === 'writes_taken') metrics.redisNodeWritesRefused(e.node.address, e.node.writesRefused)
      else metrics.redisNodeUp(e.node.address, e.node.status === 'up')
      log.observe(e)
    })
    // a command the ACL user may not run (NOPERM): one warn per command, then at most one per
    // 30 s while its calls go on failing (each fails that call only: the node answered, it is
    // not counted down for it; /readyz lists the refusal until it ends); an info line
    // once a call of it succeeds again (the ACL fixed). A key the user's patterns leave out is
    // one problem whatever the command (a script goes out as EVAL or EVALSHA) and the key (each
    // session's): one warn naming the key refused, then at most one per 30 s (with a grant that
    // leaves out the keyspace marker, the marker, refused at each check); a channel refused and a
    // command a script calls refused are each their own problem (a script's refusal on Redis
    // 7.0 names no command and is told under the EVALSHA sent: it must not hide a refused
    // EVALSHA's warn, nor the other way round). Each has its info line once accepted again.
    const refusals = new ProblemLog(logger, clock)
    redis.onRefused((r) => {
      const [problem, fields] = r.kind === 'key' ? ['redis noperm key', { command: r.command, key: r.key }]
        : r.kind === 'channel' ? [`redis noperm channel ${r.command}`, { command: r.command }]
        : r.kind === 'script' ? [`redis noperm script ${r.script ?? r.command}`, { command: r.command, ...(r.script === undefined ? {} : { script: r.script }) }]
        : [`redis noperm ${r.command}`, { command: r.command }]
      const texts = REFUSAL_TEXTS[r.kind]
      // (not seen again for 5 min, or pushed out by newer ones: ended without a success)
      if (r.error === null && r.unseenFor !== undefined) refusals.resolve(problem, { ...fields, unseen_for_ms: r.unseenFor }, REFUSAL_UNSEEN)
      else if (r.error === null) refusals.resolve(problem, fields, texts.accepted)
      else refusals.report(problem, r.kind === 'key' || r.kind === 'channel' ? r.kind : r.command, { ...fields, err: r.error }, texts.refused)
    })
    // an error reply about one call only (a key of the wrong type, an unknown command, a
    // script's error): that call fails, its node is not counted down for it (it answered). One
    // warn per command (or script) and error, then at most one per 30 s while it goes on; no
    // info line (no success of the same call is watched for). Its key is never logged.
    const replyErrors = new ProblemLog(logger, clock)
    redis.onReplyError((e) => {
      const what = e.script ?? e.command ?? 'a command'
      const err = e.error.length > 300 ? `${e.error.slice(0, 300)}...` : e.error
      // (one problem a command and error class: the rest of an error's text may vary by call)
      const kind = e.error.split(' ', 1)[0]!
      // bounded: a Redis answering ever new error codes forgets the throttling of the others
      // (each is a problem of its own, warned at once anyway; at most one warn more each)
      if (replyErrors.size >= MAX_REPLY_ERROR_PROBLEMS) replyErrors.retain(() => false)
      replyErrors.report(`redis reply error ${what} ${kind}`, kind, {
        node: e.node, ...(e.command === null ? {} : { command: e.command }), ...(e.script === undefined ? {} : { script: e.script }), err,
      }, 'redis answered a call with an error: that call fails, the node is up')
    })
    // a Redis whose maxmemory-policy evicts Tether's keys (INFO memory each time a node comes
    // up, and once a minute while it answers: a policy changed live): one warn a spell per node,
    // an info once a later check finds it safe or it leaves
    const { watchEviction } = await import('../redis/eviction-check.js')
    stop = watchEviction(redis, new ProblemLog(logger, clock, Infinity), { timers })
    // a +switch-master watch: one warn when it gives its Sentinel up, one info when it is back
    redis.onSentinel((e) => {
      if (e.kind === 'silent') logger.warn({ sentinel: e.sentinel, error: e.error }, "redis sentinel silent: its +switch-master watch is made again (a failover is still followed through the other Sentinels' watches, if any, else once the old master drops Tether's connections)")
      else logger.info({ sentinel: e.sentinel }, 'redis sentinel listening again')
    })
  }
  const state = new StateProtocol(store, { header: st.header, maxBytes: st.max_bytes, timeout: st.timeout, ttl: config.affinity.idle_timeout, durability: st.durability, confirmTimeout: st.confirm_timeout }, clock, {
    checkpoint: (result, _key, bytes) => {
      metrics.checkpoint(result)
      if (result === 'too_large') logger.warn({ bytes, max_bytes: st.max_bytes }, 'checkpoint refused: larger than state.max_bytes')
    },
    rehydration: (result) => metrics.rehydration(result),
    operation: (op, seconds) => { if (redis !== null) metrics.redisOp(op, seconds) },
  })
  return { store, state, stop }
}

/** The info line of an ACL refusal that ended unseen (RedisRefusal.unseenFor): no longer listed in /readyz. */
const REFUSAL_UNSEEN = 'redis refusal not seen again: no longer listed in /readyz (no call of it was refused for 5 min, or newer refusals pushed it out); a later refusal is warned again'
/** At most this many reply-error problems are throttled at once (see onReplyError above). */
const MAX_REPLY_ERROR_PROBLEMS = 64

/** The log lines of an ACL refusal, by what was refused (see RefusalKind): its warn, and its info once accepted again. */
const REFUSAL_TEXTS = {
  command: { refused: 'redis refused a command: the ACL user may not run it, its calls fail', accepted: 'redis accepts the command again: its calls succeed' },
  key: { refused: "redis refused a key: the ACL user's key patterns leave it out, its calls fail", accepted: 'redis accepts the keys again: their calls succeed' },
  channel: { refused: "redis refused a channel: the ACL user's channel patterns leave it out, its calls fail", accepted: 'redis accepts the channel again: its calls succeed' },
  script: { refused: "redis refused a command a script calls: the ACL user may not run it, the script's calls fail", accepted: "redis accepts the script's commands again: its calls succeed" },
} as const

/**
 * The `degraded` lines of /readyz for the state store: with Redis, one per node that is down,
 * naming it (address, Cluster slots) and why, one per node that is up but refuses writes (full:
 * OOM; MISCONF, NOREPLICAS: with what to do; the store stays ready: reads go on), and one per
 * ACL refusal not ended (the
 * user may not run a command or access a key Tether needs: those calls fail while the node stays
 * up, see RedisConnection.refusals); none otherwise.
 *
 * Examples: `["redis shard 127.0.0.1:7001 (slots 0-5460) failing: 12 of 20 calls in the last 5 s failed
 * (last error: no reply within 50 ms); its checkpoints are paused, routing unaffected"]`;
 * `["redis 127.0.0.1:6379 full: it refuses writes (OOM command not allowed when used memory >
 * 'maxmemory'.); new checkpoints and shared bindings are not stored until it has room, reads
 * (rehydration), renewals and routing unaffected"]`; `["redis 127.0.0.1:6379 refuses writes
 * (MISCONF: the last RDB save failed; fix the disk (free space, the permissions of its dir: see
 * its log) or set stop-writes-on-bgsave-error no); checkpoints and shared bindings are neither
 * stored nor renewed until it takes writes again, reads (rehydration) and routing unaffected"]`.
 */
export function stateDegraded(store: CheckpointStore | null, redis: RedisConnection | null): () => string[] {
  const suffix = 'its checkpoints are paused, routing unaffected'
  const refusedSuffix = 'those calls fail, the node stays up: other calls and routing unaffected'
  const fullSuffix = 'new checkpoints and shared bindings are not stored until it has room, reads (rehydration), renewals and routing unaffected'
  // (MISCONF and NOREPLICAS refuse PEXPIRE too: what active users hold expires after affinity.idle_timeout)
  const refusingSuffix = 'checkpoints and shared bindings are neither stored nor renewed until it takes writes again, reads (rehydration) and routing unaffected'
  return () => {
    if (store === null) return []
    const nodes = redis === null ? [] : redis.nodes()
    const full = [
      ...nodes.filter((n) => n.status === 'up' && n.writesRefused !== null).map((n) => `${n.summary}; ${n.full ? fullSuffix : refusingSuffix}`),
      ...(redis === null ? [] : redis.refusals().map((r) => `${r}; ${refusedSuffix}`)),
    ]
    if (store.status === 'ready') return full
    const down = nodes.filter((n) => n.status === 'down')
    if (down.length === 0) return [`state store (${redis === null ? 'memory' : 'redis'}) unreachable: checkpoints paused, routing unaffected`, ...full]
    return [...down.map((n) => `${n.summary}; ${suffix}`), ...full]
  }
}
