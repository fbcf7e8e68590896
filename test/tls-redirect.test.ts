// The plain-HTTP redirect listener (listen.redirect) and Strict-Transport-Security
// (listen.tls.hsts): 308 to https:// for everything but ACME challenges, which are proxied;
// HSTS on answers over TLS only.
import t, { type Test } from 'tap'
import net from 'node:net'
import https from 'node:https'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { hstsValue } from '../src/proxy/create-proxy.js'
import { REDIRECT_DRAIN_MAX, httpsLocation } from '../src/proxy/redirect-listener.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { LogCapture } from './fixtures/log-capture.js'
import { request, startUpstream, testConfig, waitFor, type DeepPartial, type Upstream } from './fixtures/upstream.js'
import type { Config } from '../src/config/schema.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

const YEAR = 365 * 86_400_000

async function start(t: Test, over: DeepPartial<Config['listen']> = {}, rest: DeepPartial<Config> = {}): Promise<{ tether: Tether; up: Upstream }> {
  const up = await startUpstream('app-0', (req, res) => {
    res.setHeader('x-proto', String(req.headers['x-forwarded-proto']))
    res.end(req.url === '/.well-known/acme-challenge/token-1' ? 'token-1.thumbprint' : 'app')
  })
  const config = testConfig([up], {
    ...rest,
    listen: {
      tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: { max_age: YEAR, include_subdomains: true, preload: false } },
      redirect: { host: '127.0.0.1', port: 0, https_port: null },
      ...over,
    },
  })
  const tether = await startTether(config, { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  return { tether, up }
}

function getTls(url: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    https.get(url, { ca: certs.ca, agent: false }, (res) => {
      res.resume().on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }))
    }).on('error', reject)
  })
}

t.test('the Location of a redirect: the Host\'s name, the https port (443 left out), the same target', async (t) => {
  t.equal(httpsLocation('shop.example:8080', '/cart?x=1', 443), 'https://shop.example/cart?x=1')
  t.equal(httpsLocation('Shop.Example', '/', 8443), 'https://shop.example:8443/')
  t.equal(httpsLocation('[::1]:80', '/a', 443), 'https://[::1]/a')
  for (const bad of [undefined, '', 'evil.example/path', 'user@evil.example', 'a b', 'evil.example\r\nx: y']) {
    t.equal(httpsLocation(bad, '/', 443), null, `Host ${JSON.stringify(bad)} makes no Location`)
  }
  t.equal(httpsLocation('a.example', '*', 443), null, 'only an origin-form target is redirected')
})

t.test('the HSTS value from its keys', async (t) => {
  t.equal(hstsValue(null), null)
  t.equal(hstsValue({ max_age: YEAR, include_subdomains: false, preload: false }), 'max-age=31536000')
  t.equal(hstsValue({ max_age: 2 * YEAR, include_subdomains: true, preload: true }), 'max-age=63072000; includeSubDomains; preload')
})

t.test('a plain-HTTP request gets 308 to the same URL on the TLS listener; the body is not forwarded', async (t) => {
  const { tether, up } = await start(t)
  t.ok(tether.redirectUrl)
  const r = await request(`${tether.redirectUrl!}/cart?item=7`, { headers: { host: 'localhost:8080' } })
  t.equal(r.status, 308)
  t.equal(r.headers.location, `https://localhost:${tether.port}/cart?item=7`)
  const post = await request(`${tether.redirectUrl!}/checkout`, { method: 'POST', headers: { host: 'localhost' }, body: 'card=4111' })
  t.equal(post.status, 308, '308 keeps the method: the client re-sends the POST over TLS')
  t.equal(up.seen.length, 0, 'nothing reached the upstream in plain HTTP')
  const bad = await request(`${tether.redirectUrl!}/`, { headers: { host: 'evil.example/x' } })
  t.equal(bad.status, 400, 'a Host that is not an authority gets 400, not a Location built from it')
})

