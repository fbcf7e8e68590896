// health.shared: redis — replicas agree on how long an upstream stays ejected. Each replica
// counts ejections of its own (the n-th lasts n x base_ejection): a replica started later, or
// one that did not hear every `down`, has a lower count than the others. Two in-process
// replicas (health table, SharedHealth, a RedisPeerChannel each) on a real redis-server, on one
// fake clock (the same wall time, as NTP keeps it), so the ends compare exactly.
import t, { type Test } from 'tap'
import { HealthTable } from '../src/health/health-table.js'
import { SharedHealth } from '../src/health/shared-health.js'
import { createLogger } from '../src/observability/logger.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'
import { RedisConnection } from '../src/redis/connection.js'
import { RedisPeerChannel } from '../src/redis/peer-channel.js'
import { FakeClock } from './fixtures/clock.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'
import { waitFor } from './fixtures/wait.js'

const IDS = ['a', 'b', 'c', 'd', 'e']
const BASE = 30_000

interface Replica { readonly health: HealthTable; readonly shared: SharedHealth }

/** A replica sharing health through the Redis at `url` (keys under `len:`), on `clock`; started. */
async function replica(t: Test, url: string, clock: FakeClock, percent = 100): Promise<Replica> {
  const conn = new RedisConnection({ url, keyPrefix: 'len:', timeout: 2_000, connectTimeout: 1_000, maxReconnectDelay: 100 })
  await conn.start()
  t.teardown(() => conn.stop())
  // no active checks: every ejection here runs its time (5xx, one failure ejects)
  const health = new HealthTable({
    active: { enabled: false, healthy_threshold: 2, unhealthy_threshold: 2 },
    passive: { consecutive_failures: 1, count_5xx: true, base_ejection: BASE, max_ejection: 300_000, max_ejection_percent: percent },
    slow_start: 0,
  }, clock)
  health.setUpstreams(IDS)
  const shared = new SharedHealth(new RedisPeerChannel(conn), health, createLogger('silent'))
  await shared.start()
  return { health, shared }
}

/** Wait until `to` hears `from` (nothing announces a subscription): a drain of e made on `from` reaches it, then its undrain. */
async function hearing(from: Replica, to: Replica): Promise<void> {
  from.health.drain('e')
  from.shared.tell('drain', 'e')
  await waitFor(() => to.health.state('e') === 'draining', 10_000, 'the drain to be heard')
  from.health.undrain('e')
  from.shared.tell('undrain', 'e')
  await waitFor(() => to.health.state('e') === 'healthy', 10_000, 'the undrain to be heard')
}

/** Eject `id` on `r` (its traffic got a 5xx) and let the ejection run out. */
function ejectAndExpire(r: Replica, clock: FakeClock, id: string): void {
  r.health.reportPassive(id, 'server_error')
  const until = r.health.ejection(id)!.until
  clock.advance(until - clock.now())
  r.health.tick()
}

/** The placement of a new user (no binding: a client_ip key, a first request) on `r`: its first ready choice. */
function place(r: Replica, key: string): string {
  const table = buildPlacement(IDS.map((id) => ({ id, weight: 1 })))
  return table.ids[table.pick(hashKey(key), (i) => r.health.ready(table.ids[i]!))]!
}

/** A client_ip key whose first choice is `id`. */
function userOf(id: string): string {
  const table = buildPlacement(IDS.map((u) => ({ id: u, weight: 1 })))
  for (let i = 0; ; i++) if (table.ids[table.pick(hashKey(`10.0.0.${i}`))] === id) return `10.0.0.${i}`
}

t.test('a replica started after two ejections of c ejects it, on the third, until the same moment as the replica that found it down (not for its own 30 s)', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const clock = new FakeClock()
  const one = await replica(t, redis.url, clock)
  // #1 ejects c twice (30 s, then 60 s) before #2 starts
  ejectAndExpire(one, clock, 'c')
  ejectAndExpire(one, clock, 'c')
  const two = await replica(t, redis.url, clock)
  await hearing(one, two)
  one.health.reportPassive('c', 'server_error') // the third ejection: 90 s on #1
  t.equal(one.health.ejection('c')!.until - clock.now(), 3 * BASE, '#1: the third ejection, 90 s')
  await waitFor(() => two.health.state('c') === 'ejected', 10_000, '#2 to hear the down')
  t.equal(two.health.ejection('c')!.until, one.health.ejection('c')!.until, '#2 ejects c until the same moment')
  t.equal(two.health.snapshot().find((r) => r.id === 'c')!.timesEjected, 3, "and counts it as #1's third ejection (its next one lasts as long as #1's would)")
  // 31 s later a new user whose first choice is c is placed alike by both replicas
  clock.advance(BASE + 1_000)
  const user = userOf('c')
  t.same([one.health.state('c'), two.health.state('c')], ['ejected', 'ejected'], 'still out on both, 31 s later')
  t.equal(place(two, user), place(one, user), `a new user (${user}) is placed on the same upstream by either replica`)
  t.not(place(one, user), 'c')
  clock.advance(2 * BASE)
  t.same([one.health.state('c'), two.health.state('c')], ['healthy', 'healthy'], 'in again on both at the end')
})

