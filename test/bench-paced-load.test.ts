// bench/lib/paced-load.mjs, the fixed-rate generator of the benchmark, against real upstreams
// on loopback: it offers the rate asked for, and it does not hide a stall (coordinated
// omission): the requests that fell due while an answer was held are measured from when they
// were due, as wrk2 does, so one 600 ms stall shows as many slow requests, not one.
import t, { type Test } from 'tap'
import http from 'node:http'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import type { AddressInfo } from 'node:net'

const script = path.resolve(import.meta.dirname, '../bench/lib/paced-load.mjs')
const cookies = path.join(mkdtempSync(path.join(tmpdir(), 'tether-paced-')), 'cookies.json')
writeFileSync(cookies, JSON.stringify(['u=1', 'u=2']))

interface Figures { requests: number; duration_us: number; errors: number; non2xx: number; p50: number; p99: number; max: number }

function run(port: number, rate: number, connections: number, seconds: number, warmup = 0): Promise<Figures> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [script, String(port), String(rate), String(connections), String(seconds), cookies, String(warmup)], { timeout: 30_000 }, (err, stdout) => {
      if (err) return reject(err)
      const line = stdout.split('\n').find((l) => l.startsWith('BENCH_JSON '))
      if (line === undefined) return reject(new Error(`no BENCH_JSON line in: ${stdout}`))
      resolve(JSON.parse(line.slice('BENCH_JSON '.length)) as Figures)
    })
  })
}

async function upstream(t: Test, handler: http.RequestListener): Promise<number> {
  const server = http.createServer(handler).listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return (server.address() as AddressInfo).port
}

t.test('offers the rate asked for, over every connection, each answer counted once', async (t) => {
  const seen: string[] = []
  const port = await upstream(t, (req, res) => {
    seen.push(req.headers.cookie ?? '')
    res.writeHead(200, { 'content-length': '2' }).end('ok')
  })
  const r = await run(port, 200, 4, 1.5)
  // 300 due in 1.5 s; the last ones may still be out when the window closes
  t.ok(r.requests >= 270 && r.requests <= 300, `${r.requests} answers for 300 requests due`)
  t.equal(r.errors, 0)
  t.equal(r.non2xx, 0)
  t.ok(seen.includes('u=1') && seen.includes('u=2'), 'the cookies of every user are sent')
})

t.test('a stalled answer is not one slow request: the requests due meanwhile are measured from when they were due', async (t) => {
  let n = 0
  const port = await upstream(t, (_req, res) => {
    n++
    const answer = () => res.writeHead(n === 20 ? 503 : 200, { 'content-length': '2' }).end('ok')
    if (n === 20) setTimeout(answer, 600) // one answer held 600 ms, on the only connection
    else answer()
  })
  const r = await run(port, 100, 1, 2)
  t.ok(r.max >= 550_000, `the held answer shows (max ${Math.round(r.max / 1000)} ms)`)
  t.equal(r.non2xx, 1, 'its status counted')
  // 100 req/s on one connection: ~60 requests fell due during the stall, sent once the answer
  // came, each measured from when it was due (600, 590, 580 ... ms): ~30 of ~200 samples above
  // 300 ms. Measured from their sending instead, one sample would be slow and p99 small.
  t.ok(r.requests >= 150, `${r.requests} answers`)
  t.ok(r.p99 >= 300_000, `p99 ${Math.round(r.p99 / 1000)} ms: the stall counts for every request it delayed`)
  t.ok(r.p50 < r.p99, 'most requests were not delayed')
})

t.test('a warm-up runs the same load first, unmeasured: a stall in it is not in the figures', async (t) => {
  let n = 0
  let heldAt = 0
  const port = await upstream(t, (_req, res) => {
    n++
    const answer = () => res.writeHead(200, { 'content-length': '2' }).end('ok')
    if (n === 5) {
      heldAt = n
      setTimeout(answer, 600) // early in the warm-up: the proxy's cold start, say
    } else answer()
  })
  const r = await run(port, 100, 1, 1, 1.5)
  t.equal(heldAt, 5, 'the warm-up sent requests (the fifth was held)')
  t.ok(n >= 200, `${n} requests in all: warm-up and window at the same rate`)
  t.equal(r.duration_us, 1_000_000, 'the window is the measured second only')
  t.ok(r.requests >= 80 && r.requests <= 100, `${r.requests} answers measured, those due in the window`)
  t.ok(r.max < 300_000, `the held answer and the requests it delayed are not measured (max ${Math.round(r.max / 1000)} ms)`)
})
