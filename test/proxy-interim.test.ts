// 1xx informational answers an upstream sends before its final one (RFC 9110 section 15.2: a
// proxy forwards them, never to an HTTP/1.0 client): 103 Early Hints and 102 Processing reach
// HTTP/1.1 and h2 clients with their fields filtered as a final answer's are; an unsolicited
// 100 does not pass; a bounded number per request; the final answer alone counts (access line,
// timeouts, retries). Raw recording upstreams, raw client sockets and node:http2.
import t from 'tap'
import http2 from 'node:http2'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { hashKey } from '../src/placement/hash.js'
import { startHarness } from './fixtures/raw-tether.js'
import { exchange, rawConnect } from './fixtures/raw-client.js'
import { ok, startRawUpstream, type RawScript, type RawUpstreamConnection } from './fixtures/raw-upstream.js'
import { HEDGE_AFTER, HedgeTimers } from './fixtures/hedge-timers.js'
import { testConfig } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { interimHead, MAX_INTERIM_ANSWERS } from '../src/proxy/interim-response.js'

const HINTS = 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload; as=style, </b.js>; rel=preload\r\nLink: </c.css>; rel="preload"; title="c c"\r\n\r\n'
const raw = (bytes: string): RawScript => (_q, c) => c.write(bytes)
const GET = 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n'

t.test('interimHead writes the 1xx head: each value on its own line, the registered reason when the upstream\'s is unreadable, bad fields left out', async (t) => {
  const cases: [number, string | undefined, Record<string, string | string[] | undefined>, string][] = [
    [103, 'Early Hints', { link: '</a.css>; rel=preload' }, 'HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n'],
    [103, undefined, { link: ['</a>; rel=preload', '</b>; rel=preload'] }, 'HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\nlink: </b>; rel=preload\r\n\r\n'],
    [102, 'bad\r\nreason', {}, 'HTTP/1.1 102 Processing\r\n\r\n'],
    [104, '', { 'x-a': 'ok', 'x b': 'name no token', 'x-c': 'a\nb', 'x-d': undefined }, 'HTTP/1.1 104 \r\nx-a: ok\r\n\r\n'],
  ]
  for (const [status, reason, fields, want] of cases) t.equal(interimHead(status, reason, fields), want, JSON.stringify([status, reason, fields]))
})

t.test('an HTTP/1.1 client gets the upstream\'s 103 Early Hints with its Link fields, then the 200', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 } }, raw(`${HINTS}${ok('ok')}`))
  t.teardown(() => h.close())
  const r = await exchange(h.port, GET, { responses: 1, ms: 3000 })
  const text = r.bytes.toString('latin1')
  t.equal(text.slice(0, text.indexOf('\r\n\r\n') + 4),
    'HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload; as=style, </b.js>; rel=preload\r\nlink: </c.css>; rel="preload"; title="c c"\r\n\r\n',
    'the 103 head first, each Link line as the upstream sent it')
  t.same(r.responses.map((x) => x.status), [103, 200])
  t.equal(r.finals[0]?.body.toString(), 'ok')
  await waitFor(() => h.logs.access().length > 0, 2000, 'the access line')
  t.match(h.logs.access()[0], { status: 200 }, 'the access line has the final status')
  t.same(h.unhandled(), [])
})

t.test('a 102 Processing reaches an HTTP/1.1 client before the final answer; an unsolicited 100 does not', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 } }, raw(`HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n${ok('ok')}`))
  t.teardown(() => h.close())
  const r = await exchange(h.port, GET, { responses: 1, ms: 3000 })
  t.match(r.bytes.toString('latin1'), /^HTTP\/1\.1 102 Processing\r\n\r\nHTTP\/1\.1 200 OK\r\n/)
  t.same(r.responses.map((x) => x.status), [102, 200])
})

t.test('a forwarded 1xx carries no hop-by-hop field, none named in Connection, none of Tether\'s, no Set-Cookie', async (t) => {
  const head = 'HTTP/1.1 103 Early Hints\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n' +
    'X-Tether-State: e30\r\nX-Tether-Upstream: evil\r\nX_Tether_Epoch: 9\r\nSet-Cookie: tether=evil\r\nLink: </a.css>; rel=preload\r\nX-Kept: yes\r\n\r\n'
  const h = await startHarness({ retries: { attempts: 0 } }, raw(`${head}${ok('ok')}`))
  t.teardown(() => h.close())
  const r = await exchange(h.port, GET, { responses: 1, ms: 3000 })
  const text = r.bytes.toString('latin1')
  t.equal(text.slice(0, text.indexOf('\r\n\r\n') + 4), 'HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\nx-kept: yes\r\n\r\n')
  t.same(r.responses.map((x) => x.status), [103, 200])
})

