// A moved user's plain HTTP request (HTTP/1.1 or h2) whose client leaves while Tether posts the
// user's state to the new upstream's rehydration hook (held by a slow upstream): the hook is
// stopped at once, nothing is sent upstream afterwards, one access line says `client_abort`,
// no rehydration, retry or upstream failure is counted, and the request leaves the in-flight
// count. As for a WebSocket handshake (test/websocket-handshake-abort.test.ts).
import t, { type Test } from 'tap'
import { EventEmitter } from 'node:events'
import http from 'node:http'
import http2 from 'node:http2'
import net from 'node:net'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { HEDGE_AFTER, HedgeTimers } from './fixtures/hedge-timers.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startUpstream, testConfig, request, type DeepPartial, type Upstream } from './fixtures/upstream.js'
import { CookieJar } from './fixtures/users.js'
import { metric } from './fixtures/drill.js'
import { frozenRedis } from './fixtures/redis-server.js'
import { onEvent, waitFor, when } from './fixtures/wait.js'
import type { Config } from '../src/config/schema.js'

const HOOK = '/_tether/rehydrate'

interface World {
  tether: Tether; logs: LogCapture; jar: CookieJar; home: string
  hooks: http.ServerResponse[]; hooked: EventEmitter; forwarded: string[]; held: http.ServerResponse[]; target: () => string
  /** With `hedge`: Tether's timers, whose hedge() hedges the request the home holds. */
  timers: HedgeTimers
}

/** Tether over `apps` (closed at teardown) logging at info, and user u1 answered once: u1's jar and home upstream. */
async function withUser(t: Test, apps: Upstream[], over: DeepPartial<Config>, timers?: HedgeTimers): Promise<{ tether: Tether; logs: LogCapture; jar: CookieJar; home: string }> {
  const logs = new LogCapture()
  const tether = await startTether(testConfig(apps, over), { logger: createLogger('info', logs), ...(timers === undefined ? {} : { timers }) })
  t.teardown(() => tether.close(0))
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  const first = await request(tether.url, { headers: { cookie: jar.header()! } })
  jar.apply(first.headers['set-cookie'])
  return { tether, logs, jar, home: first.body }
}

/**
 * Tether over a, b, c whose hooks are held (never answered) and whose other requests answer with
 * a checkpoint; user u1 answered once by their home upstream. Then home is taken out, so u1's
 * next request moves and its state is posted to the new upstream's hook; or, with `hedge`
 * (`retries.hedge_after` set to HEDGE_AFTER), home holds u1's next request (no answer head), and
 * once the test calls `timers.hedge()` its hedge goes to another upstream, a move, and the state
 * is posted to that upstream's hook first (no real hedge_after: it could hedge the setup's request).
 */
async function movingWorld(t: Test, over: DeepPartial<Config> = {}, hedge = false): Promise<World> {
  const hooks: http.ServerResponse[] = []
  const hooked = new EventEmitter()
  const forwarded: string[] = []
  const held: http.ServerResponse[] = []
  const hookedBy: string[] = []
  let moving = false
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (req.url === HOOK) {
      hooks.push(res) // held: the hook never answers (the teardown closes it)
      hookedBy.push(id)
      hooked.emit('hook')
      return
    }
    if (moving && hedge && held.length === 0) return void held.push(res) // the first attempt: no answer head
    if (moving) forwarded.push(id)
    res.writeHead(200, { 'x-tether-state': 'n' }).end(id)
  })
  const apps = [await app('a'), await app('b'), await app('c')]
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const timers = new HedgeTimers()
  const { tether, logs, jar, home } = await withUser(t, apps, {
    state: { rehydrate: 'hook', hook_path: HOOK }, timeouts: { response_headers: 60_000 }, retries: { attempts: 2 }, ...over,
  }, hedge ? timers : undefined)
  if (!hedge) tether.health.disable(home)
  moving = true
  return { tether, logs, jar, home, hooks, hooked, forwarded, held, target: () => hookedBy[0]!, timers }
}

