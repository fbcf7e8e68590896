// Learning an application's session cookie (src/affinity/app-cookie.ts) against a real
// SessionTable, no network: a rotated value continues the binding it replaces (creation time
// included, so absolute_timeout still ends it), and Set-Cookie dates as a browser reads them.
import t from 'tap'
import { appCookieValue, learnAppCookie, parseCookieDate } from '../src/affinity/app-cookie.js'
import { SessionTable } from '../src/affinity/session-table.js'

const T0 = 1_764_086_400_000
const N = 'laravel_session'

function table(absoluteTimeout: number | null = 120_000): SessionTable {
  return new SessionTable({ maxEntries: 100, idleTimeout: 60_000, absoluteTimeout })
}

t.test('a value replacing the one the request carried keeps the creation time of its binding', async (t) => {
  const s = table()
  s.pin('v0', 'app-1', 0, T0)
  const now = T0 + 50_000
  const learned = learnAppCookie(s, N, { upstream: 'app-1', epoch: 0, appKey: 'v0' }, `${N}=v1; path=/`, now)
  t.same(learned, { key: 'v1', rekeyedFrom: 'v0' })
  t.equal(s.peek('v1', now)?.createdAt, T0, 'created when v0 was (read from the table)')
  t.equal(s.peek('v0', now), null, 'v0 is forgotten')
  t.ok(s.get('v1', T0 + 100_000), 'v1 in use at 100 s')
  t.equal(s.peek('v1', T0 + 120_000)?.createdAt, T0, 'v1 lives up to the absolute timeout of the first binding (120 s)')
  t.equal(s.peek('v1', T0 + 120_001), null, 'and ends there')
})

t.test('the routing decision\'s placedAt, when given, is the creation time continued', async (t) => {
  const s = table()
  s.pin('v0', 'app-1', 0, T0 + 30_000)
  const now = T0 + 60_000
  learnAppCookie(s, N, { upstream: 'app-1', epoch: 0, appKey: 'v0', placedAt: T0 }, `${N}=v1`, now)
  t.equal(s.peek('v1', now)?.createdAt, T0)
})

t.test('a value replacing one whose binding is past the absolute timeout is not pinned (the user is placed afresh)', async (t) => {
  const s = table()
  // routed while the binding lived (at 119 s), answered after its end
  const now = T0 + 121_000
  const learned = learnAppCookie(s, N, { upstream: 'app-1', epoch: 0, appKey: 'v0', placedAt: T0 }, `${N}=v1`, now)
  t.same(learned, { key: 'v1', rekeyedFrom: 'v0' }, 'still the user\'s key from here on (checkpoints follow it)')
  t.equal(s.peek('v1', now), null, 'but not bound: its next request is placed as a new one')
})

t.test('a request routed by a rotated value\'s grace passes that binding\'s creation time on', async (t) => {
  const s = table()
  s.pin('v0', 'app-1', 0, T0)
  // two requests carried v0; the first answer rotated it to v1
  learnAppCookie(s, N, { upstream: 'app-1', epoch: 0, appKey: 'v0', placedAt: T0 }, `${N}=v1`, T0 + 10_000)
  t.same(s.rotated('v0', T0 + 10_000), { upstream: 'app-1', epoch: 0, until: T0 + 70_000, createdAt: T0 }, 'v0 routes by its grace')
  // the second, routed by the grace (no placedAt), answered with v2
  learnAppCookie(s, N, { upstream: 'app-1', epoch: 0, appKey: 'v0', placedAt: null }, `${N}=v2`, T0 + 11_000)
  t.equal(s.peek('v2', T0 + 11_000)?.createdAt, T0, 'v2 continues the first binding too')
  t.equal(s.createdAt('v0', T0 + 11_000), T0, 'the grace, retired again, keeps the first creation time')
})

t.test('a first value (the request carried none) and a value for another Path start a binding now', async (t) => {
  const s = table()
  s.pin('v0', 'app-1', 0, T0)
  const now = T0 + 50_000
  learnAppCookie(s, N, { upstream: 'app-2', epoch: 0, appKey: null }, `${N}=first`, now)
  t.equal(s.peek('first', now)?.createdAt, now)
  learnAppCookie(s, N, { upstream: 'app-1', epoch: 0, appKey: 'v0', placedAt: T0 }, `${N}=other; path=/legacy`, now, '/shop')
  t.equal(s.peek('other', now)?.createdAt, now, 'another cookie of that name: a binding of its own')
  t.equal(s.peek('v0', now)?.createdAt, T0, 'the user\'s binding left as it is')
})

