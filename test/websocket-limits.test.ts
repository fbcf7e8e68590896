// Limits on the upgrade path: most open WebSockets (503 beyond), idle timeout (no byte either
// way closes both sides), the handshake's own timeout (an upstream that never answers), and a
// refusal's body that stalls or is cut short (the client connection is never held for ever).
// The waits' deadlines are safety nets of 30 s (2 s and 5 s before; this file failed at load
// 20-25): below the 60 s of the default timeouts.response_headers and body_idle, so a case that
// only one of those would end still fails.
import t, { type Test } from 'tap'
import net from 'node:net'
import { closed, openWs, roundTrip, startEchoPod, startWsTether } from './fixtures/ws-harness.js'
import { onEvent, waitFor, when, within } from './fixtures/wait.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { testConfig } from './fixtures/upstream.js'

const pod = await startEchoPod('app-0')
t.teardown(() => pod.kill())

t.test('beyond max_connections an upgrade is answered 503 on the raw socket; a freed slot is reused', async (t) => {
  const px = await startWsTether([{ id: pod.id, url: pod.url }], {}, { maxConnections: 3 })
  t.teardown(() => px.close())
  const open = await Promise.all([0, 1, 2].map(() => openWs(px.wsUrl)))
  const err = await openWs(px.wsUrl).then(() => null, (e: { status?: number; headers?: Record<string, string>; body?: string }) => e)
  t.equal(err?.status, 503)
  t.equal(err?.headers?.['retry-after'], '1')
  t.match(err?.body, /too many open connections/)
  t.equal(px.upgrades.size, 3, 'the refused one took no slot')
  t.match(await px.tether.metrics.render(), /^tether_http_requests_total\{upstream="none",[^}]*status_class="5xx"\} 1$/m, 'the refusal is counted (and logged) as any answer')
  t.equal((await roundTrip(open[0]!, 'ok')).data.toString(), 'app-0:ok', 'open ones are unaffected')
  open[1]!.close()
  await closed(open[1]!)
  await waitFor(() => px.upgrades.size === 2, 30_000, 'slot released') // polled: Upgrades announces no release
  const again = await openWs(px.wsUrl)
  t.equal((await roundTrip(again, 'again')).data.toString(), 'app-0:again', 'a freed slot takes a new connection')
  for (const ws of [open[0]!, open[2]!, again]) ws.close()
})

t.test('idle timeout: a socket with no bytes either way is closed (both sides); traffic keeps it open', async (t) => {
  // (1.5 s: with 300 ms, a loaded machine (load 12) once left the busy socket without a byte
  // for that long, between its upgrade and its first round trip or between two: it was cut)
  const idle = 1_500
  const px = await startWsTether([{ id: pod.id, url: pod.url }], {}, { idleTimeout: idle })
  t.teardown(() => px.close())
  // (taken before the quiet socket opens: its idle time starts at its upgrade, and opening the
  // busy one can take longer than the margin on a loaded machine)
  const start = performance.now()
  const quiet = await openWs(px.wsUrl)
  const busy = await openWs(px.wsUrl)
  const quietClosed = closed(quiet)
  // the busy one talks, one round trip after the other (each waits on its echo), until the quiet
  // one has been cut off; bounded by the deadline below and a count
  let done = false
  let trips = 0
  const talk = (async () => {
    while (!done && trips < 100_000) {
      await roundTrip(busy, 'ping')
      trips++
    }
  })().then(() => null, (err: Error) => err) // (a cut is asserted below, not an unhandled rejection)
  const c = await within(quietClosed, 30_000, 'the idle socket is closed')
  done = true
  t.equal((await talk)?.message, undefined, 'every round trip on the busy socket was answered')
  t.ok(performance.now() - start >= idle - 20, `not before the idle timeout (${trips} round trips on the busy one meanwhile)`)
  t.equal(c.code, 1006, 'cut off (no close frame: both sockets destroyed)')
  t.equal(busy.readyState, busy.OPEN, 'the busy socket is still open')
  await waitFor(() => px.upgrades.size === 1, 30_000, 'idle tunnel released') // polled: no release event
  busy.close()
  await closed(busy)
})

t.test('an upstream that accepts the connection but never answers the handshake: 504 after response_headers', async (t) => {
  const sockets = new Set<net.Socket>()
  const mute = net.createServer((s) => { sockets.add(s); s.on('error', () => undefined) })
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r))
  const port = (mute.address() as net.AddressInfo).port
  t.teardown(() => { for (const s of sockets) s.destroy(); mute.close() })
  const px = await startWsTether([{ id: 'mute', url: `http://127.0.0.1:${port}` }], { timeouts: { response_headers: 200 } })
  t.teardown(() => px.close())
  const err = await within(openWs(px.wsUrl).then(() => null, (e: { status?: number; body?: string }) => e), 30_000, 'answer')
  t.equal(err?.status, 504)
  t.match(err?.body, /did not answer in time/)
  await waitFor(() => px.upgrades.size === 0, 30_000, 'slot released') // polled: no release event
  t.equal(px.upgrades.size, 0)
  t.match(await px.tether.metrics.render(), /tether_http_requests_total\{upstream="mute",method="GET",status_class="5xx"\} 1/, 'counted with the status it was answered (not "none")')
})

