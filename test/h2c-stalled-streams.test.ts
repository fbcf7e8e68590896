// Cleartext HTTP/2 with prior knowledge (listen.http2.cleartext) next to HTTP/1.1 on one port, for
// a TLS-terminating load balancer that speaks h2c. Split from h2c.test.ts (shared setup in
// test/fixtures/h2c.ts), with h2c-clients.test.ts and h2c-answer-delivery.test.ts. Here: a stream
// whose client takes none of its answer while the connection stays busy is cut or reset on its own
// (the upstream still sending, or its answer ended upstream), logged as the client's timeout.
import t from 'tap'
import http2 from 'node:http2'
import { startUpstream } from './fixtures/upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { onEvent, waitFor, when, within } from './fixtures/wait.js'
import { h2cOver, h2cSession, keepBusy, stalledStream } from './fixtures/h2c.js'

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
