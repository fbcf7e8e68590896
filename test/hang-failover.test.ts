// A replica that stops answering without closing anything (issue 11): requests already waiting
// on it are moved (idempotent) or answered 504 (the others) as soon as health takes it out,
// instead of waiting for timeouts.response_headers; with retries.hedge_after the user's next
// upstream is asked after that long, and the user moves only if the hedge answered.
import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { request, startProxy, startUpstream, testConfig, waitFor, type Upstream } from './fixtures/upstream.js'
import { FakeTimers } from './fixtures/timers.js'
import { HEDGE_AFTER, HedgeTimers } from './fixtures/hedge-timers.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { hashKey as hashOf } from '../src/placement/hash.js'
import type { Tether } from '../src/app.js'

/**
 * An upstream that answers "a" until freeze(), then accepts connections and reads requests but
 * never answers (a frozen process: the kernel still completes handshakes).
 */
async function freezable(): Promise<{ url: string; seen: string[]; freeze(): void; close(): Promise<void> }> {
  const seen: string[] = []
  let frozen = false
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`)
    if (!frozen) res.end('a\n')
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    freeze: () => { frozen = true },
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()) }),
  }
}

/** Users the hash places on `id`, each served there once (pinned), by the header key. */
async function usersOn(px: Tether, id: string, n: number, prefix: string): Promise<string[]> {
  const users: string[] = []
  for (let i = 0; users.length < n; i++) if (px.router.placement.ids[px.router.placement.pick(hashOf(`${prefix}${i}`))] === id) users.push(`${prefix}${i}`)
  for (const u of users) await request(`${px.url}/`, { headers: { 'x-user': u } })
  return users
}

const HEADER = { key: 'header' as const, header: { name: 'x-user' } }

t.test('requests waiting on an upstream that health takes out are moved (GET) or answered 504 (POST) at once', async (t) => {
  const a = await freezable()
  const b = await startUpstream('b', (req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ id: 'b', moved: req.headers['x-tether-moved'] ?? null, status: req.headers['x-tether-rehydrate-status'] ?? null }))
  })
  t.teardown(async () => { await a.close(); await b.close() })
  const px = await startProxy([{ id: 'a', url: a.url }, { id: 'b', url: b.url }], {
    affinity: HEADER,
    // probes without traffic would find it first; here the test says when it is found out
    health: { active: { enabled: false } },
    timeouts: { response_headers: 30_000 },
  })
  t.teardown(() => px.close(0))
  const users = await usersOn(px, 'a', 2, 'u')
  a.freeze()
  a.seen.length = 0
  const started = Date.now()
  const get = request(`${px.url}/page`, { headers: { 'x-user': users[0]! } })
  const post = request(`${px.url}/form`, { method: 'POST', body: 'x=1', headers: { 'x-user': users[1]!, 'content-type': 'application/x-www-form-urlencoded' } })
  await waitFor(() => a.seen.length === 2, 5000, 'both requests to reach the frozen upstream')
  px.health.disable('a') // what an active check or an ejection does
  const [g, p] = await Promise.all([get, post])
  const waited = Date.now() - started
  t.equal(g.status, 200, 'the GET was moved')
  t.match(JSON.parse(g.body), { id: 'b', moved: 'from=a; reason=dead; epoch=1', status: 'none' })
  t.equal(p.status, 504, 'the POST (it may have reached the app) is not replayed')
  t.equal(p.headers['retry-after'], undefined, 'and the client is not invited to send it again')
  t.match(p.body, /stopped answering/)
  t.ok(waited < 5000, `both answered without waiting for response_headers (${waited} ms)`)
  // the moved user stays on b; the POST user was never moved
  t.equal(JSON.parse((await request(`${px.url}/page`, { headers: { 'x-user': users[0]! } })).body).id, 'b')
})

for (const [hole, attempts, bOut] of [['frozen', 2, false], ['closed', 2, false], ['frozen', 1, false], ['frozen', 3, true]] as const) {
  const title = attempts === 1
    ? 'with rehydrate: hook and no retry left, a user moved onto a frozen upstream gets 503 with Retry-After (nothing reached an application)'
    : bOut
      ? 'with rehydrate: hook and no upstream left to retry on, a user moved onto a frozen upstream gets 503 with Retry-After too'
      : `with rehydrate: hook, a user moved onto a ${hole} upstream is sent on to the next one, the state with it (the hook waits like a request)`
  t.test(title, async (t) => {
    const hookPath = '/_tether/rehydrate'
    const hooked: string[] = []
    const app = (id: string) => (req: http.IncomingMessage, res: http.ServerResponse): void => {
      let body = ''
      req.on('data', (c: Buffer) => (body += c))
      req.on('end', () => {
        if (req.url === hookPath) { hooked.push(`${id} ${body}`); return void res.writeHead(204).end() }
        res.setHeader('x-tether-state', `state-of-${id}`)
        res.end(`${id} ${req.headers['x-tether-moved'] ?? ''}`)
      })
    }
    const a = await freezable()
    const b = await startUpstream('b', app('b'))
    const c = await startUpstream('c', app('c'))
    t.teardown(async () => { await a.close(); await b.close(); await c.close() })
    const px = await startProxy([{ id: 'a', url: a.url }, { id: 'b', url: b.url }, { id: 'c', url: c.url }], {
      affinity: HEADER,
      state: { store: 'memory', rehydrate: 'hook', hook_path: hookPath },
      health: { active: { enabled: false } }, // the test says when a is found out
      timeouts: { response_headers: 30_000 },
      retries: { attempts },
    })
    t.teardown(() => px.close(0))
    // a user placed on c, then a, then b
    const ids = px.router.placement.ids
    const order = (u: string): string[] => { const out: number[] = []; px.router.placement.order(hashOf(u), out); return out.map((i) => ids[i]!) }
    let user = ''
    for (let i = 0; user === ''; i++) if (order(`h${i}`).join() === 'c,a,b') user = `h${i}`
    t.equal((await request(`${px.url}/`, { headers: { 'x-user': user } })).body, 'c ', 'the user starts on c (and checkpoints there)')
    if (bOut) px.health.disable('b')
    await c.close() // c refuses connections: the user moves, to a first
    if (hole === 'frozen') a.freeze()
    else await a.close()
    const started = Date.now()
    const moved = request(`${px.url}/`, { headers: { 'x-user': user } })
    if (hole === 'frozen') {
      await waitFor(() => a.seen.includes(`POST ${hookPath}`), 5000, 'the hook to reach the frozen upstream')
      px.health.disable('a') // what an active check or an ejection does
    }
    const r = await moved
    if (attempts === 1 || bOut) {
      t.same([r.status, r.headers['retry-after'], hooked], [503, '1', []], 'the retry went to c (refused); a stopped hook leaves none')
      return
    }
    t.equal(r.status, 200)
    t.match(r.body, /^b from=c; reason=dead; epoch=\d+$/, 'answered by b, as a move')
    t.same(hooked, ['b state-of-c'], 'with the state, through the hook')
    t.ok(Date.now() - started < 5000, `without waiting for response_headers (${Date.now() - started} ms)`)
  })
}

t.test('with active checks on (defaults but a short interval), a frozen upstream is found and its waiting users moved', async (t) => {
  const a = await freezable()
  const b = await startUpstream('b')
  t.teardown(async () => { await a.close(); await b.close() })
  const px = await startProxy([{ id: 'a', url: a.url }, { id: 'b', url: b.url }], {
    affinity: HEADER,
    health: { active: { enabled: true, interval: 300, timeout: 200 } },
  })
  t.teardown(() => px.close(0))
  const [user] = await usersOn(px, 'a', 1, 'v')
  a.freeze()
  const r = await request(`${px.url}/`, { headers: { 'x-user': user } })
  t.equal(r.status, 200)
  t.equal(r.body, 'b\n', 'answered by b once a was found unresponsive')
  t.equal(px.health.state('a'), 'unhealthy')
  t.ok(a.seen.some((s) => s === 'OPTIONS *'), 'probed with OPTIONS *')
})

t.test('hedging: no head from the user\'s upstream after hedge_after, the next one answers and the user moves', async (t) => {
  const a = await freezable()
  const b = await startUpstream('b', (req, res) => res.end(`b ${req.headers['x-tether-moved'] ?? ''}`))
  t.teardown(async () => { await a.close(); await b.close() })
  const px = await startProxy([{ id: 'a', url: a.url }, { id: 'b', url: b.url }], { affinity: HEADER, retries: { hedge_after: 100 } })
  t.teardown(() => px.close(0))
  const [user] = await usersOn(px, 'a', 1, 'w')
  a.freeze()
  const started = Date.now()
  const r = await request(`${px.url}/`, { headers: { 'x-user': user! } })
  t.equal(r.body, 'b from=a; reason=dead; epoch=1', 'the hedge answered, as a move')
  t.ok(Date.now() - started < 2_000, `answered after about hedge_after (${Date.now() - started} ms)`)
  t.equal(px.sessions.get(user!, Date.now())?.upstream, 'b', 'the user moved')
  t.match(await px.metrics.render(), /^tether_failovers_total\{from="a",reason="dead"\} 1$/m, 'and the move is counted, as any move')
})

t.test('hedging: when the user\'s upstream answers before the hedge, the hedge is stopped and the user stays', async (t) => {
  // a holds each request until its hedge reached b (hedged by the test, HedgeTimers, once a has
  // it: a real hedge_after raced a's answer on a loaded machine), then answers; b is slower
  let bHits = 0
  const held: http.ServerResponse[] = []
  const a = await startUpstream('a', (_req, res) => void held.push(res))
  const b = await startUpstream('b', (_req, res) => {
    bHits++
    held.shift()?.end('a')
    const timer = setTimeout(() => res.end('b'), 2_000)
    res.on('close', () => clearTimeout(timer))
  })
  t.teardown(async () => { await a.close(); await b.close() })
  const timers = new HedgeTimers()
  const px = await startTether(testConfig([{ id: 'a', url: a.url }, { id: 'b', url: b.url }], { affinity: HEADER, retries: { hedge_after: HEDGE_AFTER } }), { logger: createLogger('silent'), timers })
  t.teardown(() => px.close(0))
  /** `pending`, hedged once a holds its request. */
  const hedged = async <T>(pending: Promise<T>): Promise<T> => {
    await waitFor(() => held.length === 1, 20_000, "a's request") // (polled: the app notes it)
    await timers.hedge()
    return pending
  }
  const [user] = await hedged(usersOn(px, 'a', 1, 'x'))
  const r = await hedged(request(`${px.url}/`, { headers: { 'x-user': user! } }))
  t.equal(r.body, 'a', 'the user\'s own upstream answered first')
  t.equal(bHits, 2, 'a hedge was sent for each of the two requests')
  t.equal(px.sessions.get(user!, Date.now())?.upstream, 'a', 'the user did not move')
  t.notMatch(await px.metrics.render(), /^tether_failovers_total\{/m, 'no move counted')
})


t.test('a client that gives up waiting is not sent back into the hole: its next request moves', async (t) => {
  const a = await freezable()
  const b = await startUpstream('b', (req, res) => res.end(`b ${req.headers['x-tether-moved'] ?? ''}`))
  t.teardown(async () => { await a.close(); await b.close() })
  // probes rarely (the regular schedule would not find the freeze in time), short timeout
  const px = await startProxy([{ id: 'a', url: a.url }, { id: 'b', url: b.url }], {
    affinity: HEADER, health: { active: { enabled: true, interval: 10_000, timeout: 200 } },
  })
  t.teardown(() => px.close(0))
  await waitFor(() => px.health.snapshot().every((e) => e.activeSuccesses > 0), 5000, 'the first probes to pass')
  const [user] = await usersOn(px, 'a', 1, 'y')
  a.freeze()
  // a browser that gives up after 400 ms
  const gaveUp = await new Promise<boolean>((resolve) => {
    const req = http.get(`${px.url}/`, { headers: { 'x-user': user! }, agent: false }, () => resolve(false))
    req.setTimeout(400, () => { req.destroy(); resolve(true) })
    req.on('error', () => undefined)
  })
  t.ok(gaveUp, 'the client gave up')
  await waitFor(() => px.health.state('a') === 'unhealthy', 3000, 'the abandoned upstream to be probed and found unresponsive')
  const next = await request(`${px.url}/`, { headers: { 'x-user': user! } })
  t.equal(next.body, 'b from=a; reason=dead; epoch=1', 'the next request moved')
})

t.test('with active checks off, WebSocket clients giving up on their handshake after the probe timeout count as failures, as plain requests\' do: consecutive_failures of them eject the upstream', async (t) => {
  const TIMEOUT = 200
  const a = await startUpstream('a', (_req, res) => res.end('a\n'))
  const sockets: import('node:net').Socket[] = []
  // its handshakes are held (slow, not dead: the connection stays open): each client gives up first
  a.server.on('upgrade', (_req: http.IncomingMessage, sock: import('node:net').Socket) => {
    sockets.push(sock)
    sock.on('error', () => undefined)
  })
  const b = await startUpstream('b', (req, res) => res.end(`b ${req.headers['x-tether-moved'] ?? ''}`))
  t.teardown(async () => { for (const s of sockets) s.destroy(); await a.close(); await b.close() })
  const px = await startProxy([{ id: 'a', url: a.url }, { id: 'b', url: b.url }], {
    affinity: HEADER, health: { active: { enabled: false, interval: 10_000, timeout: TIMEOUT } },
  })
  t.teardown(() => px.close(0))
  const users = await usersOn(px, 'a', 3, 'ws')
  for (const [i, user] of users.entries()) {
    let answered = false
    const req = http.get(`${px.url}/ws`, { headers: { 'x-user': user, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' }, agent: false })
    req.on('upgrade', (_res, sock) => { answered = true; sock.destroy() })
    req.on('response', (res) => { answered = true; res.resume() })
    req.on('error', () => undefined)
    // the client gives up once its handshake has waited at the upstream 1.5 x the probe
    // timeout: Tether sent it before the upstream got it, so Tether waited longer than the
    // probe timeout whatever the machine's load (a slow turn only makes that wait longer)
    await waitFor(() => sockets.length === i + 1, 5000, `handshake ${i} at the upstream`)
    await new Promise((r) => setTimeout(r, 1.5 * TIMEOUT)) // the client's patience: the behaviour under test, not a wait for an event
    t.notOk(answered, `client ${i} got no answer before it gave up`)
    req.destroy()
    await waitFor(() => px.inFlight.count('a') === 0, 5000, `Tether to stop the abandoned handshake ${i}`)
  }
  t.equal(px.health.state('a'), 'ejected', 'three give-ups in a row (health.passive.consecutive_failures) ejected a')
  t.equal((await request(`${px.url}/`, { headers: { 'x-user': users[0]! } })).body, 'b from=a; reason=dead; epoch=1', 'its user moves')
})

t.test('a WebSocket handshake declaring a body is refused 400: the body, held by Tether until a 101, would leave an upstream that waits for it (as HTTP/1.1 says it may, RFC 9110 section 7.8) unanswered, and clients giving up on it would eject a healthy upstream', async (t) => {
  const TIMEOUT = 200
  const net = await import('node:net')
  const heads: string[] = []
  // each client gives up once its handshake reaches `a` (it was sent on instead of refused)
  let reachedA: (() => void) | null = null
  // answers a handshake only once its whole request message is in (its Content-Length bytes
  // included): the switch applies after the request, as HTTP/1.1 has it
  const a = net.createServer((s) => {
    reachedA?.()
    s.on('error', () => undefined)
    let got = ''
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1')
      const end = got.indexOf('\r\n\r\n')
      if (end < 0) return
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(got.slice(0, end))?.[1] ?? 0)
      if (got.length - end - 4 < length) return
      heads.push(got.slice(0, end))
      s.removeAllListeners('data')
      s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n')
    })
  })
  await new Promise<void>((r) => a.listen(0, '127.0.0.1', r))
  const b = await startUpstream('b')
  const px = await startProxy([{ id: 'a', url: `http://127.0.0.1:${(a.address() as AddressInfo).port}` }, { id: 'b', url: b.url }], {
    affinity: HEADER, health: { active: { enabled: false, interval: 10_000, timeout: TIMEOUT } },
  })
  t.teardown(async () => { await px.close(0); await b.close(); await new Promise((r) => a.close(r)) })
  const user = (await (async () => { for (let i = 0; ; i++) if (px.router.placement.ids[px.router.placement.pick(hashOf(`wsbody${i}`))] === 'a') return `wsbody${i}` })())
  const answers: string[] = []
  for (let i = 0; i < 3; i++) {
    answers.push(await new Promise<string>((resolve) => {
      const c = net.connect(px.port, '127.0.0.1', () => c.write(`GET /ws HTTP/1.1\r\nHost: a\r\nX-User: ${user}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 5\r\n\r\nhello`))
      let out = ''
      c.on('data', (d: Buffer) => { out += d.toString('latin1'); if (out.includes('\r\n\r\n')) { c.destroy(); resolve(out.split('\r\n')[0]!) } })
      c.on('error', () => undefined)
      // judged by order, not by a 300 ms patience a loaded machine can outlast: the handshake
      // reaching `a` (held there for its body) is the failure; a client gives up on it after 1.5
      // x the probe timeout (with active checks off, a hint that counts against `a`)
      reachedA = () => setTimeout(() => { c.destroy(); resolve('gave up') }, 1.5 * TIMEOUT)
      c.setTimeout(30_000, () => { c.destroy(); resolve('no answer') })
    }))
    reachedA = null
    await waitFor(() => px.inFlight.count('a') === 0, 5000, `handshake ${i} over`)
  }
  t.same(answers, ['HTTP/1.1 400 Bad Request', 'HTTP/1.1 400 Bad Request', 'HTTP/1.1 400 Bad Request'], 'each refused at once, not left waiting')
  t.same(heads, [], 'none sent upstream')
  t.equal(px.health.state('a'), 'healthy', 'a stays in')
})