t.test('an upstream that refuses a handshake and stalls in its refusal body is cut after body_idle with the client: no connection or slot held for ever', async (t) => {
  const sockets = new Set<net.Socket>()
  const stuck = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => undefined)
    s.once('data', () => s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789')) // then nothing
  })
  await new Promise<void>((r) => stuck.listen(0, '127.0.0.1', r))
  const port = (stuck.address() as net.AddressInfo).port
  t.teardown(() => { for (const s of sockets) s.destroy(); stuck.close() })
  const px = await startWsTether([{ id: 'stuck', url: `http://127.0.0.1:${port}` }], { timeouts: { body_idle: 300 } })
  t.teardown(() => px.close())
  const client = net.connect(px.tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  client.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  let got = ''
  client.on('data', (c) => (got += c))
  await within(new Promise((r) => client.once('close', r)), 30_000, 'the client connection to be cut')
  t.match(got, /^HTTP\/1\.1 200 OK\r\n[^]*0123456789$/, 'the refusal as far as it came')
  await waitFor(() => px.upgrades.size === 0, 30_000, 'slot released')
})

t.test('an upstream that refuses a handshake and dies in its refusal body: the client connection is cut at once, the failure logged and counted', async (t) => {
  // no 'end' comes from a body cut short, and the body_idle cut stops at the answer's close:
  // the client kept a truncated answer and its connection open for ever (nginx and HAProxy
  // close it at once)
  const sockets = new Set<net.Socket>()
  const dying = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => undefined)
    s.once('data', () => s.end('HTTP/1.1 404 Not Found\r\nContent-Length: 100\r\n\r\nnot here\n'))
  })
  await new Promise<void>((r) => dying.listen(0, '127.0.0.1', r))
  const port = (dying.address() as net.AddressInfo).port
  t.teardown(() => { for (const s of sockets) s.destroy(); dying.close() })
  const logs = new LogCapture()
  const tether = await startTether(testConfig([{ id: 'dying', url: `http://127.0.0.1:${port}` }], { retries: { attempts: 1 } }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  client.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  let got = ''
  client.on('data', (c) => (got += c))
  // body_idle is 60 s: only the cut, not a timeout, closes it within the deadline
  await within(new Promise((r) => client.once('close', r)), 30_000, 'the client connection to be cut')
  t.match(got, /^HTTP\/1\.1 404 Not Found\r\n[^]*not here\n$/, 'the refusal as far as it came')
  await waitFor(() => tether.upgrades.size === 0, 30_000, 'slot released')
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 30_000, 'the access log line')
  t.match(logs.access()[0], { status: 404, upstream: 'dying', outcome: 'TETHER_UPSTREAM_RESET' }, 'logged as an upstream failure mid-answer')
  t.ok(logs.records.some((r) => r['msg'] === 'upstream exchange failed'), 'warned, as a plain answer cut off')
})

/** The body of {@link refusingUpstream}'s refusal: more than every buffer on the way holds. */
const BODY = 8 * 1024 * 1024

/** A raw upstream that answers any handshake with a 403 and an 8 MiB body, sent whole at once. */
async function refusingUpstream(t: Test): Promise<{ port: number; sockets: Set<net.Socket> }> {
  const sockets = new Set<net.Socket>()
  const refusing = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => undefined)
    s.once('data', () => s.end(Buffer.concat([Buffer.from(`HTTP/1.1 403 Forbidden\r\nContent-Length: ${BODY}\r\n\r\n`), Buffer.alloc(BODY, 'x')])))
  })
  await new Promise<void>((r) => refusing.listen(0, '127.0.0.1', r))
  t.teardown(() => { for (const s of sockets) s.destroy(); refusing.close() })
  return { port: (refusing.address() as net.AddressInfo).port, sockets }
}

