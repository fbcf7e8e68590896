// listen.proxy_protocol on a real Tether: a PROXY header (v1 or v2) before the client's first
// byte declares the client, whose address the upstream then sees in X-Forwarded-For, the
// client_ip key hashes and the access log names; over HTTP/1.1 (pipelined too, with
// Expect: 100-continue, the header cut at any byte), h2c, TLS (HTTP/1.1 and h2 by ALPN),
// WebSocket upgrades, CONNECT (refused as without a header) and the redirect listener. A connection without
// a valid header within timeouts.client_headers is closed without an answer, nothing forwarded.
import t, { type Test } from 'tap'
import http from 'node:http'
import v8 from 'node:v8'
import vm from 'node:vm'
import http2 from 'node:http2'
import net from 'node:net'
import tls from 'node:tls'
import { createHash } from 'node:crypto'
import { startTether, type Tether } from '../src/app.js'
import type { Config } from '../src/config/schema.js'
import { createLogger } from '../src/observability/logger.js'
import { V2_MAX_BYTES } from '../src/proxy/proxy-protocol.js'
import { testConfig, type DeepPartial, type Upstream } from './fixtures/upstream.js'
import { upstreams } from './fixtures/routing-sticky.js'
import { LogCapture } from './fixtures/log-capture.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { inet, inet6, v2, V2_SIGNATURE } from './fixtures/proxy-header.js'
import { once, onEvent, when, within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

/** Each upstream answers what it saw: its id, the X-Forwarded-For Tether sent it, the path and the body. */
const seeing = (id: string): http.RequestListener => (req, res) => {
  let body = ''
  req.setEncoding('latin1')
  req.on('data', (c: string) => { body += c })
  req.on('end', () => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ id, xff: req.headers['x-forwarded-for'] ?? null, path: req.url, body }))
  })
}

