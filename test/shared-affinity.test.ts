// Shared affinity (`affinity.shared: redis`) end to end: several in-process Tether replicas, each
// with its own Router and table, share one real redis-server in front of real child-process app
// replicas. What one replica decided on its own (a learned application cookie, a failover move)
// is followed by the others and by a restarted replica; with Redis down or stalled, requests
// are still placed (by the hash) and never hang.
import t, { type Test } from 'tap'
import http from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import { SessionTable } from '../src/affinity/session-table.js'
import { RedisBindings } from '../src/redis/binding-store.js'
import { RedisConnection } from '../src/redis/connection.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'
import { startRedis, redisCli, type RedisServer } from './fixtures/redis-server.js'
import { testConfig } from './fixtures/upstream.js'
import { healthState, waitFor, within } from './fixtures/wait.js'
import { FakeClock } from './fixtures/clock.js'
import { CookieJar, agentFor, get, tally } from './fixtures/users.js'
import { startCounter, type Counter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { startAll } from './fixtures/children.js'

const IDS = ['app-0', 'app-1', 'app-2'] as const


/** Counters app-0..2; teardown kills whatever is running in `list` then (restarts included). */
async function counters(t: Test, sid = false): Promise<Counter[]> {
  const list = await startAll(IDS.map((id) => startCounter(id, { sid })))
  t.teardown(async () => { await Promise.all(list.map((c) => c.kill())) })
  return list
}

let redis: RedisServer
t.before(async () => { redis = await startRedis() })
t.teardown(async () => { await redis.stop() })

type Over = Parameters<typeof testConfig>[1]

/** One Tether replica with the Redis store and shared affinity under `prefix`. */
async function replica(t: Test, ups: readonly { id: string; url: string }[], prefix: string, affinity: Partial<Config['affinity']>, over: Over = {}, clock?: FakeClock): Promise<Tether> {
  const cfg = testConfig(ups, {
    ...over,
    affinity: { ...affinity, shared: 'redis' },
    health: {
      active: { path: null },
      passive: { base_ejection: 300, max_ejection: 300 },
      ...over.health,
    },
    state: { store: 'redis', timeout: 200, ...over.state, redis: { url: redis.url, key_prefix: prefix } },
  })
  const tt = await startTether(cfg, { logger: createLogger('silent'), ...(clock ? { clock } : {}) })
  t.teardown(() => tt.close(0))
  return tt
}

const APP_COOKIE: Partial<Config['affinity']> = {
  key: 'app_cookie',
  app_cookie: { ...DEFAULTS.affinity.app_cookie, name: 'sid', fallback: 'random' },
}
const HEADER: Partial<Config['affinity']> = {
  key: 'header',
  header: { ...DEFAULTS.affinity.header, name: 'X-Tenant' },
}

/** The upstream a key's hash picks among app-0..2, all healthy (what an unshared replica does). */
const placement = buildPlacement(IDS.map((id) => ({ id, weight: 1 })))
const byHash = (key: string, exclude?: string): string =>
  placement.ids[placement.pick(hashKey(key), exclude === undefined ? undefined : (i) => placement.ids[i] !== exclude)]!

async function ask(url: string, agent: http.Agent, jar: CookieJar | null, headers: http.OutgoingHttpHeaders = {}): Promise<CounterAnswer> {
  const r = await get(url, agent, headers, jar ?? undefined)
  if (r.status !== 200) throw new Error(`${url}: status ${r.status}: ${r.body.trim()}`)
  return JSON.parse(r.body) as CounterAnswer
}


t.test('app_cookie: a session learned by replica #1 is followed by #2 and #3', async (t) => {
  const USERS = 30
  const apps = await counters(t, true)
  const [t1, t2, t3] = await Promise.all([0, 1, 2].map(() => replica(t, apps, 'sa-a:', APP_COOKIE)))
  const agent = agentFor(t)
  const jars = Array.from({ length: USERS }, () => new CookieJar())
  const creators: string[] = []
  const sids: string[] = []
  for (const jar of jars) {
    const a = await ask(t1!.url, agent, jar)
    t.ok(a.sid && jar.cookies.get('sid') === a.sid, 'the app set its session cookie')
    creators.push(a.id)
    sids.push(a.sid!)
  }
  const spread = tally(creators)
  t.equal(spread.size, 3, `first requests spread over every replica (fallback random): ${JSON.stringify([...spread])}`)
  const hashElsewhere = sids.filter((sid, i) => byHash(sid) !== creators[i]).length
  t.ok(hashElsewhere > 0, `without sharing, ${hashElsewhere}/${USERS} sessions would be placed by hash on another upstream`)
  t.equal((await redisCli(redis.port, '--scan', '--pattern', 'sa-a:af:*')).trim().split('\n').filter(Boolean).length, USERS, 'one shared binding per session')

  const wrong: string[] = []
  for (let r = 0; r < 6; r++) {
    await Promise.all(jars.map(async (jar, i) => {
      const a = await ask((r % 2 === 0 ? t2 : t3)!.url, agent, jar)
      if (a.id !== creators[i] || a.n !== r + 2) wrong.push(`user ${i} request ${r + 2} via #${2 + (r % 2)}: ${a.id} n=${a.n}, created on ${creators[i]}`)
    }))
  }
  t.same(wrong, [], 'every later request via #2 and #3 reached the upstream that created the session, counting on')
  t.equal(t2!.sessions.table.size, USERS, '#2 adopted every binding')
  t.equal(t3!.sessions.table.size, USERS, '#3 adopted every binding')
  t.comment(`${USERS} sessions created via #1 ${JSON.stringify(Object.fromEntries(spread))}; ${hashElsewhere} would differ by hash; 6 x ${USERS} requests via #2/#3 all on the creator`)

  // control: a replica without sharing places those sessions by their hash, on another upstream
  const lonely = await startTether(testConfig(apps, { affinity: APP_COOKIE }), { logger: createLogger('silent') })
  t.teardown(() => lonely.close(0))
  const elsewhere = sids.map((s, i) => i).filter((i) => byHash(sids[i]!) !== creators[i])
  for (const i of elsewhere.slice(0, 5)) {
    const a = await ask(lonely.url, agent, null, { cookie: `sid=${sids[i]}` })
    t.equal(a.id, byHash(sids[i]!), `an unshared replica sends session ${i} to its hash (${a.id}), not to ${creators[i]}`)
  }
})

t.test('header key: a failover made by #1 is followed by #2, also after the dead upstream returns', async (t) => {
  const TENANTS = 30
  const apps = await counters(t)
  const [t1, t2] = await Promise.all([0, 1].map(() => replica(t, apps, 'sa-b:', HEADER)))
  const agent = agentFor(t)
  const tenants = Array.from({ length: TENANTS }, (_, i) => `tenant-${i}`)
  const via = (tt: Tether, tenant: string): Promise<CounterAnswer> => ask(tt.url, agent, null, { 'x-tenant': tenant })
  // every tenant's history is seen only by #1 before the failure
  for (const tenant of tenants) {
    const a = await via(t1!, tenant)
    t.equal(a.id, byHash(tenant), `${tenant} placed by hash`)
  }
  const victimId = [...tally(tenants.map((x) => byHash(x)))].sort((a, b) => b[1] - a[1])[0]![0]
  const victims = tenants.filter((x) => byHash(x) === victimId)
  const victim = apps.find((a) => a.id === victimId)!
  await victim.kill('SIGKILL')

  // #1 notices (refused connection) and moves them to their next upstream in hash order, epoch 1
  const newHome = new Map<string, string>()
  for (const tenant of victims) {
    const a = await via(t1!, tenant)
    t.not(a.id, victimId, `${tenant} moved off ${victimId} by #1`)
    t.equal(a.epoch, '1')
    t.match(a.moved, new RegExp(`^from=${victimId}; reason=dead; epoch=1$`))
    t.equal(a.n, 2, 'rehydrated: the count continues')
    newHome.set(tenant, a.id)
  }
  for (const tenant of victims) {
    t.equal((await redisCli(redis.port, 'GET', `sa-b:af:{${tenant}}`)).trim(), `1 ${newHome.get(tenant)}`, `Redis holds ${tenant}'s move`)
  }

  // #2 never saw the failure (no active checks, no traffic to the victim): it follows Redis
  for (const tenant of victims) {
    const a = await via(t2!, tenant)
    t.equal(a.id, newHome.get(tenant), `#2 sends ${tenant} to its new upstream`)
    t.equal(a.epoch, '1', 'with the shared epoch')
    t.equal(a.moved, null, '#2 does not move it again')
    t.equal(a.n, 3, 'the count continues on the new upstream')
  }
  t.equal(t2!.health.state(victimId), 'healthy', '#2 never tried the dead upstream')

  // the dead upstream returns on its port: both replicas keep the moved tenants where they are
  const back = await startCounter(victimId, { port: victim.port })
  t.teardown(() => back.kill())
  await healthState(t1!.health, victimId, 'healthy', 5_000) // #1 ends the ejection
  const fresh = Array.from({ length: 200 }, (_, i) => `fresh-${i}`).find((x) => byHash(x) === victimId)!
  t.equal((await via(t1!, fresh)).id, victimId, 'the returned upstream takes new tenants again (via #1)')
  t.equal((await via(t2!, fresh)).id, victimId, '(and via #2)')
  const flaps: string[] = []
  for (let r = 0; r < 4; r++) {
    for (const tenant of victims) {
      const a = await via(r % 2 === 0 ? t1! : t2!, tenant)
      if (a.id !== newHome.get(tenant) || a.epoch !== '1') flaps.push(`${tenant} via #${1 + (r % 2)}: ${a.id} epoch ${a.epoch}`)
    }
  }
  t.same(flaps, [], 'no flapping: moved tenants stay on their new upstream on both replicas')

  // a replica started now (never saw anything) also follows Redis, not the hash
  const t3 = await replica(t, apps, 'sa-b:', HEADER)
  for (const tenant of victims) {
    const a = await via(t3, tenant)
    t.equal(a.id, newHome.get(tenant), `a new replica sends ${tenant} to ${newHome.get(tenant)}, not back to ${victimId}`)
  }
  t.comment(`killed ${victimId}: ${victims.length}/${TENANTS} tenants moved by #1 and followed by #2 and a new #3`)
})

// A replica that already holds a key reconciles it with Redis once per sync period
// (min(idle_timeout / 10, 5 s) of use): another replica's move (a higher epoch) wins, and its
// own republishing never lowers the epoch in Redis.
t.test('header key: a replica that already holds a tenant and a move made by another one', async (t) => {
  const TENANTS = 30
  const apps = await counters(t)
  const clock2 = new FakeClock(Date.now()) // #2's time, driven by hand to reach its renewal point
  const t1 = await replica(t, apps, 'sa-b2:', HEADER)
  const t2 = await replica(t, apps, 'sa-b2:', HEADER, {}, clock2)
  const agent = agentFor(t)
  const tenants = Array.from({ length: TENANTS }, (_, i) => `tenant-${i}`)
  const via = (tt: Tether, tenant: string): Promise<CounterAnswer> => ask(tt.url, agent, null, { 'x-tenant': tenant })
  for (const tenant of tenants) {
    await via(t1, tenant)
    await via(t2, tenant) // #2 now holds a local entry for every tenant
  }
  const victimId = [...tally(tenants.map((x) => byHash(x)))].sort((a, b) => b[1] - a[1])[0]![0]
  const victims = tenants.filter((x) => byHash(x) === victimId)
  const victim = apps.find((a) => a.id === victimId)!
  await victim.kill('SIGKILL')
  const newHome = new Map<string, string>()
  for (const tenant of victims) newHome.set(tenant, (await via(t1, tenant)).id)
  // the upstream returns before #2 sees these tenants again (#2 never saw it die)
  const back = await startCounter(victimId, { port: victim.port })
  t.teardown(() => back.kill())
  await healthState(t1.health, victimId, 'healthy', 5_000) // #1 ends the ejection
  clock2.advance(5_001) // #2's next use of these keys falls in a new sync period
  const split: string[] = []
  for (const tenant of victims) {
    const a = await via(t2, tenant)
    if (a.id !== newHome.get(tenant)) split.push(`${tenant}: #1 -> ${newHome.get(tenant)}, #2 -> ${a.id} (epoch ${a.epoch})`)
  }
  t.same(split, [], 'both replicas send each moved tenant to one upstream')
  t.comment(`${split.length}/${victims.length} moved tenants split between #1 and #2`)

  // #2 renews its bindings every idle_timeout / 10 of use: its renewal must not undo the move
  clock2.advance(DEFAULTS.affinity.idle_timeout / 10 + 1_000)
  for (const tenant of victims) await via(t2, tenant)
  const clobbered: string[] = []
  for (const tenant of victims) {
    // polled: Redis announces no written key
    await waitFor(async () => (await redisCli(redis.port, 'GET', `sa-b2:af:{${tenant}}`)).trim() !== '', 2_000, 'the binding')
    const stored = (await redisCli(redis.port, 'GET', `sa-b2:af:{${tenant}}`)).trim()
    if (stored !== `1 ${newHome.get(tenant)}`) clobbered.push(`${tenant}: Redis holds "${stored}", #1 moved it to "1 ${newHome.get(tenant)}"`)
  }
  t.same(clobbered, [], "a renewal never replaces a newer epoch's binding in Redis")
  const t3 = await replica(t, apps, 'sa-b2:', HEADER)
  const misled: string[] = []
  for (const tenant of victims) {
    const a = await via(t3, tenant)
    if (a.id !== newHome.get(tenant)) misled.push(`${tenant}: new replica -> ${a.id}, #1 -> ${newHome.get(tenant)}`)
  }
  t.same(misled, [], 'a replica started later follows the move')
  t.comment(`after #2's renewal: ${clobbered.length}/${victims.length} shared bindings reverted, a new replica follows #1 for ${victims.length - misled.length}/${victims.length}`)
})

t.test('two replicas that moved a user at once, each at the same epoch, agree on the smaller upstream id: in Redis and in each table', async (t) => {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'sa-tie:', timeout: 1_000 })
  const bindings = new RedisBindings(conn, 60_000) // its script is defined before the connection starts
  await conn.start()
  t.teardown(() => conn.stop())
  t.ok(await bindings.set('u', 'app-2', 1), "#2's move (to app-2, epoch 1)")
  t.ok(await bindings.set('u', 'app-1', 1), "#1's move at the same epoch to a smaller id replaces it")
  t.notOk(await bindings.set('u', 'app-2', 1), "#2 publishing its own again is refused (it split the user for good)")
  t.ok(await bindings.set('u', 'app-1', 1), 'the kept one renews')
  t.match(await bindings.lookup('u'), { upstream: 'app-1', epoch: 1 })
  t.ok(await bindings.set('u', 'app-2', 2), 'a later epoch wins whatever the id')
  t.ok(await bindings.set('w', 'app-10', 0))
  t.notOk(await bindings.set('w', 'app-9', 0), 'ids compare by their bytes, as JavaScript compares them ("app-10" < "app-9")')
  // each replica's table follows the same rule when it syncs
  const now = Date.now()
  const sessions = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null })
  sessions.pin('a', 'app-2', 1, now)
  sessions.sync('a', { upstream: 'app-1', epoch: 1 }, now)
  t.equal(sessions.peek('a', now)?.upstream, 'app-1', 'the larger id yields to the shared smaller one')
  sessions.pin('b', 'app-1', 1, now)
  sessions.sync('b', { upstream: 'app-2', epoch: 1 }, now)
  t.equal(sessions.peek('b', now)?.upstream, 'app-1', 'the smaller one stays')
})

