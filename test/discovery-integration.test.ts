// DNS discovery end to end: Tether resolves a name on the test DNS server and proxies to every
// address on one port. The upstreams listen on distinct loopback addresses (127.0.0.1, .2, .3:
// Linux routes all of 127/8 to lo) with the same port. Added addresses receive new users; a
// removed one drains (its users stay until drain_timeout), then leaves; DNS failures keep the
// last known set. Tether's background timers (the refresh interval, the DNS deadline, the drain
// timer) are FakeTimers: each refresh is one advance and a wait for the resolution to set the
// next interval timer, so nothing here depends on how fast the machine is.
import t, { type Test } from 'tap'
import { request, testConfig } from './fixtures/upstream.js'
import { CookieJar, agentFor, get, tally } from './fixtures/users.js'
import { TestDnsServer } from './fixtures/dns-server.js'
import { LOOPBACK_ADDRESSES as ADDRESSES, closeServer as close, sameportUpstreams, type Echo } from './fixtures/sameport-upstreams.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { FakeTimers } from './fixtures/timers.js'
import { onEvent, when } from './fixtures/wait.js'
import type { Counter } from './fixtures/counter-upstream.js'
import { REPLACED, RECREATED_POD_CONFIG, checkRecreatedPod, counterPods } from './fixtures/recreated-pod.js'

const NAME = 'app.tether.test'
const DRAIN_TIMEOUT = 1_500
const INTERVAL = 100
const DNS_TIMEOUT = 2_000 // DnsDiscovery's default deadline (fake ms here)

/** The same-port upstreams and a DNS server answering NAME with 127.0.0.1 and 127.0.0.2 for them. */
async function upstreamsAndDns(t: Test): Promise<{ port: number; hits: Map<string, number>; dns: TestDnsServer; dnsPort: number; id: (address: string) => string }> {
  const { port, servers, hits } = await sameportUpstreams()
  t.teardown(async () => { await Promise.all(servers.map(close)) })
  const dns = new TestDnsServer()
  const { port: dnsPort } = await dns.start()
  t.teardown(() => dns.close())
  dns.set(NAME, { a: ['127.0.0.1', '127.0.0.2'], aaaa: [] })
  return { port, hits, dns, dnsPort, id: (address) => `${address}:${port}` }
}

/** One DNS refresh: the interval timer fires; the resolution ends by setting the next one. */
function refresher(timers: FakeTimers): () => Promise<void> {
  return async () => {
    timers.advance(INTERVAL)
    await timers.scheduled(INTERVAL)
  }
}

