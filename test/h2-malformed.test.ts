// Malformed HTTP/2 requests (RFC 9113 section 8.1.1: a stream error of type PROTOCOL_ERROR),
// each on its own h2c connection with hand-made frames: nghttp2 resets the stream before
// Tether sees it, or as soon as the body disagrees with its content-length, so none reaches the
// upstream as a complete request (which, forwarded as HTTP/1.1, could be read as another one),
// and no in-flight count is left behind. Pins what Node's nghttp2 does for Tether, so that an
// option turning its checks off (or a Node that lacks one) fails here.
import t from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { FLAG, FRAME, PREFACE, frame, readFrames } from './fixtures/h2-frames.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { once, waitFor } from './fixtures/wait.js'

/** An HPACK block of literal fields without indexing (no Huffman; short names and values). */
function block(fields: readonly (readonly [string, string])[]): Buffer {
  const str = (s: string): Buffer => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')])
  return Buffer.concat(fields.map(([name, value]) => Buffer.concat([Buffer.from([0x00]), str(name), str(value)])))
}

const get = (path: string): [string, string][] => [[':method', 'GET'], [':scheme', 'http'], [':path', path], [':authority', 'a.example']]
const post = (path: string): [string, string][] => [[':method', 'POST'], [':scheme', 'http'], [':path', path], [':authority', 'a.example']]

/**
 * Each case: its head, and the DATA frames sent after it (null: the head ends the stream).
 * (A body longer than its content-length: on Node 24, whose nghttp2 reports it to Node as an
 * invalid frame, Node itself closed the whole connection, GOAWAY INTERNAL_ERROR; Tether keeps
 * it to the stream's reset, as on Node 20: see test/h2-stream-errors.test.ts.)
 */
const CASES: readonly { name: string; head: [string, string][]; data: string[] | null }[] = [
  { name: 'a body shorter than its content-length', head: [...post('/short'), ['content-length', '10']], data: ['hello'] },
  { name: 'a body longer than its content-length', head: [...post('/long'), ['content-length', '3']], data: ['helloworld'] },
  { name: 'a content-length and no body', head: [...get('/nobody'), ['content-length', '5']], data: null },
  { name: 'te other than trailers (section 8.2.2)', head: [...get('/te'), ['te', 'gzip']], data: null },
  { name: 'a connection field', head: [...get('/connection'), ['connection', 'close']], data: null },
  { name: 'a keep-alive field', head: [...get('/keep-alive'), ['keep-alive', '1']], data: null },
  { name: 'an upgrade field', head: [...get('/upgrade'), ['upgrade', 'websocket']], data: null },
  { name: 'a transfer-encoding field', head: [...post('/te-chunked'), ['transfer-encoding', 'chunked']], data: ['5\r\nhello\r\n0\r\n\r\n'] },
  { name: 'a :path not starting with /', head: get('no-slash'), data: null },
  { name: 'a :path in absolute form', head: get('http://b.example/abs'), data: null },
  { name: 'a :path with a space', head: get('/a b'), data: null },
  { name: 'no :path', head: [[':method', 'GET'], [':scheme', 'http'], [':authority', 'a.example']], data: null },
  { name: 'no :authority nor host', head: [[':method', 'GET'], [':scheme', 'http'], [':path', '/no-authority']], data: null },
  { name: 'two host fields', head: [[':method', 'GET'], [':scheme', 'http'], [':path', '/two-hosts'], ['host', 'a.example'], ['host', 'b.example']], data: null },
  { name: 'an upper-case field name', head: [...get('/upper'), ['X-Upper', '1']], data: null },
  { name: 'a pseudo-field after a regular one', head: [[':method', 'GET'], [':scheme', 'http'], ['x-a', '1'], [':path', '/late-pseudo'], [':authority', 'a.example']], data: null },
  { name: 'an unknown pseudo-field', head: [...get('/unknown-pseudo'), [':foo', '1']], data: null },
]

t.test('malformed h2 requests get RST_STREAM PROTOCOL_ERROR and never reach the upstream whole; nothing stays in flight', async (t) => {
  const ended: string[] = []
  const up = await startUpstream('app-0', (req, res) => {
    req.resume()
    req.on('end', () => { ended.push(req.url ?? ''); res.end('ok') })
  })
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  for (const c of CASES) {
    const socket = net.connect(tether.port, '127.0.0.1')
    socket.on('error', () => undefined)
    await once(socket, 'connect')
    const frames: string[] = []
    const reset = new Promise<number>((resolve) => readFrames(socket, (type, flags, stream, payload) => {
      if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
      if (stream === 1) frames.push(type === FRAME.RST_STREAM ? `RST_STREAM ${payload.readUInt32BE(0)}` : `frame ${type}`)
      if (stream === 1 && type === FRAME.RST_STREAM) resolve(payload.readUInt32BE(0))
    }))
    const data = c.data ?? []
    socket.write(Buffer.concat([
      PREFACE, frame(FRAME.SETTINGS, 0, 0),
      frame(FRAME.HEADERS, FLAG.END_HEADERS | (c.data === null ? FLAG.END_STREAM : 0), 1, block(c.head)),
      ...data.map((d, i) => frame(FRAME.DATA, i === data.length - 1 ? FLAG.END_STREAM : 0, 1, Buffer.from(d))),
    ]))
    const rst = `RST_STREAM ${http2.constants.NGHTTP2_PROTOCOL_ERROR}`
    // (a close first is a failure, not a wait for the test's timeout)
    const got = await Promise.race([reset, once(socket, 'close', 10_000).then(() => null)])
    t.equal(got, http2.constants.NGHTTP2_PROTOCOL_ERROR, `${c.name}: RST_STREAM PROTOCOL_ERROR (null: the connection was closed instead)`)
    t.same(frames, [rst], `${c.name}: no answer before it`)
    socket.destroy()
  }
  // a well-formed request after them all is answered: the upstream saw none of the others whole
  const s = http2.connect(tether.url)
  s.on('error', () => undefined)
  t.teardown(() => s.destroy())
  await new Promise<void>((resolve, reject) => { const r = s.request({ ':path': '/fine' }); r.resume(); r.on('end', resolve); r.on('error', reject) })
  t.same(ended, ['/fine'], 'only the well-formed request reached the upstream whole')
  await waitFor(() => tether.inFlight.count('app-0') === 0, 5_000, 'no request in flight')
})