t.test('restart: a fresh replica on the same Redis keeps learned sessions where they are', async (t) => {
  const USERS = 20
  const apps = await counters(t, true)
  const t1 = await replica(t, apps, 'sa-c:', APP_COOKIE)
  const agent = agentFor(t)
  const jars = Array.from({ length: USERS }, () => new CookieJar())
  const creators: string[] = []
  for (const jar of jars) {
    creators.push((await ask(t1.url, agent, jar)).id)
    await ask(t1.url, agent, jar)
  }
  const hashElsewhere = jars.filter((j, i) => byHash(j.cookies.get('sid')!) !== creators[i]).length
  t.ok(hashElsewhere > 0, `${hashElsewhere}/${USERS} sessions sit where their hash would not put them`)
  await t1.close(0)

  const again = await replica(t, apps, 'sa-c:', APP_COOKIE)
  t.equal(again.sessions.table.size, 0, 'the new replica starts with an empty table')
  const wrong: string[] = []
  for (const [i, jar] of jars.entries()) {
    for (let r = 0; r < 2; r++) {
      const a = await ask(again.url, agent, jar)
      if (a.id !== creators[i] || a.n !== 3 + r || a.rehydrated) wrong.push(`user ${i}: ${a.id} n=${a.n}, created on ${creators[i]}`)
    }
  }
  t.same(wrong, [], 'after the restart every session returns to the upstream that created it (bindings from Redis)')
  t.comment(`${USERS} sessions kept across a Tether restart; ${hashElsewhere} of them differ from their hash`)
})

