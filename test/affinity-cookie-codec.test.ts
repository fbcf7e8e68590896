// The signed affinity cookie: round trips, forgery and tampering, garbage of every shape,
// secret rotation, idle and absolute expiry, the refresh rule and Set-Cookie serialisation.
// Time comes from a FakeClock and randomness from a seeded PRNG; nothing sleeps.
import t from 'tap'
import { createHmac, createSecretKey, hkdfSync } from 'node:crypto'
import {
  CookieCodec,
  MIN_SECRET_BYTES,
  serializeSetCookie,
  setCookieSerializer,
  shouldRefresh,
  type DecodedCookie,
} from '../src/affinity/cookie-codec.js'
import { FakeClock } from './fixtures/clock.js'
import { mulberry32 as prng } from './fixtures/random.js'

const MIN = 60_000
const HOUR = 60 * MIN
const SECRET = 'correct horse battery staple'
const OLD_SECRET = 'an older secret, still accepted'
const IDLE = 3 * HOUR
const ABSOLUTE = 24 * HOUR


/** Session ids from a seeded PRNG instead of crypto.randomBytes. */
function seededBytes(seed: number): (n: number) => Uint8Array {
  const random = prng(seed)
  return (n) => Uint8Array.from({ length: n }, () => Math.floor(random() * 256))
}

function codec(secrets: string | string[] = SECRET, absoluteTimeout: number | null = ABSOLUTE): CookieCodec {
  return new CookieCodec({ secrets, idleTimeout: IDLE, absoluteTimeout, randomBytes: seededBytes(1) })
}

/** Re-signs raw bytes with a secret, the way the codec does (used to build "authentic" odd cookies). */
function sign(bytes: Buffer, secret: string): string {
  const key = createSecretKey(Buffer.from(hkdfSync('sha256', secret, 'tether', 'tether affinity cookie v1', 32)))
  const mac = createHmac('sha256', key).update(bytes).digest().subarray(0, 16)
  return Buffer.concat([bytes, mac]).toString('base64url')
}

t.test('an issued cookie decodes to the same session, upstream, epoch and times', async (t) => {
  const clock = new FakeClock()
  const c = codec()
  for (const [upstream, epoch] of [['app-0', 0], ['pod-7f9c4d-xk2p1', 41], ['ü-ñ-日本', 2 ** 32 - 1], ['x'.repeat(255), 1]] as const) {
    const { value, cookie } = c.issue(upstream, epoch, clock.now())
    t.match(value, /^[A-Za-z0-9_-]+$/, `${upstream.slice(0, 20)}: the value is base64url`)
    t.same(c.decode(value, clock.now()), { status: 'ok', cookie }, `${upstream.slice(0, 20)}: round trip`)
    t.match(cookie, { upstream, epoch, secretIndex: 0, sessionId: /^[0-9a-f]{32}$/ })
  }
})

t.test('a cookie for a short id is compact and never carries an address', async (t) => {
  const { value } = codec().issue('app-0', 0, new FakeClock().now())
  t.equal(value.length, 68)
  t.notMatch(Buffer.from(value, 'base64url').toString('latin1'), /http|:\/\/|\d+\.\d+\.\d+\.\d+/)
})

t.test('every issued session gets a new random id from the injected source', async (t) => {
  const c = codec()
  const ids = new Set<string>()
  for (let i = 0; i < 1000; i++) ids.add(c.issue('app-0', 0, 0).cookie.sessionId)
  t.equal(ids.size, 1000)
  const fixed = new CookieCodec({ secrets: SECRET, idleTimeout: IDLE, randomBytes: () => new Uint8Array(16).fill(0xab) })
  t.equal(fixed.issue('app-0', 0, 0).cookie.sessionId, 'ab'.repeat(16))
  const short = new CookieCodec({ secrets: SECRET, idleTimeout: IDLE, randomBytes: () => new Uint8Array(8) })
  t.throws(() => short.issue('app-0', 0, 0), RangeError, 'a broken random source is a programming error')
})

t.test('times are carried in whole seconds', async (t) => {
  const c = codec()
  const { value } = c.issue('app-0', 0, 1_764_086_400_999)
  t.match(c.decode(value, 1_764_086_401_000)?.cookie, { issuedAt: 1_764_086_400_000, lastSeen: 1_764_086_400_000 })
})

