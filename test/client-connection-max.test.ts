// timeouts.client_connection_max (nginx's keepalive_time, Envoy's max_connection_duration): the
// first HTTP/1.1 request whose turn starts after the bound is the connection's last
// (`Connection: close`), the first h2 stream opened after it gets GOAWAY NO_ERROR and the
// streams in flight finish; a WebSocket is never cut. Real sockets, Tether's clock a FakeClock:
// the bound passes when the test advances it, nothing waits for time to go by.
import t, { type Test } from 'tap'
import type http from 'node:http'
import diagnostics from 'node:diagnostics_channel'
import http2 from 'node:http2'
import net from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { WebSocket } from 'ws'
import { startTether } from '../src/app.js'
import { diffConfig } from '../src/config/reload.js'
import { createLogger } from '../src/observability/logger.js'
import { FakeClock } from './fixtures/clock.js'
import { FILE, issuesOf, yaml } from './fixtures/config-issues.js'
import { LogCapture } from './fixtures/log-capture.js'
import { rawConnect, type RawConnection } from './fixtures/raw-client.js'
import { ask, connectionHeaders, echoUpstream, get, goaways, oneByOne, tetherFromFile } from './fixtures/connection-bounds.js'
import { answerOk } from './fixtures/raw-upstream.js'
import { startHarness, type Harness, type Overrides } from './fixtures/raw-tether.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { startUpstream, testConfig, waitFor, type Upstream } from './fixtures/upstream.js'
import { within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

const MINUTE = 60_000
const TLS = { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null } as const

/** Whether each final answer on `c` says `Connection: close`. */
const closes = (c: RawConnection): boolean[] => connectionHeaders(c).map((v) => v === 'close')

/** Tether with `over` on a FakeClock (closed at teardown) and a keep-alive connection to it that carried /1. */
async function servedOnce(t: Test, over: Overrides): Promise<{ clock: FakeClock; h: Harness; c: RawConnection }> {
  const clock = new FakeClock()
  const h = await startHarness(over, answerOk, 1, clock)
  t.teardown(() => h.close())
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  await oneByOne(t, c, ['/1'])
  return { clock, h, c }
}

t.test('HTTP/1.1: the first answer that begins after the bound says Connection: close and the connection closes after it', async (t) => {
  const { clock, h, c } = await servedOnce(t, { timeouts: { client_connection_max: MINUTE } })
  clock.advance(MINUTE) // (at the bound, not after it: nginx's `>` too)
  await oneByOne(t, c, ['/2'])
  clock.advance(1)
  await oneByOne(t, c, ['/3'])
  t.ok(await c.waitEnd(5_000), 'Tether closed the connection')
  t.notOk(c.reset, 'closed, not reset')
  t.same(c.finals().map((r) => r.status), [200, 200, 200])
  t.same(closes(c), [false, false, true], 'only the answer begun after the bound says Connection: close')
  t.same(h.received().map((r) => r.target), ['/1', '/2', '/3'])
})

t.test('HTTP/1.1: requests pipelined past the bound: the first is answered with Connection: close, the rest neither forwarded nor answered', async (t) => {
  const { clock, h, c } = await servedOnce(t, { timeouts: { client_connection_max: MINUTE } })
  clock.advance(MINUTE + 1)
  c.write(['/2', '/3', '/4'].map(get).join(''))
  t.ok(await c.waitEnd(5_000), 'Tether closed the connection')
  await h.barrier()
  t.same(c.finals().map((r) => r.status), [200, 200], 'two answers, none for /3 and /4 (the client sends them again on a new connection)')
  t.same(closes(c), [false, true])
  t.same(h.received().map((r) => r.target), ['/1', '/2'], '/3 and /4 never reached the upstream')
})

t.test('the default is 1h, as nginx; 0 (from the file) keeps a connection open whatever time passes', async (t) => {
  const { clock, h, c } = await servedOnce(t, {})
  t.equal(h.tether.config.timeouts.client_connection_max, 3_600_000)
  clock.advance(3_600_001)
  await oneByOne(t, c, ['/2'])
  t.ok(await c.waitEnd(5_000), 'closed after the first request past an hour')
  t.same(closes(c), [false, true])

  const other = new FakeClock()
  const tether = await tetherFromFile(t, 'timeouts: { client_connection_max: 0 }', other)
  t.equal(tether.config.timeouts.client_connection_max, 0)
  const kept = await rawConnect(tether.port)
  t.teardown(() => kept.destroy())
  for (let i = 1; i <= 3; i++) {
    await oneByOne(t, kept, [`/${i}`])
    other.advance(24 * 3_600_000)
  }
  t.notOk(closes(kept).includes(true), 'no answer says Connection: close')
  t.notOk(kept.ended, 'the connection stays open')
})

/** An upstream that holds every answer until `count` requests arrived, then answers each with its path. */
async function heldUpstream(t: Test, count: number): Promise<Upstream & { paths: string[] }> {
  const paths: string[] = []
  const held: [string, http.ServerResponse][] = []
  const up = await startUpstream('app-0', (req, res) => {
    paths.push(req.url!)
    held.push([req.url!, res])
    if (held.length >= count) for (const [path, r] of held.splice(0)) r.end(path)
  })
  t.teardown(() => up.close())
  return Object.assign(up, { paths })
}

/**
 * Stream /1 in flight (held upstream), the bound passes, stream /2 opens: GOAWAY NO_ERROR naming
 * /2's stream (3), both answered whole, the connection closes; the next request goes on a new one.
 */
async function h2PastBound(t: Test, clock: FakeClock, logs: LogCapture, connect: () => http2.ClientHttp2Session, up: Upstream & { paths: string[] }): Promise<void> {
  const s = connect()
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  const got = goaways(s)
  const closed = new Promise((r) => s.once('close', r))
  const first = ask(s, '/1')
  await waitFor(() => up.paths.length === 1, 5_000, '/1 at the upstream')
  t.same(got, [], 'no GOAWAY before the bound')
  clock.advance(MINUTE + 1)
  const answers = await within(Promise.all([first, ask(s, '/2')]), 10_000, 'the two answers')
  t.same(answers, [{ status: 200, body: '/1', error: null }, { status: 200, body: '/2', error: null }], 'the stream in flight and the one past the bound both answered whole')
  t.ok(got.length >= 1 && got.every(([code, last]) => code === http2.constants.NGHTTP2_NO_ERROR && last === 3), `GOAWAY NO_ERROR naming stream 3 (got ${JSON.stringify(got)})`)
  await within(closed, 10_000, 'the connection to close')
  const told = logs.records.filter((r) => String(r['msg']).includes('timeouts.client_connection_max'))
  t.match(told, [{ level: 20, streams: 2, peer: '127.0.0.1' }], 'one debug line says why')
  const next = connect()
  t.teardown(() => next.destroy())
  next.on('error', () => undefined)
  const again = await within(Promise.all([ask(next, '/3'), ask(next, '/4')]), 10_000, 'the answers on a new connection')
  t.same(again.map((a) => a.body), ['/3', '/4'], 'a new connection is served')
}

t.test('HTTP/2 (h2c): the first stream past the bound gets GOAWAY NO_ERROR, the stream in flight finishes, then the connection closes', async (t) => {
  const up = await heldUpstream(t, 2)
  const clock = new FakeClock()
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } }, timeouts: { client_connection_max: MINUTE } }), { logger: createLogger('debug', logs), clock })
  t.teardown(() => tether.close(0))
  await h2PastBound(t, clock, logs, () => http2.connect(tether.url), up)
})

