// Drills on the Redis behind `state.store: redis`, under load from users pinned by Tether's
// cookie: Redis `kill -9` then restarted (empty: no persistence), and a Redis Sentinel master
// failover (the master `kill -9`, its replica promoted). While Redis is away no request fails
// and nobody moves (checkpoints pause, routing does not need Redis); once Tether is connected
// again, checkpoints are stored there, which a `kill -9` of the busiest app replica then
// proves: its users move and are rehydrated from the new Redis with nothing lost.
// state.timeout is 1 s here (as in test/state-redis-e2e.test.ts): with the default 50 ms a
// loaded CI machine misses some checkpoint writes (see the figures of replica-kill-redis.test.ts).
import t, { type Test } from 'tap'
import { changedAfter, measure, succeeded, type Moves } from '../fixtures/drill-figures.js'
import { Front, type Load } from '../fixtures/drill-load.js'
import { OUT, assertKept, assertMoves, drillConfig, metric, report, scaled, startDrillTether, startLoad, startReplicas, type DrillTether, type Replica } from '../fixtures/drill.js'
import { redisCli, startRedis, startRedisSentinel, waitFor } from '../fixtures/redis-server.js'

const USERS = scaled(40)
const THINK = 100
const STEADY = scaled(5)
/** Requests every user makes while Redis is away, and after it is back before the replica kill. */
const DURING = scaled(5)
const AFTER = scaled(5)
/** The starts of Tether's log lines when a Redis node goes down and when one is up (again, or a new master). */
const NODE_DOWN = 'redis node down'
const NODE_UP = 'redis node up'

/** How a drill breaks Redis and knows it is back. */
interface RedisFault {
  /** The `state.redis` section Tether connects with. */
  readonly redis: Record<string, unknown>
  /** Break it (resolves once broken). */
  break(): Promise<void>
  /** Resolves when the drill's side of the recovery is done (restarted, or failed over). */
  recover(): Promise<void>
}

async function redisDrill(t: Test, name: string, fault: RedisFault): Promise<void> {
  const replicas = await startReplicas(t, ['app-0', 'app-1', 'app-2'])
  const dt = await startDrillTether(t, drillConfig(replicas.values(), { state: { store: 'redis', timeout: 1_000, redis: fault.redis } }))
  const load = startLoad(t, { users: USERS, front: new Front([dt.url]), key: 'cookie', thinkMs: THINK })
  const steadyFrom = await load.steady(STEADY)
  const storedBefore = await metric(dt.tether, 'tether_checkpoints_total{result="stored"}')

  const at = performance.now()
  await fault.break()
  const degraded = await dt.logLine(NODE_DOWN, at, 15_000)
  await load.waitEach(DURING, 30_000, load.mark())
  const recoverAt = performance.now()
  await fault.recover()
  const ready = await dt.logLine(NODE_UP, degraded, 20_000)
  const storedAtReady = await metric(dt.tether, 'tether_checkpoints_total{result="stored"}')
  // every user's newest checkpoint is in the Redis Tether is connected to now
  await load.waitUntil(() => load.byUser.every((s) => s.filter((x) => x.start > ready && succeeded(x)).length >= AFTER), 30_000, 'requests after the store is ready')
  const unstored = await metric(dt.tether, 'tether_checkpoints_total{result="unavailable"}')
  const storedAfter = await metric(dt.tether, 'tether_checkpoints_total{result="stored"}') - storedAtReady

  // stayed put while Redis was away
  const strays = changedAfter(load.byUser, at).length
  const kill = await killBusiest(load, replicas, dt)
  await load.stop()

  const f = measure(load.byUser, { at, end: ready, steadyFrom, detectedAt: degraded, upstream: null })
  const m = kill.moves
  const figures = {
    ...f,
    extra: {
      timeout_ms: 1_000, strays, checkpoints_stored_before: storedBefore, checkpoints_unavailable: unstored,
      checkpoints_stored_after: storedAfter, store_back_ms: Math.round(ready - at),
      replica_kill_moved: `${m.moved.length}/${m.victims.length}`, replica_kill_rehydrated: `${m.rehydrated.length}/${m.victims.length}`,
    },
  }
  report(t, name, { figures, at, timeline: { store_degraded: degraded, recovery_started: recoverAt, store_ready: ready, replica_killed: kill.at }, samples: load.all(), logs: [dt] })
  assertKept(t, f, load.all())
  t.equal(strays, 0, 'no user moved while Redis was away')
  t.ok(unstored > 0, `checkpoints were paused during the outage (${unstored} not stored)`)
  t.ok(storedAfter >= USERS * AFTER / 2, `checkpoints are stored again once Tether is connected (${storedAfter} since)`)
  // after the outage: rehydrated from the Redis Tether is connected to now
  assertMoves(t, m, kill.id)
}

/** Kill -9 the busiest replica; resolves once its users were answered elsewhere and made AFTER more requests. */
async function killBusiest(load: Load, replicas: Map<string, Replica>, dt: DrillTether): Promise<{ id: string; at: number; moves: Moves }> {
  const { id, users } = load.busiest()
  const at = performance.now()
  await replicas.get(id)!.kill()
  await dt.transition((e) => e.id === id && OUT.has(e.to), at, 15_000, `${id} to be taken out`)
  await load.waitMovedOff(users, id, at, 15_000)
  await load.waitEach(AFTER, 30_000, load.mark())
  return { id, at, moves: measure(load.byUser, { at, end: at, detectedAt: null, upstream: id }).moves! }
}

t.test('Redis kill -9 and restart (empty) under load: no failure, nobody moves; checkpoints resume in the new Redis', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await redisDrill(t, 'redis-kill-restart', {
    redis: { url: redis.url },
    break: () => redis.kill(),
    recover: () => redis.restart(),
  })
})

t.test('Redis Sentinel master failover under load: no failure, nobody moves; checkpoints resume on the promoted replica', async (t) => {
  const master = await startRedis({ args: ['--repl-diskless-sync-delay', '0'] })
  const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port)] })
  t.teardown(async () => { await replica.stop(); await master.stop() })
  await waitFor('the replica to sync', async () => (await redisCli(replica.port, 'INFO', 'replication')).includes('master_link_status:up'), 15_000)
  const sentinel = await startRedisSentinel(master)
  t.teardown(() => sentinel.stop())
  await redisCli(sentinel.port, 'SENTINEL', 'SET', sentinel.name, 'down-after-milliseconds', '1000')
  await redisCli(sentinel.port, 'SENTINEL', 'SET', sentinel.name, 'failover-timeout', '10000')
  await waitFor('Sentinel to know the replica', async () => (await redisCli(sentinel.port, 'SENTINEL', 'REPLICAS', sentinel.name)).includes(String(replica.port)), 15_000)
  const masterPort = async (): Promise<number> => Number((await redisCli(sentinel.port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', sentinel.name)).trim().split('\n')[1])
  let promotedAt = 0
  await redisDrill(t, 'redis-sentinel-failover', {
    redis: { url: null, sentinels: [`127.0.0.1:${sentinel.port}`], name: sentinel.name },
    break: () => master.kill(),
    recover: async () => {
      await waitFor('Sentinel to promote the replica', async () => (await masterPort()) === replica.port, 20_000)
      promotedAt = performance.now()
    },
  })
  t.ok(promotedAt > 0, 'the replica was promoted')
})
