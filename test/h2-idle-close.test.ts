// An HTTP/2 client connection with no stream open for timeouts.client_keep_alive gets GOAWAY
// NO_ERROR and is closed, whatever timeouts.body_idle is (with body_idle 0 it stayed open for
// ever), as nginx closes one at keepalive_timeout; a stream open keeps it (its own bounds
// apply), the bound starts again once the last stream ends, and PINGs alone do not keep it
// open. Over TLS (ALPN h2) and h2c, with Node's http2 client. No timing is asserted: a second
// connection that went idle after the slow stream opened is the clock.
import t, { type Test } from 'tap'
import type http from 'node:http'
import http2 from 'node:http2'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { ask, goaways } from './fixtures/connection-bounds.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { once, within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

const TLS = { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null } as const
/** timeouts.client_keep_alive here: short, so that a quiet connection closes within the test. */
const KEEP_ALIVE = 300
/** How long a test waits for a close it expects (a deadline, many keep-alive bounds). */
const DEADLINE = 10_000

/** Tether (TLS h2, or h2c) with body_idle 0 (or `bodyIdle`) over an upstream answering `/slow` when `release` is called, anything else at once. */
async function idleTether(t: Test, tls: boolean, bodyIdle = 0): Promise<{ tether: Tether; release: () => void; slowArrived: Promise<void> }> {
  let held: http.ServerResponse | null = null
  let arrived: () => void = () => undefined
  const slowArrived = new Promise<void>((resolve) => { arrived = resolve })
  const up = await startUpstream('app-0', (req, res) => {
    if (req.url !== '/slow') return void res.end('ok')
    held = res
    res.writeHead(200)
    res.write('first')
    arrived()
  })
  const listen = tls ? { tls: TLS } : { http2: { cleartext: true } }
  const tether = await startTether(testConfig([up], { listen, timeouts: { body_idle: bodyIdle, client_keep_alive: KEEP_ALIVE } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  return { tether, release: () => held?.end('last'), slowArrived }
}

function connect(t: Test, tether: Tether, tls: boolean): http2.ClientHttp2Session {
  const s = tls ? http2.connect(tether.url, { ca: certs.ca, servername: 'localhost' }) : http2.connect(tether.url)
  s.on('error', () => undefined)
  t.teardown(() => s.destroy())
  return s
}

/** Resolves once `s` closed (rejects past DEADLINE naming `what`). */
const closed = (s: http2.ClientHttp2Session, what: string): Promise<unknown> => s.closed ? Promise.resolve() : once(s, 'close', DEADLINE, what)

/** Whether `got` holds GOAWAYs, each NO_ERROR naming `last` (Node's graceful close may send a second, the same). */
const noError = (got: [number, number][], last: number): boolean => got.length >= 1 && got.every(([code, id]) => code === http2.constants.NGHTTP2_NO_ERROR && id === last)

for (const tls of [true, false]) {
  const kind = tls ? 'TLS' : 'h2c'

  t.test(`${kind}, body_idle 0: a connection with no stream open for client_keep_alive gets GOAWAY NO_ERROR and closes`, async (t) => {
    const { tether } = await idleTether(t, tls)
    const s = connect(t, tether, tls)
    const got = goaways(s)
    t.equal((await ask(s, '/a')).status, 200)
    await closed(s, 'the idle connection closed')
    t.ok(noError(got, 1), `GOAWAY NO_ERROR naming the stream served (got ${JSON.stringify(got)})`)
  })

  t.test(`${kind}, body_idle 60s (Node's session timer at 61 s): closed at client_keep_alive all the same`, async (t) => {
    const { tether } = await idleTether(t, tls, 60_000)
    const s = connect(t, tether, tls)
    const got = goaways(s)
    t.equal((await ask(s, '/a')).status, 200)
    await closed(s, 'the idle connection closed')
    t.ok(noError(got, 1), `GOAWAY NO_ERROR naming the stream served (got ${JSON.stringify(got)})`)
  })

  t.test(`${kind}: PINGs alone do not keep an idle connection open`, async (t) => {
    const { tether } = await idleTether(t, tls)
    const s = connect(t, tether, tls)
    const got = goaways(s)
    t.equal((await ask(s, '/a')).status, 200)
    let pings = 0
    const ping = (): void => { if (!s.closed && !s.destroyed) s.ping(() => { pings++ }) }
    const every = setInterval(ping, KEEP_ALIVE / 6)
    t.teardown(() => clearInterval(every))
    await closed(s, 'the connection closed though PINGs kept coming')
    clearInterval(every)
    t.ok(pings >= 1, `Tether answered the PINGs (${pings}) meanwhile`)
    t.ok(noError(got, 1), `GOAWAY NO_ERROR naming the stream served (got ${JSON.stringify(got)})`)
  })

  t.test(`${kind}: a stream open keeps the connection; the bound starts again once it ends`, async (t) => {
    const { tether, release, slowArrived } = await idleTether(t, tls)
    const busy = connect(t, tether, tls)
    const got = goaways(busy)
    const slow = ask(busy, '/slow')
    await within(slowArrived, DEADLINE, 'the slow request reached the upstream')
    // the clock: a connection that goes idle after the slow stream opened, closed by the bound
    const other = connect(t, tether, tls)
    t.equal((await ask(other, '/a')).status, 200)
    await closed(other, 'the other, idle, connection closed')
    t.notOk(busy.closed || busy.destroyed, 'the connection with a stream open is still open')
    t.same(got, [], 'and got no GOAWAY')
    release()
    t.same(await slow, { status: 200, body: 'firstlast', error: null }, 'the slow answer came whole')
    // the bound starts at the stream's end, not at the old idle start: the next request is served
    t.equal((await ask(busy, '/b')).status, 200, 'a request right after is served on the same connection')
    await closed(busy, 'the connection closed once idle again')
    t.ok(noError(got, 3), `GOAWAY NO_ERROR naming the last stream served (got ${JSON.stringify(got)})`)
  })
}
