// The state protocol end to end with `state.store: redis`: a real redis-server, real child-process
// app replicas (SIGKILL-able "pods") that keep a per-user counter and checkpoint it, and
// simulated users. No acknowledged increment is lost when a replica dies under load, a Redis
// outage never fails a request nor moves a user, versions order racing checkpoints, and an
// oversize checkpoint is refused without failing its request.
import t, { type Test } from 'tap'
import http from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS } from '../src/config/schema.js'
import { startRedis, redisCli, type RedisServer } from './fixtures/redis-server.js'
import { startUpstream, testConfig, waitFor } from './fixtures/upstream.js'
import { CookieJar, get, userAgent, tally } from './fixtures/users.js'
import { startCounter, type Counter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { startAll } from './fixtures/children.js'
import { HEDGE_AFTER, HedgeTimers } from './fixtures/hedge-timers.js'

const SECRET = 'state-redis-e2e-secret-0123456789'


async function counters(t: Test, ids: readonly string[]): Promise<Counter[]> {
  const cs = await startAll(ids.map((id) => startCounter(id)))
  t.teardown(async () => { await Promise.all(cs.map((c) => c.kill())) })
  return cs
}

let redis: RedisServer
t.before(async () => { redis = await startRedis() })
t.teardown(async () => { await redis.stop() })

type Over = Parameters<typeof testConfig>[1]

/** Tether in-process with the Redis store (cookie key, shared secret) and `over` on top. */
async function tether(t: Test, ups: readonly { id: string; url: string }[], prefix: string, over: Over = {}): Promise<Tether> {
  const cfg = testConfig(ups, {
    ...over,
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: [SECRET] }, ...over.affinity },
    state: { store: 'redis', timeout: 1_000, ...over.state, redis: { url: redis.url, key_prefix: prefix } },
  })
  const tt = await startTether(cfg, { logger: createLogger('silent') })
  t.teardown(() => tt.close(0))
  return tt
}

/** The value of one metric series in Prometheus text (0 when absent). */
async function metric(tt: Tether, series: string): Promise<number> {
  const text = await tt.metrics.render()
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1))
  }
  return 0
}

async function readyz(tt: Tether): Promise<{ status: number; body: { ready: boolean; reasons: string[]; degraded: string[] } }> {
  const r = await get(`${tt.adminUrl}/readyz`, new http.Agent())
  return { status: r.status, body: JSON.parse(r.body) }
}

/** One user's request: the parsed answer, or the failure (status or network error). */
async function ask(url: string, agent: http.Agent, jar: CookieJar): Promise<CounterAnswer | string> {
  try {
    const r = await get(url, agent, {}, jar)
    if (r.status !== 200) return `status ${r.status}: ${r.body.trim()}`
    return JSON.parse(r.body) as CounterAnswer
  } catch (err) {
    return (err as Error).message
  }
}

/** 1..k exactly: no gap, no repeat. */
function isCounting(ns: readonly number[]): boolean {
  return ns.every((n, i) => n === i + 1)
}