/**
 * A healthy but slow upstream: /slow answers after 2 x the probe timeout, everything else (its
 * probes included) at once; `giveUps` clients each give up on /slow after 1.5 x the probe
 * timeout (each on its own connection), one after the other; with active checks, each give-up
 * is followed by a probe of `a`. Returns the proxy and `a`'s users.
 */
async function slowGiveUps(t: Test, active: boolean, giveUps: number): Promise<{ px: Tether; users: string[] }> {
  const TIMEOUT = 200
  let probes = 0
  const a = await startUpstream('a', (req, res) => {
    if (req.method === 'OPTIONS') probes++
    if (req.url === '/slow') return void setTimeout(() => res.end('a slow\n'), 2 * TIMEOUT)
    res.end('a\n')
  })
  const b = await startUpstream('b', (req, res) => res.end(`b ${req.headers['x-tether-moved'] ?? ''}`))
  t.teardown(async () => { await a.close(); await b.close() })
  const px = await startProxy([{ id: 'a', url: a.url }, { id: 'b', url: b.url }], {
    affinity: HEADER, health: { active: { enabled: active, interval: 10_000, timeout: TIMEOUT } },
  })
  t.teardown(() => px.close(0))
  if (active) await waitFor(() => px.health.snapshot().every((e) => e.activeSuccesses > 0), 5000, 'the first probes to pass')
  const users = await usersOn(px, 'a', 3, active ? 'on' : 'off')
  for (let i = 0; i < giveUps; i++) {
    const before = probes
    const gaveUp = await new Promise<boolean>((resolve) => {
      const req = http.get(`${px.url}/slow`, { headers: { 'x-user': users[i % users.length]! }, agent: false }, () => resolve(false))
      req.setTimeout(1.5 * TIMEOUT, () => { req.destroy(); resolve(true) })
      req.on('error', () => undefined)
    })
    t.ok(gaveUp, `client ${i} gave up waiting`)
    await waitFor(() => px.inFlight.count('a') === 0, 5000, `Tether to stop the abandoned request ${i}`)
    if (active) await waitFor(() => probes > before, 3000, `a probe of a after give-up ${i}`)
  }
  return { px, users }
}

