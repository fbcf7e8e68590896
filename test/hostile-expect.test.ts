// Expect: 100-continue on a request Tether refuses from its head alone (RFC 9110 section
// 10.1.1: a server MUST either answer at once with the final status, when the method, target
// and header fields decide it, or send 100 Continue). A 100 before such a refusal tells the
// client to upload its body for nothing, and the refusal closes the connection, so a client
// still uploading gets a reset instead of the answer. nginx 1.22 answers these without a 100
// (it sends its 100 only once it reads a body). Raw sockets on loopback, a raw recording upstream.
import t from 'tap'
import type http from 'node:http'
import http2 from 'node:http2'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { h2cSession } from './fixtures/h2c.js'
import { startUpstream, testConfig, waitFor } from './fixtures/upstream.js'
import { rawConnect } from './fixtures/raw-client.js'
import { startHarness, type Harness } from './fixtures/raw-tether.js'
import { makeCertificateSet } from './fixtures/tls.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

let h: Harness
t.before(async () => { h = await startHarness({ retries: { attempts: 0 }, health: { passive: { enabled: false } } }) })
t.teardown(() => h.close())

const EXPECT = 'Expect: 100-continue\r\nContent-Length: 5\r\n'

/** The first answer to `head` (the body is sent only after a 100, as a waiting client does), and whether a 100 came first. */
async function firstAnswer(head: string, body = 'hello', port = h.port): Promise<{ statuses: number[] }> {
  const c = await rawConnect(port)
  try {
    c.write(head)
    await c.until(() => c.ended || c.responses().length > 0, 3000)
    if (c.responses()[0]?.status === 100) c.write(body)
    await c.until(() => c.ended || c.finals().length > 0, 3000)
    return { statuses: c.responses().map((r) => r.status) }
  } finally {
    c.destroy()
  }
}

