// Hostile HTTP/2 clients against Tether run as its CLI (a child process, so its CPU time and
// memory can be read from /proc): rapid reset (CVE-2023-44487: streams opened and reset at
// once) and CONTINUATION floods (2024: a header block that never ends). The attacker's
// connection is cut, CPU and memory stay bounded, and another client is served meanwhile.
import t, { type Test } from 'tap'
import http2 from 'node:http2'
import type tls from 'node:tls'
import type { Running } from './fixtures/cli.js'
import { cutOff, probe as probeWith, startFloodTarget } from './fixtures/h2-flood-target.js'
import { FLAG, FRAME, connectH2, frame, getBlock, junkHeaders, processUsage, readFrames } from './fixtures/h2-frames.js'
import { makeCertificateSet } from './fixtures/tls.js'
import type { Handler } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

async function start(t: Test, handler?: Handler): Promise<{ tether: Running; port: number; upstreamRequests: () => number }> {
  return startFloodTarget(t, certs, handler)
}

const probe = (port: number): Promise<number> => probeWith(port, certs.ca)

/**
 * Rapid reset on `socket`: streams opened and reset at once (HEADERS + RST_STREAM CANCEL), 500
 * a write, while `open()`, for at most 100 000 streams or 10 s; resolves with how many it wrote.
 * Streams are numbered from `first` (odd).
 */
async function floodResets(socket: tls.TLSSocket, port: number, open: () => boolean, first = 1): Promise<number> {
  const block = getBlock(`127.0.0.1:${port}`)
  let sent = 0
  const deadline = Date.now() + 10_000
  while (open() && sent < 100_000 && Date.now() < deadline) {
    const batch: Buffer[] = []
    for (let i = 0; i < 500; i++) {
      const id = first + 2 * (sent + i)
      batch.push(frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, id, block), frame(FRAME.RST_STREAM, 0, id, Buffer.from([0, 0, 0, 8])))
    }
    sent += 500
    // (a server that stopped reading takes nothing more: the deadline ends the wait)
    if (!socket.write(Buffer.concat(batch))) await new Promise<void>((r) => { socket.once('drain', r); socket.once('close', r); setTimeout(r, Math.max(0, deadline - Date.now())).unref() })
    await new Promise((r) => setImmediate(r)) // let a close be noticed
  }
  return sent
}

t.test('rapid reset: a client opening and resetting streams as fast as it can is cut off; CPU and memory stay bounded', async (t) => {
  const { tether, port, upstreamRequests } = await start(t)
  const pid = tether.proc.pid!
  t.equal(await probe(port), 200, 'served before the flood')
  const before = await processUsage(pid)
  const socket = await connectH2(port, certs.ca)
  const closed = cutOff(socket)
  let open = true
  void closed.then(() => { open = false })
  const sent = await floodResets(socket, port, () => open)
  const during = probe(port)
  const { goaway } = await within(closed, 15_000, 'the flooding connection to be closed')
  t.equal(await within(during, 10_000, 'a normal client during the flood'), 200, 'another client is served during the flood')
  const after = await processUsage(pid)
  t.ok(!open, 'the flooding connection was closed by Tether')
  t.equal(goaway, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 'with GOAWAY ENHANCE_YOUR_CALM')
  const line = tether.stdout().split('\n').find((l) => l.includes('rapid reset'))
  t.ok(line, 'Tether logged why it closed the connection')
  const judged = line === undefined ? Infinity : (JSON.parse(line) as { streams: number }).streams
  t.ok(judged <= 200, `Tether took ${judged} streams before closing the connection`)
  t.ok(upstreamRequests() <= 200, `${upstreamRequests()} requests reached the upstream`)
  t.ok(after.rssKb - before.rssKb < 100_000, `memory grew by ${after.rssKb - before.rssKb} kB (< 100 MB)`)
  t.comment(`rapid reset: Tether closed the connection after ${judged} streams (the client had written ${sent} when it noticed) (GOAWAY code ${goaway ?? 'none'}), Tether CPU ${after.cpuMs - before.cpuMs} ms, RSS ${before.rssKb} -> ${after.rssKb} kB, upstream requests ${upstreamRequests()}`)
  t.equal(await probe(port), 200, 'served after the flood')
  if (process.env['H2_FLOOD_DEBUG']) console.error(tether.stdout().split('\n').filter((l) => !l.includes('"access"')).slice(-10).join('\n'))
})

