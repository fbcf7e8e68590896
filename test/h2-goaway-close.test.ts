// A connection error nghttp2 finds itself (no JavaScript sees the frame) gets its GOAWAY and
// then the TCP connection is closed at once (RFC 9113 section 5.4.1), over TLS and h2c, not
// left open until the idle bound; healthy connections beside it stay open.
import t, { type Test } from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { FLAG, FRAME, PREFACE, connectH2, connectPrefaced, frame, getBlock, readFrames } from './fixtures/h2-frames.js'
import { LogCapture } from './fixtures/log-capture.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { onEvent, when, within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

const TLS = { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null } as const

/**
 * The idle bound stays at its default (61 s) and timeouts.client_headers is raised to 60 s, so
 * neither can close a connection within the test's deadline: only the GOAWAY can.
 */
const DEADLINE = 10_000

/** The warning Tether logs when this Node lacks the internals the close relies on. */
const LACKS = 'HTTP/2: this Node lacks the internals'

async function tether(t: Test, tls: boolean, logs = new LogCapture(), clientHeaders = 60_000): Promise<Tether> {
  const up = await startUpstream('app-0')
  const listen = tls ? { tls: TLS } : { http2: { cleartext: true } }
  const proxy = await startTether(testConfig([up], { listen, timeouts: { client_headers: clientHeaders } }), { logger: createLogger('info', logs) })
  t.teardown(async () => { await proxy.close(0); await up.close() })
  return proxy
}

/** The info lines telling of a connection closed for a protocol error nghttp2 found. */
const REFUSED = 'HTTP/2 client sent what nghttp2 refused as a connection error'
const refusedLines = (logs: LogCapture): Record<string, unknown>[] => logs.records.filter((r) => String(r['msg']).startsWith(REFUSED))

const lacks = (logs: LogCapture): boolean => logs.records.some((r) => String(r['msg']).startsWith(LACKS))

/** The status of a `GET /` on `client`'s connection, its body read. */
const statusOn = (client: http2.ClientHttp2Session): Promise<number> => new Promise((resolve, reject) => {
  const req = client.request({ ':path': '/' })
  req.on('response', (h) => { req.resume(); req.on('end', () => resolve(Number(h[':status']))) })
  req.on('error', reject)
  req.end()
})

/** An h2 connection (TLS by ALPN, or h2c with prior knowledge) that sent the preface and SETTINGS. */
function connect(proxy: Tether, tls: boolean): Promise<net.Socket> {
  return connectPrefaced(Number(new URL(proxy.url).port), tls ? certs.ca : undefined)
}

/** The HPACK block of a HEADERS frame for stream 3: `GET /` with a literal :authority. */
const blockFor = (proxy: Tether, tls: boolean): Buffer => getBlock(new URL(proxy.url).host, '/', tls ? 'https' : 'http')

/** What a client sends that nghttp2 answers with a GOAWAY on its own, and that GOAWAY's code. */
const ERRORS: readonly { name: string; code: number; bytes: (block: Buffer) => Buffer }[] = [
  {
    // RFC 9113 section 6.10: only CONTINUATION frames of the same stream may follow a header block without END_HEADERS
    name: 'a DATA frame in the middle of a header block (CONTINUATION expected)',
    code: http2.constants.NGHTTP2_PROTOCOL_ERROR,
    bytes: (block) => Buffer.concat([frame(FRAME.HEADERS, FLAG.END_STREAM, 3, block.subarray(0, 3)), frame(FRAME.DATA, 0, 3, Buffer.from('x'))]),
  },
  {
    // RFC 9113 section 4.2: a frame over SETTINGS_MAX_FRAME_SIZE (16384 here)
    name: 'a frame larger than SETTINGS_MAX_FRAME_SIZE',
    code: http2.constants.NGHTTP2_FRAME_SIZE_ERROR,
    bytes: () => frame(FRAME.DATA, 0, 1, Buffer.alloc(20_000)),
  },
  {
    // RFC 9113 section 6.7: a PING's payload is 8 bytes
    name: 'a PING of 7 bytes',
    code: http2.constants.NGHTTP2_FRAME_SIZE_ERROR,
    bytes: () => frame(6, 0, 0, Buffer.alloc(7)),
  },
  {
    // RFC 7541 section 5.1 and RFC 9113 section 4.3: an integer past any table (here left unfinished) is COMPRESSION_ERROR
    name: 'a header block whose HPACK index never ends',
    code: http2.constants.NGHTTP2_COMPRESSION_ERROR,
    bytes: () => frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, 3, Buffer.alloc(6, 0xff)),
  },
]

