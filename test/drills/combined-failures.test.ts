// Drill: failures combined, as real outages are. Two Tether processes (dist/cli.js; tether-a
// with `workers: 2`) share one redis-server (checkpoints, affinity.shared, health.shared) in front
// of four counter replicas; users keyed by an X-Tenant header spread their requests over both
// Tethers, each request on a new connection (so tether-a's primary hands them to either worker).
// Under that load, one after the other and overlapping:
//   1. the busiest replica is frozen (SIGSTOP) and stays frozen through 2 and 3;
//   2. redis-server is frozen (SIGSTOP) for a few seconds, and while it is frozen tether-a's
//      config file is edited (a hot reload: `retries.attempts` 2 -> 3) and tether-a's lead
//      worker (the one running the active checks) is SIGKILLed;
//   3. redis-server is thawed (SIGCONT); once every Tether is connected again and every user
//      made a few requests (their checkpoints stored again), the busiest replica left is killed
//      (`kill -9`);
//   4. the frozen replica is thawed (SIGCONT) and comes back healthy.
// Promises: no request fails, no acknowledged update is lost, every user of the frozen and of
// the killed replica moves (X-Tether-Moved) with its checkpoint (rehydrated) and none goes back,
// nobody else moves, and once it is quiet both Tethers (both of tether-a's workers) send every
// user to the same upstream.
// What Redis frozen cannot keep (docs/redis.md, "When Redis is slow or down"): checkpoints are
// paused and a user moved meanwhile gets no state. So the moves are made while Redis answers
// (the frozen replica's users move before Redis freezes; the second replica is killed once Redis
// is back and every user's newest checkpoint was stored again), and the freeze is held to what
// is documented for it instead: no request fails, none waits on Redis longer than four
// state.timeouts (1 s here) plus a loaded machine's slack, checkpoints are paused
// (`unavailable`), nobody moves, routing goes on.
// With table keys each Tether process (each of tether-a's workers too: with affinity.shared:
// redis they share bindings through Redis, not through their primary) moves a user of a replica
// it sees down by itself, to the same upstream by hash and at the same epoch, until it adopts
// the move from Redis at its next reconcile; so a moved user's move is announced again (X-Tether-Moved,
// rehydrated once more: docs/state-protocol.md, "an application that applies a rehydration
// should restore only what is newer"), and one announced again while Redis is frozen comes
// without the state: the counter app keeps its own newer count. The figures count them
// (announced_again, _without_state); the promises are on each user's first answer elsewhere.
// As in shared-tethers.test.ts, the front retries once, on the other Tether, a GET whose
// connection was reset before any answer (as an ingress retrying on reset would): the requests
// on the SIGKILLed worker.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { succeeded, measure, type Moves } from '../fixtures/drill-figures.js'
import { Front, type Sample } from '../fixtures/drill-load.js'
import { OUT, assertKept, drillYaml, firstOf, report, scaled, startCliTether, startLoad, startReplicas, type CliTether } from '../fixtures/drill.js'
import { redisCli, startRedis } from '../fixtures/redis-server.js'
import { request } from '../fixtures/upstream.js'
import { waitFor } from '../fixtures/wait.js'

const USERS = scaled(30)
const THINK = 100
const STEADY = scaled(3)
/** Requests every user makes while Redis is frozen (past its detection), and after each later step. */
const DURING = scaled(8)
const AFTER = scaled(3)
/** state.timeout (1 s, as in the other Redis drills): a request waits on Redis at most four times that (docs/redis.md). */
const STATE_TIMEOUT = 1_000
/** What a loaded 2-core CI machine may add to a wait (as in replica-sigstop.test.ts). */
const SLACK = 1_200

/** A series' value in a Prometheus text (0 when absent). */
const seriesOf = (text: string, series: string): number => {
  for (const line of text.split('\n')) if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1))
  return 0
}

