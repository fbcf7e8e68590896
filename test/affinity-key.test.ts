// Affinity key extraction for each key kind, and the one-pass Cookie header scan with odd
// headers. Pure; table-driven; time from a FakeClock.
import t from 'tap'
import type { IncomingHttpHeaders } from 'node:http'
import { CookieCodec } from '../src/affinity/cookie-codec.js'
import { parseTrustedProxies } from '../src/affinity/client-ip.js'
import { DEFAULT_MAX_KEY_LENGTH, extractAffinityKey, findCookie, keyOptions } from '../src/affinity/key.js'
import { FakeClock } from './fixtures/clock.js'

const HOUR = 3_600_000

t.test('one cookie is found by name in odd Cookie headers; the first occurrence wins', async (t) => {
  const cases: [string, string | string[] | undefined, string | null][] = [
    ['no header', undefined, null],
    ['an empty header', '', null],
    ['the only cookie', 'tether=abc', 'abc'],
    ['among others', 'a=1; tether=abc; b=2', 'abc'],
    ['last, with a trailing ";"', 'a=1; tether=abc;', 'abc'],
    ['no spaces', 'a=1;tether=abc;b=2', 'abc'],
    ['extra whitespace and tabs', '  a=1 ;\t tether \t=  abc  ; b=2', 'abc'],
    ['a quoted value', 'tether="abc"', 'abc'],
    ['a quoted value with spaces around', 'tether = "abc" ;x=1', 'abc'],
    ['a lone quote is kept', 'tether="', '"'],
    ['an empty value', 'tether=; a=1', ''],
    ['an empty quoted value', 'tether=""', ''],
    ['the first of duplicates', 'tether=first; tether=second', 'first'],
    ['"=" inside the value', 'tether=a=b=c; x=1', 'a=b=c'],
    ['a longer name that ends with it', 'xtether=no; tether=yes', 'yes'],
    ['a longer name that starts with it', 'tether2=no; tether=yes', 'yes'],
    ['names are case-sensitive', 'Tether=no; TETHER=no', null],
    ['a value that looks like the name', 'a=tether; b=tether=x', null],
    ['pairs without "=" are skipped', 'garbage; tether; ;; tether=yes', 'yes'],
    ['a bare name is not a cookie', 'tether', null],
    ['joined Cookie headers (Node joins with "; ")', 'a=1; b=2; tether=abc', 'abc'],
    ['several Cookie headers as an array', ['a=1', 'tether=abc; c=3', 'tether=later'], 'abc'],
    ['an array without it', ['a=1', 'b=2'], null],
  ]
  for (const [name, header, want] of cases) t.equal(findCookie(header, 'tether'), want, name)
})

t.test('a Cookie header of many "="-less pairs is scanned in linear time', async (t) => {
  const header = 'x;'.repeat(200_000) + 'tether=found'
  const start = process.hrtime.bigint()
  t.equal(findCookie(header, 'tether'), 'found')
  t.equal(findCookie('x'.repeat(400_000) + ';a=1', 'tether'), null)
  const ms = Number(process.hrtime.bigint() - start) / 1e6
  t.ok(ms < 500, `took ${ms.toFixed(1)} ms (quadratic would take seconds)`)
})