t.test('https_port sets the port written in Location (443 is left out)', async (t) => {
  const { tether } = await start(t, { redirect: { host: '127.0.0.1', port: 0, https_port: 443 } })
  const r = await request(`${tether.redirectUrl!}/x`, { headers: { host: 'shop.example' } })
  t.equal(r.headers.location, 'https://shop.example/x')
})

t.test('an ACME HTTP-01 challenge is proxied to the upstreams in plain HTTP, without HSTS', async (t) => {
  const { tether, up } = await start(t)
  const r = await request(`${tether.redirectUrl!}/.well-known/acme-challenge/token-1`)
  t.equal(r.status, 200)
  t.equal(r.body, 'token-1.thumbprint')
  t.equal(r.headers['x-proto'], 'http')
  t.equal(r.headers['strict-transport-security'], undefined, 'HSTS is never sent over plain HTTP')
  t.equal(up.seen.length, 1)
})

t.test('only a challenge path with one token is proxied: dot segments, encoded slashes and queries are redirected', async (t) => {
  const { tether, up } = await start(t)
  for (const path of ['/.well-known/acme-challenge/../../admin', '/.well-known/acme-challenge/%2e%2e/%2e%2e/admin', '/.well-known/acme-challenge/a%2F..%2Fadmin', '/.well-known/acme-challenge/./token-1', '/.well-known/acme-challenge/token-1?x=../admin', '/.well-known/acme-challenge/']) {
    const r = await rawGet(tether.redirectUrl!, path)
    t.match(r, /^HTTP\/1\.1 308 /, `${path}: redirected`)
  }
  t.equal(up.seen.length, 0, 'nothing reached the upstream in clear text')
})

t.test('answers over TLS carry Strict-Transport-Security; an application\'s own value is kept', async (t) => {
  const { tether } = await start(t)
  const r = await getTls(`${tether.url}/`)
  t.equal(r.status, 200)
  t.equal(r.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains')
  t.equal(r.headers['x-proto'], 'https')

  const own = await startUpstream('app-own', (_req, res) => { res.setHeader('strict-transport-security', 'max-age=60'); res.end('own') })
  t.teardown(() => own.close())
  const config = testConfig([own], { listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: { max_age: YEAR, include_subdomains: false, preload: false } } } })
  const second = await startTether(config, { logger: createLogger('silent') })
  t.teardown(() => second.close(0))
  t.equal((await getTls(`${second.url}/`)).headers['strict-transport-security'], 'max-age=60')
})

/** A GET with the target exactly as written (no client normalisation), its raw answer. */
function rawGet(base: string, target: string): Promise<string> {
  const { port } = new URL(base)
  return new Promise((resolve) => {
    const sock = net.connect(Number(port), '127.0.0.1', () => sock.write(`GET ${target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n`))
    let got = ''
    sock.on('data', (c: Buffer) => (got += c.toString('latin1')))
    sock.on('error', () => undefined)
    sock.on('close', () => resolve(got))
  })
}

t.test('the redirect listener has the proxy listener\'s timeouts: a head not complete within client_headers gets 408 on time', async (t) => {
  const { tether } = await start(t, {}, { timeouts: { client_headers: 500 } })
  const { port } = new URL(tether.redirectUrl!)
  const t0 = Date.now()
  const got = await new Promise<string>((resolve) => {
    const sock = net.connect(Number(port), '127.0.0.1', () => sock.write('GET /x HTTP/1.1\r\nHost: shop.example\r\n'))
    let text = ''
    sock.on('data', (c: Buffer) => (text += c.toString('latin1')))
    sock.on('error', () => undefined)
    const timer = setTimeout(() => sock.destroy(), 5_000)
    sock.on('close', () => { clearTimeout(timer); resolve(text) })
  })
  t.match(got, /^HTTP\/1\.1 408 /)
  t.ok(Date.now() - t0 < 4_000, `within client_headers and one check (${Date.now() - t0} ms), not Node's 30 s check interval`)
})