t.test('combined failures: a replica frozen, Redis frozen, a hot reload and a worker crash, then a replica killed; no failure, no loss, moved users rehydrated, both Tethers agree', async (t) => {
  const redis = await startRedis()
  const redisPid = Number(/process_id:(\d+)/.exec(await redisCli(redis.port, 'INFO', 'server'))![1])
  t.teardown(async () => {
    try { process.kill(redisPid, 'SIGCONT') } catch { /* gone */ }
    await redis.stop()
  })
  const replicas = await startReplicas(t, ['app-0', 'app-1', 'app-2', 'app-3'])
  const shared = [
    'affinity: { key: header, header: { name: X-Tenant }, shared: redis }',
    'health: { shared: redis }',
    `state: { store: redis, timeout: ${STATE_TIMEOUT}ms, redis: { url: "${redis.url}", key_prefix: "drill:" } }`,
  ]
  const yamlA = (extra: readonly string[] = []): string => drillYaml(replicas.values(), ['workers: 2', ...shared, ...extra])
  const [a, b] = await Promise.all([startCliTether(t, 'tether-a', yamlA()), startCliTether(t, 'tether-b', drillYaml(replicas.values(), shared))]) as [CliTether, CliTether]
  const tethers = [a, b]
  // tether-a's own admin listener is its primary's (a worker's "tether listening" names its private one)
  const recordOf = (x: CliTether, msg: string, after = -Infinity) => x.records().find((r) => r.rec['msg'] === msg && r.at >= after)
  const primaryAdmin = String((await firstOf(a.onLog, () => recordOf(a, 'tether primary: workers started'), 60_000, 'tether-a\'s workers to start')).rec['admin'])
  const admins = [primaryAdmin, b.adminUrl]
  const metricOf = async (admin: string, series: string): Promise<number> => seriesOf((await request(`${admin}/metrics`)).body, series)

  const front = new Front([a.url, b.url], { retryResets: true })
  const load = startLoad(t, { users: USERS, front, key: 'header', thinkMs: THINK, newConnections: true })
  const steadyFrom = await load.steady(STEADY)

  // both Tethers take `id` out (a transition to an OUT state at or after `after`)
  const outOnEach = (id: string, after: number): Promise<number[]> => Promise.all(tethers.map(async (x) =>
    (await firstOf(x.onLog, () => x.transitions().find((e) => e.id === id && e.at >= after - 5 && OUT.has(e.to)), 15_000, `${x.name} to take ${id} out`)).at))

  // 1. the busiest replica frozen
  const { id: frozenId, users: frozenUsers } = load.busiest()
  const frozen = replicas.get(frozenId)!
  const at = performance.now()
  frozen.freeze()
  const frozenOut = await outOnEach(frozenId, at)
  await load.waitMovedOff(frozenUsers, frozenId, at, 15_000)
  const frozenMoved = performance.now()
  await load.waitEach(AFTER, 30_000, load.mark())

  // 2. Redis frozen; meanwhile a hot reload and a worker crash on tether-a
  const reloadsBefore = await metricOf(primaryAdmin, 'tether_config_reloads_total{result="ok"}')
  const unstoredBefore = await Promise.all(admins.map((x) => metricOf(x, 'tether_checkpoints_total{result="unavailable"}')))
  const lead = a.records().filter((r) => r.rec['msg'] === 'worker runs the active health checks').at(-1)?.rec['child']
  const leadStart = a.records().filter((r) => r.rec['msg'] === 'starting a worker' && r.rec['child'] === lead).at(-1)
  if (leadStart === undefined) throw new Error('tether-a logged no lead worker')
  const leadPid = Number(leadStart.rec['pid'])
  const redisAt = performance.now()
  process.kill(redisPid, 'SIGSTOP')
  const reloadAt = performance.now()
  writeFileSync(a.configPath, yamlA(['retries: { attempts: 3 }']))
  const crashAt = performance.now()
  process.kill(leadPid, 'SIGKILL')
  // polled: a Tether's Redis health is in its /metrics (tether-a's: the worst of its workers')
  const redisUp = (want: number, what: string): Promise<void> => waitFor(async () => (await Promise.all(admins.map((x) => metricOf(x, 'tether_redis_up')))).every((v) => v === want), 20_000, what, 50)
  await redisUp(0, 'both Tethers to see Redis down')
  const redisDown = performance.now()
  await load.waitEach(DURING, 30_000, load.mark())

  // 3. Redis thawed (tether-a's new worker may still be starting); once tether-a runs two
  // workers on the new config, every Tether is connected to Redis again and every user's newest
  // checkpoint is stored there, the busiest replica left is killed
  const thawRedisAt = performance.now()
  process.kill(redisPid, 'SIGCONT')
  const restarted = await firstOf(a.onLog, () => recordOf(a, 'starting a worker', crashAt), 15_000, 'tether-a to restart the crashed worker')
  await firstOf(a.onLog, () => a.records().find((r) => r.rec['msg'] === 'tether listening' && r.rec['worker'] === restarted.rec['child'] && r.at >= crashAt), 30_000, 'the restarted worker to listen')
  const replaced = performance.now()
  await waitFor(async () => (await metricOf(primaryAdmin, 'tether_config_reloads_total{result="ok"}')) > reloadsBefore, 15_000, 'tether-a to reload its config', 50)
  const reloaded = performance.now()
  await redisUp(1, 'both Tethers to see Redis up again')
  const redisBack = performance.now()
  const unstored = (await Promise.all(admins.map((x) => metricOf(x, 'tether_checkpoints_total{result="unavailable"}')))).map((v, i) => v - unstoredBefore[i]!)
  await load.waitUntil(() => load.byUser.every((s) => s.filter((x) => x.start > redisBack && succeeded(x)).length >= AFTER), 30_000, 'requests after Redis is back')
  const { id: killedId, users: killedUsers } = load.busiest()
  const killAt = performance.now()
  await replicas.get(killedId)!.kill()
  const killedOut = await outOnEach(killedId, killAt)
  await load.waitMovedOff(killedUsers, killedId, killAt, 15_000)
  const killedMoved = performance.now()
  await load.waitEach(AFTER, 30_000, load.mark())

  // 4. the frozen replica thawed
  const thawAt = performance.now()
  frozen.thaw()
  await Promise.all(tethers.map((x) => firstOf(x.onLog, () => x.transitions().find((e) => e.id === frozenId && e.at >= thawAt - 5 && e.to === 'healthy'), 15_000, `${x.name} to see ${frozenId} healthy`)))
  const healthy = performance.now()
  await load.waitEach(AFTER, 30_000, load.mark())
  await load.stop()

  // quiet: every user asked through tether-a, tether-b and tether-a again (new connections: either worker of tether-a)
  const disagree: string[] = []
  await Promise.all(load.byUser.map(async (samples, u) => {
    const home = samples.findLast(succeeded)?.upstream
    for (const via of [0, 1, 0]) { // one user's requests one after the other, as its counter needs
      const s = await load.ask(u, via)
      if (!succeeded(s) || s.upstream !== home) disagree.push(`${load.name(u)} via ${tethers[via]!.name}: ${s.upstream ?? s.error} (home ${home})`)
    }
  }))

  // every change of upstream, and whether it was one of the two expected moves
  const movesOf = (id: string, from: number): Moves & { unannounced: number[] } => {
    const m = measure(load.byUser, { at: from, end: from, detectedAt: null, upstream: id }).moves!
    const unannounced = m.moved.filter((u) => {
      const first = load.byUser[u]!.find((s) => s.end >= from && succeeded(s) && s.upstream !== id)!
      return first.moved === null
    })
    return { ...m, unannounced }
  }
  const m1 = movesOf(frozenId, at)
  const m2 = movesOf(killedId, killAt)
  const strays: string[] = []
  load.byUser.forEach((samples, u) => {
    let prev: Sample | null = null
    for (const s of samples.filter(succeeded)) {
      if (prev !== null && s.upstream !== prev.upstream) {
        const expected = (prev.upstream === frozenId && s.end >= at) || (prev.upstream === killedId && s.end >= killAt)
        // from the first fault on, as the other drills count (changedAfter): before it, a loaded
        // host can fail two health probes of a live replica in a row (500 ms each), which moves
        // its users by design (seen once at load 17-19: app-3 marked down 2.7 s before the fault)
        if (!expected && s.end >= at) strays.push(`${load.name(u)} #${s.seq}: ${prev.upstream} -> ${s.upstream} at +${Math.round(s.end - at)} ms`)
      }
      prev = s
    }
  })
  const sentBack = (id: string, m: Moves): number[] => m.moved.filter((u) => load.byUser[u]!.some((s) => s.end >= m.movedAt.get(u)! && succeeded(s) && s.upstream === id))

  const f = measure(load.byUser, { at, end: killedMoved, steadyFrom, detectedAt: Math.min(...frozenOut), upstream: null })
  // requests in flight while Redis was frozen
  const during = load.all().filter((s) => s.end >= redisAt && s.start < thawRedisAt)
  const longestFrozen = Math.round(Math.max(0, ...during.map((s) => s.end - s.start)))
  // moves announced again by another process (see the top)
  const firsts = new Set([m1, m2].flatMap((m) => m.moved.map((u) => `${u}@${m.movedAt.get(u)}`)))
  const again = load.all().filter((s) => succeeded(s) && s.moved !== null && !firsts.has(`${s.user}@${s.end}`))
  const crashRetried = load.all().filter((s) => s.start >= crashAt - 1_000 && s.start < replaced && s.attempts > 1).length
  const figures = {
    ...f,
    moved: { moved: m1.moved.length + m2.moved.length, of: m1.victims.length + m2.victims.length },
    extra: {
      tethers: 2, workers_a: 2, upstreams: 4,
      frozen: frozenId, frozen_moved: `${m1.moved.length}/${m1.victims.length}`, frozen_rehydrated: `${m1.rehydrated.length}/${m1.victims.length}`,
      killed: killedId, killed_moved: `${m2.moved.length}/${m2.victims.length}`, killed_rehydrated: `${m2.rehydrated.length}/${m2.victims.length}`,
      redis_frozen_ms: Math.round(thawRedisAt - redisAt), redis_down_seen_ms: Math.round(redisDown - redisAt), redis_back_ms: Math.round(redisBack - thawRedisAt),
      requests_redis_frozen: during.length, longest_redis_frozen_ms: longestFrozen, checkpoints_unavailable: unstored.join('+'),
      announced_again: again.length, announced_again_without_state: again.filter((s) => !s.rehydrated).length,
      worker_replaced_ms: Math.round(replaced - crashAt), reload_ms: Math.round(reloaded - reloadAt), front_retries: crashRetried,
      strays: strays.length, agreement: `${USERS * 3 - disagree.length}/${USERS * 3}`,
    },
  }
  const timeline = {
    frozen_out_a: frozenOut[0]!, frozen_out_b: frozenOut[1]!, frozen_users_moved: frozenMoved, redis_sigstop: redisAt, worker_sigkill: crashAt,
    redis_down_seen: redisDown, worker_replaced: replaced, reloaded, redis_sigcont: thawRedisAt, redis_back: redisBack,
    replica_killed: killAt, killed_out_a: killedOut[0]!, killed_out_b: killedOut[1]!, killed_users_moved: killedMoved, replica_sigcont: thawAt, healthy_again: healthy,
  }
  report(t, 'combined-failures', { figures, at, timeline, samples: load.all(), logs: tethers })

  assertKept(t, f, load.all())
  for (const [what, id, m] of [['frozen', frozenId, m1], ['killed', killedId, m2]] as const) {
    t.ok(m.victims.length > 0, `the ${what} replica ${id} had users (${m.victims.length})`)
    t.same(m.victims.filter((u) => !m.moved.includes(u)), [], `every user of the ${what} replica ${id} moved`)
    t.same(m.unannounced, [], `each was told it moved (X-Tether-Moved) on its new upstream`)
    t.same(m.moved.filter((u) => !m.rehydrated.includes(u)), [], 'and rehydrated there')
    t.same(sentBack(id, m), [], `none went back to ${id}`)
  }
  t.same(strays, [], 'nobody else changed upstream (not while Redis was frozen, not at the reload, not at the worker crash, not when the frozen replica came back)')
  t.same(disagree, [], 'once quiet, both Tethers send every user to the same upstream (on new connections, which tether-a\'s primary hands to either worker)')
  t.ok(during.length > 0, `requests went on while Redis was frozen (${during.length})`)
  t.ok(longestFrozen <= 4 * STATE_TIMEOUT + SLACK, `no request waited on the frozen Redis longer than four state.timeouts plus slack (${longestFrozen} ms <= ${4 * STATE_TIMEOUT + SLACK} ms)`)
  t.ok(unstored.some((v) => v > 0), `checkpoints were paused while Redis was frozen (${unstored.join(' + ')} not stored)`)
  t.equal(recordOf(a, 'config reload rejected; the running config stays', reloadAt), undefined, 'tether-a accepted the edited file')
  // the surviving worker applied it (the restarted one, started after the primary took the file or not, gets it in its setup or as a reload)
  const applied = a.records().filter((r) => r.rec['msg'] === 'config reloaded' && r.at >= reloadAt).map((r) => r.rec['applied'])
  t.ok(applied.length > 0 && applied.every((x) => JSON.stringify(x) === '["retries"]'), `the reload applied \`retries\` on tether-a's workers (${JSON.stringify(applied)})`)
})
