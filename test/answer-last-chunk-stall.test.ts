// Review s62/r2 (of 3e56ef9): an HTTP/1.1 client that reads nothing, where the chunk that
// completes the answer's Content-Length is the one its connection cannot take. That chunk goes
// out with `res.end(chunk)` only when the response's buffer takes it under its high-water
// mark; a larger one goes through `res.write` (false: backpressure), the answer's end waits for
// a 'drain' and the stall cut applies (TETHER_CLIENT_TIMEOUT, as in client-stall.test.ts).
// With every completing chunk ended at once, the exchange was logged as a plain 200 while tens
// of KB of it sat in Tether's buffer, unwatched (HTTP/1.1 has no Delivery timer).
import t from 'tap'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { onEvent, waitFor, when } from './fixtures/wait.js'

/** What loopback takes of writes to a client that reads nothing (kernel buffers), measured here. */
async function loopbackRoom(): Promise<number> {
  const srv = net.createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const client = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1')
  client.on('error', () => undefined)
  client.pause()
  const [s] = await new Promise<[net.Socket]>((resolve) => srv.once('connection', (s: net.Socket) => resolve([s])))
  const buf = Buffer.alloc(65536, 'x')
  let sent = 0
  while (s.write(buf)) sent += buf.length
  sent += buf.length
  // the kernel takes what it can; settled when what Node holds stops shrinking
  let last = -1
  let same = 0
  await waitFor(() => {
    same = s.writableLength === last ? same + 1 : 0
    last = s.writableLength
    return same >= 5
  }, 5_000, 'the loopback buffers to fill', 20)
  const room = sent - s.writableLength
  s.destroy()
  client.destroy()
  srv.close()
  return room
}

t.test('HTTP/1.1: a completing chunk that does not fit a non-reading client is still under the stall cut', async (t) => {
  const room = await loopbackRoom()
  const prefix = room - 16 * 1024 // fits (Tether's writes return true)
  const last = 64 * 1024 // the completing chunk, past the response's 16 KB high-water mark
  const piece = Buffer.alloc(64 * 1024, 'y')
  const up = await startUpstream('app-0', (req, res) => {
    req.resume()
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(prefix + last) })
    res.flushHeaders()
    let left = prefix
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, piece.length)
        left -= n
        if (!res.write(piece.subarray(0, n))) return void res.once('drain', pump)
      }
      // the last chunk a moment later, in a read of its own at Tether
      setTimeout(() => res.end(Buffer.alloc(last, 'z')), 100)
    }
    pump()
  })
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { timeouts: { body_idle: 300, response_headers: 300 } }), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  client.pause() // reads nothing
  t.teardown(() => client.destroy())
  client.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n')
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 20_000, 'the access log line')
  const line = logs.access()[0]!
  t.comment(`loopback room ${room}; access line: status ${String(line['status'])}, outcome ${String(line['outcome'])}`)
  t.match(line, { status: 200, outcome: 'TETHER_CLIENT_TIMEOUT' }, 'a client that took nothing of the end of its answer is cut as its timeout, not logged as answered')
})
