// Cleartext HTTP/2 with prior knowledge (listen.http2.cleartext) next to HTTP/1.1 on one port,
// for a TLS-terminating load balancer that speaks h2c: curl --http2-prior-knowledge, Node's
// http2 client, and HTTP/1.1 clients on the same port.
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import http2 from 'node:http2'
import net from 'node:net'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { request, startEndlessUpstream, startUpstream, testConfig, type Upstream } from './fixtures/upstream.js'
import { FLAG, FRAME, PREFACE, frame, getBlock, readFrames, settingsFrame, windowUpdate } from './fixtures/h2-frames.js'
import { LogCapture } from './fixtures/log-capture.js'
import { onEvent, waitFor, when, within } from './fixtures/wait.js'

async function h2cTether(t: Test, cleartext: boolean): Promise<Tether> {
  const up = await startUpstream('app-0', (req, res) => {
    res.setHeader('set-cookie', ['a=1', 'b=2'])
    res.end(JSON.stringify({ version: req.httpVersion, proto: req.headers['x-forwarded-proto'], host: req.headers.host }))
  })
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext } } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  return tether
}

function curl(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => execFile('curl', ['-sS', '--max-time', '10', '-D', '-', ...args], (err, out) => resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? 1), out })))
}

/**
 * Tether with h2c on (`maxStreams`: its listen.http2.max_concurrent_streams) over `up`, both
 * closed at teardown (`up` unless `upClosed`: it was closed to leave nothing listening);
 * `bound` sets timeouts.body_idle and response_headers (the client bound is the longer plus a
 * second). Logs into `logs` at info if given, else nothing.
 */
async function h2cOver(t: Test, up: Upstream, opts: { bound?: number; maxStreams?: number; logs?: LogCapture; upClosed?: boolean } = {}): Promise<Tether> {
  const http2Listen = opts.maxStreams === undefined ? { cleartext: true } : { cleartext: true, max_concurrent_streams: opts.maxStreams }
  const timeouts = opts.bound === undefined ? {} : { timeouts: { body_idle: opts.bound, response_headers: opts.bound } }
  const logger = opts.logs === undefined ? createLogger('silent') : createLogger('info', opts.logs)
  const tether = await startTether(testConfig([up], { listen: { http2: http2Listen }, ...timeouts }), { logger })
  t.teardown(async () => { await tether.close(0); if (opts.upClosed !== true) await up.close() })
  return tether
}

/** An h2c connection to `tether` (destroyed at teardown, its errors ignored) with the client `settings` given. */
function h2cSession(t: Test, tether: Tether, settings?: http2.Settings): http2.ClientHttp2Session {
  const s = http2.connect(tether.url, settings === undefined ? undefined : { settings })
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  return s
}

/** Keeps `s` busy: a PING every 100 ms until teardown. */
function keepBusy(t: Test, s: http2.ClientHttp2Session): void {
  const busy = setInterval(() => { if (!s.destroyed) s.ping(() => undefined) }, 100)
  t.teardown(() => clearInterval(busy))
}

/** Resolves once the answer to a request for `path` on `s` has been read to its end. */
function readAnswer(s: http2.ClientHttp2Session, path: string): Promise<void> {
  return new Promise<void>((resolve) => { const r = s.request({ ':path': path }); r.resume(); r.on('end', resolve) })
}

/** An h2c connection to `tether` with one stream for `path` whose answer it never reads (its window fills up). */
function stalledStream(t: Test, tether: Tether, path: string): { s: http2.ClientHttp2Session; stalled: http2.ClientHttp2Stream } {
  const s = h2cSession(t, tether)
  const stalled = s.request({ ':path': path })
  stalled.on('error', () => undefined)
  stalled.pause()
  return { s, stalled }
}

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

