// PING and SETTINGS floods (CVE-2019-9512, CVE-2019-9515) against Tether run as its CLI: a
// client sending control frames as fast as it can, reading the answers or not. nghttp2 (Node's
// HTTP/2) closes the connection once more than 1000 answers wait to go out; Tether's CPU and
// memory stay bounded and another client is served. Figures printed as comments (docs/tls.md).
import t from 'tap'
import type tls from 'node:tls'
import { cutOff, probe, startFloodTarget } from './fixtures/h2-flood-target.js'
import { FRAME, connectH2, frame, processUsage } from './fixtures/h2-frames.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

const PING = frame(6, 0, 0, Buffer.alloc(8))
const SETTINGS = frame(FRAME.SETTINGS, 0, 0, Buffer.from([0, 4, 0, 1, 0, 0])) // INITIAL_WINDOW_SIZE 65536

/** Writes `one` 1000 at a time until `open()` is false or `max` were written (deadline 10 s): how many. */
async function flood(socket: tls.TLSSocket, one: Buffer, open: () => boolean, max: number): Promise<number> {
  const batch = Buffer.concat(Array<Buffer>(1000).fill(one))
  let sent = 0
  const deadline = Date.now() + 10_000
  while (open() && sent < max && Date.now() < deadline) {
    sent += 1000
    if (!socket.write(batch)) await new Promise<void>((r) => { socket.once('drain', r); socket.once('close', r) })
    await new Promise((r) => setImmediate(r)) // let a close be noticed
  }
  return sent
}

for (const [name, one] of [['PING', PING], ['SETTINGS', SETTINGS]] as const) {
  t.test(`a ${name} flood from a client reading the answers is cut off; CPU and memory stay bounded`, async (t) => {
    const { tether, port } = await startFloodTarget(t, certs)
    const pid = tether.proc.pid!
    const before = await processUsage(pid)
    const socket = await connectH2(port, certs.ca)
    const closed = cutOff(socket)
    let open = true
    void closed.then(() => { open = false })
    const sent = await flood(socket, one, () => open, 1_000_000)
    const { goaway } = await within(closed, 15_000, 'the flooding connection to be closed')
    const after = await processUsage(pid)
    t.ok(sent < 1_000_000, `cut off after ${sent} ${name} frames written, of 1 000 000`)
    t.ok(after.rssKb - before.rssKb < 100_000, `memory grew by ${after.rssKb - before.rssKb} kB (< 100 MB)`)
    t.comment(`${name} flood, read: cut after ${sent} frames written (GOAWAY ${goaway ?? 'none'}), Tether CPU ${after.cpuMs - before.cpuMs} ms, RSS ${before.rssKb} -> ${after.rssKb} kB`)
    t.equal(await probe(port, certs.ca), 200, 'another client is served')
  })
}

t.test('a PING flood from a client that reads nothing is cut off once its answers back up', async (t) => {
  const { tether, port } = await startFloodTarget(t, certs)
  const pid = tether.proc.pid!
  const before = await processUsage(pid)
  const socket = await connectH2(port, certs.ca)
  socket.pause() // nothing read: the answers fill the socket buffers, then queue in nghttp2
  let failed = false
  socket.on('error', () => { failed = true })
  const sent = await flood(socket, PING, () => !failed, 300_000)
  const closed = cutOff(socket) // reading again: the answers that went out, then the GOAWAY and the close
  socket.resume()
  const { goaway } = await within(closed, 15_000, 'the flooding connection to be closed')
  const after = await processUsage(pid)
  t.ok(after.rssKb - before.rssKb < 100_000, `memory grew by ${after.rssKb - before.rssKb} kB (< 100 MB)`)
  t.comment(`PING flood, not read: ${sent} frames written (GOAWAY ${goaway ?? 'none'}), Tether CPU ${after.cpuMs - before.cpuMs} ms, RSS ${before.rssKb} -> ${after.rssKb} kB`)
  t.equal(await probe(port, certs.ca), 200, 'another client is served')
})