t.test('an HTTP/1.0 client gets no 1xx, only the final answer', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 } }, raw(`${HINTS}HTTP/1.1 102 Processing\r\n\r\n${ok('ok')}`))
  t.teardown(() => h.close())
  const r = await exchange(h.port, 'GET /x HTTP/1.0\r\nHost: a\r\n\r\n', { responses: 1, ms: 3000 })
  t.match(r.bytes.toString('latin1'), /^HTTP\/1\.1 200 OK\r\n/)
  t.same(r.responses.map((x) => x.status), [200])
})

t.test('an h2 client gets the 103 as an informational HEADERS frame, filtered, then the 200', async (t) => {
  const head = 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Tether-State: e30\r\n\r\n'
  const h = await startHarness({ retries: { attempts: 0 }, listen: { http2: { cleartext: true } } }, raw(`${head}${ok('ok')}`))
  t.teardown(() => h.close())
  const s = http2.connect(`http://127.0.0.1:${h.port}`)
  t.teardown(() => s.destroy())
  const req = s.request({ ':path': '/x' })
  const interim: http2.IncomingHttpHeaders[] = []
  req.on('headers', (hd) => interim.push(hd))
  const final = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => { req.on('response', resolve); req.on('error', reject) })
  let body = ''
  req.setEncoding('utf8')
  req.on('data', (d: string) => { body += d })
  await new Promise((r) => req.on('end', r))
  t.equal(interim.length, 1, 'one informational head')
  t.equal(interim[0]?.[':status'], 103)
  t.equal(interim[0]?.['link'], '</a.css>; rel=preload')
  t.same(Object.keys(interim[0] ?? {}).filter((k) => k !== 'date').sort(), [':status', 'link'], 'no hop-by-hop field, no state header')
  t.equal(final[':status'], 200)
  t.equal(body, 'ok')
})

