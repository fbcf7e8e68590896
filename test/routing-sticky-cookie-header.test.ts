// Sticky routing end to end: simulated users (cookie jars, keep-alive) through Tether in front of
// real upstream servers on loopback; affinity expiry driven by a FakeClock, never by sleeping.
// Split from routing-sticky.test.ts (shared setup in test/fixtures/routing-sticky.ts); the other
// parts are routing-sticky-app-cookie-expiry.test.ts and routing-sticky-client-ip-changes.test.ts.
// Here: 1,000 users each with key cookie and with key header, and the tether cookie's integrity,
// secret rotation and attributes.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { proxyFor, request, startUpstream, testConfig } from './fixtures/upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { privateCacheControl } from '../src/proxy/answer-head.js'
import { createLogger } from '../src/observability/logger.js'
import { agentFor, decodeTetherCookie, get, setCookieLine, setCookieValue } from './fixtures/users.js'
import { startTether } from '../src/app.js'
import { DEFAULTS } from '../src/config/schema.js'
import { CookieCodec } from '../src/affinity/cookie-codec.js'
import { CONCURRENCY, REQUESTS, SECRET_A, SECRET_B, USERS, assertStickyAndSpread, cookieCfg, idOf, simulate, upstreams } from './fixtures/routing-sticky.js'

// ---------------------------------------------------------------------------------------------
// 1. Stickiness per key kind (cookie, header)
// ---------------------------------------------------------------------------------------------

t.test('with key cookie, each of 1,000 users making 10 requests always hits the same upstream, and users spread over all three', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const tt = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg() } })
  const logs = await simulate(tt.url, agentFor(t, CONCURRENCY), USERS, REQUESTS, { watch: 'tether' })
  assertStickyAndSpread(t, logs)
  t.equal(logs.filter((l) => l.set[0] === null).length, 0, 'every first answer issues a tether cookie')
  t.equal(logs.filter((l) => l.set.slice(1).some((v) => v !== null)).length, 0, 'a fresh valid cookie is not re-issued on later requests')
  t.equal(logs.filter((l) => decodeTetherCookie(l.jar.cookies.get('tether')!).upstream !== l.ids[0]).length, 0, "each user's cookie names the upstream that served them")
})

t.test('with key header, each of 1,000 users (own X-Tenant) always hits the same upstream', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const tt = await proxyFor(t, ups, { affinity: { key: 'header', header: { name: 'X-Tenant' } } })
  const logs = await simulate(tt.url, agentFor(t, CONCURRENCY), USERS, REQUESTS, { headers: (i) => ({ 'x-tenant': `tenant-${i}` }) })
  assertStickyAndSpread(t, logs)
  t.equal(tt.sessions.table.size, USERS, 'one table entry per tenant')
})

// ---------------------------------------------------------------------------------------------
// 2. Cookie integrity, rotation, attributes
// ---------------------------------------------------------------------------------------------

