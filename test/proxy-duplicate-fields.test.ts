// A request carrying a second line of a field that may appear once (Host, Content-Length,
// Transfer-Encoding, Authorization, Proxy-Authorization, the If-* preconditions, Content-Range,
// Expect) is refused with 400 before any routing, over HTTP/1.1 (raw sockets) and h2 (h2c with
// prior knowledge), equal values or not, as nginx 1.22 refuses them ("client sent duplicate
// header line"): Node's parser keeps the first Authorization in `headers` and forwards both,
// so Tether's affinity key and an upstream reading the last line would see different
// credentials. curl is the h2 client: Node's http2 client refuses to send a second
// Authorization (ERR_HTTP2_HEADER_SINGLE_VALUE). Real Tether, real upstream on loopback.
import t from 'tap'
import { execFile } from 'node:child_process'
import net from 'node:net'
import { proxyFor, startUpstream } from './fixtures/upstream.js'
import { ERRORS } from '../src/errors.js'

const BODY = `${ERRORS.TETHER_BAD_REQUEST.message}\n`

/** Field, first value, second value: each refused sent twice. */
const ONCE_ONLY: readonly [string, string, string][] = [
  ['Authorization', 'Basic YWxpY2U6MQ==', 'Basic bWFsbG9yeToy'],
  ['Authorization', 'Bearer same', 'Bearer same'],
  ['Proxy-Authorization', 'Basic YWxpY2U6MQ==', 'Basic bWFsbG9yeToy'],
  ['If-Modified-Since', 'Mon, 01 Jan 2024 00:00:00 GMT', 'Tue, 02 Jan 2024 00:00:00 GMT'],
  ['If-Unmodified-Since', 'Mon, 01 Jan 2024 00:00:00 GMT', 'Tue, 02 Jan 2024 00:00:00 GMT'],
  ['If-Match', '"a"', '"b"'],
  ['If-None-Match', '"a"', '"b"'],
  ['If-Range', '"a"', '"b"'],
  ['Content-Range', 'bytes 0-0/1', 'bytes 0-0/1'],
  ['Expect', '100-continue', '100-continue'],
  ['Host', 'a.example', 'a.example'],
]

/** One raw HTTP/1.1 exchange: `head` (its empty line included) and `body` sent; the last answer's status and body (after any 100 Continue), read until Tether closes or the answer is whole. */
function raw(port: number, text: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let buf = ''
    const done = (): void => {
      const answers = buf.split(/(?=HTTP\/1\.1 \d{3} )/).filter((a) => !a.startsWith('HTTP/1.1 100 '))
      const last = answers.at(-1) ?? ''
      const end = last.indexOf('\r\n\r\n')
      const length = /\r\ncontent-length: (\d+)/i.exec(last.slice(0, end))
      if (end === -1 || length === null || last.length < end + 4 + Number(length[1])) return
      s.destroy()
      resolve({ status: Number(last.slice(9, 12)), body: last.slice(end + 4, end + 4 + Number(length[1])) })
    }
    s.setEncoding('latin1')
    s.on('data', (d: string) => { buf += d; done() })
    s.on('error', reject)
    s.on('close', () => reject(new Error(`closed before a whole answer: ${JSON.stringify(buf)}`)))
    s.write(text)
  })
}

/** curl over h2c with prior knowledge, extra header lines `headers`: status and body. */
function h2(url: string, headers: readonly string[]): Promise<{ code: number; status: number; body: string }> {
  const args = ['-sS', '--max-time', '10', '--http2-prior-knowledge', '-w', '\n%{http_code}', ...headers.flatMap((h) => ['-H', h]), url]
  return new Promise((resolve) => execFile('curl', args, (err, out) => {
    const nl = out.lastIndexOf('\n')
    resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? 1), status: Number(out.slice(nl + 1)), body: out.slice(0, nl) })
  }))
}

/** Client requests answered without an upstream with a 4xx, by tether_http_requests_total. */
async function refusedCount(render: () => Promise<string>): Promise<number> {
  let n = 0
  for (const m of (await render()).matchAll(/^tether_http_requests_total\{([^}]*)\} (\d+)$/gm)) {
    if (m[1]!.includes('upstream="none"') && m[1]!.includes('status_class="4xx"')) n += Number(m[2])
  }
  return n
}

