// Hostile upstreams: raw answers that are malformed (CL+TE, two lengths, bad status lines, bare
// CR, obs-fold, NUL, huge heads), cut short, late (never, endless 1xx), unsolicited (100
// Continue, a second answer, bytes past the length) or switching protocols unasked; and a
// WebSocket server that speaks first. Each case checks what the client got AND what the
// upstreams received (a malformed answer is one attempt: never replayed on another upstream).
import t from 'tap'
import { ERRORS } from '../src/errors.js'
import { UPSTREAM } from './fixtures/raw-cases.js'
import { startHarness, todo } from './fixtures/raw-tether.js'
import { exchange, rawConnect } from './fixtures/raw-client.js'
import type { RawScript, RawUpstreamConnection } from './fixtures/raw-upstream.js'
import { onEvent, when } from './fixtures/wait.js'
import { headerValues } from './fixtures/raw-http.js'

for (const c of UPSTREAM) {
  const w = c.want
  const title =
    w.kind === 'error' ? `${c.name}: ${w.status} ${w.body.trim().replace(/:.*/, '')}, ${w.attempts === 1 ? 'one attempt, not retried' : `${w.attempts} attempts`}`
    : w.kind === 'answer' ? `${c.name}: the client gets the final ${w.status}`
    : `${c.name}: the client gets the head, then its connection is cut`
  t.test(title, todo(c.todo), async (t) => {
    // three upstreams behaving alike, round robin: a replay would show as a second request
    const h = await startHarness({ affinity: { key: 'none' }, timeouts: { response_headers: 500 } }, c.script, 3)
    t.teardown(() => h.close())
    const r = await exchange(h.port, 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1, ms: 3000 })
    const got = h.received()
    const health = h.tether.health.snapshot()
    t.same(h.violations(), [], 'every upstream received well-framed requests')
    if (w.kind === 'cut') {
      t.equal(r.finals.length, 0, 'no complete answer')
      t.match(r.bytes.toString('latin1'), /^HTTP\/1\.1 200 /, 'the head went out')
      t.ok(r.ended, 'then the connection was closed')
      t.equal(got.length, 1, 'one attempt')
      return
    }
    t.equal(r.first, String(w.status))
    t.equal(r.finals[0]?.body.toString(), w.body)
    if (w.kind === 'answer') {
      t.equal(got.length, 1, 'one request upstream')
      return
    }
    t.equal(got.length, w.attempts, w.attempts === 1 ? 'one attempt: not replayed on another upstream' : `${w.attempts} attempts`)
    if (w.attempts === 1) {
      const first = health.find((s) => s.passiveFailures > 0 || s.state !== 'healthy')
      t.ok(first !== undefined, 'the failure counts for passive health')
    }
    t.same(h.unhandled(), [])
  })
}

for (const version of ['HTTP/2.0', 'HTTP/0.9']) {
  t.test(`an ${version} status line on the HTTP/1.1 connection: 502, and the warning names ${version}`, async (t) => {
    const h = await startHarness({ retries: { attempts: 0 } }, (_q, c) => c.write(`${version} 200 OK\r\nContent-Length: 2\r\n\r\nok`))
    t.teardown(() => h.close())
    const r = await exchange(h.port, 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1, ms: 3000 })
    t.equal(r.first, '502')
    const warned = h.logs.records.find((x) => x['msg'] === 'upstream exchange failed')
    t.match(JSON.stringify(warned?.['err'] ?? null), `the upstream's status line says ${version}`)
  })
}

// RFC 9110 section 15: a status code is three digits, 100-599; others are invalid. nginx 1.22
// and HAProxy 2.6 pass a 999 on; Tether answers 502 (a client is told the upstream's answer was
// unusable, not sent a status it cannot interpret), and its warning names the status (below
// 100 it was undici's failed assertion, above 599 no reason at all, until 2026-12-05)
for (const status of ['999', '600', '099', '000']) {
  t.test(`status ${status} from the upstream: 502, and the warning names the status`, async (t) => {
    const h = await startHarness({ retries: { attempts: 0 } }, (_q, c) => c.write(`HTTP/1.1 ${status} Whatever\r\nContent-Length: 2\r\n\r\nok`))
    t.teardown(() => h.close())
    const r = await exchange(h.port, 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1, ms: 3000 })
    t.equal(r.first, '502')
    t.equal(r.finals[0]?.body.toString(), `${ERRORS.TETHER_UPSTREAM_PROTOCOL.message}\n`)
    const warned = h.logs.records.find((x) => x['msg'] === 'upstream exchange failed')
    t.match(JSON.stringify(warned?.['err'] ?? null), `the upstream answered status ${Number(status)}, outside 100-599`)
    t.match(h.logs.access().find((l) => l['path'] === '/x'), { status: 502, outcome: 'TETHER_UPSTREAM_PROTOCOL' })
    t.same(h.unhandled(), [])
  })
}

