// The bounds and protocol edges of both admin listeners, the single process's (`startAdmin`) and
// the primary's front (`workers` > 1, here in front of a real worker admin listener): the
// connection cap (idle keep-alive connections, then the oldest slow head, make room for a probe;
// 503 when all have a request in progress),
// the write timeout of an answer the client stopped reading, Node's own bodiless answers given a
// body, `OPTIONS *`, and no `100 Continue` before a 413. Real sockets on loopback.
import t, { type Test } from 'tap'
import net from 'node:net'
import { ADMIN_LIMITS, startAdmin, type AdminDeps, type AdminLimits } from '../src/admin/admin-server.js'
import { startAdminFront } from '../src/workers/admin-front.js'
import { createLogger } from '../src/observability/logger.js'
import { adminDeps } from './fixtures/admin-deps.js'
import { LogCapture } from './fixtures/log-capture.js'
import { request } from './fixtures/upstream.js'
import { onEvent, waitFor, when, within } from './fixtures/wait.js'

interface Listener {
  readonly kind: string
  readonly url: string
  readonly port: number
  /** The log of the listener under test (the front's, for the front). */
  readonly logs: LogCapture
}

/** The single process's admin listener and the primary's front (before a worker admin listener with the default limits), both under `limits`. */
async function listeners(t: Test, limits: AdminLimits, over: Partial<AdminDeps> = {}): Promise<Listener[]> {
  const alone = new LogCapture()
  const admin = await startAdmin('127.0.0.1', 0, adminDeps(alone, over), limits)
  t.teardown(() => admin.close())
  const worker = await startAdmin('127.0.0.1', 0, adminDeps(new LogCapture(), over), { ...ADMIN_LIMITS, exclusive: true })
  t.teardown(() => worker.close())
  const frontLogs = new LogCapture()
  // the front's /metrics is its own (the workers' figures combined): as slow as the listener's when that is slow
  const metrics = (): Promise<unknown[]> => (over.metrics?.() ?? Promise.resolve('')).then(() => [])
  const front = await startAdminFront('127.0.0.1', 0, { admins: () => [worker.url], metrics, stopping: () => false }, createLogger('debug', frontLogs), [], limits)
  t.teardown(() => front.close())
  return [
    { kind: 'admin listener', url: admin.url, port: Number(new URL(admin.url).port), logs: alone },
    { kind: "primary's admin listener", url: front.url, port: Number(new URL(front.url).port), logs: frontLogs },
  ]
}

/** A raw client connection: what it received so far, and whether the server closed it. */
interface Client {
  readonly socket: net.Socket
  received(): string
  closed(): boolean
  /** Resolves once `check(received)` holds (rejects after `ms`). */
  until(check: (text: string) => boolean, ms: number, what: string): Promise<void>
}

async function connect(port: number, data?: string): Promise<Client> {
  const socket = net.connect(port, '127.0.0.1')
  let text = ''
  let closed = false
  socket.on('data', (c: Buffer) => { text += c.toString('latin1'); socket.emit('progress') })
  socket.on('error', () => { /* a reset: what was received counts */ })
  socket.on('close', () => { closed = true; socket.emit('progress') })
  await new Promise((resolve) => socket.once('connect', resolve))
  if (data !== undefined) socket.write(data)
  return {
    socket,
    received: () => text,
    closed: () => closed,
    until: (check, ms, what) => when(onEvent(socket, 'progress'), () => check(text), ms, what),
  }
}

/** Sends `data` on a fresh connection and resolves with all it got once the server closed it. */
async function exchange(port: number, data: string, ms = 15_000): Promise<string> {
  const c = await connect(port, data)
  try {
    await c.until(() => c.closed(), ms, `the answer to ${JSON.stringify(data.slice(0, 40))} and the close`)
  } finally {
    c.socket.destroy()
  }
  return c.received()
}

const PROBE = 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'

