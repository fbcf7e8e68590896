// The routing decision without any network: appCookieValue (Set-Cookie parsing for learning)
// and Router.decide() on keys read from plain header objects, with a FakeClock.
import t from 'tap'
import type { IncomingHttpHeaders } from 'node:http'
import { Router, type Availability, type Decision, type UpstreamLoad } from '../src/routing/router.js'
import { DEFAULTS, type AffinityConfig, type UpstreamConfig } from '../src/config/schema.js'
import { CookieCodec } from '../src/affinity/cookie-codec.js'
import { CookieIssuer } from '../src/affinity/cookie-issuer.js'
import { DEFAULT_MAX_KEY_LENGTH, KeyReader, keyOptions } from '../src/affinity/key.js'
import { parseTrustedProxies } from '../src/affinity/client-ip.js'
import { SessionTable } from '../src/affinity/session-table.js'
import { SessionRecords } from '../src/affinity/session-records.js'
import { appCookieValue, learnAppCookie, type Learned } from '../src/affinity/app-cookie.js'
import { upstreamSet } from '../src/upstream/upstream-set.js'
import { hashKey } from '../src/placement/hash.js'
import { FakeClock, FAKE_EPOCH } from './fixtures/clock.js'
import { decodeTetherCookie, setCookieValue, tally } from './fixtures/users.js'

const SECRET = 'router-test-secret-0123456789'
const NOW = FAKE_EPOCH
const PAST = new Date(NOW - 86_400_000).toUTCString()
const FUTURE = new Date(NOW + 86_400_000).toUTCString()

t.test('appCookieValue reads the value a Set-Cookie line gives the cookie, and whether it deletes it', async (t) => {
  const N = 'laravel_session'
  const cases: [string, string, { value: string; deleted: boolean; path: string | null } | null][] = [
    ['plain', 'laravel_session=abc', { value: 'abc', deleted: false, path: null }],
    ['quoted', 'laravel_session="abc"', { value: 'abc', deleted: false, path: null }],
    ['with attributes', 'laravel_session=abc; Path=/; HttpOnly; SameSite=Lax', { value: 'abc', deleted: false, path: '/' }],
    ['with a positive Max-Age', 'laravel_session=abc; Max-Age=7200; path=/', { value: 'abc', deleted: false, path: '/' }],
    ['leading spaces', '   laravel_session=abc; path=/', { value: 'abc', deleted: false, path: '/' }],
    ['spaces around the value', 'laravel_session= abc ; path=/', { value: 'abc', deleted: false, path: '/' }],
    ['value containing "="', 'laravel_session=eyJpdiI6==; path=/', { value: 'eyJpdiI6==', deleted: false, path: '/' }],
    ['another cookie with the same prefix', 'laravel_session_x=abc; path=/', null],
    ['another cookie', 'XSRF-TOKEN=abc; path=/', null],
    ['the name only as a suffix', 'my_laravel_session=abc', null],
    ['the name in an attribute', 'other=1; laravel_session=abc', null],
    ['another case (names are case-sensitive)', 'LARAVEL_SESSION=abc', null],
    ['no "="', 'laravel_session', null],
    ['Max-Age=0', 'laravel_session=abc; Max-Age=0; path=/', { value: 'abc', deleted: true, path: '/' }],
    ['lower-case max-age=0', 'laravel_session=abc; path=/; max-age=0', { value: 'abc', deleted: true, path: '/' }],
    ['negative Max-Age', 'laravel_session=abc; Max-Age=-1', { value: 'abc', deleted: true, path: null }],
    ['Expires in the past', `laravel_session=abc; expires=${PAST}; path=/`, { value: 'abc', deleted: true, path: '/' }],
    ['Expires in the future', `laravel_session=abc; expires=${FUTURE}; path=/`, { value: 'abc', deleted: false, path: '/' }],
    ["PHP's deletion line", 'laravel_session=deleted; expires=Thu, 01-Jan-1970 00:00:01 GMT; Max-Age=0; path=/', { value: 'deleted', deleted: true, path: '/' }],
    ['Max-Age wins over a past Expires (RFC 6265 5.3)', `laravel_session=abc; Expires=${PAST}; Max-Age=60`, { value: 'abc', deleted: false, path: null }],
    ['Max-Age=0 wins over a future Expires', `laravel_session=abc; Expires=${FUTURE}; Max-Age=0`, { value: 'abc', deleted: true, path: null }],
    ['an unparsable Expires is ignored', 'laravel_session=abc; Expires=soon', { value: 'abc', deleted: false, path: null }],
    // RFC 6265 section 5.3 step 3: the last Max-Age counts, and (5.2.2) one that is not all digits after an optional "-" is ignored
    ['the last Max-Age counts: a later positive one keeps the cookie', 'laravel_session=abc; Max-Age=0; Max-Age=3600', { value: 'abc', deleted: false, path: null }],
    ['the last Max-Age counts: a later 0 deletes it', 'laravel_session=abc; Max-Age=3600; Max-Age=0', { value: 'abc', deleted: true, path: null }],
    ['a Max-Age with a non-digit is ignored, not read as its leading digits', 'laravel_session=abc; Max-Age=0x10', { value: 'abc', deleted: false, path: null }],
    ['an ignored Max-Age leaves a past Expires in charge', `laravel_session=abc; Max-Age=1e3; Expires=${PAST}`, { value: 'abc', deleted: true, path: null }],
    ['the last Expires counts', `laravel_session=abc; Expires=${PAST}; Expires=${FUTURE}`, { value: 'abc', deleted: false, path: null }],
    ['empty value', 'laravel_session=; path=/', { value: '', deleted: true, path: '/' }],
    ['empty value, nothing else', 'laravel_session=', { value: '', deleted: true, path: null }],
    ['empty quoted value', 'laravel_session=""; path=/', { value: '', deleted: true, path: '/' }],
    ['blanks around the name (a browser trims them)', 'laravel_session =abc', { value: 'abc', deleted: false, path: null }],
    ['a tab before the name', '\tlaravel_session=abc; path=/', { value: 'abc', deleted: false, path: '/' }],
    ['a tab after the name', 'laravel_session\t= abc', { value: 'abc', deleted: false, path: null }],
    ['an "=" only after a ";" (no name=value pair)', 'laravel_session; x=1', null],
    ['a Path (its case kept)', 'laravel_session=abc; Path=/Legacy/', { value: 'abc', deleted: false, path: '/Legacy/' }],
    ['the last Path counts', 'laravel_session=abc; Path=/a; path=/b', { value: 'abc', deleted: false, path: '/b' }],
    ['a Path not starting with "/" is none', 'laravel_session=abc; Path=legacy', { value: 'abc', deleted: false, path: null }],
  ]
  for (const [what, line, want] of cases) t.same(appCookieValue(line, N, NOW), want, `${what}: ${line}`)
  // "in the past" is relative to the `now` given, not the system clock
  const expires = `laravel_session=abc; Expires=${new Date(NOW).toUTCString()}`
  t.equal(appCookieValue(expires, N, NOW - 1000)?.deleted, false, 'an Expires after now is not a deletion')
  t.equal(appCookieValue(expires, N, NOW + 1000)?.deleted, true, 'the same Expires is one once now has passed it')
})

const UPS: UpstreamConfig[] = [
  { id: 'a', url: 'http://127.0.0.1:1', weight: 1 },
  { id: 'b', url: 'http://127.0.0.1:2', weight: 1 },
  { id: 'c', url: 'http://127.0.0.1:3', weight: 1 },
]

function affinity(over: Partial<AffinityConfig>): AffinityConfig {
  return {
    ...DEFAULTS.affinity,
    cookie: { ...DEFAULTS.affinity.cookie, secret: [SECRET] },
    ...over,
  } as AffinityConfig
}

