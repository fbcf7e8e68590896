// HTTP/2 clients that take nothing of a large answer, against Tether run as its CLI (its memory
// read from /proc) over an upstream whose answer never ends: a flow-control window left at 0
// (RFC 9113 section 6.9.2), and windows opened wide while the TCP connection is not read
// (CVE-2019-9517, "internal data buffering"). Tether must not take the upstream's answer into
// memory faster than the client reads it, and must end the upstream requests once the client
// bound passes (timeouts.body_idle and response_headers at 300 ms: the client bound 1.3 s).
import t, { type Test } from 'tap'
import type { TLSSocket } from 'node:tls'
import { probe, startFloodTarget } from './fixtures/h2-flood-target.js'
import { FLAG, FRAME, connectH2, frame, getBlock, processUsage, readFrames, settingsFrame, windowUpdate } from './fixtures/h2-frames.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { waitFor } from './fixtures/wait.js'
import type { Handler } from './fixtures/upstream.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

/** An upstream answer of 64 KiB writes with no end, as fast as Tether takes them: bytes it wrote, answers Tether closed. */
function endless(): { handler: Handler; written: () => number; closed: () => number } {
  let written = 0
  let closed = 0
  const handler: Handler = (req, res) => {
    req.resume()
    res.on('close', () => { closed++ })
    const chunk = Buffer.alloc(64 * 1024, 'x')
    const pump = (): void => { while (!res.destroyed) { written += chunk.length; if (!res.write(chunk)) break } }
    res.on('drain', pump)
    pump()
  }
  return { handler, written: () => written, closed: () => closed }
}

const BOUNDS = ['timeouts: { body_idle: 300ms, response_headers: 300ms }']

/** Polls Tether's RSS every 100 ms until `done()` (deadline 15 s): the peak, in kB. */
async function peakRss(pid: number, done: () => boolean, what: string): Promise<number> {
  let peak = 0
  await waitFor(async () => { peak = Math.max(peak, (await processUsage(pid)).rssKb); return done() }, 15_000, what, 100)
  return peak
}

/**
 * Tether (the CLI, BOUNDS) over an endless upstream, and a raw h2 client connected to it that
 * acknowledges SETTINGS and hands every DATA payload to `onData`: what both tests start from.
 */
async function stuckReader(t: Test, onData: (payload: Buffer, socket: TLSSocket) => void) {
  const up = endless()
  const { tether, port, upstreamRequests } = await startFloodTarget(t, certs, up.handler, BOUNDS)
  const pid = tether.proc.pid!
  const before = (await processUsage(pid)).rssKb
  const socket = await connectH2(port, certs.ca)
  t.teardown(() => socket.destroy())
  socket.on('error', () => undefined)
  readFrames(socket, (type, flags, _stream, payload) => {
    if (type === FRAME.DATA) onData(payload, socket)
    if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
  })
  return { up, port, pid, before, socket, upstreamRequests }
}

t.test('a client whose window stays 0 gets nothing of an endless answer; Tether holds little of it and ends the upstream request at the client bound', async (t) => {
  let received = 0
  const { up, port, pid, before, socket, upstreamRequests } = await stuckReader(t, (payload) => { received += payload.length })
  socket.write(Buffer.concat([settingsFrame([[4, 0]]), frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, 1, getBlock(`127.0.0.1:${port}`, '/held'))]))
  const start = Date.now()
  const peak = await peakRss(pid, () => up.closed() === 1, 'the upstream request to be ended')
  const took = Date.now() - start
  t.equal(upstreamRequests(), 1, 'one request reached the upstream')
  t.equal(received, 0, 'the client got no byte of the answer (its window is 0)')
  t.ok(peak - before < 100_000, `Tether's RSS grew by ${peak - before} kB at most (< 100 MB)`)
  t.ok(up.written() < 64 * 1024 * 1024, `the upstream wrote ${up.written()} bytes (socket buffers), not an unbounded answer`)
  t.comment(`window 0: upstream wrote ${(up.written() / 1e6).toFixed(1)} MB, Tether RSS ${before} -> peak ${peak} kB, upstream request ended after ${took} ms`)
  t.equal(await probe(port, certs.ca), 200, 'another client is served')
})

t.test('a client that opens its windows wide and then stops reading the connection (50 endless answers): Tether holds little of them and ends every upstream request at the client bound', async (t) => {
  // Tether's RSS grew alike with 1 stream (the upstream wrote 11 MB) and with 60 (95 MB): what it
  // grows by is the process's own churn, not answers held
  const STREAMS = 50
  let received = 0
  // reads 1 MB, then nothing more
  const { up, port, pid, before, socket, upstreamRequests } = await stuckReader(t, (payload, s) => { received += payload.length; if (received > 1024 * 1024) s.pause() })
  const heads = Array.from({ length: STREAMS }, (_, i) => frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, 1 + 2 * i, getBlock(`127.0.0.1:${port}`, '/held')))
  // every stream's window and the connection's at their largest (2^31 - 1): only TCP holds Tether back
  socket.write(Buffer.concat([settingsFrame([[4, 0x7fffffff]]), windowUpdate(0, 0x7fffffff - 65_535), ...heads]))
  const start = Date.now()
  const peak = await peakRss(pid, () => up.closed() === STREAMS, `the ${STREAMS} upstream requests to be ended`)
  const took = Date.now() - start
  t.equal(upstreamRequests(), STREAMS, `${STREAMS} requests reached the upstream`)
  t.ok(peak - before < 100_000, `Tether's RSS grew by ${peak - before} kB at most (< 100 MB) while the upstream wrote ${(up.written() / 1e6).toFixed(1)} MB`)
  t.comment(`windows open, TCP not read: the client read ${(received / 1e6).toFixed(1)} MB, the upstream wrote ${(up.written() / 1e6).toFixed(1)} MB (kernel socket buffers on both loopback connections), Tether RSS ${before} -> peak ${peak} kB, the ${STREAMS} upstream requests ended after ${took} ms`)
  t.equal(await probe(port, certs.ca), 200, 'another client is served')
})