t.test('with active checks on, clients giving up on a slow but healthy upstream get it probed, not ejected: nobody moves', async (t) => {
  const GIVE_UPS = 5 // more than health.passive.consecutive_failures (3)
  const { px, users } = await slowGiveUps(t, true, GIVE_UPS)
  t.equal(px.health.state('a'), 'healthy', 'a is still healthy: its probes answered at once')
  t.match(px.health.snapshot().find((e) => e.id === 'a'), { passiveFailures: 0, timesEjected: 0 }, 'no give-up counted as a passive failure')
  for (const u of users) t.equal((await request(`${px.url}/`, { headers: { 'x-user': u } })).body, 'a\n', `user ${u} stays on a`)
})

t.test('with active checks off, clients giving up after the probe timeout count as failures: consecutive_failures of them eject the upstream', async (t) => {
  const { px, users } = await slowGiveUps(t, false, 3)
  t.equal(px.health.state('a'), 'ejected', 'three give-ups in a row (health.passive.consecutive_failures) ejected a')
  t.equal((await request(`${px.url}/`, { headers: { 'x-user': users[0]! } })).body, 'b from=a; reason=dead; epoch=1', 'its user moves')
})

/**
 * Upstreams a, b, c behind Tether with `affinity`: a answers /slow 600 ms late with checkpoint
 * 'old' (else 'a-state'); b and c checkpoint `new-<id>` and echo `<id> <state delivered>`;
 * with `sid`, each answer sets the application cookie `sid` to `sid(<id>)`.
 */