/** Routing as the composition root wires it: key reader, session table, cookie issuer, router. */
interface Routing {
  readonly router: Router
  readonly sessions: SessionTable
  /** Read the key of these headers and decide; must yield a decision (not "no route"). */
  go(headers: IncomingHttpHeaders, peer?: string): Decision
  /** The answer to decision `d` set these Set-Cookie lines (learning, as the answer side does). */
  answer(d: Decision, setCookie: string | string[], requestPath?: string): Learned | null
}

function routing(cfg: AffinityConfig, clock: FakeClock, opts: { random?: (n: number) => Uint8Array; availability?: Availability; ups?: UpstreamConfig[] } = {}): Routing {
  const sessions = new SessionTable({ maxEntries: cfg.max_entries, idleTimeout: cfg.idle_timeout, absoluteTimeout: cfg.absolute_timeout })
  const cookies = cfg.key === 'cookie' ? new CookieIssuer(cfg, opts.random) : null
  const trusted = parseTrustedProxies(cfg.client_ip.trusted_proxies)
  const options = cfg.key === 'none' ? null
    : cfg.key === 'cookie' ? keyOptions({ kind: 'cookie', cookieName: cfg.cookie.name, codec: cookies!.codec })
    : cfg.key === 'app_cookie' ? keyOptions({ kind: 'app_cookie', cookieName: cfg.app_cookie.name! })
    : cfg.key === 'client_ip' ? keyOptions({ kind: 'client_ip', trusted })
    : keyOptions({ kind: 'header', headerName: cfg.header.name! })
  const keys = new KeyReader({ options, fallback: cfg.app_cookie.fallback, trusted })
  const router = new Router(cfg, { sessions, cookies, ...(opts.availability ? { availability: opts.availability } : {}) })
  router.setUpstreams(upstreamSet(opts.ups ?? UPS), clock.now())
  return {
    router, sessions,
    go: (headers, peer = '10.0.0.1') => {
      const d = router.decide(keys.read(headers, peer, clock.now()), undefined, clock.now())
      if (typeof d === 'string') throw new Error(`expected a decision, got ${d}`)
      // the upstream answered: its binding is recorded, as the answer side does
      if (d.bind !== null) {
        if (d.bind.publish) sessions.pin(d.bind.key, d.bind.upstream, d.bind.epoch, clock.now())
        else sessions.count(d.bind.key, d.bind.upstream, d.bind.epoch, clock.now())
      }
      router.settle(d)
      return d
    },
    answer: (d, setCookie, requestPath) => learnAppCookie(sessions, cfg.app_cookie.name!, d, setCookie, clock.now(), requestPath),
  }
}

/** Deterministic "random" bytes: a counter, so session ids differ and tests repeat exactly. */
function counterBytes(): (n: number) => Uint8Array {
  let i = 0
  return (n) => {
    const b = Buffer.alloc(n)
    b.writeUInt32BE(++i, n - 4)
    return b
  }
}

/**
 * One Tether process with key cookie, as the answer side records it: `go(cookie)` reads the
 * key, decides, records the answer, settles, then advances the clock by `step` ms. Several of
 * them with the same config share the cookie secret: workers or replicas.
 */
function cookieProcess(cfg: AffinityConfig, clock: FakeClock, opts: { availability?: Availability; load?: UpstreamLoad; step?: number } = {}) {
  const records = new SessionRecords({ maxEntries: 1_000, idleTimeout: cfg.idle_timeout, secret: 'test-secret' })
  const cookies = new CookieIssuer(cfg, counterBytes())
  const keys = new KeyReader({ options: keyOptions({ kind: 'cookie', cookieName: cfg.cookie.name, codec: cookies.codec }), fallback: cfg.app_cookie.fallback, trusted: parseTrustedProxies([]) })
  const sessions = new SessionTable({ maxEntries: 1_000, idleTimeout: cfg.idle_timeout, absoluteTimeout: null })
  const router = new Router(cfg, { sessions, cookies, history: records, ...(opts.availability ? { availability: opts.availability } : {}), ...(opts.load ? { load: opts.load } : {}) })
  router.setUpstreams(upstreamSet(UPS), clock.now())
  const go = (cookie?: string): Decision => {
    const key = keys.read(cookie === undefined ? {} : { cookie }, '10.0.0.1', clock.now())
    const d = router.decide(key, undefined, clock.now())
    if (typeof d === 'string') throw new Error(`expected a decision, got ${d}`)
    records.answered(key, d, clock.now())
    router.settle(d)
    clock.advance(opts.step ?? 10)
    return d
  }
  return { router, records, go }
}

t.test('Router with key cookie', async (t) => {
  const clock = new FakeClock()
  const { go, sessions } = routing(affinity({ key: 'cookie', idle_timeout: 60_000 }), clock, { random: counterBytes() })
  const codec = new CookieCodec({ secrets: [SECRET], idleTimeout: 60_000 })

  const first = go({}, '10.0.0.1')
  t.equal(first.source, 'new_session', 'a request without a cookie starts a new session')
  t.ok(first.setCookie?.startsWith('tether='), 'and issues a tether cookie')
  const value = setCookieValue(first.setCookie!, 'tether')!
  const decoded = codec.decode(value, clock.now())
  t.equal(decoded?.status, 'ok', 'signed with the configured secret')
  t.equal(decoded?.cookie.upstream, first.upstream, 'naming the chosen upstream')
  t.equal(decoded?.cookie.issuedAt, clock.now())

  for (let i = 0; i < 20; i++) {
    const r = go({ cookie: `other=1; tether=${value}` }, `10.0.0.${i}`)
    t.ok(r.upstream === first.upstream && r.source === 'cookie' && r.setCookie === null, `same cookie, same upstream, no re-issue (${i})`)
  }
  t.equal(sessions.size, 0, 'without a balance factor, cookie sessions take no table entries')

  clock.advance(7_000) // > idle/10
  const slid = go({ cookie: `tether=${value}` }, '10.0.0.1')
  t.equal(slid.upstream, first.upstream)
  const refreshed = setCookieValue(slid.setCookie!, 'tether')
  t.ok(refreshed, 'past idle/10 the cookie is re-issued (sliding)')
  t.equal(decodeTetherCookie(refreshed!).sessionId, decoded?.cookie.sessionId, 'same session')
  t.equal(decodeTetherCookie(refreshed!).lastSeen, clock.now(), 'last seen now')

  clock.advance(60_001)
  const expired = go({ cookie: `tether=${refreshed}` }, '10.0.0.1')
  t.equal(expired.source, 'new_session', 'idle past the timeout: a new session')
  t.not(decodeTetherCookie(setCookieValue(expired.setCookie!, 'tether')!).sessionId, decoded?.cookie.sessionId)

  const garbage = go({ cookie: 'tether=xyz' }, '10.0.0.1')
  t.equal(garbage.source, 'new_session', 'an invalid cookie: a new session')

  // new sessions spread over all upstreams
  const ids = tally(Array.from({ length: 300 }, () => go({}, '10.0.0.1').upstream))
  t.same([...ids.keys()].sort(), ['a', 'b', 'c'], 'new sessions reach every upstream')
})

t.test('Router with key none round-robins by weight', async (t) => {
  const clock = new FakeClock()
  const weighted: UpstreamConfig[] = [
    { id: 'a', url: 'http://127.0.0.1:1', weight: 2 },
    { id: 'b', url: 'http://127.0.0.1:2', weight: 1 },
    { id: 'c', url: 'http://127.0.0.1:3', weight: 1 },
  ]
  const { go, sessions } = routing(affinity({ key: 'none' }), clock, { ups: weighted })
  const routes = Array.from({ length: 400 }, () => go({ cookie: 'tether=x' }, '10.0.0.1'))
  t.ok(routes.every((r) => r.source === 'round_robin' && r.setCookie === null), 'round robin, no cookie, whatever the request carries')
  t.same(Object.fromEntries(tally(routes.map((r) => r.upstream))), { a: 200, b: 100, c: 100 }, 'shares follow the weights exactly')
  const cycle = routes.slice(0, 4).map((r) => r.upstream)
  t.same(routes.slice(4, 8).map((r) => r.upstream), cycle, 'a cycle of 4 repeats')
  t.equal(cycle.filter((id) => id === 'a').length, 2, 'a twice per cycle')
  t.not(cycle.join(''), 'aabc', 'smooth: a is not sent twice in a row (a b a c)')
  t.equal(sessions.size, 0)
})