t.test('HTTP/2 over TLS: the same', async (t) => {
  const up = await heldUpstream(t, 2)
  const clock = new FakeClock()
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], {
    listen: { tls: TLS },
    timeouts: { client_connection_max: MINUTE },
  }), { logger: createLogger('debug', logs), clock })
  t.teardown(() => tether.close(0))
  await h2PastBound(t, clock, logs, () => http2.connect(tether.url, { ca: certs.ca, servername: 'localhost' }), up)
})

t.test('a WebSocket open past the bound is not cut, while a keep-alive connection as old is closed', async (t) => {
  const url = await echoUpstream(t, (req, res) => res.end(req.url), true)
  const clock = new FakeClock()
  const tether = await startTether(testConfig([{ id: 'app-0', url }], { timeouts: { client_connection_max: MINUTE } }), { logger: createLogger('silent'), clock })
  t.teardown(() => tether.close(0))
  const ws = new WebSocket(tether.url.replace('http://', 'ws://') + '/ws')
  t.teardown(() => ws.terminate())
  const echo = (text: string): Promise<string> => new Promise((resolve, reject) => {
    ws.once('message', (m) => resolve(String(m)))
    ws.once('close', () => reject(new Error('closed')))
    ws.send(text)
  })
  await within(new Promise((r, j) => { ws.once('open', r); ws.once('error', j) }), 5_000, 'the WebSocket to open')
  t.equal(await within(echo('a'), 5_000, 'the first echo'), 'echo:a')
  const c = await rawConnect(tether.port)
  t.teardown(() => c.destroy())
  await oneByOne(t, c, ['/1'])
  clock.advance(2 * MINUTE)
  await oneByOne(t, c, ['/2'])
  t.ok(await c.waitEnd(5_000), 'the keep-alive connection closed after its first answer past the bound')
  for (const text of ['b', 'c']) t.equal(await within(echo(text), 5_000, `the echo of ${text}`), `echo:${text}`, `the WebSocket still carries ${text}`)
  t.equal(ws.readyState, WebSocket.OPEN, 'the WebSocket stays open')
})