t.test('DNS discovery: discovered upstreams serve, additions get new users, removals drain then leave, failures keep the set', async (t) => {
  const { port, hits, dns, dnsPort, id } = await upstreamsAndDns(t)

  const log = new LogCapture()
  const timers = new FakeTimers()
  const tether = await startTether(testConfig([], {
    affinity: { key: 'cookie', drain_timeout: DRAIN_TIMEOUT },
    discovery: { dns: { name: NAME, port, srv: false, interval: INTERVAL, family: 'ipv4', servers: [`127.0.0.1:${dnsPort}`] } },
    log: { level: 'info', access: false },
  }), { logger: createLogger('info', log), timers })
  t.teardown(() => tether.close(0))
  const refresh = refresher(timers)
  const agent = agentFor(t)
  t.same(tether.router.ids, [id('127.0.0.1'), id('127.0.0.2')], 'the first resolution is in place when startTether resolves')
  t.equal((await request(`${tether.adminUrl}/readyz`)).status, 200)

  interface User { jar: CookieJar; seen: Echo[] }
  const ask = async (u: User): Promise<Echo> => {
    const r = await get(`${tether.url}/`, agent, {}, u.jar)
    if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body}`)
    const e = JSON.parse(r.body) as Echo
    u.seen.push(e)
    return e
  }
  const newUsers = async (n: number): Promise<User[]> => {
    const users: User[] = Array.from({ length: n }, () => ({ jar: new CookieJar(), seen: [] }))
    await Promise.all(users.map((u) => ask(u)))
    return users
  }
  const home = (u: User): string => u.seen.at(-1)!.id

  // both discovered upstreams serve
  const first = await newUsers(40)
  const spread = tally(first.map(home))
  t.ok((spread.get('127.0.0.1') ?? 0) > 0 && (spread.get('127.0.0.2') ?? 0) > 0, `both serve (${JSON.stringify(Object.fromEntries(spread))})`)

  // an address added to DNS starts receiving new users; existing users stay
  dns.set(NAME, { a: ['127.0.0.1', '127.0.0.2', '127.0.0.3'], aaaa: [] })
  await refresh()
  t.same(tether.router.ids, ADDRESSES.map(id), 'the next refresh discovers 127.0.0.3')
  const second = await newUsers(60)
  const spread2 = tally(second.map(home))
  t.ok((spread2.get('127.0.0.3') ?? 0) > 0, `the added upstream receives new users (${JSON.stringify(Object.fromEntries(spread2))})`)
  for (const u of first) await ask(u)
  t.ok(first.every((u) => u.seen[1]!.id === u.seen[0]!.id), 'existing users stay where they were')

  // an address removed from DNS drains: its users stay until drain_timeout, then move; then it leaves
  const users = [...first, ...second]
  const onTwo = users.filter((u) => home(u) === '127.0.0.2')
  t.ok(onTwo.length > 0, `127.0.0.2 has ${onTwo.length} users`)
  dns.set(NAME, { a: ['127.0.0.1', '127.0.0.3'], aaaa: [] })
  await refresh()
  const row = async (): Promise<{ id: string; state: string; draining: boolean } | undefined> => {
    const rows = JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as { id: string; state: string; draining: boolean }[]
    return rows.find((r) => r.id === id('127.0.0.2'))
  }
  t.match(await row(), { state: 'draining', draining: true }, 'the refresh that drops it starts its drain: GET /upstreams shows it draining')
  const stayed = await Promise.all(onTwo.map(async (u) => (await ask(u)).id))
  t.ok(stayed.every((a) => a === '127.0.0.2'), 'its users still reach it while it drains')
  const third = await newUsers(40)
  t.notOk(third.some((u) => home(u) === '127.0.0.2'), 'no new user lands on the draining upstream')

  timers.advance(DRAIN_TIMEOUT - 1) // refreshes fall due meanwhile: let the one under way end
  await timers.scheduled(INTERVAL)
  t.match(await row(), { state: 'draining' }, 'still there 1 ms before drain_timeout')
  timers.advance(1)
  t.equal(await row(), undefined, 'it leaves /upstreams at drain_timeout')
  for (const u of onTwo) { await ask(u); await ask(u) }
  const reasons = new Set<string>()
  let ok = true
  for (const u of onTwo) {
    const moves = u.seen.filter((e) => e.moved !== null)
    const after = u.seen.slice(u.seen.findIndex((e) => e.moved !== null))
    const m = /^from=127\.0\.0\.2:\d+; reason=(drain|dead); epoch=1$/.exec(moves[0]?.moved ?? '')
    if (moves.length !== 1 || m === null || !after.every((e) => e.id === after[0]!.id && e.id !== '127.0.0.2')) ok = false
    else reasons.add(m[1]!)
  }
  t.ok(ok, 'its users moved once (X-Tether-Moved from it, epoch 1) and stayed')
  t.comment(`move reasons seen for the removed upstream's users: ${[...reasons].join(', ')}`)
  t.same([...reasons], ['drain'], 'they were told it was drained (reason=drain), not dead')

  // DNS failures keep the last known set and requests keep succeeding
  const kept = [id('127.0.0.1'), id('127.0.0.3')]
  t.same(tether.router.ids, kept)
  const warnings = (code: string): number => log.records.filter((r) => r['msg']?.toString().startsWith('DNS discovery failed') && r['code'] === code).length
  const warned = (code: string, n: number): Promise<void> => when(onEvent(log, 'record'), () => warnings(code) >= n, 5_000, `${n} '${code}' warnings`)
  dns.mode = 'servfail'
  for (let i = 0; i < 3; i++) await refresh()
  await warned('ESERVFAIL', 1)
  t.equal(warnings('ESERVFAIL'), 1, 'a SERVFAIL that lasts is logged once (then at most every 30 s, with a count): not once per resolution')
  t.same(tether.router.ids, kept, 'SERVFAIL: the set is kept')
  const servfail = await Promise.all(users.map((u) => get(`${tether.url}/`, agent, {}, u.jar)))
  t.ok(servfail.every((r) => r.status === 200), 'requests keep succeeding during SERVFAIL')
  dns.mode = 'drop'
  timers.advance(INTERVAL) // a query is asked; the server drops it
  timers.advance(DNS_TIMEOUT) // its deadline
  await timers.scheduled(INTERVAL)
  await warned('ETIMEOUT', 1)
  t.equal(warnings('ETIMEOUT'), 1, 'the unanswered query is logged as a timeout')
  t.same(tether.router.ids, kept, 'no answer: the set is kept')
  const during = await Promise.all(users.map((u) => get(`${tether.url}/`, agent, {}, u.jar)))
  t.ok(during.every((r) => r.status === 200), 'requests keep succeeding while DNS does not answer')
  dns.mode = 'answer'
  await refresh()
  await when(onEvent(log, 'record'), () => log.records.some((r) => r['msg'] === 'DNS discovery: resolving again'), 5_000, 'the recovery line')
  t.ok((hits.get('127.0.0.2') ?? 0) > 0, 'the removed upstream did serve before')
})

