// affinity.absolute_timeout with key app_cookie and an application that rotates its session
// cookie on every answer (as Laravel re-encrypts it, Rails and PHP regenerate it on login): each
// new value continues the binding of the value it replaced, creation time included, so the user's
// affinity still ends at the absolute timeout. Real Tether, real upstreams on loopback; time is a
// FakeClock (no sleeping).
import t from 'tap'
import { proxyFor } from './fixtures/upstream.js'
import { FakeClock } from './fixtures/clock.js'
import { CookieJar, agentFor, get, setCookieValue } from './fixtures/users.js'
import { idOf, upstreams } from './fixtures/routing-sticky.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'

t.test('a rotating application cookie does not outlive absolute_timeout: the user is placed afresh (by the hash) after it', async (t) => {
  const ids = ['a', 'b']
  const placement = buildPlacement(ids.map((id) => ({ id, weight: 1 })))
  const hashedTo = (v: string): string => placement.ids[placement.pick(hashKey(v))]!
  // every answer sets a new value, one whose hash points to the *other* upstream: a request
  // routed by the hash (its binding gone) visibly lands elsewhere than the binding said
  let n = 0
  const issue = (id: string): string => {
    for (;;) {
      const v = `s${++n}`
      if (hashedTo(v) !== id) return v
    }
  }
  const ups = await upstreams(t, ids, (id) => (_req, res) => {
    res.setHeader('set-cookie', `laravel_session=${issue(id)}; path=/; httponly`)
    res.end(`${id}\n`)
  })
  const clock = new FakeClock()
  const start = clock.now()
  const tt = await proxyFor(t, ups, {
    affinity: { key: 'app_cookie', app_cookie: { name: 'laravel_session', fallback: 'random' }, idle_timeout: 60_000, absolute_timeout: 120_000 },
  }, clock)
  const a = agentFor(t, 1)
  const jar = new CookieJar()
  const seen: { at: number; id: string; value: string; created: number | undefined }[] = []
  for (let s = 0; s <= 180; s += 30) {
    clock.set(start + s * 1000)
    const r = await get(tt.url, a, {}, jar)
    t.equal(r.status, 200)
    const value = setCookieValue(r.headers['set-cookie'], 'laravel_session')!
    seen.push({ at: s, id: idOf(r.body), value, created: tt.sessions.table.peek(value, clock.now())?.createdAt })
  }
  t.comment(JSON.stringify(seen))
  // t = 0, 30, 60, 90, 120 | 150, 180
  const home = seen[0]!.id
  t.same(seen.slice(0, 5).map((x) => x.id), [home, home, home, home, home], 'up to and including 120 s, every request went to the upstream that set the first value')
  t.same(seen.slice(0, 5).map((x) => x.created), [start, start, start, start, start], 'each new value continued the first binding: created at the start, not when it was set')
  t.not(seen[5]!.id, home, 'at 150 s (life > 120 s) the binding had ended: the value was placed by its hash, on the other upstream')
  t.equal(seen[5]!.created, start + 150_000, 'the value set then starts a new binding, created at 150 s')
  t.equal(seen[6]!.id, seen[5]!.id, 'which then continues')
  t.equal(seen[6]!.created, start + 150_000, '...with the creation time of that new binding')
  t.equal(tt.sessions.table.size, 1, 'one binding for the user (each replaced value forgotten)')
})

t.test('without absolute_timeout a rotating application cookie keeps its user on one upstream indefinitely', async (t) => {
  const ups = await upstreams(t, ['a', 'b'], (id) => {
    let n = 0
    return (_req, res) => {
      res.setHeader('set-cookie', `laravel_session=${id}-${++n}; path=/`)
      res.end(`${id}\n`)
    }
  })
  const clock = new FakeClock()
  const start = clock.now()
  const tt = await proxyFor(t, ups, { affinity: { key: 'app_cookie', app_cookie: { name: 'laravel_session', fallback: 'random' }, idle_timeout: 60_000 } }, clock)
  const a = agentFor(t, 1)
  const jar = new CookieJar()
  const got: string[] = []
  for (let s = 0; s <= 600; s += 50) {
    clock.set(start + s * 1000)
    got.push(idOf((await get(tt.url, a, {}, jar)).body))
  }
  t.equal(new Set(got).size, 1, `13 requests over 600 s, 50 s apart, all on one upstream (${got.join('')})`)
  const value = jar.cookies.get('laravel_session')!
  t.equal(tt.sessions.table.peek(value, clock.now())?.createdAt, start, 'the binding is the first one, continued')
})