// undici's llhttp refuses a repeated Content-Length in the head, identical values included
// (RFC 9110 section 8.6 allows that; nginx 1.22 and HAProxy 2.6 fold identical ones), before
// Tether sees the head, and undici reports it as a body length mismatch: the 502 stands, and
// the warning says what it was
for (const [name, lengths] of [['Content-Length: 2 twice', 'Content-Length: 2\r\nContent-Length: 2'], ['Content-Length: 2, 2', 'Content-Length: 2, 2'], ['Content-Length: 2 then 3', 'Content-Length: 2\r\nContent-Length: 3']]) {
  t.test(`an answer with ${name}: 502, and the warning names its Content-Length field`, async (t) => {
    const h = await startHarness({ retries: { attempts: 0 } }, (_q, c) => c.write(`HTTP/1.1 200 OK\r\n${lengths}\r\n\r\nok`))
    t.teardown(() => h.close())
    const r = await exchange(h.port, 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1, ms: 3000 })
    t.equal(r.first, '502')
    const warned = h.logs.records.find((x) => x['msg'] === 'upstream exchange failed')
    t.match(JSON.stringify(warned?.['err'] ?? null), "refused the answer's head at or after its Content-Length field")
  })
}

// RFC 9112 section 8: an answer delimited by the close is complete when the connection closes,
// not when an error ends it. undici ends it on a reset too (ECONNRESET taken as the end "so
// far"), and Tether re-framed it chunked to an HTTP/1.1 client with a last chunk: a truncated
// answer that looked whole, until 2026-12-06. nginx 1.22 cuts it (HAProxy passes the answer
// close-delimited, its FIN no signal). The FIN case stays whole (test/fixtures/raw-cases.ts).
t.test('an HTTP/1.0 answer delimited by the close whose connection is reset: the client gets its head and what came, then a cut, no last chunk', async (t) => {
  let upstream: RawUpstreamConnection | null = null
  const h = await startHarness({ retries: { attempts: 0 } }, (_q, c) => {
    upstream = c
    c.write('HTTP/1.0 200 OK\r\n\r\nhello')
  })
  t.teardown(() => h.close())
  const conn = await rawConnect(h.port)
  t.teardown(() => conn.destroy())
  conn.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\n')
  t.ok(await conn.until(() => conn.bytes.includes('5\r\nhello\r\n'), 3000), 'the head and the first bytes reached the client')
  upstream!.socket.resetAndDestroy()
  t.ok(await conn.waitEnd(3000), 'then the connection was closed')
  t.equal(conn.finals().length, 0, 'no complete answer')
  t.notMatch(conn.bytes.toString('latin1'), /\r\n0\r\n\r\n$/, 'no last chunk')
  await when(onEvent(h.logs, 'record'), () => h.logs.access().some((l) => l['path'] === '/x'), 3000, 'the access line')
  t.match(h.logs.access().find((l) => l['path'] === '/x'), { status: 200, outcome: 'TETHER_UPSTREAM_RESET' })
  t.same(h.unhandled(), [])
})