t.test('a stream whose client stopped reading is cut on its own while the connection stays busy, and its upstream request ends', async (t) => {
  // the session's idle timer is refreshed by any frame: PINGs or other streams kept a stalled
  // stream, and its upstream request, open for good (nginx's send_timeout is per stream).
  // PINGs alone keep the connection open only while an answer waits to go out (Node counts
  // their answers as its progress): once the stalled stream is cut, a trickling stream keeps
  // it busy, else it would be closed idle within a client bound, racing the next stream
  let upstreamClosed = false
  const up = await startUpstream('app-0', (req, res) => {
    if (req.url === '/trickle') {
      res.writeHead(200, { 'content-type': 'text/plain' })
      const trickle = setInterval(() => res.write('x'), 100) // the upstream's own pace
      res.on('close', () => clearInterval(trickle))
      return
    }
    if (req.url !== '/big') return void res.end('ok')
    res.on('close', () => { upstreamClosed = true })
    const chunk = Buffer.alloc(256 * 1024, 'x')
    const pump = (): void => { while (!res.destroyed && res.write(chunk)); }
    res.on('drain', pump)
    pump()
  })
  const tether = await h2cOver(t, up, { bound: 300 })
  const { s, stalled } = stalledStream(t, tether, '/big')
  const reset = new Promise<number>((resolve) => stalled.once('close', () => resolve(stalled.rstCode)))
  // the connection stays busy all along
  keepBusy(t, s)
  const trickling = s.request({ ':path': '/trickle' })
  trickling.on('error', () => undefined)
  trickling.resume()
  const code = await within(reset, 15_000, 'the stalled stream to be cut (four client bounds of 1.3 s)')
  t.equal(code, http2.constants.NGHTTP2_INTERNAL_ERROR, 'reset (never a clean end: the answer was not whole)')
  await waitFor(() => upstreamClosed, 5_000, 'its upstream request to end')
  t.equal(s.destroyed, false, 'the connection itself stays')
  t.equal(tether.health.state('app-0'), 'healthy', 'the client\'s doing: the upstream is not blamed')
  const other = await new Promise<number>((resolve) => { const r = s.request({ ':path': '/' }); r.on('response', (h) => resolve(Number(h[':status']))); r.resume() })
  t.equal(other, 200, 'and serves the next stream')
  trickling.close()
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

t.test('a stream whose answer ended upstream but whose client takes none of it is reset while the connection stays busy', async (t) => {
  // the exchange is over (its upstream request ended), so its stall cut no longer watches the
  // stream; Node's stream timer counts the connection's PING answers as progress. Such a
  // stream held its slot and its answer for good
  const up = await startUpstream('app-0', (_req, res) => res.end(Buffer.alloc(10 * 1024, 'y')))
  const tether = await h2cOver(t, up, { bound: 300 })
  // a window of 0: nothing of an answer can be sent until the client says so, which it never does
  const s = h2cSession(t, tether, { initialWindowSize: 0 })
  const closed: Promise<number>[] = []
  for (let i = 0; i < 5; i++) {
    const r = s.request({ ':path': `/small-${i}` })
    r.on('error', () => undefined)
    closed.push(new Promise<number>((resolve) => r.once('close', () => resolve(r.rstCode))))
  }
  keepBusy(t, s)
  const codes = await within(Promise.all(closed), 15_000, 'the streams to be reset (four client bounds of 1.3 s)')
  t.same(codes, codes.map(() => http2.constants.NGHTTP2_INTERNAL_ERROR), 'reset (never a clean end: the client has none of the answer)')
  t.equal(s.destroyed, false, 'the connection itself stays')
})

t.test('a stream whose answer ended upstream is reset when its client takes none of it while another stream keeps the connection busy; logged as the client\'s timeout', async (t) => {
  // the answer (10 KiB) ended upstream at once, so the upstream connection is free; the client
  // announced a window of 1 KiB and never reads that stream, while another stream of the same
  // connection carries a trickle (Node's session timer stays fresh). The stream held its slot
  // and 9 KiB of answer for as long as the connection stayed busy
  const up = await startUpstream('app-0', (req, res) => {
    if (req.url === '/small') return void res.end(Buffer.alloc(10 * 1024, 'y'))
    res.writeHead(200, { 'content-type': 'text/plain' })
    const trickle = setInterval(() => res.write('x'), 100) // the upstream's own pace
    res.on('close', () => clearInterval(trickle))
  })
  const logs = new LogCapture()
  // two streams at a time: the busy one and the stalled one fill the connection
  const tether = await h2cOver(t, up, { bound: 300, maxStreams: 2, logs })
  const s = h2cSession(t, tether, { initialWindowSize: 1024 })
  const busy = s.request({ ':path': '/busy' })
  busy.on('error', () => undefined)
  let trickled = 0
  busy.on('data', (c: Buffer) => { trickled += c.length })
  const stalled = s.request({ ':path': '/small' })
  stalled.on('error', () => undefined)
  stalled.pause() // never read
  const reset = new Promise<number>((resolve) => stalled.once('close', () => resolve(stalled.rstCode)))
  const code = await within(reset, 15_000, 'the stalled stream to be reset (four client bounds of 1.3 s)')
  t.equal(code, http2.constants.NGHTTP2_INTERNAL_ERROR, 'reset, never a clean end (the client has not the whole answer)')
  t.ok(trickled > 0 && !busy.closed, 'while the other stream went on')
  t.equal(s.destroyed, false, 'the connection itself stays')
  await when(onEvent(logs, 'record'), () => logs.access().some((a) => a['path'] === '/small'), 5_000, 'the access line of the stalled stream')
  t.match(logs.access().find((a) => a['path'] === '/small'), { status: 200, outcome: 'TETHER_CLIENT_TIMEOUT' }, "logged as the client's timeout, as the cut of an answer still streaming")
  t.equal(tether.health.state('app-0'), 'healthy', 'the upstream is not blamed')
  const next = s.request({ ':path': '/small' })
  next.on('error', () => undefined)
  let bytes = 0
  next.on('data', (c: Buffer) => { bytes += c.length })
  await within(new Promise<void>((resolve) => next.once('end', resolve)), 5_000, 'a new stream in the freed slot')
  t.equal(bytes, 10 * 1024, 'its slot is free again: a new stream gets its whole answer')
  busy.close()
})

t.test("Tether's own error answers (its upstream down: 502; a TRACE or CONNECT refused: 405) to a client that takes none of them are reset while the connection stays busy; logged as the client's timeout", async (t) => {
  // nothing upstream times Tether's own answer (no upstream exchange): its few bytes waited for
  // a window of 0 as long as PINGs kept the connection busy, holding the stream and its slot
  const up = await startUpstream('app-0')
  await up.close() // nothing listens: a routed request is answered by Tether itself
  const logs = new LogCapture()
  const tether = await h2cOver(t, up, { bound: 300, logs, upClosed: true })
  const s = h2cSession(t, tether, { initialWindowSize: 0 })
  const ask = (method: string, path: string): { status: () => number; reset: Promise<number> } => {
    const r = s.request(method === 'CONNECT' ? { ':method': method, ':authority': path } : { ':method': method, ':path': path })
    r.on('error', () => undefined)
    let status = 0
    r.once('response', (h) => { status = Number(h[':status']) })
    return { status: () => status, reset: new Promise<number>((resolve) => r.once('close', () => resolve(r.rstCode))) }
  }
  const down = ask('GET', '/down') // routed: the connection is refused, Tether answers
  const trace = ask('TRACE', '/trace') // refused before routing
  const connect = ask('CONNECT', 'example.com:443') // refused too (Node hands it to the listener)
  keepBusy(t, s)
  const codes = await within(Promise.all([down.reset, trace.reset, connect.reset]), 15_000, 'the streams to be reset (four client bounds of 1.3 s)')
  t.equal(down.status(), 502, "Tether's own answer (the connection refused; no active probes here)")
  t.equal(trace.status(), 405)
  t.equal(connect.status(), 405)
  t.same(codes, codes.map(() => http2.constants.NGHTTP2_INTERNAL_ERROR), 'reset (never a clean end: the client has none of the answer)')
  t.equal(s.destroyed, false, 'the connection itself stays')
  await when(onEvent(logs, 'record'), () => logs.access().length === 3, 5_000, 'the access lines')
  t.match(logs.access().find((a) => a['path'] === '/down'), { status: down.status(), outcome: 'TETHER_CLIENT_TIMEOUT' }, "logged as the client's timeout, with the status sent")
  t.match(logs.access().find((a) => a['path'] === '/trace'), { status: 405, outcome: 'TETHER_CLIENT_TIMEOUT' })
  t.match(logs.access().find((a) => a['method'] === 'CONNECT'), { status: 405, outcome: 'TETHER_CLIENT_TIMEOUT' })
  t.equal(logs.records.filter((r) => r['msg'] === 'upstream exchange failed' && r['path'] === '/down').length, 1, "the upstream's failure behind the 502 is still warned, once")
})

t.test("the upstream failure behind Tether's own h2 answer, which its client takes whole, is warned once", async (t) => {
  // the warning is told when the answer is written, before its delivery settles: the access
  // line written once it went out whole carried the failure again (two warnings per 502)
  const up = await startUpstream('app-0')
  await up.close() // nothing listens: Tether answers 502 itself
  const logs = new LogCapture()
  const tether = await h2cOver(t, up, { logs, upClosed: true })
  const s = h2cSession(t, tether)
  const r = s.request({ ':path': '/down' })
  r.on('error', () => undefined)
  let status = 0
  r.once('response', (h) => { status = Number(h[':status']) })
  r.resume()
  await within(new Promise<void>((resolve) => r.once('close', resolve)), 5_000, 'the answer')
  t.equal(status, 502)
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5_000, 'the access line')
  t.match(logs.access()[0], { status: 502, outcome: 'TETHER_UPSTREAM_CONNECT' })
  t.equal(logs.records.filter((x) => x['msg'] === 'upstream exchange failed').length, 1, 'warned once')
})

t.test('a stream whose answer ended upstream and whose client reads it slowly but steadily gets it whole, past the stall bound', async (t) => {
  // The client's window starts at 0; it opens it by 1 KiB once the answer's head arrives, then
  // every 600 ms (a raw client: Node's reads ahead of its application). The upstream sends
  // 7 KiB, then, once the client has its first bytes, four writes of 1.75 KiB and its end: the
  // answer ended upstream with 13 KiB of it still in Tether, which takes about 7.8 s to go out,
  // past the 6 s stall bound. It goes out in two steps (Node hands the first write on, 3.6 s,
  // then the four it held back meanwhile as one, 4.2 s), each within the bound: progress, so
  // the stream is not cut. Margins of 1.8 s both ways, for a loaded machine; the first window
  // opens at once, so the upstream is never silent for body_idle (it waits for the client)
  const BODY = 14 * 1024
  let firstBytes: () => void = () => undefined
  const clientHasSome = new Promise<void>((resolve) => { firstBytes = resolve })
  const up = await startUpstream('app-0', (_req, res) => {
    res.write(Buffer.alloc(7 * 1024, 'y'))
    void clientHasSome.then(() => {
      for (let i = 0; i < 4; i++) res.write(Buffer.alloc(1792, 'y'))
      res.end()
    })
  })
  const logs = new LogCapture()
  // client bound 1.5 s, the stall bound four of them: 6 s
  const tether = await h2cOver(t, up, { bound: 500, logs })
  const socket = net.connect(tether.port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  socket.on('error', () => undefined)
  let got = 0
  let reader: NodeJS.Timeout | undefined
  t.teardown(() => clearInterval(reader))
  const ended = new Promise<string>((resolve) => {
    readFrames(socket, (type, flags, stream, payload) => {
      if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
      if (stream !== 1) return
      if (type === FRAME.HEADERS && reader === undefined) {
        socket.write(windowUpdate(1, 1024))
        reader = setInterval(() => socket.write(windowUpdate(1, 1024)), 600) // the client's own pace
      }
      if (type === FRAME.DATA) {
        got += payload.length
        firstBytes()
      }
      if ((type === FRAME.DATA || type === FRAME.HEADERS) && (flags & FLAG.END_STREAM) !== 0) resolve('end')
      if (type === FRAME.RST_STREAM) resolve(`reset ${payload.readUInt32BE(0)}`)
    })
  })
  socket.write(Buffer.concat([PREFACE, settingsFrame([[4, 0]]), frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, getBlock(`127.0.0.1:${tether.port}`, '/slow-tail', 'http'))]))
  const how = await within(ended, 20_000, 'the answer to end')
  clearInterval(reader)
  t.equal(how, 'end', 'ended, not reset')
  t.equal(got, BODY, 'the whole answer')
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5_000, 'the access line')
  t.match(logs.access()[0], { status: 200, outcome: 'ok' })
})

