// health.shared: redis — Tether replicas tell each other, through Redis pub/sub, which
// upstreams are down and which are drained, so they fail over and drain together.
import t, { type Test } from 'tap'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startUpstream, testConfig, request, type Upstream } from './fixtures/upstream.js'
import { healthState, waitFor } from './fixtures/wait.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'
import { SharedHealth } from '../src/health/shared-health.js'
import { HealthTable } from '../src/health/health-table.js'
import type { PeerChannel } from '../src/peers/peer-channel.js'
import type { GroupRelay } from '../src/health/shared-health.js'
import { ReplayWindow, SENDERS_KEPT, SEQS_KEPT } from '../src/health/replay-window.js'
import { FakeClock } from './fixtures/clock.js'
import { LogCapture } from './fixtures/log-capture.js'
import { createHealth, type Health } from '../src/health/create-health.js'
import { systemTimers } from '../src/clock.js'
import type { Config } from '../src/config/schema.js'

/** A Tether replica with health shared through the Redis at `url`, keys under `prefix`. */
async function sharing(t: Test, apps: readonly Upstream[], url: string, prefix: string): Promise<Tether> {
  const tether = await startTether(testConfig(apps, {
    affinity: { key: 'header', header: { name: 'X-Tenant' } },
    health: { shared: 'redis' },
    state: { store: 'redis', redis: { url, key_prefix: prefix } },
  }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  return tether
}

t.test('a drain through one replica (migrating or not) and an upstream found down by one replica reach the others', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const apps: Upstream[] = await Promise.all(['a', 'b', 'c'].map((id) => startUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const replica = (): Promise<Tether> => sharing(t, apps, redis.url, 'sh:')
  const one = await replica()
  const two = await replica()
  // both subscribers are up once a published event reaches the other side: nothing announces a
  // subscription, so poll with drains
  await waitFor(async () => {
    await request(`${one.adminUrl}/upstreams/a/drain`, { method: 'POST' })
    return two.health.state('a') === 'draining'
  }, 10_000, 'the drain to reach the second replica')
  t.equal(two.health.state('a'), 'draining', 'a drain made through #1 applies on #2')
  await request(`${one.adminUrl}/upstreams/a/undrain`, { method: 'POST' })
  await healthState(two.health, 'a', 'healthy', 5_000)
  t.pass('and so does the undrain')
  t.equal(two.health.drainMigrates('a'), false, 'a plain drain does not migrate on #2')
  await request(`${one.adminUrl}/upstreams/b/drain?migrate=true`, { method: 'POST' })
  await healthState(two.health, 'b', 'draining', 5_000)
  t.equal(two.health.drainMigrates('b'), true, 'a drain that migrates migrates on #2 too')
  t.equal(two.health.drainingSince('b'), one.health.drainingSince('b'), 'from the moment it began on #1')
  await request(`${one.adminUrl}/upstreams/b/undrain`, { method: 'POST' })
  await healthState(two.health, 'b', 'healthy', 5_000)

  // #1 finds c down (a refused connection); #2 never sends it a request
  const c = apps.find((u) => u.id === 'c')!
  await c.close()
  for (let i = 0; i < 40 && one.health.ready('c'); i++) await request(one.url, { headers: { 'x-tenant': `t${i}` } })
  t.equal(one.health.state('c'), 'ejected', '#1 ejected c after a refused connection')
  await healthState(two.health, 'c', 'ejected', 5_000)
  t.pass('#2 ejected c without sending it a request')
  t.equal(two.health.state('a'), 'healthy', 'nothing else changed on #2')
})

t.test('a replica that starts later applies the drains made through another replica before it started', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const apps: Upstream[] = await Promise.all(['a', 'b'].map((id) => startUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const replica = (): Promise<Tether> => sharing(t, apps, redis.url, 'late:')
  const one = await replica()
  t.equal((await request(`${one.adminUrl}/upstreams/b/drain`, { method: 'POST' })).status, 200)
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', 'late:peers:drains', 'b')).trim() === '1', 5_000, 'the drain to be recorded')
  const late = await replica()
  t.equal(late.health.state('b'), 'draining', 'a replica started after the drain has b draining')
  t.equal(late.health.drainingSince('b'), one.health.drainingSince('b'), 'since the drain began on #1 (drain_timeout and min_idle count from then)')
  t.ok(late.health.drainKnownSince('b')! > one.health.drainingSince('b')!, 'learned of at its start')
  t.equal(late.health.state('a'), 'healthy', 'and nothing else')
  await request(`${one.adminUrl}/upstreams/b/undrain`, { method: 'POST' })
  await healthState(late.health, 'b', 'healthy', 5_000)
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', 'late:peers:drains', 'b')).trim() === '0', 5_000, 'the undrain to be recorded')
  const later = await replica()
  t.equal(later.health.state('b'), 'healthy', 'after the undrain, a new replica does not drain b')

  t.equal((await redisCli(redis.port, 'HEXISTS', 'late:peers:drain-starts', 'b')).trim(), '0', 'its start is cleared with it')

  // an older Tether's undrain (it clears the drain only): the start is cleared by those who hear it
  t.equal((await request(`${one.adminUrl}/upstreams/b/drain`, { method: 'POST' })).status, 200)
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', 'late:peers:drain-starts', 'b')).trim() === '1', 5_000, 'the start to be recorded')
  await redisCli(redis.port, 'HDEL', 'late:peers:drains', 'b')
  await redisCli(redis.port, 'PUBLISH', 'late:events', JSON.stringify({ from: 'older', kind: 'undrain', id: 'b' }))
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', 'late:peers:drain-starts', 'b')).trim() === '0', 5_000, 'the start to be cleared by the replicas that heard the undrain')
  t.equal(one.health.state('b'), 'healthy', 'undrained')

  // the values an older Tether reads are as they were: `migrate` or `stay`; the start apart
  t.equal((await request(`${one.adminUrl}/upstreams/a/drain?migrate=true`, { method: 'POST' })).status, 200)
  await waitFor(async () => (await redisCli(redis.port, 'HGET', 'late:peers:drain-starts', 'a')).trim() !== '', 5_000, 'the start to be recorded')
  t.equal((await redisCli(redis.port, 'HGET', 'late:peers:drains', 'a')).trim(), 'migrate', 'recorded as an older Tether reads it')
  t.equal(Number((await redisCli(redis.port, 'HGET', 'late:peers:drain-starts', 'a')).trim()), one.health.drainingSince('a'), 'with its start apart')
  // a plain drain asked of the migrating one: answered and recorded as it is (migrating), so
  // replicas that start later migrate too (b's drain, written after, tells a's write is done)
  const again = await request(`${one.adminUrl}/upstreams/a/drain`, { method: 'POST' })
  t.match(JSON.parse(again.body), { draining: true, migrate: true }, 'answered as it is')
  t.equal((await request(`${one.adminUrl}/upstreams/b/drain`, { method: 'POST' })).status, 200)
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', 'late:peers:drains', 'b')).trim() === '1', 5_000, "b's drain to be recorded")
  t.equal((await redisCli(redis.port, 'HGET', 'late:peers:drains', 'a')).trim(), 'migrate', 'still recorded as migrating')
  t.equal((await request(`${one.adminUrl}/upstreams/b/undrain`, { method: 'POST' })).status, 200)
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', 'late:peers:drains', 'b')).trim() === '0', 5_000, "b's undrain to be recorded")
  // a drain recorded by an older Tether (no start), or with a start that is no time: from the replica's start
  for (const start of [null, '0', '-5', '', '12abc']) {
    if (start === null) await redisCli(redis.port, 'HDEL', 'late:peers:drain-starts', 'a')
    else await redisCli(redis.port, 'HSET', 'late:peers:drain-starts', 'a', start)
    const before = Date.now()
    const latest = await replica()
    t.equal(latest.health.state('a'), 'draining', `a drain recorded with start ${JSON.stringify(start)} applies`)
    t.equal(latest.health.drainMigrates('a'), true, 'migrating')
    t.ok(latest.health.drainingSince('a')! >= before, 'since the replica started')
  }
})

/**
 * A persisted Redis (AOF: the record survives a restart, as a production Redis's does), two
 * apps and a replica sharing health under `prefix`; b drained through it and recorded; then
 * Redis SIGKILLed.
 */
async function drainedThenRedisKilled(t: Test, prefix: string): Promise<{ redis: Awaited<ReturnType<typeof startRedis>>; apps: Upstream[]; one: Tether }> {
  const redis = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  t.teardown(() => redis.stop())
  const apps: Upstream[] = await Promise.all(['a', 'b'].map((id) => startUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const one = await sharing(t, apps, redis.url, prefix)
  t.equal((await request(`${one.adminUrl}/upstreams/b/drain`, { method: 'POST' })).status, 200)
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', `${prefix}peers:drains`, 'b')).trim() === '1', 5_000, 'the drain to be recorded')
  await redis.kill()
  return { redis, apps, one }
}

t.test('a replica that starts while Redis is down applies the recorded drains once it is back (and after any reconnect)', async (t) => {
  const { redis, apps } = await drainedThenRedisKilled(t, 'down:')
  const late = await sharing(t, apps, redis.url, 'down:')
  t.equal(late.health.state('b'), 'healthy', 'Redis down at its start: it could not read the drain')
  await redis.restart()
  await healthState(late.health, 'b', 'draining', 10_000)
  t.pass('read once its subscription is in place')
})

t.test('a drain or undrain made while Redis is down is sent when it is back: an older record never undoes it', async (t) => {
  const { redis, apps, one } = await drainedThenRedisKilled(t, 'gone:')
  t.equal((await request(`${one.adminUrl}/upstreams/b/undrain`, { method: 'POST' })).status, 200, 'undrained while Redis is down')
  t.equal((await request(`${one.adminUrl}/upstreams/a/drain?migrate=true`, { method: 'POST' })).status, 200, 'a drained while Redis is down')
  await redis.restart()
  // the record is read before what was not sent is sent again: once b's record is gone, the read is past
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', 'gone:peers:drains', 'b')).trim() === '0', 10_000, 'the undrain to reach Redis')
  t.equal(one.health.state('b'), 'healthy', "the operator's undrain stays: the older record did not drain b again")
  await waitFor(async () => (await redisCli(redis.port, 'HGET', 'gone:peers:drains', 'a')).trim() === 'migrate', 10_000, 'the drain to reach Redis')
  const late = await sharing(t, apps, redis.url, 'gone:')
  t.equal(late.health.state('b'), 'healthy', 'a replica started since: b not drained')
  t.equal(late.health.state('a'), 'draining', 'a drained')
  t.equal(late.health.drainMigrates('a'), true, 'migrating')
})

t.test('an undrain that could not be sent yields to a drain recorded since by another replica, a drain to a later undrain', async (t) => {
  const clock = new FakeClock()
  const health = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { consecutive_failures: 3, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 50 }, slow_start: 0 }, clock)
  health.setUpstreams(['a', 'b', 'c'])
  let up = false
  let resubscribed: () => void = () => undefined
  const record = new Map([['drains', new Map<string, string>()], ['drain-starts', new Map<string, string>()], ['drain-changes', new Map<string, string>()]])
  const channel: PeerChannel = {
    publish: () => Promise.resolve(up),
    subscribe: (_fn, onSubscribed) => { resubscribed = onSubscribed ?? resubscribed; return Promise.resolve() },
    remember: (set, id, value) => {
      if (up) { if (value === null) record.get(set)!.delete(id); else record.get(set)!.set(id, value) }
      return Promise.resolve(up)
    },
    members: (set) => Promise.resolve(new Map(up ? record.get(set) : [])),
  }
  const shared = new SharedHealth(channel, health, createLogger('silent'))
  await shared.start()
  for (const id of ['a', 'b']) health.drain(id)
  record.get('drains')!.set('a', 'stay').set('b', 'stay')
  record.get('drain-starts')!.set('a', String(Date.now() - 60_000)).set('b', String(Date.now() - 60_000))
  for (const id of ['a', 'b']) { health.undrain(id); shared.tell('undrain', id) } // Redis down
  health.drain('c')
  shared.tell('drain', 'c')
  await new Promise((r) => setImmediate(r))
  record.get('drain-changes')!.set('c', String(Date.now() + 1_000)) // another replica undrained c since
  // another replica drained b again since, making it migrate: the start recorded is the first
  // drain's (older than the undrain); the change time says it is newer
  record.get('drains')!.set('b', 'migrate')
  record.get('drain-changes')!.set('b', String(Date.now() + 1_000))
  up = true
  resubscribed()
  await waitFor(() => !record.get('drains')!.has('a'), 5_000, "a's undrain to be sent again")
  t.equal(health.state('a'), 'healthy', 'an undrain newer than the record is sent, not undone')
  t.equal(health.state('b'), 'draining', 'a drain recorded after the undrain applies')
  t.equal(health.drainMigrates('b'), true)
  t.equal(record.get('drains')!.get('b'), 'migrate', 'and stays recorded')
  t.equal(health.state('c'), 'healthy', 'a drain that could not be sent yields to an undrain made since')
  t.notOk(record.get('drains')!.has('c'), 'and is not recorded')
})

t.test("two replicas cut off from Redis: the operator's last change wins whichever replica comes back first (a change sent again carries the time it was made)", async (t) => {
  const record = new Map([['drains', new Map<string, string>()], ['drain-starts', new Map<string, string>()], ['drain-changes', new Map<string, string>()]])
  let up = true
  const subs: { self: number; fn: (m: string) => void; again: () => void }[] = []
  const connected = new Set([1, 2])
  const replica = (self: number): { health: HealthTable; shared: SharedHealth } => {
    const health = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { consecutive_failures: 3, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 50 }, slow_start: 0 }, new FakeClock())
    health.setUpstreams(['a', 'b', 'c'])
    const channel: PeerChannel = {
      publish: (m) => { if (up) for (const s of subs) if (s.self !== self && connected.has(s.self)) s.fn(m); return Promise.resolve(up) },
      subscribe: (fn, again) => { subs.push({ self, fn, again: again ?? (() => undefined) }); return Promise.resolve() },
      remember: (set, id, value) => {
        if (up) { if (value === null) record.get(set)!.delete(id); else record.get(set)!.set(id, value) }
        return Promise.resolve(up)
      },
      members: (set) => Promise.resolve(new Map(up ? record.get(set) : [])),
    }
    return { health, shared: new SharedHealth(channel, health, createLogger('silent')) }
  }
  const [r1, r2] = [replica(1), replica(2)]
  await r1.shared.start()
  await r2.shared.start()
  up = false // Redis down for both
  r1.health.drain('a'); r1.shared.tell('drain', 'a', false, 1_000) // the operator drains a through #1
  r2.health.drain('a'); r2.shared.tell('drain', 'a', false, 2_000) // then through #2
  r2.health.undrain('a'); r2.shared.tell('undrain', 'a', false, 3_000) // and last undrains it through #2
  await new Promise((r) => setImmediate(r))
  up = true
  connected.clear()
  connected.add(1)
  subs.find((s) => s.self === 1)!.again() // #1's subscription is back first: its drain is sent again
  await waitFor(() => record.get('drains')!.has('a'), 5_000, "#1's drain sent again")
  t.equal(record.get('drain-changes')!.get('a'), '1000', 'recorded with the time it was made, not the time it was sent again')
  connected.add(2)
  subs.find((s) => s.self === 2)!.again() // then #2's: its undrain is newer
  await waitFor(() => !record.get('drains')!.has('a'), 5_000, "#2's undrain sent again")
  await waitFor(() => r1.health.state('a') === 'healthy', 5_000, '#1 to hear it')
  t.equal(r2.health.state('a'), 'healthy', "the operator's last change (the undrain) stands on #2")
})

t.test('a drain or undrain heard while a starting replica reads the recorded drains wins over the read (it may be newer)', async (t) => {
  const clock = new FakeClock()
  const health = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { consecutive_failures: 3, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 50 }, slow_start: 0 }, clock)
  health.setUpstreams(['a', 'b', 'c'])
  let hear: (m: string) => void = () => undefined
  let answer: (sets: Map<string, Map<string, string>>) => void = () => undefined
  const read = new Promise<Map<string, Map<string, string>>>((r) => { answer = r })
  const remembered: [string, string, string | null][] = []
  const channel: PeerChannel = {
    publish: () => Promise.resolve(true),
    subscribe: (fn) => { hear = fn; return Promise.resolve() },
    remember: (set, id, value) => { remembered.push([set, id, value]); return Promise.resolve(true) },
    members: async (set) => (await read).get(set) ?? new Map(),
  }
  const shared = new SharedHealth(channel, health, createLogger('silent'))
  const started = shared.start()
  await new Promise((r) => setImmediate(r))
  // read before these were made (the sender records after it publishes)
  hear(JSON.stringify({ from: 'other', kind: 'undrain', id: 'a' })) // an older Tether's
  hear(JSON.stringify({ from: 'other', kind: 'drain', id: 'b', since: clock.now() - 5_000 }))
  const aMinuteAgo = String(Date.now() - 60_000) // recorded within the week records are kept
  answer(new Map([['drains', new Map([['a', 'migrate'], ['b', 'migrate'], ['c', 'stay']])], ['drain-starts', new Map([['a', aMinuteAgo], ['b', aMinuteAgo]])]]))
  await started
  t.equal(health.state('a'), 'healthy', 'an undrain heard during the read: not drained by the stale record')
  t.equal(health.drainingSince('b'), clock.now() - 5_000, 'a drain heard during the read: its own start, not the stale one')
  t.equal(health.drainMigrates('b'), false, 'and its own kind')
  t.equal(health.state('c'), 'draining', 'the others recorded apply')
  t.same(remembered, [['drain-starts', 'a', null]], "an older Tether's undrain heard clears the start recorded for it")
  hear(JSON.stringify({ from: 'older', kind: 'drain', id: 'a' }))
  t.same(remembered.at(-1), ['drain-starts', 'a', null], 'so does a drain without a start (an older Tether records none)')
  remembered.length = 0
  hear(JSON.stringify({ from: 'newer', kind: 'undrain', id: 'a', recorded: true }))
  hear(JSON.stringify({ from: 'newer', kind: 'drain', id: 'a', since: clock.now() }))
  t.same(remembered, [], 'a newer Tether clears its own: the receivers leave the record alone (their clear could wipe the start of its next drain)')
})

