// `affinity.key: header` with a header sent twice: the same client sending the same lines gets
// the same key, and so the same upstream, over HTTP/1.1 and over HTTP/2 (h2c with prior
// knowledge, one port for both). Node's HTTP/1.1 parser keeps the first line of a field it
// knows to be single (Authorization, User-Agent, ...); the h2 view of a request now reads the
// same. Authorization sent twice is refused (400) on both, as nginx refuses it. curl is the h2
// client: Node's http2 client refuses to send a second Authorization or User-Agent
// (ERR_HTTP2_HEADER_SINGLE_VALUE). Real Tether, real upstreams on loopback.
import t from 'tap'
import http from 'node:http'
import http2 from 'node:http2'
import { once } from 'node:events'
import net, { type AddressInfo } from 'node:net'
import { proxyFor, request } from './fixtures/upstream.js'
import { curl } from './fixtures/h2c.js'
import { upstreams } from './fixtures/routing-sticky.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'
import { http1Head } from '../src/proxy/h2-messages.js'

const IDS = ['a', 'b']
const placement = buildPlacement(IDS.map((id) => ({ id, weight: 1 })))
const hashedTo = (v: string): string => placement.ids[placement.pick(hashKey(v))]!

/** Two values of `prefix` whose first alone and whose ", "-joined pair the hash sends to different upstreams. */
function splitPair(prefix: string): [string, string] {
  for (let i = 0; ; i++) {
    const one = `${prefix}-${i}`
    const two = `${prefix}-other-${i}`
    if (hashedTo(one) !== hashedTo(`${one}, ${two}`)) return [one, two]
  }
}

for (const name of ['User-Agent']) {
  t.test(`key: header on ${name} sent twice: HTTP/1.1 and h2 give one key (the first line, as Node's HTTP/1.1 parser reads it) and one upstream`, async (t) => {
    const ups = await upstreams(t, IDS)
    const tt = await proxyFor(t, ups, { listen: { http2: { cleartext: true } }, affinity: { key: 'header', header: { name } } })
    const [one, two] = splitPair(name === 'Authorization' ? 'Bearer tok' : 'agent')
    const h1 = await request(`${tt.url}/`, { headers: { [name]: [one, two] } })
    t.equal(h1.status, 200)
    const h2 = await curl(['--http2-prior-knowledge', '-H', `${name}: ${one}`, '-H', `${name}: ${two}`, `${tt.url}/`])
    t.equal(h2.code, 0)
    t.match(h2.out, /^HTTP\/2 200/, 'h2 answered')
    const h2Body = h2.out.slice(h2.out.indexOf('\r\n\r\n') + 4).trim()
    t.equal(h1.body.trim(), hashedTo(one), 'HTTP/1.1: placed by the first value')
    t.equal(h2Body, h1.body.trim(), 'h2: the same upstream as HTTP/1.1')
    t.ok(tt.sessions.table.peek(one, Date.now()), 'the key is the first value')
    t.equal(tt.sessions.table.size, 1, `one key for both protocols, not also ${JSON.stringify(`${one}, ${two}`)}`)
    for (const u of ups) for (const req of u.seen) t.same(req.rawHeaders.filter((_, i, r) => i % 2 === 0 && r[i]!.toLowerCase() === name.toLowerCase()).length, 2, 'both lines still reach the upstream')
  })
}

t.test('key: header on Authorization sent twice: refused (400) over HTTP/1.1 and h2 alike, before any key is made', async (t) => {
  const ups = await upstreams(t, IDS)
  const tt = await proxyFor(t, ups, { listen: { http2: { cleartext: true } }, affinity: { key: 'header', header: { name: 'Authorization' } } })
  const [one, two] = splitPair('Bearer tok')
  const h1 = await request(`${tt.url}/`, { headers: { Authorization: [one, two] } })
  t.equal(h1.status, 400, 'HTTP/1.1: 400')
  const h2 = await curl(['--http2-prior-knowledge', '-H', `Authorization: ${one}`, '-H', `Authorization: ${two}`, `${tt.url}/`])
  t.equal(h2.code, 0)
  t.match(h2.out, /^HTTP\/2 400/, 'h2: 400')
  t.equal(tt.sessions.table.size, 0, 'no key made')
  t.equal(ups.reduce((n, u) => n + u.seen.length, 0), 0, 'no upstream reached')
})

t.test('key: header on a list field (X-Tenant) sent twice: both lines joined with ", " over HTTP/1.1 and h2 alike', async (t) => {
  const ups = await upstreams(t, IDS)
  const tt = await proxyFor(t, ups, { listen: { http2: { cleartext: true } }, affinity: { key: 'header', header: { name: 'X-Tenant' } } })
  const h1 = await request(`${tt.url}/`, { headers: { 'x-tenant': ['t1', 't2'] } })
  const s = http2.connect(tt.url)
  t.teardown(() => s.destroy())
  const r = s.request({ ':path': '/', 'x-tenant': ['t1', 't2'] })
  const [head] = await once(r, 'response') as [http2.IncomingHttpHeaders]
  let body = ''
  r.setEncoding('utf8')
  r.on('data', (c: string) => { body += c })
  await once(r, 'end')
  t.equal(head[':status'], 200)
  t.equal(body.trim(), h1.body.trim())
  t.ok(tt.sessions.table.peek('t1, t2', Date.now()), 'the key is both values joined')
  t.equal(tt.sessions.table.size, 1)
})

t.test('the h2 view of a request head holds what Node\'s HTTP/1.1 parser makes of the same lines', async (t) => {
  // every name Node's parser treats apart (Node's docs for message.headers, and _http_incoming.js),
  // and a few it does not, each sent twice
  // (not content-length: Node refuses a request with two)
  const names = ['age', 'authorization', 'content-type', 'etag', 'expires', 'from', 'if-modified-since',
    'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'proxy-authorization', 'referer', 'retry-after',
    'server', 'user-agent', 'date', 'accept', 'x-tenant', 'cache-control', 'if-none-match', 'set-cookie', 'cookie']
  const lines: string[] = []
  for (const n of names) lines.push(n, `${n}-1`, n, `${n}-2`)
  const server = http.createServer((req, res) => res.end(JSON.stringify(req.headers)))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const head = ['GET / HTTP/1.1', 'host: a.example']
  for (let i = 0; i < lines.length; i += 2) head.push(`${lines[i]}: ${lines[i + 1]}`)
  head.push('connection: close')
  const socket = net.connect((server.address() as AddressInfo).port, '127.0.0.1')
  socket.end(`${head.join('\r\n')}\r\n\r\n`)
  let answer = ''
  socket.setEncoding('utf8')
  socket.on('data', (c: string) => { answer += c })
  await once(socket, 'close')
  const node = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>
  delete node.connection
  const view = http1Head([':method', 'GET', ':authority', 'a.example', ':path', '/', ...lines], false)
  t.same({ ...view.headers }, node)
})
