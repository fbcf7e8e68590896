// An HTTP/1.1 request without Host gets Tether's own 400 (RFC 9112 section 3.2: a server MUST
// answer it so; nginx 1.22 answers 400 too, HAProxy 2.6 passes it on), TETHER_BAD_REQUEST with its short
// body, logged and counted as Tether's other refusals, in its turn behind a pipelined request
// and for a WebSocket handshake too; until 2026-12-05 it was Node's own bare 400
// (`requireHostHeader`), in no access line and no metric. HTTP/1.0 has no Host: still served.
// (Over h2, a stream with neither :authority nor host is reset by nghttp2 before Tether sees
// it: test/h2-malformed.test.ts.)
// An empty Host (or one of only spaces and tabs) is refused the same way, on HTTP/1.0 too and
// with an absolute-form target: an http URI with an empty host is invalid and a recipient must
// reject it (RFC 9110 section 4.2.1; RFC 9112 section 3.2: 400 for a Host with an invalid
// value); nginx 1.22 answers all of these 400 ("client sent invalid host header"), HAProxy 2.6
// passes them on. Until 2026-12-05 Tether forwarded them with an empty Host. Over h2 nghttp2
// resets a stream whose :authority (or host) is empty, as one with neither.
import t, { type Test } from 'tap'
import http2 from 'node:http2'
import { ERRORS } from '../src/errors.js'
import { exchange } from './fixtures/raw-client.js'
import { header } from './fixtures/raw-http.js'
import { startHarness, type Harness } from './fixtures/raw-tether.js'
import { request } from './fixtures/upstream.js'

let h: Harness
t.before(async () => { h = await startHarness({ listen: { http2: { cleartext: true } } }) })
t.teardown(() => h.close())

const BODY = `${ERRORS.TETHER_BAD_REQUEST.message}\n`

/** The 4xx answers the proxy's request counter holds, over every series. */
async function counted4xx(): Promise<number> {
  const text = (await request(`${h.tether.adminUrl}/metrics`)).body
  let n = 0
  for (const m of text.matchAll(/^tether_http_requests_total\{[^}]*status_class="4xx"[^}]*\} (\d+)$/gm)) n += Number(m[1])
  return n
}

t.test("an HTTP/1.1 request without Host is answered Tether's 400, logged and counted, and nothing reaches the upstream", async (t) => {
  const before = { received: h.received().length, access: h.logs.access().length, counted: await counted4xx() }
  const r = await exchange(h.port, 'GET /no-host HTTP/1.1\r\n\r\n') // until the close (deadline 3 s)
  t.equal(r.first, '400')
  const answer = r.finals[0]!
  t.equal(answer.body.toString('latin1'), BODY, "Tether's short body, as for its other 400s")
  t.equal(header(answer, 'cache-control'), 'no-store')
  t.ok(r.ended, 'the connection is closed')
  await h.barrier()
  t.equal(h.received().length, before.received, 'nothing reached the upstream')
  const line = h.logs.access().slice(before.access).find((l) => l['path'] === '/no-host')
  t.match(line, { status: 400, outcome: 'TETHER_BAD_REQUEST', method: 'GET', upstream: null }, 'an access line names the refusal')
  t.equal(await counted4xx(), before.counted + 1, 'counted as a 4xx answer')
})

t.test('a request without Host pipelined behind a good one is answered 400 in its turn, after the first answer', async (t) => {
  const before = h.received().length
  const r = await exchange(h.port, 'GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\n\r\n')
  t.same(r.finals.map((f) => f.status), [200, 400])
  t.equal(r.finals[1]!.body.toString('latin1'), BODY)
  t.ok(r.ended, 'then the connection closes')
  await h.barrier()
  t.same(h.received().slice(before).map((q) => q.target), ['/first'], 'only the first reached the upstream')
})