t.test('recorded drains: one older than a week is dropped when read (not applied, its records deleted); an upstream that leaves the set has its records deleted', async (t) => {
  const { RECORDED_MS } = await import('../src/health/shared-health.js')
  const clock = new FakeClock()
  const health = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { consecutive_failures: 3, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 50 }, slow_start: 0 }, clock)
  health.setUpstreams(['a', 'b', 'c'])
  health.drain('c', true) // an operator's drain this replica still holds, made over a week ago
  const remembered: [string, string, string | null][] = []
  const old = String(Date.now() - RECORDED_MS - 60_000)
  const recent = String(Date.now() - 60_000)
  const sets = new Map([
    ['drains', new Map([['a', 'migrate'], ['b', 'stay'], ['c', 'migrate']])],
    ['drain-starts', new Map([['a', old], ['b', recent], ['c', old]])],
    ['drain-changes', new Map([['a', old], ['b', recent], ['gone', old], ['c', old]])],
  ])
  const channel: PeerChannel = {
    publish: () => Promise.resolve(true),
    subscribe: () => Promise.resolve(),
    remember: (set, id, value) => { remembered.push([set, id, value]); return Promise.resolve(true) },
    members: async (set) => sets.get(set) ?? new Map(),
  }
  const shared = new SharedHealth(channel, health, createLogger('silent'))
  await shared.start()
  t.equal(health.state('a'), 'healthy', 'a drain recorded more than a week ago is not applied')
  t.equal(health.state('b'), 'draining', 'a recent one is')
  t.same(remembered.filter(([, id]) => id === 'a').sort(), [['drain-changes', 'a', null], ['drain-starts', 'a', null], ['drains', 'a', null]], "the old drain's records are deleted")
  t.same(remembered.filter(([, id]) => id === 'gone').sort(), [['drain-changes', 'gone', null], ['drain-starts', 'gone', null], ['drains', 'gone', null]], 'and an old change of an id no longer drained')
  t.same(remembered.filter(([, id]) => id === 'b'), [], 'the recent one stays recorded')
  const c = remembered.filter(([, id]) => id === 'c')
  t.same(c.map(([set, , value]) => [set, value === null ? null : Date.now() - Number(value) < 60_000]), [['drain-changes', true]], 'an old drain this replica still holds is recorded again (now), not deleted: it stands')
  remembered.length = 0
  health.setUpstreams(['a', 'c']) // b's pod was deleted after its preStop drain
  t.same(remembered.sort(), [['drain-changes', 'b', null], ['drain-starts', 'b', null], ['drains', 'b', null]], 'an upstream that left the set: its records are deleted (a replica started later would drain it when the id came back)')
})