t.test('Router with key app_cookie learns the value an upstream sets and forgets a deleted one', async (t) => {
  const clock = new FakeClock()
  const { go, answer, sessions } = routing(affinity({ key: 'app_cookie', app_cookie: { name: 'sid', fallback: 'random' } }), clock)
  const first = go({}, '10.0.0.1')
  t.equal(first.source, 'round_robin', 'no app cookie yet: placed by the fallback')
  answer(first, ['other=1', 'sid=v1; Path=/; HttpOnly'])
  t.equal(sessions.table.peek('v1', clock.now())?.upstream, first.upstream, 'the value is bound to the upstream that set it')
  for (let i = 0; i < 5; i++) {
    const r = go({ cookie: 'sid=v1' }, `10.0.0.${i}`)
    t.ok(r.upstream === first.upstream && r.source === 'table', 'requests with it go back there')
  }
  answer(go({ cookie: 'sid=v1' }, '10.0.0.1'), 'sid=v1; Max-Age=0')
  t.equal(sessions.table.peek('v1', clock.now()), null, 'a deleting Set-Cookie forgets the binding')
})

// Regressions: rebalance only moves users to an upstream that joined after they were pinned.
t.test('with on_scale_up rebalance and a balance factor, users placed off their first choice are not moved on their next request', async (t) => {
  const clock = new FakeClock()
  const { go } = routing(affinity({ key: 'header', header: { name: 'X-Tenant' }, balance_factor: 1.25, on_scale_up: 'rebalance' }), clock)
  const keys = Array.from({ length: 300 }, (_, i) => `k${i}`)
  const first = keys.map((k) => go({ 'x-tenant': k }, '10.0.0.1').upstream)
  const second = keys.map((k) => go({ 'x-tenant': k }, '10.0.0.1').upstream)
  t.equal(second.filter((id, i) => id !== first[i]).length, 0, 'no user moved although the upstream set did not change')
})

t.test('with a balance factor, placements still in flight count as load: 300 users decided before any upstream answers stay within the bound', async (t) => {
  const clock = new FakeClock()
  for (const key of ['header', 'cookie'] as const) {
    const cfg = affinity(key === 'header' ? { key, header: { name: 'X-Tenant' }, balance_factor: 1.25 } : { key, balance_factor: 1.25 })
    const { router, sessions } = routing(cfg, clock, { random: counterBytes() })
    const keys = new KeyReader({ options: key === 'header' ? keyOptions({ kind: 'header', headerName: 'X-Tenant' }) : keyOptions({ kind: 'cookie', cookieName: cfg.cookie.name, codec: new CookieIssuer(cfg).codec }), fallback: 'random', trusted: parseTrustedProxies([]) })
    // every key hashes to a first, as a crowd of new users would not, but an attacker could
    const placement = router.placement
    const skewed: string[] = []
    for (let i = 0; skewed.length < 300; i++) if (placement.ids[placement.pick(hashKey(`s${i}`))] === 'a') skewed.push(`s${i}`)
    const decisions = (key === 'header' ? skewed : skewed.map(() => '')).map((k) => {
      const d = router.decide(keys.read(k === '' ? {} : { 'x-tenant': k }, '10.0.0.1', clock.now()), undefined, clock.now())
      if (typeof d === 'string') throw new Error(d)
      return d
    })
    const counts = new Map<string, number>()
    for (const d of decisions) counts.set(d.upstream, (counts.get(d.upstream) ?? 0) + 1)
    const limit = Math.ceil((1.25 * 300) / 3) + 1
    t.ok(Math.max(...counts.values()) <= limit, `${key}: no upstream got more than ${limit} of 300 concurrent new users (${JSON.stringify([...counts])})`)
    t.equal(sessions.loadOf('a') + sessions.loadOf('b') + sessions.loadOf('c'), 300, `${key}: all 300 count as load while in flight`)
    for (const d of decisions) router.settle(d)
    t.equal(sessions.load, 0, `${key}: abandoned placements (no upstream answered) leave no load behind`)
    router.settle(decisions[0]!)
    t.equal(sessions.load, 0, `${key}: settling twice changes nothing`)
  }
})

t.test('a user whose upstream was not ready at some point since their last request is rehydrated there (restart), once', async (t) => {
  const clock = new FakeClock()
  const readySince = new Map<string, number>()
  const availability: Availability = {
    ready: () => true, acceptsNew: () => true, drainingSince: () => null, drainMigrates: () => false, slowStartWeight: () => 1,
    readySince: (id) => readySince.get(id) ?? -Infinity,
  }
  // the signed cookie: its times are whole seconds, so a restart counts when it came more than 1 s after the last visit
  const c = routing(affinity({ key: 'cookie', idle_timeout: 3_600_000 }), clock, { random: counterBytes(), availability })
  const first = c.go({})
  const issued = clock.now()
  const cookie = `tether=${setCookieValue(first.setCookie!, 'tether')!}`
  clock.advance(5_000)
  t.same(c.go({ cookie }).moved, null, 'no restart: stays, no move')
  readySince.set(first.upstream, issued + 500)
  t.same(c.go({ cookie }).moved, null, 'ready again within the cookie\'s 1 s resolution of its last-seen time: not counted')
  clock.advance(5_000)
  readySince.set(first.upstream, clock.now())
  const back = c.go({ cookie })
  t.same([back.upstream, back.source, back.epoch, back.moved], [first.upstream, 'failover', 1, { from: first.upstream, reason: 'restart' }], 'restarted since the last visit: same upstream, epoch 1, moved for restart')
  const again = c.go({ cookie: `tether=${setCookieValue(back.setCookie!, 'tether')!}` })
  t.same([again.upstream, again.epoch, again.moved], [first.upstream, 1, null], 'with the cookie re-issued then, the next request is ordinary')

  // a table key: its last visit is kept in ms
  const h = routing(affinity({ key: 'header', header: { name: 'X-Tenant' } }), clock, { availability })
  const u = h.go({ 'x-tenant': 'acme' })
  clock.advance(10)
  readySince.set(u.upstream, clock.now())
  clock.advance(10)
  const moved = h.go({ 'x-tenant': 'acme' })
  t.same([moved.upstream, moved.epoch, moved.moved, moved.bind?.epoch], [u.upstream, 1, { from: u.upstream, reason: 'restart' }, 1], 'table key: rehydrated on the same upstream, pinned at epoch 1')
  t.same([h.go({ 'x-tenant': 'acme' }).moved, h.go({ 'x-tenant': 'acme' }).epoch], [null, 1], 'then ordinary')
})