/** Three upstreams and a Tether in front with `over` (proxy_protocol on unless said). */
async function ppTether(t: Test, over: DeepPartial<Config> = {}, logs?: LogCapture): Promise<{ tether: Tether; ups: Upstream[] }> {
  const ups = await upstreams(t, ['a', 'b', 'c'], seeing)
  for (const up of ups) up.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
    socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nX-Seen-Xff: ${req.headers['x-forwarded-for']}\r\n\r\n`)
  })
  const config = testConfig(ups, { ...over, listen: { proxy_protocol: true, ...over.listen } })
  const tether = await startTether(config, { logger: logs === undefined ? createLogger('silent') : createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  return { tether, ups }
}

const portOf = (url: string): number => Number(new URL(url).port)
const line = (text: string): Buffer => Buffer.from(text, 'latin1')
const GET = line('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')

/** Two turns of the loop: Tether, in this process, reads what was written before the next write. */
async function turns(): Promise<void> {
  for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve))
}

/**
 * A raw connection that writes `chunks` (each its own write, a read of Tether's apart) and
 * resolves with everything it read once Tether closed it.
 */
async function exchange(port: number, chunks: readonly Buffer[]): Promise<string> {
  const socket = net.connect(port, '127.0.0.1')
  socket.setNoDelay(true)
  let got = ''
  socket.on('data', (c: Buffer) => { got += c.toString('latin1') })
  socket.on('error', () => undefined)
  const closed = once(socket, 'close', 10_000, 'Tether closed the connection')
  await once(socket, 'connect')
  for (const chunk of chunks) {
    socket.write(chunk)
    await turns()
  }
  await closed
  return got
}

/** The JSON bodies of the answers in `raw` (one or more HTTP/1.1 answers). */
function bodies(raw: string): { id: string; xff: string | null; path: string; body: string }[] {
  return [...raw.matchAll(/\{"id".*?\}/g)].map((m) => JSON.parse(m[0]) as { id: string; xff: string | null; path: string; body: string })
}

const v4 = (a: number[], port = 40000): Buffer => v2(0x21, 0x11, inet(a, [10, 0, 0, 1], port, 443))

t.test('v1 TCP4/TCP6/UNKNOWN and v2 PROXY/LOCAL: the upstream sees the declared client in X-Forwarded-For, the access log names it; UNKNOWN and LOCAL keep the TCP peer', async (t) => {
  const logs = new LogCapture()
  const { tether } = await ppTether(t, {}, logs)
  const cases: [string, Buffer, string][] = [
    ['v1 TCP4', line('PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n'), '203.0.113.7'],
    ['v1 TCP6', line('PROXY TCP6 2001:DB8:0:0::7 2001:db8::1 51000 443\r\n'), '2001:db8::7'],
    ['v1 UNKNOWN', line('PROXY UNKNOWN\r\n'), '127.0.0.1'],
    ['v2 PROXY IPv4 with a TLV', v2(0x21, 0x11, Buffer.concat([inet([198, 51, 100, 4], [10, 0, 0, 1], 1, 2), Buffer.from([0x04, 0x00, 0x01, 0x00])])), '198.51.100.4'],
    ['v2 PROXY IPv6', v2(0x21, 0x21, inet6('20010db8000000000000000000000009', '20010db8000000000000000000000001', 1, 2)), '2001:db8::9'],
    ['v2 LOCAL', v2(0x20, 0x11, inet([192, 0, 2, 1], [10, 0, 0, 1], 1, 2)), '127.0.0.1'],
  ]
  for (const [name, header, client] of cases) {
    const got = await exchange(tether.port, [Buffer.concat([header, GET])])
    t.match(got, /^HTTP\/1\.1 200/, name)
    t.equal(bodies(got)[0]?.xff, client, `${name}: X-Forwarded-For ${client}`)
  }
  const peers = logs.access().map((r) => r['peer'])
  t.same(peers, cases.map(([, , client]) => client), 'the access log names the same clients')
})

t.test('client_ip: two declared clients of one TCP peer go where their own addresses hash (as through a trusted proxy\'s X-Forwarded-For); v2 IPv4-mapped IPv6 is the IPv4 client', async (t) => {
  const affinity = { key: 'client_ip' as const }
  const { tether } = await ppTether(t, { affinity })
  // the reference: the same upstreams (the same ids and URLs) behind a Tether that trusts X-Forwarded-For from loopback
  const ups = tether.config.upstreams
  const ref = await startTether(testConfig(ups, { affinity: { ...affinity, client_ip: { trusted_proxies: ['127.0.0.1/32'] } } }), { logger: createLogger('silent') })
  t.teardown(() => ref.close(0))
  const clients = Array.from({ length: 12 }, (_, i) => [203, 0, 113, i + 1])
  const viaProxy: string[] = []
  const viaXff: string[] = []
  for (const [i, a] of clients.entries()) {
    const header = i % 2 === 0 ? line(`PROXY TCP4 ${a.join('.')} 10.0.0.1 40000 443\r\n`) : v4(a)
    viaProxy.push(bodies(await exchange(tether.port, [Buffer.concat([header, GET])]))[0]!.id)
    viaXff.push(bodies(await exchange(ref.port, [line(`GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: ${a.join('.')}\r\nConnection: close\r\n\r\n`)]))[0]!.id)
  }
  t.same(viaProxy, viaXff, 'each declared client on the upstream its address hashes to')
  t.ok(new Set(viaProxy).size > 1, `the clients of one TCP peer spread (${viaProxy.join(' ')})`)
  t.ok(tether.sessions.table.peek('203.0.113.1', Date.now()), 'keyed by the declared address')
  const mapped = v2(0x21, 0x21, inet6('00000000000000000000ffffcb007101', '00000000000000000000000000000001', 1, 2)) // ::ffff:203.0.113.1
  t.equal(bodies(await exchange(tether.port, [Buffer.concat([mapped, GET])]))[0]!.id, viaProxy[0], '::ffff:203.0.113.1 is 203.0.113.1')
  t.equal(tether.sessions.table.size, clients.length, 'no second binding for the mapped spelling')
})

t.test('a header written a byte at a time, then the request; a header and two pipelined requests in one write', async (t) => {
  const { tether } = await ppTether(t, { limits: { max_requests_per_connection: 2 } })
  for (const header of [line('PROXY TCP4 203.0.113.50 10.0.0.1 1 2\r\n'), v4([203, 0, 113, 50])]) {
    const bytes = [...header].map((b) => Buffer.of(b))
    const got = await exchange(tether.port, [...bytes, GET])
    t.equal(bodies(got)[0]?.xff, '203.0.113.50', `${header[0] === 0x50 ? 'v1' : 'v2'} byte by byte`)
  }
  const keep = line('GET /1 HTTP/1.1\r\nHost: x\r\n\r\n')
  // the third is past limits.max_requests_per_connection: the connection closes after the second
  const got = await exchange(tether.port, [Buffer.concat([line('PROXY TCP4 203.0.113.51 10.0.0.1 1 2\r\n'), keep, keep, keep])])
  t.same(bodies(got).map((b) => b.xff), ['203.0.113.51', '203.0.113.51'], 'both pipelined requests of the cap answered for the declared client, the third not')
})

t.test('without a valid header the connection is closed unanswered and nothing is forwarded; each reason warned', async (t) => {
  const logs = new LogCapture()
  const { tether, ups } = await ppTether(t, {}, logs)
  const cases: [string, Buffer[], RegExp][] = [
    ['no header', [GET], /no PROXY header/],
    ['malformed v1', [line('PROXY TCP4 203.0.113.7 10.0.0.1 51000\r\n'), GET], /malformed v1/],
    ['v1 over 107 bytes', [line(`PROXY UNKNOWN ${'x'.repeat(100)}\r\n`), GET], /longer than 107/],
    ['v2 bad signature', [Buffer.concat([V2_SIGNATURE.subarray(0, 11), line('X'), Buffer.alloc(16)]), GET], /no PROXY header/],
    ['v2 length shorter than its addresses', [v2(0x21, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), 4), GET], /shorter than its addresses/],
    ['v2 version 1', [v2(0x11, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)), GET], /version/],
  ]
  for (const [name, chunks, reason] of cases) {
    const before = logs.records.length
    t.equal(await exchange(tether.port, chunks), '', `${name}: closed without an answer`)
    await when(onEvent(logs, 'record'), () => logs.records.length > before, 5000, `${name} warned`)
    const rec = logs.records.at(-1)!
    t.equal(rec['level'], 40, `${name}: at warn`)
    t.match(String(rec['reason']), reason, `${name}: the reason`)
    t.equal(rec['peer'], '127.0.0.1', `${name}: the TCP peer named`)
  }
  t.equal(ups.reduce((n, u) => n + u.seen.length, 0), 0, 'no upstream saw a request')
  t.same(logs.access(), [], 'no access line: no request was read')
  const text = await tether.metrics.render()
  const count = (reason: string): number => Number(new RegExp(`^tether_proxy_protocol_refused_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0)
  t.same({ missing: count('missing'), malformed: count('malformed'), too_long: count('too_long') }, { missing: 2, malformed: 3, too_long: 1 }, 'counted by reason')
})