t.test('SIGKILL of the busiest replica under load: no acknowledged increment is lost', async (t) => {
  const USERS = 20
  const BEFORE = 3 // requests per user before the kill
  const AFTER = 5 // requests per user after the kill
  const CAP = 200 // load bound: most requests one user may make
  const apps = await counters(t, ['app-0', 'app-1', 'app-2'])
  const tt = await tether(t, apps, 'e2e-a:', {
    health: { active: { path: '/healthz', interval: 100, timeout: 1_000, unhealthy_threshold: 1 } },
  })
  const agent = userAgent(USERS)
  t.teardown(() => agent.destroy())

  const answers: CounterAnswer[][] = Array.from({ length: USERS }, () => [])
  const failures: string[] = []
  let reachedBefore = 0
  let killed: string | null = null
  /** Requests each user had completed when the killed process had exited. */
  const atKill: number[] = []
  let kill!: Promise<void>
  const killBusiest = (): void => {
    const busiest = [...tally(answers.map((a) => a.at(-1)?.id ?? ''))].sort((x, y) => y[1] - x[1])[0]![0]
    const app = apps.find((a) => a.id === busiest)!
    kill = app.kill('SIGKILL').then(() => {
      killed = busiest
      for (let i = 0; i < USERS; i++) atKill[i] = answers[i]!.length
    })
  }
  const user = async (i: number): Promise<void> => {
    const jar = new CookieJar()
    jar.cookies.set('user', `u${i}`)
    for (let r = 0; r < CAP; r++) {
      const a = await ask(tt.url, agent, jar)
      if (typeof a === 'string') failures.push(`user ${i} request ${r}: ${a}`)
      else answers[i]!.push(a)
      if (r + 1 === BEFORE && ++reachedBefore === USERS) killBusiest() // every user is under way: kill now, mid-traffic
      if (killed !== null && answers[i]!.length >= atKill[i]! + AFTER) return
    }
    failures.push(`user ${i} hit the cap of ${CAP} requests`)
  }
  const started = performance.now()
  await Promise.all(Array.from({ length: USERS }, (_, i) => user(i)))
  await kill
  const seconds = (performance.now() - started) / 1000

  t.same(failures, [], '0 failed requests')
  const victim = killed!
  const moved = answers.filter((a) => a[0]!.id === victim)
  const stayed = answers.filter((a) => a[0]!.id !== victim)
  t.ok(moved.length > 0, 'the killed replica served users')
  for (const [i, a] of answers.entries()) {
    const ns = a.map((x) => x.n)
    if (!isCounting(ns)) t.fail(`user ${i} counted ${ns.join(',')} (gap or repeat)`)
  }
  t.pass(`every user counted 1,2,3,... without gap or repeat`)
  for (const a of moved) {
    const first = a.findIndex((x) => x.id !== victim)
    t.ok(first > 0, `${a[0]!.user} moved off ${victim}`)
    t.ok(a.slice(first).every((x) => x.id === a[first]!.id), `${a[0]!.user} stays on ${a[first]!.id} after the move`)
    t.equal(a.filter((x) => x.rehydrated).length, 1, `${a[0]!.user}: exactly one rehydrated answer`)
    t.ok(a[first]!.rehydrated, `${a[0]!.user}: the first answer after the move was the rehydrated one`)
    t.match(a[first]!.moved, new RegExp(`^from=${victim}; reason=dead; epoch=1$`))
    t.equal(a[first]!.epoch, '1')
  }
  for (const a of stayed) {
    t.ok(a.every((x) => x.id === a[0]!.id && !x.rehydrated), `${a[0]!.user} never moved nor rehydrated`)
  }
  const delivered = await metric(tt, 'tether_rehydrations_total{result="delivered"}')
  t.equal(delivered, moved.length, 'one rehydration per moved user')
  const total = answers.reduce((s, a) => s + a.length, 0)
  t.comment(`killed ${victim} (served ${moved.length}/${USERS} users); ${total} requests in ${seconds.toFixed(2)} s, 0 failed; ` +
    `rehydrated ${delivered}; checkpoints stored ${await metric(tt, 'tether_checkpoints_total{result="stored"}')}; ` +
    `retries ${await metric(tt, `tether_retries_total{upstream="${victim}"}`)}`)
})

