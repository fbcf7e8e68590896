// limits.max_upstream_connections and timeouts.queue (HAProxy's `maxconn` and `timeout queue`):
// at most that many requests reach one upstream at once, the rest wait in order; a request that
// waits too long gets 503 TETHER_UPSTREAM_QUEUE_TIMEOUT without its upstream counted as failing
// or its user moved; a client that leaves while waiting is never sent on. Real upstreams that
// hold each request until the test releases it; no sleeps.
import t from 'tap'
import http from 'node:http'
import { LogCapture } from './fixtures/log-capture.js'
import type { ServerResponse } from 'node:http'
import { request, startUpstream, waitFor, type Upstream } from './fixtures/upstream.js'
import { heldUpstream, queued, tether } from './fixtures/upstream-queue.js'
import { within } from './fixtures/wait.js'

t.test('at most max_upstream_connections requests reach an upstream at once; the rest go in order as connections free', async (t) => {
  const up = await heldUpstream(t, 'a')
  const tt = await tether(t, [up], { limits: { max_upstream_connections: 2 }, timeouts: { queue: 60_000 } })
  const answers = [1, 2].map((i) => request(`${tt.url}/${i}`))
  await waitFor(() => up.seen.length === 2, 5000, 'two requests at the upstream')
  // each waiting request is in the queue before the next is sent: their order is known
  for (const i of [3, 4, 5]) {
    answers.push(request(`${tt.url}/${i}`))
    await waitFor(async () => await queued(tt, 'a') === i - 2, 5000, `${i - 2} waiting`)
  }
  t.equal(up.seen.length, 2, 'the waiting requests did not reach the upstream')
  const rows = JSON.parse((await request(`${tt.adminUrl}/upstreams`)).body) as Record<string, unknown>[]
  t.match(rows[0], { id: 'a', in_flight: 5, queued: 3 }, 'the admin row shows the queue')
  for (const i of [3, 4, 5]) {
    up.release()
    await waitFor(() => up.seen.length === i, 5000, `request ${i} sent`)
    t.equal(up.seen[i - 1]!.url, `/${i}`, `request ${i} went next`)
  }
  up.release()
  up.release()
  const replies = await Promise.all(answers)
  t.same(replies.map((r) => r.status), [200, 200, 200, 200, 200])
  t.equal(up.mostOpen(), 2, 'never more than 2 requests open at the upstream')
  t.ok(up.connections() <= 2, `at most 2 connections made (${up.connections()})`)
  t.equal(await queued(tt, 'a'), 0, 'none waiting at the end')
})

t.test('a request that waits timeouts.queue gets 503; its upstream stays healthy, its user stays and nothing goes elsewhere', async (t) => {
  const a = await heldUpstream(t, 'a')
  const b = await heldUpstream(t, 'b')
  const logs = new LogCapture()
  const tt = await tether(t, [a, b], {
    affinity: { key: 'header', header: { name: 'X-User' } },
    limits: { max_upstream_connections: 1 }, timeouts: { queue: 200 },
    health: { passive: { enabled: true, consecutive_failures: 1, max_ejection_percent: 100 } },
  }, logs)
  const headers = { 'x-user': 'u1' }
  const first = request(`${tt.url}/1`, { headers })
  await waitFor(() => a.seen.length + b.seen.length === 1, 5000, 'the first request at its upstream')
  const home = a.seen.length === 1 ? a : b
  const other = home === a ? b : a
  const late = await request(`${tt.url}/2`, { headers })
  t.equal(late.status, 503, '503 once the wait ran out')
  t.equal(late.headers['retry-after'], '1', 'with Retry-After, as other 503s')
  t.match(late.body, /busy/)
  t.equal(home.seen.length, 1, 'the request that waited was never sent')
  t.equal(other.seen.length, 0, 'nor sent to another upstream')
  t.equal(tt.health.state(home.id), 'healthy', 'its upstream is not counted as failing')
  await waitFor(() => logs.access().length === 1, 5000, 'its access line')
  t.match(logs.access()[0], { status: 503, outcome: 'TETHER_UPSTREAM_QUEUE_TIMEOUT', upstream: home.id })
  home.release()
  t.equal((await first).status, 200)
  const next = request(`${tt.url}/3`, { headers })
  await waitFor(() => home.seen.length === 2, 5000, "the user's next request at the same upstream")
  home.release()
  t.equal((await next).status, 200, 'the next request goes through')
  t.equal(other.seen.length, 0, 'the user did not move')
})

t.test('a client that leaves while its request waits: the upstream never sees that request, and is not suspected', async (t) => {
  const up = await heldUpstream(t, 'a')
  const tt = await tether(t, [up], {
    limits: { max_upstream_connections: 1 }, timeouts: { queue: 60_000 },
    // a client giving up after the probe timeout is a hint of a stuck upstream, without active
    // checks a passive failure (timeout 0: any give-up is past it): not for a request that never
    // left the queue
    health: { active: { timeout: 0 }, passive: { enabled: true, consecutive_failures: 1, max_ejection_percent: 100 } },
  })
  const first = request(`${tt.url}/1`)
  await waitFor(() => up.seen.length === 1, 5000, 'the first request at the upstream')
  const gone = http.request(`${tt.url}/2`, { agent: false })
  gone.on('error', () => undefined)
  gone.end()
  await waitFor(async () => await queued(tt, 'a') === 1, 5000, 'the second waiting')
  gone.destroy()
  await waitFor(async () => await queued(tt, 'a') === 0, 5000, 'the request that left is no longer counted')
  t.equal(tt.health.state('a'), 'healthy', 'not ejected for a client that left the queue')
  up.release()
  t.equal((await first).status, 200)
  const third = request(`${tt.url}/3`)
  await waitFor(() => up.seen.length === 2, 5000, 'the third request at the upstream')
  up.release()
  t.equal((await third).status, 200)
  t.same(up.seen.map((r) => r.url), ['/1', '/3'], 'the request whose client left was never sent')
})