t.test("an address that leaves DNS and comes back does not end an admin's drain of it (only discovery's own)", async (t) => {
  const { port, dns, dnsPort, id } = await upstreamsAndDns(t)
  const timers = new FakeTimers()
  const tether = await startTether(testConfig([], {
    affinity: { key: 'cookie', drain_timeout: 60_000 },
    discovery: { dns: { name: NAME, port, srv: false, interval: INTERVAL, family: 'ipv4', servers: [`127.0.0.1:${dnsPort}`] } },
  }), { logger: createLogger('silent'), timers })
  t.teardown(() => tether.close(0))
  const refresh = refresher(timers)
  t.equal((await request(`${tether.adminUrl}/upstreams/${id('127.0.0.2')}/drain`, { method: 'POST' })).status, 200, 'an operator drains 127.0.0.2')
  dns.set(NAME, { a: ['127.0.0.1'], aaaa: [] }) // a readiness flap: it leaves DNS
  await refresh()
  dns.set(NAME, { a: ['127.0.0.1', '127.0.0.2'], aaaa: [] }) // and comes back
  await refresh()
  t.same(tether.router.ids, [id('127.0.0.1'), id('127.0.0.2')], 'back in the set')
  t.equal(tether.health.state(id('127.0.0.2')), 'draining', "the operator's drain goes on")
  t.equal((await request(`${tether.adminUrl}/upstreams/${id('127.0.0.2')}/undrain`, { method: 'POST' })).status, 200)
  t.equal(tether.health.state(id('127.0.0.2')), 'healthy', 'until the operator ends it')
})

t.test('family any: AAAA failing while A answers still serves the A addresses; /readyz names the failing query under degraded', async (t) => {
  const { port, dns, dnsPort, id } = await upstreamsAndDns(t)
  dns.failQuery(NAME, 'AAAA', 'servfail')
  const log = new LogCapture()
  const timers = new FakeTimers()
  const tether = await startTether(testConfig([], {
    affinity: { key: 'cookie', drain_timeout: 60_000 },
    discovery: { dns: { name: NAME, port, srv: false, interval: INTERVAL, family: 'any', servers: [`127.0.0.1:${dnsPort}`] } },
    log: { level: 'info', access: false },
  }), { logger: createLogger('info', log), timers })
  t.teardown(() => tether.close(0))
  const refresh = refresher(timers)
  t.same(tether.router.ids, [id('127.0.0.1'), id('127.0.0.2')], 'the A addresses are in place when startTether resolves')
  t.equal((await get(`${tether.url}/`, agentFor(t), {}, new CookieJar())).status, 200, 'requests are served')
  const readyz = async (): Promise<{ ready: boolean; degraded: string[] }> => JSON.parse((await request(`${tether.adminUrl}/readyz`)).body) as { ready: boolean; degraded: string[] }
  const degraded = await readyz()
  t.equal(degraded.ready, true)
  t.same(degraded.degraded, [`DNS discovery of ${NAME} (A+AAAA) failed in part (AAAA of ${NAME}: ESERVFAIL); using the answers that came and the last known addresses of what failed: 2 upstreams (1 failed or partly failed resolution in a row)`])
  const warning = log.records.find((r) => r['code'] === 'ESERVFAIL')
  t.match(warning, { msg: 'DNS discovery failed in part; using the answers that came, the failed queries keep their last known addresses', failures: 1 })

  dns.set(NAME, { a: ['127.0.0.1', '127.0.0.2', '127.0.0.3'], aaaa: [] })
  await refresh()
  t.same(tether.router.ids, [id('127.0.0.1'), id('127.0.0.2'), id('127.0.0.3')], 'an A address added while AAAA still fails joins')
  dns.failQuery(NAME, 'AAAA', 'answer')
  await refresh()
  t.same((await readyz()).degraded, [], 'AAAA answers (empty) again: no longer degraded')
})

const SRV_NAME = '_http._tcp.web.tether.test'
const target = (pod: string): string => `${pod}.web.tether.test`

