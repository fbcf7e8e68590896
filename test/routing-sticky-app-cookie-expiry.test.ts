// Sticky routing end to end: simulated users (cookie jars, keep-alive) through Tether in front of
// real upstream servers on loopback; affinity expiry driven by a FakeClock, never by sleeping.
// Split from routing-sticky.test.ts (shared setup in test/fixtures/routing-sticky.ts); the other
// parts are routing-sticky-cookie-header.test.ts and routing-sticky-client-ip-changes.test.ts.
// Here: key app_cookie (1,000 users learning; a value re-issued on every answer), idle and absolute
// expiry, bounded loads and the debug header.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { proxyFor } from './fixtures/upstream.js'
import { FakeClock } from './fixtures/clock.js'
import { CookieJar, agentFor, decodeTetherCookie, get, runPool, setCookieValue, tally } from './fixtures/users.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'
import { CONCURRENCY, REQUESTS, USERS, assertStickyAndSpread, cookieCfg, idOf, laravel, simulate, upstreams } from './fixtures/routing-sticky.js'

// ---------------------------------------------------------------------------------------------
// 1. Stickiness per key kind (app_cookie)
// ---------------------------------------------------------------------------------------------

t.test('with key app_cookie, each of 1,000 users returns to the replica that created their session, which learning (not the hash) decided', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'], laravel)
  const tt = await proxyFor(t, ups, { affinity: { key: 'app_cookie', app_cookie: { name: 'laravel_session', fallback: 'random' } } })
  const logs = await simulate(tt.url, agentFor(t, CONCURRENCY), USERS, REQUESTS, { watch: 'laravel_session' })
  assertStickyAndSpread(t, logs)
  t.equal(logs.filter((l) => l.set[0] === null).length, 0, 'the first answer of every user set laravel_session')
  t.equal(logs.filter((l) => l.set.slice(1).some((v) => v !== null)).length, 0, 'no later request lost its session (no second Set-Cookie)')
  // requests 2..REQUESTS carry the cookie; they all went to the upstream that issued it on request 1
  const notCreator = logs.filter((l) => l.ids.slice(1).some((id) => id !== l.ids[0])).length
  t.equal(notCreator, 0, `requests 2..${REQUESTS} of every user went to the upstream that set the cookie on request 1`)
  const placement = buildPlacement(ups.map((u) => ({ id: u.id, weight: 1 })))
  const hashElsewhere = logs.filter((l) => placement.ids[placement.pick(hashKey(l.set[0]!))] !== l.ids[0]).length
  t.ok(hashElsewhere > 0.4 * USERS, `for ${hashElsewhere} of ${USERS} users the hash of the value points elsewhere, yet they stayed with the creator`)
  t.equal(tt.sessions.table.size, USERS, 'one learned binding per session')
})

t.test('with key app_cookie, users stay put when the upstream sets a new value on every response (like Laravel re-encrypting its cookie)', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'], (id) => (_req, res) => {
    res.setHeader('set-cookie', `laravel_session=${randomBytes(24).toString('base64url')}; path=/; httponly`)
    res.end(`${id}\n`)
  })
  const tt = await proxyFor(t, ups, { affinity: { key: 'app_cookie', app_cookie: { name: 'laravel_session', fallback: 'random' } } })
  const logs = await simulate(tt.url, agentFor(t, CONCURRENCY), 300, 10, { watch: 'laravel_session' })
  assertStickyAndSpread(t, logs)
  t.equal(logs.filter((l) => l.set.some((v) => v === null)).length, 0, 'every answer carried a new value')
  t.comment(`affinity table after 3,000 requests: ${tt.sessions.table.size} entries (one per value ever issued)`)
})

// ---------------------------------------------------------------------------------------------
// 3. Idle and absolute expiry (FakeClock)
// ---------------------------------------------------------------------------------------------

