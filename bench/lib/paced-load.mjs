#!/usr/bin/env node
// A fixed-rate load generator for the latency run, as a child process of its own (so its CPU
// is accounted apart and the harness's event loop adds nothing to the figures). Each of the
// `connections` keep-alive connections sends one request every `connections / rate` seconds,
// the connections evenly staggered, so the offered load is smooth (autocannon's overallRate
// lets each connection send its per-second budget back to back at the start of each second:
// closed-loop bursts, not a rate). One request per connection at a time (no pipelining). Latency runs from when a
// request was sent to the last byte of its answer; when a connection is still waiting for an
// answer at its next request's time, the next request is measured from that intended time
// (coordinated omission corrected, as wrk2 does), so a stalled proxy cannot hide its stalls.
//
// Usage: node bench/lib/paced-load.mjs <port> <rate> <connections> <seconds> <cookiesFile> [warmupSeconds]
// (cookiesFile: a JSON array of Cookie header values, one per simulated user). With a warm-up,
// the same paced load runs that long first, unmeasured, on the same connections: the window
// then sees the proxy in its steady state at that rate, not its first moments after being idle
// (a Node process idle for 15 s answered its first ~0.5 s at the rate up to ~100 ms late on this
// machine, nginx did not; see bench/README.md). Prints one line
// `BENCH_JSON {"requests","duration_us","errors","non2xx","p50","p99","p999","mean","max"}`
// (latencies in microseconds). Answers must carry Content-Length (the bench upstreams' do).
import net from 'node:net'
import { readFileSync } from 'node:fs'

const [port, rate, connections, seconds] = process.argv.slice(2, 6).map(Number)
const cookies = JSON.parse(readFileSync(process.argv[6], 'utf8'))
const warmup = Number(process.argv[7] ?? 0)
if (!(port > 0 && rate > 0 && connections > 0 && seconds > 0 && warmup >= 0) || !Array.isArray(cookies) || cookies.length === 0) {
  console.error('usage: paced-load.mjs <port> <rate> <connections> <seconds> <cookiesFile> [warmupSeconds]')
  process.exit(2)
}
const requests = cookies.map((c) => Buffer.from(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nCookie: ${c}\r\n\r\n`, 'latin1'))
const intervalNs = BigInt(Math.round((1e9 * connections) / rate))
const now = () => process.hrtime.bigint()
const t0 = now() + 50_000_000n // 50 ms to connect
/** Requests due from here on are measured (before it: the warm-up). */
const measured = t0 + BigInt(Math.round(warmup * 1e9))
const end = measured + BigInt(Math.round(seconds * 1e9))
const latenciesUs = []
let errors = 0
let non2xx = 0
let next = Math.floor(Math.random() * requests.length)

/**
 * One connection: its next due time, whether a request is out, its start time (what its latency
 * is measured from) and the time it was due (what puts it in the window or the warm-up).
 */
function connection(index) {
  const c = { due: t0 + (intervalNs * BigInt(index)) / BigInt(connections), busy: false, started: 0n, slot: 0n, buf: Buffer.alloc(0), socket: null, closed: false }
  const open = () => {
    c.buf = Buffer.alloc(0)
    c.socket = net.connect(port, '127.0.0.1')
    c.socket.setNoDelay(true)
    c.socket.on('data', (d) => onData(c, d))
    c.socket.on('error', () => undefined)
    c.socket.on('close', () => {
      if (c.busy) {
        errors++
        c.busy = false
      }
      if (!c.closed) open()
    })
  }
  open()
  return c
}

function onData(c, d) {
  c.buf = c.buf.length === 0 ? d : Buffer.concat([c.buf, d])
  const head = c.buf.indexOf('\r\n\r\n')
  if (head < 0) return
  const text = c.buf.toString('latin1', 0, head)
  const m = /\r\ncontent-length:\s*(\d+)/i.exec(text)
  if (m === null) {
    errors++
    c.socket.destroy()
    return
  }
  const total = head + 4 + Number(m[1])
  if (c.buf.length < total) return
  const status = Number(text.slice(9, 12))
  c.buf = c.buf.subarray(total)
  const at = now()
  if (c.busy) {
    c.busy = false
    // in the window by when it was due: the warm-up's last request, due before the window but
    // sent a little late by the timer, is the warm-up's (it made one request too many measured)
    if (at <= end && c.slot >= measured) {
      if (status < 200 || status > 299) non2xx++
      latenciesUs.push(Number(at - c.started) / 1000)
    }
  }
  // behind schedule: the request due meanwhile goes now, measured from when it was due
  if (c.due <= at && at < end) send(c, c.due)
}

function send(c, measuredFrom) {
  c.busy = true
  c.started = measuredFrom
  c.slot = c.due
  c.due += intervalNs
  next = (next + 1) % requests.length
  c.socket.write(requests[next])
}

const all = Array.from({ length: connections }, (_, i) => connection(i))

function tick() {
  const at = now()
  if (at >= end) return finish()
  let soonest = end
  for (const c of all) {
    // on time (the timer's own lateness is the generator's, not the proxy's: measured from now)
    if (!c.busy && c.due <= at) send(c, at)
    // a busy connection's next request may fall due once its answer is in: wake up for it too
    if (c.due < soonest) soonest = c.due
  }
  const waitMs = Number(soonest - now()) / 1e6
  setTimeout(tick, waitMs > 1 ? Math.floor(waitMs) : 0)
}
setTimeout(tick, 50)

function finish() {
  // answers still out at the end are left out (their latency is unknown), as wrk does
  for (const c of all) {
    c.closed = true
    c.socket.destroy()
  }
  latenciesUs.sort((a, b) => a - b)
  const pct = (p) => (latenciesUs.length === 0 ? 0 : latenciesUs[Math.min(latenciesUs.length - 1, Math.ceil((p / 100) * latenciesUs.length) - 1)])
  const mean = latenciesUs.reduce((a, b) => a + b, 0) / Math.max(1, latenciesUs.length)
  const out = {
    requests: latenciesUs.length,
    duration_us: Math.round(Number(end - measured) / 1000),
    errors,
    non2xx,
    p50: pct(50),
    p99: pct(99),
    p999: pct(99.9),
    mean,
    max: latenciesUs.at(-1) ?? 0,
  }
  process.stdout.write(`BENCH_JSON ${JSON.stringify(out)}\n`)
  process.exit(0)
}