t.test('with Redis: a drained upstream removed from the set leaves no record, so a replica started later does not drain it when its id comes back', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const apps: Upstream[] = await Promise.all(['a', 'b'].map((id) => startUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const one = await sharing(t, apps, redis.url, 'back:')
  await request(`${one.adminUrl}/upstreams/b/drain?migrate=true`, { method: 'POST' })
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', 'back:peers:drains', 'b')).trim() === '1', 5_000, 'the drain to be recorded')
  one.reload({ ...one.config, upstreams: one.config.upstreams.filter((u) => u.id !== 'b') }) // the pod is gone
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', 'back:peers:drains', 'b')).trim() === '0', 5_000, 'its record to be deleted')
  one.reload({ ...one.config, upstreams: apps.map((u) => ({ ...one.config.upstreams[0]!, id: u.id, url: u.url })) }) // the id comes back
  t.equal(one.health.state('b'), 'healthy', 'the running replica: healthy')
  const later = await sharing(t, apps, redis.url, 'back:')
  t.equal(later.health.state('b'), 'healthy', 'a replica started now agrees')
})

t.test("a replica that finds an upstream down names the url it found down; a peer applies it unless that id names another url there (the old pod's), and applies one without a url (an older Tether's)", async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const apps: Upstream[] = await Promise.all(['a', 'b', 'c', 'd', 'e'].map((id) => startUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const tether = await startTether(testConfig(apps, {
    health: { shared: 'redis', passive: { max_ejection_percent: 100 } },
    state: { store: 'redis', redis: { url: redis.url, key_prefix: 'url:' } },
  }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const urlOf = (id: string): string => apps.find((u) => u.id === id)!.url
  const down = (id: string, url?: string, addresses?: string[]): Promise<string> =>
    redisCli(redis.port, 'PUBLISH', 'url:events', JSON.stringify({ from: 'another-replica', kind: 'down', id, ...(url === undefined ? {} : { url }), ...(addresses === undefined ? {} : { addresses }) }))
  // no url (an older Tether): applied as before; sent until the subscription is up
  await waitFor(async () => { await down('a'); return tether.health.state('a') === 'ejected' }, 10_000, 'a down without a url to be applied')
  t.pass('a down without a url is applied')
  // messages arrive in order on the one subscription: once c's is applied, b's was handled
  await down('b', 'http://127.0.0.1:1') // the old pod's address: b here is another process
  await down('b', 'http://127.0.0.1:1', ['http://127.0.0.1:1', 'http://[::1]:1']) // and its other ones
  await down('c', urlOf('c'))
  await healthState(tether.health, 'c', 'ejected', 5_000)
  t.pass('a down naming the url c has here is applied')
  t.equal(tether.health.state('b'), 'healthy', 'a down naming another url of b is ignored, with addresses none of which b has here too')
  // found down at an address not listed here for d, though the sender lists d's url here with it:
  // a listing that mixes a re-created pod's new address with its old one (one family's slice
  // updated, not yet the other's), so the down may be about the old pod
  await down('d', 'http://[::1]:1', ['http://[::1]:1', urlOf('d')])
  await down('e', urlOf('e'))
  await healthState(tether.health, 'e', 'ejected', 5_000)
  t.equal(tether.health.state('d'), 'healthy', 'a down found at an address not listed here for d is ignored, even if its sender lists the one d has here')
  t.equal(tether.health.state('b'), 'healthy', 'nothing else changed')
})

t.test('a down message carries the url of the upstream found down and the other addresses listed for it', async (t) => {
  const health = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { consecutive_failures: 1, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 100 }, slow_start: 0 }, new FakeClock())
  health.setUpstreams(['a', 'b', 'c'])
  const published: Record<string, unknown>[] = []
  const channel: PeerChannel = {
    publish: (m) => { published.push(JSON.parse(m) as Record<string, unknown>); return Promise.resolve(true) },
    subscribe: () => Promise.resolve(),
    remember: () => Promise.resolve(true),
    members: () => Promise.resolve(new Map()),
  }
  const dualStack = ['http://10.0.0.6:8080', 'http://[fd00::6]:8080']
  const at = new Map([['a', { url: 'http://10.0.0.5:8080', addresses: ['http://10.0.0.5:8080'] }], ['c', { url: 'http://[fd00::6]:8080', addresses: dualStack }]])
  new SharedHealth(channel, health, createLogger('silent'), (id) => at.get(id))
  health.reportPassive('a', 'connect_refused')
  health.reportPassive('b', 'connect_refused')
  health.reportPassive('c', 'connect_refused')
  t.match(published, [{ kind: 'down', id: 'a', url: 'http://10.0.0.5:8080' }, { kind: 'down', id: 'b' }, { kind: 'down', id: 'c', url: 'http://[fd00::6]:8080', addresses: dualStack }], 'the url found down, when the set has the id; every address listed for it, when there are several')
  t.notOk('url' in published[1]!, 'none for an id without one')
  t.notOk('addresses' in published[0]!, 'no addresses for an upstream at one address (its url says it)')
})

t.test("a down about a re-created dual-stack pod's old process does not eject the new one while a listing mixes the two pods' addresses (the families' slices are updated one after the other)", async (t) => {
  const health = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { consecutive_failures: 3, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 100 }, slow_start: 0 }, new FakeClock())
  health.setUpstreams(['web-0', 'web-1', 'web-2', 'web-3'])
  let hear: (m: string) => void = () => undefined
  const channel: PeerChannel = {
    publish: () => Promise.resolve(true),
    subscribe: (fn) => { hear = fn; return Promise.resolve() },
    remember: () => Promise.resolve(true),
    members: () => Promise.resolve(new Map()),
  }
  const [v4old, v6old, v4new, v6new] = ['http://10.0.0.5:80', 'http://[fd00::5]:80', 'http://10.0.0.9:80', 'http://[fd00::9]:80']
  const at = new Map([
    // web-0, web-1: re-created here (both slices seen), kept at its new IPv4
    ['web-0', { url: v4new, addresses: [v4new, v6new] }],
    ['web-1', { url: v4new, addresses: [v4new, v6new] }],
    // web-2: its IPv4 slice updated here, its IPv6 one not yet: the old pod's fd00::5 still listed with the new pod's 10.0.0.9
    ['web-2', { url: v4new, addresses: [v4new, v6old] }],
    // web-3: one pod, each replica kept another of its addresses
    ['web-3', { url: v4old, addresses: [v4old, v6old] }],
  ])
  const shared = new SharedHealth(channel, health, createLogger('silent'), (id) => at.get(id))
  await shared.start()
  const down = (id: string, url: string, addresses: string[]): void => hear(JSON.stringify({ from: 'other', kind: 'down', id, url, addresses }))
  // the sender kept the old pod's IPv6 (it saw that family first); its IPv4 slice already names the new pod
  down('web-0', v6old, [v4new, v6old])
  t.equal(health.state('web-0'), 'healthy', "a down found at the old pod's address, whose sender lists the new pod's address too, is ignored")
  down('web-1', v4new, [v4new, v6old])
  t.equal(health.state('web-1'), 'ejected', 'one found at the address kept here is applied')
  // the sender still has the old pod at both addresses
  down('web-2', v6old, [v4old, v6old])
  t.equal(health.state('web-2'), 'healthy', "a down about the old pod is ignored where the id's url is the new pod's, though the old address is still listed with it")
  down('web-3', v6old, [v4old, v6old])
  t.equal(health.state('web-3'), 'ejected', 'a down found at the address of the pod the sender kept, which lists the one kept here, is applied')
})

