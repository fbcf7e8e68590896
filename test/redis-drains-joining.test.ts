// With `health.shared: redis` and discovery, a drain recorded in Redis (an operator's, made
// through another replica's admin API) for an upstream this replica does not have yet when it
// reads the records (its DNS list without it at the start: with workers, a worker can read
// before the discovered lists reach it) applies when the upstream joins the set: no new user
// is placed on it, by either worker. A real redis-server, Tether as a child process
// (dist/cli.js, `workers: 2` and one process), a test DNS server, real upstreams. Then what
// such a waiting drain yields to (a drain or undrain heard since, a read since without it, a
// record gone from Redis by the time it applies, the week records are kept), with SharedHealth
// on a channel the test answers.
import t from 'tap'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { TestDnsServer } from './fixtures/dns-server.js'
import { request, startPrimary, startSingle, workerAdmins } from './fixtures/primary-process.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'
import { closeServer, sameportUpstreams, type Echo } from './fixtures/sameport-upstreams.js'
import { startProxy } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { FakeClock } from './fixtures/clock.js'
import { LogCapture } from './fixtures/log-capture.js'
import { createLogger } from '../src/observability/logger.js'
import { HealthTable } from '../src/health/health-table.js'
import { RECORDED_MS, SharedHealth } from '../src/health/shared-health.js'
import type { PeerChannel } from '../src/peers/peer-channel.js'

const NAME = 'app.tether.test'
const USERS = 60

/** The state of each upstream on the admin listener `admin`. */
async function states(admin: string): Promise<Map<string, string>> {
  const r = await request(`${admin}/upstreams`, null)
  return new Map((JSON.parse(r.body) as { id: string; state: string }[]).map((row) => [row.id, row.state]))
}

// (listed at the start, with workers: the lead starts its discovery without waiting for it, so it
// read the records before its first list; the other worker, given the list at its start, had it)
for (const [workers, listed] of [[1, 'later'], [2, 'later'], [2, 'at the start']] as const) {
  t.test(`workers: ${workers}: a drain recorded in Redis applies when its upstream joins the discovered set after the read (listed ${listed})`, async (t) => {
    const redis = await startRedis()
    t.teardown(() => redis.stop())
    const { port: appPort, servers } = await sameportUpstreams()
    t.teardown(async () => { await Promise.all(servers.map(closeServer)) })
    const id = (address: string): string => `${address}:${appPort}`
    const state = { store: 'redis', redis: { url: redis.url } } as const

    // an operator drains 127.0.0.2 through another replica's admin API: recorded in Redis
    const other = await startProxy(['127.0.0.1', '127.0.0.2'].map((a) => ({ id: id(a), url: `http://${a}:${appPort}` })), { state, health: { shared: 'redis' } })
    t.teardown(() => other.close(0))
    const drained = await fetch(`${other.adminUrl}/upstreams/${id('127.0.0.2')}/drain`, { method: 'POST' })
    t.equal(drained.status, 200, 'drained through the admin API')
    await drained.arrayBuffer()
    await waitFor(async () => (await redisCli(redis.port, 'HGET', 'tether:peers:drains', id('127.0.0.2'))).trim() === 'stay', 5_000, 'the drain recorded in Redis')
    await other.close(0)

    // the Tether under test starts with 127.0.0.2 not listed yet (it reads the records without
    // it), or listed (the lead worker reads them before its first list comes)
    const dns = new TestDnsServer()
    const { port: dnsPort } = await dns.start()
    t.teardown(() => dns.close())
    dns.set(NAME, { a: listed === 'later' ? ['127.0.0.1'] : ['127.0.0.1', '127.0.0.2'], aaaa: [] })
    const [port, adminPort] = await freePorts(2)
    const file = tempFile(`drains-joining-${workers}-${listed === 'later' ? 'later' : 'start'}.yaml`, [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
      `workers: ${workers}`,
      'log: { level: info, access: false }',
      'affinity: { key: header, header: { name: X-User } }',
      'health: { shared: redis, active: { enabled: false } }',
      `state: { store: redis, redis: { url: "${redis.url}" } }`,
      `discovery: { dns: { name: ${NAME}, port: ${appPort}, srv: false, interval: 100ms, family: ipv4, servers: ["127.0.0.1:${dnsPort}"] } }`,
      'upstreams: []',
      '',
    ].join('\n'))
    const { out } = await (workers === 1 ? startSingle : startPrimary)(t, file)
    const admins = workers === 1 ? [`http://127.0.0.1:${adminPort}`] : await (async () => {
      await waitFor(() => workerAdmins(out()).size === 2, 60_000, 'both workers\' admin listeners')
      return [...workerAdmins(out()).values()]
    })()
    for (const admin of admins) await waitFor(async () => (await states(admin)).get(id('127.0.0.1')) === 'healthy', 10_000, 'the first list on every process')
    t.notOk(/recorded drains were not read/.test(out()), 'the drains were read')

    // 127.0.0.2 joins: every process drains it (the recorded drain), none places a new user on it
    dns.set(NAME, { a: ['127.0.0.1', '127.0.0.2'], aaaa: [] })
    for (const admin of admins) await waitFor(async () => (await states(admin)).has(id('127.0.0.2')), 10_000, 'the joined upstream listed on every process')
    for (const [i, admin] of admins.entries()) t.equal((await states(admin)).get(id('127.0.0.2')), 'draining', `process ${i}: the joined upstream drained as recorded`)
    const placed = new Map<string, number>()
    for (let u = 0; u < USERS; u++) {
      const r = await request(`http://127.0.0.1:${port}/`, null, { headers: { 'x-user': `user-${u}` } })
      const a = r.status === 200 ? (JSON.parse(r.body) as Echo).id : `status ${r.status}`
      placed.set(a, (placed.get(a) ?? 0) + 1)
    }
    t.same(Object.fromEntries(placed), { '127.0.0.1': USERS }, `each of ${USERS} new users (new connections) placed on 127.0.0.1, none on the drained 127.0.0.2`)
  })
}