for (const tls of [true, false]) {
  for (const error of ERRORS) {
    t.test(`${tls ? 'h2 over TLS' : 'h2c'}: ${error.name} gets GOAWAY, then the connection is closed at once`, async (t) => {
      const logs = new LogCapture()
      const proxy = await tether(t, tls, logs)
      // a well-behaved client beside it, served before and after: only the broken connection closes
      const healthy = http2.connect(proxy.url, tls ? { ca: certs.ca, servername: 'localhost' } : {})
      healthy.on('error', () => undefined)
      t.teardown(() => healthy.destroy())
      const status = (): Promise<number> => statusOn(healthy)
      t.equal(await status(), 200, 'the healthy client is served')
      // says which Node broke it, rather than only the timeout below
      t.notOk(lacks(logs), `Node ${process.version} has setGracefulClose and ongracefulclosecomplete on the h2 session handle (20.19.3 and later do)`)

      const socket = await connect(proxy, tls)
      socket.on('error', () => undefined)
      t.teardown(() => socket.destroy())
      const events: string[] = []
      let answered: () => void
      const served = new Promise<void>((resolve) => { answered = resolve })
      readFrames(socket, (type, flags, stream, payload) => {
        if (type === FRAME.DATA && stream === 1 && (flags & FLAG.END_STREAM) !== 0) answered()
        if (type === FRAME.GOAWAY) events.push(`goaway ${payload.readUInt32BE(4)}`)
      })
      const closed = new Promise<void>((resolve) => socket.once('close', () => { events.push('close'); resolve() }))
      // first a request served on it (stream 1), as on a connection in use: the slow-head guard
      // then sees no head begun and unfinished (other than the one in the error itself)
      socket.write(frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, 1, blockFor(proxy, tls)))
      await within(served, DEADLINE, 'the answer to stream 1')
      socket.write(error.bytes(blockFor(proxy, tls)))
      await within(closed, DEADLINE, 'the connection to be closed after its GOAWAY (the idle bound is 61 s)')
      t.same(events, [`goaway ${error.code}`, 'close'], 'GOAWAY with its code, then the close')
      // (Node 22 and later report a header-block error, CONTINUATION expected or broken HPACK,
      // to JavaScript as NGHTTP2_ERR_PROTO and destroyed the session themselves before the
      // check saw it, with no line: Tether leaves the close to nghttp2's GOAWAY and the check)
      const lines = refusedLines(logs)
      t.equal(lines.length, 1, 'one info line for it')
      t.match(lines[0], { level: 30, peer: /127\.0\.0\.1$/ }, 'at info, with the peer')
      t.equal(await status(), 200, 'the healthy client is still served on its connection')
      t.notOk(healthy.closed || healthy.destroyed, 'the healthy connection stayed open')
    })
  }
}

t.test('without the internals (Node before 20.19.3) Tether warns once that such connections wait for the idle bound', async (t) => {
  const logs = new LogCapture()
  const proxy = await tether(t, true, logs)
  // this Node's native session handle, from a client session: hiding its setGracefulClose stands
  // for a Node without it (server and client sessions share the one native class)
  const client = http2.connect(proxy.url, { ca: certs.ca, servername: 'localhost' })
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())
  await new Promise<void>((resolve, reject) => { client.once('connect', () => resolve()); client.once('error', reject) })
  const key = Object.getOwnPropertySymbols(client).find((s) => s.description === 'kHandle')
  const proto = key === undefined ? undefined : Object.getPrototypeOf((client as unknown as Record<symbol, object>)[key]) as { setGracefulClose?: unknown } | undefined
  if (proto === undefined || typeof proto.setGracefulClose !== 'function') {
    // this Node lacks it already: the client's own connection made Tether warn (its server
    // side may be set up after the client saw 'connect': waited for)
    await when(onEvent(logs, 'record'), () => lacks(logs), DEADLINE, 'the warning that this Node lacks the internals')
    t.pass(`Node ${process.version} lacks the internals, and Tether warned`)
    return
  }
  t.notOk(lacks(logs), 'no warning while the internals are there')
  const saved = proto.setGracefulClose
  delete proto.setGracefulClose
  try {
    // two new connections, each served (so Tether has set both up) while it is hidden
    for (let i = 0; i < 2; i++) {
      const other = http2.connect(proxy.url, { ca: certs.ca, servername: 'localhost' })
      other.on('error', () => undefined)
      t.teardown(() => other.destroy())
      t.equal(await statusOn(other), 200, `connection ${i + 1} is served`)
    }
  } finally {
    proto.setGracefulClose = saved
  }
  const lines = logs.records.filter((r) => String(r['msg']).startsWith(LACKS))
  t.equal(lines.length, 1, 'one warning for two connections')
  t.equal(lines[0]!['node'], process.version, 'naming the Node version')
})