t.test("a down carrying the pod's uid is applied where the id has the same uid and refused where it has another, whatever the addresses; without a uid on either side the addresses decide", async (t) => {
  const health = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { consecutive_failures: 3, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 100 }, slow_start: 0 }, new FakeClock())
  const ids = ['mixed', 'same-ip', 'same-uid', 'older-sender', 'no-uid-here']
  health.setUpstreams(ids)
  let hear: (m: string) => void = () => undefined
  const published: Record<string, unknown>[] = []
  const channel: PeerChannel = {
    publish: (m) => { published.push(JSON.parse(m) as Record<string, unknown>); return Promise.resolve(true) },
    subscribe: (fn) => { hear = fn; return Promise.resolve() },
    remember: () => Promise.resolve(true),
    members: () => Promise.resolve(new Map()),
  }
  const [v4old, v6old, v4new] = ['http://10.0.0.5:80', 'http://[fd00::5]:80', 'http://10.0.0.9:80']
  const at = new Map<string, { url: string; addresses: string[]; uid?: string }>([
    // a dual-stack pod being re-created: both replicas hold the same mixed list (the new pod's
    // IPv4, the old pod's IPv6), this one kept the new pod's address, the sender the old pod's
    ['mixed', { url: v4new, addresses: [v4new, v6old], uid: 'pod-new' }],
    // re-created at the same address
    ['same-ip', { url: v4old, addresses: [v4old], uid: 'pod-new' }],
    // one pod; each replica saw (and kept) only another of its families so far
    ['same-uid', { url: v4old, addresses: [v4old], uid: 'pod-a' }],
    ['older-sender', { url: v4new, addresses: [v4new], uid: 'pod-new' }],
    ['no-uid-here', { url: v4new, addresses: [v4new] }],
  ])
  const shared = new SharedHealth(channel, health, createLogger('silent'), (id) => at.get(id))
  await shared.start()
  const down = (id: string, url: string, addresses: string[], uid?: string): void =>
    hear(JSON.stringify({ from: 'other', kind: 'down', id, url, addresses, ...(uid === undefined ? {} : { uid }) }))
  down('mixed', v6old, [v4new, v6old], 'pod-old')
  t.equal(health.state('mixed'), 'healthy', "the old pod's down is refused though each side lists the address the other kept: the uids differ")
  down('same-ip', v4old, [v4old], 'pod-old')
  t.equal(health.state('same-ip'), 'healthy', 'refused at the same url: another pod (its uid)')
  down('same-uid', v6old, [v6old], 'pod-a')
  t.equal(health.state('same-uid'), 'ejected', 'the same uid is the same pod, though neither side lists the address the other kept')
  down('older-sender', v4new, [v4new])
  t.equal(health.state('older-sender'), 'ejected', 'a down without a uid (an older Tether): the addresses decide (the same url)')
  down('no-uid-here', v4new, [v4new], 'pod-x')
  t.equal(health.state('no-uid-here'), 'ejected', 'no uid here (an endpoint without targetRef): the addresses decide')
  health.reportPassive('same-ip', 'connect_refused')
  health.reportPassive('same-ip', 'connect_refused')
  health.reportPassive('same-ip', 'connect_refused')
  t.match(published.at(-1), { kind: 'down', id: 'same-ip', url: v4old, uid: 'pod-new' }, "a down sent from here carries the pod's uid")
})

/**
 * Processes with shared health (`createHealth`) over upstreams a and b, on one in-memory channel
 * (as Redis pub/sub: every subscriber but the sender hears each message); `process_(self, group)`
 * makes one, a worker of `group` (null: alone); `published`: every message sent, parsed.
 */
/** Replica 2's own channel, through its primary: one ordered stream to every worker, the sender too. */
function orderedGroupChannel(): PeerChannel {
  const group: ((m: string) => void)[] = []
  return {
    publish: (m) => { for (const fn of group) fn(m); return Promise.resolve(true) },
    subscribe: (fn) => { group.push(fn); return Promise.resolve() },
    remember: () => Promise.resolve(true),
    members: () => Promise.resolve(new Map()),
  }
}

/**
 * Replicas and workers for the lead-relay tests: `process_`/`hold` over one Redis-like channel
 * (upstreams a and b, one failed probe ejects, a passive ejection of a minute), and a worker
 * group's ordered channel, `groupChannel`, whose published relays `relays` records.
 */
function groupOfWorkers() {
  const config = testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }, { id: 'b', url: 'http://127.0.0.1:2' }], {
    health: { active: { enabled: true, healthy_threshold: 2, unhealthy_threshold: 1 }, passive: { base_ejection: 60_000, max_ejection_percent: 100 } },
  })
  const { process_, hold, cut, older } = peersOverOneChannel(config)
  const ordered = orderedGroupChannel()
  const relays: string[] = []
  const groupChannel: PeerChannel = { ...ordered, publish: (m) => { relays.push(m); return ordered.publish(m) } }
  return { process_, hold, cut, older, groupChannel, relays }
}

