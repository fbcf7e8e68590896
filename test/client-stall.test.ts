// A client that reads nothing of its answer while its connection stays busy is cut, as nginx's
// send_timeout does: over HTTP/1.1, one that keeps sending its request body slowly (each byte
// refreshes the socket's idle timer). The cut is the client's doing (TETHER_CLIENT_TIMEOUT),
// never held for good. HTTP/2's case is in h2c-stalled-streams.test.ts. Real upstream and raw
// client on loopback.
import t, { type Test } from 'tap'
import net from 'node:net'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startEndlessUpstream, startUpstream, testConfig } from './fixtures/upstream.js'
import { onEvent, waitFor, when } from './fixtures/wait.js'

/**
 * An upstream answering endlessly, Tether with a client bound of 1.3 s (the longer of body_idle
 * and response_headers, plus a second; Node's idle timer: up to twice that), and a raw client
 * connected to it that reads nothing.
 */
async function stalledClient(t: Test): Promise<{ up: Awaited<ReturnType<typeof startEndlessUpstream>>; logs: LogCapture; tether: Tether; client: net.Socket }> {
  const up = await startEndlessUpstream('app-0')
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { timeouts: { body_idle: 300, response_headers: 300 } }), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  client.pause() // reads nothing
  return { up, logs, tether, client }
}

t.test('HTTP/1.1: a client that sends its body slowly and reads nothing is cut (four client bounds), and its upstream request ends', async (t) => {
  const { up, logs, tether, client } = await stalledClient(t)
  client.write('POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n')
  const drip = setInterval(() => { if (!client.destroyed) client.write('1\r\na\r\n') }, 200) // a byte every 200 ms
  t.teardown(() => clearInterval(drip))
  await waitFor(() => up.answerClosed(), 15_000, 'the upstream request to end')
  clearInterval(drip)
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5_000, 'the access log line')
  t.match(logs.access()[0], { status: 200, outcome: 'TETHER_CLIENT_TIMEOUT' }, "the client's doing")
  t.equal(tether.health.state('app-0'), 'healthy', 'the upstream is not blamed')
  client.destroy()
})

t.test('HTTP/1.1: a client silent both ways (reads nothing, sends nothing) is cut at the client bound and logged as its timeout, not client_abort', async (t) => {
  const { up, logs, tether, client } = await stalledClient(t)
  const started = performance.now()
  client.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\n') // and sends nothing more
  await waitFor(() => up.answerClosed(), 10_000, 'the upstream request to end')
  const took = performance.now() - started
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5_000, 'the access log line')
  t.match(logs.access()[0], { status: 200, outcome: 'TETHER_CLIENT_TIMEOUT' }, "Tether's cut, logged as the client's timeout")
  t.ok(took >= 1_300 && took < 4_000, `cut after ${Math.round(took)} ms (bound 1.3 s, Node's timer up to twice it)`)
  t.equal(tether.health.state('app-0'), 'healthy', 'the upstream is not blamed')
  client.destroy()
})

t.test('HTTP/1.1: a client that stops sending its body after the upstream answered, the upstream echoing it, is cut as the client\'s timeout, the upstream not struck', async (t) => {
  // the upstream answers at once and echoes the body: once the client stops, so does the answer
  const up = await startUpstream('app-0', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.flushHeaders()
    req.on('data', (chunk: Buffer) => res.write(chunk))
    req.on('end', () => res.end())
  })
  const logs = new LogCapture()
  const config = testConfig([up], { timeouts: { body_idle: 1_000, response_headers: 5_000 }, health: { passive: { enabled: true, consecutive_failures: 1 } } })
  const tether = await startTether(config, { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())
  let answer = ''
  client.on('data', (b: Buffer) => { answer += b.toString('latin1') })
  client.write('POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n') // and sends nothing more
  await waitFor(() => answer.includes('hello'), 10_000, 'the echo of the first chunk')
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 15_000, 'the access log line')
  t.match(logs.access()[0], { status: 200, outcome: 'TETHER_CLIENT_TIMEOUT' }, "the client's doing")
  t.equal(tether.health.state('app-0'), 'healthy', 'the upstream is not struck')
})