// An answer to an HTTP/1.0 client has no chunks: without a Content-Length it ends with the
// connection, and a FIN after a cut would make the truncated answer look whole (nginx 1.22 does
// so). Tether resets the connection instead (RFC 9112 section 8: an error of the connection
// leaves it incomplete), from 2026-12-06; an answer with a length, or chunked, is closed
t.test('an answer to an HTTP/1.0 client, delimited by the close, that the upstream breaks off mid-chunk: the connection is reset, not closed as if whole', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 } }, (_q, c) => c.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab'))
  t.teardown(() => h.close())
  const r = await exchange(h.port, 'GET /x HTTP/1.0\r\nHost: a\r\n\r\n', { ms: 3000 })
  t.ok(r.ended, 'the connection ended')
  t.ok(r.reset, 'by a reset')
  await when(onEvent(h.logs, 'record'), () => h.logs.access().some((l) => l['path'] === '/x'), 3000, 'the access line')
  t.match(h.logs.access().find((l) => l['path'] === '/x'), { status: 200, outcome: 'TETHER_UPSTREAM_RESET' })
  // the same answer to an HTTP/1.1 client is chunked: a close before its last chunk tells the cut
  const chunked = await exchange(h.port, 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n', { ms: 3000 })
  t.ok(chunked.ended && !chunked.reset, 'an HTTP/1.1 client: closed, not reset')
  t.equal(chunked.finals.length, 0, 'no complete answer')
})

t.test('an endless stream of 102 Processing still ends in 504 once timeouts.response_headers has passed', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 }, timeouts: { response_headers: 500 } }, (_q, c) => {
    const timer = setInterval(() => { if (c.socket.destroyed) clearInterval(timer); else c.write('HTTP/1.1 102 Processing\r\n\r\n') }, 50)
  })
  t.teardown(async () => { for (const c of h.up.connections) c.destroy(); await h.close() })
  const t0 = Date.now()
  const r = await exchange(h.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1, ms: 2500 })
  t.equal(r.first, '504', `answered ${r.first} after ${Date.now() - t0} ms`)
  t.ok(Date.now() - t0 < 500 + 1000, 'within response_headers + 1 s')
})

/** Answer with the request target as the body, so a stale answer shows. */
const echo = (target: string): string => `HTTP/1.1 200 OK\r\nContent-Length: ${target.length}\r\n\r\n${target}`

