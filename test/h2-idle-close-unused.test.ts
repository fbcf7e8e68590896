// An h2 connection that never begins a stream (only the preface and SETTINGS, or PINGs after
// them) is idle, not slow: closed at timeouts.client_headers with GOAWAY NO_ERROR naming last
// stream 0 and no "slow head" warning, as nginx 1.22 (client_header_timeout) and HAProxy 2.6
// (timeout http-request) close it (measured on loopback: GOAWAY NO_ERROR, last stream 0, at the
// header timeout, not the keep-alive one; PINGs do not extend it; nginx logs nothing). Before,
// the slow-head guard warned of it as a slow head. A connection whose first head is begun and
// never finished stays the guard's (test/h2-goaway-close.test.ts).
// Over TLS (ALPN h2) and h2c, with raw clients that acknowledge SETTINGS and answer PINGs, as
// live clients do. client_keep_alive is 60 s: only the client_headers bound (0.5 s) can close
// within the test's deadline.
import t, { type Test } from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { FLAG, FRAME, connectPrefaced, frame, readFrames } from './fixtures/h2-frames.js'
import { LogCapture } from './fixtures/log-capture.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

const TLS = { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null } as const
const CLIENT_HEADERS = 500
/**
 * How long a test waits for the close (documented: a new connection without a complete head
 * is closed `client_headers` after it opened, looked at once per `client_headers`, so by twice
 * that plus 500 ms): a deadline with a wide margin, far below client_keep_alive (60 s).
 */
const DEADLINE = 8_000
/** The guard's warning (docs/request-handling.md). */
const SLOW = 'HTTP/2 client did not complete a stream head within timeouts.client_headers'

async function tether(t: Test, tls: boolean, logs: LogCapture): Promise<Tether> {
  const up = await startUpstream('app-0')
  const listen = tls ? { tls: TLS } : { http2: { cleartext: true } }
  const proxy = await startTether(testConfig([up], { listen, timeouts: { client_headers: CLIENT_HEADERS, client_keep_alive: 60_000 } }), { logger: createLogger('info', logs) })
  t.teardown(async () => { await proxy.close(0); await up.close() })
  return proxy
}

/** PING (type 6), 8 bytes of payload. */
const PING = 6

/**
 * A raw client on `proxy` (TLS by ALPN, or h2c) that sent the preface and SETTINGS, acknowledges
 * Tether's SETTINGS and its PINGs, as a live client between heads does. Its GOAWAYs are collected.
 */
async function rawClient(t: Test, proxy: Tether, tls: boolean): Promise<{ socket: net.Socket; goaways: { last: number; code: number }[]; closed: Promise<void> }> {
  const socket = await connectPrefaced(Number(new URL(proxy.url).port), tls ? certs.ca : undefined)
  socket.on('error', () => undefined)
  t.teardown(() => socket.destroy())
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  const goaways: { last: number; code: number }[] = []
  readFrames(socket, (type, flags, _stream, payload) => {
    if (type === FRAME.GOAWAY) goaways.push({ last: payload.readUInt32BE(0) & 0x7fffffff, code: payload.readUInt32BE(4) })
    if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
    if (type === PING && (flags & FLAG.ACK) === 0) socket.write(frame(PING, FLAG.ACK, 0, Buffer.from(payload)))
  })
  return { socket, goaways, closed }
}

for (const tls of [false, true]) {
  for (const pings of [false, true]) {
    t.test(`${tls ? 'h2 over TLS' : 'h2c'}: a connection that never begins a stream${pings ? ' (a PING every 100 ms)' : ''} is closed at client_headers as idle: GOAWAY NO_ERROR, last stream 0, no slow-head warning`, async (t) => {
      const logs = new LogCapture()
      const proxy = await tether(t, tls, logs)
      const { socket, goaways, closed } = await rawClient(t, proxy, tls)
      const ticker = pings ? setInterval(() => { if (socket.writable) socket.write(frame(PING, 0, 0, Buffer.alloc(8))) }, 100) : undefined
      t.teardown(() => clearInterval(ticker))
      await within(closed, DEADLINE, `the connection without a stream to be closed (client_headers ${CLIENT_HEADERS} ms, client_keep_alive 60 s)`)
      clearInterval(ticker)
      t.ok(goaways.length > 0, `a GOAWAY came: ${JSON.stringify(goaways)}`)
      t.ok(goaways.every((g) => g.code === http2.constants.NGHTTP2_NO_ERROR && g.last === 0), `every GOAWAY is NO_ERROR naming last stream 0 (RFC 9113 section 6.8: none processed): ${JSON.stringify(goaways)}`)
      t.notOk(logs.records.some((r) => String(r['msg']).startsWith(SLOW)), 'no slow-head warning: the connection was idle')
    })
  }
}
