// The PROXY protocol header parser (src/proxy/proxy-protocol.ts), table-driven against
// HAProxy's spec (doc/proxy-protocol.txt, 2.6): v1 lines, v2 binary headers, what is incomplete,
// what is refused. Pure: no sockets here (test/proxy-protocol.test.ts has the listener).
import t from 'tap'
import { parseProxyHeader, V1_MAX_BYTES, V2_MAX_BYTES, type ProxyHeader } from '../src/proxy/proxy-protocol.js'
import { inet, inet6, v2, V2_SIGNATURE as SIG } from './fixtures/proxy-header.js'


const ok = (length: number, address: string | null, port = 0, family: 'IPv4' | 'IPv6' = 'IPv4'): ProxyHeader =>
  ({ kind: 'ok', length, peer: address === null ? null : { address, port, family } })

const line = (text: string): Buffer => Buffer.from(text, 'latin1')
const TLV = Buffer.from([0x04, 0x00, 0x03, 0x61, 0x62, 0x63]) // PP2_TYPE_NOOP, 3 bytes

const cases: [string, Buffer, ProxyHeader | 'more' | 'bad'][] = [
  ['v1 TCP4', line('PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n'), ok(43, '203.0.113.7', 51000)],
  ['v1 TCP4 with the request after it: the length ends at the CRLF', line('PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n'), ok(43, '203.0.113.7', 51000)],
  ['v1 TCP6, canonicalised as Node names a socket peer', line('PROXY TCP6 2001:DB8:0:0:0:0:0:1 2001:db8::2 1 65535\r\n'), ok(53, '2001:db8::1', 1, 'IPv6')],
  ['v1 TCP6 IPv4-mapped stays mapped (as a dual-stack socket shows it)', line('PROXY TCP6 ::ffff:198.51.100.1 ::1 80 80\r\n'), ok(42, '::ffff:198.51.100.1', 80, 'IPv6')],
  ['v1 UNKNOWN: the TCP peer stays', line('PROXY UNKNOWN\r\n'), ok(15, null)],
  ['v1 UNKNOWN with addresses after it (ignored)', line('PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n'), ok(59, null)],
  ['v1 incomplete', line('PROXY TCP4 203.0.113.7 10.0'), 'more'],
  ['v1 prefix only', line('PRO'), 'more'],
  ['v1 ending in CR', line('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r'), 'more'],
  ['not a header: an HTTP request', line('GET / HTTP/1.1\r\n'), 'bad'],
  ['not a header: "POST" shares only the P', line('POST'), 'bad'],
  ['not a header: a TLS ClientHello', Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]), 'bad'],
  ['v1 lower case', line('proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n'), 'bad'],
  ['v1 TCP5', line('PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n'), 'bad'],
  ['v1 TCP4 with an IPv6 address', line('PROXY TCP4 ::1 ::1 1 2\r\n'), 'bad'],
  ['v1 TCP6 with an IPv4 address', line('PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n'), 'bad'],
  ['v1 leading zero in an address', line('PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n'), 'bad'],
  ['v1 zone id', line('PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n'), 'bad'],
  ['v1 port over 65535', line('PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n'), 'bad'],
  ['v1 port with a leading zero', line('PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n'), 'bad'],
  ['v1 two spaces', line('PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n'), 'bad'],
  ['v1 a field missing', line('PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n'), 'bad'],
  ['v1 a field too many', line('PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n'), 'bad'],
  ['v1 bare LF', line('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n'), 'bad'],
  ['v1 CR inside', line('PROXY TCP4 1.2.3.4\r 5.6.7.8 1 2'), 'bad'],
  ['v1 non-ASCII', line('PROXY UNKNOWN \xff\r\n'), 'bad'],
  ['v1 107 bytes without CRLF', line(`PROXY UNKNOWN ${'x'.repeat(V1_MAX_BYTES - 14)}`), 'bad'],
  ['v1 CRLF past byte 107', line(`PROXY UNKNOWN ${'x'.repeat(V1_MAX_BYTES - 15)}\r\n`), 'bad'],
  ['v1 UNKNOWN of exactly 107 bytes', line(`PROXY UNKNOWN ${'x'.repeat(V1_MAX_BYTES - 16)}\r\n`), ok(107, null)],
  ['v2 PROXY TCP over IPv4', v2(0x21, 0x11, inet([203, 0, 113, 9], [10, 0, 0, 1], 40000, 443)), ok(28, '203.0.113.9', 40000)],
  ['v2 PROXY TCP over IPv4 with a TLV (skipped) and bytes after', Buffer.concat([v2(0x21, 0x11, Buffer.concat([inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), TLV])), line('GET')]), ok(34, '1.2.3.4', 1)],
  ['v2 PROXY TCP over IPv6', v2(0x21, 0x21, inet6('20010db8000000000000000000000001', '00000000000000000000000000000001', 5, 6)), ok(52, '2001:db8::1', 5, 'IPv6')],
  ['v2 PROXY IPv4-mapped IPv6', v2(0x21, 0x21, inet6('00000000000000000000ffffc6336401', '00000000000000000000000000000001', 5, 6)), ok(52, '::ffff:198.51.100.1', 5, 'IPv6')],
  ['v2 LOCAL: the TCP peer stays (addresses ignored)', v2(0x20, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)), ok(28, null)],
  ['v2 LOCAL with no address block', v2(0x20, 0x00, Buffer.alloc(0)), ok(16, null)],
  ['v2 PROXY AF_UNSPEC: the TCP peer stays', v2(0x21, 0x00, Buffer.alloc(0)), ok(16, null)],
  ['v2 PROXY AF_UNIX: the TCP peer stays', v2(0x21, 0x31, Buffer.alloc(216)), ok(232, null)],
  ['v2 PROXY UDP over IPv4: the TCP peer stays (as HAProxy)', v2(0x21, 0x12, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)), ok(28, null)],
  ['v2 signature only', SIG, 'more'],
  ['v2 fixed part incomplete', v2(0x21, 0x11, Buffer.alloc(0), 12).subarray(0, 15), 'more'],
  ['v2 addresses incomplete', v2(0x21, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)).subarray(0, 27), 'more'],
  ['v2 bad signature', Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540b', 'hex'), Buffer.alloc(16)]), 'bad'],
  ['v2 version 1', v2(0x11, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)), 'bad'],
  ['v2 command 2', v2(0x22, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)), 'bad'],
  ['v2 PROXY IPv4 with a length shorter than its addresses', v2(0x21, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), 8), 'bad'],
  ['v2 PROXY IPv6 with a length shorter than its addresses', v2(0x21, 0x21, Buffer.alloc(36), 12), 'bad'],
  // (nginx's NGX_PROXY_PROTOCOL_MAX_HEADER: refused at its fixed part, not waited for)
  ['v2 of exactly V2_MAX_BYTES (TLVs)', v2(0x21, 0x11, Buffer.concat([inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), Buffer.alloc(V2_MAX_BYTES - 28)])), ok(V2_MAX_BYTES, '1.2.3.4', 1)],
  ['v2 declaring a byte more than V2_MAX_BYTES, its fixed part alone', v2(0x21, 0x11, Buffer.alloc(0), V2_MAX_BYTES - 15), 'bad'],
  ['v2 LOCAL declaring 64 KiB', v2(0x20, 0x00, Buffer.alloc(0), 65535), 'bad'],
]

for (const [name, bytes, expected] of cases) {
  t.test(name, async (t) => {
    const got = parseProxyHeader(bytes)
    if (expected === 'more' || expected === 'bad') t.equal(got.kind, expected, JSON.stringify(got))
    else t.strictSame(got, expected)
  })
}

t.test('every prefix of a valid header asks for more; the whole says ok', async (t) => {
  for (const header of [line('PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n'), v2(0x21, 0x21, inet6('20010db8000000000000000000000001', '20010db8000000000000000000000002', 1, 2))]) {
    for (let n = 0; n < header.length; n++) t.equal(parseProxyHeader(header.subarray(0, n)).kind, 'more', `${n} of ${header.length} bytes`)
    t.equal(parseProxyHeader(header).kind, 'ok')
  }
})
