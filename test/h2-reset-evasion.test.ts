// Rapid reset (CVE-2023-44487) in the shapes that slip past a guard counting only the share of
// streams a client resets: resets diluted with streams Tether refuses itself (no upstream ever
// sees them, so they cost the client as little as a reset), and streams reset by nghttp2 because
// of what the client sent (MadeYouReset, CVE-2025-8671: DATA past the request's
// content-length); and the streams the guard must not hold against a client that resets nothing
// (those Tether resets itself, its own refusals alone). Tether runs as its CLI; each client
// keeps within the concurrent-stream limit by what it reads, and the figures are printed as
// comments (see docs/tls.md).
import t, { type Test } from 'tap'
import http2 from 'node:http2'
import type tls from 'node:tls'
import { cutOff, probe, startFloodTarget } from './fixtures/h2-flood-target.js'
import { FLAG, FRAME, connectH2, frame, getBlock, readFrames } from './fixtures/h2-frames.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { waitFor, within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

/** The HPACK block of a TRACE (Tether answers 405 itself): :method as a literal (name index 2). */
function traceBlock(authority: string): Buffer {
  return Buffer.concat([Buffer.from([0x02, 5]), Buffer.from('TRACE'), getBlock(authority).subarray(1)])
}

interface Mixed { resets: number; others: number; goaway: number | null }

/**
 * A rapid reset diluted: `ratio` streams opened with `others` in turn (left to complete) for
 * each GET of `resetPath` opened and reset (RST_STREAM CANCEL in the next write, so the GET may
 * already be on its way upstream). The client keeps below 60 open streams and resets a GET only
 * once `ratio` of the other streams were answered, so the share of its streams it reset stays
 * at 1 / (ratio + 1). Stops once the connection is closed, at 6000 streams or after 10 s.
 */
async function dilutedResets(socket: tls.TLSSocket, port: number, others: readonly Buffer[], ratio: number, resetPath = '/'): Promise<Mixed> {
  const closed = cutOff(socket)
  let open = true
  void closed.then(() => { open = false })
  const othersOpen = new Set<number>()
  let answered = 0
  readFrames(socket, (type, flags, stream) => {
    if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
    const ended = ((type === FRAME.HEADERS || type === FRAME.DATA) && (flags & FLAG.END_STREAM) !== 0) || type === FRAME.RST_STREAM
    if (ended && othersOpen.delete(stream)) answered++
  })
  socket.write(frame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.from([0x7f, 0xfe, 0xff, 0xff]))) // the connection's window wide open: answers never wait
  const get = getBlock(`127.0.0.1:${port}`, resetPath)
  let next = 1
  let resets = 0
  let sent = 0
  let pending: number[] = []
  const deadline = Date.now() + 10_000
  while (open && next < 12_000 && Date.now() < deadline) {
    const batch: Buffer[] = pending.map((id) => frame(FRAME.RST_STREAM, 0, id, Buffer.from([0, 0, 0, 8])))
    pending = []
    while (othersOpen.size < 40) { batch.push(frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, next, others[sent % others.length]!)); othersOpen.add(next); next += 2; sent++ }
    const allowed = Math.min(20, Math.floor(answered / ratio) - resets)
    for (let i = 0; i < allowed; i++) { batch.push(frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, next, get)); pending.push(next); next += 2; resets++ }
    if (!socket.write(Buffer.concat(batch))) await new Promise<void>((r) => { socket.once('drain', r); socket.once('close', r) })
    await new Promise((r) => setTimeout(r, 5)) // let answers come in between writes
  }
  const { goaway } = await within(closed, 15_000, 'the connection to be closed')
  return { resets, others: sent, goaway }
}

t.test('rapid reset diluted with streams Tether refuses itself (two TRACEs answered 405 for each GET reset) is judged as rapid reset: GOAWAY ENHANCE_YOUR_CALM after about 160 streams (its resets reach a quarter)', async (t) => {
  // before, only streams the client reset counted: at a third of them the connection went on
  // until nghttp2's own limit on received resets (1000 at once, then 33 a second) closed it
  // with INTERNAL_ERROR, after about 1100 resets of which some 480 GETs had reached the upstream
  const { tether, port, upstreamRequests } = await startFloodTarget(t, certs)
  const socket = await connectH2(port, certs.ca)
  const { resets, others, goaway } = await dilutedResets(socket, port, [traceBlock(`127.0.0.1:${port}`)], 2)
  t.equal(goaway, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 'closed with GOAWAY ENHANCE_YOUR_CALM')
  const line = await rapidResetLine(tether)
  t.ok(line, 'Tether logged why it closed the connection')
  const judged = line === undefined ? Infinity : (JSON.parse(line) as { streams: number }).streams
  t.ok(judged <= 200, `judged after ${judged} streams`)
  t.ok(upstreamRequests() <= 100, `${upstreamRequests()} GETs reached the upstream`)
  t.comment(`diluted with refused TRACEs: ${resets} GETs reset and ${others} TRACEs sent when the client saw the close (GOAWAY ${goaway ?? 'none'}), judged after ${judged} streams, ${upstreamRequests()} requests reached the upstream`)
  t.equal(await probe(port, certs.ca), 200, 'another client is served')
})

