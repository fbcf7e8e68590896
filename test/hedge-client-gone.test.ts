// A hedge decided while its client leaves: the hedge's state fetch (a slow store) is not
// stopped by the client's leaving (only a hook is), and once it returned the hedge used to be
// sent anyway, to a client already gone: a connection opened to the next upstream for a request
// that was then aborted before any byte (and, to an upstream whose connect hangs, the request's
// end waiting for that connect). Now no hedge goes once the client has left.
import t from 'tap'
import net from 'node:net'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { hashKey as hashOf } from '../src/placement/hash.js'
import { HEDGE_AFTER, HedgeTimers } from './fixtures/hedge-timers.js'
import { LogCapture } from './fixtures/log-capture.js'
import { frozenRedis } from './fixtures/redis-server.js'
import { request, startUpstream, testConfig, waitFor } from './fixtures/upstream.js'

/** A key the hash places on `id` (header affinity). */
function userOn(px: Tether, id: string): string {
  for (let i = 0; ; i++) if (px.router.placement.ids[px.router.placement.pick(hashOf(`u${i}`))] === id) return `u${i}`
}

/** A TCP relay to `port` that counts the commands sent through it naming `{key}` (a checkpoint read). */
async function relay(port: number): Promise<{ url: string; named: (key: string) => number; close(): Promise<void> }> {
  const sent: string[] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((c) => {
    const s = net.connect(port, '127.0.0.1')
    for (const x of [c, s]) { sockets.add(x); x.on('error', () => undefined); x.on('close', () => sockets.delete(x)) }
    c.on('data', (d: Buffer) => sent.push(d.toString('latin1')))
    c.pipe(s)
    s.pipe(c)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    named: (key) => sent.filter((d) => d.includes(`{${key}}`)).length,
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()) }),
  }
}

t.test('a client that leaves while its hedge\'s state is fetched gets no hedge sent: no connection to the next upstream', async (t) => {
  const { redis, freeze } = await frozenRedis(t)
  const store = await relay(redis.port)
  let held = 0
  const a = await startUpstream('a', (req, res) => {
    req.resume()
    if (req.headers['x-hold'] === undefined) res.end('a')
    else held++ // no head (the client leaves)
  })
  const b = await startUpstream('b')
  let bConnections = 0
  b.server.on('connection', () => { bConnections++ })
  t.teardown(async () => { await a.close(); await b.close(); await store.close() })
  const logs = new LogCapture()
  // the test fires the hedge once a holds the request (a real hedge_after could hedge the setup's request)
  const timers = new HedgeTimers()
  const px = await startTether(testConfig([{ id: 'a', url: a.url }, { id: 'b', url: b.url }], {
    affinity: { key: 'header', header: { name: 'x-user' } },
    state: { store: 'redis', timeout: 2_000, redis: { url: store.url } },
    // (one extra attempt: the hedge's, which counts against retries.attempts; no retry after it)
    retries: { hedge_after: HEDGE_AFTER, attempts: 1 },
    health: { active: { enabled: false } },
  }), { logger: createLogger('info', logs), timers })
  t.teardown(() => px.close(0))
  const user = userOn(px, 'a')
  t.equal((await request(`${px.url}/`, { headers: { 'x-user': user } })).body, 'a')
  const before = store.named(user)
  freeze()
  const req = http.request(`${px.url}/`, { agent: false, headers: { 'x-user': user, 'x-hold': '1' } })
  req.on('error', () => undefined)
  req.end()
  await waitFor(() => held === 1, 10_000, 'a holding the request')
  await timers.hedge()
  await waitFor(() => store.named(user) > before, 10_000, 'the hedge\'s checkpoint read sent to the (frozen) store')
  req.destroy()
  await waitFor(() => logs.access().length === 2, 10_000, 'the access line')
  t.match(logs.access()[1], { status: 0, outcome: 'client_abort' })
  t.equal(bConnections, 0, 'no hedge went to b for the client that had left')
})
