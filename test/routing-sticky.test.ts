// Sticky routing end to end: simulated users (cookie jars, keep-alive) through Tether in front of
// real upstream servers on loopback; affinity expiry driven by a FakeClock, never by sleeping.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import type http from 'node:http'
import { proxyFor, request, startUpstream, testConfig, type Handler, type Upstream } from './fixtures/upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { privateCacheControl } from '../src/proxy/answer-head.js'
import { createLogger } from '../src/observability/logger.js'
import { FakeClock } from './fixtures/clock.js'
import {
  CookieJar, agentFor, decodeTetherCookie, get, runPool, setCookieLine, setCookieValue, tally,
} from './fixtures/users.js'
import { startTether, type Tether } from '../src/app.js'
import { DEFAULTS, type Config, type CookieAffinityConfig } from '../src/config/schema.js'
import { CookieCodec } from '../src/affinity/cookie-codec.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'

type Over = Parameters<typeof testConfig>[1]

const SECRET_A = 'secret-A-0123456789abcdef'
const SECRET_B = 'secret-B-fedcba9876543210'
const USERS = 1000
const REQUESTS = 20
const CONCURRENCY = 50

/** A complete `affinity.cookie` block (testConfig merges `affinity` one level deep only). */
function cookieCfg(over: Partial<CookieAffinityConfig> = {}): CookieAffinityConfig {
  return { ...DEFAULTS.affinity.cookie, secret: [SECRET_A], ...over }
}

async function upstreams(t: Test, ids: readonly string[], handler?: (id: string) => Handler): Promise<Upstream[]> {
  const ups = await Promise.all(ids.map((id) => startUpstream(id, handler?.(id))))
  t.teardown(async () => { await Promise.all(ups.map((u) => u.close())) })
  return ups
}



function asUpstreams(ups: readonly Upstream[]): Config['upstreams'] {
  return ups.map((u) => ({ id: u.id, url: u.url, weight: 1 }))
}

/** What one simulated user saw: the upstream of each request and the watched cookie each set. */
interface UserLog {
  ids: string[]
  set: (string | null)[]
  jar: CookieJar
}

/** `users` users, each making `requests` sequential requests with its own cookie jar. */
async function simulate(
  url: string,
  a: http.Agent,
  users: number,
  requests: number,
  opts: { headers?: (i: number) => http.OutgoingHttpHeaders; watch?: string } = {},
): Promise<UserLog[]> {
  return runPool(users, CONCURRENCY, async (i) => {
    const jar = new CookieJar()
    const log: UserLog = { ids: [], set: [], jar }
    for (let r = 0; r < requests; r++) {
      const ans = await get(url, a, opts.headers?.(i) ?? {}, jar)
      if (ans.status !== 200) throw new Error(`user ${i} request ${r}: status ${ans.status}: ${ans.body}`)
      log.ids.push(ans.body.trim())
      log.set.push(opts.watch === undefined ? null : setCookieValue(ans.headers['set-cookie'], opts.watch))
    }
    return log
  })
}

/** Every user always on one upstream; each of a, b, c holds at least 20% of the users. */
function assertStickyAndSpread(t: Test, logs: readonly UserLog[]): void {
  const wandering = logs.filter((l) => new Set(l.ids).size !== 1).length
  t.equal(wandering, 0, `every one of ${logs.length} users hit the same upstream on all ${logs[0]!.ids.length} requests`)
  const counts = tally(logs.map((l) => l.ids[0]!))
  for (const id of ['a', 'b', 'c']) {
    const n = counts.get(id) ?? 0
    t.ok(n >= 0.2 * logs.length, `upstream ${id} serves at least 20% of the users (${n})`)
  }
}

/** An upstream like Laravel: issues `laravel_session=<random>` to a request without it; answers its id. */
function laravel(id: string): Handler {
  return (req, res) => {
    if (!/(?:^|;\s*)laravel_session=/.test(req.headers.cookie ?? '')) {
      res.setHeader('set-cookie', `laravel_session=${randomBytes(24).toString('base64url')}; expires=Wed, 21 Oct 2099 07:28:00 GMT; Max-Age=7200; path=/; httponly; samesite=lax`)
    }
    res.setHeader('content-type', 'text/plain')
    res.end(`${id}\n`)
  }
}

