// A graceful stop must not cut a connection that was accepted just before it and sends its
// request only after the listener stopped accepting: the request is answered, with
// Connection: close. (Node's closeIdleConnections leaves a connection that never started a
// request alone; this holds Tether's shutdown sweep to that.) With workers this is the
// connection the primary handed over an instant before a worker's listener closed.
import t from 'tap'
import net from 'node:net'
import { proxyFor, startUpstream } from './fixtures/upstream.js'
import { once, waitFor } from './fixtures/wait.js'

t.test('a connection accepted before a graceful stop gets its request answered (Connection: close), not reset', async (t) => {
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  const tt = await proxyFor(t, [up])
  const accepted = once(tt.listener.server, 'connection')
  const socket = net.connect(tt.port, '127.0.0.1')
  socket.on('error', () => undefined)
  await accepted // Tether has accepted it; no request yet
  const closing = tt.close(5_000)
  let answer = ''
  socket.setEncoding('latin1')
  socket.on('data', (c: string) => (answer += c))
  const ended = once(socket, 'close', 5_000)
  // the listener has stopped accepting (its idle sweep has started) before the request is sent
  await waitFor(() => !tt.listener.server.listening, 5_000, 'the listener to stop accepting')
  socket.write('GET / HTTP/1.1\r\nHost: example.test\r\n\r\n')
  const [hadError] = await ended as [boolean]
  t.match(answer, /^HTTP\/1\.1 200 /, 'answered')
  t.match(answer, /\r\nconnection: close\r\n/i, 'with Connection: close')
  t.equal(hadError, false, 'closed cleanly, not reset')
  await closing
})
