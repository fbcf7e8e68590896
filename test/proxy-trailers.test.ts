// Trailer fields an upstream sends after a chunked body reach the client (RFC 9110 section 6.5),
// announced in `Trailer`, except those no trailer may carry or that Tether keeps to itself:
// framing, routing, authentication, cookies, content processing (section 6.5.1), hop-by-hop and
// Tether's reserved names (a checkpoint must never leak from there either). A Content-Length
// among the trailers, which undici's parser refuses after the whole body, is dropped with the
// trailer section: the answer is delivered whole.
import t from 'tap'
import http from 'node:http'
import http2 from 'node:http2'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startRawUpstream } from './fixtures/raw-upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { testConfig } from './fixtures/upstream.js'

const CHUNKED_WITH_TRAILERS = [
  'HTTP/1.1 200 OK', 'Content-Type: text/plain', 'Transfer-Encoding: chunked',
  'Trailer: X-Checksum, Content-Length, X-Tether-State, Server-Timing', '', '5', 'hello', '0',
  'X-Checksum: sha256=abc', 'X-Tether-State: e30', 'X-TETHER_Upstream: app-9', 'Set-Cookie: sid=evil', 'Content-Type: text/html',
  'Server-Timing: db;dur=53', 'Transfer-Encoding: gzip', '', '',
].join('\r\n')

function get(url: string): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders; trailers: NodeJS.Dict<string> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers, trailers: res.trailers }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

t.test("an upstream's trailer fields reach the client, filtered", async (t) => {
  const up = await startRawUpstream('app-0', (_req, conn) => conn.write(CHUNKED_WITH_TRAILERS))
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([{ id: up.id, url: up.url }]), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const r = await get(tether.url + '/')
  t.equal(r.status, 200)
  t.equal(r.body, 'hello')
  t.same(r.trailers, { 'x-checksum': 'sha256=abc', 'server-timing': 'db;dur=53' }, 'the application fields pass; framing, cookies and reserved names do not')
  t.equal(r.headers.trailer, 'X-Checksum, Server-Timing', 'announced in Trailer, the same way filtered')
  t.equal(r.headers['transfer-encoding'], 'chunked')
})

t.test('no trailers: no Trailer header, and an answer of known length carries none', async (t) => {
  const up = await startRawUpstream('app-0', (_req, conn) => conn.write('HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nContent-Length: 2\r\n\r\nok'))
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([{ id: up.id, url: up.url }]), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const r = await get(tether.url + '/')
  t.equal(r.body, 'ok')
  t.equal(r.headers.trailer, undefined, 'a body of known length has no trailer section to announce')
  t.same(r.trailers, {})
})

/** One raw HTTP/1.x exchange on a new connection: the whole answer as text (the server closes). */
function raw(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(request))
    let out = ''
    s.on('data', (c: Buffer) => (out += c.toString('latin1')))
    s.on('end', () => resolve(out))
    s.on('error', reject)
  })
}

t.test('an answer that cannot carry trailers (HTTP/1.0, HEAD, 304) is not refused for its announcement', async (t) => {
  const up = await startRawUpstream('app-0', (req, conn) => {
    if (req.method === 'HEAD') return conn.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n')
    if (req.target === '/304') return conn.write('HTTP/1.1 304 Not Modified\r\nTrailer: X-Checksum\r\nETag: "a"\r\n\r\n')
    conn.write(CHUNKED_WITH_TRAILERS)
  })
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([{ id: up.id, url: up.url }]), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const port = Number(new URL(tether.url).port)
  const head = await raw(port, `HEAD / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`)
  t.match(head, /^HTTP\/1\.1 200 /, 'HEAD: 200')
  t.notMatch(head, /\r\ntrailer:/i)
  const notModified = await raw(port, `GET /304 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`)
  t.match(notModified, /^HTTP\/1\.1 304 /, '304 stays 304')
  const old = await raw(port, `GET / HTTP/1.0\r\nHost: 127.0.0.1:${port}\r\n\r\n`)
  t.match(old, /^HTTP\/1\.1 200 /, 'HTTP/1.0 client: 200')
  t.notMatch(old, /\r\ntrailer:/i, 'no Trailer announced: the answer is not chunked')
  t.match(old, /\r\n\r\nhello$/, 'the body, without trailer fields')
})

