// limits.max_upstream_connections, the edges of its queue (review r1): a request waiting behind a
// rehydration hook, a stale-connection resend that waits, and requests that ended while waiting
// (each must not cost the busy upstream a connection). Real held upstreams, no sleeps.
import t, { type Test } from 'tap'
import http from 'node:http'
import type { ServerResponse } from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import type { Config } from '../src/config/schema.js'
import { createLogger } from '../src/observability/logger.js'
import { request, startUpstream, testConfig, waitFor, type DeepPartial, type Upstream } from './fixtures/upstream.js'
import { within } from './fixtures/wait.js'

const HOOK = '/_tether/rehydrate'

/**
 * Tether over `ups` with the rehydration hook, one connection an upstream and `timeouts`: user
 * u1's upstream (`home`, where it was placed), the `other` one, and a `user` placed on `other`.
 */
async function hookTether(t: Test, ups: Upstream[], timeouts: DeepPartial<Config['timeouts']>): Promise<{ tt: Tether; home: string; other: Upstream; user: string }> {
  const tt = await startTether(testConfig(ups, {
    affinity: { key: 'header', header: { name: 'X-User' } },
    state: { rehydrate: 'hook', hook_path: HOOK },
    limits: { max_upstream_connections: 1 }, timeouts,
  }), { logger: createLogger('silent') })
  t.teardown(() => tt.close(0))
  const home = (await request(tt.url, { headers: { 'x-user': 'u1' } })).body
  const other = ups.find((u) => u.id !== home)!
  let user = ''
  for (let i = 0; user === ''; i++) if ((await request(tt.url, { headers: { 'x-user': `v${i}` } })).body === other.id) user = `v${i}`
  return { tt, home, other, user }
}

t.test('a request waiting behind a rehydration hook is timed by timeouts.queue and counted', async (t) => {
  const hooks: ServerResponse[] = []
  const app = (id: string): Promise<Upstream> => startUpstream(id, (req, res) => {
    req.resume()
    if (req.url === HOOK) return void hooks.push(res) // the hook is held: the connection stays busy
    res.writeHead(200, { 'x-tether-state': 'n' }).end(id)
  })
  const ups = [await app('a'), await app('b')]
  t.teardown(() => { for (const h of hooks) h.destroy(); return Promise.all(ups.map((u) => u.close())) })
  const { tt, home, other, user } = await hookTether(t, ups, { queue: 300, response_headers: 8000 })
  tt.health.disable(home)
  // u1 moves to `other`: its hook takes other's one connection and is held there
  const moved = request(tt.url, { headers: { 'x-user': 'u1' } })
  moved.catch(() => undefined)
  await waitFor(() => hooks.length === 1, 5000, 'the hook at the other upstream')
  const waiting = request(tt.url, { headers: { 'x-user': user } })
  waiting.catch(() => undefined)
  const row = async (): Promise<Record<string, unknown>> => (JSON.parse((await request(`${tt.adminUrl}/upstreams`)).body) as Record<string, unknown>[]).find((x) => x.id === other.id)!
  await waitFor(async () => (await row()).in_flight === 2, 5000, 'the hook and the request in flight at the other upstream')
  t.equal((await row()).queued, 1, "the request waiting for other's connection is counted in the admin row")
  // (without the queue's timer it waited for the hook's end: 200 after response_headers, 8 s)
  const r = await within(waiting, 15000, 'the waiting request')
  t.equal(r.status, 503, `503 TETHER_UPSTREAM_QUEUE_TIMEOUT, not the hook's wait (got ${r.status})`)
  t.match(r.headers['retry-after'], '1')
})

t.test('a resend after a stale connection goes before the requests waiting, handed over at its connection\'s drain', async (t) => {
  const held: ServerResponse[] = []
  let stale: (() => void) | null = null
  const up = await startUpstream('a', (req, res) => {
    req.resume()
    // /stale: the kept-alive connection closes with nothing written (when the test says)
    if (req.url === '/stale' && stale === null) return void (stale = () => req.socket.destroy())
    if (req.url === '/hold') return void held.push(res)
    res.end('a\n')
  })
  t.teardown(() => { for (const h of held) h.destroy(); return up.close() })
  const tt = await startTether(testConfig([up], { limits: { max_upstream_connections: 1 }, timeouts: { queue: 60_000, response_headers: 60_000 } }), { logger: createLogger('silent') })
  t.teardown(() => tt.close(0))
  const row = async (): Promise<Record<string, unknown>> => (JSON.parse((await request(`${tt.adminUrl}/upstreams`)).body) as Record<string, unknown>[])[0]!
  t.equal((await request(`${tt.url}/warm`)).status, 200, 'a kept-alive connection')
  const first = request(`${tt.url}/stale`)
  first.catch(() => undefined)
  await waitFor(() => stale !== null, 5000, '/stale at the upstream')
  const second = request(`${tt.url}/hold`)
  second.catch(() => undefined)
  await waitFor(async () => (await row()).queued === 1, 5000, '/hold waiting')
  stale!() // /stale is sent again (a new connection), before /hold: it was handed over first
  // (it went behind /hold in undici's queue before: 503 at timeouts.queue, or here never)
  const r = await within(first, 5000, '/stale answered')
  t.equal(r.status, 200, 'the resend is answered first')
  await waitFor(() => held.length === 1, 5000, '/hold at the upstream next')
  t.same(up.seen.map((x) => x.url), ['/warm', '/stale', '/stale', '/hold'])
  t.equal(tt.forwarder.poolStats('a')!.pending, 0, "nothing waits in undici's pool")
  t.equal((await row()).queued, 0)
  held.shift()!.end('a\n')
  t.equal((await second).status, 200)
})

