// How Tether behaves when upstreams or clients misbehave: clear 502/504 answers, cut
// streams, cancelled upstream work, and never a crash.
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import http2 from 'node:http2'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startProxy, startUpstream, request, testConfig } from './fixtures/upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { onEvent, waitFor, when } from './fixtures/wait.js'
import { DISCARD_MAX } from '../src/proxy/request-path.js'

/** A port with nothing listening (bound, read, closed). */
async function deadPort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

t.test('an upstream that refuses connections gives 502 with a short plain body', async (t) => {
  const tether = await startProxy([{ id: 'dead', url: `http://127.0.0.1:${await deadPort()}` }])
  t.teardown(() => tether.close(0))
  const r = await request(tether.url)
  t.equal(r.status, 502)
  t.equal(r.headers['content-type'], 'text/plain; charset=utf-8')
  t.equal(r.body, 'Bad Gateway: upstream connection failed\n')
  t.notMatch(r.body, /ECONNREFUSED|at /, 'no internals leak')
})

t.test('an upstream that does not answer in time gives 504', async (t) => {
  const up = await startUpstream('slow', () => { /* never answers */ })
  const tether = await startProxy([up], { timeouts: { response_headers: 200 } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const r = await request(tether.url)
  t.equal(r.status, 504)
  t.equal(r.body, 'Gateway Timeout: upstream did not answer in time\n')
})

t.test('an upstream that stalls mid-body past body_idle is cut off', async (t) => {
  const up = await startUpstream('stall', (_req, res) => {
    res.writeHead(200, { 'content-length': '100' })
    res.write('partial')
  })
  const tether = await startProxy([up], { timeouts: { body_idle: 200 } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const err = await new Promise<string>((resolve) => {
    http.get(tether.url, { agent: false }, (res) => {
      t.equal(res.statusCode, 200)
      res.on('data', () => undefined)
      res.on('end', () => resolve('ended cleanly'))
      res.on('error', (e) => resolve((e as NodeJS.ErrnoException).code ?? e.message))
      res.on('aborted', () => resolve('aborted'))
    }).on('error', (e) => resolve((e as NodeJS.ErrnoException).code ?? e.message))
  })
  t.not(err, 'ended cleanly', `client saw the cut (${err})`)
})

t.test('an upstream crash mid-response ends the client response, and Tether keeps serving', async (t) => {
  const up = await startUpstream('crash', (req, res) => {
    if (req.url === '/ok') { res.end('fine'); return }
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('first part\n')
    setImmediate(() => req.socket.destroy())
  })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  const outcome = await new Promise<{ body: string; how: string }>((resolve) => {
    let body = ''
    http.get(tether.url, { agent: false }, (res) => {
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ body, how: 'end' }))
      res.on('error', () => resolve({ body, how: 'error' }))
      res.on('aborted', () => resolve({ body, how: 'aborted' }))
    }).on('error', () => resolve({ body, how: 'error' }))
  })
  t.equal(outcome.body, 'first part\n', 'what arrived before the crash was delivered')
  t.not(outcome.how, 'end', 'the client can tell the response was cut')
  t.equal((await request(`${tether.url}/ok`)).body, 'fine')
})

t.test('a client abort cancels the upstream request', async (t) => {
  let upstreamClosed: Promise<void> | null = null
  const up = await startUpstream('a', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('streaming…')
    upstreamClosed = new Promise<void>((r) => res.on('close', () => r()))
  })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  await new Promise<void>((resolve) => {
    const req = http.get(tether.url, { agent: false }, (res) => {
      res.once('data', () => { req.destroy(); resolve() })
    })
    req.on('error', () => undefined)
  })
  await when(onEvent(up.server, 'request'), () => upstreamClosed !== null, 5000, 'the request to reach the upstream')
  await upstreamClosed
  t.pass('the upstream saw its request closed after the client left')
})