t.test('a stream reset by its client while the rest of an ended answer waits for its window is logged as client_abort, with the status sent', async (t) => {
  let upstreamDone = false
  const up = await startUpstream('app-0', (_req, res) => {
    res.on('finish', () => { upstreamDone = true })
    res.end(Buffer.alloc(8 * 1024, 'y'))
  })
  const logs = new LogCapture()
  const tether = await h2cOver(t, up, { logs })
  const socket = net.connect(tether.port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  socket.on('error', () => undefined)
  let head = false
  readFrames(socket, (type, flags, stream) => {
    if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
    if (stream === 1 && type === FRAME.HEADERS) head = true
  })
  // a window of 0: the answer's head comes, none of its body
  socket.write(Buffer.concat([PREFACE, settingsFrame([[4, 0]]), frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, getBlock(`127.0.0.1:${tether.port}`, '/left', 'http'))]))
  await waitFor(() => upstreamDone && head, 5_000, 'the answer to end upstream and its head to arrive')
  const cancel = Buffer.alloc(4)
  cancel.writeUInt32BE(http2.constants.NGHTTP2_CANCEL)
  socket.write(frame(FRAME.RST_STREAM, 0, 1, cancel))
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5_000, 'the access line')
  t.match(logs.access()[0], { status: 200, outcome: 'client_abort' }, 'the client left before it had the answer')
})