t.test('Redis SIGKILLed and restarted under load: no failed request, routing unchanged, degraded then recovered', async (t) => {
  const USERS = 20
  const apps = await counters(t, ['app-0', 'app-1', 'app-2'])
  const tt = await tether(t, apps, 'e2e-b:')
  const agent = userAgent(USERS)
  t.teardown(() => agent.destroy())
  t.teardown(async () => { if (!redis.running) await redis.restart() })
  t.equal((await readyz(tt)).body.degraded.length, 0, 'not degraded while Redis is up')
  t.equal(await metric(tt, 'tether_redis_up'), 1)

  const answers: CounterAnswer[][] = Array.from({ length: USERS }, () => [])
  const failures: string[] = []
  let phase: 'up' | 'down' | 'back' | 'stop' = 'up'
  const duringOutage = new Array<number>(USERS).fill(0)
  const CAP = 2_000
  const user = async (i: number): Promise<void> => {
    const jar = new CookieJar()
    jar.cookies.set('user', `u${i}`)
    for (let r = 0; r < CAP && phase !== 'stop'; r++) {
      const wasDown = phase === 'down'
      const a = await ask(tt.url, agent, jar)
      if (typeof a === 'string') failures.push(`user ${i} request ${r} (${phase}): ${a}`)
      else {
        answers[i]!.push(a)
        if (wasDown && phase === 'down') duringOutage[i]!++
      }
    }
  }
  // readiness watched all along: must stay 200
  const readiness: number[] = []
  let watching = true
  const watch = (async () => {
    while (watching) {
      readiness.push((await readyz(tt)).status)
      await new Promise((r) => setImmediate(r))
    }
  })()
  const users = Promise.all(Array.from({ length: USERS }, (_, i) => user(i)))
  try {
    await waitFor(() => answers.every((a) => a.length >= 3), 10_000, 'every user under way')
    const storedBefore = await metric(tt, 'tether_checkpoints_total{result="stored"}')
    t.ok(storedBefore >= USERS * 3, `checkpoints stored before the outage (${storedBefore})`)

    await redis.kill()
    phase = 'down'
    let degraded: string[] = []
    await waitFor(async () => {
      const r = await readyz(tt)
      degraded = r.body.degraded
      return r.status === 200 && degraded.length > 0
    }, 5_000, 'readyz to report degraded')
    t.match(degraded, [new RegExp(`^redis 127\\.0\\.0\\.1:${redis.port} unreachable: .+; its checkpoints are paused, routing unaffected$`)], `/readyz is 200 with degraded naming the Redis: ${JSON.stringify(degraded)}`)
    t.equal(await metric(tt, 'tether_redis_up'), 0, 'tether_redis_up 0 while Redis is down')
    await waitFor(() => duringOutage.every((n) => n >= 3), 10_000, 'every user to make 3 requests during the outage')
    const unavailable = await metric(tt, 'tether_checkpoints_total{result="unavailable"}')
    t.ok(unavailable > 0, `checkpoints unavailable during the outage (${unavailable})`)

    await redis.restart()
    phase = 'back'
    await waitFor(async () => (await readyz(tt)).body.degraded.length === 0, 10_000, 'readyz to drop degraded')
    t.pass('/readyz has no degraded entry once Redis is back')
    await waitFor(async () => (await metric(tt, 'tether_redis_up')) === 1, 5_000, 'tether_redis_up 1')
    t.pass('tether_redis_up 1 again')
    const storedAtRestart = await metric(tt, 'tether_checkpoints_total{result="stored"}')
    await waitFor(async () => (await metric(tt, 'tether_checkpoints_total{result="stored"}')) > storedAtRestart + USERS, 10_000, 'checkpoints to resume')
    t.pass('checkpoints are stored again after the restart')
    const keys = (await redisCli(redis.port, '--scan', '--pattern', 'e2e-b:cp:*')).trim().split('\n').filter(Boolean)
    t.ok(keys.length > 0, `the restarted (empty) Redis holds checkpoints again (${keys.length} keys)`)
    t.comment(`stored before ${storedBefore}, unavailable during the outage ${unavailable}, stored at restart ${storedAtRestart}, ` +
      `requests during the outage ${duringOutage.reduce((a, b) => a + b, 0)}`)
  } finally {
    phase = 'stop'
    watching = false
    await users
    await watch
  }
  t.same(failures, [], '0 failed requests, during the outage included')
  t.ok(readiness.length > 0 && readiness.every((s) => s === 200), `/readyz stayed 200 (${readiness.length} polls)`)
  for (const a of answers) {
    t.ok(a.every((x) => x.id === a[0]!.id && x.epoch === '0' && x.moved === null), `${a[0]!.user} stayed on ${a[0]!.id}`)
    if (!isCounting(a.map((x) => x.n))) t.fail(`${a[0]!.user} counted ${a.map((x) => x.n).join(',')}`)
  }
  t.comment(`${answers.reduce((s, a) => s + a.length, 0)} requests, ${readiness.length} readiness polls`)
})