t.test('an out-of-date cookie (the client ignores re-issued ones): a move is made once, and a return to where the user is not is rehydrated', async (t) => {
  const clock = new FakeClock()
  const ready = new Map<string, boolean>()
  const readySince = new Map<string, number>()
  const availability: Availability = {
    ready: (id) => ready.get(id) ?? true, acceptsNew: (id) => ready.get(id) ?? true, drainingSince: () => null, drainMigrates: () => false,
    slowStartWeight: () => 1, readySince: (id) => readySince.get(id) ?? -Infinity,
  }
  const cfg = affinity({ key: 'cookie', idle_timeout: 3_600_000 })
  // each request is answered by its upstream, as the answer side records it
  const { go } = cookieProcess(cfg, clock, { availability })
  const row = (d: Decision): unknown[] => [d.upstream, d.epoch, d.moved]
  const first = go()
  const old = `tether=${setCookieValue(first.setCookie!, 'tether')!}`
  const home = first.upstream
  clock.advance(5_000)
  t.same(row(go(old)), [home, 0, null], 'the first cookie again: ordinary')

  ready.set(home, false)
  const moved = go(old)
  const other = moved.upstream
  t.same(row(moved), [other, 1, { from: home, reason: 'dead' }], 'its upstream is down: moved at epoch 1')
  for (let i = 0; i < 3; i++) {
    const d = go(old)
    t.same([...row(d), d.source], [other, 1, null, 'failover'], 'the old cookie again: served where it moved, not moved again')
    t.equal(decodeTetherCookie(setCookieValue(d.setCookie!, 'tether')!).upstream, other, 'and offered the cookie of where it is')
  }

  // the other upstream restarted since it last answered the user: their state there is gone
  readySince.set(other, clock.now())
  clock.advance(10)
  t.same(row(go(old)), [other, 2, { from: other, reason: 'restart' }], 'rehydrated in place once its new upstream restarted, at epoch 2')
  t.same(row(go(old)), [other, 2, null], 'then ordinary')

  // home is ready again, within the cookie's 1 s precision of its last-seen time (no restart
  // seen by the cookie's rule): the user's state is on the other upstream, so the return is a move
  ready.set(home, true)
  const back = go(old)
  t.same(row(back), [home, 3, { from: other, reason: 'restart' }], 'back to the cookie\'s upstream: a move from where the user was answered, at epoch 3')
  t.same(row(go(old)), [home, 3, null], 'then ordinary')
  t.same(row(go(`tether=${setCookieValue(back.setCookie!, 'tether')!}`)), [home, 3, null], 'and with the cookie it was offered, the same')
})

t.test('gradual rebalance and spill: requests sent with the cookie from before a move follow it, without a second move or the budget; a client that keeps that cookie is routed by it', async (t) => {
  for (const mode of ['gradual', 'spill'] as const) {
    const clock = new FakeClock()
    const MIN_IDLE = 20_000 // longer than the burst after a move that follows it (5 s)
    const RATE = 2
    const cfg = affinity(mode === 'gradual'
      ? { key: 'cookie', idle_timeout: 3_600_000, on_scale_up: 'gradual', rebalance: { min_idle: MIN_IDLE, max_moves_per_second: RATE } }
      : { key: 'cookie', idle_timeout: 3_600_000, spill: { factor: 1.25, min_idle: MIN_IDLE, max_moves_per_second: RATE } })
    // spill: upstream 'a' has most of the requests in flight, so its users spill at a new visit
    const load = { loadOf: (id: string) => (id === 'a' ? 10 : 1), totalLoad: 12 }
    const { router, go } = cookieProcess(cfg, clock, mode === 'spill' ? { load } : {})
    const row = (d: Decision): unknown[] => [d.upstream, d.moved]
    const users = Array.from({ length: 40 }, () => `tether=${setCookieValue(go(undefined).setCookie!, 'tether')!}`)
    if (mode === 'gradual') router.setUpstreams(upstreamSet([...UPS, { id: 'd', url: 'http://127.0.0.1:4', weight: 1 }]), clock.now())
    clock.advance(MIN_IDLE + 1_000)
    /** The first of `list` that moves now (a new visit), with where it went; its cookie stays the old one. */
    const nextMove = (list: string[]): { user: string; to: string } | undefined => {
      for (const user of list) {
        const d = go(user)
        if (d.moved !== null) {
          list.splice(list.indexOf(user), 1)
          return { user, to: d.upstream }
        }
      }
      return undefined
    }
    const pending = [...users]
    const first = nextMove(pending)!
    t.ok(first !== undefined, `${mode}: a user moved at a new visit`)
    const home = decodeTetherCookie(first.user.slice('tether='.length)).upstream
    // the burst: more requests with the cookie from before the move
    t.same(row(go(first.user)), [first.to, null], `${mode}: the old cookie at once: where the user moved, no move back`)
    t.same(row(go(first.user)), [first.to, null], `${mode}: and again`)
    t.ok(nextMove(pending) !== undefined, `${mode}: the second move of this second is still in the budget (${RATE} a second) for a user who has to move`)
    t.equal(nextMove(pending), undefined, `${mode}: and the budget is spent now: nobody else moves`)
    t.same(row(go(first.user)), [first.to, null], `${mode}: the old cookie with the budget spent: still where the user moved`)

    // a client that keeps sending that cookie after the burst ignores the new one: routed by the
    // cookie (as workers and replicas without this process's record route it), rehydrated, once
    clock.advance(6_000)
    t.same(row(go(first.user)), [home, { from: first.to, reason: 'restart' }], `${mode}: after the burst, the old cookie leads back to its upstream, a move from where the user is`)
    t.same(row(go(first.user)), [home, null], `${mode}: then ordinary there`)
  }
})

t.test('spill, then the old upstream goes down during the burst: a request with the old cookie stays where the user spilled to', async (t) => {
  const clock = new FakeClock()
  const down = new Set<string>()
  const availability: Availability = {
    ready: (id) => !down.has(id), acceptsNew: (id) => !down.has(id), drainingSince: () => null, drainMigrates: () => false,
    slowStartWeight: () => 1, readySince: () => -Infinity,
  }
  // 'a' and 'b' are over their bound (1.25 x 19 / 3 = 7.9), so a's users spill past 'b' to 'c'
  const load = { loadOf: (id: string) => (id === 'a' ? 10 : id === 'b' ? 8 : 1), totalLoad: 19 }
  const cfg = affinity({ key: 'cookie', idle_timeout: 3_600_000, spill: { factor: 1.25, min_idle: 20_000, max_moves_per_second: 1_000 } })
  const w = cookieProcess(cfg, clock, { availability, load })
  const users = Array.from({ length: 60 }, () => `tether=${setCookieValue(w.go().setCookie!, 'tether')!}`)
  clock.advance(21_000)
  const spilled = users.filter((u) => w.go(u).moved !== null)
  // where a process without the record sends each of them once 'a' is down: the hash's next upstream
  down.add('a')
  const fresh = cookieProcess(cfg, clock, { availability, load })
  const skipped = spilled.filter((u) => fresh.go(u).upstream === 'b')
  t.ok(skipped.length > 0, `${skipped.length} of ${spilled.length} spilled users have 'b' next in their hash order (the spill skipped it)`)
  for (const u of skipped) t.same([w.go(u).upstream, w.go(u).moved], ['c', null], 'the old cookie, its upstream down: still on c, no second move')
})

t.test('a client that ignores cookies, spread over two workers after one of them moved it: both route it by its cookie once the burst after the move is over', async (t) => {
  const clock = new FakeClock()
  const MIN_IDLE = 20_000
  const cfg = affinity({ key: 'cookie', idle_timeout: 3_600_000, on_scale_up: 'gradual', rebalance: { min_idle: MIN_IDLE, max_moves_per_second: 100 } })
  const worker = () => cookieProcess(cfg, clock)
  const [w1, w2] = [worker(), worker()]
  const cookies = Array.from({ length: 40 }, () => `tether=${setCookieValue(w1.go(undefined).setCookie!, 'tether')!}`)
  // worker 2 serves them lately, worker 1 not for longer than min_idle; then an upstream is added
  clock.advance(MIN_IDLE + 5_000)
  for (const c of cookies) w2.go(c)
  for (const w of [w1, w2]) w.router.setUpstreams(upstreamSet([...UPS, { id: 'd', url: 'http://127.0.0.1:4', weight: 1 }]), clock.now())
  clock.advance(1_000)
  // to worker 1 the next request is a new visit: it moves the users the hash sends to the new upstream
  const moved = cookies.filter((c) => w1.go(c).moved !== null)
  t.ok(moved.length > 0, `worker 1 moved ${moved.length} users`)
  const c = moved[0]!
  const home = decodeTetherCookie(c.slice('tether='.length)).upstream
  t.same([w2.go(c).upstream, w2.go(c).moved], [home, null], 'worker 2, which served the user lately, keeps the old cookie on its upstream')
  clock.advance(6_000)
  const trace = [w1, w2, w1, w2, w1, w2].map((w) => w.go(c))
  t.same(trace.map((d) => d.upstream), Array(6).fill(home), 'after the burst, both workers send the old cookie to its upstream: no lasting split')
  t.same(trace.map((d) => d.moved?.reason ?? null), ['restart', null, null, null, null, null], 'with one move back: worker 1 rehydrates the user where the cookie leads, once')
})

