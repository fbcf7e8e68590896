// The upstream's 101 opens a tunnel only when it completes the WebSocket handshake the client
// asked for (RFC 6455 section 4.1): `Upgrade: websocket` and the `Sec-WebSocket-Accept` of the
// key sent. Any other 101 (no Upgrade, another protocol, no or a wrong accept) is a 502
// `TETHER_UPSTREAM_PROTOCOL`: no client may use it, and a tunnel opened on it would carry raw
// bytes to the upstream past every rule of Tether's (WebSocket smuggling: a request the
// client writes into it reaches the application as if from Tether). HAProxy 2.6 answers 502
// to a 101 without or with a wrong accept; nginx 1.22 tunnels every 101. And a refusal (an
// answer other than 101) goes out in Tether's own HTTP/1.1, whatever the upstream's version.
import t, { type Test } from 'tap'
import net from 'node:net'
import tls from 'node:tls'
import { makeCertificateSet } from './fixtures/tls.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { testConfig } from './fixtures/upstream.js'
import { onEvent, waitFor, when, within } from './fixtures/wait.js'
import { acceptOf, completesHandshake } from '../src/proxy/websocket-frames.js'

const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
/** RFC 6455 section 1.3's worked example: the accept of KEY. */
const ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
const HANDSHAKE = `GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n`
/** What a client writes behind its handshake, for the tunnel: here a request for the application. */
const SMUGGLED = 'GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n'
/** A server frame right behind the 101 (a server that speaks first). */
const FRAME = '\x81\x02hi'

interface Exchange {
  /** What the client received, until its connection closed (latin1). */
  readonly client: string
  /** Everything the upstream received on its connection, until Tether closed it (latin1). */
  readonly upstream: string
  readonly access: Record<string, unknown>
}

/** One handshake (with SMUGGLED behind it) to a raw upstream answering `answer`; waits until both connections closed. */
async function handshake(t: Test, answer: string, retries = 1): Promise<Exchange & { tether: Awaited<ReturnType<typeof startTether>> }> {
  let received = ''
  let upstreamClosed!: Promise<void>
  const sockets = new Set<net.Socket>()
  const server = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => undefined)
    upstreamClosed = new Promise((r) => s.once('close', () => r()))
    s.on('data', (c: Buffer) => {
      const first = !received.includes('\r\n\r\n')
      received += c.toString('latin1')
      if (first && received.includes('\r\n\r\n')) s.write(answer, 'latin1')
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close() })
  const logs = new LogCapture()
  const tether = await startTether(testConfig([{ id: 'up', url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}` }], { retries: { attempts: retries } }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  let got = ''
  client.on('data', (c: Buffer) => (got += c.toString('latin1')))
  const clientClosed = new Promise<void>((r) => client.once('close', () => r()))
  client.write(HANDSHAKE + SMUGGLED)
  await within(waitFor(() => sockets.size === 1, 30_000, 'the handshake upstream'), 30_000, 'the handshake upstream')
  await within(Promise.all([clientClosed, upstreamClosed]), 30_000, 'both connections to close')
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 30_000, 'the access line')
  return { client: got, upstream: received, access: logs.access()[0]!, tether }
}

const BAD: readonly (readonly [string, string])[] = [
  ['no Upgrade header (nor Connection: upgrade)', 'HTTP/1.1 101 Switching Protocols\r\n\r\n'],
  ['Upgrade: websocket but no Connection: upgrade (RFC 6455 section 4.1: a client fails it)', `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`],
  ['another protocol than the one asked for (h2c)', 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n'],
  ['no Sec-WebSocket-Accept', 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'],
  ['the accept of another key', 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n\r\n'],
]

for (const [what, head] of BAD) {
  t.test(`a 101 with ${what} is a 502: no tunnel, the bytes behind the handshake never reach the upstream`, async (t) => {
    const x = await handshake(t, head + FRAME)
    t.match(x.client, /^HTTP\/1\.1 502 Bad Gateway\r\n/, 'the client gets 502')
    t.notMatch(x.client, /101|hi/, 'nothing of the 101, nor the frame behind it')
    t.equal(x.upstream.indexOf('GET /admin'), -1, 'the request written behind the handshake is not sent upstream')
    t.match(x.access, { status: 502, upstream: 'up', outcome: 'TETHER_UPSTREAM_PROTOCOL' })
    await waitFor(() => x.tether.upgrades.size === 0, 30_000, 'no place held') // polled: no release event
  })
}

t.test('a 101 that completes the handshake (Upgrade in any letter case, the key\'s accept) opens the tunnel: the server\'s first frame and the client\'s early bytes pass', async (t) => {
  let received = ''
  const sockets = new Set<net.Socket>()
  const server = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => undefined)
    s.on('data', (c: Buffer) => {
      const first = !received.includes('\r\n\r\n')
      received += c.toString('latin1')
      if (first && received.includes('\r\n\r\n')) s.write(`HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: WebSocket\r\nsec-websocket-accept: ${ACCEPT}\r\n\r\n${FRAME}`, 'latin1')
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close() })
  const tether = await startTether(testConfig([{ id: 'up', url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}` }], { retries: { attempts: 1 } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())
  let got = ''
  client.on('data', (c: Buffer) => (got += c.toString('latin1')))
  client.write(HANDSHAKE + 'early')
  await waitFor(() => got.endsWith(`\r\n\r\n${FRAME}`) && received.endsWith('\r\n\r\nearly'), 30_000, 'the 101 and the frame; the early bytes upstream')
  t.match(got, /^HTTP\/1\.1 101 Switching Protocols\r\n/)
  t.match(got, /\r\nupgrade: WebSocket\r\n/i)
  t.equal(tether.upgrades.size, 1)
})

