// HTTP semantics through Tether against real upstream servers on loopback.
import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { startProxy, startUpstream, request, testConfig } from './fixtures/upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { waitFor } from './fixtures/wait.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'

t.test('hop-by-hop headers are removed in both directions, end-to-end headers kept', async (t) => {
  const up = await startUpstream('a', (req, res) => {
    res.setHeader('x-seen', JSON.stringify(req.headers))
    res.setHeader('connection', 'close, x-up-hop')
    res.setHeader('x-up-hop', 'secret')
    res.setHeader('keep-alive', 'timeout=77')
    res.setHeader('trailer', 'x-t')
    res.setHeader('proxy-authenticate', 'Basic')
    res.setHeader('x-end-to-end', 'yes')
    res.end('ok')
  })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  const r = await request(tether.url, {
    headers: {
      connection: 'keep-alive, x-client-hop', 'x-client-hop': '1', 'keep-alive': 'timeout=9',
      te: 'trailers', 'proxy-authorization': 'Basic x', upgrade: 'foo', 'proxy-connection': 'keep-alive',
      'x-keep': 'kept',
    },
  })
  t.equal(r.status, 200)
  const seen = JSON.parse(r.headers['x-seen'] as string)
  for (const h of ['x-client-hop', 'keep-alive', 'te', 'proxy-authorization', 'upgrade', 'proxy-connection', 'transfer-encoding']) {
    t.notOk(h in seen, `upstream did not get ${h}`)
  }
  t.equal(seen['x-keep'], 'kept')
  for (const h of ['x-up-hop', 'proxy-authenticate']) t.notOk(h in r.headers, `client did not get ${h}`)
  // Node sends this answer chunked (it announces trailers): the announcement passes, as the
  // trailer fields would (test/proxy-trailers.test.ts)
  t.equal(r.headers.trailer, 'x-t')
  t.not(r.headers['keep-alive'], 'timeout=77', "the upstream's Keep-Alive is not passed on (Tether states its own)")
  t.equal(r.headers['x-end-to-end'], 'yes')
  t.equal(r.body, 'ok')
})