t.test('without absolute_timeout a rotated value still continues the binding (its creation time is only shown)', async (t) => {
  const s = table(null)
  s.pin('v0', 'app-1', 0, T0)
  learnAppCookie(s, N, { upstream: 'app-1', epoch: 0, appKey: 'v0' }, `${N}=v1`, T0 + 50_000)
  t.equal(s.peek('v1', T0 + 50_000)?.createdAt, T0)
})

// RFC 6265 section 5.1.1: a two-digit year 70-99 is 19xx, 0-69 is 20xx (Date.parse reads 50-99 as 19xx)
t.test('an Expires with a two-digit year is read as a browser reads it (RFC 6265 5.1.1): 0-69 in the 2000s, 70-99 in the 1900s', async (t) => {
  const now = T0 // 2025-11-25
  const cases: [string, boolean][] = [
    ['Wed, 21 Oct 49 07:28:00 GMT', false], // 2049
    ['Fri, 21 Oct 50 07:28:00 GMT', false], // 2050: not 1950, in the past
    ['Fri, 21-Oct-69 07:28:00 GMT', false], // 2069
    ['Tue, 21 Oct 70 07:28:00 GMT', true], // 1970
    ['Thu, 21 Oct 99 07:28:00 GMT', true], // 1999
    ['Sat, 01 Jan 00 00:00:00 GMT', true], // 2000
    ['Wed, 25 Nov 25 15:59:59 GMT', true], // 2025, a second before now
    ['Wed, 25 Nov 25 16:00:01 GMT', false], // 2025, a second after
  ]
  for (const [date, deleted] of cases) {
    t.equal(appCookieValue(`${N}=abc; Expires=${date}; path=/`, N, now)?.deleted, deleted, `Expires=${date}: ${deleted ? 'deletes' : 'keeps'} the cookie`)
  }
})

t.test('a value set with Expires in 2050 written with two digits is learned, not taken as a deletion', async (t) => {
  const s = table(null)
  s.pin('v0', 'app-1', 0, T0)
  const learned = learnAppCookie(s, N, { upstream: 'app-1', epoch: 0, appKey: 'v0' }, `${N}=v1; expires=Fri, 21-Oct-50 07:28:00 GMT; path=/`, T0 + 1_000)
  t.same(learned, { key: 'v1', rekeyedFrom: 'v0' })
  t.equal(s.peek('v1', T0 + 1_000)?.upstream, 'app-1', 'v1 is bound')
})

t.test('parseCookieDate follows RFC 6265 section 5.1.1', async (t) => {
  const cases: [string, number | null][] = [
    ['Wed, 21 Oct 2015 07:28:00 GMT', Date.UTC(2015, 9, 21, 7, 28, 0)], // IMF-fixdate
    ['Wednesday, 21-Oct-15 07:28:00 GMT', Date.UTC(2015, 9, 21, 7, 28, 0)], // RFC 850
    ['Wed Oct 21 07:28:00 2015', Date.UTC(2015, 9, 21, 7, 28, 0)], // asctime
    ['Thu, 01-Jan-1970 00:00:01 GMT', 1000], // PHP's deletion
    ['21 oct 49 7:28:0', Date.UTC(2049, 9, 21, 7, 28, 0)],
    ['21 oct 50 7:28:0', Date.UTC(2050, 9, 21, 7, 28, 0)],
    ['21 oct 69 7:28:0', Date.UTC(2069, 9, 21, 7, 28, 0)],
    ['21 oct 70 7:28:0', Date.UTC(1970, 9, 21, 7, 28, 0)],
    ['21 October 2015 07:28:00 +0200', Date.UTC(2015, 9, 21, 7, 28, 0)], // a month's full name; the zone is not read
    ['Sat, 29 Feb 2020 00:00:00 GMT', Date.UTC(2020, 1, 29)],
    ['Thu, 29 Feb 2019 00:00:00 GMT', null], // no such day
    ['Thu, 31 Apr 2019 00:00:00 GMT', null],
    ['Wed, 32 Oct 2015 07:28:00 GMT', null],
    ['Wed, 21 Oct 2015 24:00:00 GMT', null],
    ['Wed, 21 Oct 2015 07:60:00 GMT', null],
    ['Wed, 21 Oct 1600 07:28:00 GMT', null], // before 1601
    ['Wed, 21 Oct 2015 GMT', null], // no time
    ['2015-10-21T07:28:00Z', null], // ISO 8601 is no cookie date ("-" delimits: no month)
    ['soon', null],
    ['', null],
  ]
  for (const [text, want] of cases) t.equal(parseCookieDate(text), want, JSON.stringify(text))
})
