// The upstream queue is Tether's own (HAProxy's per-server queue): a request waits in Tether
// until one handed to the upstream's pool finishes, so undici's pool never queues (its
// `pending` stays 0), a request that ends while waiting never reaches undici nor costs a
// connection, an upstream's own `max_connections` beats `limits.max_upstream_connections`
// both ways, and a reload moves the waiting requests of a replaced pool (and ends those of a
// removed upstream with the queue's 503). Real held upstreams, no sleeps.
import t from 'tap'
import http from 'node:http'
import type { Tether } from '../src/app.js'
import { request, waitFor } from './fixtures/upstream.js'
import { heldUpstream, queued, tether } from './fixtures/upstream-queue.js'

/** undici's own queue for `id` (requests its pool keeps waiting for a connection). */
function pending(tt: Tether, id: string): number {
  return tt.forwarder.poolStats(id)!.pending
}

/** `n` requests to `path`0..n-1, each counted as waiting before the next is sent (so their order is known). */
async function queue(tt: Tether, id: string, path: string, n: number, before = 0): Promise<Promise<{ status: number }>[]> {
  const answers: Promise<{ status: number }>[] = []
  for (let i = 0; i < n; i++) {
    const a = request(`${tt.url}${path}${i}`)
    a.catch(() => undefined)
    answers.push(a)
    await waitFor(async () => await queued(tt, id) === before + i + 1, 5000, `${path}${i} waiting`)
  }
  return answers
}

t.test('waiting requests wait in Tether, in order: undici\'s pool keeps none', async (t) => {
  const up = await heldUpstream(t, 'a')
  const tt = await tether(t, [up], { limits: { max_upstream_connections: 2 }, timeouts: { queue: 60_000 } })
  const first = [request(`${tt.url}/h0`), request(`${tt.url}/h1`)]
  await waitFor(() => up.held.length === 2, 5000, 'two at the upstream')
  const rest = await queue(tt, 'a', '/q', 5)
  t.equal(pending(tt, 'a'), 0, 'undici\'s pool holds none of the 5 waiting')
  t.equal(tt.forwarder.poolStats('a')!.running, 2)
  for (let i = 0; i < 7; i++) {
    await waitFor(() => up.held.length > 0, 5000, `request ${i} at the upstream`)
    up.release()
    if (i < 5) await waitFor(() => up.seen.length === i + 3, 5000, `the next one sent after ${i} ended`)
    t.equal(pending(tt, 'a'), 0, `undici's pool holds none after ${i + 1} ended`)
  }
  t.same((await Promise.all([...first, ...rest])).map((r) => r.status), [200, 200, 200, 200, 200, 200, 200])
  t.same(up.seen.map((r) => r.url), ['/h0', '/h1', '/q0', '/q1', '/q2', '/q3', '/q4'], 'first come, first sent')
  t.equal(up.mostOpen(), 2)
  t.equal(up.connections(), 2, `two connections carry all seven (upstream accepted ${up.connections()})`)
})

t.test('clients that leave while waiting: nothing reaches the upstream, no connection is opened for them', async (t) => {
  const up = await heldUpstream(t, 'a')
  const tt = await tether(t, [up], { limits: { max_upstream_connections: 1 }, timeouts: { queue: 60_000 } })
  const holding = request(`${tt.url}/hold`)
  await waitFor(() => up.held.length === 1, 5000, 'held')
  const gone: http.ClientRequest[] = []
  for (let i = 0; i < 5; i++) {
    const c = http.request(`${tt.url}/gone${i}`, { agent: false })
    c.on('error', () => undefined)
    c.end()
    gone.push(c)
    await waitFor(async () => await queued(tt, 'a') === i + 1, 5000, `/gone${i} waiting`)
  }
  const kept = request(`${tt.url}/kept`)
  await waitFor(async () => await queued(tt, 'a') === 6, 5000, '/kept waiting')
  for (const c of gone) c.destroy()
  await waitFor(async () => await queued(tt, 'a') === 1, 5000, 'only /kept still waiting')
  up.release()
  await waitFor(() => up.held.length === 1, 5000, '/kept at the upstream')
  up.release()
  t.equal((await holding).status, 200)
  t.equal((await kept).status, 200)
  t.same(up.seen.map((r) => r.url), ['/hold', '/kept'], 'none of the five that left was sent')
  t.equal(up.connections(), 1, `one connection (upstream accepted ${up.connections()})`)
  t.equal(pending(tt, 'a'), 0)
})

