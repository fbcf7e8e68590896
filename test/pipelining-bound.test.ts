// A client pipelining requests behind one the upstream is slow to answer: Node parses what it
// reads at once and would hold every request parsed (memory growing with what the client
// sends). Up to MAX_WAITING requests wait and are answered in order; past that the connection
// is closed (RFC 9112 section 9.3.2: a client resends pipelined requests after a close).
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { MAX_WAITING, onePerConnection } from '../src/proxy/pipelining.js'
import { waitFor } from './fixtures/wait.js'
import { exchange } from './fixtures/raw-client.js'
import { startHarness } from './fixtures/raw-tether.js'

async function serverHolding(t: Test): Promise<{ port: number; parsed: () => number; held: http.ServerResponse[]; release: () => void; overflows: () => number }> {
  let parsed = 0
  let overflows = 0
  const held: http.ServerResponse[] = []
  let holding = true
  const server = http.createServer(onePerConnection((req, res) => {
    if (holding) held.push(res)
    else res.end(req.url)
  }, () => overflows++))
  server.on('request', () => parsed++)
  server.listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  t.teardown(() => { server.closeAllConnections(); return new Promise((r) => server.close(r)) })
  return {
    port: (server.address() as net.AddressInfo).port,
    parsed: () => parsed,
    overflows: () => overflows,
    held,
    release: () => {
      holding = false
      for (const res of held) if (!res.destroyed) res.end(res.req.url)
    },
  }
}

async function client(t: Test, port: number): Promise<{ socket: net.Socket; got: () => string; closed: () => boolean }> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => undefined)
  t.teardown(() => socket.destroy())
  let got = ''
  let closed = false
  socket.on('data', (c: Buffer) => (got += c.toString('latin1')))
  socket.on('close', () => (closed = true))
  await new Promise((r) => socket.once('connect', r))
  return { socket, got: () => got, closed: () => closed }
}

const batch = (from: number, n: number): string => Array.from({ length: n }, (_, i) => `GET /${from + i} HTTP/1.1\r\nHost: a\r\n\r\n`).join('')

t.test('MAX_WAITING requests waiting behind a slow one are all answered, in order', async (t) => {
  const s = await serverHolding(t)
  const c = await client(t, s.port)
  c.socket.write(batch(0, MAX_WAITING + 1)) // the one handled, and MAX_WAITING behind it
  await waitFor(() => s.parsed() === MAX_WAITING + 1, 5_000, 'every request to be parsed')
  t.equal(s.held.length, 1, 'one request handled at a time')
  s.release()
  await waitFor(() => (c.got().match(/HTTP\/1\.1 200/g) ?? []).length === MAX_WAITING + 1, 5_000, 'every request to be answered')
  const bodies = [...c.got().matchAll(/\r\n\r\n(\/\d+)/g)].map((m) => m[1])
  t.same(bodies, Array.from({ length: MAX_WAITING + 1 }, (_, i) => `/${i}`), 'answered in request order')
  t.notOk(c.closed(), 'the connection stays open')
  t.equal(s.overflows(), 0, 'no overflow told')
})

t.test('one more waiting than MAX_WAITING closes the connection: what a client pipelines is not held without bound', async (t) => {
  const s = await serverHolding(t)
  const c = await client(t, s.port)
  c.socket.write(batch(0, MAX_WAITING + 2))
  await waitFor(() => c.closed(), 5_000, 'the connection to be closed')
  t.equal(s.held.length, 1, 'the waiting requests were never handled')
  t.equal(s.overflows(), 1, 'the caller was told once')
  // the server goes on with other connections
  s.release()
  const other = await new Promise<number>((resolve, reject) => http.get({ port: s.port, host: '127.0.0.1', path: '/other', agent: false }, (res) => { res.resume(); resolve(res.statusCode!) }).on('error', reject))
  t.equal(other, 200, 'another connection is served')
})

// RFC 9112 section 9.6: a server that sends `Connection: close` MUST NOT process any further
// requests received on that connection (nor after a request carrying `close`). A request the
// client pipelined behind one refused with close (400, 405, 413, 501) or behind its own
// `Connection: close` gets no answer: forwarded all the same, it would run on the upstream
// unseen, and the client, which resends unanswered requests on a new connection (RFC 9112
// section 9.3.2), would have a POST run twice. nginx 1.22 forwards none of them either.
t.test('a request pipelined behind an answer that closes the connection is never forwarded', async (t) => {
  const h = await startHarness({ limits: { max_body_bytes: 10 } })
  t.teardown(() => h.close())
  const SMUG = 'GET /smug HTTP/1.1\r\nHost: a\r\n\r\n'
  const SECOND = 'POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi'
  const chunk = (s: string): string => `${s.length.toString(16)}\r\n${s}\r\n0\r\n\r\n`
  const cases: [name: string, first: string, status: number][] = [
    ['a Host that is not valid (400)', 'GET /a HTTP/1.1\r\nHost: a b\r\n\r\n', 400],
    ['a Host that is not valid, with a body (400)', `POST /a HTTP/1.1\r\nHost: a b\r\nContent-Length: ${SMUG.length}\r\n\r\n${SMUG}`, 400],
    ['TRACE (405)', 'TRACE /a HTTP/1.1\r\nHost: a\r\n\r\n', 405],
    ['a declared body over limits.max_body_bytes (413)', `POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: ${SMUG.length}\r\n\r\n${SMUG}`, 413],
    ['a chunked body over limits.max_body_bytes (413)', `POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${chunk(SMUG)}`, 413],
    ['a transfer coding Tether cannot frame (501)', `POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n${chunk(SMUG)}`, 501],
    ['HTTP/2.0 in an HTTP/1 request line (505)', 'GET /a HTTP/2.0\r\nHost: a\r\n\r\n', 505],
    ["the client's own Connection: close (200)", 'GET /first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', 200],
  ]
  for (const [name, first, status] of cases) {
    const before = h.received().length
    const r = await exchange(h.port, first + SECOND, { ms: 3000 })
    // a new connection answered: whatever Tether still had to do for the earlier bytes is done
    await h.barrier()
    const got = h.received().slice(before).map((q) => `${q.method} ${q.target}`)
    t.same(r.finals.map((f) => f.status), [status], `${name}: one answer`)
    t.ok(r.ended, `${name}: the connection is closed`)
    t.notOk(got.includes('POST /second'), `${name}: the request pipelined behind it is not forwarded (got ${JSON.stringify(got)})`)
  }
  // nor a WebSocket handshake (Node hands it to the upgrade listener, which waits its turn)
  const before = h.received().length
  const WS = 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'
  const r = await exchange(h.port, `TRACE /a HTTP/1.1\r\nHost: a\r\n\r\n${WS}`, { ms: 3000 })
  await h.barrier()
  t.same(r.finals.map((f) => f.status), [405], 'a handshake behind a refusal: one answer')
  t.same(h.received().slice(before).map((q) => q.target), [], 'the handshake is not forwarded')
})
