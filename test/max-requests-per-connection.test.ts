// limits.max_requests_per_connection (nginx's keepalive_requests, Envoy's
// max_requests_per_connection): the last request a client connection may carry is answered with
// `Connection: close` (HTTP/1.1) or followed by GOAWAY NO_ERROR (HTTP/2), then the connection
// closes and the client opens a new one; requests pipelined past the last are never forwarded.
// Real sockets: raw HTTP/1.1 clients, node:http2 clients over h2c and TLS.
import t, { type Test } from 'tap'
import http from 'node:http'
import http2 from 'node:http2'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { diffConfig } from '../src/config/reload.js'
import { createLogger } from '../src/observability/logger.js'
import { FILE, issuesOf, yaml } from './fixtures/config-issues.js'
import { rawConnect, exchange } from './fixtures/raw-client.js'
import { headerValues } from './fixtures/raw-http.js'
import { ask, connectionHeaders, get, goaways, oneByOne, tetherFromFile, type Answer } from './fixtures/connection-bounds.js'
import { startHarness } from './fixtures/raw-tether.js'
import { LogCapture } from './fixtures/log-capture.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { startUpstream, testConfig, waitFor, type Upstream } from './fixtures/upstream.js'
import { within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

t.test('HTTP/1.1: with 3, the 3rd answer on a keep-alive connection carries Connection: close and the connection closes after it', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 3 } })
  t.teardown(() => h.close())
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  await oneByOne(t, c, ['/1', '/2', '/3'])
  t.ok(await c.waitEnd(5_000), 'Tether closed the connection')
  t.notOk(c.reset, 'closed, not reset')
  t.same(c.finals().map((r) => r.status), [200, 200, 200], 'all three answered')
  t.same(connectionHeaders(c).map((v) => v === 'close'), [false, false, true], 'only the 3rd says Connection: close')
  t.same(h.received().map((r) => r.target), ['/1', '/2', '/3'], 'the upstream got the three')
})

t.test('HTTP/1.1: 5 requests pipelined with 3 allowed: 3 answered (the 3rd with Connection: close), the 4th and 5th neither forwarded nor answered', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 3 } })
  t.teardown(() => h.close())
  const r = await exchange(h.port, ['/1', '/2', '/3', '/4', '/5'].map(get).join(''), { ms: 5_000 })
  await h.barrier()
  t.ok(r.ended, 'the connection is closed')
  t.same(r.finals.map((f) => f.status), [200, 200, 200], 'three answers, no 503 for the rest (the client sends them again on a new connection)')
  t.equal(headerValues(r.finals[2]!, 'connection').join(',').toLowerCase(), 'close', 'the 3rd says Connection: close')
  t.same(h.received().map((q) => q.target), ['/1', '/2', '/3'], 'the 4th and 5th never reached the upstream')
})

t.test('0 (from the file) is no cap: 5 pipelined and 5 more one by one are all answered on one open connection', async (t) => {
  const tether = await tetherFromFile(t, 'limits: { max_requests_per_connection: 0 }')
  t.equal(tether.config.limits.max_requests_per_connection, 0)
  const c = await rawConnect(tether.port)
  t.teardown(() => c.destroy())
  c.write(['/1', '/2', '/3', '/4', '/5'].map(get).join(''))
  t.ok(await c.until(() => c.finals().length === 5, 5_000), 'the 5 pipelined answered')
  await oneByOne(t, c, ['/6', '/7', '/8', '/9', '/10'])
  t.notOk(connectionHeaders(c).includes('close'), 'no answer says Connection: close')
  t.notOk(c.ended, 'the connection stays open')
})

t.test('the default is 1000, as nginx: the 1000th answer on one connection closes it', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  t.equal(h.tether.config.limits.max_requests_per_connection, 1000)
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  // 999 pipelined in rounds of 111 (Tether holds at most 256 waiting), then the 1000th alone
  for (let round = 0; round < 9; round++) {
    c.write(Array.from({ length: 111 }, (_, i) => get(`/${round * 111 + i + 1}`)).join(''))
    await c.until(() => c.finals().length === (round + 1) * 111, 10_000)
  }
  t.equal(c.finals().length, 999, '999 answered')
  t.notOk(connectionHeaders(c).includes('close'), 'none of them says Connection: close')
  c.write(get('/1000'))
  t.ok(await c.waitEnd(10_000), 'closed after the 1000th')
  t.equal(c.finals().length, 1000)
  t.equal(connectionHeaders(c)[999], 'close', 'the 1000th says Connection: close')
})