t.test('a forged, tampered, truncated or garbage tether cookie is treated as a new session', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const tt = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg() } })
  const a = agentFor(t, CONCURRENCY)
  const codec = new CookieCodec({ secrets: [SECRET_A], idleTimeout: DEFAULTS.affinity.idle_timeout })
  const first = await get(tt.url, a)
  const real = setCookieValue(first.headers['set-cookie'], 'tether')!
  t.ok(real, 'a real cookie to start from')
  const realFields = decodeTetherCookie(real)

  const buf = Buffer.from(real, 'base64url')
  const other = ['a', 'b', 'c'].find((id) => id !== realFields.upstream)!
  buf.write(other, 30, 'utf8') // same length: the MAC no longer matches
  const forged = buf.toString('base64url')
  t.equal(decodeTetherCookie(forged).upstream, other, 'the forged cookie names another upstream')
  t.equal(codec.decode(forged, Date.now()), null, 'and its MAC is wrong')

  const k = 10
  const tampered = real.slice(0, k) + (real[k] === 'A' ? 'B' : 'A') + real.slice(k + 1)
  const cases: [string, string][] = [
    ['forged (other upstream id, old MAC)', forged],
    ['tampered (one character flipped)', tampered],
    ['truncated', real.slice(0, real.length - 5)],
    ['garbage', 'garbage'],
    ['garbage of the right length and alphabet', randomBytes(Buffer.from(real, 'base64url').length).toString('base64url')],
    ['quoted garbage', '"%%%"'],
  ]
  for (const [what, value] of cases) {
    const r = await get(tt.url, a, { cookie: `tether=${value}` })
    t.equal(r.status, 200, `${what}: 200`)
    t.ok(['a', 'b', 'c'].includes(idOf(r.body)), `${what}: served by an upstream`)
    const fresh = setCookieValue(r.headers['set-cookie'], 'tether')
    t.ok(fresh !== null && fresh !== value, `${what}: a fresh tether cookie is issued`)
    const decoded = fresh === null ? null : codec.decode(fresh, Date.now())
    t.equal(decoded?.status, 'ok', `${what}: the fresh cookie is validly signed`)
    t.not(decoded?.cookie.sessionId, realFields.sessionId, `${what}: it is a new session`)
    t.equal(decoded?.cookie.upstream, idOf(r.body), `${what}: it names the upstream that served the request`)
  }
})

t.test('a cookie signed with a rotated-out secret is honoured by [B, A] and re-issued signed with B', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const oldT = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg({ secret: [SECRET_A] }) } })
  const rotating = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg({ secret: [SECRET_B, SECRET_A] }) } })
  const newT = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg({ secret: [SECRET_B] }) } })
  const a = agentFor(t, CONCURRENCY)
  const codecA = new CookieCodec({ secrets: [SECRET_A], idleTimeout: DEFAULTS.affinity.idle_timeout })
  const codecB = new CookieCodec({ secrets: [SECRET_B], idleTimeout: DEFAULTS.affinity.idle_timeout })

  const r0 = await get(oldT.url, a)
  const home = idOf(r0.body)
  const cookieA = setCookieValue(r0.headers['set-cookie'], 'tether')!
  t.equal(codecA.decode(cookieA, Date.now())?.status, 'ok', 'the first cookie is signed with A')

  const r1 = await get(rotating.url, a, { cookie: `tether=${cookieA}` })
  t.equal(idOf(r1.body), home, '[B, A] routes the A cookie to the same upstream')
  const cookieB = setCookieValue(r1.headers['set-cookie'], 'tether')
  t.ok(cookieB, 'and re-issues it')
  t.equal(codecB.decode(cookieB!, Date.now())?.status, 'ok', 'the re-issued cookie is signed with B')
  t.equal(codecA.decode(cookieB!, Date.now()), null, '...and not with A')
  t.equal(decodeTetherCookie(cookieB!).sessionId, decodeTetherCookie(cookieA).sessionId, 'same session')

  const r2 = await get(newT.url, a, { cookie: `tether=${cookieB}` })
  t.equal(idOf(r2.body), home, 'a Tether with only [B] routes the re-issued cookie to the same upstream')
  t.equal(setCookieValue(r2.headers['set-cookie'], 'tether'), null, '...without re-issuing it')
  const r3 = await get(rotating.url, a, { cookie: `tether=${cookieB}` })
  t.equal(setCookieValue(r3.headers['set-cookie'], 'tether'), null, '[B, A] does not re-issue a cookie signed with B')

  const r4 = await get(newT.url, a, { cookie: `tether=${cookieA}` })
  const fresh = setCookieValue(r4.headers['set-cookie'], 'tether')
  t.ok(fresh !== null && decodeTetherCookie(fresh).sessionId !== decodeTetherCookie(cookieA).sessionId, 'once A is dropped, an A cookie starts a new session')
})