t.test('a client slow to read a refusal is not an upstream stall: the refusal arrives whole, the upstream is not blamed', async (t) => {
  // body_idle times the upstream; while the client does not take the refusal, the pipe pauses
  // it and no byte moves, but the upstream sent it all
  const { port, sockets } = await refusingUpstream(t)
  const logs = new LogCapture()
  const tether = await startTether(testConfig([{ id: 'refusing', url: `http://127.0.0.1:${port}` }], {
    timeouts: { body_idle: 200 }, retries: { attempts: 1 }, health: { passive: { consecutive_failures: 1 } },
  }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  client.pause()
  client.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  // every buffer between the upstream and the client fills: its unsent bytes stop going down
  let last = -1
  await waitFor(() => {
    const unsent = [...sockets].reduce((n, s) => n + s.writableLength, 0)
    const still = unsent > 0 && unsent === last
    last = unsent
    return still
  }, 30_000, 'backpressure to reach the upstream')
  // the client reads nothing for five body_idle periods: what is under test is a slow reader
  await new Promise((r) => setTimeout(r, 1_000))
  let got = 0
  client.on('data', (c: Buffer) => { got += c.length })
  client.resume()
  await within(new Promise((r) => client.once('close', r)), 30_000, 'the whole refusal, then the close')
  t.ok(got > BODY, `the refusal arrived whole (${got} bytes)`)
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 30_000, 'the access log line')
  t.match(logs.access()[0], { status: 403, upstream: 'refusing', outcome: 'ok' })
  t.equal(tether.health.state('refusing'), 'healthy', 'not ejected')
})

t.test('a client that never reads a refusal is cut at the client bound, its doing: no connection, slot or upstream held for ever', async (t) => {
  const { port, sockets } = await refusingUpstream(t)
  const logs = new LogCapture()
  // the client bound: the longer of body_idle and response_headers, plus a second: 1.3 s
  const tether = await startTether(testConfig([{ id: 'refusing', url: `http://127.0.0.1:${port}` }], {
    timeouts: { body_idle: 200, response_headers: 300 }, retries: { attempts: 1 }, health: { passive: { consecutive_failures: 1 } },
  }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  client.pause() // and never reads
  client.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 30_000, 'the cut, in the access log')
  await waitFor(() => tether.upgrades.size === 0, 30_000, 'slot released')
  client.resume() // what was sent before the cut, then the end
  await within(new Promise((r) => client.once('close', r)), 30_000, 'the client connection to end')
  t.match(logs.access()[0], { status: 403, upstream: 'refusing', outcome: 'TETHER_CLIENT_TIMEOUT' })
  t.equal(tether.health.state('refusing'), 'healthy', 'the upstream is not blamed')
})

t.test('an upgrade refused before the request path (a method other than GET) is logged and counted as a WebSocket refusal', async (t) => {
  const logs = new LogCapture()
  const tether = await startTether(testConfig([{ id: pod.id, url: pod.url }]), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  const answer = await new Promise<string>((resolve) => {
    const sock = net.connect(tether.port, '127.0.0.1', () => sock.write('POST /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n'))
    let got = ''
    sock.on('data', (c: Buffer) => (got += c.toString('latin1')))
    sock.on('close', () => resolve(got))
    sock.on('error', () => undefined)
  })
  t.match(answer, /^HTTP\/1\.1 400 /)
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 30_000, 'the access line')
  t.match(logs.access()[0], { method: 'POST', path: '/chat', protocol: 'websocket', status: 400, outcome: 'TETHER_BAD_REQUEST' })
  t.match(await tether.metrics.render(), /^tether_http_requests_total\{upstream="none",[^}]*status_class="4xx"\} 1$/m, 'counted')
})

t.test('a client that ends its side of a tunnel whose upstream ignores the FIN: both sides close after the linger (not at idle_timeout), its place is freed', async (t) => {
  const http = await import('node:http')
  // a hand-written upgrade handler: the socket allows half-open connections and never ends on FIN
  const server = http.createServer()
  let upstreamSocket: net.Socket | null = null
  let upstreamClosed = false
  server.on('upgrade', (_req, socket: net.Socket) => {
    upstreamSocket = socket
    socket.on('error', () => undefined)
    socket.on('close', () => { upstreamClosed = true })
    socket.resume()
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n')
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
  const px = await startWsTether([{ id: 'half', url }], {}, { maxConnections: 1 }) // idle_timeout: an hour
  t.teardown(() => px.close())
  const client = net.connect(Number(new URL(px.tether.url).port), '127.0.0.1')
  client.on('error', () => undefined)
  let got = ''
  client.on('data', (c: Buffer) => (got += c.toString('latin1')))
  client.write('GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  await waitFor(() => got.startsWith('HTTP/1.1 101'), 30_000, 'the 101')
  t.equal(px.upgrades.size, 1)
  client.end() // the tab closed: FIN, and nothing more
  await waitFor(() => px.upgrades.size === 0, 30_000, 'the tunnel to be released (linger 2 s; idle_timeout is an hour)')
  // Tether's side of the upstream connection is gone: the upstream's next write is refused
  const poke = setInterval(() => { if (!upstreamClosed) upstreamSocket?.write('x') }, 50)
  t.teardown(() => clearInterval(poke))
  await waitFor(() => upstreamClosed, 30_000, "the upstream connection to be closed by Tether's side")
  clearInterval(poke)
  const next = await openWs(px.wsUrl).then(() => 'open', (e: { status?: number }) => String(e.status))
  t.not(next, '503', 'its max_connections place is free for the next client')
})