t.test('an unwanted body after a redirect is dropped for at most client_headers and REDIRECT_DRAIN_MAX bytes, then the connection is closed; a short one leaves it open', async (t) => {
  const { tether } = await start(t, {}, { timeouts: { client_headers: 500 } })
  const { port } = new URL(tether.redirectUrl!)
  const connect = (): Promise<{ sock: net.Socket; text: () => string; closed: Promise<void> }> => new Promise((resolve) => {
    const sock = net.connect(Number(port), '127.0.0.1', () => resolve({ sock, text: () => text, closed }))
    let text = ''
    sock.on('data', (c: Buffer) => (text += c.toString('latin1')))
    sock.on('error', () => undefined)
    const closed = new Promise<void>((r) => sock.on('close', () => r()))
    t.teardown(() => sock.destroy())
  })
  // a trickled body: the 308 at once, the connection closed after client_headers
  const slow = await connect()
  const t0 = Date.now()
  slow.sock.write('POST /x HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 1000000\r\n\r\nab')
  const trickle = setInterval(() => { if (!slow.sock.destroyed) slow.sock.write('c') }, 50)
  t.teardown(() => clearInterval(trickle))
  await slow.closed
  clearInterval(trickle)
  t.match(slow.text(), /^HTTP\/1\.1 308 /, 'answered at once')
  t.ok(Date.now() - t0 < 4_000, `closed after about client_headers (${Date.now() - t0} ms), not held while the body trickles`)
  // more than REDIRECT_DRAIN_MAX at full speed: closed without waiting
  const big = await connect()
  big.sock.write(`POST /x HTTP/1.1\r\nHost: shop.example\r\nContent-Length: ${10 * REDIRECT_DRAIN_MAX}\r\n\r\n`)
  big.sock.write(Buffer.alloc(4 * REDIRECT_DRAIN_MAX, 120))
  await big.closed
  t.match(big.text(), /^HTTP\/1\.1 308 /)
  // a short body: read, and the connection serves the next request
  const short = await connect()
  short.sock.write('POST /x HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.1\r\nHost: shop.example\r\n\r\n')
  await waitFor(() => (short.text().match(/HTTP\/1\.1 308 /g) ?? []).length === 2, 5_000, 'both answers')
  t.match(short.text(), /Location: https:\/\/shop\.example:\d+\/y/i, 'the next request answered on the same connection')
})

/** Everything a raw connection to `port` gets for `text`, until it closes. */
function rawAll(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(text))
    let got = ''
    s.on('data', (c) => (got += c))
    s.on('close', () => resolve(got))
    s.on('error', reject)
  })
}

t.test('the redirect listener answers pipelined requests in order: a malformed one after two redirects gets its 400 after both', async (t) => {
  const { tether } = await start(t)
  const out = await rawAll(Number(new URL(tether.redirectUrl!).port), 'GET /a HTTP/1.1\r\nHost: shop.example\r\n\r\nGET /b HTTP/1.1\r\nHost: shop.example\r\n\r\nGET /c HTTP/1.1\r\nHost: shop.example\r\nBad Header: y\r\n\r\n')
  t.same([...out.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1]), ['308', '308', '400'])
  t.match(out, /location: https:\/\/shop\.example(:\d+)?\/a[^]*location: https:\/\/shop\.example(:\d+)?\/b/i, 'the 308s of /a and /b, in order')
  // a malformed body of a request pipelined behind a redirect: one answer for it (its 308 when
  // it was answered before its body was read, else its 400), then the close; never a second
  // answer to one request, never a connection left open
  const body = await rawAll(Number(new URL(tether.redirectUrl!).port), 'GET /a HTTP/1.1\r\nHost: shop.example\r\n\r\nPOST /b HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n')
  t.match([...body.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1]).join(','), /^308,(308|400)$/)
})