t.test('X-Forwarded-For is appended, Proto and Host set; preserve_host controls Host', async (t) => {
  const up = await startUpstream('a', (req, res) => res.end(JSON.stringify(req.headers)))
  const keep = await startProxy([up])
  const rewrite = await startProxy([up], { forwarding: { preserve_host: false } })
  const off = await startProxy([up], { forwarding: { x_forwarded: false } })
  t.teardown(async () => { await keep.close(0); await rewrite.close(0); await off.close(0); await up.close() })

  let h = JSON.parse((await request(keep.url, { headers: { host: 'shop.example', 'x-forwarded-for': '203.0.113.9' } })).body)
  t.equal(h['x-forwarded-for'], '203.0.113.9, 127.0.0.1')
  t.equal(h['x-forwarded-proto'], 'http')
  t.equal(h['x-forwarded-host'], 'shop.example')
  t.equal(h.host, 'shop.example')

  h = JSON.parse((await request(keep.url, { headers: { host: 'a.example', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil' } })).body)
  t.equal(h['x-forwarded-for'], '127.0.0.1', 'no client XFF: just the peer')
  t.equal(h['x-forwarded-proto'], 'http', 'client cannot claim https')
  t.equal(h['x-forwarded-host'], 'a.example')

  h = JSON.parse((await request(rewrite.url, { headers: { host: 'shop.example' } })).body)
  t.equal(h.host, `127.0.0.1:${up.port}`, 'preserve_host: false sends the upstream host')
  t.equal(h['x-forwarded-host'], 'shop.example')

  h = JSON.parse((await request(off.url, { headers: { 'x-forwarded-for': '203.0.113.9' } })).body)
  t.equal(h['x-forwarded-for'], '203.0.113.9', 'x_forwarded: false passes headers untouched')
  t.notOk('x-forwarded-proto' in h)
})

t.test('X-Tether-* headers never cross Tether in either direction', async (t) => {
  const up = await startUpstream('a', (req, res) => {
    res.setHeader('x-tether-state', 'internal')
    res.setHeader('X-Tether-Anything', 'internal')
    res.end(JSON.stringify(req.headers))
  })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  const r = await request(tether.url, { headers: { 'x-tether-rehydrate': 'forged', 'X-Tether-Epoch': '99' } })
  const seen = JSON.parse(r.body)
  t.notOk('x-tether-rehydrate' in seen, 'client X-Tether-* stripped')
  t.equal(seen['x-tether-epoch'], '0', "only Tether's own epoch header arrives, not the client's")
  t.notOk(Object.keys(r.headers).some((k) => k.startsWith('x-tether-')), 'upstream X-Tether-* stripped')
})

t.test('multiple Set-Cookie headers stay separate', async (t) => {
  const up = await startUpstream('a', (_req, res) => {
    res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; Expires=Wed, 21 Oct 2099 07:28:00 GMT', 'c=3'])
    res.end('ok')
  })
  const tether = await startProxy([up], { affinity: { key: 'none' } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const r = await request(tether.url)
  t.same(r.headers['set-cookie'], ['a=1; Path=/', 'b=2; Expires=Wed, 21 Oct 2099 07:28:00 GMT', 'c=3'])
  t.equal(r.rawHeaders.filter((h) => h.toLowerCase() === 'set-cookie').length, 3)

  // with cookie affinity, Tether's own cookie is added as a fourth, separate header
  const sticky = await startProxy([up])
  t.teardown(() => sticky.close(0))
  const s = await request(sticky.url)
  t.equal(s.headers['set-cookie']?.length, 4)
  t.match(s.headers['set-cookie']?.[3], /^tether=[A-Za-z0-9_-]+; Path=\/; Secure; HttpOnly; SameSite=Lax$/)
})

t.test('HEAD, 204 and 304 carry no body', async (t) => {
  const up = await startUpstream('a', (req, res) => {
    if (req.url === '/204') { res.writeHead(204); res.end(); return }
    if (req.url === '/304') { res.writeHead(304, { etag: '"x"' }); res.end(); return }
    res.setHeader('content-length', '5')
    res.end(req.method === 'HEAD' ? undefined : 'hello')
  })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  const head = await request(tether.url, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['content-length'], '5', 'HEAD keeps Content-Length')
  t.equal(head.body, '')
  const r204 = await request(`${tether.url}/204`)
  t.equal(r204.status, 204)
  t.equal(r204.body, '')
  t.notOk(r204.headers['transfer-encoding'])
  const r304 = await request(`${tether.url}/304`)
  t.equal(r304.status, 304)
  t.equal(r304.headers.etag, '"x"')
  t.equal(r304.body, '')
  // the keep-alive connection is still usable after bodiless answers
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  for (const path of ['/204', '/304', '/', '/204', '/']) {
    const r = await request(`${tether.url}${path}`, { agent })
    t.ok(r.status === 204 || r.status === 304 || r.body === 'hello', `${path} over a reused connection`)
  }
})

t.test('Expect: 100-continue gets 100 Continue, then the body is forwarded', async (t) => {
  const up = await startUpstream('a', (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => res.end(`got ${Buffer.concat(chunks).toString()} expect=${req.headers.expect ?? 'none'}`))
  })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  const body = await new Promise<string>((resolve, reject) => {
    const req = http.request(tether.url, { method: 'POST', agent: false, headers: { expect: '100-continue', 'content-length': '5' } })
    let continued = false
    req.on('continue', () => { continued = true; req.end('hello') })
    req.on('response', (res) => {
      let s = ''
      res.on('data', (c) => (s += c))
      res.on('end', () => (continued ? resolve(s) : reject(new Error('no 100 Continue'))))
    })
    req.on('error', reject)
  })
  t.equal(body, 'got hello expect=none')
})

t.test('chunked responses and Server-Sent Events pass through without delay', async (t) => {
  let release: (() => void) | null = null
  const up = await startUpstream('a', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    res.write('data: one\n\n')
    // the second event is only sent once the client has seen the first: proves no buffering
    release = () => res.end('data: two\n\n')
  })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  const events = await new Promise<string[]>((resolve, reject) => {
    http.get(tether.url, { agent: false }, (res) => {
      const got: string[] = []
      t.equal(res.headers['content-type'], 'text/event-stream')
      res.setEncoding('utf8')
      res.on('data', (c: string) => {
        got.push(c.trim())
        if (got.length === 1) release!()
      })
      res.on('end', () => resolve(got))
    }).on('error', reject)
  })
  t.same(events.join('\n').split('\n').filter(Boolean), ['data: one', 'data: two'])
})

t.test('request and response bodies stream both ways', async (t) => {
  const up = await startUpstream('a', (req, res) => {
    // answer as soon as the first request chunk arrives, echoing the rest as it comes
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    req.pipe(res)
  })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  const echoed = await new Promise<string>((resolve, reject) => {
    const req = http.request(tether.url, { method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked' } })
    req.on('response', (res) => {
      let s = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => {
        s += c
        // the client only sends the next chunk after the echo of the previous one arrived
        if (s === 'ping-1') req.write('ping-2')
        else if (s === 'ping-1ping-2') req.end()
      })
      res.on('end', () => resolve(s))
    })
    req.on('error', reject)
    req.write('ping-1')
  })
  t.equal(echoed, 'ping-1ping-2')
})

t.test('weights share requests without a key in smooth round-robin', async (t) => {
  const a = await startUpstream('a')
  const b = await startUpstream('b')
  const tether = await startProxy([{ id: 'a', url: a.url, weight: 3 } as never, { id: 'b', url: b.url }], { affinity: { key: 'none' } })
  t.teardown(async () => { await tether.close(0); await a.close(); await b.close() })
  const got: string[] = []
  for (let i = 0; i < 8; i++) got.push((await request(tether.url)).body.trim())
  t.equal(got.filter((x) => x === 'a').length, 6)
  t.equal(got.filter((x) => x === 'b').length, 2)
})

t.test('malformed requests get 400 and oversized heads 431; the proxy keeps serving', async (t) => {
  const up = await startUpstream('a')
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { limits: { max_header_bytes: 2048 } }), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const raw = (text: string) => new Promise<string>((resolve, reject) => {
    const s = net.connect(tether.port, '127.0.0.1', () => s.end(text))
    let out = ''
    s.on('data', (c) => (out += c))
    s.on('end', () => resolve(out))
    s.on('error', reject)
  })
  const bad = await raw('GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n')
  t.match(bad, /^HTTP\/1\.1 400 Bad Request\r\n/)
  t.notMatch(bad, /at .*\.(js|ts):\d+/, 'no stack trace')
  const garbage = await raw('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n')
  t.match(garbage, /^HTTP\/1\.1 400 /)
  const big = await raw(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`)
  t.match(big, /^HTTP\/1\.1 431 /)
  t.equal((await request(tether.url)).body, 'a\n', 'still serving')
  // each refused request is counted and logged, as nginx logs its 400s: no upstream, its request
  // line as far as it can be told (test/client-error-request-line.test.ts), escaped
  const refused = logs.records.filter((r) => r.msg === 'access' && r.upstream === null)
  t.same(refused.map((r) => [r.status, r.outcome]), [[400, 'TETHER_BAD_REQUEST'], [400, 'TETHER_BAD_REQUEST'], [431, 'TETHER_HEADERS_TOO_LARGE']])
  t.same(refused.map((r) => [r.method, r.path]), [['GET', '/'], [null, '\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xC3\\xBC\\x03\\x03 not http at all'], ['GET', '/']], 'the request lines')
  const metrics = await tether.metrics.render()
  t.match(metrics, /tether_http_requests_total\{upstream="none",method="OTHER",status_class="4xx"\} 3/, 'counted with no upstream')
})

t.test('a malformed request pipelined behind valid ones is answered 400 after all of them, in order, then the connection closes (RFC 9112 section 9.3.2)', async (t) => {
  const ran: string[] = []
  const up = await startUpstream('a', (req, res) => { req.resume(); req.on('end', () => { ran.push(req.url!); setTimeout(() => res.end(`ran ${req.url}`), 20) }) })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  const reqs = Array.from({ length: 10 }, (_, i) => i + 1).map((i) => (i === 5 ? 'GET /5 HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n' : `POST /${i} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi`)).join('')
  const out = await new Promise<string>((resolve, reject) => {
    const s = net.connect(tether.port, '127.0.0.1', () => s.write(reqs))
    let got = ''
    s.on('data', (c) => (got += c))
    s.on('close', () => resolve(got))
    s.on('error', reject)
  })
  const answers = [...out.matchAll(/HTTP\/1\.1 (\d+)[^]*?\r\n\r\n(ran \/\d|Bad Request\n)/g)].map((m) => `${m[1]} ${m[2]!.trim()}`)
  t.same(answers, ['200 ran /1', '200 ran /2', '200 ran /3', '200 ran /4', '400 Bad Request'], 'every request before the bad one answered, in order, then the 400')
  t.same(ran, ['/1', '/2', '/3', '/4'], 'what the application ran is what the client was answered')
})

t.test('a malformed body of a request pipelined behind one being answered gets its 400 in turn at once, even with body_idle 0; nothing of it is forwarded', async (t) => {
  const seen: string[] = []
  const up = await startUpstream('a', (req, res) => { seen.push(req.url!); req.resume(); req.on('end', () => setTimeout(() => res.end(`ran ${req.url}`), 100)) })
  const tether = await startProxy([up], { timeouts: { body_idle: 0 } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const out = await new Promise<string>((resolve, reject) => {
    const s = net.connect(tether.port, '127.0.0.1', () => s.write('GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n'))
    let got = ''
    s.on('data', (c) => (got += c))
    s.on('close', () => resolve(got)) // the test times out if the connection hangs
    s.on('error', reject)
  })
  t.same([...out.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1]), ['200', '400'], '/a answered, then the 400 of /b')
  t.match(out, /ran \/a/)
  t.same(seen, ['/a'], '/b never reached the upstream')
})

t.test('a malformed request behind an answer that closes the connection is neither answered nor counted', async (t) => {
  const up = await startUpstream('a', (_req, res) => { res.setHeader('connection', 'close'); res.end('a') })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  const out = await new Promise<string>((resolve, reject) => {
    const s = net.connect(tether.port, '127.0.0.1', () => s.write('GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n'))
    let got = ''
    s.on('data', (c) => (got += c))
    s.on('close', () => resolve(got))
    s.on('error', reject)
  })
  t.same([...out.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1]), ['200'])
  t.notMatch(await tether.metrics.render(), /tether_http_requests_total\{upstream="none"[^}]*status_class="4xx"\}/, 'no 400 counted: none was sent')
})

t.test('"HTTP/2.0" in an HTTP/1 request line gets 505 and the connection closes (it is not HTTP/2, and must not pass its pipelining rule)', async (t) => {
  let reached = 0
  const up = await startUpstream('a', (_req, res) => { reached++; res.end('a') })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  const raw = (text: string) => new Promise<string>((resolve, reject) => {
    const s = net.connect(tether.port, '127.0.0.1', () => s.write(text))
    let out = ''
    s.on('data', (c) => (out += c))
    s.on('close', () => resolve(out))
    s.on('error', reject)
  })
  const pipelined = await raw('GET /1 HTTP/2.0\r\nHost: x\r\n\r\nGET /2 HTTP/2.0\r\nHost: x\r\n\r\nGET /3 HTTP/2.0\r\nHost: x\r\n\r\n')
  t.match(pipelined, /^HTTP\/1\.1 505 HTTP Version Not Supported\r\n/)
  t.equal(pipelined.match(/HTTP\/1\.1 /g)?.length, 1, 'one answer, then the connection closes')
  t.match(await raw('CONNECT x:443 HTTP/2.0\r\nHost: x:443\r\n\r\n'), /^HTTP\/1\.1 505 /)
  t.match(await raw('GET /ws HTTP/2.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'), /^HTTP\/1\.1 505 /)
  t.equal(reached, 0, 'nothing reached the upstream')
  t.match(await tether.metrics.render(), /tether_http_requests_total\{upstream="none",method="GET",status_class="5xx"\} 2/, 'counted')
})

t.test('a client that leaves after the head of its answer is logged and counted with the status it was sent (as nginx), the outcome client_abort', async (t) => {
  const up = await startUpstream('a', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.write('first\n') }) // never ends
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up]), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  await new Promise<void>((resolve, reject) => {
    const req = http.get(`${tether.url}/stream`, { agent: false }, (res) => res.once('data', () => { req.destroy(); resolve() }))
    req.on('error', () => undefined)
    setTimeout(() => reject(new Error('no head')), 5_000).unref()
  })
  await waitFor(() => logs.records.some((r) => r.msg === 'access'), 5_000, 'the access line')
  t.match(logs.records.find((r) => r.msg === 'access'), { status: 200, outcome: 'client_abort' })
  t.match(await tether.metrics.render(), /tether_http_requests_total\{upstream="a",method="GET",status_class="2xx"\} 1/)
})

t.test('max_body_bytes answers 413 for declared and for chunked bodies', async (t) => {
  const up = await startUpstream('a', (req, res) => { req.resume(); req.on('end', () => res.end('accepted')) })
  const tether = await startProxy([up], { limits: { max_body_bytes: 1000 } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  t.equal((await request(tether.url, { method: 'POST', body: 'x'.repeat(1000) })).body, 'accepted', 'at the limit passes')
  const declared = await request(tether.url, { method: 'POST', body: 'x'.repeat(1001) })
  t.equal(declared.status, 413)
  t.equal(up.seen.length, 1, 'a declared oversized body never reaches the upstream')
  const chunked = await new Promise<number>((resolve, reject) => {
    const req = http.request(tether.url, { method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked' } }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', (e) => (e as NodeJS.ErrnoException).code === 'ECONNRESET' || (e as NodeJS.ErrnoException).code === 'EPIPE' ? undefined : reject(e))
    for (let i = 0; i < 5; i++) req.write('y'.repeat(400))
    req.end()
  })
  t.equal(chunked, 413)
})
