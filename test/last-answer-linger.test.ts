// The lingering close after a connection's last answer (proxy/pipelining.ts): an answer that
// went out before the upload was all in is followed by reading and dropping the rest, bounded as
// nginx's lingering_close: at most LAST_ANSWER_LINGER (30 s, `lingering_time`) and, when the
// client sends nothing, LAST_ANSWER_LINGER_IDLE (5 s, `lingering_timeout`). Real sockets; the
// idle bound is waited for by polling with a deadline well short of the 30 s one.
import t from 'tap'
import type { Socket } from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LAST_ANSWER_LINGER, LAST_ANSWER_LINGER_IDLE } from '../src/proxy/pipelining.js'
import { rawConnect } from './fixtures/raw-client.js'
import { startUpstream, testConfig, waitFor } from './fixtures/upstream.js'

t.test('a client that stops sending its upload after the last answer is closed once idle for the idle bound, not held to the linger\'s end; bytes it sends keep it read meanwhile', async (t) => {
  const up = await startUpstream('app-0', (_req, res) => { res.writeHead(401, { 'content-length': '2' }); res.end('no') })
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([up], { limits: { max_requests_per_connection: 1 } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const open = new Set<Socket>()
  tether.listener.server.on('connection', (s: Socket) => { open.add(s); s.once('close', () => open.delete(s)) })
  const c = await rawConnect(tether.port)
  t.teardown(() => c.destroy())
  c.write(`POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n${'x'.repeat(1000)}`)
  t.ok(await c.until(() => c.finals().length === 1 && c.ended, 5_000), 'the 401 came, then Tether\'s FIN (its half-close)')
  t.match(c.bytes.toString('latin1'), /^HTTP\/1\.1 401 [^]*connection: close/i)
  t.equal(open.size, 1, 'Tether still reads the rest')
  const [lingering] = open
  const readBefore = lingering!.bytesRead
  // bytes spaced well inside the idle bound, for longer than it: the connection is kept reading
  // (the pauses pace the client's trickle; nothing waits on them for Tether to act)
  const spacing = LAST_ANSWER_LINGER_IDLE / 2.5
  for (let i = 1; i <= 3; i++) {
    await new Promise((r) => setTimeout(r, spacing))
    c.write('x'.repeat(1000))
    await waitFor(() => lingering!.bytesRead >= readBefore + i * 1000 || lingering!.destroyed, 2_000, `Tether to read trickle ${i}`)
  }
  t.ok(!lingering!.destroyed && !c.reset, `still read after ${3 * spacing} ms of a trickle, past the idle bound of ${LAST_ANSWER_LINGER_IDLE} ms`)
  // then silence: closed at the idle bound, long before the linger's end (30 s from its start)
  const silent = Date.now()
  await waitFor(() => open.size === 0, LAST_ANSWER_LINGER - 3 * spacing - LAST_ANSWER_LINGER_IDLE, 'Tether to close the silent connection at the idle bound')
  t.pass(`closed ${Date.now() - silent} ms after the client fell silent`)
})
