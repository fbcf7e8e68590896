// A method Node's parser does not know, in an otherwise well-formed request line, is answered
// 501 TETHER_UNKNOWN_METHOD (RFC 9110 section 15.6.2; nginx 1.22 and HAProxy 2.6 forward it,
// which Tether cannot); other protocols' lines and malformed lines stay 400, as nginx answers
// them (measured on nginx 1.22: EHLO, SET and a control-byte target 400; a 100-character
// upper-case method forwarded, so 501 here).
import t from 'tap'
import { startHarness } from './fixtures/raw-tether.js'
import { exchange } from './fixtures/raw-client.js'

const H = 'Host: a\r\n\r\n'
const cases: [string, string | string[], number[]][] = [
  ['FOO', `FOO /x HTTP/1.1\r\n${H}`, [501]],
  ['pipelined FOO', `GET / HTTP/1.1\r\n${H}FOO /x HTTP/1.1\r\n${H}`, [200, 501]],
  ['split PURG|EALL', ['PURG', `EALL /x HTTP/1.1\r\n${H}`], [501]],
  ['split G|-X (G-X is registered form)', ['G', `-X /x HTTP/1.1\r\n${H}`], [501]],
  ['a line cut short in its first segment (the rest not sent yet)', 'FOO /x HT', [501]],
  ['a line cut short after its version', 'FOO /x HTTP/1.1\r', [501]],
  ['another protocol\'s line cut short', 'SET foo bar', [400]],
  ['long method 100', `${'A'.repeat(100)} /x HTTP/1.1\r\n${H}`, [501]],
  ['after body', `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nabFOO /x HTTP/1.1\r\n${H}`, [200, 400]],
  ['SMTP EHLO (no HTTP version)', `EHLO example.com\r\n\r\n`, [400]],
  ['Redis inline SET (no HTTP version)', `SET foo bar\r\n\r\n`, [400]],
  ['FOO with a control-char target', `FOO \x01\x02 HTTP/1.1\r\n${H}`, [400]],
  ['PRI preface', `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, [400]],
  ['tls hello', [Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]).toString('latin1')], [400]],
]
t.test('unknown methods', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  for (const [name, input, want] of cases) {
    const parts = Array.isArray(input) ? input.map((s) => Buffer.from(s, 'latin1')) : Buffer.from(input, 'latin1')
    const r = await exchange(h.port, parts, { ms: 2000, responses: 99 })
    const got = r.finals.map((x) => x.status)
    t.comment(`${name}: statuses ${JSON.stringify(got)} ended=${r.ended}`)
    t.same(got, want, name)
  }
})