/** The hook stopped, one `client_abort` line, nothing forwarded or counted, nothing left in flight. */
async function checkStopped(t: Test, w: World, before: number): Promise<void> {
  const hook = w.hooks[0]!
  await waitFor(() => hook.destroyed, 3000, 'the hook request to be stopped') // polled: the upstream's socket closes under it
  await when(onEvent(w.logs, 'record'), () => w.logs.access().length === before + 1, 3000, 'the access line')
  t.match(w.logs.access()[before], { outcome: 'client_abort', status: 0 })
  t.same(w.forwarded, [], 'nothing reached any upstream after the hook')
  t.equal(w.hooks.length, 1, 'no other upstream tried')
  await waitFor(() => w.tether.inFlight.count(w.target()) === 0, 2000, 'the hook to leave the in-flight count')
  for (const result of ['delivered', 'no_state', 'error']) t.equal(await metric(w.tether, `tether_rehydrations_total{result="${result}"}`), 0, `no rehydration counted (${result})`)
  t.equal(await metric(w.tether, `tether_retries_total{upstream="${w.target()}"}`), 0, 'no retry')
  t.equal(w.tether.health.state(w.target()), 'healthy', 'the upstream is not blamed')
}

for (const leave of ['FIN', 'RST'] as const) {
  t.test(`HTTP/1.1: a moved user's client that leaves (${leave}) while its state is posted to the hook stops the hook; nothing is forwarded`, async (t) => {
    const w = await movingWorld(t)
    const before = w.logs.access().length
    const client = net.connect(w.tether.port, '127.0.0.1')
    client.on('error', () => undefined)
    client.write(`GET /x HTTP/1.1\r\nHost: a\r\nCookie: ${w.jar.header()!}\r\n\r\n`)
    await when(onEvent(w.hooked, 'hook'), () => w.hooks.length === 1, 5000, 'the state posted to the hook')
    if (leave === 'FIN') client.end()
    else client.resetAndDestroy()
    await checkStopped(t, w, before)
    client.destroy()
  })
}

t.test("h2: a moved user's stream reset (RST_STREAM) while its state is posted to the hook stops the hook; nothing is forwarded", async (t) => {
  const w = await movingWorld(t, { listen: { http2: { cleartext: true } } })
  const before = w.logs.access().length
  const session = http2.connect(w.tether.url)
  session.on('error', () => undefined)
  t.teardown(() => session.destroy())
  const stream = session.request({ ':path': '/x', cookie: w.jar.header()! })
  stream.on('error', () => undefined)
  await when(onEvent(w.hooked, 'hook'), () => w.hooks.length === 1, 5000, 'the state posted to the hook')
  stream.close(http2.constants.NGHTTP2_CANCEL)
  await checkStopped(t, w, before)
})