t.test('a forged route (another upstream id with the old MAC) is rejected', async (t) => {
  const clock = new FakeClock()
  const c = codec()
  const bytes = Buffer.from(c.issue('app-0', 0, clock.now()).value, 'base64url')
  for (const target of ['app-1', 'app-9', 'apq-0']) {
    const forged = Buffer.from(bytes)
    forged.write(target, 30, 'utf8') // same length: only the id bytes change, MAC kept
    t.equal(c.decode(forged.toString('base64url'), clock.now()), null, `forged route to ${target}`)
  }
  const longer = Buffer.concat([bytes.subarray(0, 29), Buffer.from([6]), Buffer.from('app-10'), bytes.subarray(35)])
  t.equal(c.decode(longer.toString('base64url'), clock.now()), null, 'forged route with a longer id')
})

t.test('flipping any single bit anywhere is detected', async (t) => {
  const clock = new FakeClock()
  const c = codec()
  const bytes = Buffer.from(c.issue('app-0', 3, clock.now()).value, 'base64url')
  let accepted = 0
  for (let i = 0; i < bytes.length; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const b = Buffer.from(bytes)
      b[i]! ^= 1 << bit
      if (c.decode(b.toString('base64url'), clock.now()) !== null) accepted++
    }
  }
  t.equal(accepted, 0, `all ${bytes.length * 8} single-bit changes rejected`)
})

t.test('truncated and extended cookies are rejected', async (t) => {
  const clock = new FakeClock()
  const c = codec()
  const value = c.issue('app-0', 0, clock.now()).value
  for (let n = 0; n < value.length; n++) t.equal(c.decode(value.slice(0, n), clock.now()), null, `first ${n} chars`)
  for (const extra of ['A', 'AA', 'AAAA', '-', '=', '==', ' ', '.sig']) {
    t.equal(c.decode(value + extra, clock.now()), null, `with ${JSON.stringify(extra)} appended`)
  }
})

t.test('each cookie has one spelling: non-canonical base64url of authentic bytes is rejected', async (t) => {
  const clock = new FakeClock()
  const c = codec()
  for (const upstream of ['app-0', 'app-01', 'app-012']) {
    const value = c.issue(upstream, 0, clock.now()).value
    t.not(c.decode(value, clock.now()), null, `${upstream}: the canonical spelling verifies`)
    const last = value.at(-1)!
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    let sameBytes = 0
    for (const other of alphabet) {
      if (other === last) continue
      const variant = value.slice(0, -1) + other
      if (Buffer.from(variant, 'base64url').equals(Buffer.from(value, 'base64url'))) sameBytes++
      t.equal(c.decode(variant, clock.now()), null, `${upstream}: last char ${last} -> ${other}`)
    }
    t.equal(sameBytes, [0, 15, 3][Buffer.from(value, 'base64url').length % 3], `${upstream}: the variants with unused bits set were tried`)
  }
})

t.test('authentic but structurally wrong cookies are rejected: version, id length', async (t) => {
  const clock = new FakeClock()
  const c = codec()
  const body = Buffer.from(c.issue('app-0', 0, clock.now()).value, 'base64url').subarray(0, -16)
  const v2 = Buffer.from(body)
  v2[0] = 2
  t.equal(c.decode(sign(v2, SECRET), clock.now()), null, 'a version-2 cookie, even correctly signed')
  t.not(c.decode(sign(body, SECRET), clock.now()), null, 'control: re-signing an untouched body verifies')
  const emptyId = Buffer.from(body.subarray(0, 30))
  emptyId[29] = 0
  t.equal(c.decode(sign(emptyId, SECRET), clock.now()), null, 'an empty upstream id')
  const lying = Buffer.from(body)
  lying[29] = 4 // says 4 bytes, carries 5
  t.equal(c.decode(sign(lying, SECRET), clock.now()), null, 'a length byte that disagrees with the size')
})