t.test('a header not complete within timeouts.client_headers: closed unanswered, warned; a connection that sent nothing: closed silently', async (t) => {
  const logs = new LogCapture()
  const { tether, ups } = await ppTether(t, { timeouts: { client_headers: 200 } }, logs)
  const warnings = (): Record<string, unknown>[] => logs.records.filter((r) => String(r['msg']).includes('PROXY protocol header'))
  t.equal(await exchange(tether.port, []), '', 'nothing sent: closed at the bound')
  // a refusal warned at once after it: the silent one, had it been warned, would be before it
  t.equal(await exchange(tether.port, [GET]), '')
  await when(onEvent(logs, 'record'), () => warnings().length > 0, 5000, 'the missing header warned')
  t.same(warnings().map((r) => r['reason']), ['no PROXY header'], 'the silent connection was not warned of')
  t.equal(await exchange(tether.port, [line('PROXY TCP4 203.0.113.7 10.0')]), '')
  await when(onEvent(logs, 'record'), () => warnings().some((r) => /client_headers/.test(String(r['reason']))), 5000, 'the slow header warned')
  t.match(await tether.metrics.render(), /^tether_proxy_protocol_refused_total\{reason="timeout"\} 1$/m, 'counted once: the silent connection is not')
  // a v2 header declaring 4 KiB of TLVs, its fixed part sent and the rest never: closed at the bound too
  t.equal(await exchange(tether.port, [v2(0x21, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), 4000)]), '', 'a v2 header waiting for its declared length')
  t.equal(ups[0]!.seen.length + ups[1]!.seen.length + ups[2]!.seen.length, 0)
})

