// An h2c connection whose first stream never reaches JavaScript is closed all the same, with
// body_idle 0 (review s64 r1). Two raw clients that answer PINGs, as live clients do: one sends
// the preface and SETTINGS and then nothing (no head: the slow-head guard closes it at
// client_headers with GOAWAY NO_ERROR, as nginx at client_header_timeout: unchanged, kept as a
// check), one sends a complete but malformed first head (`connection: close`: nghttp2 refuses
// it itself with RST_STREAM, and JavaScript never gets the stream). The guard's PING proves
// that head complete, and the connection then has client_keep_alive as after any stream
// (closeWhenIdle): GOAWAY NO_ERROR. Before the fix the guard closed it as a slow head
// (PROTOCOL_ERROR and a false warning) when its check ran on time, and left it open for ever
// when the check ran a little early and the PING was answered (about half the runs each).
// A third client keeps sending malformed heads (every 100 ms): refused heads start the bound when
// none runs but never extend it, so it still closes (extending, they kept it open until Node's
// maxSessionRejectedStreams).
import t from 'tap'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { FLAG, FRAME, PREFACE, frame, getBlock, readFrames } from './fixtures/h2-frames.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'

/** How long the test waits for the close it expects (many bounds: a deadline, not a sleep). */
const DEADLINE = 8_000

/** A literal header field without indexing, new name (HPACK 6.2.2), for the malformed head. */
const literal = (name: string, value: string): Buffer => Buffer.concat([Buffer.from([0, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value)])

const TITLES = {
  none: 'first stream never sent',
  malformed: 'first stream malformed (refused by nghttp2)',
  repeated: 'a malformed head every 100 ms (each refused): they do not extend the idle bound',
} as const

for (const first of ['none', 'malformed', 'repeated'] as const) {
  t.test(`h2c, body_idle 0, ${TITLES[first]}: the connection is closed`, async (t) => {
    const up = await startUpstream('app-0', (_req, res) => res.end('ok'))
    // (repeated: a keep-alive bound longer than the slow-head guard's longest gap between two
    // PINGs, 500 ms, so that refused heads extending it would keep the connection open)
    const keepAlive = first === 'repeated' ? 700 : 300
    const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } }, timeouts: { body_idle: 0, client_keep_alive: keepAlive, client_headers: 500 } }), { logger: createLogger('silent') })
    t.teardown(async () => { await tether.close(0); await up.close() })
    const socket = net.connect(Number(new URL(tether.url).port), '127.0.0.1')
    socket.on('error', () => undefined)
    t.teardown(() => socket.destroy())
    const codes: number[] = [] // GOAWAY error codes received
    readFrames(socket, (type, flags, _stream, payload) => {
      if (type === FRAME.GOAWAY) codes.push(payload.readUInt32BE(4))
      // a live client: it acknowledges SETTINGS and answers PINGs (type 6), as the guard expects
      if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
      if (type === 6 && (flags & FLAG.ACK) === 0) socket.write(frame(6, FLAG.ACK, 0, Buffer.from(payload)))
    })
    const closed = new Promise<'closed'>((resolve) => socket.once('close', () => resolve('closed')))
    const malformed = (id: number): Buffer => frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, Buffer.concat([getBlock('localhost', '/', 'http'), literal('connection', 'close')]))
    socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), ...(first === 'none' ? [] : [malformed(1)])]))
    // the client's own pace: another malformed head every 100 ms while the connection is open
    let next = 3
    const heads = first !== 'repeated' ? undefined : setInterval(() => { if (!socket.destroyed) socket.write(malformed(next += 2)) }, 100)
    t.teardown(() => clearInterval(heads))
    let deadline: NodeJS.Timeout | undefined
    const outcome = await Promise.race([closed, new Promise<'open'>((resolve) => { deadline = setTimeout(() => resolve('open'), DEADLINE) })])
    clearTimeout(deadline)
    clearInterval(heads)
    t.equal(outcome, 'closed', `closed within ${DEADLINE} ms (client_headers 500 ms, client_keep_alive ${keepAlive} ms); GOAWAY codes ${JSON.stringify(codes)}`)
    t.same(codes.slice(0, 1), [0], first === 'none' ? 'by the slow-head guard: GOAWAY NO_ERROR, as nginx' : 'by the idle bound: GOAWAY NO_ERROR, not a slow head\'s PROTOCOL_ERROR')
  })
}