t.test('a client abort during upload cancels the upstream request', async (t) => {
  let upstreamClosed: Promise<void> | null = null
  const up = await startUpstream('a', (req, res) => {
    if (req.method === 'GET') { res.end('ok'); return }
    upstreamClosed = new Promise<void>((r) => res.on('close', () => r()))
    req.resume()
  })
  const tether = await startProxy([up])
  t.teardown(async () => { await tether.close(0); await up.close() })
  const req = http.request(tether.url, { method: 'PUT', agent: false, headers: { 'content-length': '1000000' } })
  req.on('error', () => undefined)
  req.write('x'.repeat(1000))
  await when(onEvent(up.server, 'request'), () => upstreamClosed !== null, 5000, 'upload to start')
  req.destroy()
  await upstreamClosed
  t.pass('upstream request closed')
  t.equal((await request(tether.url)).status, 200, 'still serving')
})

t.test('graceful close lets an in-flight request finish and refuses new connections', async (t) => {
  let finish: (() => void) | null = null
  const up = await startUpstream('a', (_req, res) => { finish = () => res.end('done') })
  const tether = await startProxy([up])
  t.teardown(() => up.close())
  const inflight = request(tether.url)
  await when(onEvent(up.server, 'request'), () => finish !== null, 5000, 'the request to reach the upstream')
  const closed = tether.close(5000)
  finish!()
  const r = await inflight
  t.equal(r.body, 'done')
  t.equal(r.headers.connection, 'close', 'answers during the drain close their connection')
  await closed
  await t.rejects(request(tether.url), { code: 'ECONNREFUSED' })
})

t.test('requests still open when the grace period ends are cut by Tether and logged TETHER_SHUTTING_DOWN (HTTP/1.1 and h2): not retried, the upstream not blamed', async (t) => {
  // they were logged TETHER_UPSTREAM_RESET with an "upstream exchange failed" warning (the
  // pools are destroyed after the listener), one without an answer head retried first
  let reached = 0
  const up = await startUpstream('app-0', (req, res) => {
    reached++
    if (req.url === '/headless') return // no answer head, ever
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('x') // and no end
  })
  t.teardown(() => up.close())
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } } }), { logger: createLogger('info', logs) })
  let heads = 0 // the streaming answers' heads at their clients: the status is sent before the stop
  for (const path of ['/streaming', '/headless']) {
    const r = http.get(`${tether.url}${path}`, { agent: false })
    r.on('error', () => undefined)
    r.on('response', (res) => { heads++; res.resume() })
  }
  const s = http2.connect(tether.url)
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  const h2 = s.request({ ':path': '/h2-streaming' })
  h2.on('error', () => undefined)
  h2.once('response', () => heads++)
  h2.resume()
  await waitFor(() => reached === 3 && heads === 2, 5_000, 'the three requests to reach the upstream, the two heads their clients')
  await tether.close(300)
  await when(onEvent(logs, 'record'), () => logs.access().length === 3, 5_000, 'the access lines')
  const line = (path: string): Record<string, unknown> | undefined => logs.access().find((a) => a['path'] === path)
  t.match(line('/streaming'), { status: 200, outcome: 'TETHER_SHUTTING_DOWN', retries: 0 }, 'with the status sent')
  t.match(line('/headless'), { outcome: 'TETHER_SHUTTING_DOWN', retries: 0 }, 'not retried')
  t.match(line('/h2-streaming'), { status: 200, outcome: 'TETHER_SHUTTING_DOWN', http_version: '2.0' })
  t.same(logs.records.filter((r) => r['msg'] === 'upstream exchange failed'), [], 'the upstream is not blamed')
  t.equal(reached, 3, 'nothing sent again')
})

t.test('a WebSocket handshake still waiting for its upstream when the grace period ends is logged TETHER_SHUTTING_DOWN, not client_abort', async (t) => {
  // Tether closed the client's connection (closeAll at the grace end), its client did nothing
  let reached = 0
  const held: net.Socket[] = []
  const up = net.createServer((s) => { // takes the handshake, never answers it
    reached++
    held.push(s)
    s.on('error', () => undefined)
    s.resume()
  })
  await new Promise<void>((resolve) => up.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const s of held) s.destroy(); up.close() })
  const logs = new LogCapture()
  const tether = await startTether(testConfig([{ id: 'app-0', url: `http://127.0.0.1:${(up.address() as AddressInfo).port}` }]), { logger: createLogger('info', logs) })
  const c = net.connect(tether.port, '127.0.0.1')
  t.teardown(() => c.destroy())
  c.on('error', () => undefined)
  c.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  await waitFor(() => reached === 1, 5_000, 'the handshake to reach the upstream')
  await tether.close(300)
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5_000, 'the access line')
  t.match(logs.access()[0], { path: '/ws', protocol: 'websocket', status: 0, outcome: 'TETHER_SHUTTING_DOWN', retries: 0 })
  t.same(logs.records.filter((r) => r['msg'] === 'upstream exchange failed'), [], 'the upstream is not blamed')
})