t.test('streams Tether resets because of what the client sent (MadeYouReset: DATA past content-length) count as resets: GOAWAY ENHANCE_YOUR_CALM after about 100', async (t) => {
  const { tether, port, upstreamRequests } = await startFloodTarget(t, certs, (req, res) => { req.resume(); req.on('end', () => res.end('ok')) })
  const socket = await connectH2(port, certs.ca)
  const closed = cutOff(socket)
  let open = true
  void closed.then(() => { open = false })
  // the client keeps below 60 streams it has not seen closed (else nghttp2 closes the connection for exceeding the limit)
  const streamsOpen = new Set<number>()
  let wake: (() => void) | null = null
  readFrames(socket, (type, flags, stream) => {
    if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0))
    if (type === FRAME.RST_STREAM || ((type === FRAME.HEADERS || type === FRAME.DATA) && (flags & FLAG.END_STREAM) !== 0)) streamsOpen.delete(stream)
    if (streamsOpen.size < 40) { const w = wake; wake = null; w?.() }
  })
  void closed.then(() => { const w = wake; wake = null; w?.() })
  // POST /held with content-length: 2 (static name index 28), one byte with the head, two more in the next write
  const post = Buffer.concat([Buffer.from([0x83]), getBlock(`127.0.0.1:${port}`, '/held').subarray(1), Buffer.from([0x0f, 0x0d, 1]), Buffer.from('2')])
  let next = 1
  const deadline = Date.now() + 10_000
  while (open && next < 6_000 && Date.now() < deadline) {
    if (streamsOpen.size >= 40) { await new Promise<void>((r) => { wake = r }); continue }
    const ids = Array.from({ length: 20 }, (_, i) => next + 2 * i)
    next += 40
    for (const id of ids) streamsOpen.add(id)
    socket.write(Buffer.concat(ids.flatMap((id) => [frame(FRAME.HEADERS, FLAG.END_HEADERS, id, post), frame(FRAME.DATA, 0, id, Buffer.from('x'))])))
    await new Promise((r) => setTimeout(r, 10)) // the heads on their way upstream
    if (open) socket.write(Buffer.concat(ids.map((id) => frame(FRAME.DATA, FLAG.END_STREAM, id, Buffer.from('yy')))))
  }
  const { goaway } = await within(closed, 15_000, 'the connection to be closed')
  t.equal(goaway, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 'closed with GOAWAY ENHANCE_YOUR_CALM')
  const line = await rapidResetLine(tether)
  const judged = line === undefined ? Infinity : (JSON.parse(line) as { streams: number }).streams
  t.ok(judged <= 200, `judged after ${judged} streams`)
  t.ok(upstreamRequests() <= 200, `${upstreamRequests()} requests reached the upstream`)
  t.comment(`MadeYouReset (content-length): ${(next - 1) / 2} streams sent, judged after ${judged} (GOAWAY ${goaway ?? 'none'}), ${upstreamRequests()} requests reached the upstream`)
})

t.test('a mix where neither share alone is above half (per round one GET reset, one TRACE refused, one GET served) is judged: resets and refusals are added', async (t) => {
  // the reset GETs ask for /held, which the upstream never answers: each is reset before its answer
  const { tether, port } = await startFloodTarget(t, certs, () => undefined)
  const socket = await connectH2(port, certs.ca)
  const authority = `127.0.0.1:${port}`
  const { resets, others, goaway } = await dilutedResets(socket, port, [traceBlock(authority), getBlock(authority)], 2, '/held')
  t.equal(goaway, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 'closed with GOAWAY ENHANCE_YOUR_CALM')
  const line = await rapidResetLine(tether)
  t.ok(line, 'Tether logged why it closed the connection')
  const fields = line === undefined ? { streams: Infinity, resets: 0, refused: 0 } : (JSON.parse(line) as { streams: number; resets: number; refused: number })
  t.ok(fields.streams <= 300, `judged after ${fields.streams} streams`)
  t.ok(fields.resets * 2 <= fields.streams && fields.refused * 2 <= fields.streams, `neither share alone above half (${fields.resets} resets, ${fields.refused} refused of ${fields.streams})`)
  t.comment(`one GET reset, one TRACE, one GET served per round: ${resets} GETs reset and ${others} others sent when the client saw the close (GOAWAY ${goaway ?? 'none'}); log: ${line ?? 'none'}`)
})