t.test('CONTINUATION flood: a header block that never ends is cut off early; CPU and memory stay bounded', async (t) => {
  const { tether, port } = await start(t)
  const pid = tether.proc.pid!
  const before = await processUsage(pid)
  const socket = await connectH2(port, certs.ca)
  const closed = cutOff(socket)
  let open = true
  void closed.then(() => { open = false })
  // HEADERS without END_HEADERS, then CONTINUATION frames of ~16 kB each, never ending (at most 64 MB)
  socket.write(frame(FRAME.HEADERS, 0, 1, getBlock(`127.0.0.1:${port}`)))
  let bytes = 0
  const deadline = Date.now() + 10_000
  for (let i = 0; open && bytes < 64 * 1024 * 1024 && Date.now() < deadline; i++) {
    const payload = junkHeaders(140, i)
    bytes += payload.length
    if (!socket.write(frame(FRAME.CONTINUATION, 0, 1, payload))) await new Promise<void>((r) => { socket.once('drain', r); socket.once('close', r) })
    await new Promise((r) => setImmediate(r)) // let a close be noticed
  }
  const during = probe(port)
  const { goaway } = await within(closed, 15_000, 'the flooding connection to be closed')
  t.equal(await within(during, 10_000, 'a normal client during the flood'), 200, 'another client is served')
  const after = await processUsage(pid)
  t.ok(bytes < 64 * 1024 * 1024, `cut off after ${bytes} bytes of CONTINUATION, before 64 MB`)
  t.ok(after.rssKb - before.rssKb < 100_000, `memory grew by ${after.rssKb - before.rssKb} kB (< 100 MB)`)
  t.comment(`CONTINUATION flood: ${bytes} bytes sent before the cut (GOAWAY code ${goaway ?? 'none'}), Tether CPU ${after.cpuMs - before.cpuMs} ms, RSS ${before.rssKb} -> ${after.rssKb} kB`)
})

t.test('streams opened past SETTINGS_MAX_CONCURRENT_STREAMS, each with a 15 kB body, are refused and the connection is closed after 100 refusals; no refused stream reaches the upstream', async (t) => {
  const { tether, port, upstreamRequests } = await start(t, (req) => { req.resume() }) // holds every request to /held open
  const socket = await connectH2(port, certs.ca)
  let open = true
  let refused = 0
  let window = 65_535 // the connection's receive window at Tether: the client keeps to it
  let wake: (() => void) | null = null
  const woken = (): void => { const w = wake; wake = null; w?.() }
  // the client never acknowledges Tether's SETTINGS: nghttp2 then refuses each stream past the
  // limit with REFUSED_STREAM and goes on (once acknowledged, the first such stream closes the
  // connection at once), so a careless or hostile client can go on opening streams
  readFrames(socket, (type, _flags, stream, payload) => {
    if (type === FRAME.RST_STREAM && payload.readUInt32BE(0) === http2.constants.NGHTTP2_REFUSED_STREAM) refused++
    if (type === FRAME.WINDOW_UPDATE && stream === 0) { window += payload.readUInt32BE(0); woken() }
  })
  socket.once('close', () => { open = false; woken() })
  socket.on('error', () => undefined)
  socket.setMaxListeners(0)
  const post = Buffer.concat([Buffer.from([0x83]), getBlock(`127.0.0.1:${port}`, '/held').subarray(1)]) // :method POST (HPACK index 3)
  const body = Buffer.alloc(15_000, 'x')
  let sent = 0
  const deadline = Date.now() + 30_000
  while (open && sent < 2_000 && Date.now() < deadline) {
    const id = 2 * sent + 1
    socket.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, post))
    while (open && window < body.length && Date.now() < deadline) await new Promise<void>((r) => { wake = r; setTimeout(r, 1_000) })
    if (!open) break
    window -= body.length
    if (!socket.write(frame(FRAME.DATA, FLAG.END_STREAM, id, body))) await new Promise<void>((r) => { socket.once('drain', r); socket.once('close', r) })
    sent++
  }
  await within(new Promise<void>((r) => { if (!open) r(); else socket.once('close', () => r()) }), 15_000, 'the connection to be closed')
  t.ok(refused > 0, `streams past the limit were refused (${refused})`)
  // Node closes the connection on the 102nd refused stream (its check is count++ > 100); nghttp2
  // queues that stream's RST_STREAM first, which Node 22 and later send and Node 20 over TLS drops
  t.ok(refused <= 102, `the connection was closed after ${refused} refused streams (Node's default would take 1000)`)
  t.ok(sent < 2_000, `closed after ${sent} streams of 2000`)
  t.ok(upstreamRequests() <= 100, `${upstreamRequests()} requests reached the upstream (the concurrent limit)`)
  await waitFor(() => tether.stdout().includes('past the concurrent limit'), 5_000, 'the warning')
  t.pass('Tether warned why it closed the connection')
  t.equal(await probe(port), 200, 'another client is served after')
})

t.test('rapid reset, ten connections one after another: each client reads GOAWAY ENHANCE_YOUR_CALM before its connection closes', async (t) => {
  const { port } = await start(t)
  const codes: (number | null)[] = []
  for (let i = 0; i < 10; i++) {
    const socket = await connectH2(port, certs.ca)
    const closed = cutOff(socket)
    let open = true
    void closed.then(() => { open = false })
    await floodResets(socket, port, () => open)
    codes.push((await within(closed, 15_000, `connection ${i + 1} to be closed`)).goaway)
  }
  // Tether once destroyed the session from within the stream event that judged it: the client then often saw no GOAWAY
  t.same(codes, Array(10).fill(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM), 'every client got GOAWAY ENHANCE_YOUR_CALM')
})

