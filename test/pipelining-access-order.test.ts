// Pipelined HTTP/1.1 requests get their access lines in request order, as their answers go out,
// also when a later one is refused by Tether itself (its listener's Host check, the parser's
// 'clientError' answered in its turn, the request path's guard, an upgrade's own check, a
// CONNECT's refusal). nginx
// 1.22 writes them so (measured 2026-12-05: GET /first proxied 200, then a second request with
// two Host headers, none, a malformed header line or two Content-Lengths answered 400: the
// 200's line first each time). Until 2026-12-05 the refusal's line came first: the waiting
// request started in the same nextTick run as the first answer's 'close', before the request
// path was told (a microtask later) that the first answer ended and logged it.
import t from 'tap'
import { exchange } from './fixtures/raw-client.js'
import { startHarness, type Harness } from './fixtures/raw-tether.js'
import { BARRIER } from './fixtures/raw-upstream.js'

let h: Harness
t.before(async () => { h = await startHarness() })
t.teardown(() => h.close())

const WEBSOCKET = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'

/** The request refused behind a good one, the refusal's status, and its path as logged (null: the parser refused its head). */
const cases: readonly (readonly [string, string, number, string | null])[] = [
  ['two Host headers (the listener)', 'GET /two-hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400, '/two-hosts'],
  ['no Host (the listener)', 'GET /no-host HTTP/1.1\r\n\r\n', 400, '/no-host'],
  ['HTTP/2.0 in a request line (the listener)', 'GET /h2-line HTTP/2.0\r\nHost: a\r\n\r\n', 505, '/h2-line'],
  ['two Content-Lengths (the parser)', 'GET /two-lengths HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 400, null],
  ['a header line without a colon (the parser)', 'GET /no-colon HTTP/1.1\r\nHost a\r\n\r\n', 400, null],
  ['an unknown transfer coding (the request path)', 'POST /gzip HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n', 501, '/gzip'],
  ['TRACE (the request path)', 'TRACE /trace HTTP/1.1\r\nHost: a\r\n\r\n', 405, '/trace'],
  ['a WebSocket handshake without Host (the upgrade listener)', `GET /ws-no-host HTTP/1.1\r\n${WEBSOCKET}\r\n`, 400, '/ws-no-host'],
  // until 2026-12-05 answered at once: the client read the 405 as its GET's answer (r3)
  ['CONNECT (the connect listener)', 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', 405, 'example.com:443'],
]

for (const [name, refused, status, path] of cases) {
  t.test(`a request refused for ${name} behind two proxied ones is logged after them`, async (t) => {
    const before = h.logs.access().length
    const r = await exchange(h.port, `GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n${refused}`)
    t.same(r.finals.map((f) => f.status), [200, 200, status], 'answered in order')
    await h.barrier()
    const lines = h.logs.access().slice(before).filter((l) => l['path'] !== BARRIER)
    t.same(lines.map((l) => [l['path'], l['status']]), [['/first', 200], ['/second', 200], [path, status]], 'logged in request order')
  })
}
