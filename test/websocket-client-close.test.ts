// The client-direction FrameTracker (src/proxy/upgrade-transport.ts) and the bare end after the
// client closed: held early bytes, split/masked/126/127/fragmented frames, shutdown and drain
// closes after the client closed, an upstream reset or SIGKILL after the client's FIN.
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { EventEmitter } from 'node:events'
import { startWsTether } from './fixtures/ws-harness.js'
import { within } from './fixtures/wait.js'
import { closeFrame } from '../src/proxy/websocket-frames.js'

const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
const ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
const HANDSHAKE = `GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n`
const LAST = Buffer.from([0x81, 0x03, 0x62, 0x79, 0x65])
const R1012 = closeFrame(1012)

/** A masked client frame (mask 0 for readability: payload bytes as given). */
function masked(b0: number, payload: Buffer): Buffer {
  const n = payload.length
  const head = n < 126 ? Buffer.from([b0, 0x80 | n]) : n < 65536 ? Buffer.from([b0, 0x80 | 126, n >> 8, n & 0xff]) : (() => { const h = Buffer.alloc(10); h[0] = b0; h[1] = 0x80 | 127; h.writeBigUInt64BE(BigInt(n), 2); return h })()
  return Buffer.concat([head, Buffer.from([0, 0, 0, 0]), payload])
}
const CLIENT_CLOSE = masked(0x88, Buffer.from([0x03, 0xe8]))

