// Request lines Node's parser takes that are not HTTP/1.x and the request shows (HTTP/0.9, an
// RTSP-only method) are refused 400 and never reach an upstream as HTTP/1.1 requests, alone,
// pipelined, in a later read of a kept-alive connection or with Upgrade; a method HTTP shares
// with RTSP or ICE is served as the HTTP/1.x request Node made of it (its protocol name is not on
// the request: request-line.ts); an RTSP-only method with HTTP/1.1 is a valid method Tether
// cannot carry: 501.
import t from 'tap'
import { exchange, rawConnect } from './fixtures/raw-client.js'
import { startHarness, type Harness } from './fixtures/raw-tether.js'
import { header } from './fixtures/raw-http.js'

/** Wait (with a deadline) until `n` more access lines than `before` were written. */
function accessLines(h: Harness, before: number, n: number): Promise<Record<string, unknown>[]> {
  return new Promise((done) => {
    const timer = setTimeout(() => { h.logs.off('record', check); done(h.logs.access().slice(before)) }, 5000)
    function check(): void {
      if (h.logs.access().length < before + n) return
      clearTimeout(timer)
      h.logs.off('record', check)
      done(h.logs.access().slice(before))
    }
    h.logs.on('record', check)
    check()
  })
}

t.test('HTTP/0.9 and RTSP-only request lines get 400 with Connection: close, an access line, and reach no upstream', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  const cases: [string, string, string][] = [
    ['DESCRIBE /d RTSP/1.0\r\nCSeq: 2\r\n\r\n', 'DESCRIBE', '/d'],
    ['SETUP /d RTSP/1.0\r\nHost: a\r\n\r\n', 'SETUP', '/d'],
    ['PLAY  /d  RTSP/1.0\r\nHost: a\r\n\r\n', 'PLAY', '/d'], // llhttp takes several spaces
    ['GET /t\r\n\r\n', 'GET', '/t'], // HTTP/0.9: no version, no headers
    ['GET /t\r\nHost: a\r\n\r\n', 'GET', '/t'],
    ['GET /v HTTP/0.9\r\nHost: a\r\n\r\n', 'GET', '/v'],
  ]
  for (const [input, method, path] of cases) {
    const before = h.logs.access().length
    const r = await exchange(h.port, input)
    t.equal(r.first, '400', JSON.stringify(input))
    t.equal(header(r.finals[0]!, 'connection'), 'close')
    t.ok(r.ended, 'the connection closes')
    const [line] = await accessLines(h, before, 1)
    t.match(line, { method, path, status: 400, upstream: null, outcome: 'TETHER_BAD_REQUEST' }, 'its access line')
  }
  await h.barrier()
  t.same(h.received(), [], 'no upstream got any of them')
  t.same(h.unhandled(), [])
})

t.test('a foreign request line behind an HTTP/1.1 request, in the same read or a later one, gets its 400 after that answer', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  // the same method and target in both lines: each request is told by its own line
  const one = await exchange(h.port, 'GET /w HTTP/1.1\r\nHost: a\r\n\r\nGET /w HTTP/0.9\r\nHost: a\r\n\r\nGET /w HTTP/1.1\r\nHost: a\r\n\r\n')
  t.same(one.finals.map((f) => f.status), [200, 400], 'pipelined in one write: 200, then 400, and nothing after it')
  t.ok(one.ended)
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  c.write('GET /a HTTP/1.1\r\nHost: a\r\n\r\n')
  t.ok(await c.until(() => c.finals().length === 1, 5000), 'the first answered')
  c.write('DESCRIBE /b RTSP/1.0\r\nHost: a\r\n\r\n')
  t.ok(await c.waitEnd(5000), 'the RTSP one in its own read closes the connection')
  t.same(c.finals().map((f) => f.status), [200, 400])
  await h.barrier()
  t.same(h.received().map((r) => `${r.method} ${r.target} ${r.version}`), ['GET /w HTTP/1.1', 'GET /a HTTP/1.1'], 'only the HTTP ones were forwarded')
  // HTTP/1.x lines that merely contain RTSP/ or ICE/ (in the target, in a header) are served, and
  // so are methods HTTP shares with RTSP/ICE (their protocol name is not on the request)
  const served = await exchange(h.port, 'GET /RTSP/1.0 HTTP/1.1\r\nHost: a\r\n\r\nGET /x?ICE/1.0 HTTP/1.1\r\nHost: a\r\nX-P: GET /w RTSP/1.1\r\n\r\nGET  /y  HTTP/1.1\r\nHost: a\r\n\r\nGET /z HTTP/1.0\r\n\r\n', { responses: 4 })
  t.same(served.finals.map((f) => f.status), [200, 200, 200, 200], 'HTTP lines that contain RTSP/ or ICE/ are served')
  t.equal((await exchange(h.port, 'GET /w RTSP/1.1\r\nHost: a\r\n\r\n')).first, '200', 'GET with RTSP/1.1: served as HTTP/1.1 (known limit)')
})

t.test('an Upgrade request with an RTSP-only method or HTTP/0.9 gets 400 and reaches no upstream', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  const ws = 'Host: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'
  for (const line of ['DESCRIBE /ws RTSP/1.0', 'GET /ws HTTP/0.9']) {
    const before = h.logs.access().length
    const r = await exchange(h.port, `${line}\r\n${ws}`)
    t.equal(r.first, '400', line)
    t.ok(r.ended)
    t.match((await accessLines(h, before, 1))[0], { method: line.split(' ')[0], path: '/ws', status: 400, upstream: null }, 'its access line')
  }
  const behind = await exchange(h.port, `GET /a HTTP/1.1\r\nHost: a\r\n\r\nSETUP /ws RTSP/1.0\r\n${ws}`)
  t.same(behind.finals.map((f) => f.status), [200, 400], 'behind a request, in one read')
  await h.barrier()
  t.same(h.received().map((r) => r.target), ['/a'])
})

t.test('an RTSP-only method with HTTP/1.1 is a valid method Tether cannot carry: 501, logged with its line; with RTSP/ it stays 400', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  let before = h.logs.access().length
  const r = await exchange(h.port, 'ANNOUNCE /z HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer SECRET\r\n\r\n')
  t.equal(r.first, '501')
  t.ok(r.ended)
  t.match((await accessLines(h, before, 1))[0], { method: 'ANNOUNCE', path: '/z', status: 501, outcome: 'TETHER_UNKNOWN_METHOD', upstream: null })
  before = h.logs.access().length
  const piped = await exchange(h.port, 'GET /a HTTP/1.1\r\nHost: a\r\n\r\nSET_PARAMETER /z HTTP/1.1\r\nHost: a\r\n\r\n')
  t.same(piped.finals.map((f) => f.status), [200, 501], 'pipelined behind a request')
  t.match((await accessLines(h, before, 2))[1], { method: 'SET_PARAMETER', path: '/z', status: 501 })
  t.equal((await exchange(h.port, 'PUT /w RTSP/1.1\r\nHost: a\r\n\r\n')).first, '400', 'a method RTSP lacks with RTSP/: malformed')
  t.equal((await exchange(h.port, 'ANNOUNCE /z HTPP/1.1\r\nHost: a\r\n\r\n')).first, '400', 'with a misspelt protocol: malformed')
  t.notOk(h.logs.lines.some((l) => JSON.stringify(l.rec).includes('SECRET')), 'no header value is logged')
})
