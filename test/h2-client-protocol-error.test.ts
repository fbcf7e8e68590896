// An h2 client that resets its own stream with PROTOCOL_ERROR (its own reason: e.g. it found the
// answer malformed) after its whole, well-formed body was sent is a client gone (client_abort),
// not a malformed body (TETHER_BAD_REQUEST: test/h2-malformed-body.test.ts).
import t from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { FLAG, FRAME, PREFACE, frame } from './fixtures/h2-frames.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

t.test('h2c: client RST_STREAM(PROTOCOL_ERROR) on a complete, well-formed POST', async (t) => {
  // the upstream takes the body and never answers (the client resets while waiting)
  const up = await startUpstream('app-0', (req) => { req.on('error', () => undefined); req.resume() })
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } } }), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const socket = net.connect(Number(new URL(tether.url).port), '127.0.0.1')
  socket.on('error', () => undefined)
  t.teardown(() => socket.destroy())
  await new Promise<void>((resolve) => socket.once('connect', resolve))
  const lit = (s: string): Buffer => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')])
  const head = Buffer.concat([Buffer.from([0x83, 0x86, 0x04]), lit('/complete'), Buffer.from([0x01]), lit(new URL(tether.url).host), Buffer.from([0x0f, 0x0d]), lit('3')])
  // the whole body, 3 of 3 bytes, END_STREAM: a well-formed request
  socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, head), frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from('abc'))]))
  await waitFor(() => up.seen.some((r) => r.url === '/complete'), 10_000, 'the upstream to get it')
  socket.write(frame(FRAME.RST_STREAM, 0, 1, Buffer.from([0, 0, 0, http2.constants.NGHTTP2_PROTOCOL_ERROR])))
  await waitFor(() => logs.access().length === 1, 10_000, 'the access line')
  const line = logs.access()[0]!
  t.comment(JSON.stringify({ status: line['status'], outcome: line['outcome'] }))
  t.match(line, { status: 0, outcome: 'client_abort' }, 'the client left (its own reset, its request was well-formed)')
})

for (const [name, kill] of [
  ['GOAWAY(PROTOCOL_ERROR) from the client', frame(FRAME.GOAWAY, 0, 0, Buffer.from([0, 0, 0, 1, 0, 0, 0, http2.constants.NGHTTP2_PROTOCOL_ERROR]))],
  ['a connection error the client made elsewhere (DATA on stream 0)', frame(FRAME.DATA, 0, 0, Buffer.from('x'))],
] as const) {
  t.test(`h2c: ${name} while a complete, well-formed POST waits for its answer`, async (t) => {
    const up = await startUpstream('app-0', (req) => { req.on('error', () => undefined); req.resume() })
    const logs = new LogCapture()
    const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } } }), { logger: createLogger('info', logs) })
    t.teardown(async () => { await tether.close(0); await up.close() })
    const socket = net.connect(Number(new URL(tether.url).port), '127.0.0.1')
    socket.on('error', () => undefined)
    t.teardown(() => socket.destroy())
    await new Promise<void>((resolve) => socket.once('connect', resolve))
    const lit = (s: string): Buffer => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')])
    const head = Buffer.concat([Buffer.from([0x83, 0x86, 0x04]), lit('/complete'), Buffer.from([0x01]), lit(new URL(tether.url).host), Buffer.from([0x0f, 0x0d]), lit('3')])
    socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, head), frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from('abc'))]))
    await waitFor(() => up.seen.some((r) => r.url === '/complete'), 10_000, 'the upstream to get it')
    socket.write(kill)
    await waitFor(() => logs.access().length === 1, 10_000, 'the access line')
    const line = logs.access()[0]!
    t.comment(JSON.stringify({ status: line['status'], outcome: line['outcome'] }))
    t.match(line, { status: 0, outcome: 'client_abort' }, 'the client left; its request was well-formed')
  })
}