t.test('a recorded drain waiting for its upstream: applied when it joins (with its recorded start), unless a drain or undrain of it came since, a later read no longer has it, or it is older than a week; undone when its record is gone by then', async (t) => {
  const health = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { consecutive_failures: 3, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 50 }, slow_start: 0 }, new FakeClock(Date.now()))
  health.setUpstreams(['a'])
  const recent = String(Date.now() - 60_000)
  const old = String(Date.now() - RECORDED_MS - 60_000)
  const record = new Map([
    ['drains', new Map([['a', 'stay'], ['p', 'migrate'], ['u', 'stay'], ['d', 'stay'], ['r', 'stay'], ['gone', 'stay'], ['term', 'migrate'], ['old', 'stay']])],
    ['drain-starts', new Map([['a', recent], ['p', recent], ['u', recent], ['d', recent], ['r', recent], ['gone', recent], ['term', recent], ['old', old]])],
    ['drain-changes', new Map([['a', recent], ['p', recent], ['u', recent], ['d', recent], ['r', recent], ['gone', recent], ['term', recent], ['old', old]])],
  ])
  let hear: (m: string) => void = () => undefined
  let reads = 0
  let resubscribed: () => void = () => undefined
  const channel: PeerChannel = {
    publish: () => Promise.resolve(true),
    subscribe: (fn, onSubscribed) => { hear = fn; resubscribed = onSubscribed ?? resubscribed; return Promise.resolve() },
    remember: () => Promise.resolve(true),
    members: (set) => { reads++; return Promise.resolve(new Map(record.get(set))) },
  }
  const logs = new LogCapture()
  const shared = new SharedHealth(channel, health, createLogger('info', logs))
  await shared.start()
  t.equal(health.state('a'), 'draining', 'a drain of an upstream in the set applies at the read, as before')

  health.setUpstreams(['a', 'p'])
  await Promise.resolve() // (applied in a microtask after the set change: before any I/O callback places a request)
  t.equal(health.state('p'), 'draining', 'an upstream that joins after the read: its recorded drain applies')
  t.equal(health.drainMigrates('p'), true, 'migrating as recorded')
  t.equal(health.drainingSince('p'), Number(recent), 'from its recorded start')

  hear(JSON.stringify({ from: 'other', kind: 'undrain', id: 'u', recorded: true }))
  const dSince = Date.now() - 1_000
  hear(JSON.stringify({ from: 'other', kind: 'drain', id: 'd', migrate: true, since: dSince }))
  hear(JSON.stringify({ from: 'other', kind: 'drain', id: 'new', since: dSince })) // not recorded when read: a drain made since
  health.setUpstreams(['a', 'p', 'u', 'd', 'new'])
  await Promise.resolve()
  t.equal(health.state('u'), 'healthy', 'an undrain heard while it waited: not drained when it joins')
  t.same([health.drainingSince('d'), health.drainMigrates('d')], [dSince, true], 'a drain heard while it waited: that drain applies when it joins (its start, its kind), not the record read')
  t.equal(health.drainingSince('new'), dSince, 'so does a drain heard for an id not in the set and not recorded at the read (not undone: its sender records it after it publishes, a read now could come first)')

  health.setUpstreams(['a', 'p', 'u', 'd', 'new', 'old'])
  await Promise.resolve()
  t.equal(health.state('old'), 'healthy', 'a record older than a week is not applied when its upstream joins')

  // a read after the subscription is back no longer has r (its record was removed): r waits no more
  record.get('drains')!.delete('r')
  const before = reads
  resubscribed()
  await waitFor(() => reads === before + 4, 5_000, 'the read of the four sets (the three of the drains, the ejections)')
  await new Promise((r) => setImmediate(r))
  health.setUpstreams(['a', 'p', 'u', 'd', 'new', 'old', 'r'])
  await Promise.resolve()
  t.equal(health.state('r'), 'healthy', 'a drain no longer recorded at a later read is not applied')

  // gone's record is removed between the read and its join (it left another replica's set): applied, then undone once read again
  record.get('drains')!.delete('gone')
  health.setUpstreams(['a', 'p', 'u', 'd', 'new', 'old', 'r', 'gone'])
  await Promise.resolve()
  t.equal(health.state('gone'), 'draining', 'applied at once when it joins (no request placed on it before the record is read again)')
  await waitFor(() => health.state('gone') === 'healthy', 5_000, 'the drain without a record to be undone')
  t.equal(logs.records.filter((r) => typeof r['msg'] === 'string' && r['msg'].includes('was undone: its record is gone')).length, 1, 'said in the log')
  t.same(['p', 'd', 'new'].map((id) => health.state(id)), ['draining', 'draining', 'draining'], 'the drains still recorded stand')

  // a terminating pod (discovery drains it as it joins) whose recorded drain is gone by then: discovery's drain stays
  record.get('drains')!.delete('term')
  health.setUpstreams(['a', 'p', 'u', 'd', 'new', 'old', 'r', 'gone', 'term'])
  const began = Date.now() - 2_000
  health.drain('term', false, began, 'discovery')
  await Promise.resolve()
  t.same(health.adminDrain('term'), { migrate: true }, "the recorded (migrating) drain joins discovery's")
  await waitFor(() => health.adminDrain('term') === null, 5_000, 'the drain without a record to be undone')
  t.same([health.state('term'), health.drainingSince('term'), health.drainMigrates('term')], ['draining', began, false], "discovery's drain goes on, from its start, as it was")
})