t.test('HTTP/1.1: a second line of a field that may appear once is 400, and nothing reaches the upstream', async (t) => {
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  const tt = await proxyFor(t, [up])
  for (const [name, v1, v2] of ONCE_ONLY) {
    const host = name === 'Host' ? '' : 'Host: a.example\r\n'
    const r = await raw(tt.port, `GET / HTTP/1.1\r\n${host}${name}: ${v1}\r\n${name.toLowerCase()}: ${v2}\r\nContent-Length: 0\r\n\r\n`)
    t.same(r, { status: 400, body: BODY }, `${name} twice (${v1 === v2 ? 'equal' : 'different'} values)`)
    // sent once, the same field passes
    const one = await raw(tt.port, `GET / HTTP/1.1\r\n${host}${name}: ${v1}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)
    t.equal(one.status, 200, `${name} once: served`)
  }
  t.equal(up.seen.length, ONCE_ONLY.length, 'only the requests with one line reached the upstream')
  for (const req of up.seen) {
    const names = req.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
    t.equal(names.length, new Set(names).size, 'no field repeated in what reached the upstream')
  }
  t.equal(await refusedCount(() => tt.metrics.render()), ONCE_ONLY.length, 'each refusal counted as a 4xx answered without an upstream')
})

t.test('HTTP/1.1: two Transfer-Encoding lines are 400 (not the 501 of an unknown coding), two Content-Length lines 400 (Node\'s parser)', async (t) => {
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  const tt = await proxyFor(t, [up])
  const te = await raw(tt.port, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')
  t.same(te, { status: 400, body: BODY }, 'Transfer-Encoding: gzip + Transfer-Encoding: chunked')
  const te2 = await raw(tt.port, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')
  t.same(te2, { status: 400, body: BODY }, 'chunked twice')
  for (const second of ['0', '1']) {
    const cl = await raw(tt.port, `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: ${second}\r\n\r\n${second === '1' ? 'x' : ''}`)
    t.same(cl, { status: 400, body: BODY }, `Content-Length 0 then ${second}`)
  }
  const once = await raw(tt.port, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n')
  t.equal(once.status, 200, 'one Transfer-Encoding: served')
  t.equal(up.seen.length, 1, 'only that one reached the upstream')
})

t.test('h2: a second line of a field that may appear once is 400, and nothing reaches the upstream', async (t) => {
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  const tt = await proxyFor(t, [up], { listen: { http2: { cleartext: true } } })
  const h2Cases = ONCE_ONLY.filter(([name]) => name !== 'Host') // curl's h2 turns Host into :authority
  for (const [name, v1, v2] of h2Cases) {
    const r = await h2(`${tt.url}/`, [`${name}: ${v1}`, `${name}: ${v2}`])
    t.same({ code: r.code, status: r.status, body: r.body }, { code: 0, status: 400, body: BODY }, `${name} twice over h2`)
    const one = await h2(`${tt.url}/`, [`${name}: ${v1}`])
    t.equal(one.status, 200, `${name} once over h2: served`)
  }
  t.equal(up.seen.length, h2Cases.length, 'only the requests with one line reached the upstream')
  t.ok(up.seen.every((r) => r.httpVersion === '1.1'))
  t.equal(await refusedCount(() => tt.metrics.render()), h2Cases.length, 'each refusal counted as a 4xx answered without an upstream')
})

t.test('a WebSocket handshake with two Authorization lines is 400 before any upstream', async (t) => {
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  let upgrades = 0
  up.server.on('upgrade', (_req, socket: net.Socket) => { upgrades++; socket.destroy() })
  const tt = await proxyFor(t, [up])
  const r = await raw(tt.port, 'GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n')
  t.same(r, { status: 400, body: BODY })
  t.equal(upgrades, 0, 'no handshake reached the upstream')
})

t.test('Expect: 100-continue sent twice: the 400 comes without a 100 Continue, so the client sends no body', async (t) => {
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  const tt = await proxyFor(t, [up])
  const answered = (head: string): Promise<string> => new Promise((resolve, reject) => {
    const s = net.connect(tt.port, '127.0.0.1')
    let buf = ''
    s.setEncoding('latin1')
    s.on('data', (d: string) => {
      buf += d
      const m = /\r\n\r\n/.exec(buf)
      if (m === null) return
      // the first whole answer head decides: a 100 Continue, or the final answer
      if (buf.startsWith('HTTP/1.1 100 ') || /\r\ncontent-length: \d+/i.test(buf.slice(0, m.index))) { s.destroy(); resolve(buf) }
    })
    s.on('error', reject)
    s.write(head) // the body (5 bytes) is never sent: a client that waits for the 100
  })
  const twice = await answered('POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nexpect: 100-continue\r\nContent-Length: 5\r\n\r\n')
  t.match(twice, /^HTTP\/1\.1 400 /, 'the first answer is the 400, no 100 Continue before it')
  const once = await answered('POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n')
  t.match(once, /^HTTP\/1\.1 100 Continue\r\n/, 'one Expect line: 100 Continue, as before')
})