t.test('CookieIssuer: re-issued at a tenth of the idle timeout, and with gradual or spill at half of their min_idle (from 2 s)', async (t) => {
  const clock = new FakeClock()
  const HOUR = 3_600_000
  /** How old (s) a cookie may get before it is re-issued, under `over`. */
  const refreshAfter = (over: Partial<AffinityConfig>): number => {
    const issuer = new CookieIssuer(affinity({ key: 'cookie', idle_timeout: HOUR, ...over }), counterBytes())
    const line = issuer.issue(issuer.newSessionId(), 'a', 0, clock.now())
    const cookie = issuer.codec.decode(setCookieValue(line, 'tether')!, clock.now())!.cookie
    for (let s = 1; s <= 400; s++) if (issuer.refresh(cookie, clock.now() + s * 1_000) !== null) return s
    return Infinity
  }
  const spill = (minIdle: number) => ({ spill: { factor: 1.5, min_idle: minIdle, max_moves_per_second: 10 } })
  const rebalance = (mode: 'gradual' | 'rebalance', minIdle: number) => ({ on_scale_up: mode, rebalance: { min_idle: minIdle, max_moves_per_second: 10 } })
  t.equal(refreshAfter({}), 361, 'by default: older than a tenth of idle_timeout (6 min)')
  t.equal(refreshAfter(spill(30_000)), 16, 'spill, min_idle 30s: older than 15 s')
  t.equal(refreshAfter(rebalance('gradual', 60_000)), 31, 'gradual, min_idle 60s: older than 30 s')
  t.equal(refreshAfter({ ...rebalance('gradual', 60_000), ...spill(30_000) }), 16, 'both: the shorter')
  t.equal(refreshAfter(rebalance('rebalance', 60_000)), 361, 'on_scale_up: rebalance does not need it (no new-visit check)')
  t.equal(refreshAfter(spill(2_000)), 2, 'spill, min_idle 2s: older than 1 s (the cookie keeps whole seconds)')
  t.equal(refreshAfter(spill(1_500)), 361, 'under 2 s: not told apart at a whole second anyway, left to this process\'s record')
  t.equal(refreshAfter(spill(0)), 361, 'min_idle 0: every request is a new visit, nothing to refresh for')
  t.equal(refreshAfter({ ...spill(30_000), cookie: { ...DEFAULTS.affinity.cookie, secret: [SECRET], max_age: 100_000 } }), 11, 'a shorter cookie max_age still wins')
})

t.test('gradual rebalance over several replicas (or workers): one that has not seen a user lately does not move them in the middle of a visit', async (t) => {
  const clock = new FakeClock()
  const MIN_IDLE = 60_000
  const cfg = affinity({ key: 'cookie', idle_timeout: 3_600_000, on_scale_up: 'gradual', rebalance: { min_idle: MIN_IDLE, max_moves_per_second: 1_000 } })
  /** Tether replicas: their own records, cookie issuer (the same secret) and router. */
  const [a, b] = [cookieProcess(cfg, clock, { step: 0 }), cookieProcess(cfg, clock, { step: 0 })]
  /** Each user's browser keeps the newest cookie it was given. */
  const jar: string[] = []
  const go = (r: typeof a, user: number): Decision => {
    const d = r.go(jar[user])
    if (d.setCookie !== null) jar[user] = `tether=${setCookieValue(d.setCookie, 'tether')!}`
    return d
  }
  const USERS = 40
  for (let u = 0; u < USERS; u++) go(a, u)
  clock.advance(2_000) // the new upstream joins after the pins (the cookie keeps whole seconds)
  for (const r of [a, b]) r.router.setUpstreams(upstreamSet([...UPS, { id: 'd', url: 'http://127.0.0.1:4', weight: 1 }]), clock.now())
  // a visit of three minutes on replica a (a request every 10 s), then one request on b
  let movedOnA = 0
  for (let step = 0; step < 18; step++) {
    clock.advance(10_000)
    for (let u = 0; u < USERS; u++) if (go(a, u).moved !== null) movedOnA++
  }
  t.equal(movedOnA, 0, 'replica a, which answered every request, moves nobody in the middle of the visit')
  const fresh = jar.map((c) => clock.now() - decodeTetherCookie(c.slice('tether='.length)).lastSeen)
  t.ok(Math.max(...fresh) <= MIN_IDLE / 2 + 10_000, `the cookie's last-seen time is kept within half of min_idle (oldest ${Math.max(...fresh)} ms)`)
  clock.advance(5_000)
  const onB = Array.from({ length: USERS }, (_, u) => go(b, u))
  t.equal(onB.filter((d) => d.moved !== null).length, 0, 'replica b, which never saw these users, does not move them either: the cookie says they are active')
  // a new visit after an idle gap: now b moves the users the hash sends to the new upstream
  clock.advance(MIN_IDLE + 1_000)
  const later = Array.from({ length: USERS }, (_, u) => go(b, u))
  const moved = later.filter((d) => d.moved !== null)
  t.ok(moved.length > 0 && moved.every((d) => d.upstream === 'd' && d.moved!.reason === 'rebalance'), `after an idle gap, a new visit: moved to the new upstream (${moved.length} of ${USERS})`)
})

t.test('with on_scale_up rebalance, an app_cookie user still returns to the replica that created the session', async (t) => {
  const clock = new FakeClock()
  const { go, answer } = routing(affinity({ key: 'app_cookie', app_cookie: { name: 'sid', fallback: 'random' }, on_scale_up: 'rebalance' }), clock)
  let lost = 0
  for (let i = 0; i < 30; i++) {
    const r = go({}, '10.0.0.1')
    answer(r, `sid=v${i}`)
    if (go({ cookie: `sid=v${i}` }, '10.0.0.1').upstream !== r.upstream) lost++
  }
  t.equal(lost, 0, 'every user went back to the upstream that set their cookie')
})

t.test('an app_cookie user without the cookie, placed by client IP, never gets a checkpoint key (users share IPs)', async (t) => {
  const clock = new FakeClock()
  const down = new Set<string>()
  const { go } = routing(affinity({ key: 'app_cookie', app_cookie: { name: 'sid', fallback: 'client_ip' } }), clock, {
    availability: { ready: (id) => !down.has(id), acceptsNew: (id) => !down.has(id), drainingSince: () => null, drainMigrates: () => false, slowStartWeight: () => 1, readySince: () => -Infinity },
  })
  const first = go({}, '10.0.0.9')
  t.equal(first.sessionKey, null)
  down.add(first.upstream)
  const moved = go({}, '10.0.0.9')
  t.not(moved.upstream, first.upstream, 'moved off the dead upstream')
  t.equal(moved.sessionKey, null, 'still no checkpoint key after the move')
})