/** A DNS server answering SRV_NAME with one record per pod (its port) and each target with its A (and AAAA) addresses. */
async function srvDns(t: Test): Promise<{ dns: TestDnsServer; dnsPort: number; publish(pods: Record<string, { port: number; a: string[]; aaaa?: string[] }>): void }> {
  const dns = new TestDnsServer()
  const { port: dnsPort } = await dns.start()
  t.teardown(() => dns.close())
  const publish = (pods: Record<string, { port: number; a: string[]; aaaa?: string[] }>): void => {
    dns.set(SRV_NAME, { a: [], aaaa: [], srv: Object.entries(pods).map(([pod, p]) => ({ priority: 0, weight: 1, port: p.port, target: target(pod) })) })
    for (const [pod, p] of Object.entries(pods)) dns.set(target(pod), { a: p.a, aaaa: p.aaaa ?? [] })
  }
  return { dns, dnsPort, publish }
}

t.test('SRV: a pod re-created at a new address (same name, another url) is a replaced replica: its WebSockets close with 1012, its users are rehydrated there with reason=restart', async (t) => {
  const pods = await counterPods(t)
  const { dnsPort, publish } = await srvDns(t)
  const at = (c: Counter): { port: number; a: string[] } => ({ port: c.port, a: ['127.0.0.1'] })
  publish({ 'web-0': at(pods.get('web-0')!), 'web-1': at(pods.get('web-1')!) })
  const log = new LogCapture()
  const tether = await startTether(testConfig([], {
    ...RECREATED_POD_CONFIG,
    discovery: { dns: { name: SRV_NAME, port: null, srv: true, interval: INTERVAL, family: 'ipv4', servers: [`127.0.0.1:${dnsPort}`] } },
  }), { logger: createLogger('info', log) }) // real timers: Tether's close waits for the tunnels on them
  t.teardown(() => tether.close(0))
  t.same(tether.router.ids, ['web-0', 'web-1'], 'ids are the SRV targets\' pod names')
  await checkRecreatedPod(t, tether, log, pods, (next) => publish({ 'web-0': at(next), 'web-1': at(pods.get('web-1')!) }))
})

type SrvPod = { a: string[]; aaaa?: string[] }

/**
 * Same-port upstreams, and Tether on FakeTimers discovering web-0 over SRV with `family`, first
 * at `first` (and the pods of `others`, always listed); `step` publishes web-0's next addresses
 * (null: web-0 missing from the SRV answer), refreshes once and returns its url;
 * `replacedLines` counts the restarts seen.
 */
async function srvPod(t: Test, family: 'ipv4' | 'any', first: SrvPod, others: Record<string, SrvPod> = {}) {
  const { port, servers } = await sameportUpstreams()
  t.teardown(async () => { await Promise.all(servers.map(close)) })
  const { dns, dnsPort, publish: publishAll } = await srvDns(t)
  const publish = (web0: Record<string, { port: number } & SrvPod> | null): void =>
    publishAll({ ...web0, ...Object.fromEntries(Object.entries(others).map(([pod, p]) => [pod, { port, ...p }])) })
  publish({ 'web-0': { port, ...first } })
  const log = new LogCapture()
  const timers = new FakeTimers()
  const tether = await startTether(testConfig([], {
    discovery: { dns: { name: SRV_NAME, port: null, srv: true, interval: INTERVAL, family, servers: [`127.0.0.1:${dnsPort}`] } },
    affinity: { drain_timeout: DRAIN_TIMEOUT },
    log: { level: 'info', access: false },
  }), { logger: createLogger('info', log), timers, clock: timers.clock })
  t.teardown(() => tether.close(0))
  const refresh = refresher(timers)
  const url = async (): Promise<string | undefined> => (JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as { id: string; url: string }[]).find((r) => r.id === 'web-0')?.url
  const step = async (next: SrvPod | null): Promise<string | undefined> => {
    publish(next === null ? null : { 'web-0': { port, ...next } })
    await refresh()
    return url()
  }
  return { port, dns, url, step, log, replacedLines: (): number => log.records.filter((r) => r['msg'] === REPLACED).length }
}