t.test('the cookie key reports ok, absent, invalid and both expiries', async (t) => {
  const clock = new FakeClock()
  const codec = new CookieCodec({
    secrets: 'a secret of sixteen bytes or more',
    idleTimeout: 3 * HOUR,
    absoluteTimeout: 24 * HOUR,
    randomBytes: (n) => new Uint8Array(n).fill(7),
  })
  const options = keyOptions({ kind: 'cookie', cookieName: 'tether', codec })
  const issued = codec.issue('app-2', 4, clock.now())
  const fresh = clock.now()
  const cases: [string, IncomingHttpHeaders, number, string, boolean][] = [
    // [name, headers, now, status, has session]
    ['a valid cookie', { cookie: `sid=1; tether=${issued.value}` }, fresh, 'ok', true],
    ['a valid quoted cookie', { cookie: `tether="${issued.value}"` }, fresh, 'ok', true],
    ['no Cookie header', {}, fresh, 'absent', false],
    ['other cookies only', { cookie: 'sid=1; theme=dark' }, fresh, 'absent', false],
    ['an empty tether cookie', { cookie: 'tether=' }, fresh, 'absent', false],
    ['a tampered cookie', { cookie: `tether=${issued.value.slice(0, -1)}${issued.value.endsWith('A') ? 'B' : 'A'}` }, fresh, 'invalid', false],
    ['garbage', { cookie: 'tether=%00%ff;;' }, fresh, 'invalid', false],
    ['idle too long', { cookie: `tether=${issued.value}` }, fresh + 3 * HOUR + 1000, 'expired-idle', true],
    ['past the absolute limit', { cookie: `tether=${issued.value}` }, fresh + 25 * HOUR, 'expired-absolute', true],
  ]
  for (const [name, headers, now, status, hasSession] of cases) {
    const key = extractAffinityKey(headers, '203.0.113.9', options, now)
    t.match(key, { kind: 'cookie', status }, name)
    if (key.kind === 'cookie') t.same(key.session, hasSession ? issued.cookie : null, `${name}: session`)
  }
})

t.test('the app cookie key is the application cookie value, or null to fall back', async (t) => {
  const options = keyOptions({ kind: 'app_cookie', cookieName: 'laravel_session' })
  const long = 'x'.repeat(DEFAULT_MAX_KEY_LENGTH + 1)
  const cases: [string, IncomingHttpHeaders, string | null][] = [
    ['present', { cookie: 'XSRF-TOKEN=t; laravel_session=eyJpdiI6Ik1n%3D%3D' }, 'eyJpdiI6Ik1n%3D%3D'],
    ['quoted', { cookie: 'laravel_session="v1"' }, 'v1'],
    ['absent', { cookie: 'XSRF-TOKEN=t' }, null],
    ['no Cookie header', {}, null],
    ['empty', { cookie: 'laravel_session=' }, null],
    ['longer than the key limit', { cookie: `laravel_session=${long}` }, null],
    ['exactly the key limit', { cookie: `laravel_session=${long.slice(1)}` }, long.slice(1)],
  ]
  for (const [name, headers, want] of cases) t.same(extractAffinityKey(headers, '203.0.113.9', options, 0), { kind: 'app_cookie', value: want }, name)
  const short = keyOptions({ kind: 'app_cookie', cookieName: 's', maxKeyLength: 4 })
  t.same(extractAffinityKey({ cookie: 's=12345' }, '::1', short, 0), { kind: 'app_cookie', value: null }, 'a configured limit')
})

t.test('the client IP key uses X-Forwarded-For only from trusted peers', async (t) => {
  const options = keyOptions({ kind: 'client_ip', trusted: parseTrustedProxies(['10.0.0.0/8']) })
  const cases: [string, string, IncomingHttpHeaders, string][] = [
    ['an untrusted peer', '203.0.113.9', { 'x-forwarded-for': '1.1.1.1' }, '203.0.113.9'],
    ['a trusted peer', '10.0.0.2', { 'x-forwarded-for': '198.51.100.7, 10.0.0.3' }, '198.51.100.7'],
    ['a mapped peer without a header', '::ffff:203.0.113.9', {}, '203.0.113.9'],
  ]
  for (const [name, peer, headers, want] of cases) t.same(extractAffinityKey(headers, peer, options, 0), { kind: 'client_ip', value: want }, name)
})

t.test('the header key is the trimmed header value, or null to fall back', async (t) => {
  const options = keyOptions({ kind: 'header', headerName: 'X-Tenant' })
  t.equal(options.kind === 'header' && options.headerName, 'x-tenant', 'the header name is lower-cased once')
  const cases: [string, IncomingHttpHeaders, string | null][] = [
    ['present', { 'x-tenant': 'acme' }, 'acme'],
    ['with whitespace', { 'x-tenant': '  acme \t' }, 'acme'],
    ['absent', { 'x-other': 'acme' }, null],
    ['empty', { 'x-tenant': '' }, null],
    ['blank', { 'x-tenant': '   ' }, null],
    ['repeated (an array): the first', { 'x-tenant': ['acme', 'evil'] }, 'acme'],
    ['an empty array', { 'x-tenant': [] }, null],
    ['longer than the key limit', { 'x-tenant': 'x'.repeat(DEFAULT_MAX_KEY_LENGTH + 1) }, null],
  ]
  for (const [name, headers, want] of cases) t.same(extractAffinityKey(headers, '203.0.113.9', options, 0), { kind: 'header', value: want }, name)
})