t.test('a replica with a higher count than the sender ejects for the sender\'s time: both end together', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const clock = new FakeClock()
  const one = await replica(t, redis.url, clock)
  ejectAndExpire(one, clock, 'd')
  ejectAndExpire(one, clock, 'd')
  const two = await replica(t, redis.url, clock)
  await hearing(one, two)
  // #2's traffic finds d down first: its first ejection, 30 s (#1 would take 90 s for its third)
  two.health.reportPassive('d', 'server_error')
  await waitFor(() => one.health.state('d') === 'ejected', 10_000, '#1 to hear the down')
  t.equal(one.health.ejection('d')!.until, two.health.ejection('d')!.until, '#1 ejects d until the same moment as #2')
  clock.advance(BASE)
  t.same([one.health.state('d'), two.health.state('d')], ['healthy', 'healthy'], 'in again on both after 30 s')
  // #1's next ejection is told with its length and count: #2 takes both
  one.health.reportPassive('d', 'server_error')
  await waitFor(() => two.health.state('d') === 'ejected', 10_000, '#2 to hear the down')
  t.equal(two.health.ejection('d')!.until, one.health.ejection('d')!.until, 'the next one ends together too')
  const counts = [one, two].map((r) => r.health.snapshot().find((row) => row.id === 'd')!.timesEjected)
  t.ok(counts[0]! > 1, `#1 counted #2's ejection and this one (${counts[0]})`)
  t.equal(counts[1], counts[0], '#2 takes that count')
})

t.test('two replicas that eject c at once, each before hearing the other, end it together: at the later end', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const clock = new FakeClock()
  const one = await replica(t, redis.url, clock)
  ejectAndExpire(one, clock, 'c')
  ejectAndExpire(one, clock, 'c')
  const two = await replica(t, redis.url, clock)
  await hearing(one, two)
  // in one turn of the event loop: neither has heard the other's down yet
  two.health.reportPassive('c', 'server_error') // 30 s
  one.health.reportPassive('c', 'server_error') // 90 s
  const end = one.health.ejection('c')!.until
  t.equal(end - clock.now(), 3 * BASE)
  t.equal(two.health.ejection('c')!.until - clock.now(), BASE)
  await waitFor(() => two.health.ejection('c')!.until === end, 10_000, "#2 to take #1's later end")
  clock.advance(BASE + 1_000)
  t.same([one.health.state('c'), two.health.state('c')], ['ejected', 'ejected'], 'both still out after 31 s')
  t.equal(one.health.ejection('c')!.until, end, "#1 kept its own end (#2's is earlier)")
})