t.test('pipelined requests on one connection are forwarded one at a time, answered in order', async (t) => {
  let active = 0
  let most = 0
  const up = await startUpstream('a', (req, res) => {
    active++
    most = Math.max(most, active)
    setImmediate(() => {
      active--
      res.end(`${req.url}\n`)
    })
  })
  const tether = await startProxy([up], { affinity: { key: 'none' } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const N = 50
  const answers = await new Promise<string>((resolve, reject) => {
    const s = net.connect(tether.port, '127.0.0.1', () => {
      let text = ''
      for (let i = 0; i < N; i++) text += `GET /r${i} HTTP/1.1\r\nHost: x\r\n${i === N - 1 ? 'Connection: close\r\n' : ''}\r\n`
      s.write(text)
    })
    let out = ''
    s.on('data', (c) => (out += c))
    s.on('end', () => resolve(out))
    s.on('error', reject)
  })
  const bodies = [...answers.matchAll(/\r\n\r\n(\/r\d+)\n/g)].map((m) => m[1])
  t.same(bodies, Array.from({ length: N }, (_, i) => `/r${i}`), 'all answered, in order')
  t.equal(most, 1, 'never more than one upstream request for the connection')
})

t.test('an upstream that answers before it took the whole upload: the rest is read and dropped, and the next request on the connection is answered', async (t) => {
  // a Node app answering 401 at the head, without reading the body (it drains it itself)
  const up = await startUpstream('early', (req, res) => {
    if (req.method === 'POST') res.writeHead(401).end('auth')
    else res.end('next')
  })
  const tether = await startProxy([up], { affinity: { key: 'none' } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  // (DISCARD_MAX, the bound past which the connection is closed instead, is not reached here
  // in a way a test can order: a draining upstream may take the whole body first)
  for (const size of [300_000, 4_000_000]) {
    const c = await rawClient(t, tether.port)
    c.s.write(`POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${size}\r\n\r\n`)
    const sent = new Promise((r) => c.s.write(Buffer.alloc(size, 120), r)) // the whole body, as a client does
    await when(onEvent(c.s, 'data'), () => c.got().includes('auth'), 5_000, 'the early answer')
    t.match(c.got(), /^HTTP\/1\.1 401 /, `${size} B upload: the answer relayed`)
    await sent
    c.s.write('GET /next HTTP/1.1\r\nHost: a\r\n\r\n')
    await when(c.change, () => c.got().includes('next') || c.closed(), 5_000, 'the next answer')
    t.match(c.got(), /HTTP\/1\.1 200 [^]*next$/, `${size} B upload: the next request on the connection answered`)
    c.s.destroy()
  }
})

t.test('an early answer to an upload past DISCARD_MAX: the answer is relayed, then the connection is closed instead of reading the rest', async (t) => {
  // a raw upstream that answers at the head and then reads nothing more: it takes at most what
  // the kernel buffers, so most of the body is left to Tether to drop
  const sockets = new Set<net.Socket>()
  const up = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => undefined)
    s.once('data', () => {
      s.write('HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nauth')
      s.pause()
    })
  })
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r))
  const tether = await startProxy([{ id: 'early', url: `http://127.0.0.1:${(up.address() as AddressInfo).port}` }], { affinity: { key: 'none' } })
  t.teardown(async () => {
    await tether.close(0)
    for (const s of sockets) s.destroy()
    await new Promise((r) => up.close(r))
  })
  const size = DISCARD_MAX + 24 * 1024 * 1024 // more than the upstream's buffers can hide
  const c = await rawClient(t, tether.port)
  c.s.write(`POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${size}\r\n\r\n`)
  const chunk = Buffer.alloc(1024 * 1024, 120)
  let written = 0
  const pump = (): void => {
    while (written < size && !c.closed()) {
      written += chunk.length
      if (!c.s.write(chunk)) return void c.s.once('drain', pump)
    }
  }
  pump()
  await when(c.change, () => c.got().includes('auth') || c.closed(), 10_000, 'the early answer')
  t.match(c.got(), /^HTTP\/1\.1 401 [^]*auth$/, 'the early answer relayed')
  await when(onEvent(c.s, 'close'), c.closed, 10_000, 'the connection to close')
  t.ok(written < size, `closed before the whole body was sent (${written} of ${size} bytes written)`)
})