async function lateAnswers(t: Test, sid: ((id: string) => string) | null, affinity: NonNullable<Parameters<typeof startProxy>[1]>['affinity']): Promise<{ px: Tether; a: Upstream }> {
  const cookie = (res: http.ServerResponse, id: string): void => { if (sid !== null) res.setHeader('set-cookie', `sid=${sid(id)}; Path=/`) }
  const a = await startUpstream('a', (req, res) => {
    cookie(res, 'a')
    if (req.url === '/slow') return setTimeout(() => { res.setHeader('x-tether-state', 'old'); res.end('a late') }, 600)
    res.setHeader('x-tether-state', 'a-state')
    res.end('a')
  })
  const echo = (id: string) => (req: http.IncomingMessage, res: http.ServerResponse): void => {
    cookie(res, id)
    res.setHeader('x-tether-state', `new-${id}`)
    res.end(`${id} ${req.headers['x-tether-rehydrate'] ?? ''}`)
  }
  const b = await startUpstream('b', echo('b'))
  const c = await startUpstream('c', echo('c'))
  t.teardown(async () => { await a.close(); await b.close(); await c.close() })
  const px = await startProxy([{ id: 'a', url: a.url }, { id: 'b', url: b.url }, { id: 'c', url: c.url }], { affinity })
  t.teardown(() => px.close(0))
  return { px, a }
}