t.test('at the connection cap, idle keep-alive connections, then the oldest slow head, make room for a probe; when every connection has a request in progress a new one gets 503 and is closed', async (t) => {
  const limits: AdminLimits = { ...ADMIN_LIMITS, maxConnections: 4, keepAliveTimeout: 120_000, headersTimeout: 120_000, requestTimeout: 240_000 }
  for (const l of await listeners(t, limits)) {
    // a scraper that leaks keep-alive connections: each served once, then left open
    const idle: Client[] = []
    for (let i = 0; i < 4; i++) {
      const c = await connect(l.port, PROBE)
      t.teardown(() => c.socket.destroy())
      await c.until((s) => s.endsWith('\r\n\r\nok\n'), 10_000, 'a keep-alive answer')
      idle.push(c)
    }
    const probe = await request(`${l.url}/healthz`)
    t.equal(`${probe.status} ${probe.body}`, '200 ok\n', `${l.kind}: a probe is served with the cap taken by idle connections`)
    await waitFor(() => idle.every((c) => c.closed()), 10_000, 'the idle connections to be closed')
    t.pass(`${l.kind}: the idle keep-alive connections were closed to make room`)

    // four slow heads (a head never finished): the oldest makes room for the probe
    const slow: Client[] = []
    for (let i = 0; i < 4; i++) {
      const c = await connect(l.port, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n')
      t.teardown(() => c.socket.destroy())
      slow.push(c)
    }
    const past = await request(`${l.url}/healthz`)
    t.equal(`${past.status} ${past.body}`, '200 ok\n', `${l.kind}: a probe is served with the cap taken by slow heads`)
    await waitFor(() => slow[0]!.closed(), 10_000, 'the oldest slow head to be closed')
    t.ok(slow.slice(1).every((c) => !c.closed()), `${l.kind}: only the oldest slow head was closed to make room`)
    t.match(l.logs.records.find((r) => r['msg'] === 'admin listener at its connection cap: the oldest connection without a complete request head was closed to make room'), { level: 40, max_connections: 4 }, 'warned')
    for (const c of slow) c.socket.destroy()
    await waitFor(async () => (await request(`${l.url}/healthz`)).status === 200, 10_000, 'a probe served once the slow heads left')

    // four clients that keep a request in progress (a body never finished): nothing is idle
    const busy: Client[] = []
    for (let i = 0; i < 4; i++) {
      const c = await connect(l.port, 'POST /upstreams/a/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n')
      t.teardown(() => c.socket.destroy())
      // its head is in (the 100 says so): a request in progress, not a slow head
      await c.until((s) => s.startsWith('HTTP/1.1 100 Continue\r\n\r\n'), 10_000, 'the 100 Continue')
      c.socket.write('x')
      busy.push(c)
    }
    const refused = await exchange(l.port, PROBE)
    t.match(refused, /^HTTP\/1\.1 503 Service Unavailable\r\n[^]*connection: close\r\n\r\nService Unavailable: the admin listener has 4 connections open, none idle\n$/i, `${l.kind}: the fifth gets 503 with a body, then the close`)
    t.ok(busy.every((c) => !c.closed()), 'busy connections are never closed to make room')
    t.match(l.logs.records.find((r) => r['msg'] === 'admin listener: every connection it keeps is busy (none idle to close): new connections get 503'), { level: 40, max_connections: 4 }, 'warned')
    for (const c of busy) c.socket.destroy()
    await waitFor(async () => (await request(`${l.url}/healthz`)).status === 200, 10_000, 'a probe served once the busy clients left')
    t.pass(`${l.kind}: served again once the busy clients left`)
  }
})

t.test('an answer the client stops reading is cut after the write timeout; a slow answer not yet begun is waited for', async (t) => {
  // /readyz with a big `degraded` list: about 16 MB, more than loopback's socket buffers hold
  const big = Array.from({ length: 160_000 }, (_, i) => `redis shard ${i} unreachable: ${'x'.repeat(64)}`)
  const limits: AdminLimits = { ...ADMIN_LIMITS, writeTimeout: 500 }
  const over: Partial<AdminDeps> = {
    degraded: () => big,
    // a handler slower than the write timeout before its first byte (as a session scan is)
    metrics: () => new Promise((resolve) => setTimeout(() => resolve('tether_up 1\n'), 3 * limits.writeTimeout)),
  }
  for (const l of await listeners(t, limits, over)) {
    const reader = net.connect(l.port, '127.0.0.1')
    t.teardown(() => reader.destroy())
    reader.on('error', () => { /* reset */ })
    await new Promise((resolve) => reader.once('connect', resolve))
    reader.pause() // takes nothing of the answer
    reader.write('GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    const cut = 'admin client took nothing of its answer in time: connection closed'
    await when(onEvent(l.logs, 'record'), () => l.logs.records.some((r) => r['msg'] === cut), 30_000, `${l.kind}: the stalled answer to be cut`)
    t.match(l.logs.records.find((r) => r['msg'] === cut), { level: 30, method: 'GET', path: '/readyz', write_timeout_ms: 500 }, `${l.kind}: logged`)
    // what the kernel held still arrives, then the end: never the whole answer
    let bytes = 0
    reader.on('data', (c: Buffer) => (bytes += c.length))
    const ended = new Promise((resolve) => reader.once('close', resolve))
    reader.resume()
    await within(ended, 30_000, `${l.kind}: the cut connection to end`)
    t.ok(bytes < big.length * 64, `${l.kind}: the answer was cut short (${bytes} bytes)`)

    const metrics = await request(`${l.url}/metrics`)
    t.equal(metrics.status, 200, `${l.kind}: an answer that takes longer than the write timeout to begin is not cut`)
  }
})

t.test("what Node answered without a body gets one line of text: a malformed head, one too large, HTTP/1.1 without Host, a too-slow head, an unknown expectation", async (t) => {
  for (const l of await listeners(t, { ...ADMIN_LIMITS, headersTimeout: 300, requestTimeout: 600 })) {
    const cases: [string, string, RegExp][] = [
      ['a malformed header line', 'GET /healthz HTTP/1.1\r\nHo st: x\r\n\r\n', /^HTTP\/1\.1 400 Bad Request\r\n[^]*\r\n\r\nBad Request: malformed request\n$/],
      ['an unknown method', 'FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 Bad Request\r\n[^]*\r\n\r\nBad Request: malformed request\n$/],
      ['a head over 16 KiB', `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n[^]*\r\n\r\nRequest Header Fields Too Large: the admin API reads at most 16384 bytes of request head\n$/],
      ['HTTP/1.1 without Host', 'GET /healthz HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400 Bad Request\r\n[^]*\r\n\r\nBad Request: an HTTP\/1\.1 request needs a Host header\n$/],
      ['a head that never ends', 'GET /healthz HTTP/1.1\r\nHost: x\r\n', /^HTTP\/1\.1 408 Request Timeout\r\n[^]*\r\n\r\nRequest Timeout: the request head must come within 300 ms, the whole request within 600 ms\n$/],
      ['Expect: other', 'GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n\r\n', /^HTTP\/1\.1 417 Expectation Failed\r\n[^]*\r\n\r\nExpectation Failed: the admin API understands only Expect: 100-continue\n$/],
    ]
    for (const [what, data, expected] of cases) {
      const answer = await exchange(l.port, data)
      t.match(answer, expected, `${l.kind}, ${what}`)
      t.match(answer, /\r\ncontent-type: text\/plain; charset=utf-8\r\n/i, `${what}: text`)
      t.match(answer, /\r\nconnection: close\r\n/i, `${what}: closed`)
    }
    const old = await exchange(l.port, 'GET /healthz HTTP/1.0\r\n\r\n')
    t.match(old, /^HTTP\/1\.1 200 [^]*\r\n\r\nok\n$/, `${l.kind}: HTTP/1.0 without Host is still served (a load balancer's check)`)
    const r = await request(`${l.url}/healthz`)
    t.equal(`${r.status} ${r.body}`, '200 ok\n', `${l.kind}: still serving`)
  }
})

t.test('OPTIONS * (RFC 9110 section 9.3.7) gets 200 with the methods of the admin API in Allow and no content; another method with * stays 400', async (t) => {
  for (const l of await listeners(t, ADMIN_LIMITS)) {
    const c = await connect(l.port, 'OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' + PROBE)
    t.teardown(() => c.socket.destroy())
    await c.until((s) => s.endsWith('\r\n\r\nok\n'), 10_000, 'both answers')
    t.match(c.received(), /^HTTP\/1\.1 200 OK\r\n(?:[^\r]+\r\n)*allow: GET, HEAD, POST, DELETE\r\n/i, `${l.kind}: 200 with Allow`)
    t.match(c.received(), /^HTTP\/1\.1 200 OK\r\n(?:[^\r]+\r\n)*content-length: 0\r\n(?:[^\r]+\r\n)*\r\nHTTP\/1\.1 200 OK\r\n/i, `${l.kind}: Content-Length 0, and the connection goes on`)
    const star = await exchange(l.port, 'GET * HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
    t.match(star, /^HTTP\/1\.1 400 [^]*\r\n\r\nBad Request: the request target must be a path\n$/, `${l.kind}: GET * is 400`)
  }
})

t.test('Expect: 100-continue with a declared body over 16 KiB gets 413 without a 100 first; a body within the bound gets its 100', async (t) => {
  for (const l of await listeners(t, ADMIN_LIMITS)) {
    const refused = await exchange(l.port, 'POST /upstreams/a/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n')
    t.match(refused, /^HTTP\/1\.1 413 [^]*\r\n\r\nContent Too Large: the admin API reads at most 16384 bytes of body\n$/, `${l.kind}: 413 at once`)
    t.notMatch(refused, /100 Continue/, `${l.kind}: no 100 Continue`)
    const c = await connect(l.port, 'POST /upstreams/a/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n')
    t.teardown(() => c.socket.destroy())
    await c.until((s) => s.includes('\r\n\r\n'), 10_000, 'the 100')
    t.match(c.received(), /^HTTP\/1\.1 100 Continue\r\n\r\n$/, `${l.kind}: a body within the bound gets its 100`)
    c.socket.write('{}')
    await c.until(() => c.closed(), 10_000, 'the answer')
    t.match(c.received(), /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 [^]*"draining": true/, `${l.kind}: then its answer`)
  }
})

t.test('at the connection cap, a connection whose answer is still being sent is busy: not closed to make room', async (t) => {
  // /readyz with a big `degraded` list: about 16 MB, more than loopback's socket buffers hold,
  // so the answer is still being sent (ended by the handler, not flushed) while the client reads slowly
  const big = Array.from({ length: 160_000 }, (_, i) => `redis shard ${i} unreachable: ${'x'.repeat(64)}`)
  const limits: AdminLimits = { ...ADMIN_LIMITS, maxConnections: 1, writeTimeout: 600_000 }
  for (const l of await listeners(t, limits, { degraded: () => big })) {
    const reader = await connect(l.port)
    t.teardown(() => reader.socket.destroy())
    reader.socket.once('data', () => reader.socket.pause()) // its first bytes, then it stops reading a while
    reader.socket.write('GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    await reader.until((s) => s.length > 0, 30_000, 'the first bytes of the answer')
    const refused = await exchange(l.port, PROBE)
    t.match(refused, /^HTTP\/1\.1 503 /, `${l.kind}: the new connection is refused, the one being answered kept`)
    // the head came in the first bytes; then only the text's length is read while 16 MB come in
    // (endsWith on each chunk flattened the whole text each time: quadratic, 14-21 s for this
    // case at load 11-15, and it timed out once at load 23; 1-2.5 s so)
    const first = reader.received()
    const head = first.slice(0, first.indexOf('\r\n\r\n') + 4)
    const length = Number(/\r\ncontent-length: (\d+)\r\n/i.exec(head)?.[1])
    t.ok(head.length > 4 && length > 15_000_000, `${l.kind}: the head, with a content-length (${length})`)
    reader.socket.resume()
    await reader.until((s) => s.length >= head.length + length || reader.closed(), 60_000, 'the whole answer')
    t.equal(reader.received().length - head.length, length, `${l.kind}: the whole answer arrived`)
    t.ok(reader.received().endsWith('}\n'), `${l.kind}: to its end`)
    t.notOk(reader.closed(), `${l.kind}: and its connection stays open`)
    reader.socket.destroy()
  }
})

t.test('a request answered 408 for a body too slow is not carried out when its body comes after the 408', async (t) => {
  const limits: AdminLimits = { ...ADMIN_LIMITS, headersTimeout: 300, requestTimeout: 600 }
  const drained: string[] = []
  for (const l of await listeners(t, limits, { drain: (id) => { drained.push(id); return true } })) {
    drained.length = 0
    // half-open allowed: the client still sends its body after the server ended its side
    const socket = net.connect({ port: l.port, host: '127.0.0.1', allowHalfOpen: true })
    t.teardown(() => socket.destroy())
    socket.on('error', () => { /* a reset */ })
    let got = ''
    socket.on('data', (c: Buffer) => { got += c.toString('latin1'); socket.emit('progress') })
    const closed = new Promise((resolve) => socket.once('close', resolve))
    socket.write('POST /upstreams/a/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n')
    await when(onEvent(socket, 'progress'), () => got.includes('\r\n\r\n'), 30_000, `${l.kind}: the 408`)
    t.match(got, /^HTTP\/1\.1 408 /, `${l.kind}: 408 for the body not sent in time`)
    socket.end('{}')
    await within(closed, 30_000, `${l.kind}: the connection to close`)
    // a request passed to the worker after it (the front's passing of the drain, without the fix, is
    // asynchronous: this makes it all but sure to have been seen before the check; with the fix, none is made)
    t.equal((await request(`${l.url}/upstreams`)).status, 200, `${l.kind}: still serving`)
    t.same(drained, [], `${l.kind}: the drain the client was told timed out was not made`)
  }
})