t.test('garbage of many shapes decodes to null and never throws', async (t) => {
  const clock = new FakeClock()
  const c = codec()
  const shapes: unknown[] = [
    '', ' ', '=', 'null', 'undefined', '[object Object]', '\u0000'.repeat(70), '日本語'.repeat(30),
    'A'.repeat(67), 'A'.repeat(68), 'A'.repeat(402), 'A'.repeat(403), '_'.repeat(100), '-'.repeat(100),
    'a'.repeat(1024 * 1024), '%41%42%43'.repeat(10), '"' + 'A'.repeat(66) + '"', 'AQ' + '\ud800'.repeat(60),
    Buffer.alloc(60, 1).toString('base64'), Buffer.alloc(60, 1).toString('base64url'),
    Buffer.alloc(301, 1).toString('base64url'), Buffer.alloc(302, 1).toString('base64url'),
    undefined, null, 42, {}, [],
  ]
  for (const shape of shapes) {
    const label = typeof shape === 'string' ? `${shape.length} chars: ${JSON.stringify(shape.slice(0, 16))}` : String(shape)
    t.doesNotThrow(() => t.equal(c.decode(shape as string, clock.now()), null, label))
  }
})

t.test('5,000 seeded random strings never throw and never verify', async (t) => {
  const clock = new FakeClock()
  const c = codec([SECRET, OLD_SECRET])
  const random = prng(20251125)
  const alphabets = [
    'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_',
    'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=',
    ' ;,="\\\t\r\n\u0000\u007f\u00ff\u2028\ud83d',
  ]
  const template = c.issue('app-0', 0, clock.now()).value
  let verified = 0
  let threw = 0
  for (let i = 0; i < 5000; i++) {
    let s: string
    if (i % 4 === 0) {
      // mutate a real cookie: replace a few characters
      const chars = [...template]
      for (let k = 1 + Math.floor(random() * 3); k > 0; k--) chars[Math.floor(random() * chars.length)] = alphabets[0]![Math.floor(random() * 64)]!
      s = chars.join('')
      if (s === template) continue
    } else {
      const alphabet = alphabets[i % 3]!
      const length = Math.floor(random() * 500)
      s = ''
      for (let k = 0; k < length; k++) s += alphabet[Math.floor(random() * alphabet.length)]
    }
    try {
      if (c.decode(s, clock.now()) !== null) verified++
    } catch {
      threw++
    }
  }
  t.equal(threw, 0, 'never throws')
  t.equal(verified, 0, 'never verifies')
})

t.test('a cookie signed with an unknown secret is rejected', async (t) => {
  const clock = new FakeClock()
  const value = codec('some other deployment secret').issue('app-0', 0, clock.now()).value
  t.equal(codec().decode(value, clock.now()), null)
})

t.test('with rotated secrets the first signs, all verify, and the verifying index is reported', async (t) => {
  const clock = new FakeClock()
  const rotated = codec([SECRET, OLD_SECRET])
  const fromOld = codec(OLD_SECRET).issue('app-3', 5, clock.now())
  const fromNew = rotated.issue('app-3', 5, clock.now())
  t.match(rotated.decode(fromOld.value, clock.now()), { status: 'ok', cookie: { upstream: 'app-3', secretIndex: 1 } })
  t.match(rotated.decode(fromNew.value, clock.now()), { status: 'ok', cookie: { secretIndex: 0 } })
  t.match(codec(SECRET).decode(fromNew.value, clock.now()), { cookie: { secretIndex: 0 } }, 'new cookies use the first secret')
  t.equal(codec(OLD_SECRET).decode(fromNew.value, clock.now()), null)
  const old = rotated.decode(fromOld.value, clock.now())!.cookie
  t.equal(shouldRefresh(old, clock.now(), IDLE), true, 'a cookie verified by an old secret is due for re-issue')
  const reissued = rotated.decode(rotated.refresh(old, clock.now()), clock.now())!.cookie
  t.match(reissued, { sessionId: old.sessionId, upstream: 'app-3', epoch: 5, secretIndex: 0 })
})

