// A client pipelining requests behind one the upstream is slow to answer: Node parses what it
// reads at once, and would hold every request parsed (memory growing with what the client
// sends). Past MAX_WAITING requests waiting, onePerConnection stops reading the connection
// until they are answered; the requests left in the socket are then read and answered in order.
import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { MAX_WAITING, onePerConnection } from '../src/proxy/pipelining.js'
import { waitFor } from './fixtures/wait.js'

t.test('a connection with MAX_WAITING requests waiting is not read further until they are answered; then all are, in order', async (t) => {
  let parsed = 0
  const held: http.ServerResponse[] = []
  let holding = true
  const server = http.createServer(onePerConnection((req, res) => {
    if (holding) held.push(res)
    else res.end(req.url)
  }))
  server.on('request', () => parsed++)
  server.listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  t.teardown(() => { server.closeAllConnections(); return new Promise((r) => server.close(r)) })
  const port = (server.address() as net.AddressInfo).port

  const client = net.connect(port, '127.0.0.1')
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())
  let got = ''
  client.on('data', (c: Buffer) => (got += c.toString('latin1')))
  await new Promise((r) => client.once('connect', r))
  const batch = (from: number, n: number): string => Array.from({ length: n }, (_, i) => `GET /${from + i} HTTP/1.1\r\nHost: a\r\n\r\n`).join('')
  const first = 2 * MAX_WAITING
  client.write(batch(0, first)) // one write: Node parses it whole
  await waitFor(() => parsed === first, 5_000, 'the first batch to be parsed')
  t.equal(held.length, 1, 'one request handled at a time')

  client.write(batch(first, first))
  // a request on another connection, answered: the server has read what reached it since
  holding = false
  const other = await new Promise<number>((resolve, reject) => http.get({ port, host: '127.0.0.1', path: '/other', agent: false }, (res) => { res.resume(); resolve(res.statusCode!) }).on('error', reject))
  t.equal(other, 200)
  t.equal(parsed, first + 1, 'the second batch is not read while requests wait (the other connection is)')

  held[0]!.end('/0')
  await waitFor(() => (got.match(/HTTP\/1\.1 200/g) ?? []).length === 2 * first, 5_000, 'every request to be answered')
  t.equal(parsed, 2 * first + 1, 'the rest is read once the queue is down')
  const bodies = [...got.matchAll(/\r\n\r\n(\/\d+)/g)].map((m) => m[1])
  t.same(bodies, Array.from({ length: 2 * first }, (_, i) => `/${i}`), 'answered in request order')
})