t.test('app_cookie: a value the upstream replaced still routes to it for a grace (requests in flight), then not', async (t) => {
  const clock = new FakeClock()
  const { go, answer, sessions } = routing(affinity({ key: 'app_cookie', app_cookie: { name: 'sid', fallback: 'random' } }), clock)
  const first = go({}, '10.0.0.1')
  t.equal(answer(first, 'sid=v1')?.rekeyedFrom, null, 'a first value replaces nothing')
  const second = go({ cookie: 'sid=v1' }, '10.0.0.1')
  t.equal(second.upstream, first.upstream)
  t.same(answer(second, 'sid=v2'), { key: 'v2', rekeyedFrom: 'v1' }, 'the answer says which value it replaced (its checkpoint follows)') // rotated, as Laravel does on every answer
  t.equal(sessions.table.peek('v1', clock.now()), null, 'the old binding is gone from the table')
  t.equal(sessions.table.peek('v2', clock.now())?.upstream, first.upstream)
  // a request that left the browser before the rotation arrives now, with the old value
  let same = 0
  for (let i = 0; i < 20; i++) if (go({ cookie: 'sid=v1' }, '10.0.0.1').upstream === first.upstream) same++
  t.equal(same, 20, 'the old value still reaches the same upstream during the grace')
  clock.advance(61_000)
  t.equal(sessions.table.peek('v1', clock.now()), null, 'and after the grace it is not re-learned by accident')
  t.equal(answer(go({ cookie: 'sid=v2' }, '10.0.0.1'), 'sid=v2')?.rekeyedFrom, null, 'the same value again is no rotation')
  t.equal(answer(go({ cookie: 'sid=v2' }, '10.0.0.1'), 'sid=; Max-Age=0'), null, 'a deleted cookie carries nothing over')
})

t.test('app_cookie: a flood of garbage values an application replaces does not push out the graces of pinned users', async (t) => {
  const clock = new FakeClock()
  const { go, answer, sessions } = routing(affinity({ key: 'app_cookie', app_cookie: { name: 'sid', fallback: 'random' } }), clock)
  const first = go({}, '10.0.0.1')
  answer(first, 'sid=v1')
  answer(go({ cookie: 'sid=v1' }, '10.0.0.1'), 'sid=v2') // rotated: v1 routes to first.upstream for its grace
  // an attacker: 20,000 requests with made-up values, each replaced by the application (a new session)
  for (let i = 0; i < 20_000; i++) answer(go({ cookie: `sid=junk${i}` }, '10.0.0.66'), `sid=fresh${i}`)
  let same = 0
  for (let i = 0; i < 20; i++) if (go({ cookie: 'sid=v1' }, '10.0.0.1').upstream === first.upstream) same++
  t.equal(same, 20, "the user's old value still reaches their upstream during its grace")
  t.match(sessions.rotated('v1', clock.now()), { upstream: first.upstream }, 'its grace is kept')
})

t.test("app_cookie: a Set-Cookie of that name for a path the request is not under is another cookie: the user's session is left as it is", async (t) => {
  const clock = new FakeClock()
  const { go, answer, sessions } = routing(affinity({ key: 'app_cookie', app_cookie: { name: 'sid', fallback: 'random' } }), clock)
  const first = go({}, '10.0.0.1')
  answer(first, 'sid=k1; Path=/')
  const carrying = (): Decision => go({ cookie: 'sid=k1' }, '10.0.0.1')
  // a legacy page deleting its own cookie of that name, and an admin area setting its own
  t.equal(answer(carrying(), `sid=deleted; Path=/legacy; Expires=${PAST}`, '/old'), null)
  t.equal(answer(carrying(), 'sid=adm4; Path=/admin', '/account?x=1'), null, 'not the user\'s cookie: no key learned for this answer')
  clock.advance(61_000) // past any rotation grace
  t.equal(sessions.table.peek('k1', clock.now())?.upstream, first.upstream, "the user's value is still pinned")
  t.equal(sessions.table.peek('adm4', clock.now())?.upstream, first.upstream, 'the other cookie is pinned where it was set')
  // a Path the request path is under: the user's cookie, rotated
  t.same(answer(carrying(), 'sid=k2; Path=/shop', '/shop/cart'), { key: 'k2', rekeyedFrom: 'k1' })
  t.same(answer(go({ cookie: 'sid=k2' }, '10.0.0.1'), 'sid=k3; Path=/shop/', '/shop/'), { key: 'k3', rekeyedFrom: 'k2' })
  t.equal(answer(go({ cookie: 'sid=k3' }, '10.0.0.1'), 'sid=k4; Path=/shop', '/shopping'), null, '/shopping is not under /shop')
})

t.test('app_cookie: a value longer than a request may carry is not learned (it could never route, and would only fill memory)', async (t) => {
  const clock = new FakeClock()
  const { go, answer, sessions } = routing(affinity({ key: 'app_cookie', app_cookie: { name: 'sid', fallback: 'random' } }), clock)
  const first = go({}, '10.0.0.1')
  answer(first, 'sid=k1; Path=/')
  const long = 'x'.repeat(DEFAULT_MAX_KEY_LENGTH + 1)
  t.equal(answer(go({ cookie: 'sid=k1' }, '10.0.0.1'), `sid=${long}; Path=/`), null)
  t.equal(sessions.table.peek(long, clock.now()), null, 'not pinned')
  t.equal(sessions.table.peek('k1', clock.now())?.upstream, first.upstream, 'the value it would have replaced stays')
  const longest = 'y'.repeat(DEFAULT_MAX_KEY_LENGTH)
  t.same(answer(go({ cookie: 'sid=k1' }, '10.0.0.1'), `sid=${longest}; Path=/`), { key: longest, rekeyedFrom: 'k1' }, 'the longest a request may carry is learned')
  t.equal(go({ cookie: `sid=${longest}` }, '10.0.0.9').upstream, first.upstream, 'and routes')
})

t.test('a decision is a frozen value', async (t) => {
  const clock = new FakeClock()
  const { go } = routing(affinity({ key: 'header', header: { name: 'X-Tenant' } }), clock)
  const d = go({ 'x-tenant': 'acme' })
  t.ok(Object.isFrozen(d))
  t.same(Object.keys(d).sort(), ['appKey', 'bind', 'epoch', 'learn', 'moved', 'placedAt', 'sessionKey', 'setCookie', 'source', 'upstream'])
})

