// Cleartext HTTP/2 with prior knowledge (listen.http2.cleartext) next to HTTP/1.1 on one port, for
// a TLS-terminating load balancer that speaks h2c. Split from h2c.test.ts (shared setup in
// test/fixtures/h2c.ts), with h2c-stalled-streams.test.ts and h2c-answer-delivery.test.ts. Here:
// curl --http2-prior-knowledge, Node's http2 client and HTTP/1.1 clients on the same port, the
// client's address, connections closed at the client bound (idle, PINGs only, silent both ways),
// and rapid reset.
import t from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import { once } from 'node:events'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { request, startEndlessUpstream, startUpstream, testConfig } from './fixtures/upstream.js'
import { FLAG, FRAME, PREFACE, frame, getBlock, settingsFrame } from './fixtures/h2-frames.js'
import { LogCapture } from './fixtures/log-capture.js'
import { onEvent, waitFor, when, within } from './fixtures/wait.js'
import { curl, h2cOver, h2cSession, h2cTether, readAnswer, stalledStream } from './fixtures/h2c.js'

t.test('curl --http2-prior-knowledge gets h2 on the plain listener; HTTP/1.1 clients on the same port keep working', async (t) => {
  const tether = await h2cTether(t, true)
  const h2 = await curl(['--http2-prior-knowledge', `${tether.url}/x`])
  t.equal(h2.code, 0)
  t.match(h2.out, /^HTTP\/2 200/)
  t.match(h2.out, /"version":"1.1","proto":"http"/, 'HTTP/1.1 upstream, X-Forwarded-Proto: http (no TLS)')
  t.equal((h2.out.match(/^set-cookie:/gim) ?? []).length, 3)
  const h1 = await request(`${tether.url}/y`)
  t.equal(h1.status, 200)
  const curl11 = await curl(['--http1.1', `${tether.url}/z`])
  t.match(curl11.out, /^HTTP\/1\.1 200/)
})

t.test('Node\'s http2 client on h2c: concurrent streams on one connection', async (t) => {
  const tether = await h2cTether(t, true)
  const s = http2.connect(tether.url)
  t.teardown(() => s.destroy())
  const one = (): Promise<number> => new Promise((resolve, reject) => {
    const req = s.request({ ':path': '/' })
    req.on('response', (h) => { req.resume(); req.on('end', () => resolve(Number(h[':status']))) })
    req.on('error', reject)
  })
  t.same(await Promise.all(Array.from({ length: 20 }, one)), Array(20).fill(200))
})

t.test('Expect: 100-continue on h2c: a declared body over limits.max_body_bytes gets 413 and no 100 Continue (as over TLS and HTTP/1.1); one within gets its 100', async (t) => {
  const up = await startUpstream('app-0')
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } }, limits: { max_body_bytes: 1000 } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const s = h2cSession(t, tether)
  const post = (length: number): Promise<string[]> => new Promise((resolve) => {
    const events: string[] = []
    const r = s.request({ ':method': 'POST', ':path': '/', expect: '100-continue', 'content-length': String(length) }, { endStream: false })
    // the body only after a 100 Continue, as a client that waits for it sends it
    r.on('continue', () => { events.push('100'); r.end('x'.repeat(length)) })
    r.on('response', (h) => events.push(String(h[':status'])))
    r.on('error', () => events.push('error'))
    r.resume()
    r.on('close', () => resolve(events))
  })
  t.same(await post(5000), ['413'], 'over the limit: 413 at once, no 100 Continue (the client sends no body)')
  t.equal(up.seen.length, 0, 'nothing reached the upstream')
  t.same(await post(10), ['100', '200'], 'within the limit: 100 Continue, then the answer')
})

t.test('a preface sent a byte at a time still gets h2c (the first read held "P" alone: HTTP/1.1 answered); PROPFIND, also starting with "PR", stays HTTP/1.1', async (t) => {
  const tether = await h2cTether(t, true)
  // Tether runs in this process: two turns of the loop give its poll phase a read of each byte alone
  const turns = async (): Promise<void> => { for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve)) }
  const firstBytes = async (bytes: Buffer): Promise<Buffer> => {
    const socket = net.connect(Number(new URL(tether.url).port), '127.0.0.1')
    socket.setNoDelay(true)
    t.teardown(() => socket.destroy())
    await once(socket, 'connect')
    let got = Buffer.alloc(0)
    socket.on('data', (c: Buffer) => (got = Buffer.concat([got, c])))
    for (const byte of bytes.subarray(0, 3)) {
      socket.write(Buffer.of(byte))
      await turns()
    }
    socket.write(bytes.subarray(3))
    await waitFor(() => got.length >= 9)
    return got
  }
  const h2 = await firstBytes(Buffer.concat([PREFACE, settingsFrame([])]))
  t.equal(h2[3], FRAME.SETTINGS, 'the server speaks h2 first: its SETTINGS frame')
  const h1 = await firstBytes(Buffer.from('PROPFIND /x HTTP/1.1\r\nhost: a\r\n\r\n', 'latin1'))
  t.match(h1.toString('latin1'), /^HTTP\/1\.1 /, 'an HTTP/1.1 answer')
})

t.test('without cleartext the plain listener speaks HTTP/1.1 only', async (t) => {
  const tether = await h2cTether(t, false)
  const h2 = await curl(['--http2-prior-knowledge', `${tether.url}/x`])
  t.not(h2.code, 0, 'an h2 preface is not HTTP/1.1')
})