for (const kind of ['header', 'cookie'] as const) {
  t.test(`an answer from an epoch the user has left does not overwrite their newer state (key: ${kind})`, async (t) => {
    const { px, a } = await lateAnswers(t, null, kind === 'header' ? { ...HEADER, drain_timeout: 50 } : { key: 'cookie', drain_timeout: 50 })
    // the user's credentials: a header, or Tether's cookie (a session placed on a; a cookie jar of one)
    let headers: http.OutgoingHttpHeaders
    if (kind === 'header') headers = { 'x-user': (await usersOn(px, 'a', 1, 'z'))[0]! }
    else {
      let first = await request(`${px.url}/`)
      while (first.body !== 'a') first = await request(`${px.url}/`)
      headers = { cookie: String(first.headers['set-cookie']).split(';')[0]! }
    }
    const late = request(`${px.url}/slow`, { headers })
    await waitFor(() => a.seen.some((r) => r.url === '/slow'), 5000, 'the slow request to reach a')
    px.health.drain('a')
    const since = Date.now()
    await waitFor(() => Date.now() - since > 60, 5000, 'drain_timeout to pass')
    const moved = await request(`${px.url}/`, { headers })
    const to = moved.body.split(' ')[0]!
    t.not(to, 'a', 'the user moved off the drained upstream (drain_timeout passed)')
    if (moved.headers['set-cookie'] !== undefined) headers = { cookie: String(moved.headers['set-cookie']).split(';')[0]! }
    t.equal((await late).body, 'a late', 'the slow answer from the old epoch still reaches the client')
    // move once more: the state delivered must be the newer one, not the late 'old'
    px.health.disable(to)
    const again = await request(`${px.url}/`, { headers })
    t.match(again.body, new RegExp(` new-${to}$`), 'rehydrated with the state of the epoch the user moved to')
  })
}

