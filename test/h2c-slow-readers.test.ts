// Cleartext HTTP/2 with prior knowledge (listen.http2.cleartext) next to HTTP/1.1 on one port, for
// a TLS-terminating load balancer that speaks h2c. Split from h2c-answer-delivery.test.ts (shared
// setup in test/fixtures/h2c.ts), with h2c-clients.test.ts and h2c-stalled-streams.test.ts. Here:
// a client that reads its answer slowly but steadily, for longer than the bounds that cut a
// client taking nothing, gets it whole: while the upstream still sends, and after the answer
// ended upstream. Each file runs in its own process, side by side: these two take ~13 s of real
// time by design (their bounds are real timers), the rest of h2c-answer-delivery.test.ts ~7 s.
//
// A loaded host (CI runs two files at once on 2 cores) delays every timer of this process: the
// clients here keep their pace in real time (each tick takes what is due since the start, so a
// late tick catches up instead of slowing the client down for good), and the margins are taken
// against the bounds only where a loaded host can eat them.
import t from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import { startUpstream } from './fixtures/upstream.js'
import { FLAG, FRAME, PREFACE, frame, getBlock, readFrames, settingsFrame, windowUpdate } from './fixtures/h2-frames.js'
import { LogCapture } from './fixtures/log-capture.js'
import { onEvent, when, within } from './fixtures/wait.js'
import { h2cOver, h2cSession } from './fixtures/h2c.js'
import { clientIdleTimeout, clientStallTimeout } from '../src/proxy/deadlines.js'

t.test('a stream whose answer ended upstream and whose client reads it slowly but steadily gets it whole, past the stall bound', async (t) => {
  // bound 1 s (body_idle, response_headers): client bound 2 s, the stall bound four of them, 8 s.
  // The client's window starts at 0; it opens it by 1 KiB once the answer's head arrives, then by
  // 1 KiB every PACE ms of real time (a raw client: Node's reads ahead of its application). The
  // upstream sends 7 KiB, then, once the client has its first bytes, four writes of 1.75 KiB and
  // its end: the answer ended upstream with 13 KiB of it still in Tether. It goes out in two steps
  // (Node hands the first write on after 6 PACE, then the four it held back meanwhile as one after
  // 7 more), each within the bound (7 PACE = 4.7 s of 8 s: 3.3 s for a loaded host's late timers
  // and the deadline sweep's), progress, so the stream is not cut; the whole takes at least 13 PACE
  // = 8.7 s (the client opens its window no faster), past the stall bound. The upstream is silent
  // only while its first bytes cross to the client and its cue comes back (a few hops in this
  // process), well within body_idle (1 s) on a loaded host; at 0.5 s a loaded host's late hops
  // made it cut the upstream as idle (TETHER_UPSTREAM_TIMEOUT)
  const BOUND = 1_000
  const STALL = clientStallTimeout({ body_idle: BOUND, response_headers: BOUND })
  const PACE = Math.ceil(STALL / 12)
  const BODY = 14 * 1024
  let firstBytes: () => void = () => undefined
  const clientHasSome = new Promise<void>((resolve) => { firstBytes = resolve })
  const up = await startUpstream('app-0', (_req, res) => {
    res.write(Buffer.alloc(7 * 1024, 'y'))
    void clientHasSome.then(() => {
      for (let i = 0; i < 4; i++) res.write(Buffer.alloc(1792, 'y'))
      res.end()
    })
  })
  const logs = new LogCapture()
  const tether = await h2cOver(t, up, { bound: BOUND, logs })
  const socket = net.connect(tether.port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  socket.on('error', () => undefined)
  let got = 0
  let headAt = 0
  let granted = 0 // KiB of window given to stream 1
  let reader: NodeJS.Timeout | undefined
  t.teardown(() => clearInterval(reader))
  /** The client's own pace: 1 KiB at the head, then 1 KiB per PACE ms since, whatever its timer's lateness. */
  const grant = (): void => {
    const due = 1 + Math.floor((performance.now() - headAt) / PACE)
    if (due > granted) socket.write(windowUpdate(1, (due - granted) * 1024))
    granted = Math.max(granted, due)
  }
  const ended = new Promise<string>((resolve) => {
    readFrames(socket, (type, flags, stream, payload) => {
      if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
      if (stream !== 1) return
      if (type === FRAME.HEADERS && reader === undefined) {
        headAt = performance.now()
        grant()
        reader = setInterval(grant, PACE / 6)
      }
      if (type === FRAME.DATA) {
        got += payload.length
        firstBytes()
      }
      if ((type === FRAME.DATA || type === FRAME.HEADERS) && (flags & FLAG.END_STREAM) !== 0) resolve('end')
      if (type === FRAME.RST_STREAM) resolve(`reset ${payload.readUInt32BE(0)}`)
    })
  })
  socket.write(Buffer.concat([PREFACE, settingsFrame([[4, 0]]), frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, getBlock(`127.0.0.1:${tether.port}`, '/slow-tail', 'http'))]))
  const how = await within(ended, 30_000, 'the answer to end')
  const took = performance.now() - headAt
  clearInterval(reader)
  t.equal(how, 'end', 'ended, not reset')
  t.equal(got, BODY, 'the whole answer')
  t.ok(took > STALL, `the answer took longer than the stall bound (${took.toFixed(0)} ms, bound ${STALL} ms): what this test is about`)
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5_000, 'the access line')
  t.match(logs.access()[0], { status: 200, outcome: 'ok' })
})

t.test('a stream whose client reads slowly but steadily is not cut', async (t) => {
  const BODY = 160 * 1024
  const up = await startUpstream('app-0', (_req, res) => res.end(Buffer.alloc(BODY, 'y')))
  // client bound 1.3 s, four of them for an h2 stream's stall (5.2 s): the ~80 KiB Node holds
  // for a stream goes out at 40 KB/s in 2 s, longer than one bound (a 'drain' alone is that
  // coarse), within the stall bound with 3.2 s to spare for a loaded host's late timers
  const BOUND = 300
  const tether = await h2cOver(t, up, { bound: BOUND })
  const s = h2cSession(t, tether)
  const r = s.request({ ':path': '/slow' })
  r.on('error', () => undefined)
  r.pause()
  let got = 0
  const start = performance.now()
  const reader = setInterval(() => { // 4 KB per 100 ms of real time since the start (a late tick catches up)
    const due = Math.floor((performance.now() - start) / 100) * 4096
    for (let c: Buffer | null; got < due && (c = r.read(1024) as Buffer | null) !== null;) got += c.length
  }, 25)
  t.teardown(() => clearInterval(reader))
  const code = await within(new Promise<number>((resolve) => r.once('close', () => resolve(r.rstCode))), 20_000, 'the answer to end')
  const took = performance.now() - start
  clearInterval(reader)
  for (let c: Buffer | null; (c = r.read() as Buffer | null) !== null;) got += c.length
  t.equal(code, http2.constants.NGHTTP2_NO_ERROR, 'ended, not reset')
  t.equal(got, BODY, 'the whole answer')
  const bound = clientIdleTimeout({ body_idle: BOUND, response_headers: BOUND })
  t.ok(took > bound, `the answer took longer than a client bound (${took.toFixed(0)} ms, bound ${bound} ms): what this test is about`)
})
