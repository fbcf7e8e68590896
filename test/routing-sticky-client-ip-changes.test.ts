// Sticky routing end to end: simulated users (cookie jars, keep-alive) through Tether in front of
// real upstream servers on loopback; affinity expiry driven by a FakeClock, never by sleeping.
// Split from routing-sticky.test.ts (shared setup in test/fixtures/routing-sticky.ts); the other
// parts are routing-sticky-cookie-header.test.ts and routing-sticky-app-cookie-expiry.test.ts.
// Here: key client_ip (1,000 users behind a trusted proxy; a forged X-Forwarded-For), and users
// when the upstream set changes (scale-up, removal).
import t, { type Test } from 'tap'
import type http from 'node:http'
import { proxyFor } from './fixtures/upstream.js'
import { agentFor, decodeTetherCookie, get, runPool, tally } from './fixtures/users.js'
import type { Tether } from '../src/app.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'
import { CONCURRENCY, REQUESTS, USERS, asUpstreams, assertStickyAndSpread, cookieCfg, cookieRound, headerRound, idOf, jars, reloadUpstreams, simulate, upstreams, type Over } from './fixtures/routing-sticky.js'

// ---------------------------------------------------------------------------------------------
// 1. Stickiness per key kind (client_ip)
// ---------------------------------------------------------------------------------------------

t.test('with key client_ip behind a trusted proxy, each of 1,000 users (own X-Forwarded-For) always hits the same upstream', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const tt = await proxyFor(t, ups, { affinity: { key: 'client_ip', client_ip: { trusted_proxies: ['127.0.0.1/32'] } } })
  const ip = (i: number): string => `198.18.${i >> 8}.${i & 255}`
  const logs = await simulate(tt.url, agentFor(t, CONCURRENCY), USERS, REQUESTS, { headers: (i) => ({ 'x-forwarded-for': ip(i) }) })
  assertStickyAndSpread(t, logs)
  t.equal(tt.sessions.table.size, USERS, 'one table entry per client address')
  const placement = buildPlacement(ups.map((u) => ({ id: u.id, weight: 1 })))
  t.equal(logs.filter((l, i) => placement.ids[placement.pick(hashKey(ip(i)))] !== l.ids[0]).length, 0, 'placed by the hash of the forwarded address')
})

t.test('with key client_ip and no trusted proxies, a forged X-Forwarded-For cannot choose the upstream', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const tt = await proxyFor(t, ups, { affinity: { key: 'client_ip' } })
  const a = agentFor(t, CONCURRENCY)
  const ids = await runPool(300, CONCURRENCY, async (i) => {
    const xff = i % 3 === 0 ? `203.0.113.${i & 255}` : i % 3 === 1 ? `10.${i & 255}.0.1, 198.51.100.${i & 255}` : '127.0.0.1'
    return idOf((await get(tt.url, a, { 'x-forwarded-for': xff })).body)
  })
  t.same([...new Set(ids)], [ids[0]], `all 300 requests from 127.0.0.1 went to ${ids[0]}, whatever X-Forwarded-For said`)
  const placement = buildPlacement(ups.map((u) => ({ id: u.id, weight: 1 })))
  t.equal(ids[0], placement.ids[placement.pick(hashKey('127.0.0.1'))], "that is the peer address's placement")
  t.equal(tt.sessions.table.size, 1, 'one key: the peer address')
})

// ---------------------------------------------------------------------------------------------
// 4, 5. Upstream set changes
// ---------------------------------------------------------------------------------------------