for (const rotates of [true, false]) {
  t.test(`a late answer from an epoch the user has left teaches nothing (key: app_cookie, ${rotates ? 'a new value on every answer, as Laravel' : 'one value, as PHPSESSID'})`, async (t) => {
    let n = 0
    const sid = (id: string): string => (rotates ? `${id}${++n}` : 'u1')
    const { px, a } = await lateAnswers(t, sid, { key: 'app_cookie', app_cookie: { name: 'sid' }, drain_timeout: 50 })
    let cookie = ''
    const jar = (r: { headers: http.IncomingHttpHeaders }): void => { const s = r.headers['set-cookie']; if (s !== undefined) cookie = String(s).split(';')[0]! }
    let first = await request(`${px.url}/`)
    while (first.body !== 'a') first = await request(`${px.url}/`)
    jar(first)
    const late = request(`${px.url}/slow`, { headers: { cookie } })
    await waitFor(() => a.seen.some((r) => r.url === '/slow'), 5000, 'the slow request to reach a')
    px.health.drain('a')
    const since = Date.now()
    await waitFor(() => Date.now() - since > 60, 5000, 'drain_timeout to pass')
    const moved = await request(`${px.url}/`, { headers: { cookie } })
    const to = moved.body.split(' ')[0]!
    t.not(to, 'a', 'moved off the drained upstream')
    jar(moved)
    const lateAnswer = await late
    t.equal(lateAnswer.body, 'a late', 'the late answer still reaches the client')
    if (rotates) t.equal(lateAnswer.headers['set-cookie'], undefined, "without its new value of the cookie: the browser keeps the one of the replica the user is on")
    jar(lateAnswer)
    const next = await request(`${px.url}/`, { headers: { cookie } })
    t.equal(next.body.split(' ')[0], to, 'the late answer did not pin the user back to a')
    t.match(await px.metrics.render(), /tether_failovers_total\{from="a",reason="drain"\} 1\n/, 'one move: the user was not moved off a again')
    jar(next)
    px.health.disable(to)
    const again = await request(`${px.url}/`, { headers: { cookie } })
    t.match(again.body, new RegExp(` new-${to}$`), 'rehydrated with the state of the epoch the user moved to, not the late "old"')
  })
}