t.test("the slow-head guard's own GOAWAY closes a connection whose first head never ends, with its warning and no protocol-error line", async (t) => {
  const logs = new LogCapture()
  const proxy = await tether(t, true, logs, 500)
  const socket = await connectH2(Number(new URL(proxy.url).port), certs.ca)
  socket.on('error', () => undefined)
  t.teardown(() => socket.destroy())
  const goaways: number[] = []
  let settings: () => void = () => undefined
  const settled = new Promise<void>((resolve) => { settings = resolve })
  readFrames(socket, (type, _flags, _stream, payload) => {
    if (type === FRAME.GOAWAY) goaways.push(payload.readUInt32BE(4))
    if (type === FRAME.SETTINGS) settings()
  })
  // the first 12 bytes of a HEADERS frame, once Tether's SETTINGS came (in the read of the
  // client's own SETTINGS nghttp2 resets such a stream at once), then nothing: a slow first
  // head, closed after timeouts.client_headers (0.5 s), well before the 10 s deadline
  await within(settled, DEADLINE, "Tether's SETTINGS")
  socket.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, getBlock('localhost')).subarray(0, 12))
  await within(new Promise<void>((resolve) => socket.once('close', () => resolve())), DEADLINE, 'the connection with a slow head to be closed')
  // (Node's close may send a second GOAWAY, NO_ERROR, naming the same stream)
  t.equal(goaways[0], http2.constants.NGHTTP2_PROTOCOL_ERROR, `GOAWAY PROTOCOL_ERROR first: ${JSON.stringify(goaways)}`)
  t.ok(logs.records.some((r) => String(r['msg']).startsWith('HTTP/2 client did not complete a stream head')), 'the slow-head warning')
  t.same(refusedLines(logs), [], 'no protocol-error line')
})

t.test("h2c: a client that keeps its side open and keeps writing after Tether's GOAWAY is closed at the lingering close's bound (2 s), not held", async (t) => {
  // the slow-head guard's close of a connection that began no head (timeouts.client_headers
  // 0.5 s; GOAWAY NO_ERROR, as an idle one): Tether's own
  // close, on every Node (a frame nghttp2 refuses is closed only where Node has the internals)
  const proxy = await tether(t, false, new LogCapture(), 500)
  // its half stays open after Tether's FIN (allowHalfOpen), and it writes on: a lingering close
  // reads and drops that, so only the bound can end the connection (the idle bound is 61 s)
  const socket = net.connect({ port: Number(new URL(proxy.url).port), host: '127.0.0.1', allowHalfOpen: true })
  socket.on('error', () => undefined)
  t.teardown(() => socket.destroy())
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  const events: string[] = []
  readFrames(socket, (type, _flags, _stream, payload) => { if (type === FRAME.GOAWAY) events.push(`goaway ${payload.readUInt32BE(4)}`) })
  let pings: NodeJS.Timeout | undefined
  socket.once('end', () => {
    events.push('end')
    pings = setInterval(() => { if (socket.writable) socket.write(frame(6, 0, 0, Buffer.alloc(8))) }, 100)
  })
  const closed = new Promise<void>((resolve) => socket.once('close', () => { clearInterval(pings); events.push('close'); resolve() }))
  t.teardown(() => clearInterval(pings))
  socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]))
  await within(closed, DEADLINE, 'the lingering connection to be closed by its bound (2 s after the close; the idle bound is 61 s)')
  t.equal(events[0], `goaway ${http2.constants.NGHTTP2_NO_ERROR}`, "the guard's GOAWAY first")
  t.same(events.filter((e) => !e.startsWith('goaway')), ['end', 'close'], 'then FIN (the close lingers), then the close at the bound')
})