t.test('a drain that migrates: an active user stays, an idle one moves once, and requests with the cookie from before the move follow it; with workers, each records the answers of the others', async (t) => {
  const clock = new FakeClock()
  const draining = new Map<string, number>()
  const availability: Availability = {
    ready: () => true, acceptsNew: (id) => !draining.has(id), drainingSince: (id) => draining.get(id) ?? null, drainMigrates: () => true,
    slowStartWeight: () => 1, readySince: () => -Infinity,
  }
  const MIN_IDLE = 2_000
  const cfg = affinity({ key: 'cookie', idle_timeout: 3_600_000, drain: { migrate: true, min_idle: MIN_IDLE } })
  const row = (d: Decision): unknown[] => [d.upstream, d.epoch, d.moved?.reason ?? null]
  const migrating = (id: string): boolean => draining.has(id)

  // one process
  const { go } = cookieProcess(cfg, clock, { availability })
  const first = go()
  const home = first.upstream
  const old = `tether=${setCookieValue(first.setCookie!, 'tether')!}`
  draining.set(home, clock.now())
  for (let i = 0; i < 5; i++) {
    clock.advance(MIN_IDLE / 2)
    t.same(row(go(old)), [home, 0, null], `active (a request every ${MIN_IDLE / 2} ms): stays on the draining upstream (${i})`)
  }
  clock.advance(MIN_IDLE)
  const moved = go(old)
  const next = moved.upstream
  t.not(next, home)
  t.same(row(moved), [next, 1, 'drain'], 'after an idle gap of min_idle: moved, with its state')
  for (let i = 0; i < 3; i++) t.same(row(go(old)), [next, 1, null], `a request sent with the cookie from before the move follows it, not moved back (${i})`)
  clock.advance(6_000)
  t.same(row(go(old)), [next, 1, null], 'also later (a client that ignores the new cookie)')
  draining.clear()

  // moved off an upstream for another reason (an admin's order), which then drains: in the
  // drain's first min_idle, a request with the cookie from before the move still follows it
  const { go: go2, records } = cookieProcess(cfg, clock, { availability })
  const user = go2()
  const userCookie = `tether=${setCookieValue(user.setCookie!, 'tether')!}`
  const target = ['a', 'b', 'c'].find((id) => id !== user.upstream)!
  records.order(user.sessionKey!, target, clock.now())
  t.same(row(go2(userCookie)), [target, 1, 'admin'], 'the ordered move')
  draining.set(user.upstream, clock.now())
  t.same(row(go2(userCookie)), [target, 1, null], 'the old cookie, its upstream just began a migrating drain: follows the move (not back to it)')
  draining.clear()

  // two workers (fresh ones for each run); the answers of a migrating drain are shared, or not
  for (const share of [false, true]) {
    const workers = [0, 1].map(() => cookieProcess(cfg, clock, { availability }))
    const via = (w: number, cookie?: string): Decision => {
      const d = workers[w]!.go(cookie)
      if (share && SessionRecords.shared(d, migrating)) workers[1 - w]!.records.record(d.sessionKey!, false, d.upstream, d.epoch, d.moved, clock.now())
      return d
    }
    const start = via(0)
    const cookie = `tether=${setCookieValue(start.setCookie!, 'tether')!}`
    // the drain starts right after worker 0's answer; then a request every 0.4 x min_idle, one
    // of every three on worker 1 (a new connection), starting there (it never served the user)
    draining.set(start.upstream, clock.now())
    const routes: unknown[][] = []
    for (let i = 0; i < 9; i++) {
      clock.advance(MIN_IDLE * 0.4)
      routes.push(row(via(i % 3 === 0 ? 1 : 0, cookie)))
    }
    const stayed = routes.every((r) => r[0] === start.upstream && r[2] === null)
    if (share) t.ok(stayed, `shared answers: the active user stays on the draining upstream on both workers (${JSON.stringify(routes)})`)
    else t.notOk(stayed, 'without sharing (the check of this test): worker 1 moves a user worker 0 serves')
    if (share) {
      // idle: worker 0 moves the user; worker 1 gets a request sent with the same (old) cookie
      clock.advance(MIN_IDLE)
      const left = via(0, cookie)
      t.same(row(left), [left.upstream, 1, 'drain'], 'after an idle gap: moved by one worker')
      t.same(row(via(1, cookie)), [left.upstream, 1, null], 'the other follows that move (no second move, no second rehydration)')
    }
    draining.clear()
  }
  // which answers are shared: those from a migrating upstream, and every move
  const d = (upstream: string, moved: Decision['moved']): Decision => ({ upstream, source: 'failover', epoch: 1, moved, setCookie: null, learn: false, appKey: null, sessionKey: 's', bind: null })
  draining.set('b', clock.now())
  const cases: [Decision, boolean][] = [
    [d('b', null), true], [d('a', null), false], [d('a', { from: 'b', reason: 'admin' }), true], [d('a', { from: 'b', reason: 'dead' }), true],
    [d('a', { from: 'c', reason: 'drain' }), true], [d('a', { from: 'c', reason: 'rebalance' }), true], [d('c', null), false],
  ]
  for (const [decision, shared] of cases) t.equal(SessionRecords.shared(decision, migrating), shared, `shared: ${decision.upstream} ${JSON.stringify(decision.moved)}`)
  draining.clear()
})

t.test('a drain learned after it began (a worker or replica started during it): min_idle counts from the start for a user this process answered, from when it learned for one it never did', async (t) => {
  const clock = new FakeClock()
  const draining = new Map<string, { since: number; known: number }>()
  const availability: Availability = {
    ready: () => true, acceptsNew: (id) => !draining.has(id), drainingSince: (id) => draining.get(id)?.since ?? null,
    drainKnownSince: (id) => draining.get(id)?.known ?? null, drainMigrates: () => true, slowStartWeight: () => 1, readySince: () => -Infinity,
  }
  const MIN_IDLE = 2_000
  const cfg = affinity({ key: 'cookie', idle_timeout: 3_600_000, drain: { migrate: true, min_idle: MIN_IDLE } })
  const row = (d: Decision): unknown[] => [d.upstream, d.epoch, d.moved?.reason ?? null]
  const a = cookieProcess(cfg, clock, { availability })
  const b = cookieProcess(cfg, clock, { availability })
  const known = a.go()
  const knownCookie = `tether=${setCookieValue(known.setCookie!, 'tether')!}`
  t.same(row(b.go(knownCookie)), [known.upstream, 0, null], 'b answers the user before the drain')
  // the upstream begins draining 1 s later on another process; b learns of it 4 s after that
  clock.advance(1_000)
  draining.set(known.upstream, { since: clock.now(), known: clock.now() + 4_000 })
  clock.advance(4_000)
  const left = b.go(knownCookie)
  t.same(row(left), [left.upstream, 1, 'drain'], 'a user b last answered 5 s ago, 4 s after the drain began: moved (idle for min_idle since the start)')
  t.not(left.upstream, known.upstream)
  draining.clear()

  const stranger = a.go()
  const strangerCookie = `tether=${setCookieValue(stranger.setCookie!, 'tether')!}`
  clock.advance(1_000)
  draining.set(stranger.upstream, { since: clock.now(), known: clock.now() + 4_000 })
  clock.advance(4_000)
  t.same(row(b.go(strangerCookie)), [stranger.upstream, 0, null], 'a user b never answered: stays (maybe a burst in progress elsewhere), min_idle counts from when b learned of the drain')
  clock.advance(MIN_IDLE / 2)
  t.same(row(b.go(strangerCookie)), [stranger.upstream, 0, null], 'active: stays')
  clock.advance(MIN_IDLE)
  t.same(row(b.go(strangerCookie)).slice(1), [1, 'drain'], 'after an idle gap: moved')
})