t.test('a late answer from an upstream that still serves (the user was moved off it by an admin meanwhile) is a new session there, as any: its cookie passes and routes back to it', async (t) => {
  let n = 0
  const { px, a } = await lateAnswers(t, (id) => `${id}${++n}`, { key: 'app_cookie', app_cookie: { name: 'sid' } })
  let first = await request(`${px.url}/`)
  while (first.body !== 'a') first = await request(`${px.url}/`)
  const cookie = String(first.headers['set-cookie']).split(';')[0]!
  const late = request(`${px.url}/slow`, { headers: { cookie } })
  await waitFor(() => a.seen.some((r) => r.url === '/slow'), 5000, 'the slow request to reach a')
  t.equal((await request(`${px.adminUrl}/sessions/${encodeURIComponent(cookie.slice(4))}/move?to=b`, { method: 'POST' })).status, 202)
  const moved = await request(`${px.url}/`, { headers: { cookie } })
  t.equal(moved.body.split(' ')[0], 'b', 'moved to b by the order')
  const lateAnswer = await late
  t.equal(lateAnswer.body, 'a late')
  const fresh = String(lateAnswer.headers['set-cookie'] ?? '').split(';')[0]!
  t.match(fresh, /^sid=a\d+$/, "a's new session cookie passes (a still serves: the session it made lives there)")
  t.equal((await request(`${px.url}/`, { headers: { cookie: fresh } })).body, 'a', 'and leads back to a')
})