t.test('SRV: a target listing several addresses keeps its url while that address is still listed (a new address sorting first is no restart)', async (t) => {
  const { port, url, step, replacedLines } = await srvPod(t, 'ipv4', { a: ['127.0.0.2', '127.0.0.3'] })
  t.equal(await url(), `http://127.0.0.2:${port}`, 'the first address in text order')
  t.equal(await step({ a: ['127.0.0.1', '127.0.0.2'] }), `http://127.0.0.2:${port}`, '127.0.0.1 listed too (it sorts first): web-0 stays at 127.0.0.2')
  t.equal(await step({ a: ['127.0.0.3', '127.0.0.2', '127.0.0.1'] }), `http://127.0.0.2:${port}`, 'reordered: it stays')
  t.equal(replacedLines(), 0, 'no restart was seen')
  t.equal(await step({ a: ['127.0.0.3', '127.0.0.1'] }), `http://127.0.0.1:${port}`, 'its address gone: the first one listed')
  t.equal(replacedLines(), 1, 'and that is a replaced replica')
})

t.test('SRV, family any: a family answering empty for a moment while the other is unchanged is no restart (the url stays)', async (t) => {
  const { port, url, step, log, replacedLines } = await srvPod(t, 'any', { a: ['127.0.0.2'], aaaa: ['::1'] })
  t.equal(await url(), `http://127.0.0.2:${port}`, 'the first address in text order')
  // A: NODATA for one resolution (a DNS cache hiccup)
  t.equal(await step({ a: [], aaaa: ['::1'] }), `http://127.0.0.2:${port}`, 'A empty while AAAA is unchanged: web-0 stays at its IPv4 address (it moved to [::1] before)')
  t.match(log.records.filter((r) => r['msg'] === 'DNS discovery: an empty family of an SRV target').map((r) => r['note']),
    [/^A of web-0\..* answered empty while its AAAA is unchanged: keeping its last addresses \(127\.0\.0\.2\) for up to \d+ ms$/], 'logged (info), once')
  t.equal(await step({ a: ['127.0.0.2'], aaaa: ['::1'] }), `http://127.0.0.2:${port}`, 'A back: still there')
  t.equal(replacedLines(), 0, 'no restart was seen')
  t.equal(await step({ a: [], aaaa: ['::2'] }), `http://[::2]:${port}`, 'A empty and AAAA new: a re-created pod')
  t.equal(replacedLines(), 1, 'and that is a replaced replica')
})

t.test('SRV, family any: a family answering empty for affinity.drain_timeout goes (the url moves, logged)', async (t) => {
  const { port, url, step, log, replacedLines } = await srvPod(t, 'any', { a: ['127.0.0.2'], aaaa: ['::1'] })
  t.equal(await url(), `http://127.0.0.2:${port}`)
  const urls: (string | undefined)[] = []
  for (let elapsed = 0; elapsed < DRAIN_TIMEOUT; elapsed += INTERVAL) urls.push(await step({ a: [], aaaa: ['::1'] }))
  t.same(new Set(urls), new Set([`http://127.0.0.2:${port}`]), `A empty for less than drain_timeout (${DRAIN_TIMEOUT} ms, from its first empty answer): kept`)
  t.equal(replacedLines(), 0)
  t.equal(await step({ a: [], aaaa: ['::1'] }), `http://[::1]:${port}`, 'empty for drain_timeout: the family goes, and the url with it')
  t.equal(replacedLines(), 1, 'a replaced replica')
  t.match(log.records.filter((r) => r['msg'] === 'DNS discovery: an empty family of an SRV target').map((r) => r['note']),
    [/keeping its last addresses \(127\.0\.0\.2\) for up to 1500 ms$/, /answered empty for 1500 ms: its addresses \(127\.0\.0\.2\) go$/])
})

t.test('SRV, family any: a target missing from one SRV answer that comes back with a family failing is the same upstream (no restart)', async (t) => {
  // AAAA first: web-0's url is its IPv6 address; web-1 keeps the SRV answer from being empty
  const { port, dns, url, step, replacedLines } = await srvPod(t, 'any', { a: [], aaaa: ['::1'] }, { 'web-1': { a: ['127.0.0.3'] } })
  const v6 = `http://[::1]:${port}`
  t.equal(await url(), v6)
  t.equal(await step({ a: ['127.0.0.2'], aaaa: ['::1'] }), v6, 'an A address joins: web-0 stays at its IPv6 address')
  t.equal(await step(null), v6, 'missing from one SRV answer: web-0 drains, at its url')
  dns.failQuery(target('web-0'), 'AAAA', 'servfail')
  t.equal(await step({ a: ['127.0.0.2'], aaaa: ['::1'] }), v6, 'back with its AAAA query failing: still at its IPv6 address')
  dns.failQuery(target('web-0'), 'AAAA', 'answer')
  t.equal(await step({ a: ['127.0.0.2'], aaaa: ['::1'] }), v6)
  t.equal(replacedLines(), 0, 'no replaced replica was seen')
})
