// Learning an application's session cookie (src/affinity/app-cookie.ts) against a real
// SessionTable, no network: a rotated value continues the binding it replaces (creation time
// included, so absolute_timeout still ends it), and Set-Cookie dates as a browser reads them.
import t from 'tap'
import { appCookieValue, learnAppCookie } from '../src/affinity/app-cookie.js'
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