/** An upstream that holds every answer until `count` requests arrived, then answers each with a 64 KiB body naming its path. */
async function heldUpstream(t: Test, count: number): Promise<Upstream & { paths: string[] }> {
  const paths: string[] = []
  const held: [http.IncomingMessage, http.ServerResponse][] = []
  const body = (path: string): string => path.padEnd(64 * 1024, '.')
  const up = await startUpstream('app-0', (req, res) => {
    paths.push(req.url!)
    held.push([req, res])
    if (held.length >= count) for (const [q, s] of held.splice(0)) s.end(body(q.url!))
  })
  t.teardown(() => up.close())
  return Object.assign(up, { paths })
}

/** Every GOAWAY `got` says NO_ERROR and names stream `last` (Tether's, then its graceful close's: the same). */
function noErrorNaming(t: Test, got: [number, number][], last: number): void {
  t.ok(got.length >= 1 && got.every(([code, id]) => code === http2.constants.NGHTTP2_NO_ERROR && id === last), `GOAWAY NO_ERROR naming stream ${last}, the 3rd (got ${JSON.stringify(got)})`)
}

const intact = (a: Answer, path: string): boolean => a.status === 200 && a.error === null && a.body === path.padEnd(64 * 1024, '.')

async function h2Streams(t: Test, connect: () => http2.ClientHttp2Session, up: Upstream & { paths: string[] }): Promise<void> {
  const s = connect()
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  const got = goaways(s)
  const closed = new Promise((r) => s.once('close', r))
  // three streams in flight at once: the upstream answers none before it has all three
  const answers = await within(Promise.all(['/1', '/2', '/3'].map((p) => ask(s, p))), 10_000, 'the three answers')
  noErrorNaming(t, got, 5)
  t.ok(answers.every((a, i) => intact(a, `/${i + 1}`)), `the three answers in flight came whole (${JSON.stringify(answers.map((a) => [a.status, a.body.length, a.error]))})`)
  await within(closed, 10_000, 'the connection to close')
  // the client's next request goes on a new connection
  const next = connect()
  t.teardown(() => next.destroy())
  next.on('error', () => undefined)
  const [a, b, c] = await within(Promise.all(['/4', '/5', '/6'].map((p) => ask(next, p))), 10_000, 'the answers on a new connection')
  t.ok(intact(a!, '/4') && intact(b!, '/5') && intact(c!, '/6'), 'a new connection is served')
  t.same(up.paths, ['/1', '/2', '/3', '/4', '/5', '/6'])
}

t.test('HTTP/2 (h2c): with 3, the 3rd stream gets GOAWAY NO_ERROR, the 3 answers in flight finish whole, then the connection closes', async (t) => {
  const up = await heldUpstream(t, 3)
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } }, limits: { max_requests_per_connection: 3 } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  await h2Streams(t, () => http2.connect(tether.url), up)
})

t.test('HTTP/2 over TLS: the same', async (t) => {
  const up = await heldUpstream(t, 3)
  const tether = await startTether(testConfig([up], {
    listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null } },
    limits: { max_requests_per_connection: 3 },
  }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  await h2Streams(t, () => http2.connect(tether.url, { ca: certs.ca, servername: 'localhost' }), up)
})

t.test('HTTP/2: a graceful stop after the cap\'s GOAWAY waits for the streams in flight, which finish whole', async (t) => {
  const held: [string, http.ServerResponse][] = []
  const up = await startUpstream('app-0', (req, res) => void held.push([req.url!, res]))
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } }, limits: { max_requests_per_connection: 3 } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const s = http2.connect(tether.url)
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  const got = goaways(s)
  const answers = Promise.all(['/1', '/2', '/3'].map((p) => ask(s, p)))
  await waitFor(() => held.length === 3 && got.length > 0, 5_000, 'the three streams upstream and the GOAWAY')
  const stopped = tether.close(10_000)
  for (const [path, res] of held) res.end(path.padEnd(64 * 1024, '.'))
  const all = await within(answers, 10_000, 'the three answers')
  t.ok(all.every((a, i) => intact(a, `/${i + 1}`)), 'the three answers came whole')
  await within(stopped, 10_000, 'the stop to end once they did')
  noErrorNaming(t, got, 5)
})