// until 2026-12-05 the redirect listener had no 'connect' listener: Node closed the connection
// as soon as a CONNECT was parsed, without an answer or a log line (behind a slow ACME
// challenge, its answer was cut too)
t.test('the redirect listener answers a CONNECT 405 in its turn, as the proxy listener does', async (t) => {
  const { tether } = await start(t)
  const port = Number(new URL(tether.redirectUrl!).port)
  const connect = 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'
  const alone = await rawAll(port, connect)
  t.match(alone, /^HTTP\/1\.1 405 /, 'a CONNECT alone')
  const behind = await rawAll(port, `GET /a HTTP/1.1\r\nHost: shop.example\r\n\r\nGET /.well-known/acme-challenge/token-1 HTTP/1.1\r\nHost: shop.example\r\n\r\n${connect}`)
  t.same([...behind.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1]), ['308', '200', '405'], 'behind a redirect and a proxied challenge')
})

t.test('a redirected request whose dropped body turns out malformed gets no second answer: the connection closes', async (t) => {
  const { tether } = await start(t)
  const out = await new Promise<string>((resolve, reject) => {
    const s = net.connect(Number(new URL(tether.redirectUrl!).port), '127.0.0.1', () => s.write('POST /b HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n'))
    let got = ''
    let sent = false
    s.on('data', (c) => {
      got += c
      if (!sent && got.includes('\r\n\r\n')) { // the 308 is out: now the malformed rest of the body
        sent = true
        s.write('zz\r\n')
      }
    })
    s.on('close', () => resolve(got))
    s.on('error', reject)
  })
  t.same([...out.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1]), ['308'], 'the 308 alone, then the close')
})

t.test('behind a slow ACME challenge, a pipelined request whose body is malformed gets its 400 in turn and the connection closes (no 308, no hang)', async (t) => {
  const up = await startUpstream('app-0', (_req, res) => { setTimeout(() => res.end('token'), 200) })
  const tether = await startTether(testConfig([up], {
    listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null }, redirect: { host: '127.0.0.1', port: 0, https_port: null } },
  }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const out = await rawAll(Number(new URL(tether.redirectUrl!).port), 'GET /.well-known/acme-challenge/t HTTP/1.1\r\nHost: shop.example\r\n\r\nPOST /b HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n')
  t.same([...out.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1]), ['200', '400'])
})

t.test('an ACME challenge proxied to a silent upstream gets 504, not a client connection cut at body_idle', async (t) => {
  const up = await startUpstream('app-0', () => undefined) // never answers
  const tether = await startTether(testConfig([up], {
    timeouts: { body_idle: 500, response_headers: 500 },
    listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null }, redirect: { host: '127.0.0.1', port: 0, https_port: null } },
  }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const out = await rawAll(Number(new URL(tether.redirectUrl!).port), 'GET /.well-known/acme-challenge/t HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n')
  t.match(out, /^HTTP\/1\.1 504 /)
})