for (const tls of [true, false]) {
  t.test(`${tls ? 'h2 over TLS' : 'h2c'}: a client that closes as soon as it reads Tether's GOAWAY has its connection closed then, not held to the lingering close's bound: a graceful stop with an idle client ends at once`, async (t) => {
    const proxy = await tether(t, tls)
    // Node's client closes its connection as soon as a GOAWAY leaves it no stream
    const session = http2.connect(proxy.url, tls ? { ca: certs.ca } : {})
    session.on('error', () => undefined)
    t.teardown(() => session.destroy())
    await new Promise<void>((resolve, reject) => { const r = session.request({ ':path': '/' }); r.resume(); r.on('end', resolve); r.on('error', reject) })
    const closed = new Promise<void>((resolve) => session.once('close', resolve))
    // the lingering close would hold the connection 2 s; the grace period 60 s
    const stopped = proxy.close(60_000)
    await within(closed, DEADLINE, 'the client to close after the GOAWAY')
    await within(stopped, 1_500, 'the stop to end once the client closed (the lingering bound is 2 s)')
    t.pass('the stop ended once the client had closed')
  })
}

/** Bytes of the long answers and uploads below: many windows' worth at the small windows used. */
const LONG = 2 * 1024 * 1024

for (const tls of [true, false]) {
  t.test(`${tls ? 'h2 over TLS' : 'h2c'}: healthy connections the check watches are not closed early (small windows, client GOAWAY mid-answer, slow upload)`, async (t) => {
    const up = await startUpstream('app-0', (req, res) => {
      if (req.url === '/long') {
        const chunk = Buffer.alloc(64 * 1024, 'x')
        let sent = 0
        const pump = (): void => { while (sent < LONG) { sent += chunk.length; if (!res.write(chunk)) return void res.once('drain', pump) } res.end() }
        return pump()
      }
      // an upload read slowly: a turn of the event loop between chunks, so Tether's window fills
      let n = 0
      req.on('data', (c: Buffer) => { n += c.length; req.pause(); setImmediate(() => req.resume()) })
      req.on('end', () => res.end(String(n)))
    })
    const logs = new LogCapture()
    const listen = tls ? { tls: TLS } : { http2: { cleartext: true } }
    const proxy = await startTether(testConfig([up], { listen, timeouts: { client_headers: 60_000 } }), { logger: createLogger('info', logs) })
    t.teardown(async () => { await proxy.close(0); await up.close() })
    // a 1 KiB stream window: the answer goes out in many small flow-controlled pieces
    const client = http2.connect(proxy.url, { ...(tls ? { ca: certs.ca, servername: 'localhost' } : {}), settings: { initialWindowSize: 1024 } })
    client.on('error', () => undefined)
    t.teardown(() => client.destroy())
    /** A `GET` read slowly: when its first bytes came, and how many bytes it had at its end. */
    const slowRead = (path: string): { started: Promise<void>; body: Promise<number> } => {
      const req = client.request({ ':path': path })
      let n = 0
      let started: () => void
      return {
        started: new Promise<void>((resolve) => { started = resolve }),
        body: new Promise((resolve, reject) => {
          req.on('data', (b: Buffer) => { n += b.length; started(); req.pause(); setImmediate(() => req.resume()) })
          req.on('end', () => resolve(n))
          req.on('error', reject)
        }),
      }
    }
    t.equal(await slowRead('/long').body, LONG, 'a long answer read slowly through a small window arrives whole')
    const upload = client.request({ ':path': '/upload', ':method': 'POST' })
    let body = ''
    const uploaded = new Promise<void>((resolve, reject) => { upload.on('data', (b) => { body += String(b) }); upload.on('end', resolve); upload.on('error', reject) })
    const chunk = Buffer.alloc(64 * 1024, 'y')
    let sent = 0
    const pump = (): void => { while (sent < LONG) { sent += chunk.length; if (!upload.write(chunk)) return void upload.once('drain', pump) } upload.end() }
    pump()
    await uploaded
    t.equal(body, String(LONG), 'a long upload to a slow upstream arrives whole')
    // the client's own GOAWAY (close()) while an answer is on its way: the answer still finishes
    const last = slowRead('/long')
    await last.started
    client.close()
    t.equal(await last.body, LONG, 'the answer in flight when the client sent GOAWAY arrives whole')
    t.same(refusedLines(logs), [], 'no connection was closed as refused')
  })
}
