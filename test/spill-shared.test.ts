// Spill with two Tether replicas and `affinity.shared: redis` (a real redis-server, real
// child-process app replicas): replica #1 sees app-0 overloaded (slow, with many requests in
// flight through it) and spills a returning user; replica #2, which sees no load at all, then
// routes that user to the same new upstream, with the state they had: for a table key through
// the shared binding (a higher epoch wins: a tenant header, an application cookie), for Tether's
// cookie through the re-issued cookie.
import t, { type Test } from 'tap'
import type http from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'
import { startRedis, redisCli, type RedisServer } from './fixtures/redis-server.js'
import { request, testConfig } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { FakeClock } from './fixtures/clock.js'
import { CookieJar, agentFor, decodeTetherCookie, get } from './fixtures/users.js'
import { slowDown, startCounter, type Counter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { startAll } from './fixtures/children.js'

const IDS = ['app-0', 'app-1', 'app-2'] as const
const SPILL = { factor: 1.5, min_idle: 30_000, max_moves_per_second: 10 }
const LOADERS = 8

let redis: RedisServer
t.before(async () => { redis = await startRedis() })
t.teardown(async () => { await redis.stop() })

const placement = buildPlacement(IDS.map((id) => ({ id, weight: 1 })))
/** The first upstream in `key`'s hash order, other than `exclude`. */
const byHash = (key: string, exclude?: string): string =>
  placement.ids[placement.pick(hashKey(key), exclude === undefined ? undefined : (i) => placement.ids[i] !== exclude)]!

/** One Tether replica with the Redis store and shared affinity under `prefix`, on `clock`. */
async function replica(t: Test, ups: readonly Counter[], prefix: string, affinity: Partial<Config['affinity']>, clock: FakeClock): Promise<Tether> {
  const cfg = testConfig(ups, {
    affinity: { ...affinity, spill: SPILL, shared: 'redis' },
    state: { store: 'redis', timeout: 500, redis: { url: redis.url, key_prefix: prefix } },
  })
  const tt = await startTether(cfg, { logger: createLogger('silent'), clock })
  t.teardown(() => tt.close(0))
  return tt
}

/** A user: a tenant name (header key) or a cookie jar (Tether's cookie; `user` names it for the counter app). */
interface User { readonly headers: http.OutgoingHttpHeaders; readonly jar: CookieJar | undefined }

async function ask(tt: Tether, agent: http.Agent, u: User): Promise<CounterAnswer> {
  const r = await get(tt.url, agent, u.headers, u.jar)
  if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body.trim()}`)
  return JSON.parse(r.body) as CounterAnswer
}

const KINDS = {
  header: {
    affinity: { key: 'header', header: { ...DEFAULTS.affinity.header, name: 'X-Tenant' } } as Partial<Config['affinity']>,
    /** Tenants whose hash places them on app-0. */
    users: (n: number): User[] => Array.from({ length: 400 }, (_, i) => `tenant-${i}`).filter((k) => byHash(k) === 'app-0').slice(0, n)
      .map((k) => ({ headers: { 'x-tenant': k }, jar: undefined })),
  },
  cookie: {
    affinity: { key: 'cookie', cookie: { ...DEFAULTS.affinity.cookie, secure: false, secret: ['spill-shared-test-secret-0123456789'] } } as Partial<Config['affinity']>,
    /** Browsers (not placed yet: their first request places them). */
    users: (n: number): User[] => Array.from({ length: n }, (_, i) => {
      const jar = new CookieJar()
      jar.cookies.set('user', `browser-${i}`)
      return { headers: {}, jar }
    }),
  },
  client_ip: {
    affinity: { key: 'client_ip', client_ip: { trusted_proxies: ['127.0.0.1/32'] } } as Partial<Config['affinity']>,
    /** Clients (behind a trusted proxy: X-Forwarded-For) whose IP's hash places them on app-0. */
    users: (n: number): User[] => Array.from({ length: 400 }, (_, i) => `198.51.100.${i % 250}`).filter((ip, i, all) => all.indexOf(ip) === i && byHash(ip) === 'app-0').slice(0, n)
      .map((ip) => ({ headers: { 'x-forwarded-for': ip }, jar: new CookieJar() })),
  },
  app_cookie: {
    affinity: { key: 'app_cookie', app_cookie: { ...DEFAULTS.affinity.app_cookie, name: 'sid', fallback: 'random' } } as Partial<Config['affinity']>,
    /** Browsers without the app's `sid` yet: their first answer sets it, and Tether learns where it lives. */
    users: (n: number): User[] => KINDS.cookie.users(n),
  },
} as const

/** The key Tether routes `u` by (Redis binding, session lookup). */
function keyOf(kind: keyof typeof KINDS, u: User): string {
  switch (kind) {
    case 'header': return u.headers['x-tenant'] as string
    case 'client_ip': return u.headers['x-forwarded-for'] as string
    case 'cookie': return decodeTetherCookie(u.jar!.cookies.get('tether')!).sessionId
    case 'app_cookie': return u.jar!.cookies.get('sid')!
  }
}

for (const kind of ['header', 'client_ip', 'cookie', 'app_cookie'] as const) {
  t.test(`${kind}: a user spilled by the replica that sees app-0 overloaded is routed the same way by the other replica, with their state`, async (t) => {
    const apps = await startAll(IDS.map((id) => startCounter(id, { sid: kind === 'app_cookie' })))
    t.teardown(() => Promise.all(apps.map((c) => c.kill())))
    const clock = new FakeClock()
    const prefix = `spill-${kind}:`
    const [t1, t2] = await Promise.all([replica(t, apps, prefix, KINDS[kind].affinity, clock), replica(t, apps, prefix, KINDS[kind].affinity, clock)])
    const agent = agentFor(t, 2 * LOADERS)

    // users of app-0 (cookie users are placed by their first request, through #1 and then #2)
    let onApp0: User[] = []
    if (kind === 'header' || kind === 'client_ip') onApp0 = KINDS[kind].users(LOADERS + 1)
    else {
      for (const u of KINDS[kind].users(60)) if ((await ask(t1, agent, u)).id === 'app-0' && onApp0.length <= LOADERS) onApp0.push(u)
    }
    t.equal(onApp0.length, LOADERS + 1, `${LOADERS + 1} users on app-0`)
    const [probe, ...loaders] = onApp0 as [User, ...User[]]
    const first = await ask(t1, agent, probe)
    const second = await ask(t2, agent, probe)
    t.same([first.id, second.id], ['app-0', 'app-0'], 'the probe user is on app-0 through both replicas')

    // the probe user comes back after min_idle while app-0, now slow, holds many requests through #1
    await slowDown(apps[0]!, 200)
    clock.advance(SPILL.min_idle)
    let stop = false
    const load = Promise.all(loaders.map(async (u) => {
      for (let n = 0; n < 100 && !stop; n++) await ask(t1, agent, u)
    }))
    await waitFor(() => t1.inFlight.loadOf('app-0') > 3, 10_000, 'app-0 loaded through replica #1')
    const spilled = await ask(t1, agent, probe)
    stop = true
    await load
    t.match(spilled.moved, /^from=app-0; reason=spill; epoch=1$/, `#1 spilled the probe user: ${spilled.moved}`)
    t.not(spilled.id, 'app-0', 'away from app-0')
    if (kind === 'header' || kind === 'client_ip') t.equal(spilled.id, byHash(keyOf(kind, probe), 'app-0'), 'to the next upstream in its hash order')
    t.same([spilled.rehydrated, spilled.n], [true, second.n + 1], 'with its state')
    t.ok(t2.inFlight.loadOf('app-0') < 1, `replica #2 saw no overload on app-0 (${t2.inFlight.loadOf('app-0').toFixed(2)} in flight on average)`)

    // the rest of the visit goes through replica #2: same upstream, no further move, state kept
    clock.advance(1_000)
    const after = await ask(t2, agent, probe)
    t.same([after.id, after.moved, after.n], [spilled.id, null, spilled.n + 1], `#2 routes the user to ${spilled.id} too`)
    if (kind !== 'cookie') {
      const binding = (await redisCli(redis.port, 'GET', `${prefix}af:{${keyOf(kind, probe)}}`)).trim()
      t.equal(binding, `1 ${spilled.id}`, 'the shared binding holds the move (epoch 1)')
    }
    clock.advance(SPILL.min_idle)
    t.equal((await ask(t1, agent, probe)).id, spilled.id, '#1 keeps the user there once app-0 is idle again')
    const lookup = await request(`${t1.adminUrl}/sessions/${encodeURIComponent(keyOf(kind, probe))}`)
    t.match(JSON.parse(lookup.body), { last_move: { from: 'app-0', to: spilled.id, reason: 'spill' } }, 'the session lookup shows the spill')
  })
}