t.test('a WebSocket handshake without Host is answered 400 and reaches no upstream', async (t) => {
  const before = { received: h.received().length, access: h.logs.access().length }
  const r = await exchange(h.port, 'GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', { responses: 1 })
  t.equal(r.first, '400')
  t.equal(r.finals[0]!.body.toString('latin1'), BODY)
  await h.barrier()
  t.equal(h.received().length, before.received, 'nothing reached the upstream')
  t.match(h.logs.access().slice(before.access).find((l) => l['path'] === '/ws'), { status: 400, outcome: 'TETHER_BAD_REQUEST' })
})

t.test('an HTTP/1.0 request without Host is served as before', async (t) => {
  const before = h.received().length
  const r = await exchange(h.port, 'GET /old HTTP/1.0\r\n\r\n', { responses: 1 })
  t.equal(r.first, '200')
  await h.barrier()
  t.same(h.received().slice(before).map((q) => q.target), ['/old'])
})

/**
 * Each of `cases` (raw request, its path as logged) is answered Tether's 400 with its short body
 * and the connection closed, reaches no upstream, and is logged and counted as a 4xx answer.
 */
async function refusedEach(t: Test, cases: readonly (readonly [string, string])[]): Promise<void> {
  for (const [input, path] of cases) {
    const before = { received: h.received().length, access: h.logs.access().length, counted: await counted4xx() }
    const r = await exchange(h.port, input)
    t.equal(r.first, '400', `${path}: 400`)
    t.equal(r.finals[0]?.body.toString('latin1'), BODY, `${path}: Tether's short body`)
    t.ok(r.ended, `${path}: the connection is closed`)
    await h.barrier()
    t.same(h.received().slice(before.received).map((q) => header(q, 'host')), [], `${path}: nothing reached the upstream`)
    t.match(h.logs.access().slice(before.access).find((l) => l['path'] === path), { status: 400, outcome: 'TETHER_BAD_REQUEST', upstream: null }, `${path}: an access line names the refusal`)
    t.equal(await counted4xx(), before.counted + 1, `${path}: counted as a 4xx answer`)
  }
}

/** A request with `host` (a Host line) pipelined between two good ones: 200, then its 400, then the connection closes; only the first reaches the upstream. */
async function refusedInTurn(t: Test, host: string): Promise<void> {
  const before = h.received().length
  const r = await exchange(h.port, `GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\n${host}\r\n\r\nGET /third HTTP/1.1\r\nHost: a\r\n\r\n`)
  t.same(r.finals.map((f) => f.status), [200, 400])
  t.ok(r.ended, 'then the connection closes')
  await h.barrier()
  t.same(h.received().slice(before).map((q) => q.target), ['/first'], 'only the first reached the upstream')
}

t.test("an empty Host, or one of only whitespace, is answered Tether's 400, logged and counted, on HTTP/1.1 and 1.0 and with an absolute-form target", async (t) => {
  const cases = [
    ['GET /empty HTTP/1.1\r\nHost:\r\n\r\n', '/empty'],
    ['GET /spaces HTTP/1.1\r\nHost:   \r\n\r\n', '/spaces'],
    ['GET /tabs HTTP/1.1\r\nHost: \t \r\n\r\n', '/tabs'],
    ['GET /old-empty HTTP/1.0\r\nHost:\r\n\r\n', '/old-empty'],
    ['GET http://a.example/absolute HTTP/1.1\r\nHost:\r\n\r\n', 'http://a.example/absolute'],
  ] as const
  await refusedEach(t, cases)
})

t.test('a request with an empty Host pipelined behind a good one is answered 400 in its turn', (t) => refusedInTurn(t, 'Host:'))

t.test('a WebSocket handshake with an empty Host is answered 400 and reaches no upstream', async (t) => {
  const before = { received: h.received().length, access: h.logs.access().length }
  const r = await exchange(h.port, 'GET /ws-empty HTTP/1.1\r\nHost: \r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', { responses: 1 })
  t.equal(r.first, '400')
  t.equal(r.finals[0]!.body.toString('latin1'), BODY)
  await h.barrier()
  t.equal(h.received().length, before.received, 'nothing reached the upstream')
  t.match(h.logs.access().slice(before.access).find((l) => l['path'] === '/ws-empty'), { status: 400, outcome: 'TETHER_BAD_REQUEST' })
})