t.test('a v2 header with 4 KiB of TLVs, sent in 100-byte writes: read whole, the request after it served', async (t) => {
  const { tether } = await ppTether(t)
  const tlvs = Buffer.alloc(V2_MAX_BYTES - 28)
  for (let at = 0; at + 3 + 97 <= tlvs.length; at += 100) { tlvs[at] = 0x04; tlvs.writeUInt16BE(97, at + 1) } // PP2_TYPE_NOOP
  const header = v2(0x21, 0x11, Buffer.concat([inet([203, 0, 113, 99], [10, 0, 0, 1], 1, 2), tlvs]))
  const writes: Buffer[] = []
  for (let at = 0; at < header.length; at += 100) writes.push(header.subarray(at, at + 100))
  t.equal(bodies(await exchange(tether.port, [...writes, GET]))[0]?.xff, '203.0.113.99')
})

t.test('a v2 header declaring more than 4 KiB (nginx\'s bound): refused at its fixed part as too long', async (t) => {
  const { tether, ups } = await ppTether(t)
  t.equal(await exchange(tether.port, [v2(0x21, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), 65535)]), '', 'closed unanswered')
  t.match(await tether.metrics.render(), /^tether_proxy_protocol_refused_total\{reason="too_long"\} 1$/m, 'counted as too long')
  t.equal(ups[0]!.seen.length + ups[1]!.seen.length + ups[2]!.seen.length, 0)
})

t.test('a v2 header trickled a byte a read: the heap holds about its bytes, not a Buffer a read (review s62 r3)', async (t) => {
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc') as () => void
  const { tether } = await ppTether(t, { timeouts: { client_headers: 60_000 } })
  const CONNS = 20
  const BYTES = V2_MAX_BYTES - 100
  gc()
  const before = process.memoryUsage().heapUsed
  const sockets: net.Socket[] = []
  for (let i = 0; i < CONNS; i++) {
    const s = net.connect(tether.port, '127.0.0.1')
    s.setNoDelay(true)
    s.on('error', () => undefined)
    s.write(v2(0x21, 0x11, inet([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), V2_MAX_BYTES - 16))
    sockets.push(s)
  }
  t.teardown(() => { for (const s of sockets) s.destroy() })
  // a turn of the event loop a byte: each is its own read on Tether's side (same process)
  for (let b = 0; b < BYTES; b++) {
    for (const s of sockets) s.write(Buffer.of(0))
    await new Promise((resolve) => setImmediate(resolve))
  }
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve))
  gc()
  const grown = process.memoryUsage().heapUsed - before
  const wire = CONNS * BYTES
  // a Buffer kept a read is ~190 bytes of heap a byte (15 MiB here); joined, a few bytes a byte
  t.ok(grown < 20 * wire, `heap grew ${(grown / 1048576).toFixed(2)} MiB for ${(wire / 1048576).toFixed(2)} MiB of header bytes held (${Math.round(grown / wire)} bytes of heap a byte)`)
})