const REFUSED: readonly [name: string, head: string, status: number][] = [
  ['TRACE', `TRACE /x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 405],
  ['OPTIONS *', `OPTIONS * HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 400],
  ['an absolute-form target that does not parse', `POST http://[bad/x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 400],
  ['an absolute-form target of another scheme (ftp://)', `POST ftp://a/x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 400],
  ['an absolute-form target with userinfo', `POST http://u@a/x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 400],
  ['Transfer-Encoding: gzip, chunked (a coding Tether cannot decode)', 'POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: gzip, chunked\r\n\r\n', 501],
  ['Transfer-Encoding: chunked, chunked', 'POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked, chunked\r\n\r\n', 400],
]

for (const [name, head, status] of REFUSED) {
  t.test(`${name} with Expect: 100-continue gets its ${status} at once, no 100 Continue first; nothing reaches the upstream`, async (t) => {
    const before = h.received().length
    t.same((await firstAnswer(head)).statuses, [status])
    await h.barrier()
    t.equal(h.received().length, before, 'nothing forwarded')
  })
}

t.test('a request Tether forwards still gets its 100 Continue, then the answer; a chunked one too', async (t) => {
  t.same((await firstAnswer(`POST /x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`)).statuses, [100, 200])
  t.same((await firstAnswer(`OPTIONS /x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`)).statuses, [100, 200])
  t.same((await firstAnswer('POST http://b.example/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n', '5\r\nhello\r\n0\r\n\r\n')).statuses, [100, 200])
})

t.test('over h2c too: TRACE and a lower-case method with Expect get their refusal without a 100 Continue; a POST gets its 100', async (t) => {
  const up = await startUpstream('app-0')
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const s = h2cSession(t, tether)
  const send = (method: string): Promise<string[]> => new Promise((resolve) => {
    const events: string[] = []
    const r = s.request({ ':method': method, ':path': '/', expect: '100-continue', 'content-length': '5' }, { endStream: false })
    // the body only after a 100 Continue, as a client that waits for it sends it
    r.on('continue', () => { events.push('100'); r.end('hello') })
    r.on('response', (h) => events.push(String(h[':status'])))
    r.on('error', () => events.push('error'))
    r.resume()
    r.on('close', () => resolve(events))
  })
  t.same(await send('TRACE'), ['405'])
  t.same(await send('post'), ['400'])
  t.same(await send('POST'), ['100', '200'])
  t.equal(up.seen.length, 1, 'only the POST reached the upstream')
})

t.test('one decision: a pipelined POST with Expect waits behind a slow GET while a reload raises max_body_bytes; it gets its 100, then its answer', async (t) => {
  // the 100 was once decided by the listener when the head arrived (the old config: 413, no 100)
  // and the request by the request path when its turn came (the new one: forwarded), so the
  // client waited for a 100 that never came
  const held: http.ServerResponse[] = []
  const up = await startUpstream('app-0', (req, res) => {
    if (req.url === '/slow') return void held.push(res)
    req.resume().on('end', () => res.end('ok'))
  })
  const tether = await startTether(testConfig([up], { limits: { max_body_bytes: 10 }, retries: { attempts: 0 }, health: { passive: { enabled: false } } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const c = await rawConnect(tether.port)
  t.teardown(() => c.destroy())
  c.write('GET /slow HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 20\r\n\r\n')
  await waitFor(() => held.length === 1, 3000, 'the slow GET at the upstream')
  tether.reload({ ...tether.config, limits: { ...tether.config.limits, max_body_bytes: null } })
  held[0]!.end('slow')
  await c.until(() => c.ended || c.responses().some((r) => r.status === 100) || c.finals().length >= 2, 3000)
  if (c.responses().some((r) => r.status === 100)) c.write('x'.repeat(20))
  await c.until(() => c.ended || c.finals().length >= 2, 3000)
  t.same(c.responses().map((r) => r.status), [200, 100, 200])
  t.same(up.seen.map((r) => `${r.method} ${r.url}`), ['GET /slow', 'POST /x'])
})

t.test('and the other way: a reload lowers max_body_bytes while it waits: its 413 without a 100', async (t) => {
  const held: http.ServerResponse[] = []
  const up = await startUpstream('app-0', (req, res) => {
    if (req.url === '/slow') return void held.push(res)
    req.resume().on('end', () => res.end('ok'))
  })
  const tether = await startTether(testConfig([up], { retries: { attempts: 0 }, health: { passive: { enabled: false } } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const c = await rawConnect(tether.port)
  t.teardown(() => c.destroy())
  c.write('GET /slow HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 20\r\n\r\n')
  await waitFor(() => held.length === 1, 3000, 'the slow GET at the upstream')
  tether.reload({ ...tether.config, limits: { ...tether.config.limits, max_body_bytes: 10 } })
  held[0]!.end('slow')
  await c.until(() => c.ended || c.finals().length >= 2, 3000)
  t.same(c.responses().map((r) => r.status), [200, 413])
})

t.test('a request refused after its head (no upstream left; its upstream gone): its 100, then the 503 (502), as before', async (t) => {
  const none = await startTether(testConfig([], { retries: { attempts: 0 } }), { logger: createLogger('silent') })
  t.teardown(() => none.close(0))
  t.same((await firstAnswer(`POST /x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 'hello', none.port)).statuses, [100, 503])
  const gone = await startUpstream('app-0')
  await gone.close()
  const tether = await startTether(testConfig([gone], { retries: { attempts: 0 }, health: { passive: { enabled: false } } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  t.same((await firstAnswer(`POST /x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 'hello', tether.port)).statuses, [100, 502])
})

/**
 * An h2 request `method` with `expect` and a 5-byte body, sent when a 100 comes (`bodyAtOnce`:
 * at once): what came, in order ('100', the status, 'error'), bounded at 3 s (a client waiting
 * for a 100 that never comes waits forever).
 */
function expecting(s: http2.ClientHttp2Session, method: string, expect: string, bodyAtOnce = false): Promise<string[]> {
  return new Promise((resolve) => {
    const events: string[] = []
    const r = s.request({ ':method': method, ':path': '/', expect, 'content-length': '5' }, { endStream: false })
    if (bodyAtOnce) r.end('hello')
    r.on('continue', () => { events.push('100'); r.end('hello') })
    r.on('response', (h) => events.push(String(h[':status'])))
    r.on('error', () => events.push('error'))
    r.resume()
    const bound = setTimeout(() => { events.push('no answer within 3 s'); r.close() }, 3000)
    r.on('close', () => { clearTimeout(bound); resolve(events) })
  })
}

t.test('h2c: the 100-continue token is case-insensitive (RFC 9110 section 10.1.1): expect: 100-Continue gets its 100', async (t) => {
  const up = await startUpstream('app-0')
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const s = h2cSession(t, tether)
  const send = (expect: string, bodyAtOnce = false): Promise<string[]> => expecting(s, 'POST', expect, bodyAtOnce)
  t.same(await send('100-continue'), ['100', '200'])
  t.same(await send('100-Continue'), ['100', '200'])
  t.same(await send('100-CONTINUE'), ['100', '200'])
  // another expectation is ignored, as on HTTP/1.1: served, no 100
  t.same(await send('something', true), ['200'], 'served without a 100')
})

t.test('h2 over TLS: expect: 100-Continue gets its 100 as well; TRACE its 405 without one', async (t) => {
  const up = await startUpstream('app-0')
  const tether = await startTether(testConfig([up], {
    listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null } },
  }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const s = http2.connect(tether.url, { ca: certs.ca })
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  const send = (method: string, expect: string): Promise<string[]> => expecting(s, method, expect)
  t.same(await send('POST', '100-Continue'), ['100', '200'])
  t.same(await send('POST', '100-continue'), ['100', '200'])
  t.same(await send('TRACE', '100-Continue'), ['405'])
})

t.test('the redirect listener (listen.redirect) treats Expect as the main listener does', async (t) => {
  const up = await startUpstream('app-0')
  const tether = await startTether(testConfig([up], {
    listen: {
      tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null },
      redirect: { host: '127.0.0.1', port: 0, https_port: null },
    },
  }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const port = Number(new URL(tether.redirectUrl!).port)
  // a redirect is decided on the head: the 308 without a 100 (nginx's `return 308` sends none)
  t.same((await firstAnswer(`POST /form HTTP/1.1\r\nHost: shop.example\r\n${EXPECT}\r\n`, 'hello', port)).statuses, [308])
  // a challenge goes through the request path: its refusals without a 100, its POST with one
  t.same((await firstAnswer(`TRACE /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: shop.example\r\n${EXPECT}\r\n`, 'hello', port)).statuses, [405])
  t.same((await firstAnswer(`POST /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: shop.example\r\n${EXPECT}\r\n`, 'hello', port)).statuses, [100, 200])
  // an expectation other than 100-continue is ignored (served), not 417
  t.same((await firstAnswer('GET /x HTTP/1.1\r\nHost: shop.example\r\nExpect: something\r\n\r\n', 'hello', port)).statuses, [308])
  t.same((await firstAnswer('GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: shop.example\r\nExpect: something\r\n\r\n', 'hello', port)).statuses, [200])
})

t.test('nothing along the way was logged as an unhandled error', async (t) => {
  t.same(h.unhandled(), [])
})