t.test('an admin\'s move: requests sent with the cookie from before it follow it (the user was sent back, rehydrated, undoing the move); after a failover, the cookie\'s upstream ready again is theirs', async (t) => {
  const clock = new FakeClock()
  const down = new Set<string>()
  const availability: Availability = {
    ready: (id) => !down.has(id), acceptsNew: (id) => !down.has(id), drainingSince: () => null, drainMigrates: () => false, slowStartWeight: () => 1, readySince: () => -Infinity,
  }
  const cfg = affinity({ key: 'cookie', idle_timeout: 3_600_000 })
  const { go, records } = cookieProcess(cfg, clock, { availability })
  const row = (d: Decision): unknown[] => [d.upstream, d.epoch, d.moved?.reason ?? null]
  const user = go()
  const old = `tether=${setCookieValue(user.setCookie!, 'tether')!}`
  const target = ['a', 'b', 'c'].find((id) => id !== user.upstream)!
  records.order(user.sessionKey!, target, clock.now())
  t.same(row(go(old)), [target, 1, 'admin'], 'the ordered move')
  for (let i = 0; i < 3; i++) t.same(row(go(old)), [target, 1, null], `the old cookie follows it, no second move (${i})`)

  // the upstream the admin moved the user to restarts during the burst: rehydrated there once,
  // and the move stands
  const restarting = new Map<string, number>()
  const { go: go3, records: records3 } = cookieProcess(cfg, clock, { availability: { ...availability, readySince: (id) => restarting.get(id) ?? -Infinity } })
  const third = go3()
  const thirdCookie = `tether=${setCookieValue(third.setCookie!, 'tether')!}`
  const to3 = ['a', 'b', 'c'].find((id) => id !== third.upstream)!
  records3.order(third.sessionKey!, to3, clock.now())
  t.same(row(go3(thirdCookie)), [to3, 1, 'admin'])
  restarting.set(to3, clock.now())
  clock.advance(10)
  t.same(row(go3(thirdCookie)), [to3, 2, 'restart'], 'its new upstream restarted: rehydrated there')
  t.same(row(go3(thirdCookie)), [to3, 2, null], 'and the admin\'s move still stands for the old cookie')
  t.match(records3.lastMove(third.sessionKey!), { reason: 'admin', to: to3 }, 'the record of the move is kept (a rehydration in place is no move between upstreams)')

  // moved by an admin off an upstream that later drains and migrates (after the 5 s): the old
  // cookie goes where the user is, not to their first upstream in hash order
  const draining = new Map<string, number>()
  const avail4: Availability = { ...availability, acceptsNew: (id) => !down.has(id) && !draining.has(id), drainingSince: (id) => draining.get(id) ?? null, drainMigrates: () => true }
  const { go: go4, records: records4 } = cookieProcess(cfg, clock, { availability: avail4 })
  for (let i = 0; i < 20; i++) {
    const u = go4()
    const uc = `tether=${setCookieValue(u.setCookie!, 'tether')!}`
    // the upstream after the user's own in hash order: their second choice is where the drain would send them
    const order = ['a', 'b', 'c'].filter((id) => id !== u.upstream)
    const to = order[1]!
    records4.order(u.sessionKey!, to, clock.now())
    t.same(row(go4(uc)), [to, 1, 'admin'])
    clock.advance(6_000)
    draining.set(u.upstream, clock.now())
    clock.advance(500)
    t.same(row(go4(uc)), [to, 1, null], `user ${i}: the old cookie in the drain's first min_idle: where the admin moved them, not back`)
    clock.advance(2_500)
    t.same(row(go4(uc)), [to, 1, null], `user ${i}: the old cookie, its upstream draining, after the burst: where the admin moved them, no second move`)
    draining.clear()
  }

  // strict: an old cookie whose upstream went down after an admin moved the user goes where
  // the user is (no move), not to a 503
  const { go: go5, records: records5 } = cookieProcess(affinity({ key: 'cookie', idle_timeout: 3_600_000, strict: true }), clock, { availability })
  const fifth = go5()
  const fifthCookie = `tether=${setCookieValue(fifth.setCookie!, 'tether')!}`
  const to5 = ['a', 'b', 'c'].find((id) => id !== fifth.upstream)!
  records5.order(fifth.sessionKey!, to5, clock.now())
  t.same(row(go5(fifthCookie)), [to5, 1, 'admin'], 'strict: the ordered move')
  down.add(fifth.upstream)
  t.same(row(go5(fifthCookie)), [to5, 1, null], 'strict: the old cookie, its upstream down: where the user is, no 503')
  clock.advance(6_000)
  t.same(row(go5(fifthCookie)), [to5, 1, null], 'also after the burst')
  down.clear()

  // a failover, then the old upstream is back at once: the cookie leads there (a move back, as
  // every worker and replica routes that cookie)
  const other = go()
  const cookie = `tether=${setCookieValue(other.setCookie!, 'tether')!}`
  down.add(other.upstream)
  const failover = go(cookie)
  t.equal(failover.moved?.reason, 'dead')
  t.same(row(go(cookie)), [failover.upstream, 1, null], 'while its upstream is down, the old cookie follows the failover')
  down.delete(other.upstream)
  t.same(row(go(cookie)), [other.upstream, 2, 'restart'], 'back up: the old cookie leads back to it, rehydrated')
})

t.test('an upstream removed from the set while it serves (a reload, discovery) is a planned removal: its users move with reason=drain; one removed while down, dead', async (t) => {
  const clock = new FakeClock()
  const down = new Set<string>()
  const availability: Availability = {
    ready: (id) => !down.has(id), acceptsNew: (id) => !down.has(id), drainingSince: () => null, drainMigrates: () => false,
    slowStartWeight: () => 1, readySince: () => -Infinity,
  }
  const w = cookieProcess(affinity({ key: 'cookie', idle_timeout: 3_600_000 }), clock, { availability })
  const users = Array.from({ length: 60 }, () => { const d = w.go(); return { cookie: `tether=${setCookieValue(d.setCookie!, 'tether')!}`, home: d.upstream } })
  const on = (id: string) => users.filter((u) => u.home === id).map((u) => u.cookie)
  t.ok(on('b').length > 0 && on('c').length > 0, 'b and c have users')
  down.add('c') // c is down, then both leave the set
  w.router.setUpstreams(upstreamSet(UPS.filter((u) => u.id === 'a')), clock.now())
  t.same(new Set(on('b').map((c) => w.go(c).moved?.reason)), new Set(['drain']), "b's users (b removed while serving): reason=drain")
  t.same(new Set(on('c').map((c) => w.go(c).moved?.reason)), new Set(['dead']), "c's users (c removed while down): reason=dead")
})

t.test('an upstream removed because its process is gone (membership says so: a pod re-created or whose address another took) is no planned removal: its users move with reason=dead, though it was ready', async (t) => {
  const clock = new FakeClock()
  const w = cookieProcess(affinity({ key: 'cookie', idle_timeout: 3_600_000 }), clock)
  const users = Array.from({ length: 60 }, () => { const d = w.go(); return { cookie: `tether=${setCookieValue(d.setCookie!, 'tether')!}`, home: d.upstream } })
  const on = (id: string) => users.filter((u) => u.home === id).map((u) => u.cookie)
  t.ok(on('b').length > 0 && on('c').length > 0, 'b and c have users')
  w.router.setUpstreams(upstreamSet(UPS.filter((u) => u.id === 'a')), clock.now(), new Set(['c']))
  t.same(new Set(on('b').map((c) => w.go(c).moved?.reason)), new Set(['drain']), "b's users (b removed while serving): reason=drain")
  t.same(new Set(on('c').map((c) => w.go(c).moved?.reason)), new Set(['dead']), "c's users (c's pod gone): reason=dead")
})

t.test('an upstream that leaves the set draining but down (a crashed pod discovery drained, then dropped) is not a planned removal: its users move with reason=dead', async (t) => {
  const clock = new FakeClock()
  const down = new Set<string>()
  const draining = new Set<string>()
  const availability: Availability = {
    ready: (id) => !down.has(id), acceptsNew: (id) => !down.has(id) && !draining.has(id), drainingSince: (id) => (draining.has(id) ? 0 : null), drainMigrates: () => false,
    slowStartWeight: () => 1, readySince: () => -Infinity,
  }
  const w = cookieProcess(affinity({ key: 'cookie', idle_timeout: 3_600_000 }), clock, { availability })
  const users = Array.from({ length: 60 }, () => { const d = w.go(); return { cookie: `tether=${setCookieValue(d.setCookie!, 'tether')!}`, home: d.upstream } })
  const on = (id: string) => users.filter((u) => u.home === id).map((u) => u.cookie)
  t.ok(on('b').length > 0 && on('c').length > 0, 'b and c have users')
  draining.add('b')
  draining.add('c')
  down.add('c') // both drain; c's pod crashed (its checks fail) before it leaves
  w.router.setUpstreams(upstreamSet(UPS.filter((u) => u.id === 'a')), clock.now())
  t.same(new Set(on('b').map((c) => w.go(c).moved?.reason)), new Set(['drain']), "b's users (b left draining, serving): reason=drain")
  t.same(new Set(on('c').map((c) => w.go(c).moved?.reason)), new Set(['dead']), "c's users (c left draining but down): reason=dead")
})