t.test('an upstream\'s max_connections beats limits.max_upstream_connections, both ways', async (t) => {
  await t.test('higher than the global bound', async (t) => {
    const up = await heldUpstream(t, 'a')
    const tt = await tether(t, [{ ...up, max_connections: 3 }], { limits: { max_upstream_connections: 1 }, timeouts: { queue: 60_000 } })
    const answers = [0, 1, 2].map((i) => request(`${tt.url}/${i}`))
    await waitFor(() => up.held.length === 3, 5000, 'three at the upstream at once')
    answers.push(request(`${tt.url}/3`))
    await waitFor(async () => await queued(tt, 'a') === 1, 5000, 'the fourth waiting')
    t.equal(pending(tt, 'a'), 0)
    for (let i = 0; i < 4; i++) {
      await waitFor(() => up.held.length > 0, 5000, 'one held')
      up.release()
    }
    t.same((await Promise.all(answers)).map((r) => r.status), [200, 200, 200, 200])
    t.equal(up.mostOpen(), 3)
  })
  await t.test('lower than the global bound (here none)', async (t) => {
    const hold = (req: http.IncomingMessage): boolean => req.url !== '/place'
    const a = await heldUpstream(t, 'a', hold)
    const b = await heldUpstream(t, 'b', hold)
    const tt = await tether(t, [{ ...a, max_connections: 1 }, b], { affinity: { key: 'header', header: { name: 'X-User' } }, timeouts: { queue: 60_000 } })
    const users = await usersOn(tt, ['a', 'b'])
    const on = (id: string, n: number): Promise<{ status: number }>[] => Array.from({ length: n }, (_, i) => request(`${tt.url}/${id}${i}`, { headers: { 'x-user': users[id]! } }))
    const answers = [...on('b', 3), ...on('a', 3)]
    await waitFor(() => b.held.length === 3, 5000, 'three at b at once (no bound)')
    await waitFor(async () => a.held.length === 1 && await queued(tt, 'a') === 2, 5000, 'one at a, two waiting')
    t.equal(await queued(tt, 'b'), 0)
    t.equal(pending(tt, 'a'), 0)
    for (let i = 0; i < 3; i++) b.release()
    for (let i = 0; i < 3; i++) {
      await waitFor(() => a.held.length === 1, 5000, 'one at a')
      a.release()
    }
    t.same((await Promise.all(answers)).map((r) => r.status), [200, 200, 200, 200, 200, 200])
    t.equal(a.mostOpen(), 1)
  })
})

/** A user placed on each of `ids` (found by asking `/place`, which the held upstreams answer at once). */
async function usersOn(tt: Tether, ids: string[]): Promise<Record<string, string>> {
  const users: Record<string, string> = {}
  for (let i = 0; ids.some((id) => users[id] === undefined); i++) {
    const r = await request(`${tt.url}/place`, { headers: { 'x-user': `u${i}` } })
    users[r.body.trim()] ??= `u${i}`
  }
  return users
}

t.test('a reload that replaces a pool moves its waiting requests, in order, to the new one', async (t) => {
  const up = await heldUpstream(t, 'a')
  const tt = await tether(t, [up], { limits: { max_upstream_connections: 1 }, timeouts: { queue: 60_000 } })
  const holding = request(`${tt.url}/hold`)
  await waitFor(() => up.held.length === 1, 5000, 'held')
  const waiting = await queue(tt, 'a', '/q', 3)
  // its own bound of 2 makes a new pool (undici's connections are fixed): the old one keeps /hold
  const r = tt.reload({ ...tt.config, upstreams: [{ id: 'a', url: up.url, weight: 1, max_connections: 2 }] })
  t.ok(r.applied.includes('upstreams'), `applied: ${r.applied.join(', ')}`)
  await waitFor(() => up.held.length === 3, 5000, 'two of the three moved and sent at once')
  t.equal(await queued(tt, 'a'), 1, 'the third waits in the new pool, counted (metric)')
  t.equal(JSON.parse((await request(`${tt.adminUrl}/upstreams`)).body)[0].queued, 1, 'and in /upstreams')
  t.equal(pending(tt, 'a'), 0)
  up.release() // /hold, on the old pool: no room of the new one
  t.equal((await holding).status, 200)
  t.equal(await queued(tt, 'a'), 1, 'the old pool\'s end frees no room in the new one')
  up.release()
  await waitFor(() => up.held.length === 2, 5000, '/q2 sent once /q0 ended')
  up.release()
  up.release()
  t.same((await Promise.all(waiting)).map((x) => x.status), [200, 200, 200])
  t.same(up.seen.map((x) => x.url), ['/hold', '/q0', '/q1', '/q2'])
  t.equal(await queued(tt, 'a'), 0)
})

t.test('a reload that removes an upstream ends its waiting requests with the queue\'s 503', async (t) => {
  const hold = (req: http.IncomingMessage): boolean => req.url !== '/place'
  const a = await heldUpstream(t, 'a', hold)
  const b = await heldUpstream(t, 'b', hold)
  const tt = await tether(t, [a, b], { affinity: { key: 'header', header: { name: 'X-User' } }, limits: { max_upstream_connections: 1 }, timeouts: { queue: 60_000 } })
  const users = await usersOn(tt, ['a', 'b'])
  const holding = request(`${tt.url}/hold`, { headers: { 'x-user': users.b! } })
  holding.catch(() => undefined)
  await waitFor(() => b.held.length === 1, 5000, 'held at b')
  const waiting = request(`${tt.url}/w`, { headers: { 'x-user': users.b! } })
  await waitFor(async () => await queued(tt, 'b') === 1, 5000, 'waiting at b')
  tt.reload({ ...tt.config, upstreams: [{ id: 'a', url: a.url, weight: 1 }] })
  const r = await waiting
  t.equal(r.status, 503, 'the queue\'s 503: nothing was sent')
  t.equal(r.headers['retry-after'], '1')
  t.equal(await queued(tt, 'b'), -1, 'no series left for the removed upstream')
  b.release()
  t.equal((await holding).status, 200, 'the request at the removed upstream finishes')
  t.same(b.seen.map((x) => x.url).filter((u) => u !== '/place'), ['/hold'])
})