t.test('a cookie user active every 50 s keeps their upstream for minutes (sliding), and after 61 s idle gets a new session', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const clock = new FakeClock()
  const tt = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg(), idle_timeout: 60_000 } }, clock)
  const a = agentFor(t, CONCURRENCY)
  const jar = new CookieJar()
  const r0 = await get(tt.url, a, {}, jar)
  const home = idOf(r0.body)
  const session = decodeTetherCookie(jar.cookies.get('tether')!).sessionId
  let reissued = 0
  let wandered = 0
  for (let i = 1; i <= 8; i++) { // 8 x 50 s = 400 s, far past the 60 s idle timeout
    clock.advance(50_000)
    const r = await get(tt.url, a, {}, jar)
    if (idOf(r.body) !== home) wandered++
    const v = setCookieValue(r.headers['set-cookie'], 'tether')
    if (v !== null && decodeTetherCookie(v).sessionId === session && decodeTetherCookie(v).lastSeen === clock.now()) reissued++
  }
  t.equal(wandered, 0, 'the user stayed on their upstream for 400 s')
  t.equal(reissued, 8, 'each answer re-issued the same session with last-seen = now (sliding)')

  clock.advance(61_000)
  const r = await get(tt.url, a, {}, jar)
  t.equal(r.status, 200)
  const v = setCookieValue(r.headers['set-cookie'], 'tether')
  t.ok(v, 'after 61 s idle a new cookie is issued')
  const fresh = decodeTetherCookie(v!)
  t.not(fresh.sessionId, session, 'with a new session id')
  t.equal(fresh.issuedAt, clock.now(), 'issued now')
  t.equal(fresh.epoch, 0)
})

t.test('a header key idle past the timeout is dropped and placed afresh (new createdAt); active ones slide', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const clock = new FakeClock()
  const tt = await proxyFor(t, ups, { affinity: { key: 'header', header: { name: 'X-Tenant' }, idle_timeout: 60_000 } }, clock)
  const a = agentFor(t, CONCURRENCY)
  const h = { 'x-tenant': 'acme' }
  const home = idOf((await get(tt.url, a, h)).body)
  const created = clock.now()
  t.equal(tt.sessions.table.peek('acme', clock.now())?.createdAt, created, 'entry created')
  for (let i = 1; i <= 6; i++) {
    clock.advance(50_000)
    const id = idOf((await get(tt.url, a, h)).body)
    const e = tt.sessions.table.peek('acme', clock.now())
    t.ok(id === home && e?.createdAt === created && e.lastSeen === clock.now(), `after ${i * 50} s: same upstream, same entry, last seen now`)
  }
  clock.advance(61_000)
  t.equal(tt.sessions.table.peek('acme', clock.now()), null, 'idle 61 s: the entry is expired')
  const id = idOf((await get(tt.url, a, h)).body)
  const e = tt.sessions.table.peek('acme', clock.now())
  t.equal(e?.createdAt, clock.now(), 'the next request creates a new entry')
  t.equal(e?.upstream, id, '...bound to the upstream that served it')
  t.equal(tt.sessions.table.size, 1)
})

t.test('with idle 60 s and absolute 120 s, a user active every 30 s gets a new session after 120 s (cookie and header)', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const clock = new FakeClock()
  const start = clock.now()
  const timeouts = { idle_timeout: 60_000, absolute_timeout: 120_000 }
  const ct = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg(), ...timeouts } }, clock)
  const ht = await proxyFor(t, ups, { affinity: { key: 'header', header: { name: 'X-Tenant' }, ...timeouts } }, clock)
  const a = agentFor(t, CONCURRENCY)
  const jar = new CookieJar()
  const h = { 'x-tenant': 'acme' }
  const sessions: string[] = []
  const created: number[] = []
  for (let s = 0; s <= 180; s += 30) {
    clock.set(start + s * 1000)
    await get(ct.url, a, {}, jar)
    sessions.push(decodeTetherCookie(jar.cookies.get('tether')!).sessionId)
    await get(ht.url, a, h)
    created.push(ht.sessions.table.peek('acme', clock.now())!.createdAt)
  }
  // t = 0, 30, 60, 90, 120 | 150, 180
  t.equal(new Set(sessions.slice(0, 5)).size, 1, 'cookie: one session up to and including 120 s')
  t.not(sessions[5], sessions[0], 'cookie: a new session at 150 s (life > 120 s)')
  t.equal(sessions[6], sessions[5], 'cookie: which then continues')
  t.same(created.slice(0, 5), [start, start, start, start, start], 'header: one entry up to and including 120 s')
  t.equal(created[5], start + 150_000, 'header: a new entry at 150 s')
  t.equal(created[6], start + 150_000, 'header: which then continues')
})