/** Replica r1 (group g1) beside workers w1 and w2 of group g2, all started: w1 leads until `lead('w2')`. */
async function leadAndSibling() {
  const { process_, hold, groupChannel, relays } = groupOfWorkers()
  let leader = 'w1'
  const r1 = process_('r1', 'g1')
  const w1 = process_('w1', 'g2', { channel: groupChannel, lead: () => leader === 'w1' })
  const w2 = process_('w2', 'g2', { channel: groupChannel, lead: () => leader === 'w2' })
  for (const h of [r1, w1, w2]) await h.peers!.start()
  return { r1, w1, w2, hold, relays, lead: (name: string) => { leader = name } }
}

/**
 * A lead change in group g2 beside replica r1: `old` still leads (it is stopping, and still
 * relays what it hears), `next` leads from `promote()` on, `sibling` never does; all started.
 */
async function leadChange() {
  const { process_, hold, groupChannel, relays } = groupOfWorkers()
  let nextLeads = false
  const r1 = process_('r1', 'g1')
  const old = process_('old', 'g2', { channel: groupChannel, lead: () => true })
  const next = process_('next', 'g2', { channel: groupChannel, lead: () => nextLeads })
  const sibling = process_('sibling', 'g2', { channel: groupChannel, lead: () => false })
  for (const h of [r1, old, next, sibling]) await h.peers!.start()
  return { r1, old, next, sibling, hold, relays, promote: () => { nextLeads = true } }
}

/**
 * `hold(self)`: what reaches `self` waits until the returned function delivers it; `cut(self)`:
 * `self`'s subscription is lost (what is published meanwhile never reaches it) until the returned
 * function has it subscribed again (its `onSubscribed` runs); `older(self)`: `self` sends as a
 * Tether from before message ids (no `seq`).
 */
function peersOverOneChannel(config: Config): {
  published: unknown[]; process_: (self: string, group: string | null, relay?: GroupRelay) => Health; hold: (self: string) => () => void
  cut: (self: string) => () => void; older: (self: string) => void
} {
  const published: unknown[] = []
  const subs: { self: string; fn: (m: string) => void; onSubscribed: (() => void) | undefined }[] = []
  const olderSenders = new Set<string>()
  /** Processes whose messages wait here, by self: `hold(self)` returns what delivers them. */
  const late = new Map<string, string[]>()
  const hold = (self: string): () => void => {
    late.set(self, [])
    return () => {
      const held = late.get(self) ?? []
      late.delete(self)
      for (const m of held) for (const sub of subs) if (sub.self === self) sub.fn(m)
    }
  }
  const cut = (self: string): () => void => {
    late.set(self, [])
    return () => {
      late.delete(self)
      for (const sub of subs) if (sub.self === self) sub.onSubscribed?.()
    }
  }
  const process_ = (self: string, group: string | null, relay: GroupRelay | null = null): Health => {
    const channel: PeerChannel = {
      publish: (sent) => {
        const parsed = JSON.parse(sent) as Record<string, unknown>
        if (olderSenders.has(self)) delete parsed.seq
        const m = JSON.stringify(parsed)
        published.push(parsed)
        for (const s of subs) if (s.self !== self) (late.get(s.self)?.push(m) ?? s.fn(m))
        return Promise.resolve(true)
      },
      subscribe: (fn, onSubscribed) => { subs.push({ self, fn, onSubscribed }); return Promise.resolve() },
      remember: () => Promise.resolve(true),
      members: () => Promise.resolve(new Map()),
    }
    const health = createHealth(config, new FakeClock(), systemTimers, createLogger('silent'), () => 0, channel, () => undefined, null, () => undefined, group, relay)
    health.table.setUpstreams(['a', 'b'])
    return health
  }
  return { published, process_, hold, cut, older: (self) => { olderSenders.add(self) } }
}

t.test("an active check's verdict of a group of workers is applied by its workers as the lead's probe (unhealthy until probes pass), not as an ejection; another replica ejects", async (t) => {
  const config = testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }, { id: 'b', url: 'http://127.0.0.1:2' }], {
    health: { active: { enabled: false, healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { base_ejection: 60_000 } },
  })
  const { published, process_ } = peersOverOneChannel(config)
  const lead = process_('lead', 'g1')
  const sibling = process_('sibling', 'g1')
  const other = process_('other', null) // another replica
  for (const h of [lead, sibling, other]) await h.peers!.start()
  // the lead's probes of a fail twice, each result relayed to its sibling as it was applied
  for (let i = 0; i < 2; i++) {
    lead.table.reportActive('a', false, false, 'ECONNREFUSED')
    sibling.applyProbe('a', false, false, 'ECONNREFUSED')
  }
  t.match(published, [{ kind: 'down', id: 'a', active: true, group: 'g1' }], 'one down, from the lead (the sibling applied a relayed probe: not news)')
  t.equal(published.length, 1)
  t.equal(lead.table.state('a'), 'unhealthy')
  t.equal(sibling.table.state('a'), 'unhealthy', 'the sibling: unhealthy, as the lead')
  t.equal(sibling.table.snapshot()[0]!.ejectedUntil, null, 'not ejected by the down of its own lead')
  t.equal(other.table.state('a'), 'ejected', 'another replica ejects it, as before')
  // the app answers: two passed probes make it healthy on both workers, and count as seen
  for (let i = 0; i < 2; i++) {
    lead.table.reportActive('a', true)
    sibling.applyProbe('a', true, false)
  }
  t.same([lead.table.state('a'), sibling.table.state('a')], ['healthy', 'healthy'], 'healthy again on both at the same probe')
  t.ok(sibling.table.passedAny(), 'the passed probe counts as seen on the sibling too')
})

t.test("another replica's active-check down takes the upstream out until a probe passes here (on every worker alike), not for the ejection time; a passive down for a refusal until healthy_threshold pass here; one not marked refused stays timed", async (t) => {
  const config = testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }, { id: 'b', url: 'http://127.0.0.1:2' }], {
    health: { active: { enabled: true, healthy_threshold: 2, unhealthy_threshold: 1 }, passive: { base_ejection: 60_000, max_ejection_percent: 100 } },
  })
  const { process_ } = peersOverOneChannel(config)
  const r1 = process_('r1', 'g1') // replica 1 (its lead)
  const lead = process_('r2-lead', 'g2') // replica 2: its lead and another worker
  const sibling = process_('r2-sibling', 'g2')
  for (const h of [r1, lead, sibling]) await h.peers!.start()
  r1.table.reportActive('a', false, false, 'ECONNREFUSED') // replica 1's probe fails: a down, active
  t.same([lead.table.state('a'), sibling.table.state('a')], ['ejected', 'ejected'], 'replica 2 takes it out at once')
  // a worker started now copies the ejection as it is: it ends at the same probe
  const late = process_('r2-late', 'g2')
  late.copy(lead.copies())
  t.equal(late.table.state('a'), 'ejected')
  // replica 2's own probe passes (its lead's, applied by every worker of it)
  lead.table.reportActive('a', true)
  for (const h of [sibling, late]) h.applyProbe('a', true, false)
  t.same([lead.table.state('a'), sibling.table.state('a'), late.table.state('a')], ['healthy', 'healthy', 'healthy'], 'in again at its own passed probe, on every worker, not after 60 s')
  t.ok(lead.table.passedAny() && sibling.table.passedAny(), 'that probe counts as seen')
  // a down found by traffic (passive), refused: out until healthy_threshold (2) probes in a row pass here
  r1.table.reportPassive('b', 'connect_refused')
  lead.table.reportActive('b', true)
  sibling.applyProbe('b', true, false)
  t.same([lead.table.state('b'), sibling.table.state('b')], ['ejected', 'ejected'], "another replica's refusal: one passed probe here is not enough")
  lead.table.reportActive('b', true)
  sibling.applyProbe('b', true, false)
  t.same([lead.table.state('b'), sibling.table.state('b')], ['healthy', 'healthy'], 'in again at the second, on every worker')
  // an active down, then a down without `active` nor `refused` (another replica's ejection for
  // 5xx or timeouts, or an older Tether's): out for the ejection time
  r1.peers!.tell('down', 'a', false, undefined, true)
  t.same([lead.table.state('a'), sibling.table.state('a')], ['ejected', 'ejected'])
  r1.peers!.tell('down', 'a')
  lead.table.reportActive('a', true)
  sibling.applyProbe('a', true, false)
  t.same([lead.table.state('a'), sibling.table.state('a')], ['ejected', 'ejected'], 'a down for other failures keeps it out past a passed probe here')
})