/** Tether (TLS, with the redirect listener, client_connection_max 1m) on a FakeClock, and a raw connection to its redirect listener; closed at teardown. */
async function redirectConnection(t: Test): Promise<{ clock: FakeClock; c: RawConnection }> {
  const up = await startUpstream('app-0', (_req, res) => res.end('app'))
  t.teardown(() => up.close())
  const clock = new FakeClock()
  const tether = await startTether(testConfig([up], {
    listen: { tls: TLS, redirect: { host: '127.0.0.1', port: 0, https_port: null } },
    timeouts: { client_connection_max: MINUTE },
  }), { logger: createLogger('silent'), clock })
  t.teardown(() => tether.close(0))
  const c = await rawConnect(Number(new URL(tether.redirectUrl!).port))
  t.teardown(() => c.destroy())
  return { clock, c }
}

t.test('the redirect listener: a keep-alive connection\'s first 308 after the bound says Connection: close', async (t) => {
  const { clock, c } = await redirectConnection(t)
  await oneByOne(t, c, ['/a'])
  clock.advance(MINUTE + 1)
  await oneByOne(t, c, ['/b'])
  t.ok(await c.waitEnd(5_000), 'closed after the 2nd')
  t.same(c.finals().map((r) => r.status), [308, 308])
  t.same(closes(c), [false, true])
})

t.test('a reload applies a new bound to connections whose first request comes after it; an open one keeps its own', async (t) => {
  const clock = new FakeClock()
  const h = await startHarness({ timeouts: { client_connection_max: 10 * MINUTE } }, answerOk, 1, clock)
  t.teardown(() => h.close())
  const before = await rawConnect(h.port)
  t.teardown(() => before.destroy())
  await oneByOne(t, before, ['/1'])
  const result = h.tether.reload({ ...h.tether.config, timeouts: { ...h.tether.config.timeouts, client_connection_max: MINUTE } })
  t.same([result.applied, result.needsRestart], [['timeouts'], []], 'applied, no restart')
  const after = await rawConnect(h.port)
  t.teardown(() => after.destroy())
  await oneByOne(t, after, ['/2'])
  clock.advance(MINUTE + 1)
  await oneByOne(t, before, ['/3'])
  await oneByOne(t, after, ['/4'])
  t.ok(await after.waitEnd(5_000), 'the new connection closed after its first answer past the new bound')
  t.same(closes(after), [false, true])
  t.same(closes(before), [false, false], 'the open one keeps the 10 minutes it began with')
  t.notOk(before.ended)
})

t.test('diffConfig: a change of timeouts.client_connection_max alone is live; with another timeout it needs a restart', async (t) => {
  const base = testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }])
  const live = diffConfig(base, { ...base, timeouts: { ...base.timeouts, client_connection_max: 5_000 } })
  t.same([live.applied, live.needsRestart, live.effective.timeouts.client_connection_max], [['timeouts'], [], 5_000])
  const restart = diffConfig(base, { ...base, timeouts: { ...base.timeouts, client_connection_max: 5_000, client_headers: 1_000 } })
  t.same([restart.applied, restart.needsRestart, restart.effective.timeouts.client_connection_max], [[], ['timeouts'], 3_600_000])
})

t.test('config: a value that is not a duration >= 0 is refused, naming the key and its line', async (t) => {
  const at = (value: string): readonly string[] => issuesOf(yaml('upstreams: [{ id: a, url: "http://127.0.0.1:1" }]', 'timeouts:', `  client_connection_max: ${value}`))
  t.same(at('-1'), [`${FILE}:3:26 timeouts.client_connection_max: expected a duration like "500ms", "5s", "3h" or a number of seconds, got -1`])
  t.same(at('1x'), [`${FILE}:3:26 timeouts.client_connection_max: expected a duration like "500ms", "5s", "3h" or a number of seconds, got "1x"`])
  // no timer times it (a compare at each request): Node's timer limit (596h) is not its bound,
  // and its error does not cite it
  t.same(at('1000h'), [], '1000h is taken')
  t.same(at('3650d'), [], '3650d is taken')
  t.same(at('3651d'), [`${FILE}:3:26 timeouts.client_connection_max: expected a duration <= 87600h, got "3651d"`])
  t.same(at('10m'), [], '10m is taken')
  t.same(at('0'), [], '0 is taken')
})