t.test('TLS port: plain HTTP after a PROXY header is logged for the declared client (review s62 r3)', async (t) => {
  const logs = new LogCapture()
  const tlsConfig = { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2' as const, hsts: null }
  const { tether } = await ppTether(t, { listen: { proxy_protocol: true, tls: tlsConfig } }, logs)
  const s = net.connect(tether.port, '127.0.0.1')
  let got = ''
  s.on('data', (c: Buffer) => { got += c.toString('latin1') })
  s.on('error', () => undefined)
  const closed = once(s, 'close', 5000)
  s.write('PROXY TCP4 203.0.113.5 10.0.0.1 1 443\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n')
  await closed
  t.match(got, /^HTTP\/1\.1 400/, 'the 400 for plain HTTP to the TLS port')
  t.same(logs.access().map((r) => r['peer']), ['203.0.113.5'], 'its access line names the declared client, not the balancer')
})

t.test('off (the default): a PROXY line is a bad request, as before', async (t) => {
  const { tether } = await ppTether(t, { listen: { proxy_protocol: false } })
  const got = await exchange(tether.port, [Buffer.concat([line('PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n'), GET])])
  t.match(got, /^HTTP\/1\.1 400/)
})

/** A connection that sends `header` first, then what its client writes (for createConnection). */
function preceded(port: number, header: Buffer): net.Socket {
  const socket = net.connect(port, '127.0.0.1')
  socket.write(header)
  return socket
}

/** One h2 request on `session`; resolves with the body. */
function h2Get(session: http2.ClientHttp2Session): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': '/' })
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => { body += c })
    req.on('end', () => resolve(body))
    req.on('error', reject)
  })
}

t.test('h2c with prior knowledge after the header: the declared client', async (t) => {
  const { tether } = await ppTether(t, { listen: { http2: { cleartext: true } } })
  const session = http2.connect(tether.url, { createConnection: () => preceded(tether.port, v4([203, 0, 113, 60])) })
  t.teardown(() => session.destroy())
  t.equal((JSON.parse(await h2Get(session)) as { xff: string }).xff, '203.0.113.60')
  // HTTP/1.1 on the same port after a header still works
  t.equal(bodies(await exchange(tether.port, [line('PROXY TCP4 203.0.113.61 10.0.0.1 1 2\r\n'), GET]))[0]?.xff, '203.0.113.61')
})

t.test('TLS after the header: HTTP/1.1 and h2 by ALPN see the declared client', async (t) => {
  const tlsConfig = { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2' as const, hsts: null }
  const { tether } = await ppTether(t, { listen: { tls: tlsConfig } })
  // HTTP/1.1
  const raw = preceded(tether.port, line('PROXY TCP6 2001:db8::70 2001:db8::1 1 443\r\n'))
  const secure = tls.connect({ socket: raw, ca: certs.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] })
  let got = ''
  secure.on('data', (c: Buffer) => { got += c.toString() })
  secure.on('error', () => undefined)
  const ended = once(secure, 'close', 10_000)
  await once(secure, 'secureConnect')
  secure.write(GET)
  await ended
  t.equal(bodies(got)[0]?.xff, '2001:db8::70', 'HTTP/1.1 over TLS')
  // h2 by ALPN
  const session = http2.connect(tether.url, {
    createConnection: () => tls.connect({ socket: preceded(tether.port, v4([203, 0, 113, 71])), ca: certs.ca, servername: 'localhost', ALPNProtocols: ['h2'] }),
  })
  t.teardown(() => session.destroy())
  t.equal((JSON.parse(await h2Get(session)) as { xff: string }).xff, '203.0.113.71', 'h2 over TLS')
  // a plain connection without a header to the TLS port is closed as on a plain one
  t.equal(await exchange(tether.port, [GET]), '')
})

t.test('a graceful stop closes the connections still reading their header (they are idle)', async (t) => {
  const ups = await upstreams(t, ['a'], seeing)
  // (the header's own bound, timeouts.client_headers, is longer than the test waits)
  const tether = await startTether(testConfig(ups, { listen: { proxy_protocol: true }, timeouts: { client_headers: 60_000 } }), { logger: createLogger('silent') })
  const socket = net.connect(tether.port, '127.0.0.1')
  socket.on('error', () => undefined)
  await once(socket, 'connect')
  socket.write(line('PROXY TCP4 203.0'))
  await turns()
  const closed = once(socket, 'close', 10_000)
  // the grace is long: the stop must not wait for it
  await within(tether.close(60_000), 10_000, 'the stop finished without waiting for the grace period')
  await closed
  t.pass('closed')
})