t.test('extraction never mutates the request headers', async (t) => {
  const headers: IncomingHttpHeaders = Object.freeze({ cookie: 'a=1; tether=x', 'x-forwarded-for': '1.1.1.1', 'x-tenant': ' a ' })
  const codec = new CookieCodec({ secrets: 'a secret of sixteen bytes or more', idleTimeout: HOUR })
  for (const options of [
    keyOptions({ kind: 'cookie', cookieName: 'tether', codec }),
    keyOptions({ kind: 'app_cookie', cookieName: 'a' }),
    keyOptions({ kind: 'client_ip', trusted: parseTrustedProxies(['0.0.0.0/0']) }),
    keyOptions({ kind: 'header', headerName: 'x-tenant' }),
  ]) {
    t.doesNotThrow(() => extractAffinityKey(headers, '10.0.0.1', options, 0), options.kind)
    t.ok(Object.isFrozen(options), `${options.kind} options are frozen`)
  }
})

t.test('of two Tether cookies, a later one that verifies wins over a stale first one', async (t) => {
  const { CookieCodec } = await import('../src/affinity/cookie-codec.js')
  const { extractAffinityKey, keyOptions } = await import('../src/affinity/key.js')
  const codec = new CookieCodec({ secrets: ['0123456789abcdef0123'], idleTimeout: 60_000 })
  const now = 1_800_000_000_000
  const good = codec.issue('app-2', 0, now).value
  const stale = codec.issue('app-1', 0, now - 120_000).value // idle-expired
  const opts = keyOptions({ kind: 'cookie', cookieName: 'tether', codec })
  // an empty first one too: browsers list a sub-path's cookie first (RFC 6265 section 5.4)
  for (const first of [stale, 'garbage', '', '""']) {
    const key = extractAffinityKey({ cookie: `tether=${first}; a=1; tether=${good}` }, '10.0.0.1', opts, now)
    t.match(key, { kind: 'cookie', status: 'ok', session: { upstream: 'app-2' } }, `first: ${JSON.stringify(first)}`)
  }
  t.match(extractAffinityKey({ cookie: 'tether=; tether=garbage' }, '10.0.0.1', opts, now), { status: 'absent' }, 'an empty first one and none that verifies: absent, as an empty one alone')
})

t.test("KeyReader reads Tether's cookie as extractAffinityKey does, in one object a request", async (t) => {
  const { KeyReader, cookieSession } = await import('../src/affinity/key.js')
  const codec = new CookieCodec({ secrets: ['0123456789abcdef0123'], idleTimeout: 60_000, absoluteTimeout: 3_600_000 })
  const now = 1_800_000_000_000
  const good = codec.issue('app-2', 3, now).value
  const stale = codec.issue('app-1', 0, now - 120_000).value // idle-expired
  const old = codec.refresh(codec.decode(codec.issue('app-1', 0, now - 4_000_000).value, now - 4_000_000)!.cookie, now - 1_000) // past the absolute limit, seen lately
  t.equal(codec.decode(old, now)?.status, 'expired-absolute')
  const options = keyOptions({ kind: 'cookie', cookieName: 'tether', codec })
  const reader = new KeyReader({ options, fallback: 'random', trusted: parseTrustedProxies([]) })
  const headers: IncomingHttpHeaders[] = [
    {}, { cookie: 'a=1' }, { cookie: 'tether=' }, { cookie: 'tether=garbage' }, { cookie: `tether=${good}` },
    { cookie: `tether="${good}"` }, { cookie: `tether=${stale}` }, { cookie: `tether=${old}` },
    { cookie: `tether=${stale}; a=1; tether=${good}` }, { cookie: `tether=; tether=${good}` }, { cookie: 'tether=; tether=garbage' },
    { cookie: ['a=1', 'tether=garbage', `tether=${good}`] as unknown as string },
  ]
  for (const h of headers) {
    const want = extractAffinityKey(h, '10.0.0.1', options, now)
    const session = want.kind === 'cookie' && want.status === 'ok' ? want.session : null
    t.same(reader.read(h, '10.0.0.1', now), { kind: 'cookie', session }, JSON.stringify(h))
    t.equal(cookieSession(h.cookie, options as { cookieName: string; codec: CookieCodec }, now), session, `cookieSession ${JSON.stringify(h)}`)
  }
  // the codec's own check: the cookie when decode says ok, else null
  for (const v of [good, stale, old, 'garbage', '']) {
    const d = codec.decode(v, now)
    t.equal(codec.valid(v, now), d?.status === 'ok' ? d.cookie : null, `valid(${v.slice(0, 8)})`)
  }
  // without a verified cookie, the one shared "new session" key: no object made
  t.equal(reader.read({}, '10.0.0.1', now), reader.read({ cookie: `tether=${stale}` }, '10.0.0.1', now), 'the same frozen key')
  t.ok(Object.isFrozen(reader.read({}, '10.0.0.1', now)))
})