t.test('expiry: idle and absolute are distinct verdicts at their exact boundaries', async (t) => {
  const cases: [string, number, number | null, 'ok' | 'expired-idle' | 'expired-absolute'][] = [
    // [name, ms since last seen (and issued), absoluteTimeout, verdict]
    ['fresh', 0, ABSOLUTE, 'ok'],
    ['idle exactly idleTimeout', IDLE, ABSOLUTE, 'ok'],
    ['idle one second past idleTimeout', IDLE + 1000, ABSOLUTE, 'expired-idle'],
    ['long gone, absolute checked first', ABSOLUTE + 1000, ABSOLUTE, 'expired-absolute'],
    ['long gone without an absolute limit', ABSOLUTE + 1000, null, 'expired-idle'],
  ]
  for (const [name, elapsed, absolute, want] of cases) {
    const clock = new FakeClock()
    const c = codec(SECRET, absolute)
    const { value, cookie } = c.issue('app-0', 0, clock.now())
    clock.advance(elapsed)
    t.same(c.decode(value, clock.now()), { status: want, cookie }, name)
  }
})

t.test('a session refreshed while in use outlives idleTimeout but not absoluteTimeout', async (t) => {
  const clock = new FakeClock()
  const c = codec()
  let value = c.issue('app-0', 0, clock.now()).value
  let refreshes = 0
  let hours = 0
  for (;;) {
    clock.advance(20 * MIN)
    const d = c.decode(value, clock.now())!
    if (d.status !== 'ok') {
      t.equal(d.status, 'expired-absolute')
      break
    }
    hours += 1 / 3
    if (shouldRefresh(d.cookie, clock.now(), IDLE)) {
      value = c.refresh(d.cookie, clock.now())
      refreshes++
    }
  }
  t.equal(Math.round(hours), 24, 'it lived exactly the absolute timeout')
  t.equal(refreshes, 72, 're-issued once per 20-minute request (> idleTimeout / 10)')
})

t.test('the refresh rule re-issues only after idleTimeout / 10', async (t) => {
  const base: DecodedCookie = { sessionId: '0'.repeat(32), upstream: 'app-0', epoch: 0, issuedAt: 0, lastSeen: 0, secretIndex: 0 }
  const cases: [string, number, boolean][] = [
    ['just issued', 0, false],
    ['10 minutes later', 10 * MIN, false],
    ['exactly idleTimeout / 10 later', IDLE / 10, false],
    ['one ms past idleTimeout / 10', IDLE / 10 + 1, true],
    ['an hour later', HOUR, true],
  ]
  for (const [name, now, want] of cases) t.equal(shouldRefresh(base, now, IDLE), want, name)
})

t.test('refresh keeps the session and issued-at, and can re-bind for failover', async (t) => {
  const clock = new FakeClock()
  const c = codec()
  const { cookie } = c.issue('app-0', 0, clock.now())
  clock.advance(HOUR)
  const same = c.decode(c.refresh(cookie, clock.now()), clock.now())!.cookie
  t.same(same, { ...cookie, lastSeen: clock.now() })
  const moved = c.decode(c.refresh(cookie, clock.now(), { upstream: 'app-1', epoch: 1 }), clock.now())!.cookie
  t.same(moved, { ...cookie, upstream: 'app-1', epoch: 1, lastSeen: clock.now() })
})

t.test('encode rejects fields Tether itself got wrong', async (t) => {
  const c = codec()
  const ok = { sessionId: 'a'.repeat(32), upstream: 'app-0', epoch: 0, issuedAt: 0, lastSeen: 0 }
  const cases: [string, object][] = [
    ['a short session id', { sessionId: 'abc' }],
    ['an upper-case session id', { sessionId: 'A'.repeat(32) }],
    ['an empty upstream id', { upstream: '' }],
    ['a 256-byte upstream id', { upstream: 'x'.repeat(256) }],
    ['a negative epoch', { epoch: -1 }],
    ['a fractional epoch', { epoch: 1.5 }],
    ['an epoch beyond uint32', { epoch: 2 ** 32 }],
    ['a time beyond 2106', { lastSeen: 2 ** 32 * 1000 }],
  ]
  for (const [name, change] of cases) t.throws(() => c.encode({ ...ok, ...change }), RangeError, name)
})