t.test('a down tells how long the ejection lasts and its count; one without them (an older Tether) or with values that are no length is timed by the receiver\'s own count; a told length is capped at max_ejection', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const clock = new FakeClock()
  // what #1 publishes, read raw from the channel
  const listener = new RedisConnection({ url: redis.url, keyPrefix: 'len:', timeout: 2_000, connectTimeout: 1_000, maxReconnectDelay: 100 })
  await listener.start()
  t.teardown(() => listener.stop())
  const heard: Record<string, unknown>[] = []
  await new RedisPeerChannel(listener).subscribe((m) => heard.push(JSON.parse(m) as Record<string, unknown>))
  const one = await replica(t, redis.url, clock)
  const two = await replica(t, redis.url, clock)
  await hearing(one, two)
  await waitFor(() => heard.some((m) => m.kind === 'undrain'), 10_000, 'the listener to hear #1')
  ejectAndExpire(one, clock, 'c')
  ejectAndExpire(one, clock, 'c')
  await waitFor(() => heard.filter((m) => m.kind === 'down').length === 2, 10_000, 'the two downs')
  t.match(heard.filter((m) => m.kind === 'down'), [{ id: 'c', reason: '5xx', ejectedFor: BASE, ejections: 1 }, { id: 'c', reason: '5xx', ejectedFor: 2 * BASE, ejections: 2 }], 'each down tells its length (ms from now) and count')
  // #2 heard both; #1's count is 2, decaying from the second's end. Downs from another sender:
  const told = async (fields: Record<string, unknown>, what: string): Promise<number> => {
    await redisCli(redis.port, 'PUBLISH', 'len:events', JSON.stringify({ from: 'other', kind: 'down', id: 'c', reason: '5xx', ...fields }))
    await waitFor(() => one.health.state('c') === 'ejected', 10_000, what)
    const ms = one.health.ejection('c')!.until - clock.now()
    clock.advance(ms)
    one.health.tick()
    return ms
  }
  t.equal(await told({}, 'an older Tether\'s down'), 3 * BASE, "an older Tether's down: timed by #1's own count (its third: 90 s), as before")
  for (const bad of [{ ejectedFor: 0, ejections: 1 }, { ejectedFor: 1.5, ejections: 1 }, { ejectedFor: '5000', ejections: 1 }, { ejectedFor: 5_000 }, { ejectedFor: 5_000, ejections: 0 }, { ejectedFor: -5_000, ejections: 2 }]) {
    const before = one.health.snapshot().find((r) => r.id === 'c')!.timesEjected
    t.equal(await told(bad, JSON.stringify(bad)), Math.min((before + 1) * BASE, 300_000), `${JSON.stringify(bad)}: no length, timed by #1's own count`)
  }
  t.equal(await told({ ejectedFor: 10_000, ejections: 1 }, 'a shorter told length'), 10_000, 'a told length is the ejection time, also shorter than the own count gives')
  t.equal(await told({ ejectedFor: 1e12, ejections: 1 }, 'a huge told length'), 300_000, 'capped at max_ejection')
  const count = one.health.snapshot().find((r) => r.id === 'c')!.timesEjected
  await redisCli(redis.port, 'PUBLISH', 'len:events', JSON.stringify({ from: 'other', kind: 'down', id: 'c', active: true, group: 'g', ejectedFor: 5_000, ejections: 1 }))
  await waitFor(() => one.health.state('c') === 'ejected', 10_000, 'an active down')
  t.equal(one.health.ejection('c')!.until - clock.now(), Math.min((count + 1) * BASE, 300_000), "an active verdict's down is timed by the own count (it tells no length: the sender has it unhealthy, not ejected)")
})

t.test('a replica at its max_ejection_percent refuses another replica\'s ejection but counts it: its next ejection lasts as long as the others\'', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const clock = new FakeClock()
  const one = await replica(t, redis.url, clock, 20) // one of five at most
  const two = await replica(t, redis.url, clock, 20)
  await hearing(one, two)
  one.health.reportPassive('c', 'server_error')
  await waitFor(() => two.health.state('c') === 'ejected', 10_000, "#2 to hear #1's first ejection")
  clock.advance(BASE)
  t.same([one.health.state('c'), two.health.state('c')], ['healthy', 'healthy'])
  // b is out on #2 alone (its own traffic, just before): #1's second ejection of c is refused there
  two.shared.quietly(() => two.health.reportPassive('b', 'server_error'))
  one.health.reportPassive('c', 'server_error')
  const end = one.health.ejection('c')!.until
  t.equal(end - clock.now(), 2 * BASE)
  await waitFor(() => two.health.snapshot().find((r) => r.id === 'c')!.timesEjected === 2, 10_000, "#2 to count #1's second ejection")
  t.same([two.health.state('b'), two.health.state('c')], ['ejected', 'healthy'], 'not ejected on #2 (b is out there: at its max_ejection_percent)')
  clock.advance(end - clock.now())
  for (const r of [one, two]) r.health.tick()
  // #2's traffic finds c down right after: its third ejection (90 s), as #1's would be
  two.health.reportPassive('c', 'server_error')
  t.equal(two.health.ejection('c')!.until - clock.now(), 3 * BASE, "#2's next ejection of c is the third, as on #1")
  await waitFor(() => one.health.state('c') === 'ejected', 10_000, '#1 to hear it')
  t.equal(one.health.ejection('c')!.until, two.health.ejection('c')!.until, 'both end it together')
})