t.test("KeyReader's cookie read agrees with extractAffinityKey's verdict over generated Cookie headers", async (t) => {
  const { KeyReader, cookieSession } = await import('../src/affinity/key.js')
  const now = 1_800_000_000_000
  const secrets = ['fedcba9876543210fedcba', '0123456789abcdef0123'] // the second: a rotated-out secret, still verifying
  const opts = { idleTimeout: 60_000, absoluteTimeout: 3_600_000 }
  const signer = new CookieCodec({ secrets, ...opts })
  const previous = new CookieCodec({ secrets: [secrets[1]!], ...opts })
  const good = signer.issue('app-2', 3, now).value
  const rotated = previous.issue('app-1', 1, now - 5_000).value // verifies with secretIndex 1
  const stale = signer.issue('app-1', 0, now - 120_000).value // idle-expired
  const old = signer.refresh(signer.decode(signer.issue('app-0', 0, now - 4_000_000).value, now - 4_000_000)!.cookie, now - 1_000) // absolute-expired
  const tampered = good.slice(0, -2) + (good.endsWith('AA') ? 'BA' : 'AA')
  const foreign = new CookieCodec({ secrets: ['another-secret-0123456789'], ...opts }).issue('app-0', 0, now).value
  const values = [good, rotated, stale, old, tampered, foreign, 'garbage', '', `"${good}"`, `"${rotated}"`, '""', `${good}x`, ` ${good} `, `\t${stale}`]
  const names = ['tether', 'tether', 'tether', ' tether ', '\ttether', 'Tether', 'tether2', 'xtether', 'a']
  const seps = ['; ', ';', ' ;\t', ';; ', '; junk; ']
  let seed = 27
  const rnd = (n: number): number => {
    seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
    return Math.floor((seed / 2_147_483_648) * n) // the high bits: an LCG's low ones cycle
  }
  const pick = <T>(xs: readonly T[]): T => xs[rnd(xs.length)]!
  // two codecs with the same secrets: the old verdict's caches never feed the new read's
  const oldCodec = new CookieCodec({ secrets, ...opts })
  const newCodec = new CookieCodec({ secrets, ...opts })
  const oldOpts = keyOptions({ kind: 'cookie', cookieName: 'tether', codec: oldCodec })
  const newOpts = keyOptions({ kind: 'cookie', cookieName: 'tether', codec: newCodec })
  const reader = new KeyReader({ options: newOpts, fallback: 'random', trusted: parseTrustedProxies([]) })
  let sessions = 0
  let rotatedSeen = 0
  let laterWins = 0
  const wrong: string[] = []
  for (let i = 0; i < 3000; i++) {
    const pairs = Array.from({ length: 1 + rnd(5) }, () => (rnd(10) === 0 ? pick(['tether', 'junk', '']) : `${pick(names)}=${pick(values)}`))
    // one joined header (HTTP/1.1, or Node's join), or h2 cookie crumbs split over several
    let cookie: string | string[] = pairs.join(pick(seps))
    if (rnd(3) === 0) {
      const crumbs: string[] = []
      for (const p of pairs) if (crumbs.length === 0 || rnd(2) === 0) crumbs.push(p); else crumbs[crumbs.length - 1] += `; ${p}`
      cookie = crumbs
    }
    const h = { cookie } as IncomingHttpHeaders
    const was = extractAffinityKey(h, '10.0.0.1', oldOpts, now)
    const want = was.kind === 'cookie' && was.status === 'ok' ? was.session : null // the KeyReader before cookieSession
    const got = reader.read(h, '10.0.0.1', now)
    const session = cookieSession(cookie, newOpts as { cookieName: string; codec: CookieCodec }, now)
    if (got.kind !== 'cookie' || JSON.stringify(got.session) !== JSON.stringify(want) || JSON.stringify(session) !== JSON.stringify(want)) wrong.push(JSON.stringify(cookie))
    if (want !== null) {
      sessions++
      if (want.secretIndex === 1) rotatedSeen++
      const first = findCookie(cookie, 'tether')
      if (first === null || oldCodec.decode(first, now)?.status !== 'ok') laterWins++
    }
  }
  t.same(wrong.slice(0, 5), [], `${wrong.length} of 3000 headers read differently`)
  // the generator reached every interesting case
  t.ok(sessions > 300 && rotatedSeen > 50 && laterWins > 50, `sessions ${sessions}, rotated ${rotatedSeen}, a later cookie winning ${laterWins}`)
})