/**
 * Tether's log line naming the rapid reset, once it is there (the GOAWAY may reach the client
 * before the line reaches the test's pipe on a busy machine), or undefined after 5 s.
 */
async function rapidResetLine(tether: { stdout(): string }): Promise<string | undefined> {
  const find = (): string | undefined => tether.stdout().split('\n').find((l) => l.includes('rapid reset'))
  await waitFor(() => find() !== undefined, 5_000, 'the rapid reset log line').catch(() => undefined)
  return find()
}

/** An h2 client's request on `s`, resolving with the status once its stream closed (0: no answer). */
function send(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const r = s.request(headers)
    let status = 0
    r.on('response', (h) => { status = Number(h[':status']) })
    r.on('data', () => undefined)
    r.on('error', () => undefined)
    r.on('close', () => resolve(status))
    r.end(body)
  })
}

/** A well-behaved h2 client on `port`, the GOAWAY code it got (if any) in `goaway()`. */
function client(t: Test, port: number): { s: http2.ClientHttp2Session; goaway(): number | null } {
  const s = http2.connect(`https://127.0.0.1:${port}`, { ca: certs.ca, servername: 'localhost' })
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  let code: number | null = null
  s.on('goaway', (c) => { code = c })
  return { s, goaway: () => code }
}

t.test('streams Tether resets itself (an upstream that dies mid-answer on 60 of 110 streams) are not counted as the client\'s: no GOAWAY', async (t) => {
  let heads = 0
  const { tether, port, up } = await startFloodTarget(t, certs, (_req, res) => { res.writeHead(200); res.write('partial'); heads++ })
  const { s, goaway } = client(t, port)
  const before = new Set<number>()
  for (let i = 0; i < 50; i++) before.add(await send(s, { ':path': '/' }))
  t.same([...before], [200], '50 requests answered whole')
  // 60 long answers (a download, an event stream) in flight to the one upstream, which then dies
  const held = Array.from({ length: 60 }, () => send(s, { ':path': '/held' }))
  await waitFor(() => heads === 60, 10_000, 'the 60 answers to start')
  await up.close()
  await within(Promise.all(held), 10_000, 'the cut answers to close')
  // one more round trip: a GOAWAY sent for the resets would have come before its answer
  const status = await send(s, { ':path': '/' })
  t.ok(status === 502 || status === 503, `the connection still takes requests (the upstream is gone: ${status})`)
  t.equal(goaway(), null, 'no GOAWAY')
  t.notOk(tether.stdout().includes('rapid reset'), 'no rapid-reset judgment')
})

t.test('Tether\'s own refusals alone (413s, the client resets nothing) do not close the connection nor cut its other streams', async (t) => {
  let heldStarted = false
  const { tether, port } = await startFloodTarget(t, certs, (_req, res) => { res.writeHead(200); res.write('event: hello\n\n'); heldStarted = true }, ['limits: { max_body_bytes: 1000 }'])
  const { s, goaway } = client(t, port)
  // a long answer (an event stream) kept open on the connection
  const events = s.request({ ':path': '/held' })
  let eventsClosed = false
  events.on('data', () => undefined)
  events.on('error', () => undefined)
  events.on('close', () => { eventsClosed = true })
  events.end()
  await waitFor(() => heldStarted, 5_000, 'the event stream to start')
  const before = new Set<number>()
  for (let i = 0; i < 45; i++) before.add(await send(s, { ':path': '/' }))
  t.same([...before], [200], '45 requests answered')
  const big = Buffer.alloc(2000, 'x')
  const statuses = new Set<number>()
  for (let i = 0; i < 60 && goaway() === null; i++) statuses.add(await send(s, { ':method': 'POST', ':path': '/upload', 'content-length': String(big.length) }, big))
  t.same([...statuses], [413], 'each upload refused')
  t.equal(await send(s, { ':path': '/' }), 200, 'the connection still takes requests')
  t.equal(goaway(), null, 'no GOAWAY')
  t.notOk(eventsClosed, 'the event stream still open')
  t.notOk(tether.stdout().includes('rapid reset'), 'no rapid-reset judgment')
})
