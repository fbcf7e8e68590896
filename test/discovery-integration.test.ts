// DNS discovery end to end: Tether resolves a name on the test DNS server every 100 ms and
// proxies to every address on one port. The upstreams listen on distinct loopback addresses
// (127.0.0.1, .2, .3: Linux routes all of 127/8 to lo) with the same port. Added addresses
// receive new users; a removed one drains (its users stay until drain_timeout), then leaves;
// DNS failures keep the last known set.
import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { request, testConfig, waitFor } from './fixtures/upstream.js'
import { CookieJar, get, tally, userAgent } from './fixtures/users.js'
import { TestDnsServer } from './fixtures/dns-server.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'

const NAME = 'app.tether.test'
const ADDRESSES = ['127.0.0.1', '127.0.0.2', '127.0.0.3']
const DRAIN_TIMEOUT = 1_500

interface Echo { id: string; moved: string | null; epoch: string | null }

function listen(server: http.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => { server.off('error', reject); resolve() })
  })
}

function close(server: http.Server): Promise<void> {
  return new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()) })
}

/** One echo server per address, all on the same port (found by trying a few). */
async function sameportUpstreams(): Promise<{ port: number; servers: http.Server[]; hits: Map<string, number> }> {
  const hits = new Map<string, number>()
  const make = (address: string): http.Server => http.createServer((req, res) => {
    hits.set(address, (hits.get(address) ?? 0) + 1)
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ id: address, moved: req.headers['x-tether-moved'] ?? null, epoch: req.headers['x-tether-epoch'] ?? null }))
  })
  for (let attempt = 0; attempt < 20; attempt++) {
    const first = make(ADDRESSES[0]!)
    await listen(first, 0, ADDRESSES[0]!)
    const port = (first.address() as AddressInfo).port
    const servers = [first]
    try {
      for (const address of ADDRESSES.slice(1)) {
        const s = make(address)
        await listen(s, port, address)
        servers.push(s)
      }
      return { port, servers, hits }
    } catch {
      await Promise.all(servers.map(close))
    }
  }
  throw new Error('no port free on every loopback address')
}

t.test('DNS discovery: discovered upstreams serve, additions get new users, removals drain then leave, failures keep the set', async (t) => {
  const { port, servers, hits } = await sameportUpstreams()
  t.teardown(async () => { await Promise.all(servers.map(close)) })
  const dns = new TestDnsServer()
  const { port: dnsPort } = await dns.start()
  t.teardown(() => dns.close())
  dns.set(NAME, { a: ['127.0.0.1', '127.0.0.2'], aaaa: [] })
  const id = (address: string): string => `${address}:${port}`

  const log = new LogCapture()
  const tether = await startTether(testConfig([], {
    affinity: { key: 'cookie', drain_timeout: DRAIN_TIMEOUT },
    discovery: { dns: { name: NAME, port, srv: false, interval: 100, family: 'ipv4', servers: [`127.0.0.1:${dnsPort}`] } },
    log: { level: 'info', access: false },
  }), { logger: createLogger('info', log) })
  t.teardown(() => tether.close(0))
  const agent = userAgent(20)
  t.teardown(() => agent.destroy())
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
  await waitFor(() => tether.router.ids.includes(id('127.0.0.3')), 3_000, '127.0.0.3 to be discovered')
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
  const removedAt = Date.now()
  const row = async (): Promise<{ id: string; state: string; draining: boolean } | undefined> => {
    const rows = JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as { id: string; state: string; draining: boolean }[]
    return rows.find((r) => r.id === id('127.0.0.2'))
  }
  await waitFor(async () => (await row())?.state === 'draining', 3_000, '127.0.0.2 to drain')
  t.match(await row(), { state: 'draining', draining: true }, 'GET /upstreams shows it draining')
  const stayed = await Promise.all(onTwo.map(async (u) => (await ask(u)).id))
  const stillThere = Date.now() - removedAt < DRAIN_TIMEOUT
  if (stillThere) t.ok(stayed.every((a) => a === '127.0.0.2'), 'its users still reach it while it drains')
  else t.comment('too slow to check the users of the draining upstream before drain_timeout')
  const third = await newUsers(40)
  t.notOk(third.some((u) => home(u) === '127.0.0.2'), 'no new user lands on the draining upstream')

  await waitFor(async () => (await row()) === undefined, DRAIN_TIMEOUT + 3_000, '127.0.0.2 to leave /upstreams')
  t.pass(`it left /upstreams after ${Date.now() - removedAt} ms (drain_timeout ${DRAIN_TIMEOUT} ms)`)
  t.ok(Date.now() - removedAt >= DRAIN_TIMEOUT - 50, 'not before drain_timeout')
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
  dns.mode = 'servfail'
  await waitFor(() => warnings('ESERVFAIL') >= 3, 3_000, 'three SERVFAIL answers')
  t.same(tether.router.ids, kept, 'SERVFAIL: the set is kept')
  const servfail = await Promise.all(users.map((u) => get(`${tether.url}/`, agent, {}, u.jar)))
  t.ok(servfail.every((r) => r.status === 200), 'requests keep succeeding during SERVFAIL')
  dns.mode = 'drop'
  await waitFor(() => warnings('ETIMEOUT') >= 1, 6_000, 'a DNS timeout')
  t.same(tether.router.ids, kept, 'no answer: the set is kept')
  const during = await Promise.all(users.map((u) => get(`${tether.url}/`, agent, {}, u.jar)))
  t.ok(during.every((r) => r.status === 200), 'requests keep succeeding while DNS does not answer')
  dns.mode = 'answer'
  t.ok((hits.get('127.0.0.2') ?? 0) > 0, 'the removed upstream did serve before')
})