t.test('the Set-Cookie of the tether cookie carries Path=/, HttpOnly, SameSite=Lax, and Secure when configured', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const secure = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg() } })
  const plain = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg({ secure: false }) } })
  const a = agentFor(t, CONCURRENCY)
  const attrs = async (url: string): Promise<string[]> => {
    const line = setCookieLine((await get(url, a)).headers['set-cookie'], 'tether')
    t.ok(line, 'a tether Set-Cookie line')
    return (line ?? '').split(';').slice(1).map((s) => s.trim())
  }
  const s = await attrs(secure.url)
  for (const want of ['Path=/', 'HttpOnly', 'SameSite=Lax', 'Secure']) t.ok(s.includes(want), `default: ${want}`)
  t.notOk(s.some((x) => /^(max-age|domain)=/i.test(x)), 'no Max-Age or Domain by default')
  const p = await attrs(plain.url)
  for (const want of ['Path=/', 'HttpOnly', 'SameSite=Lax']) t.ok(p.includes(want), `secure: false: ${want}`)
  t.notOk(p.includes('Secure'), 'secure: false: no Secure')
})

t.test('the answer that gives a user their cookie is never left to shared caches (private), as HAProxy\'s insert nocache; later answers keep the application\'s Cache-Control', async (t) => {
  const up = await startUpstream('a', (req, res) => { res.setHeader('cache-control', req.url === '/none' ? [] : 'public, max-age=3600, s-maxage=600'); res.end('a') })
  t.teardown(() => up.close())
  const tt = await proxyFor(t, [up], { affinity: { key: 'cookie', cookie: cookieCfg() } })
  const first = await request(`${tt.url}/`)
  t.ok(setCookieLine(first.headers['set-cookie'], 'tether'), 'a new session: the cookie')
  t.equal(first.headers['cache-control'], 'max-age=3600, private')
  const cookie = String(setCookieLine(first.headers['set-cookie'], 'tether')).split(';')[0]!
  const later = await request(`${tt.url}/`, { headers: { cookie } })
  t.equal(later.headers['set-cookie'], undefined)
  t.equal(later.headers['cache-control'], 'public, max-age=3600, s-maxage=600', "no cookie set: the application's own")
  t.equal((await request(`${tt.url}/none`)).headers['cache-control'], 'private', 'none given: private')
  t.equal(privateCacheControl('no-store'), 'no-store')
  t.equal(privateCacheControl(['Private', 'max-age=5']), 'Private, max-age=5')
  t.equal(privateCacheControl('private="x-foo", max-age=600, public'), 'max-age=600, private', 'a field-qualified private lets shared caches store the rest')
})

t.test('a Secure cookie issued on a plain-HTTP page off localhost is warned about once (a browser would drop it)', async (t) => {
  const ups = await upstreams(t, ['a'])
  const logs = new LogCapture()
  const tt = await startTether(testConfig(ups, { affinity: { key: 'cookie', cookie: cookieCfg() } }), { logger: createLogger('warn', logs) })
  t.teardown(() => tt.close(0))
  const warnings = (): number => logs.records.filter((r) => /affinity\.cookie\.secure is true/.test(String(r.msg))).length
  // not warned: a page on localhost (browsers keep its Secure cookies), TLS ended in front
  for (const headers of [{ host: 'localhost:8080' }, { host: '127.0.0.1' }, { host: '[::1]:80' }, { host: 'shop.example', 'x-forwarded-proto': 'https' }, { host: 'shop.example', forwarded: 'for=1.2.3.4;proto=https' }]) {
    const r = await request(tt.url, { headers })
    t.ok(setCookieLine(r.headers['set-cookie'], 'tether')?.includes('Secure'), `${JSON.stringify(headers)}: a Secure cookie`)
  }
  t.equal(warnings(), 0, 'no warning while every page could keep it')
  for (let i = 0; i < 3; i++) await request(tt.url, { headers: { host: 'shop.example' } })
  t.equal(warnings(), 1, 'plain http://shop.example: one warning, not one per new session')
})