t.test("an ejection for a refused connection is told marked `refused`: every other process ends it at its own passed probes (a group's workers at the same probe of their lead); one for 5xx is told unmarked and stays timed there", async (t) => {
  const config = testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }, { id: 'b', url: 'http://127.0.0.1:2' }], {
    health: { active: { enabled: true, healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { base_ejection: 60_000, max_ejection_percent: 100 } },
  })
  const { process_, published } = peersOverOneChannel(config)
  const r1 = process_('r1', 'g1') // the replica whose traffic was refused
  const lead = process_('r2-lead', 'g2') // another replica: its lead and another worker
  const sibling = process_('r2-sibling', 'g2')
  for (const h of [r1, lead, sibling]) await h.peers!.start()
  r1.table.reportPassive('a', 'connect_refused')
  t.match(published.at(-1), { kind: 'down', id: 'a', refused: true }, 'the down says why')
  t.notOk((published.at(-1) as { active?: boolean }).active)
  t.same([lead.table.state('a'), sibling.table.state('a')], ['ejected', 'ejected'])
  const probe = (ok: boolean): void => {
    r1.table.reportActive('a', ok)
    lead.table.reportActive('a', ok)
    sibling.applyProbe('a', ok, false)
  }
  probe(false) // the crashed process is still gone (below unhealthy_threshold: still only ejected)
  probe(true)
  t.same([r1, lead, sibling].map((h) => h.table.state('a')), ['ejected', 'ejected', 'ejected'], 'one pass: out everywhere')
  probe(true)
  t.same([r1, lead, sibling].map((h) => h.table.state('a')), ['healthy', 'healthy', 'healthy'], 'back everywhere at the same probe, with no message')
  t.equal(published.filter((m) => (m as { id?: string }).id === 'a').length, 1, 'nothing more was told')

  for (let i = 0; i < 3; i++) r1.table.reportPassive('b', 'server_error')
  t.match(published.at(-1), { kind: 'down', id: 'b' })
  t.notOk((published.at(-1) as { refused?: boolean }).refused, 'a 5xx ejection is told unmarked')
  for (let i = 0; i < 3; i++) {
    lead.table.reportActive('b', true)
    sibling.applyProbe('b', true, false)
  }
  t.same([lead.table.state('b'), sibling.table.state('b')], ['ejected', 'ejected'], 'timed there, past passed probes')
})

t.test("another replica's active down reaches a group's workers in its lead's order: a worker that hears it from Redis after the lead's passed probe is not left out", async (t) => {
  const { process_, hold, groupChannel } = groupOfWorkers()
  const r1 = process_('r1', 'g1')
  const lead = process_('r2-lead', 'g2', { channel: groupChannel, lead: () => true })
  const sibling = process_('r2-sibling', 'g2', { channel: groupChannel, lead: () => false })
  for (const h of [r1, lead, sibling]) await h.peers!.start()
  const deliver = hold('r2-sibling') // Redis delivers to the sibling later than to the lead
  r1.table.reportActive('a', false, false, 'ECONNREFUSED') // replica 1's probe fails: an active down
  t.same([lead.table.state('a'), sibling.table.state('a')], ['ejected', 'ejected'], 'out on both: the sibling has it from its lead')
  // the lead's probe passes, relayed to the sibling, before Redis delivers the down there
  lead.table.reportActive('a', true)
  sibling.applyProbe('a', true, false)
  deliver() // now the sibling's own Redis copy of the down arrives
  t.same([lead.table.state('a'), sibling.table.state('a')], ['healthy', 'healthy'], "in again on both at the lead's passed probe; the sibling's late Redis copy is its lead's to apply")
})

t.test("while the lead changes: a worker that heard another replica's active down before it became the lead applies the old lead's relay of it; one it applied itself as the lead is not applied again", async (t) => {
  const { process_, hold, groupChannel } = groupOfWorkers()
  let newLeads = false // the primary told `next` it leads (the old lead stops meanwhile, still relaying)
  const r1 = process_('r1', 'g1')
  const old = process_('r2-old', 'g2', { channel: groupChannel, lead: () => true })
  const next = process_('r2-next', 'g2', { channel: groupChannel, lead: () => newLeads })
  for (const h of [r1, old, next]) await h.peers!.start()
  let deliver = hold('r2-old') // Redis reaches the old lead late
  r1.table.reportActive('a', false, false, 'ECONNREFUSED') // heard by `next` while not the lead: its lead's to relay
  t.equal(next.table.state('a'), 'healthy')
  newLeads = true
  deliver() // the old lead applies it and relays it
  t.same([old.table.state('a'), next.table.state('a')], ['ejected', 'ejected'], 'the new lead applies the old lead\'s relay (it did not apply its own Redis copy)')
  // b: the new lead applies its own Redis copy; the old lead's relay, late, comes after its passed probe
  deliver = hold('r2-old')
  r1.table.reportActive('b', false, false, 'ECONNREFUSED')
  t.equal(next.table.state('b'), 'ejected', 'the new lead applies its own Redis copy')
  next.table.reportActive('b', true)
  old.applyProbe('b', true, false)
  deliver()
  t.equal(next.table.state('b'), 'healthy', "the old lead's relay of the down it applied already does not take it out again")
})

t.test("a down heard while the group has no lead is applied and relayed by the worker that becomes the lead; not one its lead relayed already, nor one a passed probe here ended", async (t) => {
  const { process_, hold, groupChannel, relays } = groupOfWorkers()
  let leader: string | null = null // none yet: the group starts, or its lead died and the primary has not told the next
  const r1 = process_('r1', 'g1')
  const w1 = process_('w1', 'g2', { channel: groupChannel, lead: () => leader === 'w1' })
  const w2 = process_('w2', 'g2', { channel: groupChannel, lead: () => leader === 'w2' })
  for (const h of [r1, w1, w2]) await h.peers!.start()
  r1.table.reportActive('a', false, false, 'ECONNREFUSED') // replica 1's active down, heard by both
  t.same([w1.table.state('a'), w2.table.state('a')], ['healthy', 'healthy'], 'no worker applies it while there is no lead')
  leader = 'w2'
  w2.peers!.becameLead()
  t.same([w1.table.state('a'), w2.table.state('a')], ['ejected', 'ejected'], 'the new lead applies it, and its sibling the relay')
  t.equal(relays.length, 1, 'relayed once')
  // its probe passes: in again on both
  w2.table.reportActive('a', true)
  w1.applyProbe('a', true, false)
  // b: the lead's relay reaches w1 before w1's own Redis copy
  const deliverW1 = hold('w1')
  r1.table.reportActive('b', false, false, 'ECONNREFUSED')
  t.equal(w1.table.state('b'), 'ejected', "the sibling applies the lead's relay")
  deliverW1()
  // a again: Redis reaches the lead late, and the lead's passed probe of a comes first
  const deliverW2 = hold('w2')
  r1.peers!.tell('down', 'a', false, undefined, true)
  w2.table.reportActive('a', true)
  w1.applyProbe('a', true, false)
  void deliverW2 // the lead dies before Redis delivers it there
  leader = 'w1'
  w1.peers!.becameLead()
  t.equal(relays.length, 2, 'the next lead replays nothing: b was relayed, a ended by a passed probe here')
  t.same([w1.table.state('a'), w1.table.state('b')], ['healthy', 'ejected'])
})

t.test("a sibling that had the lead's relay of a down before its own Redis copy, and the lead's passed probe in between, does not keep that copy for a next lead to replay", async (t) => {
  const { r1, w1, w2, hold, relays, lead } = await leadAndSibling()
  const deliverW2 = hold('w2') // w2's Redis copies come late
  r1.table.reportActive('a', false, false, 'ECONNREFUSED')
  t.same([w1.table.state('a'), w2.table.state('a')], ['ejected', 'ejected'], "the lead applies it, its sibling the lead's relay")
  // the lead's probe passes: in again on both
  w1.table.reportActive('a', true)
  w2.applyProbe('a', true, false)
  t.same([w1.table.state('a'), w2.table.state('a')], ['healthy', 'healthy'])
  deliverW2() // the Redis copy, after the relay and the pass
  t.equal(w2.table.state('a'), 'healthy', 'the late copy is not applied by a sibling')
  // the lead dies; w2 is named before the next probe
  lead('w2')
  w2.peers!.becameLead()
  t.equal(relays.length, 1, 'the next lead replays nothing: that down was relayed and ended')
  t.equal(w2.table.state('a'), 'healthy', 'not out again on a down the group applied and ended before')
})