/** Upstream: records bytes per tunnel, emits 'bytes'(total, socket) */
async function startUpstream(t: Test): Promise<{ port: number; ev: EventEmitter }> {
  const ev = new EventEmitter()
  const server = http.createServer()
  const sockets = new Set<net.Socket>()
  server.on('upgrade', (_req, socket: net.Socket, head: Buffer) => {
    sockets.add(socket)
    socket.on('error', () => undefined)
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`)
    let got = head.length
    ev.emit('socket', socket)
    socket.on('data', (c: Buffer) => { got += c.length; ev.emit('bytes', got, socket) })
    socket.on('end', () => ev.emit('end', socket))
  })
  server.on('connection', (s) => s.setNoDelay(true))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close() })
  return { port: (server.address() as net.AddressInfo).port, ev }
}

/** Client: connects, sends handshake (+ `early`), resolves `open` at the 101 and `done` with bytes after the head at close. */
function client(port: number, early: Buffer = Buffer.alloc(0)) {
  const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true, noDelay: true })
  let got = Buffer.alloc(0)
  c.on('error', () => undefined)
  const open = new Promise<void>((res) => {
    const on = (): void => { if (got.indexOf('\r\n\r\n') >= 0) { c.off('data', on); res() } }
    c.on('data', (d: Buffer) => { got = Buffer.concat([got, d]) })
    c.on('data', on)
  })
  c.on('end', () => c.end())
  const done = new Promise<Buffer>((res) => c.on('close', () => res(got.subarray(got.indexOf('\r\n\r\n') + 4))))
  c.write(Buffer.concat([Buffer.from(HANDSHAKE), early]))
  return { c, open, done }
}

const waitBytes = (ev: EventEmitter, n: number): Promise<net.Socket> => within(new Promise((res) => { const f = (got: number, s: net.Socket): void => { if (got >= n) { ev.off('bytes', f); res(s) } }; ev.on('bytes', f) }), 10_000, `upstream got ${n} bytes`)
const firstSocket = (ev: EventEmitter): Promise<net.Socket> => new Promise((res) => ev.once('socket', res))

async function setup(t: Test) {
  const up = await startUpstream(t)
  const px = await startWsTether([{ id: 'up', url: `http://127.0.0.1:${up.port}` }])
  t.teardown(() => px.close())
  return { up, px, port: px.tether.port }
}

/** A client through Tether with its tunnel open, and the upstream's end of that tunnel. */
async function connected(up: { ev: EventEmitter }, port: number) {
  const s = firstSocket(up.ev)
  const cl = client(port)
  await cl.open
  return { cl, us: await s }
}

/** Sends `bytes` from the client, waits until the upstream has them, ends the upstream bare with LAST: what the client got after the head. */
async function sendThenUpstreamEnds(up: { ev: EventEmitter }, cl: ReturnType<typeof client>, us: net.Socket, bytes: Buffer): Promise<number[]> {
  cl.c.write(bytes)
  await waitBytes(up.ev, bytes.length)
  us.end(LAST)
  return [...await within(cl.done, 10_000, 'closed')]
}

t.test('A: close frame sent as early bytes (before the 101), then the upstream ends bare: no 1012', async (t) => {
  const { up, port } = await setup(t)
  const s = firstSocket(up.ev)
  const cl = client(port, CLIENT_CLOSE)
  const us = await s
  await waitBytes(up.ev, CLIENT_CLOSE.length)
  us.end(LAST)
  t.same([...await within(cl.done, 10_000, 'closed')], [...LAST])
})

t.test('B: close frame split byte by byte over TCP chunks, then the upstream ends bare: no 1012', async (t) => {
  const { up, port } = await setup(t)
  const { cl, us } = await connected(up, port)
  for (let i = 0; i < CLIENT_CLOSE.length; i++) { cl.c.write(CLIENT_CLOSE.subarray(i, i + 1)); await waitBytes(up.ev, i + 1) }
  us.end(LAST)
  t.same([...await within(cl.done, 10_000, 'closed')], [...LAST])
})

for (const [name, n] of [['126', 300], ['127', 70_000]] as const) {
  t.test(`C${name}: a ${n}-byte masked binary frame (payload full of 0x88 0x82), split at odd places, then upstream ends bare while client open: 1012`, async (t) => {
    const { up, port } = await setup(t)
    const { cl, us } = await connected(up, port)
    const f = masked(0x82, Buffer.alloc(n, Buffer.from([0x88, 0x82])))
    const cuts = [1, 3, 7, 9, 11, 13, f.length - 2, f.length]
    let from = 0
    for (const to of cuts) { cl.c.write(f.subarray(from, to)); await waitBytes(up.ev, to); from = to }
    us.end(LAST)
    t.same([...await within(cl.done, 10_000, 'closed')], [...LAST, ...R1012])
  })
  t.test(`D${name}: the same frame then a close frame: no 1012`, async (t) => {
    const { up, port } = await setup(t)
    const { cl, us } = await connected(up, port)
    t.same(await sendThenUpstreamEnds(up, cl, us, Buffer.concat([masked(0x82, Buffer.alloc(n, Buffer.from([0x88, 0x82]))), CLIENT_CLOSE])), [...LAST])
  })
}

t.test('E: fragmented message with a ping inside, no close: upstream ends bare -> 1012; then with close -> none', async (t) => {
  const { up, port } = await setup(t)
  const frags = Buffer.concat([masked(0x01, Buffer.from('he')), masked(0x89, Buffer.from([0x88])), masked(0x00, Buffer.from('l')), masked(0x80, Buffer.from('lo'))])
  {
    const { cl, us } = await connected(up, port)
    t.same(await sendThenUpstreamEnds(up, cl, us, frags), [...LAST, ...R1012], 'no close: 1012')
  }
  {
    const { cl, us } = await connected(up, port)
    t.same(await sendThenUpstreamEnds(up, cl, us, Buffer.concat([frags, CLIENT_CLOSE])), [...LAST], 'then a close frame: no 1012')
  }
})

t.test('F: client FIN, upstream keeps open (half-open), then Tether shuts down: 1001 still sent', async (t) => {
  const { up, px, port } = await setup(t)
  const { cl } = await connected(up, port)
  const ended = new Promise((r) => up.ev.once('end', r))
  cl.c.end()
  await within(ended, 10_000, 'upstream saw FIN')
  await px.close()
  t.same([...await within(cl.done, 10_000, 'closed')], [...closeFrame(1001)])
})

t.test('G: client FIN, then upstream RST (resetAndDestroy): client gets a bare end, tunnel freed', async (t) => {
  const { up, px, port } = await setup(t)
  const { cl, us } = await connected(up, port)
  const ended = new Promise((r) => up.ev.once('end', r))
  cl.c.end()
  await within(ended, 10_000, 'upstream saw FIN')
  us.resetAndDestroy()
  t.same([...await within(cl.done, 10_000, 'closed')], [])
  t.equal(px.upgrades.size, 0)
})

t.test('H: client open, upstream RST: 1012', async (t) => {
  const { up, port } = await setup(t)
  const { cl, us } = await connected(up, port)
  us.resetAndDestroy()
  t.same([...await within(cl.done, 10_000, 'closed')], [...R1012])
})

t.test('I: client sent its close frame, upstream keeps open, health/drain closeUpstream: 1012 still sent', async (t) => {
  const { up, px, port } = await setup(t)
  const { cl } = await connected(up, port)
  cl.c.write(CLIENT_CLOSE)
  await waitBytes(up.ev, CLIENT_CLOSE.length)
  t.equal(px.upgrades.closeUpstream('up'), 1)
  t.same([...await within(cl.done, 10_000, 'closed')], [...R1012])
})

t.test('J: real upstream process SIGKILLed after the client FIN (it ignores FIN): bare end; while client open: 1012', async (t) => {
  const { spawn } = await import('node:child_process')
  const src = `const http=require('http');const s=http.createServer();s.on('upgrade',(q,so)=>{so.on('error',()=>{});so.write('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: ${ACCEPT}\\r\\n\\r\\n');so.on('end',()=>console.log('FIN'));so.resume()});s.listen(0,'127.0.0.1',()=>console.log('PORT '+s.address().port))`
  for (const fin of [true, false]) {
    const p = spawn(process.execPath, ['-e', src], { stdio: ['ignore', 'pipe', 'inherit'] })
    t.teardown(() => p.kill('SIGKILL'))
    let out = ''
    const port = await new Promise<number>((r) => p.stdout!.on('data', (d) => { out += d; const m = /PORT (\d+)/.exec(out); if (m) r(Number(m[1])) }))
    const px = await startWsTether([{ id: 'up', url: `http://127.0.0.1:${port}` }])
    t.teardown(() => px.close())
    const cl = client(px.tether.port)
    await cl.open
    if (fin) { cl.c.end(); await within(new Promise<void>((r) => p.stdout!.on('data', () => { if (out.includes('FIN')) r() })), 5000, 'FIN seen') }
    p.kill('SIGKILL')
    t.same([...await within(cl.done, 10_000, 'closed')], fin ? [] : [...R1012], fin ? 'after FIN: bare' : 'open: 1012')
  }
})