t.test("a hedge's hook: the client that leaves while the hedge's state is posted stops it; no hedge is sent", async (t) => {
  const w = await movingWorld(t, { retries: { attempts: 2, hedge_after: HEDGE_AFTER } }, true)
  const before = w.logs.access().length
  const client = net.connect(w.tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  client.write(`GET /x HTTP/1.1\r\nHost: a\r\nCookie: ${w.jar.header()!}\r\n\r\n`)
  await waitFor(() => w.held.length === 1, 5000, 'the first attempt held at home')
  await w.timers.hedge()
  await when(onEvent(w.hooked, 'hook'), () => w.hooks.length === 1, 5000, "the hedge's state posted to its hook")
  t.equal(w.held.length, 1, 'the first attempt is held at home')
  t.not(w.target(), w.home, 'the hedge moves the user')
  client.resetAndDestroy()
  await checkStopped(t, w, before)
  t.match(w.logs.access()[before], { upstream: w.home }, "logged as the first attempt's")
  await waitFor(() => w.tether.inFlight.count(w.home) === 0, 2000, 'the first attempt to leave the in-flight count')
})

t.test("h2: a moved user's client whose whole connection closes while its state is posted to the hook stops the hook; nothing is forwarded", async (t) => {
  const w = await movingWorld(t, { listen: { http2: { cleartext: true } } })
  const before = w.logs.access().length
  const session = http2.connect(w.tether.url)
  session.on('error', () => undefined)
  const stream = session.request({ ':path': '/x', cookie: w.jar.header()! })
  stream.on('error', () => undefined)
  await when(onEvent(w.hooked, 'hook'), () => w.hooks.length === 1, 5000, 'the state posted to the hook')
  session.destroy() // the client's socket closes with the stream still open: no RST_STREAM
  await checkStopped(t, w, before)
})

for (const protocol of ['HTTP/1.1', 'h2'] as const) {
  t.test(`${protocol}: a stop's grace period that ends while a moved user's request waits in the hook: logged TETHER_SHUTTING_DOWN, nothing forwarded`, async (t) => {
    const w = await movingWorld(t, protocol === 'h2' ? { listen: { http2: { cleartext: true } } } : {})
    const before = w.logs.access().length
    let client: { destroy: () => void }
    if (protocol === 'h2') {
      const session = http2.connect(w.tether.url)
      session.on('error', () => undefined)
      session.request({ ':path': '/x', cookie: w.jar.header()! }).on('error', () => undefined)
      client = session
    } else {
      const socket = net.connect(w.tether.port, '127.0.0.1')
      socket.on('error', () => undefined)
      socket.write(`GET /x HTTP/1.1\r\nHost: a\r\nCookie: ${w.jar.header()!}\r\n\r\n`)
      client = socket
    }
    t.teardown(() => client.destroy())
    await when(onEvent(w.hooked, 'hook'), () => w.hooks.length === 1, 5000, 'the state posted to the hook')
    await w.tether.close(100) // the hook holds the request past the grace period: Tether closes the connection
    await when(onEvent(w.logs, 'record'), () => w.logs.access().length === before + 1, 3000, 'the access line')
    t.match(w.logs.access()[before], { status: 0, outcome: 'TETHER_SHUTTING_DOWN' })
    t.same(w.forwarded, [], 'nothing reached any upstream after the hook')
    t.equal(w.hooks.length, 1, 'no other upstream tried')
    t.notOk(w.logs.records.some((r) => r['msg'] === 'rehydration hook did not accept the state'), 'the hook stopped by the stop is no refusal of the state')
  })
}

t.test("a moved user's client that leaves while the state is fetched (a frozen Redis), no hook run: the move is not counted, nothing is sent, logged client_abort", async (t) => {
  const { redis, freeze } = await frozenRedis(t)
  const forwarded: string[] = []
  let moving = false
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (moving && req.url === '/x') forwarded.push(id) // not the active checks' probes
    res.writeHead(200, { 'x-tether-state': 'n' }).end(id)
  })
  const apps = [await app('a'), await app('b'), await app('c')]
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const { tether, logs, jar, home } = await withUser(t, apps, {
    state: { store: 'redis', timeout: 1000, redis: { url: redis.url } }, health: { active: { enabled: true, unhealthy_threshold: 1 } },
  })
  await waitFor(async () => (await metric(tether, 'tether_checkpoints_total{result="stored"}')) === 1, 5000, 'the checkpoint stored')
  tether.health.reportActive(home, false, true) // home is down: a forced move
  t.equal(tether.health.state(home), 'unhealthy')
  const before = logs.access().length
  const failovers = await metric(tether, `tether_failovers_total{from="${home}",reason="dead"}`)
  freeze()
  const handed = new Promise<void>((resolve) => tether.listener.server.once('request', () => resolve()))
  moving = true
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())
  client.write(`GET /x HTTP/1.1\r\nHost: a\r\nCookie: ${jar.header()!}\r\n\r\n`)
  await handed // its path now waits for the state (Redis frozen, up to state.timeout: 1 s)
  client.resetAndDestroy()
  await when(onEvent(logs, 'record'), () => logs.access().length === before + 1, 5000, 'the access line')
  t.match(logs.access()[before], { outcome: 'client_abort', status: 0, route: 'failover' })
  t.not(logs.access()[before]!['upstream'], home, 'the request was moved')
  t.same(forwarded, [], 'nothing sent upstream')
  t.equal(await metric(tether, `tether_failovers_total{from="${home}",reason="dead"}`), failovers, 'no move counted for a client that left before its attempt')
})