t.test('a rehydration hook whose client leaves while it waits is never sent and costs no connection', async (t) => {
  const held: ServerResponse[] = []
  const connections = new Map<string, number>()
  const app = async (id: string): Promise<Upstream> => {
    const up = await startUpstream(id, (req, res) => {
      req.resume()
      if (req.url === '/hold') return void held.push(res)
      res.writeHead(200, { 'x-tether-state': 'n' }).end(id)
    })
    up.server.on('connection', () => { connections.set(id, (connections.get(id) ?? 0) + 1) })
    return up
  }
  const ups = [await app('a'), await app('b')]
  t.teardown(() => { for (const h of held) h.destroy(); return Promise.all(ups.map((u) => u.close())) })
  const { tt, home, other, user } = await hookTether(t, ups, { queue: 60_000 })
  const before = connections.get(other.id)
  // other's one connection is held by a user of its own
  const holding = request(`${tt.url}/hold`, { headers: { 'x-user': user } })
  await waitFor(() => held.length === 1, 5000, 'held at the other upstream')
  tt.health.disable(home)
  // u1 moves to `other`: its hook waits for the held connection; then its client leaves
  const moved = http.request(tt.url, { agent: false, headers: { 'x-user': 'u1' } })
  moved.on('error', () => undefined)
  moved.end()
  const row = async (): Promise<Record<string, unknown>> => (JSON.parse((await request(`${tt.adminUrl}/upstreams`)).body) as Record<string, unknown>[]).find((x) => x.id === other.id)!
  await waitFor(async () => (await row()).queued === 1, 5000, 'the hook waiting')
  moved.destroy()
  await waitFor(async () => (await row()).queued === 0, 5000, 'the hook left the queue')
  held.shift()!.end('held\n')
  t.equal((await holding).status, 200)
  t.equal((await request(`${tt.url}/after`, { headers: { 'x-user': user } })).status, 200)
  t.notOk(other.seen.some((r) => r.url === HOOK), 'the hook never reached the upstream')
  t.equal(connections.get(other.id), before, `no connection opened for it (${connections.get(other.id)} against ${before})`)
  t.equal(tt.forwarder.poolStats(other.id)!.pending, 0)
})

t.test('requests that ended in the queue (timed out, client gone) do not cost the upstream connections', async (t) => {
  const held: ServerResponse[] = []
  let connections = 0
  const up = await startUpstream('a', (req, res) => { req.resume(); if (req.url === '/hold') return void held.push(res); res.end('a\n') })
  up.server.on('connection', () => { connections++ })
  t.teardown(() => { for (const h of held) h.destroy(); return up.close() })
  const tt = await startTether(testConfig([up], { limits: { max_upstream_connections: 1 }, timeouts: { queue: 200 } }), { logger: createLogger('silent') })
  t.teardown(() => tt.close(0))
  const holding = request(`${tt.url}/hold`)
  await waitFor(() => held.length === 1, 5000, 'held')
  const late = await Promise.all([1, 2, 3, 4, 5].map((i) => request(`${tt.url}/late${i}`)))
  t.same(late.map((r) => r.status), [503, 503, 503, 503, 503])
  // and one whose client leaves while it waits
  const queued = async (): Promise<unknown> => (JSON.parse((await request(`${tt.adminUrl}/upstreams`)).body) as Record<string, unknown>[])[0]!.queued
  const gone = http.request(`${tt.url}/gone`, { agent: false })
  gone.on('error', () => undefined)
  gone.end()
  await waitFor(async () => await queued() === 1, 5000, '/gone waiting')
  gone.destroy()
  await waitFor(async () => await queued() === 0, 5000, '/gone no longer counted')
  t.equal(connections, 1)
  held.shift()!.end('a\n')
  await holding
  for (let i = 0; i < 3; i++) t.equal((await request(`${tt.url}/next${i}`)).status, 200)
  t.same(up.seen.map((r) => r.url), ['/hold', '/next0', '/next1', '/next2'], 'nothing of the requests that ended in the queue was sent')
  t.equal(connections, 1, `one kept-alive connection carries the later requests (upstream accepted ${connections})`)
})

t.test('a request waiting for a connection is not a wait on the upstream: no early probe while the one at the upstream still uploads', async (t) => {
  let probes = 0
  const up = await startUpstream('a', (req, res) => {
    if (req.method === 'OPTIONS') return void (probes++, res.end())
    req.resume()
    if (req.url !== '/upload') res.end('a\n') // the upload is never answered: its body is still coming
  })
  t.teardown(() => up.close())
  // the long-wait watch suspects an upstream with a request waiting over 100 ms on its answer;
  // the first regular probe comes within 10% of the interval, the next one 10 s after it
  const tt = await startTether(testConfig([up], {
    limits: { max_upstream_connections: 1 }, timeouts: { queue: 1000, body_idle: 60_000 },
    health: { active: { enabled: true, interval: 10_000, timeout: 100 } },
  }), { logger: createLogger('silent') })
  t.teardown(() => tt.close(0))
  await waitFor(() => tt.health.snapshot().every((e) => e.activeSuccesses > 0), 5000, 'the first probe to pass')
  const before = probes
  // a slow upload takes the one connection (not a wait on the upstream: its body still comes)
  const upload = http.request(`${tt.url}/upload`, { method: 'POST', agent: false, headers: { 'content-length': '10' } })
  upload.on('error', () => undefined)
  upload.write('12345')
  t.teardown(() => upload.destroy())
  await waitFor(() => up.seen.some((r) => r.url === '/upload'), 5000, 'the upload at the upstream')
  // a GET waits behind it for timeouts.queue, ten times the probe timeout
  t.equal((await request(`${tt.url}/queued`)).status, 503)
  t.equal(probes, before, 'no probe for a request that waited in the queue')
})