t.test("a kept down replayed by the new lead, its copy coming to the old (stopping) lead afterwards: applied once on every worker, with the same ejection count everywhere", async (t) => {
  const { r1, old, next, sibling, hold, promote } = await leadChange()
  const deliverOld = hold('old') // Redis reaches the old lead late
  r1.table.reportActive('a', false, false, 'ECONNREFUSED')
  t.same([next.table.state('a'), sibling.table.state('a')], ['healthy', 'healthy'], 'kept, not applied, by the workers that do not lead')
  promote()
  next.peers!.becameLead() // replays it: applied on every worker, through its relay
  deliverOld() // the old lead's own copy: applied there again, and relayed again
  const times = (h: typeof old): number | undefined => h.table.snapshot().find((e) => e.id === 'a')?.timesEjected
  t.same([old, next, sibling].map((h) => h.table.state('a')), ['ejected', 'ejected', 'ejected'])
  t.same([old, next, sibling].map(times), [1, 1, 1], 'one ejection counted on each: the second apply finds it out already')
  // the new lead's probe passes: in again everywhere, the ejection not counted
  next.table.reportActive('a', true)
  for (const h of [old, sibling]) h.applyProbe('a', true, false)
  t.same([old, next, sibling].map((h) => h.table.state('a')), ['healthy', 'healthy', 'healthy'])
  t.same([old, next, sibling].map(times), [0, 0, 0])
})

t.test("a worker that had the old lead's relay of a down before its own Redis copy, and leads by the time that copy comes, does not apply and relay it again after its passed probe", async (t) => {
  const { r1, old, next, sibling, hold, relays, promote } = await leadChange()
  const deliverNext = hold('next') // Redis reaches `next` late
  r1.table.reportActive('a', false, false, 'ECONNREFUSED')
  t.same([old, next, sibling].map((h) => h.table.state('a')), ['ejected', 'ejected', 'ejected'], "the old lead's relay, applied everywhere")
  promote()
  next.peers!.becameLead()
  // the new lead's first probe passes: in again on every worker
  next.table.reportActive('a', true)
  for (const h of [old, sibling]) h.applyProbe('a', true, false)
  deliverNext() // its own copy of the down, now that it leads
  t.equal(relays.length, 1, 'not relayed again: the old lead relayed it')
  t.same([old, next, sibling].map((h) => h.table.state('a')), ['healthy', 'healthy', 'healthy'], 'not out again on a down every worker applied and ended')
})

for (const older of [false, true]) {
  t.test(`after a worker's subscription to Redis is back, a relay whose Redis copy it lost does not stand for a later down of that upstream${older ? ' (from a Tether without message ids)' : ''}`, async (t) => {
    const { process_, cut, older: olderSender, groupChannel } = groupOfWorkers()
    let leader: string | null = 'w1'
    const r1 = process_('r1', 'g1')
    if (older) olderSender('r1')
    const w1 = process_('w1', 'g2', { channel: groupChannel, lead: () => leader === 'w1' })
    const w2 = process_('w2', 'g2', { channel: groupChannel, lead: () => leader === 'w2' })
    const w3 = process_('w3', 'g2', { channel: groupChannel, lead: () => leader === 'w3' })
    for (const h of [r1, w1, w2, w3]) await h.peers!.start()
    // w2 and w3 lose their subscriptions: the lead's relays reach them, their own Redis copies never will
    const back = [cut('w2'), cut('w3')]
    for (const id of ['a', 'b']) r1.peers!.tell('down', id, false, undefined, true)
    t.same([w1, w2, w3].map((h) => [h.table.state('a'), h.table.state('b')]), Array(3).fill(['ejected', 'ejected']), "applied on every worker: the lead's copy, its relay on the others")
    for (const subscribed of back) subscribed()
    // the lead's probes pass: in again everywhere
    for (const id of ['a', 'b']) {
      w1.table.reportActive(id, true)
      for (const h of [w2, w3]) h.applyProbe(id, true, false)
    }
    // the lead dies; r1 finds b down again (the same message, but for an id) before the next lead is named
    leader = null
    r1.peers!.tell('down', 'b', false, undefined, true)
    leader = 'w2'
    w2.peers!.becameLead()
    t.same([w2.table.state('b'), w3.table.state('b')], ['ejected', 'ejected'], 'the down heard while there was no lead is kept, and the next lead replays it')
    // and a down of a heard by the lead itself
    r1.peers!.tell('down', 'a', false, undefined, true)
    t.same([w2.table.state('a'), w3.table.state('a')], ['ejected', 'ejected'], 'the lead applies and relays the new down')
  })
}

for (const leads of ['when its copy comes', 'after its copy came']) {
  t.test(`a late Redis copy of a down applied more than 100 downs ago (from one sender) is not applied again by a worker that leads ${leads}`, async (t) => {
    const { r1, w1, w2, hold, relays, lead } = await leadAndSibling()
    const deliverW2 = hold('w2') // w2's Redis copies come late: it applies the lead's relays
    r1.table.reportActive('a', false, false, 'ECONNREFUSED')
    t.same([w1.table.state('a'), w2.table.state('a')], ['ejected', 'ejected'])
    w1.table.reportActive('a', true)
    w2.applyProbe('a', true, false)
    t.same([w1.table.state('a'), w2.table.state('a')], ['healthy', 'healthy'], "in again at the lead's passed probe")
    // 150 newer active downs from r1 (of b), each applied through the lead's relay
    for (let i = 0; i < 150; i++) r1.peers!.tell('down', 'b', false, undefined, true)
    t.equal(relays.length, 151)
    if (leads === 'when its copy comes') {
      lead('w2')
      deliverW2() // a's Redis copy first, then b's: w2 leads
    } else {
      deliverW2() // kept for a lead to replay? not one w2 applied already
      lead('w2')
      w2.peers!.becameLead()
    }
    t.equal(relays.length, 151, 'nothing applied and relayed again')
    t.same([w1.table.state('a'), w2.table.state('a')], ['healthy', 'healthy'], 'a stays in on both workers')
  })
}

t.test('the applied downs are kept per sender as a mark and at most 100 seqs above it, for at most 256 senders (the least recently applied dropped)', async (t) => {
  const window = new ReplayWindow()
  for (let seq = 1; seq <= 1000; seq++) window.add('r1', seq)
  t.same(window.size('r1'), { senders: 1, mark: 900, above: SEQS_KEPT }, '100 seqs above a mark of 900')
  t.ok([1, 450, 900, 901, 1000].every((seq) => window.has('r1', seq)), 'every seq applied counts, the old ones by the mark')
  t.notOk(window.has('r1', 1001), 'a newer one does not')
  // out of order, sparse (only active downs are kept), duplicates
  const sparse = new ReplayWindow(3)
  for (const seq of [5, 2, 9, 5, 7]) sparse.add('x', seq)
  t.same(sparse.size('x'), { senders: 1, mark: 2, above: 3 }, 'the lowest of four left for the mark; a duplicate added nothing')
  t.same([1, 2, 3, 4, 5, 6, 7, 8, 9, 10].filter((seq) => sparse.has('x', seq)), [1, 2, 5, 7, 9], 'below the mark, and the kept ones')
  sparse.add('x', 1)
  t.same(sparse.size('x'), { senders: 1, mark: 2, above: 3 }, 'one at or below the mark changes nothing')
  t.notOk(sparse.has('y', 1), 'another sender: nothing applied')
  // senders: the least recently applied one goes first
  for (let i = 0; i < SENDERS_KEPT + 10; i++) {
    window.add(`s${i}`, 1)
    if (i % 50 === 0) window.add('r1', 1001) // r1 stays recent
  }
  t.equal(window.size().senders, SENDERS_KEPT, `${SENDERS_KEPT} senders kept`)
  t.ok(window.has('r1', 5), 'a sender applied from recently is kept')
  t.notOk(window.has('s0', 1), 'the least recently applied ones were dropped')
  t.ok(window.has(`s${SENDERS_KEPT + 9}`, 1))
})