t.test('a graceful stop waits for an ended answer still waiting for its client\'s window no longer than the grace period, and logs it', async (t) => {
  // the stream holds its connection open (a GOAWAY lets open streams finish) until the grace
  // period ends and the connection is closed; its access line is written then, not lost
  let upstreamDone = false
  const up = await startUpstream('app-0', (_req, res) => {
    res.on('finish', () => { upstreamDone = true })
    res.end(Buffer.alloc(10 * 1024, 'y'))
  })
  const logs = new LogCapture()
  const tether = await h2cOver(t, up, { logs })
  const s = h2cSession(t, tether, { initialWindowSize: 1024 })
  const stalled = s.request({ ':path': '/held' })
  stalled.on('error', () => undefined)
  stalled.pause() // never read: the stall bound (244 s at the defaults) is far off
  let head = false
  stalled.once('response', () => { head = true })
  await waitFor(() => upstreamDone && head, 5_000, 'the answer to end upstream and its head to arrive')
  await within(tether.close(500), 10_000, 'the graceful stop, bounded by its grace period')
  await when(onEvent(logs, 'record'), () => logs.access().some((a) => a['path'] === '/held'), 5_000, 'the access line of the held stream')
  t.match(logs.access().find((a) => a['path'] === '/held'), { status: 200, outcome: 'TETHER_SHUTTING_DOWN' }, 'written, with the status sent: cut by the stop, not left by its client')
})

