// A stream error is the stream's alone (RFC 9113 sections 5.4.2 and 8.1.1): an h2 client whose
// request sends more DATA than its content-length gets that stream reset with RST_STREAM
// PROTOCOL_ERROR, while another stream of the same connection, its answer still on its way,
// completes and the connection serves on, on every Node Tether runs on (Node 24's nghttp2 1.69+
// reports the same reset to Node as an invalid frame, which Node itself turned into a GOAWAY
// INTERNAL_ERROR that took every stream with it). The stream's access line names the client's
// address, taken when its connection began (the stream is gone when the line is written).
import t, { type Test } from 'tap'
import http2 from 'node:http2'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

const TLS = { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null } as const

/** A stream's answer read whole: its status and body, or the reset that ended it. */
function answer(req: http2.ClientHttp2Stream): Promise<{ status: number; body: string; rstCode: number | undefined }> {
  return new Promise((resolve) => {
    let status = 0
    let body = ''
    req.on('response', (h) => { status = Number(h[':status']) })
    req.setEncoding('utf8')
    req.on('data', (c: string) => { body += c })
    req.on('error', () => undefined) // a reset: its code is read at 'close'
    req.on('close', () => resolve({ status, body, rstCode: req.rstCode }))
  })
}

async function check(t: Test, tls: boolean): Promise<void> {
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const up = await startUpstream('app-0', (req, res) => {
    req.resume()
    // /held answers only once the other stream was reset: its answer is on its way meanwhile
    if (req.url === '/held') void released.then(() => res.end('held'))
    else req.on('end', () => res.end(`ok ${req.url}`))
  })
  const logs = new LogCapture()
  const listen = tls ? { tls: TLS } : { http2: { cleartext: true } }
  const tether = await startTether(testConfig([up], { listen }), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })

  const client = http2.connect(tether.url, tls ? { ca: certs.ca, servername: 'localhost' } : {})
  const sessionEvents: string[] = []
  client.on('error', (err) => sessionEvents.push(`error ${err.message}`))
  client.on('goaway', (code) => sessionEvents.push(`goaway ${code}`))
  t.teardown(() => client.destroy())

  const held = answer(client.request({ ':path': '/held' }))
  await waitFor(() => up.seen.some((r) => r.url === '/held'), 10_000, 'the upstream to hold /held') // (no event says it)
  const long = client.request({ ':method': 'POST', ':path': '/long', 'content-length': '3' })
  const longDone = answer(long)
  long.end('helloworld') // 10 bytes where 3 were declared
  const reset = await within(longDone, 10_000, 'the end of /long')
  t.equal(reset.rstCode, http2.constants.NGHTTP2_PROTOCOL_ERROR, 'the stream sending past its content-length is reset with PROTOCOL_ERROR')
  t.equal(reset.status, 0, 'it got no answer')

  release()
  t.same(await within(held, 10_000, 'the answer to /held'), { status: 200, body: 'held', rstCode: http2.constants.NGHTTP2_NO_ERROR }, 'the other stream, in flight meanwhile, completes')
  t.same(await within(answer(client.request({ ':path': '/after' })), 10_000, 'the answer to /after'), { status: 200, body: 'ok /after', rstCode: http2.constants.NGHTTP2_NO_ERROR }, 'the connection serves a new stream after it')
  t.same(sessionEvents, [], 'no GOAWAY, no session error: the connection was never closed')
  t.notOk(up.seen.some((r) => r.url === '/long' && r.complete), 'the upstream never got /long whole')

  const line = (path: string): Record<string, unknown> | undefined => logs.access().find((r) => r['path'] === path)
  await waitFor(() => line('/long') !== undefined && line('/held') !== undefined, 10_000, 'the access lines of /long and /held') // (written as the streams close)
  t.match(line('/long'), { method: 'POST', http_version: '2.0', peer: '127.0.0.1' }, "the reset stream's access line names the client's address")
  t.match(line('/held'), { status: 200, outcome: 'ok', peer: '127.0.0.1' }, 'so does the completed one')
  await new Promise<void>((resolve) => client.close(() => resolve()))
}

t.test('an HTTP/1.1 access line names the peer too (the same field on every transport)', async (t) => {
  const up = await startUpstream('app-0')
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } } }), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const res = await fetch(`${tether.url}/plain`)
  t.equal(res.status, 200, 'served')
  await res.text()
  await waitFor(() => logs.access().length === 1, 10_000, 'the access line') // (written as the answer ends)
  t.match(logs.access()[0], { path: '/plain', http_version: '1.1', peer: '127.0.0.1' }, "the client's address")
})

t.test('h2c: a stream sending past its content-length is reset with PROTOCOL_ERROR; its sibling completes', (t) => check(t, false))
t.test('h2 over TLS: a stream sending past its content-length is reset with PROTOCOL_ERROR; its sibling completes', (t) => check(t, true))