t.test('bad codec options are rejected with a precise message', async (t) => {
  const cases: [string, ConstructorParameters<typeof CookieCodec>[0], RegExp][] = [
    ['no secrets', { secrets: [], idleTimeout: IDLE }, /at least one secret/],
    ['an empty secret', { secrets: '', idleTimeout: IDLE }, /secret #1 must be at least 16 bytes/],
    ['a short second secret', { secrets: [SECRET, 'short'], idleTimeout: IDLE }, /secret #2 must be at least 16 bytes/],
    ['a zero idle timeout', { secrets: SECRET, idleTimeout: 0 }, /idleTimeout must be > 0/],
    ['a negative absolute timeout', { secrets: SECRET, idleTimeout: IDLE, absoluteTimeout: -5 }, /absoluteTimeout must be > 0/],
  ]
  for (const [name, options, message] of cases) t.throws(() => new CookieCodec(options), { message }, name)
  t.equal(MIN_SECRET_BYTES, 16)
})

t.test('Set-Cookie values carry exactly the configured attributes', async (t) => {
  const cases: [string, Parameters<typeof serializeSetCookie>[2], string][] = [
    ['no attributes', {}, 'tether=v'],
    ['the documented defaults', { path: '/', secure: true, httpOnly: true, sameSite: 'Lax', domain: null, maxAge: null }, 'tether=v; Path=/; Secure; HttpOnly; SameSite=Lax'],
    ['every attribute', { path: '/app', domain: 'example.com', maxAge: 3 * HOUR, secure: true, httpOnly: true, sameSite: 'Strict' }, 'tether=v; Path=/app; Domain=example.com; Max-Age=10800; Secure; HttpOnly; SameSite=Strict'],
    ['Max-Age floored to seconds', { maxAge: 1999 }, 'tether=v; Max-Age=1'],
    ['Max-Age zero deletes', { maxAge: 0 }, 'tether=v; Max-Age=0'],
    // affinity.cookie.max_age: 500ms (or 0.5) is a valid duration > 0; Max-Age=0 would make every browser drop the cookie at once
    ['a positive Max-Age under a second is sent as 1 s, never as a deletion', { maxAge: 500 }, 'tether=v; Max-Age=1'],
    ['1 ms is still a lifetime', { maxAge: 1 }, 'tether=v; Max-Age=1'],
    ['SameSite=None with Secure', { sameSite: 'None', secure: true }, 'tether=v; Secure; SameSite=None'],
    ['a leading-dot domain', { domain: '.example.com' }, 'tether=v; Domain=.example.com'],
  ]
  for (const [name, attrs, want] of cases) t.equal(serializeSetCookie('tether', 'v', attrs), want, name)
  const serialize = setCookieSerializer('__Host-tether', { path: '/', secure: true })
  t.equal(serialize('abc'), '__Host-tether=abc; Path=/; Secure', 'a prepared serializer is reusable')
})

t.test('invalid Set-Cookie settings are rejected with a precise message', async (t) => {
  const cases: [string, string, Parameters<typeof serializeSetCookie>[2], RegExp][] = [
    ['SameSite=None without Secure', 'tether', { sameSite: 'None' }, /same_site None requires secure: true/],
    ['an unknown SameSite', 'tether', { sameSite: 'lax' as 'Lax' }, /same_site must be Strict, Lax or None/],
    ['a name with a space', 'te ther', {}, /is not a valid token/],
    ['a name with "="', 'a=b', {}, /is not a valid token/],
    ['an empty name', '', {}, /is not a valid token/],
    ['a relative path', 'tether', { path: 'app' }, /must start with "\/"/],
    ['a path with ";"', 'tether', { path: '/a;Domain=evil.com' }, /no ";"/],
    ['a domain with ";"', 'tether', { domain: 'a.com; Secure' }, /not a valid domain/],
    ['a negative Max-Age', 'tether', { maxAge: -1 }, /max_age must be >= 0/],
    ['__Secure- without Secure', '__Secure-t', {}, /requires secure: true/],
    ['__Host- with a Domain', '__Host-t', { secure: true, path: '/', domain: 'a.com' }, /requires path "\/" and no domain/],
    ['__Host- without Path=/', '__Host-t', { secure: true }, /requires path "\/" and no domain/],
  ]
  for (const [name, cookieName, attrs, message] of cases) {
    t.throws(() => setCookieSerializer(cookieName, attrs), { message }, name)
  }
  t.throws(() => serializeSetCookie('tether', 'a;b', {}), { message: /not allowed in a cookie/ }, 'a value with ";"')
})