t.test("a client giving up on a replaced upstream's old process does not get the id's new process probed early; one giving up on the new process does", async (t) => {
  const PROBE_TIMEOUT = 150
  // /slow and probes are held (answered at the end), so a probe started stays in flight
  const held: http.ServerResponse[] = []
  const app = (id: string) => startUpstream(id, (req, res) => (req.url === '/slow' || req.method === 'OPTIONS' ? void held.push(res) : res.end(`${id}\n`)))
  const [old, b, next] = [await app('a'), await app('b'), await app('a-next')]
  t.teardown(async () => { for (const r of held) r.end(); await Promise.all([old, b, next].map((u) => u.close())) })
  // Tether's timers are fake: no probe runs unless asked for (probeSoon starts one at once,
  // setting its PROBE_TIMEOUT timer, pending while the probe is held); the give-up is timed on
  // real time
  const timers = new FakeTimers()
  const px = await startTether(testConfig([{ id: 'a', url: old.url }, { id: 'b', url: b.url }], {
    affinity: HEADER, health: { active: { enabled: true, interval: 10_000, timeout: PROBE_TIMEOUT } },
  }), { logger: createLogger('silent'), timers })
  t.teardown(() => px.close(0))
  const [user] = await usersOn(px, 'a', 1, 'z')
  const probing = (): number => timers.pending(PROBE_TIMEOUT).length
  const giveUp = (): Promise<boolean> => new Promise<boolean>((resolve) => {
    const req = http.get(`${px.url}/slow`, { headers: { 'x-user': user! }, agent: false }, () => resolve(false))
    req.setTimeout(2 * PROBE_TIMEOUT, () => { req.destroy(); resolve(true) })
    req.on('error', () => undefined)
  })
  const seen = old.seen.length
  const first = giveUp()
  await waitFor(() => old.seen.length > seen, 5000, 'the slow request at the old process')
  px.reload({ ...px.config, upstreams: px.config.upstreams.map((u) => (u.id === 'a' ? { ...u, url: next.url } : u)) })
  t.equal(probing(), 0, 'no probe in flight')
  t.ok(await first, 'the client gave up on the old process')
  await waitFor(() => px.inFlight.count('a') === 0, 5000, 'Tether to stop the abandoned request')
  t.equal(probing(), 0, 'the new process is not probed early')
  // the same on the new process: it is
  const before = next.seen.length
  const second = giveUp()
  await waitFor(() => next.seen.length > before, 5000, 'the slow request at the new process')
  t.ok(await second, 'the client gave up on the new process')
  await waitFor(() => px.inFlight.count('a') === 0, 5000, 'Tether to stop the abandoned request')
  t.equal(probing(), 1, 'the new process is probed now')
  await waitFor(() => next.seen.some((r) => r.method === 'OPTIONS'), 5000, 'the probe at the new process')
  t.notOk(old.seen.some((r) => r.method === 'OPTIONS'), 'the old process was never probed')
})
