// An h2 request's :path becomes the request line Tether writes to an HTTP/1.1 upstream. A byte
// outside the visible US-ASCII range (a raw UTF-8 or latin1 letter: RFC 3986 has no such byte in
// a URI, RFC 9112 section 3.2 none in a request-target) would make that line one no HTTP/1.1
// parser takes: Tether refuses it over HTTP/1.1 (400, Node's parser), and must not send it on
// from an h2 client either. Hand-made frames on an h2c connection (Node's h2 client encodes the
// path itself), in front of a raw recording upstream with a strict request parser.
import t from 'tap'
import net from 'node:net'
import { FLAG, FRAME, PREFACE, frame, readFrames } from './fixtures/h2-frames.js'
import { startHarness, type Harness } from './fixtures/raw-tether.js'
import { exchange } from './fixtures/raw-client.js'
import { once } from './fixtures/wait.js'

/** An HPACK block of literal fields without indexing (no Huffman; names and values under 128 bytes). */
function block(fields: readonly (readonly [string, string])[]): Buffer {
  const str = (s: string): Buffer => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')])
  return Buffer.concat(fields.map(([name, value]) => Buffer.concat([Buffer.from([0x00]), str(name), str(value)])))
}

let h: Harness
t.before(async () => { h = await startHarness({ listen: { http2: { cleartext: true } }, retries: { attempts: 0 }, timeouts: { response_headers: 2000 }, health: { passive: { enabled: false } } }) })
t.teardown(() => h.close())

/** GET `path` on a new h2c connection: the answer's status (0: none within 3 s, or the stream reset). */
async function h2Get(path: string): Promise<number> {
  const socket = net.connect(h.port, '127.0.0.1')
  socket.on('error', () => undefined)
  try {
    await once(socket, 'connect')
    const status = new Promise<number>((resolve) => readFrames(socket, (type, flags, stream, payload) => {
      if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
      if (stream !== 1) return
      // the answer's HEADERS: Tether's HPACK encodes :status first, as an indexed field for the
      // usual codes (0x88 200 ... 0x8e 500) or a literal one (name index 8, then the digits)
      if (type === FRAME.HEADERS) resolve(payload[0]! >= 0x88 && payload[0]! <= 0x8e ? [200, 204, 206, 304, 400, 404, 500][payload[0]! - 0x88]! : Number(payload.subarray(2, 5).toString('latin1')))
      if (type === FRAME.RST_STREAM) resolve(0)
    }))
    const head = block([[':method', 'GET'], [':scheme', 'http'], [':path', path], [':authority', 'a.example']])
    socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, head)]))
    return await Promise.race([status, once(socket, 'close', 3000).then(() => 0, () => 0)])
  } finally {
    socket.destroy()
  }
}

for (const [name, path] of [
  ['a raw latin1 letter (0xE9)', '/caf\xe9'],
  ['raw UTF-8 bytes (0xC3 0xA9)', '/caf\xc3\xa9'],
  ['a raw byte in the query (0xFF)', '/x?q=\xff'],
] as const) {
  t.test(`an h2 :path with ${name} gets 400 and reaches no upstream, as the same target over HTTP/1.1`, async (t) => {
    const before = h.received().length
    t.equal(await h2Get(path), 400, 'h2: 400')
    const h1 = await exchange(h.port, Buffer.from(`GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`, 'latin1'), { responses: 1 })
    t.equal(h1.first, '400', 'HTTP/1.1: 400 (Node\'s parser)')
    await h.barrier()
    t.equal(h.received().length, before, 'nothing forwarded')
    t.same(h.violations(), [], 'the upstream never saw a request line it could not parse')
  })
}

t.test('an h2 :path percent-encoded, or with the visible characters RFC 3986 allows, is forwarded exactly as written', async (t) => {
  const before = h.received().length
  t.equal(await h2Get('/caf%C3%A9'), 200)
  t.equal(await h2Get("/a/b;c=d?e=f&g=h:i@j!$'()*+,~._-"), 200)
  await h.barrier()
  t.same(h.received().slice(before).map((q) => q.target), ['/caf%C3%A9', "/a/b;c=d?e=f&g=h:i@j!$'()*+,~._-"])
  t.same(h.violations(), [])
})

t.test('nothing along the way was logged as an unhandled error', async (t) => {
  t.same(h.unhandled(), [])
})