// ---------------------------------------------------------------------------------------------
// 6. Bounded loads
// ---------------------------------------------------------------------------------------------

t.test('with balance_factor 1.25, no upstream holds more than ceil(1.25 x 300 / 3) + 1 of 300 new header users', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const affinity = { key: 'header', header: { name: 'X-Tenant' } } as const
  const bounded = await proxyFor(t, ups, { affinity: { ...affinity, balance_factor: 1.25 }, forwarding: { upstream_header: true } })
  const plain = await proxyFor(t, ups, { affinity, forwarding: { upstream_header: true } })
  const a = agentFor(t, CONCURRENCY)
  const limit = Math.ceil((1.25 * 300) / 3) + 1
  const count = async (url: string, keys: readonly string[]): Promise<Map<string, number>> => {
    const ids = await runPool(keys.length, CONCURRENCY, async (i) => {
      const r = await get(url, a, { 'x-tenant': keys[i]! })
      return String(r.headers['x-tether-upstream'])
    })
    return tally(ids)
  }
  const check = (counts: Map<string, number>, what: string): void => {
    const max = Math.max(...counts.values())
    t.ok(max <= limit, `${what}: busiest upstream holds ${max} <= ${limit} (${JSON.stringify([...counts])})`)
    t.equal([...counts.values()].reduce((x, y) => x + y, 0), 300)
  }
  check(await count(bounded.url, Array.from({ length: 300 }, (_, i) => `uniform-${i}`)), 'uniform keys')

  // keys whose hash prefers `a` two times in three: the plain hash overloads a, the bound must not
  const placement = buildPlacement(ups.map((u) => ({ id: u.id, weight: 1 })))
  const want = new Map([['a', 200], ['b', 50], ['c', 50]])
  const skewed: string[] = []
  for (let i = 0; skewed.length < 300; i++) {
    const key = `skew-${i}`
    const id = placement.ids[placement.pick(hashKey(key))]!
    if (want.get(id)! > 0) { want.set(id, want.get(id)! - 1); skewed.push(key) }
  }
  t.equal((await count(plain.url, skewed)).get('a'), 200, 'control: without a factor the hash puts 200 of the skewed users on a')
  const bounded2 = await proxyFor(t, ups, { affinity: { ...affinity, balance_factor: 1.25 }, forwarding: { upstream_header: true } })
  check(await count(bounded2.url, skewed), 'skewed keys')
})

// ---------------------------------------------------------------------------------------------
// 7. The debug header
// ---------------------------------------------------------------------------------------------

t.test('X-Tether-Upstream appears only with forwarding.upstream_header, and a client-sent one is never forwarded', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'], (id) => (req, res) => {
    res.setHeader('x-tether-upstream', 'forged-by-upstream')
    res.setHeader('x-seen', JSON.stringify(req.headers))
    res.end(`${id}\n`)
  })
  const on = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg() }, forwarding: { upstream_header: true } })
  const off = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg() } })
  const a = agentFor(t, CONCURRENCY)
  for (let i = 0; i < 6; i++) {
    const r = await get(on.url, a, { 'x-tether-upstream': 'c', 'X-Tether-Debug': '1' })
    t.equal(r.headers['x-tether-upstream'], idOf(r.body), 'on: the header names the upstream that answered (not the forged one)')
    const seen = JSON.parse(r.headers['x-seen'] as string) as Record<string, string>
    t.notOk('x-tether-upstream' in seen || 'x-tether-debug' in seen, 'on: the client-sent X-Tether-Upstream and X-Tether-Debug were not forwarded')
    const r2 = await get(off.url, a, { 'x-tether-upstream': 'c' })
    t.notOk('x-tether-upstream' in r2.headers, 'off: no X-Tether-Upstream in the answer')
    const seen2 = JSON.parse(r2.headers['x-seen'] as string) as Record<string, string>
    t.notOk('x-tether-upstream' in seen2, 'off: the client-sent X-Tether-Upstream was not forwarded')
  }
})