t.test('on_scale_up', async (t) => {
  const abcd = ['a', 'b', 'c', 'd']
  const start = async (t: Test, over: Over): Promise<{ tt: Tether; a: http.Agent; grow: () => void }> => {
    const ups = await upstreams(t, abcd)
    const tt = await proxyFor(t, ups.slice(0, 3), over)
    return { tt, a: agentFor(t, CONCURRENCY), grow: () => reloadUpstreams(tt, asUpstreams(ups)) }
  }

  t.test('persistent keeps every pinned header user where they are; new users reach the new upstream', async (t) => {
    const { tt, a, grow } = await start(t, { affinity: { key: 'header', header: { name: 'X-Tenant' }, on_scale_up: 'persistent' } })
    const before = await headerRound(tt.url, a, 'u')
    t.notOk(before.includes('d'))
    grow()
    const after = await headerRound(tt.url, a, 'u')
    t.equal(after.filter((id, i) => id !== before[i]).length, 0, 'no existing user moved')
    const fresh = await headerRound(tt.url, a, 'new')
    const onD = fresh.filter((id) => id === 'd').length
    t.ok(onD >= 0.15 * 300, `new users reach d (${onD} of 300)`)
  })

  t.test('rebalance moves about 1/4 of header users, all to the new upstream and none between the old ones', async (t) => {
    const { tt, a, grow } = await start(t, { affinity: { key: 'header', header: { name: 'X-Tenant' }, on_scale_up: 'rebalance' } })
    const before = await headerRound(tt.url, a, 'u')
    grow()
    const after = await headerRound(tt.url, a, 'u')
    const moved = after.map((id, i) => [before[i]!, id] as const).filter(([b, n]) => b !== n)
    t.ok(moved.length >= 0.15 * 300 && moved.length <= 0.35 * 300, `between 15% and 35% moved (${moved.length} of 300)`)
    t.same([...new Set(moved.map(([, n]) => n))], ['d'], 'every moved user went to d')
    const again = await headerRound(tt.url, a, 'u')
    t.same(again, after, 'and they stay there')
  })

  t.test('persistent keeps every cookie user where their cookie pins them; new users reach the new upstream', async (t) => {
    const { tt, a, grow } = await start(t, { affinity: { key: 'cookie', cookie: cookieCfg(), on_scale_up: 'persistent' } })
    const users = jars(300)
    const before = await cookieRound(tt.url, a, users)
    grow()
    const after = await cookieRound(tt.url, a, users)
    t.equal(after.ids.filter((id, i) => id !== before.ids[i]).length, 0, 'no cookie user moved')
    t.equal(after.set.filter((v) => v !== null).length, 0, 'no cookie was re-issued')
    const fresh = await cookieRound(tt.url, a, jars(300))
    const onD = fresh.ids.filter((id) => id === 'd').length
    t.ok(onD >= 0.1 * 300, `new cookie users reach d (${onD} of 300)`)
  })

  t.test('rebalance moves about 1/4 of cookie users, all to the new upstream, with a re-issued cookie', async (t) => {
    const { tt, a, grow } = await start(t, { affinity: { key: 'cookie', cookie: cookieCfg(), on_scale_up: 'rebalance' } })
    const users = jars(300)
    const before = await cookieRound(tt.url, a, users)
    const sessions = users.map((j) => decodeTetherCookie(j.cookies.get('tether')!).sessionId)
    grow()
    const after = await cookieRound(tt.url, a, users)
    const moved = after.ids.flatMap((id, i) => (id !== before.ids[i] ? [i] : []))
    t.ok(moved.length >= 0.15 * 300 && moved.length <= 0.35 * 300, `between 15% and 35% moved (${moved.length} of 300)`)
    t.same([...new Set(moved.map((i) => after.ids[i]))], ['d'], 'every moved user went to d')
    const badReissue = moved.filter((i) => {
      const v = after.set[i]
      if (v === null) return true
      const c = decodeTetherCookie(v)
      return c.upstream !== 'd' || c.sessionId !== sessions[i] || c.epoch !== 1
    })
    t.equal(badReissue.length, 0, 'every moved user got a re-issued cookie: same session, upstream d, epoch 1')
    t.equal(after.set.filter((v, i) => v !== null && !moved.includes(i)).length, 0, 'users who stayed got no new cookie')
    const again = await cookieRound(tt.url, a, users)
    t.same(again.ids, after.ids, 'and everyone stays put afterwards')
  })
  t.end()
})

t.test("an upstream removed by setUpstreams has its users re-placed over the remaining ones; others don't move", async (t) => {
  t.test('header keys', async (t) => {
    const ups = await upstreams(t, ['a', 'b', 'c'])
    const tt = await proxyFor(t, ups, { affinity: { key: 'header', header: { name: 'X-Tenant' } } })
    const a = agentFor(t, CONCURRENCY)
    const before = await headerRound(tt.url, a, 'u')
    reloadUpstreams(tt, asUpstreams(ups.slice(0, 2)))
    const after = await headerRound(tt.url, a, 'u')
    const ofC = before.flatMap((id, i) => (id === 'c' ? [i] : []))
    t.ok(ofC.length > 50, `c had users (${ofC.length})`)
    t.equal(after.filter((id, i) => before[i] !== 'c' && id !== before[i]).length, 0, 'users of a and b did not move')
    const to = tally(ofC.map((i) => after[i]!))
    t.notOk(to.has('c'), 'nobody is sent to the removed upstream')
    for (const id of ['a', 'b']) t.ok((to.get(id) ?? 0) >= 0.25 * ofC.length, `c's users are spread: ${to.get(id) ?? 0} to ${id}`)
    t.same(await headerRound(tt.url, a, 'u'), after, 're-placed users then stay')
  })

  t.test('cookie keys', async (t) => {
    const ups = await upstreams(t, ['a', 'b', 'c'])
    const tt = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg() } })
    const a = agentFor(t, CONCURRENCY)
    const users = jars(300)
    const before = await cookieRound(tt.url, a, users)
    reloadUpstreams(tt, asUpstreams(ups.slice(0, 2)))
    const after = await cookieRound(tt.url, a, users)
    const ofC = before.ids.flatMap((id, i) => (id === 'c' ? [i] : []))
    t.ok(ofC.length > 50, `c had users (${ofC.length})`)
    t.equal(after.ids.filter((id, i) => before.ids[i] !== 'c' && id !== before.ids[i]).length, 0, 'users of a and b did not move')
    t.equal(after.set.filter((v, i) => v !== null && before.ids[i] !== 'c').length, 0, '...nor got a new cookie')
    const to = tally(ofC.map((i) => after.ids[i]!))
    t.notOk(to.has('c'))
    for (const id of ['a', 'b']) t.ok((to.get(id) ?? 0) >= 0.25 * ofC.length, `c's users are spread: ${to.get(id) ?? 0} to ${id}`)
    const rebound = ofC.filter((i) => {
      const v = after.set[i]
      return v !== null && decodeTetherCookie(v).upstream === after.ids[i] && decodeTetherCookie(v).epoch === 1
    }).length
    t.equal(rebound, ofC.length, "each of c's users got a cookie naming their new upstream, epoch 1")
    t.same((await cookieRound(tt.url, a, users)).ids, after.ids, 're-placed users then stay')
  })
  t.end()
})
