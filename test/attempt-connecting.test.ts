// An attempt stopped, or whose client left, while its upstream connection is still being made
// (a TLS handshake the upstream never answers, SYNs dropped to a dead node): undici can abort a
// request only once it has a connection, so such an attempt used to end only when the connect
// did (up to timeouts.connect): a hedged request whose first attempt answered waited for the
// losing hedge's connect before it ended (its access line, its duration, the in-flight count),
// and a client that left was logged that late. Now such an attempt ends at once; undici's start
// of it, if the connection comes, is aborted before anything is sent.
import t, { type Test } from 'tap'
import net from 'node:net'
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { hashKey as hashOf } from '../src/placement/hash.js'
import { HEDGE_AFTER, HedgeTimers } from './fixtures/hedge-timers.js'
import { LogCapture } from './fixtures/log-capture.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { within } from './fixtures/wait.js'
import { request, startUpstream, testConfig, waitFor, type Upstream } from './fixtures/upstream.js'

/** A TCP server that accepts connections and never sends a byte (a TLS handshake to it never ends). */
async function silentServer(): Promise<{ url: string; sockets: net.Socket[]; close(): Promise<void> }> {
  const sockets: net.Socket[] = []
  const server = net.createServer((s) => { sockets.push(s); s.on('error', () => undefined) })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sockets,
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()) }),
  }
}

/** A key the hash places on `id` (header affinity). */
function userOn(px: Tether, id: string): string {
  for (let i = 0; ; i++) if (px.router.placement.ids[px.router.placement.pick(hashOf(`u${i}`))] === id) return `u${i}`
}

async function inFlight(px: Tether, id: string): Promise<number> {
  const line = (await px.metrics.render()).split('\n').find((l) => l.startsWith(`tether_upstream_in_flight{upstream="${id}"}`))
  return line === undefined ? 0 : Number(line.split(' ').at(-1))
}

// the connect would take a minute: anything that waits for it fails the waits below (10 s)
const CONNECT = 60_000

t.test('a hedge still connecting when the first attempt answers is stopped at once: the request ends with the answer, not at the hedge\'s connect timeout', async (t) => {
  const silent = await silentServer()
  let held = 0
  const a = await startUpstream('a', (req, res) => {
    if (req.headers['x-hold'] === undefined) return void res.end('a')
    held++
    // the first attempt answers once the hedge is connecting (its TLS handshake unanswered)
    void waitFor(() => silent.sockets.length > 0, 10_000, 'the hedge connecting').then(() => res.end('a late'), () => res.end('no hedge'))
  })
  t.teardown(async () => { await a.close(); await silent.close() })
  const logs = new LogCapture()
  // the test fires the hedge once a holds the request (a real hedge_after could hedge the setup's request)
  const timers = new HedgeTimers()
  const px = await startTether(testConfig([{ id: 'a', url: a.url }, { id: 'b', url: silent.url }], {
    affinity: { key: 'header', header: { name: 'x-user' } },
    retries: { hedge_after: HEDGE_AFTER },
    timeouts: { connect: CONNECT },
    health: { active: { enabled: false } },
  }), { logger: createLogger('info', logs), timers })
  t.teardown(() => px.close(0))
  const user = userOn(px, 'a')
  t.equal((await request(`${px.url}/`, { headers: { 'x-user': user } })).body, 'a')
  const pending = request(`${px.url}/`, { headers: { 'x-user': user, 'x-hold': '1' } })
  await waitFor(() => held === 1, 10_000, 'a holding the request')
  await timers.hedge()
  const r = await pending
  t.equal(r.body, 'a late', 'the first attempt answered, while the hedge was connecting')
  await waitFor(() => logs.access().length === 2, 10_000, 'the request\'s access line (not at the hedge\'s connect timeout)')
  t.match(logs.access()[1], { upstream: 'a', status: 200, outcome: 'ok' })
  t.equal(await inFlight(px, 'b'), 0, 'the stopped hedge is no longer counted in flight')
  t.equal(px.sessions.get(user, Date.now())?.upstream, 'a', 'the user did not move')
})