// Timed from the connection's accept, as nginx's keepalive_time (c->start_time, set at accept):
// a connection accepted, then quiet past the bound before its first request (HTTP/1.1) or before
// its TLS handshake and preface (HTTP/2), carries one request (stream) only. Tether's accept is
// seen through Node's `net.server.socket` diagnostics channel (published as a server accepts a
// socket, just before its 'connection' event): the clock moves only after it.

/** Resolves once a Tether server accepted the connection whose client side is `client`. */
function acceptedFrom(client: net.Socket): Promise<void> {
  return within(new Promise<void>((resolve) => {
    const seen = (message: unknown): void => {
      const socket = (message as { socket: net.Socket }).socket
      if (socket.remotePort !== client.localPort) return
      diagnostics.unsubscribe('net.server.socket', seen)
      setImmediate(resolve) // (after the 'connection' event it precedes)
    }
    diagnostics.subscribe('net.server.socket', seen)
    // (accepted before the subscription: the connection listeners ran already)
    if (client.localPort !== undefined && acceptedPorts.has(client.localPort)) seen({ socket: { remotePort: client.localPort } })
  }), 5_000, 'Tether to accept the connection')
}

/** Every client port a Tether server of this file accepted, from the start. */
const acceptedPorts = new Set<number>()
const noteAccepted = (message: unknown): void => { const p = (message as { socket: net.Socket }).socket.remotePort; if (p !== undefined) acceptedPorts.add(p) }
diagnostics.subscribe('net.server.socket', noteAccepted)
t.teardown(() => diagnostics.unsubscribe('net.server.socket', noteAccepted))

t.test('HTTP/1.1: timed from the accept: a connection quiet past the bound before its first request has that request answered with Connection: close', async (t) => {
  const clock = new FakeClock()
  const h = await startHarness({ timeouts: { client_connection_max: MINUTE } }, answerOk, 1, clock)
  t.teardown(() => h.close())
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  await acceptedFrom(c.socket)
  clock.advance(MINUTE + 1)
  await oneByOne(t, c, ['/1'])
  t.ok(await c.waitEnd(5_000), 'Tether closed the connection after its first answer')
  t.same(closes(c), [true], 'the first answer says Connection: close')
})

t.test('the redirect listener: timed from the accept too', async (t) => {
  const { clock, c } = await redirectConnection(t)
  await acceptedFrom(c.socket)
  clock.advance(MINUTE + 1)
  await oneByOne(t, c, ['/a'])
  t.ok(await c.waitEnd(5_000), 'closed after the first 308')
  t.same(c.finals().map((r) => r.status), [308])
  t.same(closes(c), [true])
})

for (const tls of [true, false]) {
  t.test(`HTTP/2 (${tls ? 'TLS' : 'h2c'}): timed from the accept, before the ${tls ? 'TLS handshake' : 'preface'}: the first stream of a connection quiet past the bound is its last`, async (t) => {
    const up = await startUpstream('app-0', (req, res) => res.end(req.url))
    t.teardown(() => up.close())
    const clock = new FakeClock()
    const listen = tls ? { tls: TLS } : { http2: { cleartext: true } }
    // (client_keep_alive long: only the bound may close the connection within the test)
    const tether = await startTether(testConfig([up], { listen, timeouts: { client_connection_max: MINUTE, client_keep_alive: 10 * MINUTE } }), { logger: createLogger('silent'), clock })
    t.teardown(() => tether.close(0))
    const raw = net.connect(tether.port, '127.0.0.1')
    raw.on('error', () => undefined)
    t.teardown(() => raw.destroy())
    await within(new Promise((r) => raw.once('connect', r)), 5_000, 'the TCP connection')
    await acceptedFrom(raw)
    clock.advance(MINUTE + 1)
    const s = http2.connect(tether.url, { createConnection: () => tls ? tlsConnect({ socket: raw, ca: certs.ca, servername: 'localhost', ALPNProtocols: ['h2'] }) : raw })
    s.on('error', () => undefined)
    t.teardown(() => s.destroy())
    const got = goaways(s)
    const closed = new Promise((r) => s.once('close', r))
    t.same(await within(ask(s, '/1'), 10_000, 'the answer'), { status: 200, body: '/1', error: null }, 'the stream is served whole')
    await within(closed, 10_000, 'the connection to close')
    t.ok(got.length >= 1 && got.every(([code, last]) => code === http2.constants.NGHTTP2_NO_ERROR && last === 1), `GOAWAY NO_ERROR naming the first stream (got ${JSON.stringify(got)})`)
  })
}
