// An upstream 1xx's Content-Length is not forwarded. RFC 9110 section 8.6: a server MUST NOT
// send Content-Length in a 1xx (Tether drops it from a 101 for that reason too). Over h2 an
// nghttp2 client (Node's http2, curl) treats content-length in an informational HEADERS frame
// as a malformed response: the whole request would fail.
import t from 'tap'
import http2 from 'node:http2'
import { startHarness } from './fixtures/raw-tether.js'
import { exchange } from './fixtures/raw-client.js'
import { ok, type RawScript } from './fixtures/raw-upstream.js'

const raw = (bytes: string): RawScript => (_q, c) => c.write(bytes)
const HINT_CL = 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: 0\r\n\r\n'

t.test('HTTP/1.1: the forwarded 103 carries no Content-Length', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 } }, raw(`${HINT_CL}${ok('ok')}`))
  t.teardown(() => h.close())
  const r = await exchange(h.port, 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1, ms: 3000 })
  const text = r.bytes.toString('latin1')
  const head = text.slice(0, text.indexOf('\r\n\r\n') + 4)
  t.comment(JSON.stringify(head))
  t.notMatch(head, /content-length/i, 'no Content-Length in the 1xx head')
})

t.test('h2: a client gets the 200 when the upstream\'s 103 had Content-Length: 0', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 }, listen: { http2: { cleartext: true } } }, raw(`${HINT_CL}${ok('ok')}`))
  t.teardown(() => h.close())
  const s = http2.connect(`http://127.0.0.1:${h.port}`)
  t.teardown(() => s.destroy())
  s.on('error', () => {})
  const req = s.request({ ':path': '/x' })
  const got = await new Promise<string>((resolve) => {
    req.on('response', (hd) => resolve(`response ${String(hd[':status'])}`))
    req.on('error', (e: Error & { code?: string }) => resolve(`error ${e.code ?? ''} ${e.message}`))
    req.on('close', () => resolve(`closed rstCode=${req.rstCode}`))
  })
  t.comment(got)
  t.equal(got, 'response 200')
})

t.test('h2 (curl --http2-prior-knowledge, nghttp2): the 200 arrives after the upstream\'s 103 with Content-Length: 0', async (t) => {
  const { execFile } = await import('node:child_process')
  const h = await startHarness({ retries: { attempts: 0 }, listen: { http2: { cleartext: true } } }, raw(`${HINT_CL}${ok('ok')}`))
  t.teardown(() => h.close())
  const curl = await new Promise<string>((resolve) => execFile('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--http2-prior-knowledge', `http://127.0.0.1:${h.port}/x`], { timeout: 10_000 }, (err, out, se) => resolve(err ? `error: ${se.trim()}` : out)))
  t.comment(curl)
  t.equal(curl, '200')
})