/** Tether in front of a silent upstream only, and one client request whose attempt is connecting to it (the connect waits out CONNECT). */
async function connectingRequest(t: Test): Promise<{ px: Tether; logs: LogCapture; req: http.ClientRequest }> {
  const silent = await silentServer()
  t.teardown(() => silent.close())
  const logs = new LogCapture()
  const px = await startTether(testConfig([{ id: 'b', url: silent.url }], {
    timeouts: { connect: CONNECT },
    health: { active: { enabled: false } },
  }), { logger: createLogger('info', logs) })
  const req = http.request(`${px.url}/`, { agent: false })
  req.on('error', () => undefined)
  req.end()
  await waitFor(() => silent.sockets.length > 0, 10_000, 'the attempt connecting')
  return { px, logs, req }
}

t.test('a client that leaves while its attempt is still connecting ends at once (client_abort), not at the connect timeout', async (t) => {
  const { px, logs, req } = await connectingRequest(t)
  t.teardown(() => px.close(0))
  req.destroy()
  await waitFor(() => logs.access().length === 1, 10_000, 'the access line (not at the connect timeout)')
  t.match(logs.access()[0], { upstream: 'b', status: 0, outcome: 'client_abort' })
  t.equal(await inFlight(px, 'b'), 0, 'no longer counted in flight')
})

t.test('a connection that comes after its attempt was ended carries nothing of it: the next request is the first the upstream sees', async (t) => {
  const certs = makeCertificateSet()
  t.teardown(() => certs.remove())
  const seen: string[] = []
  const secure = https.createServer({ cert: certs.server.cert, key: certs.server.key }, (req, res) => {
    seen.push(req.url ?? '')
    res.end('secure')
  })
  // the TCP side accepts and holds each connection until the test lets its TLS handshake go on
  const held: net.Socket[] = []
  let open = false
  const gate = net.createServer((s) => {
    s.on('error', () => undefined)
    if (open) secure.emit('connection', s)
    else held.push(s)
  })
  await new Promise<void>((r) => gate.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => { secure.closeAllConnections(); for (const s of held) s.destroy(); gate.close(() => r()) }))
  const logs = new LogCapture()
  const url = `https://127.0.0.1:${(gate.address() as AddressInfo).port}`
  const px = await startTether(testConfig([{ id: 'b', url, weight: 1, tls: { ca: certs.caFile, servername: null, cert: null, key: null, verify: true } }], {
    timeouts: { connect: CONNECT },
    health: { active: { enabled: false } },
  }), { logger: createLogger('info', logs) })
  t.teardown(() => px.close(0))
  const req = http.request(`${px.url}/left`, { agent: false })
  req.on('error', () => undefined)
  req.end()
  await waitFor(() => held.length > 0, 10_000, 'the attempt connecting')
  req.destroy()
  await waitFor(() => logs.access().length === 1, 10_000, 'the access line')
  t.match(logs.access()[0], { path: '/left', status: 0, outcome: 'client_abort' })
  // the connection is made now: undici starts the ended attempt on it, which sends nothing
  open = true
  secure.emit('connection', held[0])
  const r = await request(`${px.url}/next`)
  t.equal(r.body, 'secure')
  t.same(seen, ['/next'], 'the request whose client left never reached the upstream')
})

/** Tether (header key x-user, hooks at /hook, connect timeout CONNECT) over `a` and a silent https:// `b`, logging at info; `hedge`: hedged when the test calls its hedge() (HedgeTimers). */
async function hookWorld(t: Test, a: Upstream, silent: { url: string }, hedge: HedgeTimers | null): Promise<{ px: Tether; logs: LogCapture; user: string }> {
  const logs = new LogCapture()
  const px = await startTether(testConfig([{ id: 'a', url: a.url }, { id: 'b', url: silent.url }], {
    affinity: { key: 'header', header: { name: 'x-user' } },
    state: { rehydrate: 'hook', hook_path: '/hook' },
    retries: hedge !== null ? { hedge_after: HEDGE_AFTER } : {},
    timeouts: { connect: CONNECT },
    health: { active: { enabled: false } },
  }), { logger: createLogger('info', logs), ...(hedge === null ? {} : { timers: hedge }) })
  t.teardown(() => px.close(0))
  const user = userOn(px, 'a')
  // the user's first answer carries a checkpoint: a move of theirs posts it to the hook first
  t.equal((await request(`${px.url}/`, { headers: { 'x-user': user } })).body, 'a')
  return { px, logs, user }
}