t.test('racing checkpoints: version 3 answered after version 5 never wins; the move rehydrates v5', async (t) => {
  let release!: () => void
  const released = new Promise<void>((r) => { release = r })
  let heldArrived!: () => void
  const arrived = new Promise<void>((r) => { heldArrived = r })
  const rehydrates = new Map<string, string | undefined>()
  const handler = (id: string) => (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const version = Number(req.headers['x-test-version'] ?? 1)
    rehydrates.set(id, req.headers['x-tether-rehydrate'] as string | undefined)
    const answer = (): void => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-tether-state': `v${version}`, 'x-tether-state-version': String(version) })
      res.end(JSON.stringify({ id, version, rehydrate: req.headers['x-tether-rehydrate'] ?? null }))
    }
    if (req.headers['x-test-hold'] !== undefined) {
      heldArrived()
      void released.then(answer)
    } else answer()
  }
  const ups = await Promise.all(['app-0', 'app-1'].map((id) => startUpstream(id, handler(id))))
  t.teardown(async () => { release(); await Promise.all(ups.map((u) => u.close())) })
  const tt = await tether(t, ups, 'e2e-c:')
  const agent = userAgent(4)
  t.teardown(() => agent.destroy())
  const jar = new CookieJar()
  const first = await get(tt.url, agent, {}, jar)
  const home = (JSON.parse(first.body) as { id: string }).id
  const session = [...jar.cookies.keys()]
  t.same(session, ['tether'], 'a Tether session cookie was issued')

  // v3 reaches the upstream first but its answer is held; v5 overtakes it
  const v3 = get(tt.url, agent, { 'x-test-version': '3', 'x-test-hold': '1' }, jar)
  await arrived
  const v5 = await get(tt.url, agent, { 'x-test-version': '5' }, jar)
  t.equal(v5.status, 200)
  const stale0 = await metric(tt, 'tether_checkpoints_total{result="stale"}')
  release()
  t.equal((await v3).status, 200, 'the late v3 answer still reaches its client')
  t.equal(await metric(tt, 'tether_checkpoints_total{result="stale"}'), stale0 + 1, 'the late v3 checkpoint was refused as stale')
  const keys = (await redisCli(redis.port, '--scan', '--pattern', 'e2e-c:cp:*')).trim().split('\n').filter(Boolean)
  t.equal(keys.length, 1, 'one checkpoint in Redis')
  t.equal((await redisCli(redis.port, 'HGET', keys[0]!, 'version')).trim(), '5', 'Redis holds version 5')
  t.equal((await redisCli(redis.port, 'HGET', keys[0]!, 'value')).trim(), 'v5')

  tt.health.disable(home)
  const moved = JSON.parse((await get(tt.url, agent, {}, jar)).body) as { id: string; rehydrate: string | null }
  t.not(moved.id, home, 'the user moved off the disabled upstream')
  t.equal(moved.rehydrate, 'v5', 'the newest version, not the last one answered, was rehydrated')
})

t.test('an oversize checkpoint is refused by the Redis store path; the request succeeds', async (t) => {
  const up = await startUpstream('app-0', (req, res) => {
    const big = req.url === '/big'
    res.writeHead(200, { 'x-tether-state': big ? 'x'.repeat(2_000) : 'small', 'x-tether-state-version': big ? '2' : '1' })
    res.end(big ? 'big' : 'small')
  })
  t.teardown(() => up.close())
  const tt = await tether(t, [up], 'e2e-d:', { state: { max_bytes: 1_024 } })
  const agent = userAgent(1)
  t.teardown(() => agent.destroy())
  const jar = new CookieJar()
  const r = await get(`${tt.url}/big`, agent, {}, jar)
  t.equal(r.status, 200, 'the request succeeds')
  t.equal(r.body, 'big')
  t.notOk(r.headers['x-tether-state'], 'the checkpoint never reaches the client')
  t.equal(await metric(tt, 'tether_checkpoints_total{result="too_large"}'), 1, 'counted as too_large')
  t.equal(await metric(tt, 'tether_checkpoints_total{result="stored"}'), 0, 'nothing stored')
  t.equal((await redisCli(redis.port, '--scan', '--pattern', 'e2e-d:cp:*')).trim(), '', 'nothing written to Redis')
  const small = await get(`${tt.url}/`, agent, {}, jar)
  t.equal(small.status, 200)
  t.equal(await metric(tt, 'tether_checkpoints_total{result="stored"}'), 1, 'a checkpoint within the limit is stored')
  const keys = (await redisCli(redis.port, '--scan', '--pattern', 'e2e-d:cp:*')).trim().split('\n').filter(Boolean)
  t.equal(keys.length, 1)
  t.equal((await redisCli(redis.port, 'HGET', keys[0]!, 'value')).trim(), 'small')
})

t.test("a user moved while Redis is down starts their state again: once Redis is back, the new replica's first checkpoint replaces the old one whatever the versions", async (t) => {
  const { apps, tt, go, first, redisBack } = await versionFiveThenRedisDown(t, 'again:')
  await apps.find((a) => a.id === first)!.close() // its replica dies too
  let r = await go()
  const second = r[0]!
  t.not(second, first, 'moved to another replica')
  t.equal(r[1], '1', 'without state (Redis down): its versions start again, and version 1 is lost with Redis')
  await redisBack()
  t.same(await go(), [second, '2'])
  t.same(await go(), [second, '3'])
  t.equal(await metric(tt, 'tether_checkpoints_total{result="stale"}'), 0, 'versions 2 and 3 stored, not refused as older than 5')
  await apps.find((a) => a.id === second)!.close()
  r = await go()
  t.same(r.slice(1), ['4'], "the next move delivers the second replica's state (3), not the first's (5)")
})