const STALE: readonly [string, RawScript][] = [
  ['a second, unsolicited answer after the first', (q, c, n) => c.write(n === 0 ? echo(q.target) + echo('/unsolicited') : echo(q.target))],
  ['bytes past the Content-Length of the first answer', (q, c, n) => c.write(n === 0 ? `${echo(q.target)}HTTP/1.1 200 OK\r\n` : echo(q.target))],
  ['a body on a 204', (q, c, n) => c.write(n === 0 ? 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello' : echo(q.target))],
  ['a body on a 304', (q, c, n) => c.write(n === 0 ? 'HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello' : echo(q.target))],
]
for (const [name, script] of STALE) {
  t.test(`${name}: nothing of it reaches a later request, each gets its own answer`, async (t) => {
    const h = await startHarness({ retries: { attempts: 0 } }, script)
    t.teardown(() => h.close())
    const conn = await rawConnect(h.port)
    t.teardown(() => conn.destroy())
    conn.write('GET /first HTTP/1.1\r\nHost: a\r\n\r\n')
    await conn.waitFinals(1, 3000)
    conn.write('GET /second HTTP/1.1\r\nHost: a\r\n\r\n')
    await conn.waitFinals(2, 3000)
    const third = await exchange(h.port, 'GET /third HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1 })
    const finals = conn.finals()
    t.equal(finals.length, 2, 'two answers on the first connection')
    t.equal(finals[1]?.body.toString(), '/second', "the second request's own answer")
    t.equal(third.finals[0]?.body.toString(), '/third', "a new connection's request gets its own answer")
    t.same(h.received().map((q) => q.target), ['/first', '/second', '/third'])
    t.same(h.violations(), [])
    // a 204 has no Content-Length (RFC 9110 section 8.6), whatever the upstream said
    if (name === 'a body on a 204') t.same(headerValues(finals[0]!, 'content-length'), [], "the 204's Content-Length is dropped")
  })
}

t.test('a WebSocket server that speaks first: its first frame, sent with the 101, reaches the client on every one of 20 connections', async (t) => {
  const frame = Buffer.from([0x81, 0x05, ...Buffer.from('hello')])
  const h = await startHarness({}, (_q, c) => c.write(Buffer.concat([
    Buffer.from('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n'),
    frame,
  ])))
  t.teardown(() => h.close())
  let received = 0
  for (let i = 0; i < 20; i++) {
    const conn = await rawConnect(h.port)
    conn.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
    const arrived = await conn.until(() => conn.bytes.includes(frame), 1000)
    const status = conn.finals()[0]?.status
    conn.destroy()
    if (!arrived) {
      t.fail(`connection ${i + 1}: the frame was lost (${status === 101 ? 'after a 101' : `no 101: ${String(status)}`})`)
      break // one loss is the answer; the rest would only cost a deadline each
    }
    received++
  }
  t.equal(received, 20, `the first frame arrived on ${received} connections in a row`)
})

t.test('a WebSocket server whose first frame comes after the 101 has reached the client: it reaches the client too', async (t) => {
  const frame = Buffer.from([0x81, 0x05, ...Buffer.from('hello')])
  const h = await startHarness({}, (_q, c) => c.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n'))
  t.teardown(() => h.close())
  const conn = await rawConnect(h.port)
  t.teardown(() => conn.destroy())
  conn.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  t.ok(await conn.until(() => conn.finals()[0]?.status === 101, 3000), 'the 101 arrived')
  h.up.connections.find((c) => c.tunnel)!.write(frame)
  t.ok(await conn.until(() => conn.bytes.includes(frame), 3000), 'then the frame')
})

/**
 * The upstream ends a kept-alive connection (its idle timeout) just as Tether sends the next
 * request on it: nothing of an answer comes back. The request may not have been read; a GET
 * without a body is sent again once, to the same upstream on a new connection (as Go's and
 * browsers' clients do), not failed (one upstream) nor moved to another (its user's session);
 * a POST may have run, so it is not (RFC 9112 section 9.3.1).
 */
for (const how of ['end', 'destroy'] as const) {
  t.test(`an upstream that ${how === 'end' ? 'closes' : 'resets'} a kept-alive connection as Tether reuses it: a GET is sent again on a new connection to the same upstream, a POST is not`, async (t) => {
    let closeNext = false
    const script = (id: string): RawScript => (q, c) => {
      if (closeNext && c.requests.length >= 2) {
        closeNext = false
        return how === 'end' ? c.end() : c.destroy()
      }
      c.write(echo(`${id}${q.target}`))
    }
    const h = await startHarness({ affinity: { key: 'cookie' } }, script('?'), 2)
    h.ups[0]!.setScript(script('A'))
    h.ups[1]!.setScript(script('B'))
    t.teardown(() => h.close())
    const conn = await rawConnect(h.port)
    t.teardown(() => conn.destroy())
    conn.write('GET /first HTTP/1.1\r\nHost: a\r\n\r\n')
    const [first] = await conn.waitFinals(1, 3000)
    const cookie = headerValues(first!, 'set-cookie')[0]!.split(';')[0]!
    const home = first!.body.toString()[0]!
    const send = async (line: string, n: number): Promise<void> => {
      closeNext = true
      conn.write(`${line} HTTP/1.1\r\nHost: a\r\nCookie: ${cookie}\r\n${line.startsWith('POST') ? 'Content-Length: 2\r\n\r\nhi' : '\r\n'}`)
      await conn.waitFinals(n, 3000)
    }
    await send('GET /again', 2)
    const again = conn.finals()[1]!
    t.equal(again.status, 200)
    t.equal(again.body.toString(), `${home}/again`, "the user's own upstream answered")
    t.same(headerValues(again, 'set-cookie'), [], 'the user was not moved')
    t.same(h.tether.health.snapshot().map((u) => u.passiveFailures), [0, 0], 'no health failure for the GET sent again')
    // a request that opens the connection the POST then reuses (the pool's first free one)
    conn.write(`GET /warm HTTP/1.1\r\nHost: a\r\nCookie: ${cookie}\r\n\r\n`)
    await conn.waitFinals(3, 3000)
    await send('POST /form', 4)
    const form = conn.finals()[3]!
    t.equal(form.status, 502, 'a POST the upstream may have run is not sent again')
    t.equal(h.received().filter((q) => q.target === '/form').length, 1, 'the POST reached an upstream once')
    const other = home === 'A' ? 'B' : 'A'
    t.same(h.received().filter((q) => q.target === '/again').length, 2, 'the GET: twice, both to its own upstream')
    t.same(h.ups[other === 'A' ? 0 : 1]!.requests.map((q) => q.target), [], 'the other upstream saw nothing')
    t.same(h.violations(), [])
  })
}
