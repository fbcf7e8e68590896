// How a tunnel ends when its two ends close it themselves, over raw sockets (exact bytes, no
// WebSocket library in between), side by side with nginx 1.22 (`proxy_pass` with Upgrade and
// Connection: a byte pipe that adds nothing). Tether adds a close frame of its own only when
// *it* ends a tunnel (an upstream that stops without one, health, drain, shutdown,
// timeouts); a client that closed first (its FIN, or its close frame) gets the upstream's last
// bytes and end as they are, never a 1012 ("service restart", RFC 6455 section 7.4.1, which
// tells a client to reconnect) behind them.
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { startWsTether } from './fixtures/ws-harness.js'
import { startNginx } from './fixtures/nginx.js'
import { within } from './fixtures/wait.js'
import { closeFrame } from '../src/proxy/websocket-frames.js'

const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
/** RFC 6455 section 1.3's worked example: the accept of KEY. */
const ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
const HANDSHAKE = `GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n`
/** The upstream's last frame: an unmasked text frame "bye" (RFC 6455 section 5.2). */
const LAST = Buffer.from([0x81, 0x03, 0x62, 0x79, 0x65])
/** The client's close frame, 1000 (normal closure), masked with key 0 as a client must mask. */
const CLIENT_CLOSE = Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])

/** What the upstream does once the tunnel is open. */
type UpstreamPlay =
  /** At the client's FIN: its last frame, then its own FIN (no close frame). */
  | 'answer-fin'
  /** At the client's first bytes (its close frame): its last frame, then its FIN, no close frame of its own. */
  | 'answer-bytes'
  /** At once: its last frame, then its FIN, without a close frame; it keeps reading. */
  | 'fin-first'

/** A WebSocket server written on node:http's 'upgrade', with raw frames. */
async function startUpstream(t: Test, play: UpstreamPlay): Promise<number> {
  const server = http.createServer()
  const sockets = new Set<net.Socket>()
  server.on('upgrade', (_req, socket: net.Socket) => {
    sockets.add(socket)
    socket.on('error', () => undefined)
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`)
    const last = (): void => { socket.end(LAST) }
    if (play === 'answer-fin') socket.once('end', last)
    else if (play === 'answer-bytes') socket.once('data', last)
    else last()
    socket.resume()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close() })
  return (server.address() as net.AddressInfo).port
}

/** What the client does once its 101 arrived. */
type ClientPlay = 'fin' | 'close-frame' | 'stay'

/**
 * One tunnel through the proxy on `port`: the handshake, then `play`; resolves with every byte
 * the client received after the 101's head, once its connection closed. The client allows
 * half-open connections (it reads on after its FIN) and ends its side when the proxy ended its own.
 */
function tunnel(port: number, play: ClientPlay): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    let got = Buffer.alloc(0)
    let played = false
    client.on('error', () => undefined)
    client.on('data', (c: Buffer) => {
      got = Buffer.concat([got, c])
      const head = got.indexOf('\r\n\r\n')
      if (played || head < 0) return
      played = true
      if (!got.subarray(0, 12).equals(Buffer.from('HTTP/1.1 101'))) return reject(new Error(`no 101: ${got.toString('latin1')}`))
      if (play === 'fin') client.end()
      else if (play === 'close-frame') client.write(CLIENT_CLOSE)
    })
    client.on('end', () => client.end())
    client.on('close', () => resolve(got.subarray(got.indexOf('\r\n\r\n') + 4)))
    client.write(HANDSHAKE)
  })
}

/** Both proxies in front of one upstream playing `play`. */
async function proxies(t: Test, play: UpstreamPlay): Promise<{ tether: number; nginx: number }> {
  const port = await startUpstream(t, play)
  const px = await startWsTether([{ id: 'up', url: `http://127.0.0.1:${port}` }])
  t.teardown(() => px.close())
  const nginx = await startNginx(port)
  t.teardown(() => nginx.close())
  return { tether: px.tether.port, nginx: nginx.port }
}

t.test("a client that half-closes (FIN, no close frame) and an upstream that answers with its last frame and FIN: the client gets that frame and the end, no close frame of Tether's (nginx adds none, and loses the frame)", async (t) => {
  const { tether, nginx } = await proxies(t, 'answer-fin')
  const viaTether = await within(tunnel(tether, 'fin'), 30_000, 'the tunnel through Tether to close')
  t.same([...viaTether], [...LAST], "the upstream's last frame, then the end: no 1012 behind it")
  // nginx 1.22 closes both connections at either side's end: the upstream's last frame is lost
  // (it comes after); what matters here is that nothing is added
  const viaNginx = await within(tunnel(nginx, 'fin'), 30_000, 'the tunnel through nginx to close')
  t.equal(viaNginx.indexOf(0x88), -1, 'nginx adds no close frame')
})

t.test("a client that sends its close frame and an upstream that answers with its last frame and FIN but no close frame: no 1012 of Tether's (the client began the closing)", async (t) => {
  const { tether, nginx } = await proxies(t, 'answer-bytes')
  const viaTether = await within(tunnel(tether, 'close-frame'), 30_000, 'the tunnel through Tether to close')
  t.same([...viaTether], [...LAST], "the upstream's last frame, then the end")
  const viaNginx = await within(tunnel(nginx, 'close-frame'), 30_000, 'the tunnel through nginx to close')
  t.same([...viaNginx], [...LAST], 'nginx: the same bytes')
})

t.test('an upstream that ends first without a close frame (the client still open): the client gets its last frame, then 1012 from Tether, then the end; nginx passes the end bare (the client sees 1006)', async (t) => {
  const { tether, nginx } = await proxies(t, 'fin-first')
  const viaTether = await within(tunnel(tether, 'stay'), 30_000, 'the tunnel through Tether to close')
  t.same([...viaTether], [...LAST, ...closeFrame(1012)], "the upstream's last frame, then Tether's 1012 (RFC 6455 section 7.1.7: the connection failed, a close frame before closing it)")
  const viaNginx = await within(tunnel(nginx, 'stay'), 30_000, 'the tunnel through nginx to close')
  t.same([...viaNginx], [...LAST], 'nginx: the last frame, then the end, nothing added')
})