t.test(`an upstream sending 1xx without end still ends in 504 at timeouts.response_headers; at most ${MAX_INTERIM_ANSWERS} 1xx reach the client`, async (t) => {
  const h = await startHarness({ retries: { attempts: 0 }, timeouts: { response_headers: 500 } }, (_q, c) => {
    const timer = setInterval(() => { if (c.socket.destroyed) clearInterval(timer); else c.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n') }, 20)
  })
  t.teardown(async () => { for (const c of h.up.connections) c.destroy(); await h.close() })
  const r = await exchange(h.port, GET, { responses: 1, ms: 3000 })
  t.equal(r.first, '504')
  const interim = r.responses.filter((x) => x.status < 200)
  t.ok(interim.length >= 1 && interim.length <= MAX_INTERIM_ANSWERS, `${interim.length} 1xx forwarded`)
  t.ok(interim.every((x) => x.status === 103))
  await waitFor(() => h.logs.access().length > 0, 2000, 'the access line')
  t.match(h.logs.access()[0], { status: 504 })
})

t.test('a 103 from an attempt that then fails does not stop the retry: the client gets the hints, then the next upstream\'s 200', async (t) => {
  const h = await startHarness({ affinity: { key: 'none' }, health: { passive: { enabled: false } } }, (_q, c) => { c.socket.write(HINTS, () => c.socket.destroy()) }, 2)
  t.teardown(() => h.close())
  h.ups[1]!.setScript(raw(ok('from app-1')))
  // round robin: send until app-0 took one
  let r = await exchange(h.port, GET, { responses: 1, ms: 3000 })
  if (h.ups[0]!.requests.length === 0) r = await exchange(h.port, GET, { responses: 1, ms: 3000 })
  t.equal(h.ups[0]!.requests.length, 1, 'app-0 took one request')
  t.same(r.responses.map((x) => x.status), [103, 200])
  t.equal(r.finals[0]?.body.toString(), 'from app-1')
})

t.test('a 103 from the home does not stop its hedge: the hedge answers first, the client gets the 103 then the hedge\'s 200', async (t) => {
  const held: RawUpstreamConnection[] = []
  const ups = [await startRawUpstream('a', (q, c) => { if (q.target === '/x') held.push(c); else c.write(ok('a')) }), await startRawUpstream('b', (_q, c) => c.write(ok('from b')))]
  const timers = new HedgeTimers()
  const px = await startTether(testConfig(ups.map((u) => ({ id: u.id, url: u.url })), {
    affinity: { key: 'header', header: { name: 'x-user' } },
    retries: { attempts: 1, hedge_after: HEDGE_AFTER },
    health: { active: { enabled: false } },
  }), { logger: createLogger('silent'), timers })
  t.teardown(async () => {
    for (const c of held) c.destroy()
    await px.close(0)
    await Promise.all(ups.map((u) => u.close()))
  })
  let user = ''
  for (let i = 0; user === ''; i++) if (px.router.placement.ids[px.router.placement.pick(hashKey(`u${i}`))] === 'a') user = `u${i}`
  const conn = await rawConnect(px.port)
  t.teardown(() => conn.destroy())
  conn.write(`GET /x HTTP/1.1\r\nHost: a\r\nX-User: ${user}\r\n\r\n`)
  await waitFor(() => held.length === 1, 10_000, 'a holding the request')
  held[0]!.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n')
  t.ok(await conn.until(() => conn.responses().length === 1, 5000), 'the home\'s 103 reached the client')
  await timers.hedge()
  const finals = await conn.waitFinals(1, 5000)
  t.same(conn.responses().map((x) => x.status), [103, 200])
  t.equal(finals[0]?.body.toString(), 'from b', "the hedge's answer: the 103 committed the request to nothing")
})

t.test("a 1xx with Connection: close is forwarded, then the final answer; the upstream connection is retired after it", async (t) => {
  // llhttp took the 1xx's close as the connection's end and undici failed the final answer
  // ("Data after `Connection: close`"): a 502 for a request the upstream ran, until 2026-12-05.
  // A 1xx is not the response its close is about (RFC 9112 section 9.6; RFC 9110 section
  // 15.2: a proxy forwards it and waits for the final one); HAProxy 2.6 forwards both
  let held: RawUpstreamConnection | null = null
  const h = await startHarness({ retries: { attempts: 0 } }, (q, c) => {
    if (q.target === '/same-read') return c.write(`HTTP/1.1 103 Early Hints\r\nConnection: close\r\nLink: </a.css>; rel=preload\r\n\r\n${ok('one')}`)
    if (q.target === '/later') { held = c; return c.write('HTTP/1.1 102 Processing\r\nConnection: keep-alive, Close\r\n\r\n') }
    c.write(ok('next'))
  })
  t.teardown(() => h.close())
  const conn = await rawConnect(h.port)
  t.teardown(() => conn.destroy())
  conn.write('GET /same-read HTTP/1.1\r\nHost: a\r\n\r\n')
  await conn.waitFinals(1, 3000)
  t.same(conn.responses().map((r) => `${r.status} ${r.body.toString()}`), ['103 ', '200 one'], 'the 103, then the final answer, in one read')
  t.notMatch(conn.bytes.toString('latin1'), /\r\nconnection: close/i, "the 1xx's Connection is not passed on")
  // the final answer's bytes in a later read than the 1xx's
  conn.write('GET /later HTTP/1.1\r\nHost: a\r\n\r\n')
  await conn.until(() => conn.responses().length >= 3, 3000)
  t.equal(conn.responses()[2]?.status, 102, 'the 102 is forwarded')
  held!.write(ok('two'))
  await conn.waitFinals(2, 3000)
  t.equal(conn.finals()[1]?.body.toString(), 'two', 'the final answer read later follows')
  conn.write('GET /next HTTP/1.1\r\nHost: a\r\n\r\n')
  await conn.waitFinals(3, 3000)
  t.same(conn.finals().map((r) => r.status), [200, 200, 200], 'no 502; the client connection goes on')
  t.same(h.up.connections.map((c) => c.requests.map((q) => q.target)), [['/same-read'], ['/later'], ['/next']], 'each request after a 1xx close on a new upstream connection')
  await waitFor(() => h.up.connections.slice(0, 2).every((c) => c.closed), 2000, 'the told connections are closed')
  t.same(h.unhandled(), [])
})

for (const [name, interim] of [
  ['Proxy-Connection: close', 'HTTP/1.1 103 Early Hints\r\nProxy-Connection: close\r\nLink: </a.css>; rel=preload\r\n\r\n'],
  ['an HTTP/1.0 status line (no keep-alive)', 'HTTP/1.0 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n'],
] as const) {
  t.test(`a 103 that llhttp reads as the connection's end without Connection: close (${name}): forwarded, then the final answer; the connection retired`, async (t) => {
    // the fix above first looked at the Connection field only: these were still a 502 (review
    // R2, 2026-12-05); it now goes by llhttp's own keep-alive verdict. HAProxy 2.6: 103 then 200
    const h = await startHarness({ retries: { attempts: 0 } }, (q, c) => c.write(q.target === '/x' ? `${interim}${ok('one')}` : ok('next')))
    t.teardown(() => h.close())
    const conn = await rawConnect(h.port)
    t.teardown(() => conn.destroy())
    conn.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\n')
    await conn.waitFinals(1, 3000)
    t.same(conn.responses().map((r) => `${r.status} ${r.body.toString()}`), ['103 ', '200 one'], 'the 103, then the final answer')
    conn.write('GET /next HTTP/1.1\r\nHost: a\r\n\r\n')
    await conn.waitFinals(2, 3000)
    t.same(h.up.connections.map((c) => c.requests.map((q) => q.target)), [['/x'], ['/next']], 'the next request on a new upstream connection')
    await waitFor(() => h.up.connections[0]!.closed, 2000, 'the told connection is closed')
    t.same(h.unhandled(), [])
  })
}