t.test('over h2 a stream with an empty :authority or host is reset before Tether sees it, as one with neither', async (t) => {
  const before = { received: h.received().length, access: h.logs.access().length }
  for (const head of [{ ':path': '/h2-empty-authority', ':authority': '' }, { ':path': '/h2-empty-host', host: '' }]) {
    const s = http2.connect(`http://127.0.0.1:${h.port}`)
    t.teardown(() => s.destroy())
    s.on('error', () => undefined)
    const stream = s.request(head)
    stream.resume()
    const ended = await new Promise<string>((resolve) => {
      stream.on('response', (got) => resolve(`answered ${String(got[':status'])}`))
      stream.on('close', () => resolve(`reset ${stream.rstCode}`))
      stream.on('error', () => undefined)
    })
    t.equal(ended, `reset ${http2.constants.NGHTTP2_PROTOCOL_ERROR}`, `${head[':path']}: reset with PROTOCOL_ERROR`)
    s.destroy()
  }
  await h.barrier()
  t.equal(h.received().length, before.received, 'nothing reached the upstream')
  t.equal(h.logs.access().slice(before.access).filter((l) => String(l['path']).startsWith('/h2-')).length, 0, 'no access line: Tether never saw them')
})

// An empty host written with a port (`Host: :80`, `Host: :`, `http://:80/x`, h2 `:authority:
// :80`) is an empty host too (RFC 9110 section 4.2.1: an http URI with an empty host is invalid,
// a recipient must reject it): nginx 1.22 answers all four 400, HAProxy 2.6 the absolute form
// (measured 2026-12-05). Until 2026-12-05 Tether forwarded them with Host ":80".
t.test("an empty host with a port is answered Tether's 400, logged and counted, as an empty Host is", async (t) => {
  const cases = [
    ['GET /port-only HTTP/1.1\r\nHost: :80\r\n\r\n', '/port-only'],
    ['GET /colon HTTP/1.1\r\nHost: :\r\n\r\n', '/colon'],
    ['GET /old-port-only HTTP/1.0\r\nHost: :8080\r\n\r\n', '/old-port-only'],
    ['GET http://:80/absolute-port-only HTTP/1.1\r\nHost: a\r\n\r\n', 'http://:80/absolute-port-only'],
  ] as const
  await refusedEach(t, cases)
})

t.test('a request with an empty host and a port pipelined behind a good one is answered 400 in its turn', (t) => refusedInTurn(t, 'Host: :80'))

t.test("over h2, :authority ':80' is answered Tether's 400 and reaches no upstream; '[::1]:80' and 'a:80' are served", async (t) => {
  const before = { received: h.received().length, access: h.logs.access().length }
  const s = http2.connect(`http://127.0.0.1:${h.port}`)
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  const status = (head: http2.OutgoingHttpHeaders): Promise<string> => new Promise<string>((resolve) => {
    const stream = s.request(head)
    stream.resume()
    stream.on('response', (got) => resolve(`answered ${String(got[':status'])}`))
    stream.on('close', () => resolve(`reset ${stream.rstCode}`))
    stream.on('error', () => undefined)
  })
  t.equal(await status({ ':path': '/h2-port-only', ':authority': ':80' }), 'answered 400')
  t.equal(await status({ ':path': '/h2-ipv6', ':authority': '[::1]:80' }), 'answered 200')
  t.equal(await status({ ':path': '/h2-name', ':authority': 'a:80' }), 'answered 200')
  await h.barrier()
  t.same(h.received().slice(before.received).map((q) => [q.target, header(q, 'host')]), [['/h2-ipv6', '[::1]:80'], ['/h2-name', 'a:80']], 'only the valid ones reached the upstream')
  t.match(h.logs.access().slice(before.access).find((l) => l['path'] === '/h2-port-only'), { status: 400, outcome: 'TETHER_BAD_REQUEST', upstream: null })
})