t.test('HTTP/2: 5 streams sent in one write with 3 allowed: 3 answered, the 4th and 5th refused and never forwarded', async (t) => {
  const up = await startUpstream('app-0', (req, res) => res.end(req.url))
  t.teardown(() => up.close())
  const seen: string[] = []
  up.server.on('request', (req: http.IncomingMessage) => seen.push(req.url!))
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } }, limits: { max_requests_per_connection: 3 } }), { logger: createLogger('debug', logs) })
  t.teardown(() => tether.close(0))
  const started = logs.records.length // (the start's warnings left out)
  const s = http2.connect(tether.url)
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  await new Promise((r) => s.once('remoteSettings', r)) // (within the concurrent-stream limit from the start)
  const got = goaways(s)
  const answers = await within(Promise.all(['/1', '/2', '/3', '/4', '/5'].map((p) => ask(s, p))), 10_000, 'the five streams to end')
  t.same(answers.slice(0, 3).map((a) => [a.status, a.body]), [[200, '/1'], [200, '/2'], [200, '/3']], 'the first three answered')
  // REFUSED_STREAM: not processed, safe to send again (RFC 9113 section 8.7)
  t.ok(answers.slice(3).every((a) => a.status === 0 && /REFUSED_STREAM/.test(a.error ?? '')), `the 4th and 5th were refused (${JSON.stringify(answers.slice(3))})`)
  noErrorNaming(t, got, 5)
  // a new connection answered: whatever Tether still had to do for the first one is done
  const other = http2.connect(tether.url)
  t.teardown(() => other.destroy())
  t.equal((await ask(other, '/other')).status, 200)
  t.same(seen, ['/1', '/2', '/3', '/other'], 'the 4th and 5th never reached the upstream')
  const told = logs.records.filter((r) => String(r['msg']).includes('max_requests_per_connection'))
  t.match(told, [{ level: 20, streams: 3, peer: '127.0.0.1' }], 'one debug line says why the connection closes')
  t.same(logs.records.slice(started).filter((r) => (r['level'] as number) >= 40).map((r) => r['msg']), [], 'nothing warned or logged as an error')
  t.same(logs.records.filter((r) => r['msg'] === 'access').map((r) => r['path']), ['/1', '/2', '/3', '/other'], 'access lines for the requests served only')
})

/** A Tether with TLS and its redirect listener, `cap` requests per connection; the redirect listener's port. */
async function startRedirecting(t: Test, cap: number): Promise<number> {
  const up = await startUpstream('app-0', (_req, res) => res.end('app'))
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([up], {
    listen: {
      tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null },
      redirect: { host: '127.0.0.1', port: 0, https_port: null },
    },
    limits: { max_requests_per_connection: cap },
  }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  return Number(new URL(tether.redirectUrl!).port)
}

t.test('the redirect listener: a keep-alive connection carries as many, its last 308 says Connection: close', async (t) => {
  const redirectPort = await startRedirecting(t, 2)
  const c = await rawConnect(redirectPort)
  t.teardown(() => c.destroy())
  await oneByOne(t, c, ['/a', '/b'])
  t.ok(await c.waitEnd(5_000), 'closed after the 2nd')
  t.same(c.finals().map((r) => r.status), [308, 308])
  t.same(connectionHeaders(c).map((v) => v === 'close'), [false, true], 'only the 2nd says Connection: close')
})

/**
 * POST an 8 MiB body on a new connection to `port` without reading; once all is written (or a
 * write failed) read the answer. `error`: the first write or socket error (EPIPE: reset).
 */
function upload(port: number): Promise<{ text: string; error: string | null }> {
  const size = 8 * 1024 * 1024
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' })
    let error: string | null = null
    let wrote = 0
    let text = ''
    let finished = false
    const end = (): void => { s.destroy(); resolve({ text, error }) }
    const done = (): void => {
      if (finished) return
      finished = true
      s.setEncoding('latin1')
      s.on('data', (d: string) => { text += d })
      s.on('end', end)
      s.on('close', end)
    }
    const more = (): void => {
      if (error !== null || wrote >= size) return done()
      wrote += CHUNK.length
      s.write(CHUNK, (err) => { if (err) { error ??= (err as NodeJS.ErrnoException).code ?? err.message; done() } else more() })
    }
    s.on('error', (e: NodeJS.ErrnoException) => { error ??= e.code ?? e.message; done() })
    s.write(`POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: ${size}\r\n\r\n`)
    more()
  })
}
const CHUNK = Buffer.alloc(64 * 1024, 120)