t.test('a stream whose client reads slowly but steadily is not cut', async (t) => {
  const BODY = 160 * 1024
  const up = await startUpstream('app-0', (_req, res) => res.end(Buffer.alloc(BODY, 'y')))
  // client bound 1.3 s, four of them for an h2 stream's stall: the ~80 KiB Node holds for a
  // stream goes out at 40 KB/s in 2 s, longer than one bound (a 'drain' alone is that coarse)
  const tether = await h2cOver(t, up, { bound: 300 })
  const s = h2cSession(t, tether)
  const r = s.request({ ':path': '/slow' })
  r.on('error', () => undefined)
  r.pause()
  let got = 0
  const reader = setInterval(() => { // 4 KB every 100 ms
    let taken = 0
    for (let c: Buffer | null; taken < 4096 && (c = r.read(1024) as Buffer | null) !== null;) taken += c.length
    got += taken
  }, 100)
  t.teardown(() => clearInterval(reader))
  const code = await within(new Promise<number>((resolve) => r.once('close', () => resolve(r.rstCode))), 20_000, 'the answer to end')
  clearInterval(reader)
  for (let c: Buffer | null; (c = r.read() as Buffer | null) !== null;) got += c.length
  t.equal(code, http2.constants.NGHTTP2_NO_ERROR, 'ended, not reset')
  t.equal(got, BODY, 'the whole answer')
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