// A binding in steady use is republished (TTL renewed) once per sync period of use, so it
// never expires in Redis while the user is active. The users keep using their sessions until
// every check is done: the checks (a redis-cli, another replica's lookups) take what a loaded
// host makes them take, and a pause in use longer than what is left of a binding's TTL would let
// it expire rightly (an idle user), which is not what this test is about.
t.test('a shared binding in continuous use stays in Redis beyond idle_timeout', async (t) => {
  const USERS = 10
  const IDLE = 2_000
  const apps = await counters(t, true)
  // both replicas first: starting one is no pause in the users' use of their sessions
  const [t1, t2] = await Promise.all([0, 1].map(() => replica(t, apps, 'sa-e:', { ...APP_COOKIE, idle_timeout: IDLE })))
  const agent = agentFor(t)
  const jars = Array.from({ length: USERS }, () => new CookieJar())
  const creators: string[] = []
  for (const jar of jars) creators.push((await ask(t1!.url, agent, jar)).id)
  const keys = async (): Promise<number> => (await redisCli(redis.port, '--scan', '--pattern', 'sa-e:af:*')).trim().split('\n').filter(Boolean).length
  const created = performance.now() // every binding was written by now, with a TTL of IDLE
  t.equal(await keys(), USERS, 'one shared binding per session')
  // every user keeps using their session (a round of requests via #1 as soon as the last one
  // answered) from now until the checks below are done, which start once IDLE * 1.4 has passed
  // since the bindings were written (their first TTL long over)
  const until = created + IDLE * 1.4
  let using = true
  let rounds = 0
  let strayed = 0
  let longestPause = 0 // ms between two rounds' starts: a binding idles at most about that long
  let passed: () => void = () => undefined
  const pastIdle = new Promise<void>((resolve) => { passed = resolve })
  const use = (async () => {
    let last = performance.now()
    while (using) {
      const answers = await Promise.all(jars.map((jar) => ask(t1!.url, agent, jar)))
      strayed += answers.filter((a, i) => a.id !== creators[i]).length
      rounds++
      const now = performance.now()
      longestPause = Math.max(longestPause, now - last)
      last = now
      if (now >= until) passed()
    }
  })()
  t.teardown(() => { using = false })
  await within(Promise.race([pastIdle, use]), IDLE * 1.4 + 60_000, 'IDLE * 1.4 of continuous use')
  const left = await keys()
  const lost: string[] = []
  for (const [i, jar] of jars.entries()) {
    const a = await ask(t2!.url, agent, jar)
    if (a.id !== creators[i]) lost.push(`user ${i}: #2 -> ${a.id}, created on ${creators[i]}`)
  }
  const checked = performance.now()
  using = false
  await use
  t.ok(checked - created > IDLE, 'checked later than idle_timeout after the bindings were written')
  t.equal(strayed, 0, 'sessions stay on their creator via #1 (its local table)')
  t.equal(left, USERS, `the bindings of sessions in use are still in Redis (longest pause between two uses ${longestPause.toFixed(0)} ms)`)
  t.same(lost, [], 'another replica finds every session in use')
  t.comment(`${rounds} rounds of ${USERS} requests over ${((checked - created) / 1000).toFixed(1)} s (idle_timeout ${IDLE} ms, longest pause ${longestPause.toFixed(0)} ms): ${left}/${USERS} bindings left in Redis, ${lost.length} sessions misrouted by another replica`)
})

