// An h2 request body nghttp2 refuses as malformed (RFC 9113 section 8.1.1: DATA past the
// declared content-length, or END_STREAM short of it) resets the stream with PROTOCOL_ERROR:
// no answer, and the access line says TETHER_BAD_REQUEST (status 0), as for an HTTP/1.1 body
// Node's parser refuses (nginx answers such a stream 400), not client_abort: the client did
// not leave, its request was malformed. A client that cancels its stream mid-body is still
// client_abort. Real h2c client and upstream on 127.0.0.1.
import t from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { FLAG, FRAME, PREFACE, frame } from './fixtures/h2-frames.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

t.test('h2c: a body past or short of its content-length is logged TETHER_BAD_REQUEST with status 0; a cancelled stream client_abort', async (t) => {
  const up = await startUpstream('app-0', (req, res) => { req.on('end', () => res.end('ok')); req.on('error', () => undefined); req.resume() })
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } } }), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const client = http2.connect(tether.url)
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())

  /** A POST declaring 3 bytes; `send` writes its body; resolves with the stream's reset code once it closed. */
  const post = async (path: string, send: (req: http2.ClientHttp2Stream) => Promise<void> | void): Promise<number | undefined> => {
    const req = client.request({ ':method': 'POST', ':path': path, 'content-length': '3' })
    req.on('error', () => undefined)
    req.resume()
    const closed = new Promise<void>((resolve) => req.on('close', resolve))
    await send(req)
    await within(closed, 10_000, `the end of ${path}`)
    return req.rstCode
  }
  const upstreamHas = (path: string): Promise<void> => waitFor(() => up.seen.some((r) => r.url === path), 10_000, `the upstream to get ${path}`)

  const P = http2.constants.NGHTTP2_PROTOCOL_ERROR
  t.equal(await post('/past-at-once', (req) => { req.end('helloworld') }), P, 'past its length in one write: reset PROTOCOL_ERROR')
  t.equal(await post('/past-later', async (req) => { req.write('a'); await upstreamHas('/past-later'); req.end('helloworld') }), P, 'past its length once the body went upstream: reset')
  t.equal(await post('/short', async (req) => { req.write('a'); await upstreamHas('/short'); req.end() }), P, 'ended short of its length: reset')
  // cancelled as browsers do: RST_STREAM CANCEL after 1 of 3 bytes (Node's client would end the
  // stream first, END_STREAM short of its length, which nghttp2 resets as malformed)
  const socket = net.connect(Number(new URL(tether.url).port), '127.0.0.1')
  socket.on('error', () => undefined)
  t.teardown(() => socket.destroy())
  await new Promise<void>((resolve) => socket.once('connect', resolve))
  const lit = (s: string): Buffer => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')])
  // :method POST, :scheme http, :path and :authority literal, content-length: 3 (a literal, name index 28)
  const head = Buffer.concat([Buffer.from([0x83, 0x86, 0x04]), lit('/cancelled'), Buffer.from([0x01]), lit(new URL(tether.url).host), Buffer.from([0x0f, 0x0d]), lit('3')])
  socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, head), frame(FRAME.DATA, 0, 1, Buffer.from('a'))]))
  await upstreamHas('/cancelled')
  socket.write(frame(FRAME.RST_STREAM, 0, 1, Buffer.from([0, 0, 0, http2.constants.NGHTTP2_CANCEL])))

  await waitFor(() => logs.access().length === 4, 10_000, 'four access lines')
  const line = (path: string): Record<string, unknown> | undefined => logs.access().find((r) => r['path'] === path)
  for (const path of ['/past-at-once', '/past-later', '/short']) t.match(line(path), { status: 0, outcome: 'TETHER_BAD_REQUEST', http_version: '2.0' }, `${path}: the client's malformed request, nothing answered`)
  t.match(line('/cancelled'), { status: 0, outcome: 'client_abort' }, 'a stream the client cancelled: it left')
  t.notOk(logs.records.some((r) => r.msg === 'upstream exchange failed'), 'no upstream blamed')
})
