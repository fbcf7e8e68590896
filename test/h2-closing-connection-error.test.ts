// A connection error while an h2 connection closes gracefully (Tether's stop sent its GOAWAY
// NO_ERROR, or the client sent one), with a stream in flight: RST_STREAM on stream 0 (RFC 9113
// section 6.4; node:http2 reports it as NGHTTP2_ERR_PROTO, and Tether leaves the close to
// nghttp2: keepStreamErrorsToTheStream), or CONTINUATION expected and DATA came (nghttp2's own).
// nghttp2 sends GOAWAY PROTOCOL_ERROR and stops; Node's graceful close waited for the stream
// nghttp2 would never finish: the stop took its whole grace, and without a stop the connection
// stayed open for good (found by the review of 6c869fa; the CONTINUATION case was older). It
// closes at once now, and the stop ends. Runs in the Node 24 pass too (test/h2-*).
import t from 'tap'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { FLAG, FRAME, PREFACE, frame, getBlock, readFrames } from './fixtures/h2-frames.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

const u32 = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b }

const ERRORS: Record<string, (host: string) => Buffer> = {
  'RST_STREAM on stream 0 (-505 on every Node)': () => frame(FRAME.RST_STREAM, 0, 0, u32(1)),
  'CONTINUATION expected, DATA came (-505 on Node 22+, nghttp2 alone on Node 20)': (host) => Buffer.concat([frame(FRAME.HEADERS, FLAG.END_STREAM, 3, getBlock(host, '/', 'http').subarray(0, 3)), frame(FRAME.DATA, 0, 3, Buffer.from('x'))]),
}
for (const [name, bytes] of Object.entries(ERRORS)) for (const stop of [true, false, 'client-goaway'] as const) t.test(`h2c: ${stop === 'client-goaway' ? 'the client sent GOAWAY NO_ERROR, ' : stop ? 'graceful stop, ' : ''}a stream in flight, then ${name}: the connection closes ${stop ? 'and the stop ends ' : ''}within 8 s (grace 20 s)`, async (t) => {
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const up = await startUpstream('app-0', (req, res) => { req.resume(); void released.then(() => res.end('held')) })
  const logs = new LogCapture()
  const proxy = await startTether(testConfig([up], { listen: { http2: { cleartext: true } }, timeouts: { client_headers: 60_000 } }), { logger: createLogger('info', logs) })
  t.teardown(async () => { release(); await up.close() })
  const socket = net.connect(Number(new URL(proxy.url).port), '127.0.0.1')
  socket.on('error', () => undefined)
  t.teardown(() => socket.destroy())
  await new Promise<void>((resolve) => socket.once('connect', resolve))
  const events: string[] = []
  readFrames(socket, (type, _f, stream, payload) => {
    if (type === FRAME.GOAWAY) events.push(`goaway ${payload.readUInt32BE(4)}`)
    if (type === FRAME.HEADERS) events.push(`headers ${stream}`)
    if (type === FRAME.RST_STREAM) events.push(`rst ${stream} ${payload.readUInt32BE(0)}`)
  })
  const closed = new Promise<void>((resolve) => socket.once('close', () => { events.push('close'); resolve() }))
  socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, 1, getBlock(new URL(proxy.url).host, '/held', 'http'))]))
  await waitFor(() => up.seen.length === 1, 10_000, 'the upstream to hold /held')
  const t0 = Date.now()
  const stopped = stop === true ? proxy.close(20_000).then(() => { events.push(`stopped after ${Date.now() - t0} ms`) }) : Promise.resolve()
  if (stop === 'client-goaway') socket.write(frame(FRAME.GOAWAY, 0, 0, Buffer.alloc(8)))
  if (stop === true) await waitFor(() => events.includes('goaway 0'), 10_000, "the stop's GOAWAY NO_ERROR")
  if (stop !== true) t.teardown(() => proxy.close(0))
  socket.write(bytes(new URL(proxy.url).host))
  release() // the upstream answers now: on a healthy connection /held would complete
  const ok = await within(closed, 8_000, 'the connection to close').then(() => true, (e: Error) => { t.fail(`${process.version}: ${e.message}`); return false })
  t.comment(`${process.version}: ${events.join(', ')} (at ${Date.now() - t0} ms)`)
  await within(stopped, 8_000, 'the stop to end').then(() => t.pass('the stop ended, not at its grace'), (e: Error) => t.fail(e.message))
  t.comment(`${process.version}: ${events.join(', ')}; access: ${JSON.stringify(logs.access().map((l) => [l['path'], l['status'], l['outcome'], l['duration_ms']]))}`)
  t.ok(ok, 'closed promptly')
})