t.test('completesHandshake: a 101 head as a WebSocket client checks it', async (t) => {
  t.equal(acceptOf(KEY), ACCEPT, "RFC 6455 section 1.3's example")
  const cases: readonly [Record<string, string | string[] | undefined>, string | null, boolean][] = [
    [{ upgrade: 'websocket', 'sec-websocket-accept': ACCEPT }, KEY, true],
    [{ upgrade: 'WebSocket', 'sec-websocket-accept': ACCEPT }, KEY, true],
    [{ upgrade: 'websocket', 'sec-websocket-accept': ACCEPT }, null, false], // a handshake sent without one key
    [{ upgrade: 'websocket' }, KEY, false],
    [{ upgrade: 'websocket', 'sec-websocket-accept': acceptOf('another') }, KEY, false],
    [{ upgrade: 'websocket', 'sec-websocket-accept': [ACCEPT, ACCEPT] }, KEY, false],
    [{ 'sec-websocket-accept': ACCEPT }, KEY, false],
    [{ upgrade: 'h2c', 'sec-websocket-accept': ACCEPT }, KEY, false],
    [{ upgrade: 'websocket, h2c', 'sec-websocket-accept': ACCEPT }, KEY, false],
    [{ upgrade: ['websocket', 'websocket'], 'sec-websocket-accept': ACCEPT }, KEY, false],
  ]
  for (const [headers, key, want] of cases) t.equal(completesHandshake(headers, key), want, `${JSON.stringify(headers)} to key ${key}`)
})

t.test('over TLS, a 101 without the accept gets the whole 502 (head and body), nothing after it', async (t) => {
  // no head of http-proxy's follows Tether's 502 here (it never saw the 101): nothing to skip
  const certs = makeCertificateSet()
  t.teardown(() => certs.remove())
  const sockets = new Set<net.Socket>()
  const bad = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => undefined)
    s.once('data', () => s.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'))
  })
  await new Promise<void>((r) => bad.listen(0, '127.0.0.1', r))
  t.teardown(() => { for (const s of sockets) s.destroy(); bad.close() })
  const tether = await startTether(testConfig([{ id: 'bad', url: `http://127.0.0.1:${(bad.address() as net.AddressInfo).port}` }], {
    retries: { attempts: 1 },
    listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null }, http2: { enabled: false } },
  }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const got = await within(new Promise<string>((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: Number(new URL(tether.url).port), rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => s.write(HANDSHAKE))
    let out = ''
    s.on('data', (c: Buffer) => (out += c.toString('latin1')))
    s.on('error', () => undefined)
    s.on('close', () => resolve(out))
  }), 30_000, 'the client connection to close')
  t.match(got, /^HTTP\/1\.1 502 [^]*\r\n\r\nBad Gateway: invalid response from upstream\n$/)
})

t.test("a refusal from an HTTP/1.0 upstream reaches the client in Tether's own HTTP/1.1 (RFC 9110 section 6.2), its body whole", async (t) => {
  const x = await handshake(t, 'HTTP/1.0 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope')
  t.match(x.client, /^HTTP\/1\.1 403 Forbidden\r\n[^]*\r\nconnection: close\r\n(?:[^]*\r\n)?\r\nnope$/)
  t.equal(x.upstream.indexOf('GET /admin'), -1, 'the bytes behind a refused handshake are not sent upstream')
  t.match(x.access, { status: 403, upstream: 'up', outcome: 'ok' })
})
