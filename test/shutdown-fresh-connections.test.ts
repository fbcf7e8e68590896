// A graceful stop must not cut a connection that was accepted just before it and sends its
// request only after the listener stopped accepting: the request is answered, with
// Connection: close. (Node's closeIdleConnections leaves a connection that never started a
// request alone; this holds Tether's shutdown sweep to that.) With workers this is the
// connection the primary handed over an instant before a worker's listener closed. Over h2 the
// same holds for a connection whose TLS handshake ends after the stop began: its first flight
// is answered, then it gets the GOAWAY the connections open at the stop got, and it does not
// hold the stop until the grace period ends.
import t from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import tls from 'node:tls'
import { FLAG, FRAME, PREFACE, frame, getBlock, readFrames } from './fixtures/h2-frames.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { proxyFor, startUpstream } from './fixtures/upstream.js'
import { once, waitFor, within } from './fixtures/wait.js'

t.test('a connection accepted before a graceful stop gets its request answered (Connection: close), not reset', async (t) => {
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  const tt = await proxyFor(t, [up])
  const accepted = once(tt.listener.server, 'connection')
  const socket = net.connect(tt.port, '127.0.0.1')
  socket.on('error', () => undefined)
  await accepted // Tether has accepted it; no request yet
  const closing = tt.close(5_000)
  let answer = ''
  socket.setEncoding('latin1')
  socket.on('data', (c: string) => (answer += c))
  const ended = once(socket, 'close', 5_000)
  // the listener has stopped accepting (its idle sweep has started) before the request is sent
  await waitFor(() => !tt.listener.server.listening, 5_000, 'the listener to stop accepting')
  socket.write('GET / HTTP/1.1\r\nHost: example.test\r\n\r\n')
  const [hadError] = await ended as [boolean]
  t.match(answer, /^HTTP\/1\.1 200 /, 'answered')
  t.match(answer, /\r\nconnection: close\r\n/i, 'with Connection: close')
  t.equal(hadError, false, 'closed cleanly, not reset')
  await closing
})

t.test('h2 over TLS: a connection whose handshake ends after a graceful stop began gets its first flight answered, then GOAWAY, and is closed; the stop does not wait the grace period for it', async (t) => {
  const certs = makeCertificateSet()
  t.teardown(() => certs.remove())
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  const tt = await proxyFor(t, [up], { listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null } } })
  const accepted = once(tt.listener.server, 'connection')
  const socket = net.connect(tt.port, '127.0.0.1')
  socket.on('error', () => undefined)
  await accepted // Tether has accepted it; no TLS handshake yet
  const closing = tt.close(60_000)
  await waitFor(() => !tt.listener.server.listening, 5_000, 'the listener to stop accepting')
  // the handshake and the h2 connection begin only now, on the connection accepted before;
  // its first flight (preface, SETTINGS, a GET) in one write
  const secure = tls.connect({ socket, ALPNProtocols: ['h2'], ca: certs.ca, servername: 'localhost' })
  secure.on('error', () => undefined)
  t.teardown(() => secure.destroy())
  await once(secure, 'secureConnect')
  t.equal(secure.alpnProtocol, 'h2')
  const frames: string[] = []
  let goaway: { last: number; code: number } | null = null
  readFrames(secure, (type, flags, stream, payload) => {
    if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) secure.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
    if (type === FRAME.GOAWAY) goaway = { last: payload.readUInt32BE(0) & 0x7fffffff, code: payload.readUInt32BE(4) }
    if (stream === 1 && (type === FRAME.HEADERS || type === FRAME.DATA)) frames.push(`${type === FRAME.HEADERS ? 'HEADERS' : 'DATA'}${(flags & FLAG.END_STREAM) !== 0 ? ' END_STREAM' : ''}`)
    if (type === FRAME.RST_STREAM) frames.push(`RST_STREAM ${stream}`)
  })
  const closed = once(secure, 'close', 5_000, 'the late connection to close')
  secure.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, getBlock('localhost'))]))
  await closed
  t.equal(frames[0], 'HEADERS', 'its request is answered')
  t.match(frames.at(-1), /END_STREAM$/, 'whole')
  t.same(goaway, { last: 1, code: http2.constants.NGHTTP2_NO_ERROR }, 'then GOAWAY NO_ERROR naming it, as the connections open at the stop get')
  await within(closing, 10_000, 'the stop, without waiting its 60 s grace period for the late connection')
})