t.test("a field the answer's Connection header names is hop-by-hop in its trailers too (RFC 9110 section 7.6.1)", async (t) => {
  const up = await startRawUpstream('app-0', (_req, conn) => conn.write([
    'HTTP/1.1 200 OK', 'Connection: X-Hop', 'Transfer-Encoding: chunked', 'Trailer: X-Hop, X-Checksum', '', '2', 'ok', '0',
    'X-Hop: one-connection', 'X-Checksum: abc', '', '',
  ].join('\r\n')))
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([{ id: up.id, url: up.url }]), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const r = await get(tether.url + '/')
  t.same(r.trailers, { 'x-checksum': 'abc' })
  t.equal(r.headers.trailer, 'X-Checksum')
})

/** A POST with a small body on its own connection (another user): status and body. */
function post(url: string, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent: false, headers: { 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode!, body: text }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

t.test("connection control in an upstream's trailers retires its connection: the next request, another user's, gets a new one", async (t) => {
  // llhttp takes a `Connection: close` trailer field as the connection's end, but undici decided
  // keep-alive from the head: the next answer on that connection failed ("Data after
  // Connection: close"), a 502 for a request the upstream had run (RFC 9110 section 6.5.1: no
  // connection control in trailers; nginx drops the field)
  for (const field of ['Connection: close', 'proxy-connection: close', 'CONNECTION: keep-alive, close']) {
    const up = await startRawUpstream('app-0', (req, conn) => conn.write(req.target === '/download'
      ? ['HTTP/1.1 200 OK', 'Transfer-Encoding: chunked', 'Trailer: X-Checksum', '', '5', 'hello', '0', field, 'X-Checksum: abc', '', ''].join('\r\n')
      : `HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsaved`))
    t.teardown(() => up.close())
    const tether = await startTether(testConfig([{ id: up.id, url: up.url }]), { logger: createLogger('silent') })
    t.teardown(() => tether.close(0))
    const a = await get(tether.url + '/download')
    t.equal(a.body, 'hello', `${field}: the first answer is whole`)
    t.same(a.trailers, { 'x-checksum': 'abc' }, `${field}: not passed to the client (hop-by-hop)`)
    const b = await post(tether.url + '/order', 'item=42')
    t.same(b, { status: 200, body: 'saved' }, `${field}: the next request is answered`)
    t.equal(up.connections.length, 2, `${field}: on a new upstream connection`)
    t.same(up.connections.map((c) => c.requests.length), [1, 1], `${field}: one request on each`)
  }
})

t.test("a request of Tether's own (the rehydration hook's POST) whose answer has connection control in its trailers leaves its pool usable", async (t) => {
  // undici's request() path (Forwarder.call) ends such a connection itself: the next request
  // gets a new one, as an exchange's does through retireIfTrailersControl
  const { Forwarder } = await import('../src/proxy/forward.js')
  const up = await startRawUpstream('app-0', (req, conn) => conn.write(req.target === '/hook'
    ? ['HTTP/1.1 200 OK', 'Transfer-Encoding: chunked', 'Trailer: X-Checksum', '', '2', 'ok', '0', 'Connection: close', 'X-Checksum: abc', '', ''].join('\r\n')
    : 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsaved'))
  t.teardown(() => up.close())
  const policy = {} as ConstructorParameters<typeof Forwarder>[2] // a call never reads the answer policy
  const forwarder = new Forwarder([{ id: up.id, url: up.url }], { connect: 1_000, responseHeaders: 5_000, bodyIdle: 5_000, maxResponseHeaderBytes: 16_384 }, policy)
  t.teardown(() => forwarder.destroy())
  const hook = await forwarder.call(up.id, 'POST', '/hook', ['content-type', 'text/plain'], 'state', 5_000)
  t.same(hook, { status: 200, error: null }, 'the hook is answered')
  const next = await forwarder.call(up.id, 'POST', '/order', [], 'item=42', 5_000)
  t.same(next, { status: 200, error: null }, 'the next request on that pool is answered')
  t.equal(up.connections.length, 2, 'on a new upstream connection')
  t.same(up.connections.map((c) => c.requests.length), [1, 1], 'one request on each')
})

t.test("a request of Tether's own ends when its signal aborts, and its status is 0 with the reason", async (t) => {
  const { Forwarder } = await import('../src/proxy/forward.js')
  const up = await startRawUpstream('app-0', () => undefined) // never answers
  t.teardown(() => up.close())
  const forwarder = new Forwarder([{ id: up.id, url: up.url }], { connect: 1_000, responseHeaders: 60_000, bodyIdle: 60_000, maxResponseHeaderBytes: 16_384 }, {} as ConstructorParameters<typeof Forwarder>[2])
  t.teardown(() => forwarder.destroy())
  const abort = new AbortController()
  const pending = forwarder.call(up.id, 'POST', '/hook', [], 'state', 60_000, abort.signal)
  setImmediate(() => abort.abort(new Error('the client left')))
  const r = await pending
  t.equal(r.status, 0)
  t.match(String(r.error), /the client left/)
  t.same(await forwarder.call('nope', 'POST', '/hook', [], 'state', 1_000), { status: 0, error: null }, 'an unknown upstream: no pool, no error')
})

t.test("a Content-Length in an upstream's trailer section is dropped: the body reaches the client whole, and its connection goes on", async (t) => {
  // undici's llhttp refuses the field ("Content-Length can't be present with Transfer-Encoding")
  // after it passed the whole body on; until 2026-12-05 the client's chunked answer was cut
  // before its last chunk. nginx 1.22 and HAProxy 2.6 deliver the body (RFC 9110 section 6.5.1:
  // no trailer may carry framing; section 6.5.2: a recipient may drop such a field)
  const up = await startRawUpstream('app-0', (req, conn) => conn.write(req.target === '/download'
    ? ['HTTP/1.1 200 OK', 'Transfer-Encoding: chunked', 'Trailer: X-Checksum', '', '5', 'hello', '6', ' world', '0', 'X-Checksum: abc', 'Content-Length: 9', 'Server-Timing: db', '', ''].join('\r\n')
    : 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsaved'))
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([{ id: up.id, url: up.url }], { retries: { attempts: 0 } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const port = Number(new URL(tether.url).port)
  // one client connection: the answer must end as a whole chunked message for the next to follow
  const answers = await raw(port, `GET /download HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
  const [first, second] = answers.split(/(?=HTTP\/1\.1 )/)
  t.match(first, /^HTTP\/1\.1 200 [^]*\r\ntransfer-encoding: chunked\r\n/i, 'the head went out chunked')
  // (the chunks as undici handed them on: one or two, by how the bytes were read)
  const body = /\r\n\r\n((?:[0-9a-f]+\r\n[^]*?\r\n)*)0\r\n\r\n$/.exec(first ?? '')
  t.ok(body !== null, 'the chunked body, then the last chunk and an empty trailer section')
  t.equal(body?.[1]?.replace(/[0-9a-f]+\r\n([^]*?)\r\n/g, '$1'), 'hello world', 'the whole body')
  t.notMatch(first, /content-length/i, 'no Content-Length, in the head or after the body')
  t.match(second, /^HTTP\/1\.1 200 [^]*\r\n\r\nsaved$/, 'the next request on the connection is answered')
  t.equal(up.connections.length, 2, 'on a new upstream connection (the refused one is closed)')
})

t.test("an h2 client gets the whole body too when the upstream's trailer section holds Content-Length; the stream ends cleanly", async (t) => {
  const up = await startRawUpstream('app-0', (_req, conn) => conn.write(['HTTP/1.1 200 OK', 'Transfer-Encoding: chunked', '', '5', 'hello', '0', 'Content-Length: 9', '', ''].join('\r\n')))
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([{ id: up.id, url: up.url }], { retries: { attempts: 0 }, listen: { http2: { cleartext: true } } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const session = http2.connect(tether.url)
  session.on('error', () => undefined)
  t.teardown(() => session.destroy())
  const got = await new Promise<{ status: number; body: string; code: number }>((resolve, reject) => {
    const stream = session.request({ ':path': '/' })
    let status = 0
    let body = ''
    stream.on('response', (h) => { status = Number(h[':status']) })
    stream.setEncoding('utf8')
    stream.on('data', (c: string) => { body += c })
    stream.on('close', () => resolve({ status, body, code: stream.rstCode ?? -1 }))
    stream.on('error', reject)
  })
  t.same(got, { status: 200, body: 'hello', code: http2.constants.NGHTTP2_NO_ERROR }, 'the body whole, the stream ended without a reset')
})

/** The answer to `/download` with Content-Length in its trailer section; `saved` to anything else. */
const TRAILER_LENGTH = (target: string): string => target === '/download' || target === '/hook'
  ? ['HTTP/1.1 200 OK', 'Transfer-Encoding: chunked', 'Trailer: X-Checksum', '', '5', 'hello', '0', 'X-Checksum: abc', 'Content-Length: 5', '', ''].join('\r\n')
  : 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsaved'

// (an upstream that does it on every answer would write a warn line each: the first is warned,
// then at most one per 30 s per upstream with how many answers it stands for, as Tether's other
// repeating problems are; see ProblemLog)
t.test("a Content-Length in an upstream's trailer section is warned at once, naming the upstream and the request, then at most once per 30 s with a count", async (t) => {
  const up = await startRawUpstream('app-0', (req, conn) => conn.write(TRAILER_LENGTH(req.target)))
  t.teardown(() => up.close())
  const logs = new LogCapture()
  let now = Date.now()
  const clock = { now: () => now }
  const tether = await startTether(testConfig([{ id: up.id, url: up.url }], { retries: { attempts: 0 }, log: { level: 'info', access: true } }), { logger: createLogger('info', logs), clock })
  t.teardown(() => tether.close(0))
  const warned = (): Record<string, unknown>[] => logs.records.filter((r) => r['level'] === 40 && /trailer/i.test(String(r['msg'])))
  const first = await get(tether.url + '/download')
  t.same([first.status, first.body], [200, 'hello'], 'delivered whole')
  t.same(first.trailers, {}, 'its trailer fields dropped')
  const next = await get(tether.url + '/next')
  t.same([next.status, next.body], [200, 'saved'])
  const again = await get(tether.url + '/download')
  t.equal(again.body, 'hello')
  t.equal(warned().length, 1, 'the first such answer is warned, the second (within 30 s) is counted, none for the others')
  const access = logs.access().filter((l) => l['path'] === '/download')
  t.match(warned()[0], { upstream: 'app-0', method: 'GET', path: '/download', request_id: access[0]?.['request_id'] }, 'the upstream, the method and path, and the access line\'s request id')
  t.match(String(warned()[0]?.['msg']), /Content-Length/)
  t.match(access, [{ status: 200, upstream: 'app-0' }, { status: 200, upstream: 'app-0' }], 'the answers are logged as served')
  now += 30_000
  const later = await get(tether.url + '/download')
  t.equal(later.body, 'hello')
  t.equal(warned().length, 2, 'warned again once 30 s passed')
  t.match(warned()[1], { upstream: 'app-0', path: '/download', repeated: 2, for_ms: 30_000 }, 'with how many answers it stands for (this one and the one not logged)')
})

t.test('an upstream that puts Content-Length in the trailers of every answer gets one warn line, not one an answer; each upstream its own', async (t) => {
  const ups = await Promise.all(['app-0', 'app-1'].map((id) => startRawUpstream(id, (req, conn) => conn.write(TRAILER_LENGTH(req.target)))))
  t.teardown(() => Promise.all(ups.map((u) => u.close())))
  const logs = new LogCapture()
  const tether = await startTether(testConfig(ups.map((u) => ({ id: u.id, url: u.url })), { retries: { attempts: 0 }, log: { level: 'info', access: true } }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  const N = 40
  for (let i = 0; i < N; i++) t.equal((await get(tether.url + '/download')).body, 'hello', `answer ${i} delivered whole`)
  const served = new Set(logs.access().filter((l) => l['path'] === '/download').map((l) => String(l['upstream'])))
  const warned = logs.records.filter((r) => r['level'] === 40 && /trailer/i.test(String(r['msg'])))
  t.comment(`served by ${[...served].join(', ')}`)
  t.same(warned.map((r) => String(r['upstream'])).sort(), [...served].sort(), `${N} answers: one line for each upstream that served them`)
})

t.test("a request of Tether's own (the rehydration hook's POST) whose answer has Content-Length in its trailers is answered, warned once, and leaves its pool usable", async (t) => {
  // undici's request() path (Forwarder.call) failed the whole answer with llhttp's refusal: the
  // hook counted as failed (status 0) although the upstream answered it whole
  const { Forwarder } = await import('../src/proxy/forward.js')
  const up = await startRawUpstream('app-0', (req, conn) => conn.write(TRAILER_LENGTH(req.target)))
  t.teardown(() => up.close())
  const told: unknown[] = []
  const policy = {} as ConstructorParameters<typeof Forwarder>[2] // a call never reads the answer policy
  const forwarder = new Forwarder([{ id: up.id, url: up.url }], { connect: 1_000, responseHeaders: 5_000, bodyIdle: 5_000, maxResponseHeaderBytes: 16_384 }, policy, undefined, undefined, (d) => told.push(d))
  t.teardown(() => forwarder.destroy())
  const hook = await forwarder.call(up.id, 'POST', '/hook', ['content-type', 'text/plain'], 'state', 5_000)
  t.same(hook, { status: 200, error: null }, 'the hook is answered')
  t.same(told, [{ upstream: 'app-0', request_id: null, method: 'POST', path: '/hook' }], 'told once, naming the upstream')
  const next = await forwarder.call(up.id, 'POST', '/order', [], 'item=42', 5_000)
  t.same(next, { status: 200, error: null }, 'the next request on that pool is answered')
  t.equal(told.length, 1, 'nothing told for it')
})