t.test("a Cookie header stuffed with forged Tether cookies costs a bounded number of verifications, and a browser's few duplicates still verify", async (t) => {
  const { cookieSession, MAX_COOKIE_DUPLICATES } = await import('../src/affinity/key.js')
  const now = 1_800_000_000_000
  // counts the verifications (each an HMAC per secret for a value not verified before)
  class CountingCodec extends CookieCodec {
    calls = 0
    override decode(value: string, at: number): ReturnType<CookieCodec['decode']> {
      this.calls++
      return super.decode(value, at)
    }
    override valid(value: string, at: number): ReturnType<CookieCodec['valid']> {
      this.calls++
      return super.valid(value, at)
    }
  }
  const codec = new CountingCodec({ secrets: ['fedcba9876543210fedcba', '0123456789abcdef0123'], idleTimeout: 60_000 })
  const opts = keyOptions({ kind: 'cookie', cookieName: 'tether', codec })
  const good = codec.issue('app-2', 0, now).value
  // about 230 forged values of a cookie's length fill a default 16 KB head
  const forged = Array.from({ length: 230 }, (_, i) => `tether=${Buffer.alloc(51, i + 1).toString('base64url')}`)
  for (const [name, header] of [['forged only', forged.join('; ')], ['forged, then a valid one at the end', [...forged, `tether=${good}`].join('; ')]] as const) {
    codec.calls = 0
    t.equal(cookieSession(header, opts as { cookieName: string; codec: CookieCodec }, now), null, `${name}: no session (cookieSession)`)
    t.ok(codec.calls <= 1 + MAX_COOKIE_DUPLICATES, `${name}: cookieSession verified ${codec.calls} values, at most ${1 + MAX_COOKIE_DUPLICATES}`)
    codec.calls = 0
    t.match(extractAffinityKey({ cookie: header }, '10.0.0.1', opts, now), { kind: 'cookie', session: null, status: 'invalid' }, `${name}: invalid (extractAffinityKey)`)
    t.ok(codec.calls <= 1 + MAX_COOKIE_DUPLICATES, `${name}: extractAffinityKey verified ${codec.calls} values, at most ${1 + MAX_COOKIE_DUPLICATES}`)
  }
  // a browser holding a few cookies of the name (old Path or Domain settings): the last that fits still wins
  const few = [...forged.slice(0, MAX_COOKIE_DUPLICATES), `tether=${good}`].join('; ')
  t.match(cookieSession(few, opts as { cookieName: string; codec: CookieCodec }, now), { upstream: 'app-2' }, `a valid one after ${MAX_COOKIE_DUPLICATES} stale ones is found`)
  t.match(extractAffinityKey({ cookie: few }, '10.0.0.1', opts, now), { status: 'ok', session: { upstream: 'app-2' } })
})