t.test('Redis stalled or down: shared lookups give up, requests are placed by hash and succeed', async (t) => {
  const apps = await counters(t)
  const TIMEOUT = 100
  const [t1, t2] = await Promise.all([0, 1].map(() => replica(t, apps, 'sa-d:', HEADER, { state: { timeout: TIMEOUT } })))
  const agent = agentFor(t)
  const pid = Number(/process_id:(\d+)/.exec(await redisCli(redis.port, 'INFO', 'server'))![1])
  let stopped = false
  t.teardown(async () => {
    if (stopped) process.kill(pid, 'SIGCONT')
    if (!redis.running) await redis.restart()
  })
  /** Requests for new tenants alternately via #1 and #2, each bounded by a client deadline. */
  const burst = async (label: string, n: number): Promise<{ failed: string[]; offHash: string[]; maxMs: number }> => {
    const failed: string[] = []
    const offHash: string[] = []
    let maxMs = 0
    await Promise.all(Array.from({ length: n }, async (_, i) => {
      const tenant = `${label}-${i}`
      const t0 = performance.now()
      try {
        const a = await within(ask((i % 2 === 0 ? t1 : t2)!.url, agent, null, { 'x-tenant': tenant }), 5_000, 'an answer')
        if (a.id !== byHash(tenant)) offHash.push(`${tenant}: ${a.id}`)
      } catch (err) {
        failed.push(`${tenant}: ${(err as Error).message}`)
      }
      maxMs = Math.max(maxMs, performance.now() - t0)
    }))
    return { failed, offHash, maxMs }
  }

  // stalled: connected, but Redis does not answer (SIGSTOP): every lookup waits state.timeout
  process.kill(pid, 'SIGSTOP')
  stopped = true
  const stalled = await burst('stalled', 20)
  process.kill(pid, 'SIGCONT')
  stopped = false
  t.same(stalled.failed, [], 'Redis stalled: every request succeeds')
  t.same(stalled.offHash, [], 'placed by hash')
  t.comment(`Redis stalled: slowest of 20 requests ${stalled.maxMs.toFixed(0)} ms (state.timeout ${TIMEOUT} ms)`)

  // down: SIGKILL; calls fail at once
  await redis.kill()
  // polled: the store's status change has no event outside Tether
  await waitFor(async () => (await get(`${t1!.adminUrl}/readyz`, agent)).body.includes('unreachable'), 5_000, '#1 to notice')
  const down = await burst('down', 40)
  t.same(down.failed, [], 'Redis down: every request succeeds')
  t.same(down.offHash, [], 'placed by hash, as without sharing')
  t.ok(down.maxMs < 5_000, 'nothing hangs')
  t.comment(`Redis down: slowest of 40 requests ${down.maxMs.toFixed(0)} ms (state.timeout ${TIMEOUT} ms)`)
  await redis.restart()
})
