// Cleartext HTTP/2 with prior knowledge (listen.http2.cleartext) next to HTTP/1.1 on one port, for
// a TLS-terminating load balancer that speaks h2c. Split from h2c.test.ts (shared setup in
// test/fixtures/h2c.ts), with h2c-clients.test.ts, h2c-stalled-streams.test.ts and
// h2c-slow-readers.test.ts (clients reading slowly but steadily, not cut). Here: Tether's own
// answers (reset when its client takes none of them; the upstream failure behind one warned
// once), and answers that ended upstream: reset by the client (client_abort), held past a
// graceful stop's grace period.
import t from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import { startUpstream } from './fixtures/upstream.js'
import { FLAG, FRAME, PREFACE, frame, getBlock, readFrames, settingsFrame } from './fixtures/h2-frames.js'
import { LogCapture } from './fixtures/log-capture.js'
import { onEvent, waitFor, when, within } from './fixtures/wait.js'
import { h2cOver, h2cSession, keepBusy } from './fixtures/h2c.js'

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