t.test("a user moved by a hedge while Redis is down starts their state again: once Redis is back, the new replica's first checkpoint replaces the old one whatever the versions", async (t) => {
  let frozen = '' // the replica that takes requests and never answers them
  let reached = false // the frozen replica has the request
  // the test hedges the request itself once the frozen replica has it: with a real 100 ms
  // hedge_after a loaded machine hedged the setup's requests too (a losing hedge that carried
  // the state left its count on the replica the user later moves to without it)
  const timers = new HedgeTimers()
  const { tt, go, first, redisBack } = await versionFiveThenRedisDown(t, 'hedged-again:', { retries: { hedge_after: HEDGE_AFTER } }, (id) => id === frozen && (reached = true), timers)
  frozen = first // its replica freezes: the request is hedged
  const pending = go()
  await waitFor(() => reached, 20_000, 'the frozen replica has the request') // (polled: the app sets it)
  await timers.hedge()
  const r = await pending
  const second = r[0]!
  t.not(second, first, 'the hedge answered, on another replica')
  t.equal(r[1], '1', 'without state (Redis down): its versions start again')
  await redisBack()
  t.same(await go(), [second, '2'], 'the user moved with the hedge')
  t.same(await go(), [second, '3'])
  t.equal(await metric(tt, 'tether_checkpoints_total{result="stale"}'), 0, 'versions 2 and 3 stored, not refused as older than 5')
})

/**
 * User u1 (header x-user) on `versionedReplicas` (`frozen` as there) behind a Tether (`over` on
 * top) with its own Redis at `prefix`: answered five times by their first replica (version 5
 * stored, asserted), then that Redis saved (its data kept across the outage), killed and seen
 * down by Tether. `go` asks once as u1: the answering replica and the count; `redisBack`
 * restarts that Redis and waits until Tether is back on it.
 */
async function versionFiveThenRedisDown(t: Test, prefix: string, over: Over = {}, frozen?: (id: string) => boolean, timers?: HedgeTimers): Promise<{ apps: Awaited<ReturnType<typeof versionedReplicas>>; tt: Tether; go: () => Promise<string[]>; first: string; redisBack: () => Promise<void> }> {
  const own = await startRedis()
  t.teardown(() => own.stop())
  const apps = await versionedReplicas(t, frozen)
  const tt = await startTether(testConfig(apps, {
    affinity: { key: 'header', header: { name: 'x-user' } },
    state: { store: 'redis', timeout: 150, redis: { url: own.url, key_prefix: prefix } },
    ...over,
  }), { logger: createLogger('silent'), ...(timers === undefined ? {} : { timers }) })
  t.teardown(() => tt.close(0))
  const go = async (): Promise<string[]> => (await get(tt.url, new http.Agent(), { 'x-user': 'u1' })).body.split(' ')
  let r = await go()
  for (let i = 0; i < 4; i++) r = await go()
  const first = r[0]!
  t.equal(r[1], '5', 'version 5 stored from the first replica')
  await redisCli(own.port, 'SAVE') // kept across the outage
  await own.kill()
  await waitFor(async () => (await metric(tt, 'tether_redis_up')) === 0, 10_000, 'Tether to see Redis down')
  const redisBack = async (): Promise<void> => {
    await own.restart()
    await waitFor(async () => (await metric(tt, 'tether_redis_up')) === 1, 10_000, 'Tether back on Redis')
  }
  return { apps, tt, go, first, redisBack }
}

/**
 * Replicas a, b and c, each keeping a versioned per-user counter (header x-user) restored from a
 * delivered checkpoint; a replica `frozen` names takes requests and never answers them.
 */
async function versionedReplicas(t: Test, frozen: (id: string) => boolean = () => false) {
  const apps = await Promise.all(['a', 'b', 'c'].map((id) => {
    const n = new Map<string, number>()
    return startUpstream(id, (req, res) => {
      if (frozen(id)) return
      const user = String(req.headers['x-user'])
      const restored = req.headers['x-tether-rehydrate']
      const next = (restored !== undefined ? Number(restored) : n.get(user) ?? 0) + 1
      n.set(user, next)
      res.writeHead(200, { 'x-tether-state': String(next), 'x-tether-state-version': String(next) }).end(`${id} ${next}`)
    })
  }))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  return apps
}
