// Builds the checkpoint store and state protocol that `state:` describes, wired to metrics and
// logs. Layer 5 wiring helper of the composition root: constructs, starts nothing.
import type { Clock } from '../clock.js'
import type { Config } from '../config/schema.js'
import type { Logger } from '../observability/logger.js'
import type { Metrics } from '../observability/metrics.js'
import { RedisCheckpointStore } from '../redis/checkpoint-store.js'
import { RedisConnection } from '../redis/connection.js'
import type { CheckpointStore } from './checkpoint-store.js'
import { MemoryCheckpointStore } from './memory-store.js'
import { StateProtocol } from './protocol.js'

/** The Redis connection `state.redis` describes (null unless `state.store: redis`). */
export function redisOf(config: Config): RedisConnection | null {
  const st = config.state
  if (st.store !== 'redis') return null
  const address = (hp: string): { host: string; port: number } => {
    const i = hp.lastIndexOf(':')
    return { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hp.slice(i + 1)) }
  }
  const r = st.redis
  return new RedisConnection({
    ...(r.url !== null ? { url: r.url } : {}),
    ...(r.password !== null ? { password: r.password } : {}),
    ...(r.sentinels.length > 0 ? { sentinels: r.sentinels.map(address), name: r.name ?? undefined } : {}),
    ...(r.nodes.length > 0 ? { nodes: r.nodes.map(address) } : {}),
    keyPrefix: r.key_prefix,
    timeout: st.timeout,
  })
}

/** The checkpoint store and state protocol of `state.store` (none: both null). */
export function createState(
  config: Config, redis: RedisConnection | null, clock: Clock, metrics: Metrics, logger: Logger,
): { store: CheckpointStore | null; state: StateProtocol | null } {
  const st = config.state
  if (st.store === 'none') return { store: null, state: null }
  const store: CheckpointStore = redis === null
    ? new MemoryCheckpointStore({ maxEntries: config.affinity.max_entries, maxBytes: st.max_bytes, maxTotalBytes: st.memory.max_bytes, clock })
    : new RedisCheckpointStore({ connection: redis, maxBytes: st.max_bytes })
  metrics.redisUp(redis !== null && store.status === 'ready')
  store.onStatus((status, detail) => {
    if (redis !== null) metrics.redisUp(status === 'ready')
    if (detail === 'stopped') return // our own shutdown
    if (status === 'ready') logger.info({ store: st.store, detail }, 'state store ready')
    else logger.warn({ store: st.store, detail }, 'state store degraded: checkpoints paused, routing unaffected')
  })
  const state = new StateProtocol(store, { header: st.header, maxBytes: st.max_bytes, timeout: st.timeout, ttl: config.affinity.idle_timeout, durability: st.durability, confirmTimeout: st.confirm_timeout }, clock, {
    checkpoint: (result, _key, bytes) => {
      metrics.checkpoint(result)
      if (result === 'too_large') logger.warn({ bytes, max_bytes: st.max_bytes }, 'checkpoint refused: larger than state.max_bytes')
    },
    rehydration: (result) => metrics.rehydration(result),
    operation: (op, seconds) => { if (redis !== null) metrics.redisOp(op, seconds) },
  })
  return { store, state }
}