/** Answers 'a' with a checkpoint; a request with X-Hold (counted in `holding.n`) once `silent` has a connection. */
function homeApp(silent: { sockets: net.Socket[] }, holding = { n: 0 }): Promise<Upstream> {
  return startUpstream('a', (req, res) => {
    req.resume()
    if (req.headers['x-hold'] === undefined) return void res.writeHead(200, { 'x-tether-state': 's1' }).end('a')
    holding.n++
    void waitFor(() => silent.sockets.length > 0, 10_000, 'the hook connecting').then(() => res.end('a late'), () => res.end('no hook'))
  })
}

t.test('a hedge whose rehydration hook is still connecting when the first attempt answers: the request ends with the answer, not at the connect timeout', async (t) => {
  const silent = await silentServer()
  const holding = { n: 0 }
  const a = await homeApp(silent, holding)
  t.teardown(async () => { await a.close(); await silent.close() })
  const timers = new HedgeTimers()
  const { px, logs, user } = await hookWorld(t, a, silent, timers)
  const pending = request(`${px.url}/`, { headers: { 'x-user': user, 'x-hold': '1' } })
  await waitFor(() => holding.n === 1, 10_000, 'a holding the request')
  await timers.hedge()
  const r = await pending
  t.equal(r.body, 'a late', 'the first attempt answered while the hedge\'s hook was connecting')
  await waitFor(() => logs.access().length === 2, 10_000, 'the request\'s access line (not at the hook\'s connect timeout)')
  t.match(logs.access()[1], { upstream: 'a', status: 200, outcome: 'ok' })
  t.equal(px.sessions.get(user, Date.now())?.upstream, 'a', 'the user did not move')
})

t.test('a client that leaves while its move\'s rehydration hook is still connecting ends at once (client_abort)', async (t) => {
  const silent = await silentServer()
  const a = await homeApp(silent)
  t.teardown(async () => { await a.close(); await silent.close() })
  const { px, logs, user } = await hookWorld(t, a, silent, null)
  px.health.disable('a')
  const req = http.request(`${px.url}/`, { agent: false, headers: { 'x-user': user } })
  req.on('error', () => undefined)
  req.end()
  await waitFor(() => silent.sockets.length > 0, 10_000, 'the hook connecting')
  req.destroy()
  await waitFor(() => logs.access().length === 2, 10_000, 'the access line (not at the hook\'s connect timeout)')
  t.match(logs.access()[1], { status: 0, outcome: 'client_abort' })
})

t.test('a graceful stop whose grace period ends while an attempt is still connecting logs it TETHER_SHUTTING_DOWN, as once started', async (t) => {
  const { px, logs } = await connectingRequest(t)
  await px.close(0)
  await waitFor(() => logs.access().length === 1, 10_000, 'the access line')
  // (the status: Tether's 503 went out, or not, before the connection closed)
  t.match(logs.access()[0], { outcome: 'TETHER_SHUTTING_DOWN' }, 'Tether cut it: not the client\'s abort')
})

t.test('requests still connecting to an upstream that health takes out go to the next one at once, a POST too (nothing of it was sent)', async (t) => {
  const silent = await silentServer()
  const b = await startUpstream('b', (req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => res.end(`b ${req.method} ${body}`))
  })
  t.teardown(async () => { await b.close(); await silent.close() })
  const px = await startTether(testConfig([{ id: 'a', url: silent.url }, { id: 'b', url: b.url }], {
    affinity: { key: 'header', header: { name: 'x-user' } },
    timeouts: { connect: CONNECT },
    health: { active: { enabled: false } },
  }), { logger: createLogger('silent') })
  t.teardown(() => px.close(0))
  const user = userOn(px, 'a')
  const get = request(`${px.url}/`, { headers: { 'x-user': user } })
  const post = request(`${px.url}/`, { method: 'POST', body: 'x=1', headers: { 'x-user': user, 'content-type': 'application/x-www-form-urlencoded' } })
  await waitFor(() => silent.sockets.length >= 2, 10_000, 'both requests connecting')
  px.health.disable('a') // what an active check or an ejection does
  const [g, p] = await Promise.all([within(get, 10_000, 'the GET'), within(post, 10_000, 'the POST')])
  t.equal(g.body, 'b GET ', 'the GET went to the next upstream')
  t.equal(p.body, 'b POST x=1', 'the POST too, its body whole: it never reached the first')
})