t.test('the redirect listener takes the header too: 308 for the declared client, closed without one', async (t) => {
  const tlsConfig = { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2' as const, hsts: null }
  const logs = new LogCapture()
  const { tether } = await ppTether(t, { listen: { tls: tlsConfig, redirect: { host: '127.0.0.1', port: 0, https_port: 443 } } }, logs)
  const port = portOf(tether.redirectUrl!)
  const got = await exchange(port, [line('PROXY TCP4 203.0.113.90 10.0.0.1 1 80\r\n'), line('GET /a?b HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n')])
  t.match(got, /^HTTP\/1\.1 308/)
  t.match(got, /location: https:\/\/shop\.example\/a\?b\r\n/i)
  t.equal(await exchange(port, [GET]), '', 'no header: closed unanswered')
  await when(onEvent(logs, 'record'), () => logs.records.some((r) => r['listener'] === 'redirect'), 5000, 'warned')
})

// The request forms a PROXY header can precede (s63): each on both front paths, the HTTP/1.1
// server's own and the h2c sniffer's (which reads the first bytes after the header again to
// tell HTTP/2's preface from HTTP/1.1): an Expect: 100-continue, a pipelined pair in the
// header's own write, the header cut at every byte with the request in the second write,
// CONNECT and a WebSocket upgrade.
const SETUPS: [string, DeepPartial<Config>][] = [['HTTP/1.1', {}], ['HTTP/1.1 next to h2c', { listen: { http2: { cleartext: true } } }]]
const V1_52 = line('PROXY TCP4 203.0.113.52 10.0.0.1 1 2\r\n')

/** A raw connection that wrote `first`; `until` waits for what it read so far to hold. */
async function talk(t: Test, port: number, first: Buffer): Promise<{ socket: net.Socket; read: () => string; until: (done: (got: string) => boolean, what: string) => Promise<unknown> }> {
  const socket = net.connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  socket.setNoDelay(true)
  let got = ''
  socket.on('data', (c: Buffer) => { got += c.toString('latin1') })
  socket.on('error', () => undefined)
  await once(socket, 'connect')
  socket.write(first)
  return { socket, read: () => got, until: (done, what) => when(onEvent(socket, 'data'), () => done(got), 5000, what) }
}

t.test('Expect: 100-continue after the header: the interim 100, then the answer; the upstream sees the declared client and the body', async (t) => {
  for (const [name, over] of SETUPS) {
    for (const header of [V1_52, v4([203, 0, 113, 52])]) {
      const { tether } = await ppTether(t, over)
      const what = `${name}, ${header[0] === 0x50 ? 'v1' : 'v2'}`
      const c = await talk(t, tether.port, Buffer.concat([header, line('POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n')]))
      await c.until((got) => got.includes('\r\n\r\n'), `${what}: the 100`)
      t.match(c.read(), /^HTTP\/1\.1 100 Continue\r\n\r\n$/, `${what}: 100 Continue first, alone`)
      const closed = once(c.socket, 'close', 10_000, `${what}: closed after the answer`)
      c.socket.write('hello')
      await closed
      t.match(c.read(), /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /, `${what}: then the answer`)
      t.same(bodies(c.read()).map((b) => [b.xff, b.path, b.body]), [['203.0.113.52', '/e', 'hello']], `${what}: for the declared client, with the body`)
    }
  }
})

t.test('a pipelined pair in the header\'s own write: both answered in order, both for the declared client', async (t) => {
  for (const [name, over] of SETUPS) {
    const { tether } = await ppTether(t, over)
    for (const header of [V1_52, v4([203, 0, 113, 52])]) {
      const pair = line('GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
      const got = await exchange(tether.port, [Buffer.concat([header, pair])])
      t.same(bodies(got).map((b) => [b.path, b.xff]), [['/1', '203.0.113.52'], ['/2', '203.0.113.52']], `${name}, ${header[0] === 0x50 ? 'v1' : 'v2'}`)
    }
  }
})

t.test('the header cut in two writes at every byte, its rest and the request in the second (and the request\'s first bytes in the first)', async (t) => {
  for (const [name, over] of SETUPS) {
    const { tether } = await ppTether(t, over)
    for (const header of [V1_52, v4([203, 0, 113, 52])]) {
      const bytes = Buffer.concat([header, GET])
      const seen: (string | null)[] = []
      for (let k = 1; k <= header.length + 4; k++) seen.push(bodies(await exchange(tether.port, [bytes.subarray(0, k), bytes.subarray(k)]))[0]?.xff ?? null)
      t.same(seen, seen.map(() => '203.0.113.52'), `${name}, ${header[0] === 0x50 ? 'v1' : 'v2'}: cut after each of bytes 1 to ${header.length + 4}`)
    }
  }
})

t.test('CONNECT after the header: the answer Tether gives CONNECT without the PROXY protocol, logged for the declared client; nothing forwarded', async (t) => {
  const connect = line('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n')
  // (an answer's Date may differ by a second)
  const answer = (raw: string): string => raw.replace(/^date: .*\r\n/gim, '')
  for (const [name, over] of SETUPS) {
    const logs = new LogCapture()
    const { tether, ups } = await ppTether(t, over, logs)
    const { tether: plain } = await ppTether(t, { ...over, listen: { ...over.listen, proxy_protocol: false } })
    const [viaHeader, without] = await Promise.all([
      exchange(tether.port, [Buffer.concat([line('PROXY TCP4 203.0.113.85 10.0.0.1 1 2\r\n'), connect])]),
      exchange(plain.port, [connect]),
    ])
    t.match(viaHeader, /^HTTP\/1\.1 405 /, `${name}: 405`)
    t.equal(answer(viaHeader), answer(without), `${name}: the same answer as without the PROXY protocol`)
    await when(onEvent(logs, 'record'), () => logs.access().length > 0, 5000, `${name}: its access line`)
    t.same(logs.access().map((r) => r['peer']), ['203.0.113.85'], `${name}: logged for the declared client`)
    t.equal(ups.reduce((n, u) => n + u.seen.length, 0), 0, `${name}: nothing forwarded`)
  }
})

t.test('CONNECT on an h2c stream after the header: answered 405 as without the PROXY protocol, logged for the declared client', async (t) => {
  const h2c: DeepPartial<Config> = { listen: { http2: { cleartext: true } } }
  const logs = new LogCapture()
  const { tether, ups } = await ppTether(t, h2c, logs)
  const { tether: plain } = await ppTether(t, { listen: { ...h2c.listen, proxy_protocol: false } })
  const statuses: number[] = []
  for (const [port, header] of [[tether.port, v4([203, 0, 113, 86])], [plain.port, null]] as const) {
    const session = http2.connect(`http://127.0.0.1:${port}`, header === null ? {} : { createConnection: () => preceded(port, header) })
    t.teardown(() => session.destroy())
    const req = session.request({ ':method': 'CONNECT', ':authority': 'example.com:443' })
    req.on('error', () => undefined)
    const [head] = await once<[http2.IncomingHttpHeaders]>(req, 'response', 5000, 'the CONNECT stream\'s answer')
    statuses.push(Number(head[':status']))
    req.close()
  }
  t.same(statuses, [405, 405], 'the same 405 with and without the header')
  await when(onEvent(logs, 'record'), () => logs.access().length > 0, 5000, 'its access line')
  t.same(logs.access().map((r) => r['peer']), ['203.0.113.86'], 'logged for the declared client')
  t.equal(ups.reduce((n, u) => n + u.seen.length, 0), 0, 'nothing forwarded')
})

t.test('a WebSocket upgrade after the header, on both front paths: the upstream sees the declared client', async (t) => {
  for (const [name, over] of SETUPS) {
    const { tether } = await ppTether(t, over)
    const c = await talk(t, tether.port, Buffer.concat([
      line('PROXY TCP4 203.0.113.81 10.0.0.1 1 2\r\n'),
      line('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'),
    ]))
    await c.until((got) => got.includes('\r\n\r\n'), `${name}: the 101`)
    t.match(c.read(), /^HTTP\/1\.1 101/, name)
    t.match(c.read(), /x-seen-xff: 203\.0\.113\.81\r\n/i, `${name}: X-Forwarded-For the declared client`)
  }
})