t.test('every h2c answer arrives whole: the stream is not reset once the answer is written (40 curl runs)', async (t) => {
  const tether = await h2cTether(t, true)
  let whole = 0
  const errors: string[] = []
  for (let i = 0; i < 40; i++) {
    const r = await curl(['--http2-prior-knowledge', `${tether.url}/${i}`])
    if (r.code === 0 && /\r\n\r\n\{"version":"1.1"/.test(r.out)) whole++
    else errors.push(`curl exit ${r.code}`)
  }
  t.equal(whole, 40, errors.slice(0, 3).join('; '))
})

t.test("an h2c request carries its client's address: X-Forwarded-For, X-Forwarded-Port, trusted proxies and the client_ip key", async (t) => {
  const up = await startUpstream('app-0', (req, res) => res.end(JSON.stringify(req.headers)))
  const tether = await startTether(testConfig([up], {
    listen: { http2: { cleartext: true } },
    affinity: { key: 'client_ip', client_ip: { trusted_proxies: ['127.0.0.1/32'] } },
  }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const s = http2.connect(tether.url)
  t.teardown(() => s.destroy())
  const ask = (headers: Record<string, string>): Promise<Record<string, string>> => new Promise((resolve, reject) => {
    const req = s.request({ ':path': '/', ...headers })
    let body = ''
    req.on('data', (c: Buffer) => (body += c))
    req.on('end', () => resolve(JSON.parse(body)))
    req.on('error', reject)
  })
  let seen = await ask({})
  t.equal(seen['x-forwarded-for'], '127.0.0.1', 'the peer, not an empty entry')
  t.equal(seen['x-forwarded-port'], String(tether.port))
  // the load balancer in front is trusted: its X-Forwarded-* are kept, the client it names is the key
  seen = await ask({ 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https' })
  t.equal(seen['x-forwarded-for'], '203.0.113.7, 127.0.0.1')
  t.equal(seen['x-forwarded-proto'], 'https', "a trusted proxy's X-Forwarded-Proto is kept")
  const b = tether.sessions.peek('203.0.113.7', Date.now())
  t.ok(b !== null, 'the client_ip key is the client the trusted proxy names')
})

t.test('an idle h2c connection is closed after timeouts.body_idle, as a TLS one', async (t) => {
  const up = await startUpstream('app-0')
  // the client bound: the longer of body_idle and response_headers, plus a second
  const tether = await h2cOver(t, up, { bound: 300 })
  const s = h2cSession(t, tether)
  await readAnswer(s, '/')
  await new Promise<void>((resolve) => s.once('close', resolve)) // the test times out if it never closes
  t.pass('closed by Tether')
})

t.test("an h2c connection whose client only sends PINGs is closed at the client bound: PINGs alone do not keep it open", async (t) => {
  const up = await startUpstream('app-0')
  const tether = await h2cOver(t, up, { bound: 300 })
  const s = h2cSession(t, tether)
  await readAnswer(s, '/')
  let answered = 0
  const pings = setInterval(() => { if (!s.destroyed) s.ping(() => { answered++ }) }, 100)
  t.teardown(() => clearInterval(pings))
  await within(new Promise((resolve) => s.once('close', resolve)), 10_000, 'the connection to be closed (the client bound, 1.3 s, up to twice it)')
  t.ok(answered > 0, `closed by Tether though its PINGs were answered (${answered})`)
})

t.test('a client silent both ways (a stream it reads nothing of, nothing else sent) has its connection closed at the client bound, logged as its timeout, not client_abort', async (t) => {
  const up = await startEndlessUpstream('app-0', 256 * 1024)
  const logs = new LogCapture()
  const tether = await h2cOver(t, up, { bound: 300, logs })
  const { s, stalled } = stalledStream(t, tether, '/big') // and the client sends nothing more
  await within(new Promise((resolve) => s.once('close', resolve)), 10_000, 'the connection to be closed (the client bound, 1.3 s, up to twice it)')
  await waitFor(() => up.answerClosed(), 5_000, 'its upstream request to end')
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5_000, 'the access log line')
  t.match(logs.access()[0], { status: 200, outcome: 'TETHER_CLIENT_TIMEOUT' }, "Tether's cut, logged as the client's timeout")
  t.equal(tether.health.state('app-0'), 'healthy', 'the upstream is not blamed')
})

t.test('connections doing rapid reset one after another are each closed, but warned once, then at most once per 30 s: a client cannot flood the log', async (t) => {
  const up = await startUpstream('app-0')
  const logs = new LogCapture()
  const tether = await h2cOver(t, up, { logs })
  const block = getBlock(`127.0.0.1:${tether.port}`, '/', 'http')
  const flood: Buffer[] = [PREFACE, settingsFrame([])]
  for (let i = 0; i < 200; i++) {
    const id = 2 * i + 1
    flood.push(frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, id, block), frame(FRAME.RST_STREAM, 0, id, Buffer.from([0, 0, 0, 8])))
  }
  for (let i = 0; i < 3; i++) {
    const socket = net.connect(tether.port, '127.0.0.1')
    socket.on('error', () => undefined)
    socket.resume()
    socket.write(Buffer.concat(flood))
    await within(new Promise((resolve) => socket.once('close', resolve)), 10_000, `connection ${i} to be closed by Tether`)
  }
  const warned = logs.records.filter((x) => /rapid reset/.test(String(x['msg'])))
  t.equal(warned.length, 1, 'three such connections in a row: one warn line')
  t.match(warned[0], { level: 40, peer: '127.0.0.1' }, 'with the client\'s address (an h2c connection\'s too)')
})