t.test("the redirect listener's 400s are logged and counted as the proxy listener's refusals: no Host, an empty one, one that makes no Location, a pipelined body the parser refused, a head it refused", async (t) => {
  // the challenge is answered late, so that the malformed body behind it is read (and refused
  // by the parser) while it waits its turn
  const up = await startUpstream('app-0', (_req, res) => { setTimeout(() => res.end('token'), 200) })
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], {
    log: { level: 'info', access: true },
    listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null }, redirect: { host: '127.0.0.1', port: 0, https_port: null } },
  }), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const port = Number(new URL(tether.redirectUrl!).port)
  const counted = async (): Promise<{ refused: number; h11: number; none: number }> => {
    const text = (await request(`${tether.adminUrl}/metrics`)).body
    const sum = (re: RegExp): number => [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0)
    return {
      refused: sum(/^tether_http_requests_total\{upstream="none",[^}]*status_class="4xx"\} (\d+)$/gm),
      h11: sum(/^tether_client_requests_total\{protocol="http\/1\.1"\} (\d+)$/gm),
      none: sum(/^tether_client_requests_total\{protocol="none"\} (\d+)$/gm),
    }
  }
  const cases = [
    { name: 'no Host', input: 'GET /no-host HTTP/1.1\r\n\r\n', path: '/no-host', method: 'GET', statuses: ['400'] },
    { name: 'a challenge without Host', input: 'GET /.well-known/acme-challenge/t HTTP/1.1\r\n\r\n', path: '/.well-known/acme-challenge/t', method: 'GET', statuses: ['400'] },
    { name: 'an empty Host', input: 'GET /empty-host HTTP/1.1\r\nHost:\r\n\r\n', path: '/empty-host', method: 'GET', statuses: ['400'] },
    { name: 'a Host that makes no Location', input: 'GET /bad-host HTTP/1.1\r\nHost: a b\r\n\r\n', path: '/bad-host', method: 'GET', statuses: ['400'] },
    { name: 'a body the parser refused behind a challenge', input: 'GET /.well-known/acme-challenge/t HTTP/1.1\r\nHost: shop.example\r\n\r\nPOST /bad-body HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n', path: '/bad-body', method: 'POST', statuses: ['200', '400'] },
  ]
  for (const c of cases) {
    const before = { access: logs.access().length, counted: await counted() }
    const out = await rawAll(port, c.input)
    t.same([...out.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1]), c.statuses, `${c.name}: answered`)
    const line = logs.access().slice(before.access).find((l) => l['path'] === c.path && l['status'] === 400)
    t.match(line, { status: 400, outcome: 'TETHER_BAD_REQUEST', method: c.method, upstream: null, peer: '127.0.0.1' }, `${c.name}: an access line names the refusal`)
    const after = await counted()
    t.equal(after.refused, before.counted.refused + 1, `${c.name}: counted as a 4xx answer of no upstream`)
    t.equal(after.h11 - before.counted.h11, c.statuses.length, `${c.name}: counted as a finished HTTP/1.1 request`)
  }
  // a head the parser refused (clientError): the same shared handler as the proxy listener's
  const before = { access: logs.access().length, counted: await counted() }
  const out = await rawAll(port, 'GET /bad-head HTTP/1.1\r\nBad Header: y\r\n\r\n')
  t.match(out, /^HTTP\/1\.1 400 /)
  t.match(logs.access().slice(before.access), [{ status: 400, outcome: 'TETHER_BAD_REQUEST', method: 'GET', path: '/bad-head', upstream: null }], 'a refused head: an access line with its request line')
  const after = await counted()
  t.equal(after.refused, before.counted.refused + 1, 'a refused head: counted')
  t.equal(after.none, before.counted.none + 1, 'a refused head: counted with protocol none')
})

// until 2026-12-05 an HTTP/0.9 or RTSP-only request line (which Node's parser takes) was
// redirected, or, on a challenge path, proxied to the upstream as an HTTP/1.1 request
t.test('the redirect listener answers a request line that is not HTTP/1.x 400: never redirected, never a challenge proxied', async (t) => {
  const { tether, up } = await start(t)
  const port = Number(new URL(tether.redirectUrl!).port)
  for (const line of ['DESCRIBE /.well-known/acme-challenge/token-1 RTSP/1.0', 'GET /.well-known/acme-challenge/token-1', 'GET /cart HTTP/0.9', 'SETUP /cart RTSP/1.0']) {
    t.match(await rawAll(port, `${line}\r\nHost: shop.example\r\n\r\n`), /^HTTP\/1\.1 400 /, line)
  }
  const behind = await rawAll(port, 'GET /a HTTP/1.1\r\nHost: shop.example\r\n\r\nGET /.well-known/acme-challenge/token-1 HTTP/0.9\r\nHost: shop.example\r\n\r\n')
  t.same([...behind.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1]), ['308', '400'], 'behind a redirect, in its turn')
  t.equal(up.seen.length, 0, 'no challenge reached the upstream')
})