const idOf = (body: string): string => body.trim()

// ---------------------------------------------------------------------------------------------
// 1. Stickiness per key kind
// ---------------------------------------------------------------------------------------------

t.test('with key cookie, each of 1,000 users making 20 requests always hits the same upstream, and users spread over all three', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const tt = await proxyFor(t, ups, { affinity: { key: 'cookie', cookie: cookieCfg() } })
  const logs = await simulate(tt.url, agentFor(t, CONCURRENCY), USERS, REQUESTS, { watch: 'tether' })
  assertStickyAndSpread(t, logs)
  t.equal(logs.filter((l) => l.set[0] === null).length, 0, 'every first answer issues a tether cookie')
  t.equal(logs.filter((l) => l.set.slice(1).some((v) => v !== null)).length, 0, 'a fresh valid cookie is not re-issued on later requests')
  t.equal(logs.filter((l) => decodeTetherCookie(l.jar.cookies.get('tether')!).upstream !== l.ids[0]).length, 0, "each user's cookie names the upstream that served them")
})

t.test('with key app_cookie, each of 1,000 users returns to the replica that created their session, which learning (not the hash) decided', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'], laravel)
  const tt = await proxyFor(t, ups, { affinity: { key: 'app_cookie', app_cookie: { name: 'laravel_session', fallback: 'random' } } })
  const logs = await simulate(tt.url, agentFor(t, CONCURRENCY), USERS, REQUESTS, { watch: 'laravel_session' })
  assertStickyAndSpread(t, logs)
  t.equal(logs.filter((l) => l.set[0] === null).length, 0, 'the first answer of every user set laravel_session')
  t.equal(logs.filter((l) => l.set.slice(1).some((v) => v !== null)).length, 0, 'no later request lost its session (no second Set-Cookie)')
  // requests 2..20 carry the cookie; they all went to the upstream that issued it on request 1
  const notCreator = logs.filter((l) => l.ids.slice(1).some((id) => id !== l.ids[0])).length
  t.equal(notCreator, 0, 'requests 2..20 of every user went to the upstream that set the cookie on request 1')
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

t.test('with key header, each of 1,000 users (own X-Tenant) always hits the same upstream', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const tt = await proxyFor(t, ups, { affinity: { key: 'header', header: { name: 'X-Tenant' } } })
  const logs = await simulate(tt.url, agentFor(t, CONCURRENCY), USERS, REQUESTS, { headers: (i) => ({ 'x-tenant': `tenant-${i}` }) })
  assertStickyAndSpread(t, logs)
  t.equal(tt.sessions.table.size, USERS, 'one table entry per tenant')
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
// 4, 5. Upstream set changes
// ---------------------------------------------------------------------------------------------

async function headerRound(url: string, a: http.Agent, prefix: string, n = 300): Promise<string[]> {
  return runPool(n, CONCURRENCY, async (i) => idOf((await get(url, a, { 'x-tenant': `${prefix}${i}` })).body))
}

interface CookieRound { ids: string[]; set: (string | null)[] }
async function cookieRound(url: string, a: http.Agent, jars: CookieJar[]): Promise<CookieRound> {
  const res = await runPool(jars.length, CONCURRENCY, async (i) => {
    const r = await get(url, a, {}, jars[i])
    return { id: idOf(r.body), set: setCookieValue(r.headers['set-cookie'], 'tether') }
  })
  return { ids: res.map((r) => r.id), set: res.map((r) => r.set) }
}

/** Replace the static upstreams as a config reload does. */
function reloadUpstreams(tt: Tether, upstreams: Config['upstreams']): void {
  tt.reload({ ...tt.config, upstreams })
}

const jars = (n: number): CookieJar[] => Array.from({ length: n }, () => new CookieJar())

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