t.test('a request still waiting for a connection is not hedged to another upstream', async (t) => {
  // POSTs (never hedged) are held; anything else is answered at once
  const hold = (req: http.IncomingMessage): boolean => req.method === 'POST'
  const a = await heldUpstream(t, 'a', hold)
  const b = await heldUpstream(t, 'b', hold)
  const tt = await tether(t, [a, b], {
    affinity: { key: 'header', header: { name: 'X-User' } },
    limits: { max_upstream_connections: 1 }, timeouts: { queue: 300 },
    retries: { hedge_after: 10 },
  })
  const headers = { 'x-user': 'u1' }
  const first = request(`${tt.url}/1`, { method: 'POST', headers, body: 'x' })
  await waitFor(() => a.seen.length + b.seen.length === 1, 5000, 'the POST at its upstream')
  const home = a.seen.length === 1 ? a : b
  const other = home === a ? b : a
  const late = await request(`${tt.url}/2`, { headers })
  t.equal(late.status, 503, 'the GET waited its timeouts.queue at its own upstream')
  t.equal(other.seen.length, 0, 'no hedge went to the other upstream (which answers at once)')
  home.release()
  t.equal((await first).status, 200)
})

t.test('without the limit, every request in flight has its own connection at once (as before)', async (t) => {
  const up = await heldUpstream(t, 'a')
  const tt = await tether(t, [up], {})
  const answers = [1, 2, 3, 4, 5].map((i) => request(`${tt.url}/${i}`))
  await waitFor(() => up.seen.length === 5, 5000, 'all five at the upstream')
  t.equal(await queued(tt, 'a'), 0, 'none waiting')
  for (let i = 0; i < 5; i++) up.release()
  t.same((await Promise.all(answers)).map((r) => r.status), [200, 200, 200, 200, 200])
  t.equal(up.connections(), 5, 'one connection per request in flight')
})

t.test("a moved user's rehydration hook waiting for a connection is bounded too; the hook is never sent late", async (t) => {
  const HOOK = '/_tether/rehydrate'
  const held: ServerResponse[] = []
  const app = (id: string): Promise<Upstream> => startUpstream(id, (req, res) => {
    req.resume()
    // its head goes at once (the head wait ends), its body is held: the connection stays busy
    if (req.headers['x-hold'] !== undefined) {
      res.writeHead(200).flushHeaders()
      return void held.push(res)
    }
    res.writeHead(200, { 'x-tether-state': 'n' }).end(id)
  })
  const ups = [await app('a'), await app('b')]
  t.teardown(() => Promise.all(ups.map((u) => u.close())))
  const tt = await tether(t, ups, {
    affinity: { key: 'header', header: { name: 'X-User' } },
    state: { rehydrate: 'hook', hook_path: HOOK },
    limits: { max_upstream_connections: 1 }, timeouts: { queue: 100, response_headers: 300 },
  })
  const home = (await request(tt.url, { headers: { 'x-user': 'u1' } })).body
  const other = ups.find((u) => u.id !== home)!
  // a user of the other upstream holds its one connection
  let busy = ''
  for (let i = 0; busy === ''; i++) if ((await request(tt.url, { headers: { 'x-user': `v${i}` } })).body === other.id) busy = `v${i}`
  const holding = request(tt.url, { headers: { 'x-user': busy, 'x-hold': '1' } })
  await waitFor(() => held.length === 1, 5000, 'the other upstream busy')
  const seen = other.seen.length
  tt.health.disable(home)
  // u1 moves: its state goes to the other upstream's hook first, which waits for the connection
  const moved = await within(request(tt.url, { headers: { 'x-user': 'u1' } }), 5000, "the moved user's answer")
  t.equal(moved.status, 503, 'answered once the hook and the request each waited their bound')
  t.equal(other.seen.length, seen, 'nothing sent meanwhile')
  held.shift()!.end('done')
  t.equal((await holding).status, 200)
  const next = await request(tt.url, { headers: { 'x-user': busy } })
  t.equal(next.status, 200)
  t.notOk(other.seen.some((r) => r.url === HOOK), 'the hook that gave up waiting was never sent')
})

t.test('requests waiting for the connections of an upstream that dies go to the next upstream, not to a 503', async (t) => {
  const a = await heldUpstream(t, 'a', (req) => req.url === '/hold')
  const b = await startUpstream('b')
  t.teardown(() => b.close())
  const tt = await tether(t, [a, b], {
    affinity: { key: 'header', header: { name: 'X-User' } },
    limits: { max_upstream_connections: 1 }, timeouts: { queue: 60_000 },
  })
  // a user of `a`, whose one connection a request of theirs then holds
  let user = ''
  for (let i = 0; user === ''; i++) if ((await request(tt.url, { headers: { 'x-user': `u${i}` } })).body === 'a\n') user = `u${i}`
  const holding = request(`${tt.url}/hold`, { headers: { 'x-user': user } })
  holding.catch(() => undefined)
  await waitFor(() => a.held.length === 1, 5000, 'the connection busy')
  const waiting = request(`${tt.url}/queued`, { headers: { 'x-user': user } })
  await waitFor(async () => await queued(tt, 'a') === 1, 5000, 'one waiting')
  const before = b.seen.length
  await a.close()
  const r = await within(waiting, 5000, 'the waiting request answered')
  t.equal(r.status, 200, 'answered by the next upstream')
  t.equal(b.seen.length > before && b.seen.at(-1)!.url, '/queued')
  t.equal(await queued(tt, 'a'), 0)
})
