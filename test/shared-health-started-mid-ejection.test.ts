// health.shared: redis — a replica that starts while an upstream is ejected on another one
// applies that ejection before its proxy port listens, for what is left of it, so a user whose
// requests land on either replica is placed alike (the ejection is recorded in Redis, not only
// told on pub/sub, which a replica started later never hears). Two in-process Tethers on one
// fake clock (the same wall time, as NTP keeps it), a real redis-server, real upstreams.
import t from 'tap'
import { RedisConnection } from '../src/redis/connection.js'
import { RedisPeerChannel } from '../src/redis/peer-channel.js'
import { FakeClock } from './fixtures/clock.js'
import { startRedis } from './fixtures/redis-server.js'
import { proxyFor, request, startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

const BASE = 30_000
const USERS = 30

t.test('a replica started while app-1 is ejected on another routes no new user there until that ejection ends, then places every user as the other does', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  let failing = true
  const apps = await Promise.all(['app-0', 'app-1', 'app-2'].map((id) => startUpstream(id, (_req, res) => {
    if (id === 'app-1' && failing) {
      res.statusCode = 503
      return void res.end('unavailable\n')
    }
    res.end(`${id}\n`)
  })))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  // what the replicas tell each other, read raw from the channel
  const listener = new RedisConnection({ url: redis.url, keyPrefix: 'tether:', timeout: 2_000, connectTimeout: 1_000, maxReconnectDelay: 100 })
  await listener.start()
  t.teardown(() => listener.stop())
  const heard: Record<string, unknown>[] = []
  await new RedisPeerChannel(listener).subscribe((m) => heard.push(JSON.parse(m) as Record<string, unknown>))

  const clock = new FakeClock(Date.now())
  const over = {
    affinity: { key: 'header', header: { name: 'X-Tenant' } },
    state: { store: 'redis', redis: { url: redis.url } },
    health: { shared: 'redis', passive: { consecutive_failures: 1, base_ejection: BASE, max_ejection: 300_000, max_ejection_percent: 50 } },
  } as const
  const a = await proxyFor(t, apps, over, clock)
  const ask = async (url: string, user: string): Promise<string> => {
    const r = await request(url, { headers: { 'x-tenant': user } })
    return r.status === 200 ? r.body.trim() : `status ${r.status}`
  }
  // A's traffic finds app-1 answering 503: ejected there for 30 s (a user whose first choice it is)
  for (let i = 0; a.health.state('app-1') !== 'ejected'; i++) {
    if (i === 200) throw new Error('app-1 was not ejected on A after 200 users')
    await ask(a.url, `first-${i}`)
  }
  await waitFor(() => heard.some((m) => m.kind === 'down' && m.id === 'app-1'), 10_000, "A's down of app-1 on the channel")
  // app-1 answers again (a restarted process): A's ejection runs its time all the same
  failing = false
  const end = a.health.ejection('app-1')!.until
  t.equal(end - clock.now(), BASE, 'ejected on A for 30 s')

  // B starts now: it heard nothing of that ejection
  const b = await proxyFor(t, apps, over, clock)
  t.equal(b.health.state('app-1'), 'ejected', 'B starts with app-1 ejected')
  t.equal(b.health.ejection('app-1')?.until, end, 'until the moment A ends it')
  const during: string[] = []
  for (let i = 0; i < USERS; i++) during.push(await ask(b.url, `new-${i}`))
  t.same(during.filter((u) => u === 'app-1'), [], `no new user on app-1 through B while A's ejection runs (${USERS} users)`)
  t.same(during.filter((u) => !u.startsWith('app-')), [], 'every one answered')
  const onA: string[] = []
  for (let i = 0; i < USERS; i++) onA.push(await ask(a.url, `new-${i}`))
  t.same(during, onA, 'each placed by B where A places it')

  // A's ejection ends: both take new users on app-1 again, each placed alike
  clock.advance(end - clock.now())
  t.same([a.health.state('app-1'), b.health.state('app-1')], ['healthy', 'healthy'], 'in again on both at its end')
  const after: string[][] = [[], []]
  for (let i = 0; i < USERS; i++) for (const [n, r] of [a, b].entries()) after[n]!.push(await ask(r.url, `later-${i}`))
  t.ok(after[1]!.includes('app-1'), `B places new users on app-1 again (${after[1]!.filter((u) => u === 'app-1').length} of ${USERS})`)
  t.same(after[1], after[0], 'each placed by B where A places it')
})