t.test("a down both leads relay while the lead changes, with the new lead's passed probe between the two relays: the siblings stay in with the new lead", async (t) => {
  const { process_, hold, groupChannel } = groupOfWorkers()
  let nextLeads = false
  // the old lead (stopping) gets the group's relays late (here: not before the test ends), so it
  // relays the down before the new lead's relay of it reaches it
  const oldView: PeerChannel = { ...groupChannel, subscribe: () => Promise.resolve() }
  const r1 = process_('r1', 'g1')
  const old = process_('old', 'g2', { channel: oldView, lead: () => true })
  const next = process_('next', 'g2', { channel: groupChannel, lead: () => nextLeads })
  const sibling = process_('sibling', 'g2', { channel: groupChannel, lead: () => false })
  for (const h of [r1, old, next, sibling]) await h.peers!.start()
  const deliverOld = hold('old') // Redis reaches the old lead late
  r1.table.reportActive('a', false, false, 'ECONNREFUSED')
  nextLeads = true
  next.peers!.becameLead() // replays it: applied on the sibling through its relay
  t.same([next.table.state('a'), sibling.table.state('a')], ['ejected', 'ejected'])
  // the new lead's probe passes, applied by the sibling in the group's order
  next.table.reportActive('a', true)
  sibling.applyProbe('a', true, false)
  deliverOld() // the old lead applies its Redis copy and relays it: the second relay of one down
  t.same([next.table.state('a'), sibling.table.state('a')], ['healthy', 'healthy'], 'the second relay of the same down does not take it out again on the sibling')
})

t.test('a down that could not reach Redis (before its connection was ready, or while it was down) is told once the subscription is in place, if the upstream is still down here', async (t) => {
  const clock = new FakeClock()
  const health = new HealthTable({ active: { healthy_threshold: 1, unhealthy_threshold: 1 }, passive: { consecutive_failures: 3, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 100 }, slow_start: 0 }, clock)
  health.setUpstreams(['a', 'b', 'c'])
  let up = false
  let subscribed: () => void = () => undefined
  const published: { kind: string; id: string; active?: boolean }[] = []
  const channel: PeerChannel = {
    publish: (m) => { if (up) published.push(JSON.parse(m) as typeof published[number]); return Promise.resolve(up) },
    subscribe: (_fn, onSubscribed) => { subscribed = onSubscribed ?? subscribed; return Promise.resolve() },
    remember: () => Promise.resolve(up),
    members: () => Promise.resolve(new Map()),
  }
  const shared = new SharedHealth(channel, health, createLogger('silent'))
  await shared.start()
  health.reportActive('a', false) // the first probe after start fails: not connected yet
  health.reportPassive('b', 'connect_refused') // refused on live traffic
  health.reportActive('c', false)
  health.reportActive('c', true) // c is back before the connection is
  await new Promise((r) => setImmediate(r))
  t.same(published, [], 'nothing reached Redis')
  up = true
  subscribed()
  await waitFor(() => published.length >= 2, 5_000, 'the downs to be told again')
  t.match(published, [{ kind: 'down', id: 'a', active: true }, { kind: 'down', id: 'b' }], 'a (active verdict) and b (ejected) are told once connected')
  t.notOk(published.some((m) => m.id === 'c'), 'not c: it is up again here')
  t.notOk(published[1]!.active, "b's down is live traffic's (timed ejection there)")
})

t.test("a down says why the sender ejected it (`reason`), and the receivers show it; a refusal and a 5xx ejection that cross end alike on both replicas: at their time, not one at its probes", async (t) => {
  const config = testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }, { id: 'b', url: 'http://127.0.0.1:2' }], {
    health: { active: { enabled: true, healthy_threshold: 2, unhealthy_threshold: 5 }, passive: { base_ejection: 60_000, max_ejection_percent: 100 } },
  })
  const { process_, published, hold } = peersOverOneChannel(config)
  const r1 = process_('r1', 'g1')
  const r2 = process_('r2', 'g2')
  for (const h of [r1, r2]) await h.peers!.start()
  for (let i = 0; i < 3; i++) r1.table.reportPassive('a', 'server_error')
  t.match(published.at(-1), { kind: 'down', id: 'a', reason: '5xx' }, 'the down says 5xx')
  t.match(r2.table.ejection('a'), { reason: '5xx', ends: 'time' }, 'the receiver shows why, and that it runs its time')

  // b: r1's traffic is refused while r2's gets 503s; each ejects it before hearing the other
  const toR1 = hold('r1')
  const toR2 = hold('r2')
  r1.table.reportPassive('b', 'connect_refused')
  for (let i = 0; i < 3; i++) r2.table.reportPassive('b', 'server_error')
  t.match(published.filter((m) => (m as { id?: string }).id === 'b'), [{ kind: 'down', refused: true, reason: 'refused' }, { kind: 'down', reason: '5xx' }])
  toR1()
  toR2()
  t.match([r1.table.ejection('b'), r2.table.ejection('b')], [{ reason: '5xx', ends: 'time' }, { reason: '5xx', ends: 'time' }], 'both: the 5xx ejection, timed')
  for (let i = 0; i < 3; i++) for (const h of [r1, r2]) h.table.reportActive('b', true)
  t.same([r1.table.state('b'), r2.table.state('b')], ['ejected', 'ejected'], 'passed probes end it on neither: the replicas agree')
})

t.test('recorded drains that could not be read at the start apply nothing, are said in a warn, and apply once read when the subscription is back', async (t) => {
  const health = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { consecutive_failures: 3, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 50 }, slow_start: 0 }, new FakeClock())
  health.setUpstreams(['a', 'b'])
  let up = false
  let resubscribed: () => void = () => undefined
  const record = new Map([['drains', new Map([['a', 'stay']])], ['drain-starts', new Map<string, string>()], ['drain-changes', new Map<string, string>()]])
  // the drains set answers, the others do not (a reply too late): nothing of a partial read applies
  const channel: PeerChannel = {
    publish: () => Promise.resolve(up),
    subscribe: (_fn, onSubscribed) => { resubscribed = onSubscribed ?? resubscribed; return Promise.resolve() },
    remember: () => Promise.resolve(up),
    members: (set) => Promise.resolve(up || set === 'drains' ? new Map(record.get(set)) : null),
  }
  const logs = new LogCapture()
  const shared = new SharedHealth(channel, health, createLogger('info', logs))
  await shared.start()
  t.equal(health.state('a'), 'healthy', 'not drained from a partial read')
  const warned = logs.records.filter((r) => r['msg'] === 'the recorded drains were not read (the peer channel did not answer): serving without them')
  t.equal(warned.length, 1, 'said once')
  t.equal(warned[0]?.['level'], 40, 'as a warn')
  up = true
  resubscribed()
  await waitFor(() => health.state('a') === 'draining', 5_000, 'the recorded drain to apply once read')
  t.pass('applied once the read succeeds')
})

t.test('a message that is valid JSON but no object (null, a number, a string), from Redis or from a worker relay, is ignored, not thrown on', async (t) => {
  const health = new HealthTable(testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }]).health, { now: () => Date.now() })
  health.setUpstreams(['a'])
  let fromRedis: (m: string) => void = () => {}
  let fromRelay: (m: string) => void = () => {}
  const channel = (set: (fn: (m: string) => void) => void): PeerChannel => ({
    publish: () => Promise.resolve(true),
    subscribe: (fn) => { set(fn); return Promise.resolve() },
    remember: () => Promise.resolve(true),
    members: () => Promise.resolve(new Map()),
  })
  const shared = new SharedHealth(channel((fn) => { fromRedis = fn }), health, createLogger('silent'), undefined, 'g1', { channel: channel((fn) => { fromRelay = fn }), lead: () => false })
  await shared.start()
  t.teardown(() => shared.stop())
  for (const raw of ['null', '5', '"down"', 'true']) {
    t.doesNotThrow(() => fromRedis(raw), `from Redis: ${raw}`)
    t.doesNotThrow(() => fromRelay(raw), `relayed: ${raw}`)
    t.doesNotThrow(() => fromRelay(JSON.stringify({ relay: 'x', message: raw })), `relayed, wrapping ${raw}`)
  }
  t.equal(health.state('a'), 'healthy', 'nothing applied')
})