/** A raw client connection: what it got so far, whether it closed, and a subscription to either changing. */
async function rawClient(t: Test, port: number): Promise<{ s: net.Socket; got: () => string; closed: () => boolean; change: (fn: () => void) => () => void }> {
  const s = net.connect(port, '127.0.0.1')
  t.teardown(() => s.destroy())
  let got = ''
  let closed = false
  s.on('data', (c: Buffer) => (got += c.toString('latin1')))
  s.on('error', () => undefined)
  s.on('close', () => (closed = true))
  await new Promise((r) => s.once('connect', r))
  const change = (fn: () => void): (() => void) => { const a = onEvent(s, 'data')(fn); const b = onEvent(s, 'close')(fn); return () => { a(); b() } }
  return { s, got: () => got, closed: () => closed, change }
}

t.test('a body being dropped after an early answer that turns out malformed closes the connection, without a second answer', async (t) => {
  const up = await startUpstream('early', (_req, res) => res.writeHead(401).end('auth'))
  const tether = await startProxy([up], { affinity: { key: 'none' } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const c = await rawClient(t, tether.port)
  c.s.write(`POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4000\r\n${'x'.repeat(0x4000)}\r\n`)
  await when(onEvent(c.s, 'data'), () => c.got().includes('auth'), 5_000, 'the early answer')
  c.s.write('zz-not-a-chunk-size\r\n')
  await when(onEvent(c.s, 'close'), c.closed, 5_000, 'the connection to close')
  t.same([...c.got().matchAll(/HTTP\/1\.1 \d{3}/g)].map((m) => m[0]), ['HTTP/1.1 401'], 'the early answer only: no 400 answering nothing')
})

t.test("a malformed next head in the same read as the end of a body is the next request's: answered 400 (or 431), after the first answer", async (t) => {
  const up = await startUpstream('early', (req, res) => {
    if (req.url === '/early') return void res.writeHead(401).end('auth')
    req.resume()
    req.on('end', () => res.end('read'))
  })
  const tether = await startProxy([up], { affinity: { key: 'none' } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const big = `GET /x HTTP/1.1\r\nHost: a\r\nX-Big: ${'b'.repeat(40_000)}\r\n\r\n`
  for (const [path, next, want] of [['/read', 'GARBAGE\r\n\r\n', ['200', '400']], ['/read', big, ['200', '431']], ['/early', 'GARBAGE\r\n\r\n', ['401', '400']], ['/early', big, ['401', '431']]] as const) {
    const c = await rawClient(t, tether.port)
    const n = 300_000
    c.s.write(`POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Length: ${n}\r\n\r\n`)
    if (path === '/early') {
      c.s.write(Buffer.alloc(1_000, 97))
      await when(onEvent(c.s, 'data'), () => c.got().includes('auth'), 5_000, 'the early answer')
      c.s.write(Buffer.concat([Buffer.alloc(n - 1_000, 97), Buffer.from(next)])) // the body's end and the next head in one write
    } else c.s.write(Buffer.concat([Buffer.alloc(n, 97), Buffer.from(next)]))
    await when(c.change, () => c.closed(), 5_000, 'the connection to close')
    t.same([...c.got().matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]), [...want], `${path}, next ${next.length} B: ${want.join(' then ')}`)
  }
})