t.test('HTTP/1.1: the last request\'s early answer (an upstream 401 to an 8 MiB upload) does not reset the client still uploading: the rest is read and dropped, then the connection closes', async (t) => {
  const up = await startUpstream('app-0', (_req, res) => { res.writeHead(401, { 'content-length': '2' }); res.end('no') })
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([up], { limits: { max_requests_per_connection: 1 } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  for (let i = 0; i < 3; i++) {
    const r = await upload(tether.port)
    t.match(r.text, /^HTTP\/1\.1 401 [^]*connection: close[^]*\r\n\r\nno$/i, `upload ${i + 1}: the 401 with Connection: close, whole`)
    t.equal(r.error, null, `upload ${i + 1}: the whole body was sent, no reset`)
  }
})

t.test('the redirect listener: the last request\'s 308 to an 8 MiB POST does not reset the client still uploading (docs/tls.md)', async (t) => {
  const redirectPort = await startRedirecting(t, 1)
  for (let i = 0; i < 3; i++) {
    const r = await upload(redirectPort)
    t.match(r.text, /^HTTP\/1\.1 308 [^]*connection: close/i, `upload ${i + 1}: the 308 with Connection: close`)
    t.equal(r.error, null, `upload ${i + 1}: no reset`)
  }
})

t.test('a reload applies to connections whose first request comes after it, also one opened before it', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 2 } })
  t.teardown(() => h.close())
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  await waitFor(() => h.openSockets().length === 1, 5_000, 'the connection accepted')
  h.tether.reload({ ...h.tether.config, limits: { ...h.tether.config.limits, max_requests_per_connection: 3 } })
  await oneByOne(t, c, ['/1', '/2', '/3'])
  t.ok(await c.waitEnd(5_000), 'closed after its 3rd, the value when its first request came')
  t.same(connectionHeaders(c).map((v) => v === 'close'), [false, false, true])
})

t.test('a reload applies a new value to new connections; an open one keeps the value it began with', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 2 } })
  t.teardown(() => h.close())
  const before = await rawConnect(h.port)
  t.teardown(() => before.destroy())
  await oneByOne(t, before, ['/1'])
  const result = h.tether.reload({ ...h.tether.config, limits: { ...h.tether.config.limits, max_requests_per_connection: 3 } })
  t.same(result.applied, ['limits'], 'applied, no restart')
  await oneByOne(t, before, ['/2'])
  t.ok(await before.waitEnd(5_000), 'the open connection closed after its 2nd, the value it began with')
  const after = await rawConnect(h.port)
  t.teardown(() => after.destroy())
  await oneByOne(t, after, ['/3', '/4', '/5'])
  t.ok(await after.waitEnd(5_000), 'a new connection closed after its 3rd')
  t.same(connectionHeaders(after).map((v) => v === 'close'), [false, false, true])
})

t.test('diffConfig: a change of limits.max_requests_per_connection alone is live; with max_header_bytes it needs a restart', async (t) => {
  const base = testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }])
  const live = diffConfig(base, { ...base, limits: { ...base.limits, max_requests_per_connection: 5, max_body_bytes: 10 } })
  t.same([live.applied, live.needsRestart, live.effective.limits.max_requests_per_connection], [['limits'], [], 5])
  const restart = diffConfig(base, { ...base, limits: { ...base.limits, max_requests_per_connection: 5, max_header_bytes: 8192 } })
  t.same([restart.applied, restart.needsRestart, restart.effective.limits.max_requests_per_connection], [[], ['limits'], 1000])
})

t.test('config: a value that is not an integer >= 0 is refused, naming the key and its line', async (t) => {
  const at = (value: string): readonly string[] => issuesOf(yaml('upstreams: [{ id: a, url: "http://127.0.0.1:1" }]', 'limits:', `  max_requests_per_connection: ${value}`))
  t.same(at('-1'), [`${FILE}:3:32 limits.max_requests_per_connection: expected an integer >= 0, got -1`])
  t.same(at('1.5'), [`${FILE}:3:32 limits.max_requests_per_connection: expected an integer, got 1.5`])
  t.same(at('many'), [`${FILE}:3:32 limits.max_requests_per_connection: expected an integer, got "many"`])
  t.same(at('7'), [], '7 is taken')
})
