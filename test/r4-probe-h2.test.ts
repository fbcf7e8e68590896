// r4 review probes, HTTP/2
import t from 'tap'
import http from 'node:http'
import http2 from 'node:http2'
import tls from 'node:tls'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { startUpstream, testConfig, waitFor } from './fixtures/upstream.js'
import { within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

interface Answer { status: number; body: string; error: string | null }
function ask(s: http2.ClientHttp2Session, path: string, headers: http2.OutgoingHttpHeaders = {}, body?: string): Promise<Answer> {
  return new Promise((resolve) => {
    const r = s.request({ ':path': path, ...headers }, { endStream: body === undefined })
    let status = 0
    let text = ''
    r.setEncoding('utf8')
    if (body !== undefined) r.on('continue', () => r.end(body))
    r.on('response', (h) => { status = Number(h[':status']) })
    r.on('data', (d: string) => { text += d })
    r.on('end', () => resolve({ status, body: text, error: null }))
    r.on('error', (err: Error) => resolve({ status, body: text, error: err.message }))
  })
}

t.test('h2: a past-cap stream with Expect: 100-continue is refused, not forwarded', async (t) => {
  const seen: string[] = []
  const up = await startUpstream('app-0', (req, res) => { seen.push(req.url!); req.resume(); req.on('end', () => res.end(req.url)) })
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } }, limits: { max_requests_per_connection: 3 } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const s = http2.connect(tether.url)
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  await new Promise((r) => s.once('remoteSettings', r))
  const all = await within(Promise.all([ask(s, '/1'), ask(s, '/2'), ask(s, '/3'), ask(s, '/4', { ':method': 'POST', expect: '100-continue' }, 'hi'), ask(s, '/5', { ':method': 'CONNECT', ':authority': 'x:443', ':path': undefined as never })]), 10_000, 'answers')
  t.same(all.slice(0, 3).map((a) => a.status), [200, 200, 200])
  t.ok(all.slice(3).every((a) => /REFUSED_STREAM/.test(a.error ?? '')), JSON.stringify(all.slice(3)))
  const other = http2.connect(tether.url)
  t.teardown(() => other.destroy())
  await ask(other, '/other')
  t.same(seen, ['/1', '/2', '/3', '/other'])
})

t.test('h2: cap 10, 100 streams in one write: no rapid-reset judgement, 10 answered whole', async (t) => {
  const up = await startUpstream('app-0', (req, res) => res.end(req.url))
  t.teardown(() => up.close())
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } }, limits: { max_requests_per_connection: 10 } }), { logger: createLogger('debug', logs) })
  t.teardown(() => tether.close(0))
  const started = logs.records.length
  const s = http2.connect(tether.url)
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  const got: [number, number][] = []
  s.on('goaway', (c, l) => got.push([c, l]))
  await new Promise((r) => s.once('remoteSettings', r))
  const all = await within(Promise.all(Array.from({ length: 100 }, (_, i) => ask(s, `/${i + 1}`))), 10_000, 'answers')
  t.same(all.filter((a) => a.status === 200).length, 10, 'ten answered')
  t.same(all.filter((a) => /REFUSED_STREAM/.test(a.error ?? '')).length, 90, 'ninety refused')
  t.same(got, [[0, 19]], 'goaway')
  t.same(logs.records.slice(started).filter((r) => (r['level'] as number) >= 40).map((r) => r['msg']), [])
})

t.test('h2: the Nth stream cancelled by the client at once: GOAWAY NO_ERROR, the ones in flight finish, the connection closes', async (t) => {
  const held: http.ServerResponse[] = []
  const up = await startUpstream('app-0', (req, res) => { held.push(res); if (held.length === 2) for (const r of held) r.end('x'.repeat(70_000)) })
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } }, limits: { max_requests_per_connection: 3 } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const s = http2.connect(tether.url)
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  const got: [number, number][] = []
  s.on('goaway', (c, l) => got.push([c, l]))
  const closed = new Promise((r) => s.once('close', r))
  const a = ask(s, '/1'); const b = ask(s, '/2')
  const r3 = s.request({ ':path': '/3' }); r3.on('error', () => undefined); r3.close(http2.constants.NGHTTP2_CANCEL)
  const [x, y] = await within(Promise.all([a, b]), 10_000, 'answers')
  t.same([x.status, x.body.length, y.status, y.body.length], [200, 70000, 200, 70000])
  await within(closed, 10_000, 'close')
  t.ok(got.length > 0 && got.every(([c]) => c === 0), JSON.stringify(got))
})

t.test('HTTP/1.1 over the TLS port (ALPN http/1.1): cap 2', async (t) => {
  const up = await startUpstream('app-0', (req, res) => res.end(req.url))
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([up], {
    listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null } },
    limits: { max_requests_per_connection: 2 },
  }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const sock = tls.connect({ port: tether.port, host: '127.0.0.1', ca: certs.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] })
  t.teardown(() => sock.destroy())
  let text = ''
  sock.setEncoding('latin1')
  sock.on('data', (d: string) => { text += d })
  const ended = new Promise((r) => sock.once('end', r))
  sock.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n')
  await within(ended, 5000, 'end')
  t.equal((text.match(/HTTP\/1.1 200/g) ?? []).length, 2, text)
  t.match(text, /Connection: close/i)
  t.notMatch(text, /\/3/)
})
